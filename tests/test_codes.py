"""The activation and loss codes: the Python constants of nnfast._kernels are the codes the
compiled loops switch on (csrc/_codes.h), the name table of nnfast._names covers them
without repeats, and every range check stops at the last code."""
import numpy as np
import pytest

from nnfast import _kernels as K
from nnfast import _names
from nnfast._step import TrainStep
from nnfast._layout import build_layout, layer_views

Z = np.array([[-3.0, -0.5, 0.0, 0.25, 2.0]])

# Each activation written independently of the kernels (float64).
FUNCTIONS = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0),
             "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z), "tanh": np.tanh,
             "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
             "softmax": lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)}


def _forward(z, act):
    """act(z) by the compiled dense_forward (identity weights, zero bias)."""
    a = np.empty_like(z)
    K.dense_forward(a, z, np.eye(z.shape[1]), np.zeros(z.shape[1]), act)
    return a


@pytest.mark.parametrize("table, name", [("HIDDEN", n) for n in _names.HIDDEN]
                         + [("OUTPUT", n) for n in _names.OUTPUT])
def test_each_name_runs_its_activation(table, name):
    code = getattr(_names, table)[name]
    np.testing.assert_allclose(_forward(Z, code), FUNCTIONS[name](Z), rtol=1e-13,
                               atol=1e-15)


def test_leaky_slope_is_the_one_the_loops_use():
    assert K.LEAKY_SLOPE == 0.01
    z = np.array([[-1.0]])
    assert _forward(z, K.ACT_LEAKY_RELU)[0, 0] == -K.LEAKY_SLOPE
    dz = np.empty_like(z)
    K.activation_backward(dz, np.ones_like(z), _forward(z, K.ACT_LEAKY_RELU),
                          K.ACT_LEAKY_RELU)
    assert dz[0, 0] == K.LEAKY_SLOPE
    g = np.empty_like(z)
    a = _forward(z, K.ACT_LEAKY_RELU)
    K.dropout_forward(a, g, 0, 0.0, K.ACT_LEAKY_RELU)     # p = 0: keeps every entry
    assert g[0, 0] == K.LEAKY_SLOPE


@pytest.mark.parametrize("output", sorted(_names.LOSS_CODE))
def test_each_loss_code_runs_its_loss(output):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3))
    y = np.eye(3)[[0, 2, 1, 2]] if output == "softmax" else rng.random((4, 3))
    plain = {"softmax": K.softmax_xent_backward, "sigmoid": K.sigmoid_bce_backward,
             "linear": K.squared_error_backward}[output]
    dz, dz_w = np.empty_like(z), np.empty_like(z)
    loss = plain(dz, z, y)
    loss_w = K.weighted_loss_backward(dz_w, z, y, np.ones(4), _names.LOSS_CODE[output])
    np.testing.assert_allclose(loss_w, loss, rtol=1e-14)
    np.testing.assert_allclose(dz_w, dz, rtol=1e-14)


def test_tables_map_names_to_distinct_valid_codes():
    assert sorted(_names.HIDDEN.values()) == list(range(K.ACT_LAST_HIDDEN + 1))
    assert len(set(_names.OUTPUT.values())) == len(_names.OUTPUT)
    assert all(0 <= c <= K.ACT_LAST for c in _names.OUTPUT.values())
    assert _names.OUTPUT["softmax"] == K.ACT_LAST > K.ACT_LAST_HIDDEN   # output only
    assert set(_names.LOSS_CODE) == set(_names.OUTPUT)
    assert sorted(_names.LOSS_CODE.values()) == list(range(K.LOSS_LAST + 1))


def test_kernels_refuse_codes_past_the_last():
    z = np.ones((2, 3))
    for act in (K.ACT_LAST_HIDDEN, K.ACT_LAST):
        _forward(z, act)
    with pytest.raises(ValueError, match="activation code"):
        _forward(z, K.ACT_LAST + 1)
    K.activation_backward(np.empty_like(z), z, z, K.ACT_LAST_HIDDEN)
    with pytest.raises(ValueError, match="activation code"):
        K.activation_backward(np.empty_like(z), z, z, K.ACT_LAST_HIDDEN + 1)
    K.dropout_forward(z.copy(), np.empty_like(z), 0, 0.5, K.ACT_LAST_HIDDEN)
    with pytest.raises(ValueError, match="activation code"):
        K.dropout_forward(z.copy(), np.empty_like(z), 0, 0.5, K.ACT_LAST_HIDDEN + 1)
    w = np.ones(2)
    K.weighted_loss_backward(np.empty_like(z), z, z, w, K.LOSS_LAST)
    for loss in (-1, K.LOSS_LAST + 1):
        with pytest.raises(ValueError, match="loss code"):
            K.weighted_loss_backward(np.empty_like(z), z, z, w, loss)


def _train_step(codes, loss, sizes=(3, 4, 4, 2), rows=5):
    """A TrainStep over fresh float64 buffers of a network of `sizes`."""
    layout, n = build_layout(sizes)
    params, grads = np.zeros(n), np.zeros(n)
    (coefs, b), (dcoefs, db) = ([list(x) for x in zip(*layer_views(flat, layout))]
                                for flat in (params, grads))
    a = [np.zeros((rows, s)) for s in sizes]
    d = [None] + [np.zeros((rows, s)) for s in sizes[1:]]
    return TrainStep(params, grads, coefs, b, dcoefs, db, a, d, np.zeros((rows, sizes[-1])),
                     codes, loss)


def test_train_step_refuses_codes_past_the_last():
    _train_step([K.ACT_LINEAR, K.ACT_LAST_HIDDEN], K.LOSS_LAST)       # the limits: fine
    for codes in ([K.ACT_RELU, K.ACT_LAST_HIDDEN + 1], [-1, K.ACT_RELU]):
        with pytest.raises(ValueError, match="activation code"):
            _train_step(codes, K.LOSS_SOFTMAX_XENT)
    for loss in (-1, K.LOSS_LAST + 1):
        with pytest.raises(ValueError, match="loss code"):
            _train_step([K.ACT_RELU, K.ACT_RELU], loss)
