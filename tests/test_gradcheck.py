"""Finite-difference checks of the analytic gradients (float64 throughout).

Three layers of evidence:
- ``nf.gradcheck`` on every hidden activation x every output x depth 1..3 x batch 1 / 7
  x every accepted target form;
- a full central difference written here, over every entry of the flat parameter
  buffer, with the loss computed in plain NumPy (independent of the compiled kernels);
- a directional check on a bigger net, and ``nf.gradcheck`` on a deliberately wrong
  gradient, which must be caught.

Relu / leaky relu kinks: the data is drawn (seed after seed) until no pre-activation of
a kinked layer lies within KINK_MARGIN of zero, so a +-eps step never crosses a kink.
"""
import math

import numpy as np
import pytest

import nnfast as nf

HIDDEN = ["relu", "leaky_relu", "tanh", "sigmoid", "linear"]
KINKED = {"relu", "leaky_relu"}
KINK_MARGIN = 1e-3
TOL = 1e-6


# ------------------------------------------------------------------ NumPy twin of the net

def _act(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    assert name == "linear"
    return z


def np_preacts(net, X):
    """Pre-activations of every layer (last = logits), in float64 NumPy."""
    a = np.asarray(X, np.float64)
    zs = []
    for l, (W, b) in enumerate(net.params):
        z = a @ W.astype(np.float64) + b.astype(np.float64)
        zs.append(z)
        if l < net.n_layers - 1:
            a = _act(net.hidden[l], z)
    return zs


def np_loss(net, X, Y):
    """Mean loss of API.md, computed from the logits in NumPy. Y: (n, n_out) float."""
    z = np_preacts(net, X)[-1]
    if net.output == "softmax":
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        return float(np.mean(lse - (Y * z).sum(axis=1)))
    if net.output == "sigmoid":
        # -(y log p + (1-y) log(1-p)) with p = sigmoid(z), written stably
        per = np.maximum(z, 0) - z * Y + np.log1p(np.exp(-np.abs(z)))
        return float(np.mean(per.sum(axis=1)))
    return float(np.mean(0.5 * ((z - Y) ** 2).sum(axis=1)))


def as_2d_targets(net, y):
    y = np.asarray(y)
    if net.output == "softmax" and y.ndim == 1:
        return np.eye(net.sizes[-1])[y]
    return y.reshape(len(y), -1).astype(np.float64)


def offset_of(net, view):
    """Index in net._flat_params where the parameter view `view` starts."""
    base = net._flat_params.__array_interface__["data"][0]
    return (view.__array_interface__["data"][0] - base) // net._flat_params.itemsize


def flat_grads(net, grads):
    """Analytic grads (list of (dW, db)) laid out like net._flat_params."""
    out = np.full(net.n_params, np.nan)
    for (W, b), (dW, db) in zip(net.params, grads):
        assert dW.shape == W.shape and db.shape == b.shape
        for p, g in ((W, dW), (b, db)):
            o = offset_of(net, p)
            out[o:o + p.size] = g.reshape(-1)
    assert not np.isnan(out).any(), "grads do not cover every parameter"
    return out


# ------------------------------------------------------------------ problem factory

def make_targets(rng, output, n, k, form):
    if output == "softmax":
        labels = rng.integers(0, k, n)
        return labels if form == "int" else np.eye(k)[labels]
    if output == "sigmoid":
        shape = (n,) if form == "1d" else (n, k)
        return rng.integers(0, 2, shape).astype(np.float64)
    shape = (n,) if form == "1d" else (n, k)
    return rng.standard_normal(shape)


def kink_free(net, X):
    zs = np_preacts(net, X)
    for l, z in enumerate(zs[:-1]):
        if net.hidden[l] in KINKED and np.abs(z).min() < KINK_MARGIN:
            return False
    return True


def make_problem(sizes, hidden, output, n, form, seed=0):
    """A float64 net with random (non-zero) biases and kink-free data."""
    net = nf.Network(sizes, hidden=hidden, output=output, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(1000 + seed)
    for _, b in net.params:
        b[...] = rng.normal(0.0, 0.3, b.shape)
    for _ in range(200):
        X = rng.standard_normal((n, sizes[0]))
        if kink_free(net, X):
            break
    else:
        raise AssertionError("could not draw kink-free data")
    y = make_targets(rng, output, n, sizes[-1], form)
    return net, X, y


# (output, target form, number of output units)
TARGETS = [("softmax", "int", 3), ("softmax", "onehot", 3),
           ("sigmoid", "2d", 3), ("sigmoid", "1d", 1),
           ("linear", "2d", 3), ("linear", "1d", 1)]
# (hidden sizes, hidden activation); depth 1 has no hidden layer, so one entry only
ARCHS = [((), "relu")] + [(h, act) for h in ((4,), (4, 6)) for act in HIDDEN]


def _arch_id(arch):
    hid, act = arch
    return f"depth{len(hid) + 1}" + (f"-{act}" if hid else "")


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}-{t[1]}")
@pytest.mark.parametrize("arch", ARCHS, ids=_arch_id)
def test_gradcheck_every_activation_output_depth(arch, target, n):
    hid, act = arch
    output, form, k = target
    sizes = [5, *hid, k]
    net, X, y = make_problem(sizes, act, output, n, form)
    before = net._flat_params.copy()
    err = nf.gradcheck(net, X, y)
    assert err < TOL, f"gradcheck {sizes} {act}/{output} {form} n={n}: {err:.3g}"
    assert np.array_equal(net._flat_params, before), "gradcheck did not restore params"


@pytest.mark.parametrize("hidden", [["tanh", "relu"], ["leaky_relu", "sigmoid"],
                                    ["linear", "tanh"]])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
def test_gradcheck_mixed_hidden_list(hidden, output):
    form = "int" if output == "softmax" else "2d"
    net, X, y = make_problem([5, 4, 6, 3], hidden, output, 7, form, seed=3)
    assert nf.gradcheck(net, X, y) < TOL


def test_gradcheck_odd_sizes_single_unit_layers():
    # 1-unit hidden layers and a prime-sized input
    net, X, y = make_problem([7, 1, 1, 2], "tanh", "softmax", 7, "int", seed=5)
    assert nf.gradcheck(net, X, y) < TOL


# ------------------------------------------------------------------ full central difference

@pytest.mark.parametrize("sizes,hidden,output,form", [
    ([4, 6, 3], "tanh", "softmax", "int"),
    ([4, 6, 5, 3], "leaky_relu", "softmax", "onehot"),
    ([4, 6, 5, 3], ["relu", "sigmoid"], "sigmoid", "2d"),
    ([4, 6, 5, 2], "relu", "linear", "2d"),
])
def test_full_central_difference_matches_analytic(sizes, hidden, output, form):
    """Every entry of _flat_params, with the loss computed in NumPy, not by nnfast."""
    net, X, y = make_problem(sizes, hidden, output, 5, form, seed=1)
    Y = as_2d_targets(net, y)
    loss, grads = net.loss_and_grads(X, y)
    assert loss == pytest.approx(np_loss(net, X, Y), rel=1e-12, abs=1e-14)
    analytic = flat_grads(net, grads)

    flat = net._flat_params
    before = flat.copy()
    eps = 1e-6
    numeric = np.empty(flat.size)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = np_loss(net, X, Y)
        flat[i] = keep - eps
        down = np_loss(net, X, Y)
        flat[i] = keep
        numeric[i] = (up - down) / (2 * eps)
    assert np.array_equal(flat, before)

    scale = np.abs(numeric).max()
    assert scale > 1e-3                      # a real gradient, not all zeros
    err = np.abs(analytic - numeric).max() / scale
    assert err < 1e-7, f"full central difference: max relative error {err:.3g}"
    # and nf.gradcheck agrees that this net is fine
    assert nf.gradcheck(net, X, y) < TOL


def test_full_central_difference_catches_a_wrong_slope():
    """The hand-written check above is sensitive: with a NumPy loss whose leaky slope is
    wrong (0.02 instead of 0.01), the analytic gradient no longer matches."""
    net, X, y = make_problem([4, 6, 3], "leaky_relu", "softmax", 5, "int", seed=1)
    Y = as_2d_targets(net, y)
    _, grads = net.loss_and_grads(X, y)
    analytic = flat_grads(net, grads)

    def wrong_loss():
        (W0, b0), (W1, b1) = net.params
        z = X @ W0 + b0
        a = np.where(z > 0, z, 0.02 * z)
        logits = a @ W1 + b1
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        return float(np.mean(lse - (Y * logits).sum(axis=1)))

    assert (np_preacts(net, X)[0] < 0).any()
    flat, eps = net._flat_params, 1e-6
    numeric = np.empty(flat.size)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        up = wrong_loss()
        flat[i] = keep - eps
        down = wrong_loss()
        flat[i] = keep
        numeric[i] = (up - down) / (2 * eps)
    assert np.abs(analytic - numeric).max() / np.abs(numeric).max() > 1e-4


# ------------------------------------------------------------------ directional check

def directional_gradcheck(loss, grad, theta, rng, eps=1e-6):
    u = rng.standard_normal(theta.size)
    u /= np.linalg.norm(u)
    numeric = (loss(theta + eps * u) - loss(theta - eps * u)) / (2 * eps)
    return abs(numeric - grad(theta) @ u) / max(abs(numeric), 1e-12)


@pytest.mark.parametrize("hidden,output,form", [
    ("relu", "softmax", "int"), ("tanh", "sigmoid", "2d"), ("leaky_relu", "linear", "2d")])
def test_directional_gradcheck_bigger_net(hidden, output, form):
    net, X, y = make_problem([50, 30, 20, 10], hidden, output, 32, form, seed=2)
    start = net._flat_params.copy()

    def loss(theta):
        net._flat_params[...] = theta
        return net.evaluate(X, y)["loss"]

    def grad(theta):
        net._flat_params[...] = theta
        return flat_grads(net, net.loss_and_grads(X, y)[1])

    rng = np.random.default_rng(7)
    errs = [directional_gradcheck(loss, grad, start, rng) for _ in range(5)]
    net._flat_params[...] = start
    assert max(errs) < TOL, f"directional errors {errs}"


# ------------------------------------------------------------------ gradcheck must fail

def _corrupt(kind):
    def apply(grads):
        grads = [(dW.copy(), db.copy()) for dW, db in grads]
        if kind == "scale_W0":
            grads[0][0][...] *= 1.1
        elif kind == "flip_last_bias":
            grads[-1][1][...] *= -1
        elif kind == "one_entry":
            grads[1][0][1, 2] += 1e-2 * max(1.0, abs(grads[1][0][1, 2]))
        elif kind == "sum_not_mean":        # forgot the 1/n: sum instead of mean
            grads = [(dW * 7, db * 7) for dW, db in grads]
        elif kind == "zero_hidden":
            grads[0][0][...] = 0
        return grads
    return apply


@pytest.mark.parametrize("kind", ["scale_W0", "flip_last_bias", "one_entry",
                                  "sum_not_mean", "zero_hidden"])
def test_gradcheck_reports_wrong_gradient(monkeypatch, kind):
    net, X, y = make_problem([5, 4, 6, 3], "tanh", "softmax", 7, "int", seed=4)
    assert nf.gradcheck(net, X, y) < TOL           # the honest gradient passes
    original = net.loss_and_grads
    corrupt = _corrupt(kind)

    def wrong(X_, y_):
        loss, grads = original(X_, y_)
        return loss, corrupt(grads)

    monkeypatch.setattr(net, "loss_and_grads", wrong)
    err = nf.gradcheck(net, X, y)
    assert err > 1e-3, f"corruption {kind!r} not detected (error {err:.3g})"


def test_gradcheck_subset_of_entries_and_restores():
    net, X, y = make_problem([5, 4, 6, 3], "sigmoid", "sigmoid", 7, "2d", seed=6)
    before = net._flat_params.copy()
    assert nf.gradcheck(net, X, y, n_entries=3, seed=1) < TOL
    assert np.array_equal(net._flat_params, before)


@pytest.mark.parametrize("kw", [{"eps": 0.0}, {"eps": -1e-6}, {"eps": math.nan},
                                {"eps": math.inf}, {"n_entries": 0}])
def test_gradcheck_bad_arguments(kw):
    net, X, y = make_problem([5, 3], "relu", "softmax", 2, "int")
    before = net._flat_params.copy()
    with pytest.raises((ValueError, TypeError)):
        nf.gradcheck(net, X, y, **kw)
    assert np.array_equal(net._flat_params, before)


def test_float32_gradcheck_is_loose_but_sane():
    """float32 is not for gradient checks, but the analytic gradient still points the
    right way: a coarse eps gives an error of at most a few percent."""
    net64, X, y = make_problem([5, 4, 3], "tanh", "softmax", 7, "int", seed=8)
    net = nf.Network([5, 4, 3], hidden="tanh", output="softmax", dtype=np.float32)
    net._flat_params[...] = net64._flat_params
    assert nf.gradcheck(net, X.astype(np.float32), y, eps=1e-2) < 5e-2


def test_gradcheck_refuses_a_bfloat16_network():
    """Rounded to bfloat16, a step of eps moves almost no parameter: the central
    differences would be 0 and the error a meaningless 1."""
    net = nf.Network([4, 8, 3], matmul_precision="bfloat16", seed=0)
    X = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    before = net._flat_params.copy()
    with pytest.raises(ValueError, match="bfloat16 network's loss is a step function"):
        nf.gradcheck(net, X, np.arange(6) % 3)
    assert np.array_equal(net._flat_params, before)
