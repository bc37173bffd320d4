"""Every compiled kernel against its pure-NumPy twin in nnfast/reference.py.

Odd shapes (1 row, 1 unit, primes), every activation code, both dtypes, in-place use
where a docstring allows it, extreme logits, and the refusals: mixed dtypes, wrong
shapes, non-contiguous arrays, read-only outputs.
"""
import numpy as np
import pytest

import nnfast as nf
from nnfast import _kernels as K
from nnfast import _optim as O
from nnfast import reference as R

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

ACTS = [K.ACT_LINEAR, K.ACT_RELU, K.ACT_LEAKY_RELU, K.ACT_TANH, K.ACT_SIGMOID, K.ACT_SOFTMAX]
ACT_IDS = ["linear", "relu", "leaky_relu", "tanh", "sigmoid", "softmax"]
# (n, n_in, n_out): one row, one unit, primes, a wider layer.
LAYER_SHAPES = [(1, 1, 1), (1, 7, 13), (7, 13, 1), (13, 7, 5), (31, 17, 11), (5, 3, 67)]
# (n, m) for elementwise and loss kernels.
SHAPES = [(1, 1), (1, 13), (7, 1), (7, 13), (64, 10)]

LOSSES = {"softmax": (K.softmax_xent_backward, R.softmax_xent_backward),
          "sigmoid": (K.sigmoid_bce_backward, R.sigmoid_bce_backward),
          "squared": (K.squared_error_backward, R.squared_error_backward)}


def assert_close(actual, expected, dtype, scale=None):
    """|actual - expected| <= RTOL * (|expected| + scale); scale defaults to max|expected|
    (an absolute floor for entries that are ~0 through cancellation)."""
    expected = np.asarray(expected, np.float64)
    if scale is None:
        scale = float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                               rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def post_activation(z, act):
    """a = act(z) for a valid saved activation (written independently of the twin)."""
    if act == K.ACT_RELU:
        return np.maximum(z, 0)
    if act == K.ACT_LEAKY_RELU:
        return np.where(z > 0, z, z.dtype.type(0.01) * z)
    if act == K.ACT_TANH:
        return np.tanh(z)
    if act == K.ACT_SIGMOID:
        return (1 / (1 + np.exp(-z.astype(np.float64)))).astype(z.dtype)
    return z.copy()


def targets(rng, kind, shape, dtype, soft=False):
    n, m = shape
    if kind == "softmax":
        if soft:
            t = rng.random(shape) + 0.1
            return (t / t.sum(axis=1, keepdims=True)).astype(dtype)
        return np.eye(m, dtype=dtype)[rng.integers(0, m, n)]
    if kind == "sigmoid":
        return (rng.random(shape) if soft else rng.random(shape) > 0.5).astype(dtype)
    return rand(rng, shape, dtype)


# ---------------------------------------------------------------- dense_forward

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LAYER_SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_dense_forward(dtype, shape, act):
    n, n_in, n_out = shape
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, (n, n_in), dtype), rand(rng, (n_in, n_out), dtype), rand(rng, n_out, dtype)
    inputs = [x.copy(), w.copy(), b.copy()]
    got = np.full((n, n_out), np.nan, dtype)          # the output is overwritten
    want = np.full((n, n_out), np.nan, dtype)
    assert K.dense_forward(got, x, w, b, act) is None
    R.dense_forward(want, x, w, b, act)
    for before, after in zip(inputs, (x, w, b)):
        np.testing.assert_array_equal(before, after)  # inputs untouched
    # Scale: a bound on |x @ w + b| before the activation (cancellation floor).
    bound = float((np.abs(x) @ np.abs(w) + np.abs(b)).max())
    assert_close(got, want, dtype, scale=1.0 if act in (K.ACT_SIGMOID, K.ACT_SOFTMAX,
                                                       K.ACT_TANH) else bound)
    if act == K.ACT_SOFTMAX:
        assert_close(got.sum(axis=1), np.ones(n), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_dense_forward_extreme_preactivations(dtype, act):
    # x @ w = 0, so z = b exactly: +-1e4 must not overflow exp anywhere.
    x = np.zeros((3, 2), dtype)
    w = np.ones((2, 4), dtype)
    b = np.array([1e4, -1e4, 0.0, 5e3], dtype)
    got = np.empty((3, 4), dtype)
    K.dense_forward(got, x, w, b, act)
    want = np.empty((3, 4), dtype)
    R.dense_forward(want, x, w, b, act)
    assert np.isfinite(got).all() and np.isfinite(want).all()
    expected = {K.ACT_LINEAR: [1e4, -1e4, 0, 5e3], K.ACT_RELU: [1e4, 0, 0, 5e3],
                K.ACT_LEAKY_RELU: [1e4, -100, 0, 5e3], K.ACT_TANH: [1, -1, 0, 1],
                K.ACT_SIGMOID: [1, 0, 0.5, 1], K.ACT_SOFTMAX: [1, 0, 0, 0]}[act]
    for out in (got, want):
        assert_close(out, np.tile(expected, (3, 1)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_empty_batch(dtype):
    a = np.empty((0, 3), dtype)
    K.dense_forward(a, np.empty((0, 2), dtype), np.ones((2, 3), dtype), np.ones(3, dtype),
                    K.ACT_SOFTMAX)
    R.dense_forward(a, np.empty((0, 2), dtype), np.ones((2, 3), dtype), np.ones(3, dtype),
                    K.ACT_SOFTMAX)


# ---------------------------------------------------------------- activation_backward

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS[:5], ids=ACT_IDS[:5])
def test_activation_backward(dtype, shape, act):
    rng = np.random.default_rng(2)
    z = rand(rng, shape, dtype, 2.0)
    z.reshape(-1)[::3] = 0                    # exact zeros: relu's kink, a == 0
    a = post_activation(z, act)
    da = rand(rng, shape, dtype)
    inputs = (a.copy(), da.copy())
    got = np.full(shape, np.nan, dtype)
    K.activation_backward(got, da, a, act)
    np.testing.assert_array_equal(inputs[0], a)
    np.testing.assert_array_equal(inputs[1], da)
    want = np.full(shape, np.nan, dtype)
    R.activation_backward(want, da, a, act)
    assert_close(got, want, dtype)
    # In place, dz is da: the same numbers, for the kernel and the twin.
    inplace = da.copy()
    K.activation_backward(inplace, inplace, a, act)
    np.testing.assert_array_equal(inplace, got)
    inplace = da.copy()
    R.activation_backward(inplace, inplace, a, act)
    assert_close(inplace, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_backward_hand_values(dtype):
    a = np.array([[2.0, 0.0, -0.02, 0.5]], dtype)
    da = np.array([[3.0, 3.0, 3.0, 3.0]], dtype)
    expected = {K.ACT_LINEAR: [3, 3, 3, 3], K.ACT_RELU: [3, 0, 0, 3],
                K.ACT_LEAKY_RELU: [3, 0.03, 0.03, 3],
                K.ACT_TANH: [3 * (1 - 4), 3, 3 * (1 - 0.0004), 3 * 0.75],
                K.ACT_SIGMOID: [3 * 2 * -1, 0, 3 * -0.02 * 1.02, 3 * 0.25]}
    for act, want in expected.items():
        dz = np.empty_like(a)
        K.activation_backward(dz, da, a, act)
        assert_close(dz, [want], dtype)


@pytest.mark.parametrize("code", [K.ACT_SOFTMAX, -1, 6])
def test_unknown_activation_codes_refused(code):
    a = np.ones((2, 3))
    with pytest.raises(ValueError):
        K.activation_backward(np.empty_like(a), a, a, code)
    with pytest.raises(ValueError):
        R.activation_backward(np.empty_like(a), a, a, code)
    if code != K.ACT_SOFTMAX:
        with pytest.raises(ValueError):
            K.dense_forward(np.empty((2, 3)), a[:, :2].copy(), np.ones((2, 3)), np.ones(3), code)
        with pytest.raises(ValueError):
            R.dense_forward(np.empty((2, 3)), a[:, :2].copy(), np.ones((2, 3)), np.ones(3), code)


# ---------------------------------------------------------------- linear backward

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LAYER_SHAPES)
@pytest.mark.parametrize("scale", [None, 0.37])
def test_linear_backward_params(dtype, shape, scale):
    n, n_in, n_out = shape
    scale = 1.0 / n if scale is None else scale
    rng = np.random.default_rng(3)
    x, dz = rand(rng, (n, n_in), dtype), rand(rng, (n, n_out), dtype)
    dw, db = np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)
    K.linear_backward_params(dw, db, dz, x, scale)
    dw2, db2 = np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)
    R.linear_backward_params(dw2, db2, dz, x, scale)
    assert_close(dw, dw2, dtype, scale=scale * float((np.abs(x).T @ np.abs(dz)).max()))
    assert_close(db, db2, dtype, scale=scale * float(np.abs(dz).sum(axis=0).max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward_params_empty_batch_refused(dtype):
    args = (np.empty((2, 3), dtype), np.empty(3, dtype), np.empty((0, 3), dtype),
            np.empty((0, 2), dtype), 1.0)
    with pytest.raises(ValueError):
        K.linear_backward_params(*args)
    with pytest.raises(ValueError):
        R.linear_backward_params(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LAYER_SHAPES)
def test_linear_backward_input(dtype, shape):
    n, n_in, n_out = shape
    rng = np.random.default_rng(4)
    dz, w = rand(rng, (n, n_out), dtype), rand(rng, (n_in, n_out), dtype)
    dx = np.full((n, n_in), np.nan, dtype)
    K.linear_backward_input(dx, dz, w)
    dx2 = np.full((n, n_in), np.nan, dtype)
    R.linear_backward_input(dx2, dz, w)
    assert_close(dx, dx2, dtype, scale=float((np.abs(dz) @ np.abs(w).T).max()))


# ---------------------------------------------------------------- losses

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_loss_kernels(dtype, shape, kind, soft):
    kernel, twin = LOSSES[kind]
    rng = np.random.default_rng(5)
    z = rand(rng, shape, dtype, 3.0)
    y = targets(rng, kind, shape, dtype, soft)
    z0 = z.copy()
    dz = np.full(shape, np.nan, dtype)
    loss = kernel(dz, z, y)
    np.testing.assert_array_equal(z, z0)
    dz2 = np.full(shape, np.nan, dtype)
    loss2 = twin(dz2, z, y)
    assert isinstance(loss, float) and isinstance(loss2, float)
    assert_close(loss, loss2, dtype, scale=float(z.size))   # floor: RTOL per entry
    assert_close(dz, dz2, dtype, scale=1.0)
    # In place, dz is z: same loss and gradient.
    zi = z.copy()
    assert kernel(zi, zi, y) == loss
    np.testing.assert_array_equal(zi, dz)
    zi = z.copy()
    assert_close(twin(zi, zi, y), loss2, dtype, scale=float(z.size))
    assert_close(zi, dz2, dtype, scale=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_definitions_by_hand(dtype):
    # softmax of [0, log 3] is [1/4, 3/4]; y = class 1 -> loss -log(3/4).
    z = np.array([[0.0, np.log(3.0)]], dtype)
    dz = np.empty_like(z)
    assert_close(K.softmax_xent_backward(dz, z, np.array([[0, 1]], dtype)),
                 -np.log(0.75), dtype)
    assert_close(dz, [[0.25, -0.25]], dtype)
    # sigmoid(log 3) = 3/4; y = 0 -> loss -log(1/4) = log 4; dz = 3/4.
    z = np.array([[np.log(3.0)]], dtype)
    assert_close(K.sigmoid_bce_backward(dz[:, :1].copy(), z, np.zeros((1, 1), dtype)),
                 np.log(4.0), dtype)
    # squared error: 0.5 * ((3 - 1)^2 + (-1 - 0)^2) = 2.5
    dz = np.empty((1, 2), dtype)
    assert_close(K.squared_error_backward(dz, np.array([[3.0, -1.0]], dtype),
                                          np.array([[1.0, 0.0]], dtype)), 2.5, dtype)
    assert_close(dz, [[2.0, -1.0]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["kernel", "twin"])
def test_extreme_logits(dtype, impl):
    mod = K if impl == "kernel" else R
    # softmax: right class at +1e4 -> loss 0; wrong class: loss z_max - z_y = 2e4.
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype)
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype)
    dz = np.empty_like(z)
    loss = mod.softmax_xent_backward(dz, z, y)
    assert np.isfinite(loss) and np.isfinite(dz).all()
    # rows: 0, 2e4, and the third: lse = 1e4 + log 2, so -log p = 2e4 + log 2
    assert_close(loss, 0 + 2e4 + 2e4 + np.log(2.0), dtype)
    assert_close(dz, [[0, 0, 0], [-1, 1, 0], [0.5, 0.5, -1]], dtype, scale=1.0)
    # sigmoid: (z, y) = (1e4, 0) -> 1e4, dz 1; (-1e4, 1) -> 1e4, dz -1; agreeing -> 0.
    z = np.array([[1e4, -1e4, 1e4, -1e4]], dtype)
    y = np.array([[0, 1, 1, 0]], dtype)
    dz = np.empty_like(z)
    loss = mod.sigmoid_bce_backward(dz, z, y)
    assert np.isfinite(loss) and np.isfinite(dz).all()
    assert_close(loss, 2e4, dtype)
    assert_close(dz, [[1, -1, 0, 0]], dtype, scale=1.0)
    # squared error stays finite: 0.5 * (1e4^2 + 1e4^2) = 1e8
    dz = np.empty((1, 2), dtype)
    loss = mod.squared_error_backward(dz, np.array([[1e4, -1e4]], dtype), np.zeros((1, 2), dtype))
    assert_close(loss, 1e8, dtype)
    assert_close(dz, [[1e4, -1e4]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", list(LOSSES))
def test_loss_empty_batch(dtype, kind):
    kernel, twin = LOSSES[kind]
    e = np.empty((0, 3), dtype)
    assert kernel(e, e, e) == 0.0
    assert twin(e, e, e) == 0.0


# ---------------------------------------------------------------- gather_rows

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx", [[4, 0, 4], [6, 5, 4, 3, 2, 1, 0], [3], []],
                         ids=["short_repeated", "full_reversed", "one", "empty"])
def test_gather_rows(dtype, idx):
    rng = np.random.default_rng(6)
    x = rand(rng, (7, 13), dtype)
    idx = np.array(idx, np.intp)
    for fn in (K.gather_rows, R.gather_rows):
        out = np.full((8, 13), -7.0, dtype)              # room for more rows than idx
        fn(out, x, idx)
        np.testing.assert_array_equal(out[:len(idx)], x[idx])
        assert (out[len(idx):] == -7.0).all()            # leading rows only


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_rows_refusals(dtype):
    x = np.ones((5, 3), dtype)
    idx = np.array([0, 1, 2], np.intp)
    for fn in (K.gather_rows, R.gather_rows):
        with pytest.raises(ValueError):
            fn(np.empty((2, 3), dtype), x, idx)          # too few rows
        with pytest.raises(ValueError):
            fn(np.empty((4, 2), dtype), x, idx)          # wrong width
    with pytest.raises((TypeError, ValueError)):
        K.gather_rows(np.empty((3, 3), dtype), x, idx.astype(np.int32))
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises((TypeError, ValueError)):
        K.gather_rows(np.empty((3, 3), other), x, idx)


# ---------------------------------------------------------------- optimizer kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,n_decay", [(1, 0), (1, 1), (13, 7), (67, 67), (67, 0)])
@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_adam_update(dtype, n, n_decay, wd):
    rng = np.random.default_rng(7)
    bufs = [rand(rng, n, dtype), np.zeros(n, dtype), np.zeros(n, dtype)]
    twin = [b.copy() for b in bufs]
    for t in range(1, 4):
        g = rand(rng, n, dtype)
        O.adam_update(*bufs, g, t, 0.01, 0.9, 0.999, 1e-8, wd, n_decay)
        R.adam_update(*twin, g, t, 0.01, 0.9, 0.999, 1e-8, wd, n_decay)
    assert_close(bufs[0], twin[0], dtype)
    assert_close(bufs[1], twin[1], dtype)
    # float32: the kernel rounds 1 - beta2 in float (see test_optim, xfail): 1.3e-5.
    np.testing.assert_allclose(bufs[2], twin[2], rtol=3e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,n_decay", [(1, 0), (1, 1), (13, 7), (67, 67)])
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_sgd_update(dtype, n, n_decay, momentum, nesterov, wd):
    rng = np.random.default_rng(8)
    bufs = [rand(rng, n, dtype), np.zeros(n, dtype)]
    twin = [b.copy() for b in bufs]
    for _ in range(3):
        g = rand(rng, n, dtype)
        O.sgd_update(*bufs, g, 0.1, momentum, nesterov, wd, n_decay)
        R.sgd_update(*twin, g, 0.1, momentum, nesterov, wd, n_decay)
    assert_close(bufs[0], twin[0], dtype)
    assert_close(bufs[1], twin[1], dtype)
    if momentum == 0:
        assert (bufs[1] == 0).all()                       # velocity untouched


@pytest.mark.parametrize("dtype", DTYPES)
def test_optim_kernels_refusals(dtype):
    p, g = np.zeros(5, dtype), np.zeros(5, dtype)
    for mod in (O, R):
        with pytest.raises(ValueError):
            mod.adam_update(p, np.zeros(4, dtype), np.zeros(5, dtype), g, 1, .1, .9, .9, 1e-8, 0, 0)
        with pytest.raises(ValueError):
            mod.adam_update(p, np.zeros(5, dtype), np.zeros(5, dtype), g, 0, .1, .9, .9, 1e-8, 0, 0)
        for n_decay in (-1, 6):
            with pytest.raises(ValueError):
                mod.adam_update(p, p.copy(), p.copy(), g, 1, .1, .9, .9, 1e-8, 0, n_decay)
            with pytest.raises(ValueError):
                mod.sgd_update(p, p.copy(), g, .1, 0.9, False, 0, n_decay)
        with pytest.raises(ValueError):
            mod.sgd_update(p, np.zeros(5, dtype), np.zeros(6, dtype), .1, 0.9, False, 0, 0)


# ---------------------------------------------------------------- refusals, all kernels

def valid_args(name, dtype):
    """Valid arguments (arrays only in the positions that are arrays) for each kernel."""
    f = lambda *shape: np.ones(shape, dtype)          # noqa: E731
    return {
        "dense_forward": (K.dense_forward, [f(3, 4), f(3, 2), f(2, 4), f(4), 0]),
        "activation_backward": (K.activation_backward, [f(3, 4), f(3, 4), f(3, 4), 3]),
        "linear_backward_params": (K.linear_backward_params,
                                   [f(2, 4), f(4), f(3, 4), f(3, 2), 1.0]),
        "linear_backward_input": (K.linear_backward_input, [f(3, 2), f(3, 4), f(2, 4)]),
        "softmax_xent_backward": (K.softmax_xent_backward, [f(3, 4), f(3, 4), f(3, 4)]),
        "sigmoid_bce_backward": (K.sigmoid_bce_backward, [f(3, 4), f(3, 4), f(3, 4)]),
        "squared_error_backward": (K.squared_error_backward, [f(3, 4), f(3, 4), f(3, 4)]),
        "gather_rows": (K.gather_rows, [f(3, 4), f(5, 4), np.array([0, 4, 2], np.intp)]),
        "adam_update": (O.adam_update, [f(5), f(5), f(5), f(5), 1, .1, .9, .9, 1e-8, 0., 2]),
        "sgd_update": (O.sgd_update, [f(5), f(5), f(5), .1, .9, True, 0., 2]),
    }[name]


KERNEL_NAMES = ["dense_forward", "activation_backward", "linear_backward_params",
                "linear_backward_input", "softmax_xent_backward", "sigmoid_bce_backward",
                "squared_error_backward", "gather_rows", "adam_update", "sgd_update"]


def float_positions(args):
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]


@pytest.mark.parametrize("name", KERNEL_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_valid_args_accepted(name, dtype):
    fn, args = valid_args(name, dtype)
    fn(*args)
    # Read-only inputs are fine (const memoryviews) ...
    fn, args = valid_args(name, dtype)
    n_out = {"dense_forward": 1, "linear_backward_params": 2, "adam_update": 3,
             "sgd_update": 2}.get(name, 1)
    for a in args[n_out:]:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    fn(*args)
    # ... read-only outputs are not.
    fn, args = valid_args(name, dtype)
    args[0].flags.writeable = False
    with pytest.raises((TypeError, ValueError)):
        fn(*args)


@pytest.mark.parametrize("name", KERNEL_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_dtypes_refused(name, dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    _, args = valid_args(name, dtype)
    for i in float_positions(args):
        for bad_dtype in (other, np.int64):
            fn, args = valid_args(name, dtype)
            args[i] = args[i].astype(bad_dtype)
            with pytest.raises((TypeError, ValueError)):
                fn(*args)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_non_contiguous_refused(name):
    _, args = valid_args(name, np.float64)
    for i in float_positions(args):
        fn, args = valid_args(name, np.float64)
        a = args[i]
        if a.ndim == 2:
            args[i] = np.asfortranarray(a) if min(a.shape) > 1 else np.repeat(a, 2, axis=1)[:, ::2]
        else:
            args[i] = np.repeat(a, 2)[::2]
        assert not args[i].flags.c_contiguous
        with pytest.raises(ValueError):
            fn(*args)


def wrong_shapes(dtype):
    """(name, kernel, twin, args) with exactly one inconsistent shape each."""
    f = lambda *shape: np.ones(shape, dtype)          # noqa: E731
    cases = [
        ("dense_forward", [f(3, 5), f(3, 2), f(2, 4), f(4), 0]),      # a width
        ("dense_forward", [f(2, 4), f(3, 2), f(2, 4), f(4), 0]),      # a rows
        ("dense_forward", [f(3, 4), f(3, 3), f(2, 4), f(4), 0]),      # x vs w
        ("dense_forward", [f(3, 4), f(3, 2), f(2, 4), f(5), 0]),      # b length
        ("activation_backward", [f(3, 4), f(3, 5), f(3, 4), 1]),
        ("activation_backward", [f(2, 4), f(3, 4), f(3, 4), 1]),
        ("activation_backward", [f(3, 4), f(3, 4), f(4, 4), 1]),
        ("linear_backward_params", [f(2, 5), f(4), f(3, 4), f(3, 2), 1.0]),
        ("linear_backward_params", [f(2, 4), f(5), f(3, 4), f(3, 2), 1.0]),
        ("linear_backward_params", [f(2, 4), f(4), f(4, 4), f(3, 2), 1.0]),
        ("linear_backward_input", [f(3, 3), f(3, 4), f(2, 4)]),
        ("linear_backward_input", [f(2, 2), f(3, 4), f(2, 4)]),
        ("linear_backward_input", [f(3, 2), f(3, 4), f(2, 5)]),
        ("gather_rows", [f(3, 5), f(5, 4), np.array([0, 1], np.intp)]),
        ("gather_rows", [f(1, 4), f(5, 4), np.array([0, 1], np.intp)]),
    ]
    for loss in ("softmax_xent_backward", "sigmoid_bce_backward", "squared_error_backward"):
        cases += [(loss, [f(3, 4), f(3, 4), f(3, 5)]), (loss, [f(3, 4), f(3, 4), f(2, 4)]),
                  (loss, [f(3, 5), f(3, 4), f(3, 4)]), (loss, [f(2, 4), f(3, 4), f(3, 4)])]
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_wrong_shapes_refused(dtype):
    for name, args in wrong_shapes(dtype):
        for mod in (K, R):
            with pytest.raises(ValueError):
                getattr(mod, name)(*[a.copy() if isinstance(a, np.ndarray) else a
                                     for a in args])


@pytest.mark.parametrize("name", ["dense_forward", "activation_backward",
                                  "softmax_xent_backward", "gather_rows"])
def test_wrong_rank_refused(name):
    fn, args = valid_args(name, np.float64)
    args[0] = args[0].reshape(-1)                     # 1-D where 2-D is expected
    # Cython's fused dispatch picks the signature from the first buffer argument, so a
    # wrong rank there reads "No matching signature found" (TypeError); later: ValueError.
    with pytest.raises((TypeError, ValueError)):
        fn(*args)
    fn, args = valid_args(name, np.float64)
    args[1] = args[1].reshape(-1)
    with pytest.raises(ValueError):
        fn(*args)


# ---------------------------------------------------------------- the network twin

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
def test_reference_network_matches_network(dtype, output):
    rng = np.random.default_rng(9)
    net = nf.Network([5, 7, 6, 3], hidden=["tanh", "leaky_relu"], output=output,
                     dtype=dtype, seed=1)
    X = rng.standard_normal((11, 5))
    y = {"softmax": rng.integers(0, 3, 11), "sigmoid": (rng.random((11, 3)) > 0.5) * 1.0,
         "linear": rng.standard_normal((11, 3))}[output]
    ref = R.ReferenceNetwork.from_network(net)
    np.testing.assert_array_equal(ref.params, net._flat_params)
    assert not np.shares_memory(ref.params, net._flat_params)
    Y = y if y.ndim == 2 else np.eye(3)[y]
    loss, grads = net.loss_and_grads(X, y)
    rloss, rgrads = ref.loss_and_grads(X, Y.astype(dtype))
    assert_close(loss, rloss, dtype)
    flat = np.concatenate([g.ravel() for pair in zip(*grads) for g in pair])  # W..., b...
    assert_close(flat, rgrads, dtype)
    assert_close(net.forward(X), ref.forward(X), dtype, scale=1.0)


@pytest.mark.parametrize("opt", [nf.Adam(lr=0.02, weight_decay=0.1),
                                 nf.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)],
                         ids=["adamw", "sgd_nesterov"])
def test_reference_network_trains_like_fit(opt):
    rng = np.random.default_rng(10)
    net = nf.Network([5, 7, 3], hidden="relu", output="softmax", dtype=np.float64, seed=2)
    X, y = rng.standard_normal((23, 5)), rng.integers(0, 3, 23)
    ref = R.ReferenceNetwork.from_network(net)
    ropt = R.reference_optimizer(opt)
    opt.reset()
    hist = net.fit(X, y, epochs=2, batch_size=5, optimizer=opt, shuffle=False, verbose=False)
    losses = [ref.train_epoch(X, np.eye(3)[y], np.arange(23), 5, ropt) for _ in range(2)]
    assert ropt.t == opt.t == 10                      # 5 batches (the last one short) x 2
    np.testing.assert_allclose(losses, hist.loss, rtol=1e-12)
    np.testing.assert_allclose(ref.params, net._flat_params, rtol=1e-12, atol=1e-14)


def test_gather_rows_refuses_out_of_range_indices():
    x = np.zeros((10, 3), np.float32)
    out = np.empty((2, 3), np.float32)
    for bad in ([0, 10], [-1, 0], [0, 10**9]):
        with pytest.raises(ValueError, match="out of range"):
            K.gather_rows(out, x, np.array(bad, np.intp))


@pytest.mark.parametrize("source", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_rows_scaled_matches_twin(source, dtype):
    rng = np.random.default_rng(0)
    x = (rng.random((50, 13)) * 255).astype(source)
    idx = rng.integers(0, 50, 21).astype(np.intp)
    out, ref = np.full((24, 13), -1, dtype), np.full((24, 13), -1, dtype)
    K.gather_rows_scaled(out, x, idx, 1 / 255)
    R.gather_rows_scaled(ref, x, idx, 1 / 255)
    assert np.array_equal(out, ref)                       # the same two roundings
    with pytest.raises(ValueError, match="out of range"):
        K.gather_rows_scaled(out, x, np.array([50], np.intp), 1.0)
    with pytest.raises(ValueError, match="cannot hold"):
        K.gather_rows_scaled(out[:5], x, idx, 1.0)
