"""ONNX export of a Network: one Gemm and one activation node per layer.

The model takes "X", float32 of shape [N, n_features] (N symbolic), and gives "Y",
float32 of shape [N, n_out]: probabilities for softmax / sigmoid outputs, the values
for linear ones, as `Network.forward` does. An input_scale other than 1 is a Mul node
before the first layer. float64 networks are exported with float32 weights.
Needs the onnx package (``pip install nnfast[onnx]``), imported only here, when called.
"""
import numpy as np

from . import _validate
from ._files import write_atomically
from ._kernels import LEAKY_SLOPE

OPSET = 17                       # default ONNX domain; Softmax has its per-axis form from 13
IR_VERSION = 8                   # the IR of opset 17: readable by onnxruntime >= 1.12
MAX_BYTES = 2**31 - 2**20        # protobuf's 2 GiB limit for one message, with some room
INPUT, OUTPUT, BATCH = "X", "Y", "N"
# nnfast's activation names -> (ONNX operator, attributes); linear has no node
ACTIVATIONS = {"relu": ("Relu", {}), "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_SLOPE}),
               "tanh": ("Tanh", {}), "sigmoid": ("Sigmoid", {}),
               "softmax": ("Softmax", {"axis": -1}), "linear": None}


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("to_onnx needs the onnx package, which is not installed: "
                          "pip install nnfast[onnx]") from exc
    return onnx


def build_model(net):
    """The ONNX ModelProto of `net` (checked with onnx.checker)."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []
    a = INPUT
    if net.input_scale != 1:
        weights.append(numpy_helper.from_array(np.array(net.input_scale, np.float32),
                                               "input_scale"))
        nodes.append(helper.make_node("Mul", [a, "input_scale"], ["x_scaled"],
                                      name="scale_input"))
        a = "x_scaled"
    for l, (W, b) in enumerate(net.params):
        last = l == net.n_layers - 1
        activation = ACTIVATIONS[net.output if last else net.hidden[l]]
        z = OUTPUT if last and activation is None else f"z{l}"
        weights += [numpy_helper.from_array(np.asarray(W, np.float32), f"W{l}"),
                    numpy_helper.from_array(np.asarray(b, np.float32), f"b{l}")]
        nodes.append(helper.make_node("Gemm", [a, f"W{l}", f"b{l}"], [z], name=f"dense{l}"))
        a = z
        if activation is not None:
            op, attrs = activation
            out = OUTPUT if last else f"a{l}"
            nodes.append(helper.make_node(op, [z], [out], name=f"{op.lower()}{l}", **attrs))
            a = out
    graph = helper.make_graph(
        nodes, "nnfast_network",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [BATCH, net.sizes[0]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH, net.sizes[-1]])],
        initializer=weights)
    from . import __version__
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="nnfast",
                              producer_version=__version__, doc_string=repr(net))
    onnx.checker.check_model(model)
    return model


def write_onnx(net, path):
    """Write `net` to the ONNX file `path`, atomically (see Network.to_onnx)."""
    if not _validate.all_finite(net.flat_params):
        raise ValueError("to_onnx: the network's parameters contain NaN or inf (training "
                         "diverged?); refusing to write a model that cannot be used")
    if net.n_params * 4 > MAX_BYTES:          # float32 weights in one protobuf message
        raise ValueError(f"to_onnx: {net.n_params:,} parameters are "
                         f"{net.n_params * 4 / 2**30:.1f} GiB in float32; an ONNX file "
                         "holds at most 2 GiB")
    # built inside: the path is checked first, and a failed build leaves no file
    write_atomically(path, lambda f: f.write(build_model(net).SerializeToString()), "to_onnx")
