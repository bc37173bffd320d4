"""Network behaviour: construction, views, determinism, shapes, losses, files, training."""
import os
import math
import tracemalloc

import numpy as np
import pytest

import nnfast as nf
from nnfast._group import LocalGroup

DTYPES = [np.float32, np.float64]
HIDDEN = ["relu", "leaky_relu", "tanh", "sigmoid", "linear"]


# ------------------------------------------------------------------ helpers

def _act(name, z):
    return {"relu": lambda: np.maximum(z, 0.0),
            "leaky_relu": lambda: np.where(z > 0, z, 0.01 * z),
            "tanh": lambda: np.tanh(z),
            "sigmoid": lambda: 1.0 / (1.0 + np.exp(-z)),
            "linear": lambda: z}[name]()


def np_logits(net, X):
    a = np.asarray(X, np.float64)
    for l, (W, b) in enumerate(net.params):
        z = a @ W.astype(np.float64) + b.astype(np.float64)
        a = _act(net.hidden[l], z) if l < net.n_layers - 1 else z
    return a


def np_output(net, X):
    z = np_logits(net, X)
    if net.output == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if net.output == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return z


def blobs(n=200, d=2, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    centers = np.zeros((2, d))
    centers[1, 0] = sep
    X = centers[y] + rng.standard_normal((n, d))
    return X.astype(np.float32), y


def small_problem(output="softmax", k=3, n=50, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    if output == "softmax":
        y = rng.integers(0, k, n)
    elif output == "sigmoid":
        y = rng.integers(0, 2, (n, k) if k > 1 else n)
    else:
        y = rng.standard_normal((n, k) if k > 1 else n)
    return X, y


# ------------------------------------------------------------------ construction

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[5, 3], [5, 4, 3], [7, 4, 6, 1], [784, 256, 128, 10]])
def test_construction_shapes_and_dtypes(sizes, dtype):
    net = nf.Network(sizes, dtype=dtype, output="softmax" if sizes[-1] > 1 else "sigmoid")
    assert list(net.sizes) == sizes
    assert net.dtype == np.dtype(dtype)
    assert len(net.params) == len(sizes) - 1
    n_params = 0
    for (W, b), fan_in, fan_out in zip(net.params, sizes, sizes[1:]):
        assert W.shape == (fan_in, fan_out) and b.shape == (fan_out,)
        assert W.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(W)) and np.all(b == 0)
        n_params += W.size + b.size
    assert net._flat_params.size == n_params
    assert net._flat_params.dtype == np.dtype(dtype)


def test_default_dtype_is_float32():
    assert nf.Network([3, 2]).dtype == np.float32


def test_hidden_as_list_one_per_layer():
    net = nf.Network([5, 4, 6, 3], hidden=["tanh", "relu"], output="linear", seed=0)
    assert list(net.hidden) == ["tanh", "relu"]
    X = np.random.default_rng(0).standard_normal((9, 5))
    np.testing.assert_allclose(net.forward(X), np_logits(net, X), rtol=1e-5, atol=1e-6)
    # the activations really are per layer: swapping them changes the output
    other = nf.Network([5, 4, 6, 3], hidden=["relu", "tanh"], output="linear", seed=0)
    other._flat_params[...] = net._flat_params
    assert not np.allclose(other.forward(X), net.forward(X))


def test_he_init_statistics():
    net = nf.Network([400, 300, 200, 10], hidden="relu", seed=0)
    for W, _ in net.params[:-1]:                       # followed by relu: He normal
        std = math.sqrt(2.0 / W.shape[0])
        assert abs(W.std() / std - 1) < 0.03
        assert abs(W.mean()) < 0.05 * std
        assert np.abs(W).max() > 3 * std                # normal, not uniform
    W, _ = net.params[-1]                               # softmax output: Glorot uniform
    r = math.sqrt(6.0 / (W.shape[0] + W.shape[1]))
    assert np.abs(W).max() <= r
    assert abs(W.std() / (r / math.sqrt(3)) - 1) < 0.05


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "linear"])
def test_glorot_init_statistics(hidden):
    net = nf.Network([400, 300, 10], hidden=hidden, seed=1)
    for W, _ in net.params:
        r = math.sqrt(6.0 / (W.shape[0] + W.shape[1]))
        assert np.abs(W).max() <= r
        assert np.abs(W).max() > 0.95 * r
        assert abs(W.std() / (r / math.sqrt(3)) - 1) < 0.05


def test_leaky_relu_uses_he_init():
    net = nf.Network([400, 300, 10], hidden="leaky_relu", seed=2)
    W = net.params[0][0]
    assert abs(W.std() / math.sqrt(2.0 / 400) - 1) < 0.03


def test_same_seed_same_weights_different_seed_different():
    a = nf.Network([20, 10, 3], seed=5)
    b = nf.Network([20, 10, 3], seed=5)
    c = nf.Network([20, 10, 3], seed=6)
    assert np.array_equal(a._flat_params, b._flat_params)
    assert not np.array_equal(a._flat_params, c._flat_params)


def test_float32_init_is_float64_init_rounded():
    a = nf.Network([20, 10, 3], dtype=np.float32, seed=5)
    b = nf.Network([20, 10, 3], dtype=np.float64, seed=5)
    np.testing.assert_array_equal(a._flat_params, b._flat_params.astype(np.float32))


# ------------------------------------------------------------------ params are views

def test_params_are_views_and_writing_changes_forward():
    net = nf.Network([5, 4, 3], seed=0)
    X, _ = small_problem()
    for W, b in net.params:
        assert np.shares_memory(W, net._flat_params)
        assert np.shares_memory(b, net._flat_params)
    before = net.forward(X)
    W0, _ = net.params[0]
    W0[0, 0] += 1.0
    assert not np.array_equal(net.forward(X), before)
    # set everything by hand: last layer zero -> uniform softmax
    W1, b1 = net.params[1]
    W1[...] = 0
    b1[...] = 0
    np.testing.assert_allclose(net.forward(X), np.full((len(X), 3), 1 / 3), rtol=1e-6)
    # writing into the flat buffer shows up in the views
    net._flat_params[...] = 0.25
    assert np.all(net.params[0][0] == 0.25) and np.all(net.params[1][1] == 0.25)


def test_params_views_are_disjoint_and_cover_buffer():
    net = nf.Network([5, 4, 6, 3], seed=0)
    marks = np.zeros(net.n_params, int)
    base = net._flat_params.__array_interface__["data"][0]
    for W, b in net.params:
        for p in (W, b):
            assert p.flags.c_contiguous
            o = (p.__array_interface__["data"][0] - base) // p.itemsize
            marks[o:o + p.size] += 1
    assert np.all(marks == 1)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_params_still_views_after_fit(optimizer):
    net = nf.Network([5, 4, 3], seed=0)
    views = net.params
    X, y = small_problem()
    net.fit(X, y, epochs=2, batch_size=16, optimizer=optimizer, verbose=False)
    for (W, b), (W2, b2) in zip(views, net.params):
        assert np.shares_memory(W2, net._flat_params) and np.shares_memory(b2, net._flat_params)
        assert np.shares_memory(W, W2) and np.shares_memory(b, b2)
        np.testing.assert_array_equal(W, W2)
    W0 = views[0][0]
    before = net.forward(X)
    W0 *= 0
    assert not np.array_equal(net.forward(X), before)


# ------------------------------------------------------------------ determinism, continuation

@pytest.mark.parametrize("dtype", DTYPES)
def test_same_seed_identical_training(dtype):
    X, y = small_problem(n=90)
    nets = [nf.Network([5, 8, 3], dtype=dtype, seed=11) for _ in range(2)]
    hists = [n.fit(X, y, epochs=3, batch_size=16, verbose=False) for n in nets]
    assert np.array_equal(nets[0]._flat_params, nets[1]._flat_params)
    assert hists[0].batch_loss == hists[1].batch_loss
    # and training really changed the weights
    assert not np.array_equal(nets[0]._flat_params,
                              nf.Network([5, 8, 3], dtype=dtype, seed=11)._flat_params)


def test_fit_continues_from_current_weights():
    X, y = small_problem(n=64)
    net = nf.Network([5, 8, 3], seed=0)
    init = net._flat_params.copy()
    net.fit(X, y, epochs=3, batch_size=64, shuffle=False, verbose=False)
    w1 = net._flat_params.copy()
    assert not np.array_equal(w1, init)
    loss_w1 = net.evaluate(X, y)["loss"]
    h2 = net.fit(X, y, epochs=1, batch_size=64, shuffle=False, verbose=False)
    # full batch, no shuffle: the first batch loss of the 2nd fit is the loss at w1
    assert h2.batch_loss[0] == pytest.approx(loss_w1, rel=1e-5)
    fresh = nf.Network([5, 8, 3], seed=0)
    assert h2.batch_loss[0] != pytest.approx(fresh.evaluate(X, y)["loss"], rel=1e-3)


def test_two_sgd_fits_equal_one_longer_fit():
    """Plain SGD is stateless: without shuffling, fit(1) + fit(1) must be bit-identical
    to fit(2) (the second fit starts exactly where the first stopped)."""
    X, y = small_problem(n=70)
    a = nf.Network([5, 8, 3], seed=3)
    b = nf.Network([5, 8, 3], seed=3)
    kw = dict(batch_size=16, shuffle=False, verbose=False)
    a.fit(X, y, epochs=1, optimizer=nf.SGD(lr=0.1), **kw)
    a.fit(X, y, epochs=1, optimizer=nf.SGD(lr=0.1), **kw)
    b.fit(X, y, epochs=2, optimizer=nf.SGD(lr=0.1), **kw)
    assert np.array_equal(a._flat_params, b._flat_params)


def test_same_adam_object_continues_its_state():
    X, y = small_problem(n=70)
    a = nf.Network([5, 8, 3], seed=3)
    b = nf.Network([5, 8, 3], seed=3)
    kw = dict(batch_size=16, shuffle=False, verbose=False)
    opt_a = nf.Adam(lr=1e-2)
    a.fit(X, y, epochs=1, optimizer=opt_a, **kw)
    a.fit(X, y, epochs=1, optimizer=opt_a, **kw)
    b.fit(X, y, epochs=2, optimizer=nf.Adam(lr=1e-2), **kw)
    assert np.array_equal(a._flat_params, b._flat_params)
    # a fresh Adam (or the name "adam") restarts the moments: a different trajectory
    c = nf.Network([5, 8, 3], seed=3)
    c.fit(X, y, epochs=1, optimizer=nf.Adam(lr=1e-2), **kw)
    c.fit(X, y, epochs=1, optimizer=nf.Adam(lr=1e-2), **kw)
    assert not np.allclose(c._flat_params, b._flat_params)


# ------------------------------------------------------------------ output shapes & dtypes

OUTPUT_KINDS = [("softmax", 3), ("sigmoid", 1), ("sigmoid", 4), ("linear", 1), ("linear", 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,k", OUTPUT_KINDS)
def test_forward_predict_shapes_and_dtypes(output, k, dtype):
    net = nf.Network([5, 6, k], hidden="tanh", output=output, dtype=dtype, seed=0)
    X, y = small_problem(output, k, n=11)
    out = net.forward(X)
    assert out.shape == (11, k) and out.dtype == np.dtype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, np_output(net, X), rtol=rtol, atol=rtol)
    pred = net.predict(X)
    if output == "softmax":
        assert pred.shape == (11,) and np.issubdtype(pred.dtype, np.integer)
        np.testing.assert_array_equal(pred, out.argmax(axis=1))
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    elif output == "sigmoid":
        assert pred.shape == ((11,) if k == 1 else (11, k))
        assert np.issubdtype(pred.dtype, np.integer)
        assert set(np.unique(pred)) <= {0, 1}
        np.testing.assert_array_equal(pred, (out > 0.5).astype(int).reshape(pred.shape))
    else:
        assert pred.shape == ((11,) if k == 1 else (11, k))
        assert np.issubdtype(pred.dtype, np.floating)
        np.testing.assert_array_equal(pred, out.reshape(pred.shape))
    if output == "linear":
        with pytest.raises(ValueError, match="linear"):
            net.predict_proba(X)
    else:
        proba = net.predict_proba(X)
        assert proba.shape == (11, k) and proba.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(proba, out)
        assert np.all((proba >= 0) & (proba <= 1))
    ev = net.evaluate(X, y)
    assert isinstance(ev["loss"], float) and math.isfinite(ev["loss"])
    if output == "linear":
        assert set(ev) == {"loss"}
    else:
        assert set(ev) == {"loss", "accuracy"}
        assert isinstance(ev["accuracy"], float) and 0 <= ev["accuracy"] <= 1
    loss, grads = net.loss_and_grads(X, y)
    assert isinstance(loss, float)
    assert loss == pytest.approx(ev["loss"], rel=1e-5)
    for (W, b), (dW, db) in zip(net.params, grads):
        assert dW.shape == W.shape and db.shape == b.shape
        assert dW.dtype == np.dtype(dtype) and db.dtype == np.dtype(dtype)
        assert not np.shares_memory(dW, net._flat_params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_forward_matches_numpy_for_every_hidden_activation(hidden, dtype):
    """Includes the leaky relu slope (0.01 for z < 0, as in PyTorch)."""
    net = nf.Network([6, 9, 7, 4], hidden=hidden, output="linear", dtype=dtype, seed=0)
    rng = np.random.default_rng(1)
    for _, b in net.params:
        b[...] = rng.normal(0, 0.5, b.shape)
    X = rng.standard_normal((17, 6)) * 2
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(net.forward(X), np_logits(net, X.astype(dtype)),
                               rtol=rtol, atol=rtol)


def test_forward_single_row_and_chunk_boundary():
    """Predicting runs in chunks: results must not depend on where rows fall."""
    net = nf.Network([6, 5, 3], seed=0)
    X = np.random.default_rng(0).standard_normal((4100, 6)).astype(np.float32)
    full = net.forward(X)
    np.testing.assert_allclose(full[4095:4097], net.forward(X[4095:4097]), rtol=1e-6)
    np.testing.assert_allclose(full[:1], net.forward(X[:1]), rtol=1e-6)
    np.testing.assert_allclose(full[-1:], net.forward(X[-1:]), rtol=1e-6)
    np.testing.assert_allclose(full, np_output(net, X), rtol=1e-5, atol=1e-6)


def test_softmax_forward_stable_for_large_logits():
    net = nf.Network([2, 3], output="softmax", seed=0)
    W, b = net.params[0]
    W[...] = [[100.0, -100.0, 0.0], [50.0, 0.0, -50.0]]
    out = net.forward(np.array([[10.0, 10.0], [-10.0, -10.0]], np.float32))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(net.predict([[10.0, 10.0], [-10.0, -10.0]]), [0, 1])


# ------------------------------------------------------------------ loss definitions

def _np_losses(output, z, Y):
    """API.md definitions, straight from p = output activation (float64)."""
    if output == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        labels = Y.argmax(axis=1)
        return np.mean(-np.log(p[np.arange(len(z)), labels]))
    if output == "sigmoid":
        p = 1 / (1 + np.exp(-z))
        return np.mean(np.sum(-(Y * np.log(p) + (1 - Y) * np.log(1 - p)), axis=1))
    return np.mean(0.5 * np.sum((z - Y) ** 2, axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,k,form", [
    ("softmax", 4, "int"), ("softmax", 4, "onehot"),
    ("sigmoid", 1, "1d"), ("sigmoid", 4, "2d"),
    ("linear", 1, "1d"), ("linear", 4, "2d")])
def test_loss_definitions_match_numpy(output, k, form, dtype):
    rng = np.random.default_rng(3)
    net = nf.Network([6, 5, k], hidden="tanh", output=output, dtype=dtype, seed=2)
    for _, b in net.params:
        b[...] = rng.normal(0, 0.5, b.shape)
    n = 13
    X = rng.standard_normal((n, 6))
    if output == "softmax":
        labels = rng.integers(0, k, n)
        y = labels if form == "int" else np.eye(k)[labels]
        Y = np.eye(k)[labels]
    elif output == "sigmoid":
        Y = rng.integers(0, 2, (n, k)).astype(float)
        y = Y[:, 0] if form == "1d" else Y
    else:
        Y = rng.standard_normal((n, k)) * 2
        y = Y[:, 0] if form == "1d" else Y
    z = np_logits(net, X.astype(dtype))
    expected = _np_losses(output, z, Y)
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    ev = net.evaluate(X, y)
    assert ev["loss"] == pytest.approx(expected, rel=rtol)
    assert net.loss_and_grads(X, y)[0] == pytest.approx(expected, rel=rtol)
    if output == "softmax":
        assert ev["accuracy"] == pytest.approx(np.mean(z.argmax(1) == Y.argmax(1)))
    elif output == "sigmoid":
        assert ev["accuracy"] == pytest.approx(np.mean((z > 0) == (Y > 0.5)))


def test_sigmoid_loss_is_summed_over_units_not_averaged():
    """mean_i( sum_k ... ): with all-zero logits every unit costs log 2."""
    net = nf.Network([3, 5], output="sigmoid", dtype=np.float64)
    net._flat_params[...] = 0
    X = np.ones((4, 3))
    assert net.evaluate(X, np.zeros((4, 5)))["loss"] == pytest.approx(5 * math.log(2))


def test_linear_loss_has_one_half_and_sums_units():
    net = nf.Network([3, 2], output="linear", dtype=np.float64)
    net._flat_params[...] = 0
    X = np.ones((4, 3))
    Y = np.tile([1.0, 2.0], (4, 1))                      # 0.5 * (1 + 4) = 2.5
    assert net.evaluate(X, Y)["loss"] == pytest.approx(2.5)


def test_softmax_loss_of_uniform_output_is_log_k():
    net = nf.Network([3, 7], output="softmax", dtype=np.float64)
    net._flat_params[...] = 0
    assert net.evaluate(np.ones((5, 3)), [0, 1, 2, 3, 6])["loss"] == pytest.approx(math.log(7))


def test_sigmoid_loss_extreme_logits_finite():
    net = nf.Network([1, 1], output="sigmoid", dtype=np.float32)
    W, b = net.params[0]
    W[...] = 200.0
    ev = net.evaluate([[1.0], [-1.0]], [0, 1])            # confidently wrong, twice
    assert math.isfinite(ev["loss"]) and ev["loss"] == pytest.approx(200.0, rel=1e-4)


# ------------------------------------------------------------------ save / load

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,k", [("softmax", 3), ("sigmoid", 2), ("linear", 1)])
def test_save_load_roundtrip(tmp_path, dtype, output, k):
    X, y = small_problem(output, k)
    net = nf.Network([5, 6, 4, k], hidden=["tanh", "leaky_relu"], output=output,
                     dtype=dtype, seed=1)
    net.fit(X, y, epochs=2, batch_size=16, verbose=False)
    path = tmp_path / "model.npz"
    net.save(path)
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]   # no temp files left
    net2 = nf.load(path)
    assert net2.dtype == np.dtype(dtype)
    assert list(net2.sizes) == list(net.sizes)
    assert list(net2.hidden) == list(net.hidden) and net2.output == net.output
    assert np.array_equal(net2._flat_params, net._flat_params)
    assert not np.shares_memory(net2._flat_params, net._flat_params)
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))
    np.testing.assert_array_equal(net2.predict(X), net.predict(X))
    # loaded params are still views
    for W, b in net2.params:
        assert np.shares_memory(W, net2._flat_params)
    # save with a str path, no .npz suffix: written exactly there
    p2 = str(tmp_path / "model.bin")
    net.save(p2)
    assert np.array_equal(nf.load(p2)._flat_params, net._flat_params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_depth_one_and_overwrite(tmp_path, dtype):
    X, _ = small_problem()
    path = tmp_path / "m.npz"
    first = nf.Network([5, 3], output="softmax", dtype=dtype, seed=0)
    first.save(path)
    second = nf.Network([5, 2], output="sigmoid", dtype=dtype, seed=1)
    second.save(path)                                    # replaces the first file
    loaded = nf.load(path)
    assert list(loaded.sizes) == [5, 2] and loaded.output == "sigmoid"
    np.testing.assert_array_equal(loaded.forward(X), second.forward(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_loaded_network_trains_like_the_original(tmp_path):
    X, y = small_problem(n=40)
    net = nf.Network([5, 6, 3], seed=0)
    net.save(tmp_path / "m.npz")
    loaded = nf.load(tmp_path / "m.npz")
    kw = dict(epochs=2, batch_size=8, shuffle=False, optimizer="sgd", verbose=False)
    net.fit(X, y, **kw)
    loaded.fit(X, y, **kw)
    assert np.array_equal(net._flat_params, loaded._flat_params)


def test_load_refuses_non_model_npz(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, a=np.zeros(3), b=np.ones(2))
    with pytest.raises(ValueError, match="nnfast"):
        nf.load(p)


def test_load_refuses_garbage_file(tmp_path):
    p = tmp_path / "garbage.npz"
    p.write_bytes(b"this is not a model\x00\x01\x02" * 20)
    with pytest.raises(ValueError):
        nf.load(p)
    p2 = tmp_path / "empty.npz"
    p2.write_bytes(b"")
    with pytest.raises(ValueError):
        nf.load(p2)


def test_load_refuses_plain_npy(tmp_path):
    """A .npy holding an array is not a model either: ValueError (not a TypeError about
    context managers)."""
    p = tmp_path / "array.npy"
    np.save(p, np.zeros(3))
    with pytest.raises(ValueError):
        nf.load(p)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz does not exist"):
        nf.load(tmp_path / "nope.npz")


def _resave(src, dst, **changes):
    with np.load(src) as f:
        data = {k: f[k] for k in f.files}
    data.update(changes)
    np.savez(dst, **data)


@pytest.mark.parametrize("change", [
    {"params": np.zeros(5, np.float32)},                         # wrong size
    {"params": np.full(5 * 4 + 4 + 4 * 3 + 3, np.nan, np.float32)},
    {"dtype": np.array("float16")},
    {"version": np.array(99)},
    {"format": np.array("something-else")},
    {"sizes": np.array([5, 0, 3])},
    {"output": np.array("tanh")},
])
def test_load_refuses_inconsistent_model(tmp_path, change):
    net = nf.Network([5, 4, 3], seed=0)
    good = tmp_path / "good.npz"
    net.save(good)
    bad = tmp_path / "bad.npz"
    _resave(good, bad, **change)
    with pytest.raises(ValueError):
        nf.load(bad)


# ------------------------------------------------------------------ no allocation per step

@pytest.mark.parametrize("optimizer", [lambda: nf.Adam(), lambda: nf.SGD(lr=0.01, momentum=0.9),
                                       lambda: nf.Adam(weight_decay=0.01)],
                         ids=["adam", "sgd_momentum", "adamw"])
@pytest.mark.parametrize("output,k", [("softmax", 10), ("sigmoid", 3), ("linear", 1)])
def test_steady_state_train_step_allocates_nothing(output, k, optimizer):
    rng = np.random.default_rng(0)
    net = nf.Network([32, 24, 16, k], hidden="relu", output=output, seed=0)
    n, batch = 2048, 512          # any per-step copy of a batch-sized array is > 4 KB
    X = rng.standard_normal((n, 32)).astype(np.float32)
    if output == "softmax":
        Y = np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    elif output == "sigmoid":
        Y = (rng.random((n, k)) > 0.5).astype(np.float32)
    else:
        Y = rng.standard_normal((n, k)).astype(np.float32)
    opt = optimizer()
    opt._prepare(net)                                  # as fit does
    ws = net._get_workspace(batch)
    ws.step.bind(X, Y)                                 # as fit does
    rule = opt._rule()
    group = LocalGroup()

    def train_step(idx):                               # as nnfast.training does
        group.step(ws.step, idx, float(idx.shape[0]), opt.t + 1, rule, 0, 1, False)
        opt.t += 1

    order = rng.permutation(n).astype(np.intp)
    idxs = [order[s:s + batch] for s in range(0, n, batch)]
    for idx in idxs:                                   # warm-up
        train_step(idx)
    before = net._flat_params.copy()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            for idx in idxs:
                train_step(idx)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not np.array_equal(before, net._flat_params)   # the steps did train
    assert peak - base < 4096, f"a training step allocated {peak - base} bytes"
    assert current - base < 1024


# ------------------------------------------------------------------ learning

def test_learns_two_gaussian_blobs():
    X, y = blobs(n=400, d=2, seed=0, sep=4.0)
    Xt, yt = blobs(n=400, d=2, seed=1, sep=4.0)
    net = nf.Network([2, 16, 2], hidden="relu", output="softmax", seed=0)
    acc0 = net.evaluate(Xt, yt)["accuracy"]
    hist = net.fit(X, y, epochs=30, batch_size=32, optimizer=nf.Adam(lr=1e-2), verbose=False)
    acc = net.evaluate(Xt, yt)["accuracy"]
    assert acc > 0.95, f"accuracy {acc} (before training {acc0})"
    assert hist.loss[-1] < hist.loss[0]
    assert np.mean(net.predict(Xt) == yt) == pytest.approx(acc)


def test_learns_binary_blobs_with_single_sigmoid_unit():
    X, y = blobs(n=400, d=3, seed=2, sep=4.0)
    net = nf.Network([3, 8, 1], hidden="tanh", output="sigmoid", seed=0)
    net.fit(X, y, epochs=30, batch_size=32, optimizer=nf.Adam(lr=1e-2), verbose=False)
    assert net.evaluate(X, y)["accuracy"] > 0.95
    assert net.predict(X).shape == (400,)


def test_learns_linear_regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 4)).astype(np.float32)
    w = np.array([1.5, -2.0, 0.5, 3.0])
    y = X @ w + 0.7 + 0.01 * rng.standard_normal(256)
    net = nf.Network([4, 1], output="linear", seed=0)
    loss0 = net.evaluate(X, y)["loss"]
    net.fit(X, y, epochs=40, batch_size=32, optimizer=nf.SGD(lr=0.05), verbose=False)
    loss = net.evaluate(X, y)["loss"]
    assert loss < loss0 / 10, (loss0, loss)
    W, b = net.params[0]
    np.testing.assert_allclose(W[:, 0], w, atol=0.05)
    assert b[0] == pytest.approx(0.7, abs=0.05)


def test_learns_multi_output_regression_with_hidden_layer():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 3)).astype(np.float32)
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    net = nf.Network([3, 32, 2], hidden="tanh", output="linear", seed=0)
    loss0 = net.evaluate(X, Y)["loss"]
    net.fit(X, Y, epochs=60, batch_size=32, optimizer=nf.Adam(lr=1e-2), verbose=False)
    assert net.evaluate(X, Y)["loss"] < loss0 / 10


def test_learns_multi_label_sigmoid():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 6)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] - X[:, 4] > 0.5], axis=1)
    net = nf.Network([6, 16, 3], hidden="relu", output="sigmoid", seed=0)
    net.fit(X, Y.astype(np.float32), epochs=40, batch_size=32,
            optimizer=nf.Adam(lr=1e-2), verbose=False)
    acc = net.evaluate(X, Y)["accuracy"]
    assert acc > 0.95
    assert net.predict(X).shape == (400, 3)
    per_label = np.mean(net.predict(X) == Y, axis=0)
    assert np.all(per_label > 0.9), per_label


@pytest.mark.parametrize("optimizer", [lambda: nf.SGD(lr=0.1, momentum=0.9),
                                       lambda: nf.SGD(lr=0.1, momentum=0.9, nesterov=True),
                                       lambda: nf.Adam(lr=1e-2, weight_decay=1e-3), "sgd"])
def test_every_optimizer_reduces_loss(optimizer):
    X, y = blobs(n=200, d=2, seed=3)
    net = nf.Network([2, 8, 2], seed=0)
    opt = optimizer() if callable(optimizer) else optimizer
    loss0 = net.evaluate(X, y)["loss"]
    net.fit(X, y, epochs=20, batch_size=20, optimizer=opt, verbose=False)
    assert net.evaluate(X, y)["loss"] < 0.8 * loss0


# ------------------------------------------------------------------ threads

def test_set_get_num_threads_roundtrip():
    old = nf.get_num_threads()
    assert isinstance(old, int) and old >= 1
    try:
        nf.set_num_threads(1)
        assert nf.get_num_threads() == 1
        nf.set_num_threads(2)
        assert nf.get_num_threads() == 2
        nf.set_num_threads(np.int64(1))
        assert nf.get_num_threads() == 1
    finally:
        nf.set_num_threads(old)
    assert nf.get_num_threads() == old


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                     ("2", TypeError), (None, TypeError), (True, TypeError),
                                     (2**40, ValueError)])
def test_set_num_threads_bad_values(bad, exc):
    old = nf.get_num_threads()
    with pytest.raises(exc, match="set_num_threads"):
        nf.set_num_threads(bad)
    assert nf.get_num_threads() == old


def test_results_do_not_depend_on_thread_count():
    X, y = small_problem(n=200, d=40)
    old = nf.get_num_threads()
    out = []
    try:
        for t in (1, 2):
            nf.set_num_threads(t)
            net = nf.Network([40, 64, 3], dtype=np.float64, seed=0)
            net.fit(X, y, epochs=2, batch_size=50, optimizer=nf.SGD(lr=0.1, momentum=0.9),
                    verbose=False)
            out.append(net._flat_params.copy())
    finally:
        nf.set_num_threads(old)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ History

def test_history_fields_with_validation():
    X, y = small_problem(n=50)
    Xv, yv = small_problem(n=20, seed=1)
    net = nf.Network([5, 8, 3], seed=0)
    hist = net.fit(X, y, epochs=4, batch_size=16, validation_data=(Xv, yv), verbose=False)
    assert isinstance(hist, nf.History)
    assert len(hist.loss) == 4
    assert len(hist.batch_loss) == 4 * math.ceil(50 / 16)
    assert len(hist.val_loss) == 4 and len(hist.val_accuracy) == 4
    assert all(isinstance(v, float) and math.isfinite(v)
               for v in hist.loss + hist.batch_loss + hist.val_loss + hist.val_accuracy)
    # epoch loss = mean over samples of the batch losses (16, 16, 16, 2)
    sizes = np.array([16, 16, 16, 2])
    for e in range(4):
        bl = np.array(hist.batch_loss[4 * e:4 * e + 4])
        assert hist.loss[e] == pytest.approx(float(bl @ sizes / 50), rel=1e-6)
    # the last validation entry is the validation loss of the final weights
    ev = net.evaluate(Xv, yv)
    assert hist.val_loss[-1] == pytest.approx(ev["loss"], rel=1e-6)
    assert hist.val_accuracy[-1] == pytest.approx(ev["accuracy"])


def test_history_without_validation_and_regression_validation():
    X, y = small_problem("linear", 2, n=30)
    net = nf.Network([5, 4, 2], output="linear", seed=0)
    hist = net.fit(X, y, epochs=2, batch_size=7, verbose=False)
    assert len(hist.batch_loss) == 2 * math.ceil(30 / 7)
    assert hist.val_loss == [] and hist.val_accuracy == []
    hist = net.fit(X, y, epochs=3, batch_size=7, validation_data=(X, y), verbose=False)
    assert len(hist.val_loss) == 3
    assert hist.val_accuracy == []                      # no accuracy for regression


def test_batch_size_larger_than_data_is_one_batch():
    X, y = small_problem(n=10)
    net = nf.Network([5, 4, 3], seed=0)
    hist = net.fit(X, y, epochs=3, batch_size=1000, verbose=False)
    assert len(hist.batch_loss) == 3
    assert hist.loss == pytest.approx(hist.batch_loss)


def test_single_sample_training_set():
    net = nf.Network([5, 4, 3], seed=0)
    X, y = small_problem(n=1)
    hist = net.fit(X, y, epochs=3, batch_size=128, optimizer=nf.SGD(lr=0.1), verbose=False)
    assert len(hist.batch_loss) == 3 and hist.loss[-1] < hist.loss[0]


def test_batch_size_one():
    X, y = small_problem(n=9)
    net = nf.Network([5, 4, 3], seed=0)
    hist = net.fit(X, y, epochs=2, batch_size=1, optimizer=nf.SGD(lr=0.01), verbose=False)
    assert len(hist.batch_loss) == 18


def test_verbose_prints_one_line_per_epoch(capsys):
    X, y = small_problem(n=20)
    nf.Network([5, 4, 3], seed=0).fit(X, y, epochs=3, batch_size=8, verbose=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 3
    nf.Network([5, 4, 3], seed=0).fit(X, y, epochs=3, batch_size=8, verbose=False)
    assert capsys.readouterr().out == ""


def test_shuffle_false_is_deterministic_and_differs_from_shuffle():
    X, y = small_problem(n=64)
    a, b, c = (nf.Network([5, 4, 3], seed=s) for s in (0, 1, 0))
    b._flat_params[...] = a._flat_params
    a.fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=False)
    b.fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=False)
    assert np.array_equal(a._flat_params, b._flat_params)   # seed only affects shuffling
    c.fit(X, y, epochs=2, batch_size=16, shuffle=True, verbose=False)
    assert not np.array_equal(a._flat_params, c._flat_params)


# ------------------------------------------------------------------ float32 vs float64

@pytest.mark.parametrize("optimizer", [lambda: nf.SGD(lr=0.1),
                                       lambda: nf.SGD(lr=0.05, momentum=0.9),
                                       lambda: nf.Adam(lr=1e-3)])
@pytest.mark.parametrize("output,k", [("softmax", 3), ("sigmoid", 2), ("linear", 2)])
def test_float32_and_float64_training_agree(output, k, optimizer):
    X, y = small_problem(output, k, n=64, d=10, seed=4)
    n32 = nf.Network([10, 16, 8, k], hidden="tanh", output=output, dtype=np.float32, seed=0)
    n64 = nf.Network([10, 16, 8, k], hidden="tanh", output=output, dtype=np.float64, seed=0)
    n64._flat_params[...] = n32._flat_params            # identical starting weights
    start = n64._flat_params.copy()
    h32 = n32.fit(X, y, epochs=2, batch_size=16, shuffle=False, optimizer=optimizer(),
                  verbose=False)
    h64 = n64.fit(X, y, epochs=2, batch_size=16, shuffle=False, optimizer=optimizer(),
                  verbose=False)
    np.testing.assert_allclose(h32.batch_loss, h64.batch_loss, rtol=1e-4)
    moved = np.abs(n64._flat_params - start).max()
    assert moved > 1e-3
    err = np.abs(n32._flat_params.astype(np.float64) - n64._flat_params).max()
    assert err < 2e-4 * moved, (err, moved)


# ------------------------------------------------------------------ repr / misc

def test_repr_mentions_layout():
    r = repr(nf.Network([5, 4, 3], hidden="tanh", output="sigmoid", dtype=np.float64))
    assert "5" in r and "tanh" in r and "sigmoid" in r and "float64" in r


# ------------------------------------------------------------------ regressions

def _blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def test_fit_refuses_to_run_twice_at_once():
    net = nf.Network([4, 3, 2], seed=0)
    X, y = _blobs()
    before = net._flat_params.copy()
    net._fit_lock.acquire()                     # as if another thread were inside fit
    try:
        with pytest.raises(RuntimeError, match="already running"):
            net.fit(X, y, epochs=1, verbose=False)
    finally:
        net._fit_lock.release()
    np.testing.assert_array_equal(net._flat_params, before)
    net.fit(X, y, epochs=1, verbose=False)      # free again


def test_shuffle_false_uses_the_data_order_even_after_a_shuffled_fit():
    X, y = _blobs()
    a = nf.Network([4, 3, 2], seed=0)
    a.fit(X, y, epochs=1, batch_size=8, shuffle=True, optimizer=nf.SGD(lr=0.0 + 1e-12),
          verbose=False)
    b = nf.Network([4, 3, 2], seed=0)
    b._flat_params[...] = a._flat_params
    ha = a.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=False)
    hb = b.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=False)
    assert ha.batch_loss == hb.batch_loss
    np.testing.assert_array_equal(a._flat_params, b._flat_params)


def test_predict_decides_like_evaluate_on_ties():
    for output, y in (("sigmoid", np.array([1])), ("softmax", np.array([1]))):
        k = 1 if output == "sigmoid" else 2
        net = nf.Network([1, k], output=output, seed=0)
        net.coefs[0][...] = 1e-8 * np.arange(1, k + 1)   # probabilities round to a tie
        X = np.ones((1, 1), np.float32)
        acc = net.evaluate(X, y)["accuracy"]
        assert acc == float(np.all(net.predict(X) == y))


def test_hidden_may_be_any_sequence():
    net = nf.Network([3, 5, 4, 1], hidden=np.array(["tanh", "relu"]), output="sigmoid")
    assert net.hidden == ("tanh", "relu")


@pytest.mark.parametrize("make", [lambda: nf.SGD(lr=1e30), lambda: nf.Adam(lr=1e35)],
                         ids=["sgd", "adam"])
def test_diverging_fit_stops_and_keeps_finite_weights(make, tmp_path):
    X, y = _blobs()
    net = nf.Network([4, 3, 2], seed=0)
    opt = make()
    with pytest.raises(FloatingPointError, match=r"diverged: the loss of batch \d+ of epoch "
                                                 r"\d+ is (nan|inf)") as info:
        net.fit(X * 1e3, y, epochs=50, batch_size=8, optimizer=opt, verbose=False)
    assert np.isfinite(net._flat_params).all()          # the last finite step's weights
    hist = info.value.history                            # what was trained, truthfully
    assert all(np.isfinite(hist.batch_loss))
    assert opt.t == len(hist.batch_loss)
    net.save(tmp_path / "m.npz")                         # still a usable model
    assert nf.load(tmp_path / "m.npz").sizes == net.sizes


def test_save_refuses_nan(tmp_path):
    net = nf.Network([4, 3, 2], seed=0)
    net.coefs[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        net.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_saved_model_is_readable_by_others(tmp_path):
    net = nf.Network([4, 3, 2], seed=0)
    old = os.umask(0o022)
    try:
        net.save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "m.npz").st_mode & 0o777) == 0o644


def test_load_checks_sizes_before_allocating(tmp_path):
    import time
    from nnfast import io as nf_io
    path = tmp_path / "huge.npz"
    arrays = dict(sizes=np.array([20000, 20000]), hidden=np.array([], dtype=str),
                  output=np.array("sigmoid"), dtype=np.array("float32"),
                  params=np.zeros(3, np.float32))
    np.savez(path, format=np.array("nnfast-model"), version=np.array(2),
             checksum=np.array(nf_io._checksum(arrays)), **arrays)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="expected \\(400020000,\\)"):
        nf.load(path)
    assert time.perf_counter() - t0 < 1.0          # refused without building the network


def test_gradcheck_accepts_numpy_eps_and_refuses_bad_ones():
    net = nf.Network([3, 2], output="linear", dtype=np.float64, seed=0)
    X = np.random.default_rng(0).standard_normal((4, 3))
    Y = np.random.default_rng(1).standard_normal((4, 2))
    assert nf.gradcheck(net, X, Y, eps=np.float32(1e-6)) < 1e-4
    with pytest.raises(TypeError):
        nf.gradcheck(net, X, Y, eps=True)
    with pytest.raises(ValueError):
        nf.gradcheck(net, X, Y, eps=-1e-6)
