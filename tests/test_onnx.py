"""ONNX export: onnxruntime gives what `forward` gives, for every activation, output,
dtype and input_scale; the model's signature; the estimators; bad paths; lazy import."""
import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")                  # the extra: nnfast[onnx]
ort = pytest.importorskip("onnxruntime")

import nnfast as nf
from nnfast import _onnx

HIDDEN = ["relu", "leaky_relu", "tanh", "sigmoid", "linear"]
OUTPUTS = [("softmax", 4), ("sigmoid", 1), ("sigmoid", 3), ("linear", 1), ("linear", 2)]
TOL = dict(rtol=1e-5, atol=1e-5)       # float32 inference against float32 / float64 forward


def _network(sizes, hidden="relu", output="softmax", dtype=np.float32, input_scale=1.0,
             seed=0):
    """A network with random biases too (they start at zero)."""
    net = nf.Network(sizes, hidden=hidden, output=output, dtype=dtype, seed=seed,
                     input_scale=input_scale)
    rng = np.random.default_rng(seed)
    for _, b in net.params:
        b[...] = rng.uniform(-0.5, 0.5, b.shape)
    return net


def _inputs(rows, n_features, input_scale, seed=1):
    """float32 rows; for an input_scale other than 1, raw values such as pixels."""
    rng = np.random.default_rng(seed)
    if input_scale == 1:
        return rng.standard_normal((rows, n_features)).astype(np.float32)
    return rng.integers(0, 256, (rows, n_features)).astype(np.float32)


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1               # the test machines share their cores
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def _run(path, X):
    return _session(path).run(None, {"X": X})[0]


# ------------------------------------------------------------ same outputs as forward

@pytest.mark.parametrize("input_scale", [1.0, 1 / 255])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output,n_out", OUTPUTS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_onnxruntime_matches_forward(tmp_path, hidden, output, n_out, dtype, input_scale):
    net = _network([7, 16, 9, n_out], hidden, output, dtype, input_scale)
    path = tmp_path / "m.onnx"
    net.to_onnx(path)
    session = _session(path)
    for rows in (1, 53):
        X = _inputs(rows, 7, input_scale)
        got = session.run(None, {"X": X})[0]
        assert got.dtype == np.float32 and got.shape == (rows, n_out)
        np.testing.assert_allclose(got, net.forward(X), **TOL)


@pytest.mark.parametrize("output,n_out", OUTPUTS)
def test_no_hidden_layer_and_one_activation_per_layer(tmp_path, output, n_out):
    X = _inputs(20, 5, 1.0)
    for i, net in enumerate([_network([5, n_out], output=output),
                             _network([5, 6, 7, 6, 5, n_out], hidden=HIDDEN[:4],
                                      output=output)]):
        net.to_onnx(tmp_path / f"m{i}.onnx")
        np.testing.assert_allclose(_run(tmp_path / f"m{i}.onnx", X), net.forward(X), **TOL)


def test_a_trained_and_reloaded_network(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    net = nf.Network([6, 12, 3], hidden="tanh", seed=3)
    net.fit(X, y, epochs=3, batch_size=32, verbose=False)
    net.save(tmp_path / "m.npz")
    nf.load(tmp_path / "m.npz").to_onnx(tmp_path / "m.onnx")
    np.testing.assert_allclose(_run(tmp_path / "m.onnx", X), net.forward(X), **TOL)


# ------------------------------------------------------------ the model itself

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("input_scale", [1.0, 0.5])
def test_model_is_valid_with_a_symbolic_batch(tmp_path, dtype, input_scale):
    net = _network([7, 5, 3], hidden="leaky_relu", output="sigmoid", dtype=dtype,
                   input_scale=input_scale)
    net.to_onnx(tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(model, full_check=True)
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset[""] >= 13
    (inp,), (out,) = model.graph.input, model.graph.output
    for value, size in ((inp, 7), (out, 3)):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        batch, width = value.type.tensor_type.shape.dim
        assert batch.dim_param and not batch.HasField("dim_value")     # symbolic N
        assert width.dim_value == size
    assert inp.name == "X" and out.name == "Y"
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Mul"] * (input_scale != 1) + ["Gemm", "LeakyRelu", "Gemm", "Sigmoid"]
    alpha = [a.f for n in model.graph.node for a in n.attribute if a.name == "alpha"]
    assert alpha == [pytest.approx(0.01)]


def test_linear_layers_have_no_activation_node(tmp_path):
    _network([4, 3, 2], hidden="linear", output="linear").to_onnx(tmp_path / "m.onnx")
    assert [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node] == ["Gemm", "Gemm"]


def test_an_existing_file_is_replaced(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    net = _network([3, 2, 2])
    net.to_onnx(str(path))                                 # str paths too
    X = _inputs(4, 3, 1.0)
    np.testing.assert_allclose(_run(path, X), net.forward(X), **TOL)
    assert os.listdir(tmp_path) == ["m.onnx"]


# ------------------------------------------------------------ the estimators

short_fit = pytest.mark.filterwarnings("ignore:.*epochs reached")     # ConvergenceWarning


def _float32_exact(X):
    """float64 values that float32 holds exactly: the model reads float32."""
    return np.asarray(X, np.float32).astype(np.float64)


@short_fit
def test_classifier_exports_probabilities_in_the_order_of_classes(tmp_path):
    pytest.importorskip("sklearn", minversion="1.6")
    from nnfast.sklearn import NNClassifier
    rng = np.random.default_rng(0)
    X = _float32_exact(rng.standard_normal((120, 4)))
    y = np.array(["emu", "cat", "dog"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    clf = NNClassifier(hidden_layer_sizes=(8,), epochs=5, random_state=0).fit(X, y)
    clf.to_onnx(tmp_path / "c.onnx")
    proba = _run(tmp_path / "c.onnx", X.astype(np.float32))
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba, clf.predict_proba(X), **TOL)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


@short_fit
def test_multilabel_classifier_exports_one_probability_per_label(tmp_path):
    pytest.importorskip("sklearn", minversion="1.6")
    from nnfast.sklearn import NNClassifier
    rng = np.random.default_rng(1)
    X = _float32_exact(rng.standard_normal((80, 5)))
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 2] > 0], axis=1).astype(int)
    clf = NNClassifier(hidden_layer_sizes=(6,), epochs=5, random_state=0).fit(X, Y)
    clf.to_onnx(tmp_path / "c.onnx")
    np.testing.assert_allclose(_run(tmp_path / "c.onnx", X.astype(np.float32)),
                               clf.predict_proba(X), **TOL)


@short_fit
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_regressor_exports_values(tmp_path, n_outputs):
    pytest.importorskip("sklearn", minversion="1.6")
    from nnfast.sklearn import NNRegressor
    rng = np.random.default_rng(2)
    X = rng.standard_normal((90, 3)).astype(np.float32)        # float32: trained in float32
    y = X @ rng.standard_normal((3, n_outputs))
    y = y[:, 0] if n_outputs == 1 else y
    reg = NNRegressor(hidden_layer_sizes=(10,), epochs=5, random_state=0).fit(X, y)
    reg.to_onnx(tmp_path / "r.onnx")
    got = _run(tmp_path / "r.onnx", X)
    assert got.shape == (90, n_outputs)                        # [N, 1] for a 1-D y
    np.testing.assert_allclose(got, reg.predict(X).reshape(90, n_outputs), **TOL)


def test_estimators_before_fit(tmp_path):
    pytest.importorskip("sklearn", minversion="1.6")
    from sklearn.exceptions import NotFittedError

    from nnfast.sklearn import NNClassifier, NNRegressor
    for est in (NNClassifier(), NNRegressor()):
        with pytest.raises(NotFittedError):
            est.to_onnx(tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ bad paths and networks

def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="folder .*nowhere.* does not exist"):
        _network([3, 2, 2]).to_onnx(tmp_path / "nowhere" / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_existing_directory(tmp_path):
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(ValueError, match="d.onnx is a directory"):
        _network([3, 2, 2]).to_onnx(tmp_path / "d.onnx")
    assert os.listdir(tmp_path) == ["d.onnx"] and os.listdir(tmp_path / "d.onnx") == []


def test_path_of_a_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        _network([3, 2, 2]).to_onnx(3)


def test_non_finite_parameters_are_refused(tmp_path):
    net = _network([3, 2, 2])
    net.params[1][0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        net.to_onnx(tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_too_large_for_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(_onnx, "MAX_BYTES", 100)
    with pytest.raises(ValueError, match="at most 2 GiB"):
        _network([10, 10, 2]).to_onnx(tmp_path / "m.onnx")


def test_interrupted_export_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old model")

    def crash(fd):
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        _network([3, 2, 2]).to_onnx(path)
    assert path.read_bytes() == b"old model" and os.listdir(tmp_path) == ["m.onnx"]


# ------------------------------------------------------------ onnx is imported lazily

def _run_python(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_import_nnfast_does_not_import_onnx(tmp_path):
    res = _run_python("import sys, nnfast; nnfast.Network([3, 4, 2]).save('m.npz')\n"
                      "assert 'onnx' not in sys.modules, 'onnx imported'\n"
                      "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'",
                      tmp_path)
    assert res.returncode == 0, res.stderr


def test_import_error_without_onnx(tmp_path):
    res = _run_python("import sys; sys.modules['onnx'] = None\n"         # as if not installed
                      "import nnfast; nnfast.Network([3, 4, 2]).to_onnx('m.onnx')", tmp_path)
    assert res.returncode != 0
    assert "ImportError" in res.stderr and "pip install nnfast[onnx]" in res.stderr
    assert os.listdir(tmp_path) == []
