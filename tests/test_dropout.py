"""Inverted dropout: the mask kernel against its NumPy twin, mask statistics, gradients
with the mask fixed, training against the reference, prediction without dropout, files."""
import numpy as np
import pytest

import nnfast as nf
from nnfast import _kernels as K
from nnfast import reference as R
from nnfast.reference import ReferenceNetwork

DTYPES = [np.float32, np.float64]
HIDDEN = ["relu", "leaky_relu", "tanh", "sigmoid", "linear"]
CODES = {"relu": K.ACT_RELU, "leaky_relu": K.ACT_LEAKY_RELU, "tanh": K.ACT_TANH,
         "sigmoid": K.ACT_SIGMOID, "linear": K.ACT_LINEAR}


def _targets(output, n, k, rng):
    if output == "softmax":
        return rng.integers(0, k, n)
    if output == "sigmoid":
        return rng.integers(0, 2, (n, k))
    return rng.standard_normal((n, k))


# ---------------------------------------------------------------- the kernel

@pytest.mark.parametrize("seed, step, layer", [(0, 0, 0), (1, 2, 3), (2**63 + 5, 10**9, 7),
                                               (2**64 - 1, 2**64 - 1, 2**64 - 1)])
def test_key_matches_twin(seed, step, layer):
    assert K.dropout_key(seed, step, layer) == R.dropout_key(seed, step, layer)


@pytest.mark.parametrize("p", [0.0, 1e-12, 0.2, 0.5, 0.999999])
def test_threshold_matches_twin(p):
    assert K.dropout_threshold(p) == R.dropout_threshold(p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("shape, p", [((1, 1), 0.5), ((7, 33), 0.3), ((64, 200), 0.9)])
def test_dropout_forward_backward_match_twin(dtype, hidden, shape, p):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(shape).astype(dtype)
    a = np.empty_like(z)
    K.dense_forward(a, z, np.eye(shape[1], dtype=dtype), np.zeros(shape[1], dtype),
                    CODES[hidden])                                        # a = act(z)
    key = K.dropout_key(3, 4, 1)
    a_c, g_c, a_r, g_r = a.copy(), np.empty_like(a), a.copy(), np.empty_like(a)
    K.dropout_forward(a_c, g_c, key, p, CODES[hidden])
    R.dropout_forward(a_r, g_r, key, p, CODES[hidden])
    mask = R.dropout_mask(*shape, key, p)
    assert np.array_equal(a_c != 0, mask & (a != 0))      # exactly the twin's mask
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(a_c, a_r, rtol=tol, atol=tol)
    np.testing.assert_allclose(g_c, g_r, rtol=tol, atol=tol)
    d = rng.standard_normal(shape).astype(dtype)
    d_c, d_r = d.copy(), d.copy()
    K.dropout_backward(d_c, g_c)
    R.dropout_backward(d_r, g_r)
    np.testing.assert_allclose(d_c, d_r, rtol=tol, atol=tol)


def test_dropout_kernels_refuse_bad_arguments():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.dropout_forward(a, np.ones((4, 3), np.float32), 1, 0.5, K.ACT_RELU)
    with pytest.raises(ValueError, match="activation code"):
        K.dropout_forward(a, np.ones_like(a), 1, 0.5, K.ACT_SOFTMAX)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        K.dropout_forward(a, np.ones_like(a), 1, 1.0, K.ACT_RELU)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.dropout_backward(a, np.ones((3, 5), np.float32))


# ---------------------------------------------------------------- mask statistics

def _kept(n, m, key, p):
    a, g = np.ones((n, m)), np.empty((n, m))
    K.dropout_forward(a, g, key, p, K.ACT_LINEAR)
    return a


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_rate_and_inverted_scaling(p):
    n, m = 512, 256
    a = _kept(n, m, K.dropout_key(0, 0, 0), p)
    kept = a != 0
    sigma = np.sqrt(p * (1 - p) / a.size)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert np.allclose(a[kept], 1 / (1 - p))
    assert abs(a.mean() - 1) < 5 * sigma / (1 - p)          # the expectation is preserved
    # every row and every column has its own draws: their rates spread as binomials
    assert abs(kept.mean(axis=1).std() - np.sqrt(p * (1 - p) / m)) < 0.25 * np.sqrt(p * (1 - p) / m)
    assert abs(kept.mean(axis=0).std() - np.sqrt(p * (1 - p) / n)) < 0.25 * np.sqrt(p * (1 - p) / n)


def test_mask_entries_are_uncorrelated():
    kept = (_kept(512, 256, K.dropout_key(1, 0, 0), 0.5) != 0).astype(np.float64)
    x = kept - kept.mean()
    limit = 5 / np.sqrt(kept.size)
    for shifted, original in ((x[:, 1:], x[:, :-1]), (x[1:], x[:-1])):   # neighbours
        assert abs((shifted * original).mean() / x.var()) < limit


def test_masks_differ_between_steps_layers_and_seeds():
    masks = [_kept(64, 64, K.dropout_key(s, t, l), 0.5) != 0
             for s, t, l in [(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0)]]
    for i in range(len(masks)):
        for j in range(i):
            agree = (masks[i] == masks[j]).mean()
            assert 0.4 < agree < 0.6                      # independent, not shifted copies


# ---------------------------------------------------------------- gradients and training

@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output, k", [("softmax", 3), ("sigmoid", 2), ("linear", 2)])
def test_gradcheck_with_fixed_mask(hidden, output, k):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((9, 5))
    y = _targets(output, 9, k, rng)
    net = nf.Network([5, 8, 6, k], hidden=hidden, output=output, dtype=np.float64,
                     seed=0, dropout=[0.3, 0.5])
    assert nf.gradcheck(net, X, y, dropout_seed=11) < 1e-6
    # the mask is really applied: a different loss than without dropout
    assert net.loss_and_grads(X, y, dropout_seed=11)[0] != net.loss_and_grads(X, y)[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_and_grads_with_dropout_match_reference(dtype):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 12)).astype(dtype)
    y = rng.integers(0, 4, 50)
    net = nf.Network([12, 32, 16, 4], hidden=["tanh", "relu"], dtype=dtype, dropout=0.4)
    ref = ReferenceNetwork.from_network(net)
    loss, grads = net.loss_and_grads(X, y, dropout_seed=5)
    rloss, rgrad = ref.loss_and_grads(X, net._Y(y, 50), dropout_seed=5)
    flat = np.concatenate([dw.ravel() for dw, _ in grads] + [db for _, db in grads])
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert loss == pytest.approx(rloss, rel=tol)
    np.testing.assert_allclose(flat, rgrad, rtol=tol, atol=tol * np.abs(rgrad).max())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_with_dropout_matches_reference_step_by_step(optimizer):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((100, 8))
    y = rng.integers(0, 3, 100)
    net = nf.Network([8, 16, 16, 3], dtype=np.float64, dropout=[0.2, 0.5], seed=1)
    ref = ReferenceNetwork.from_network(net)
    opt = nf.Adam(lr=1e-2) if optimizer == "adam" else nf.SGD(lr=0.1, momentum=0.9)
    ropt = R.reference_optimizer(opt)
    net.fit(X, y, epochs=3, batch_size=32, optimizer=opt, shuffle=False, verbose=False)
    order = np.arange(100)
    for _ in range(3):
        ref.train_epoch(X, net._Y(y, 100), order, 32, ropt)
    assert net.dropout_state[1] == ref.dropout_step == 12
    np.testing.assert_allclose(net._flat_params, ref.params, rtol=1e-9, atol=1e-12)


def test_mask_does_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((256, 64))
    y = rng.integers(0, 10, 256)
    net = nf.Network([64, 96, 80, 10], dtype=np.float64, dropout=0.5)
    before = nf.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            nf.set_num_threads(threads)
            results.append(net.loss_and_grads(X, y, dropout_seed=9))
    finally:
        nf.set_num_threads(before)
    (l1, g1), (l2, g2) = results
    assert l1 == pytest.approx(l2, rel=1e-12)
    for (a, b), (c, d) in zip(g1, g2):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b, d, rtol=1e-10, atol=1e-13)


def test_two_fits_equal_one_longer_fit_with_dropout():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((90, 5)).astype(np.float32)
    y = rng.integers(0, 2, 90)
    a = nf.Network([5, 20, 2], seed=3, dropout=0.3)
    b = nf.Network([5, 20, 2], seed=3, dropout=0.3)
    opt_a, opt_b = nf.SGD(lr=0.05), nf.SGD(lr=0.05)
    a.fit(X, y, epochs=2, batch_size=16, optimizer=opt_a, verbose=False)
    b.fit(X, y, epochs=1, batch_size=16, optimizer=opt_b, verbose=False)
    b.fit(X, y, epochs=1, batch_size=16, optimizer=opt_b, verbose=False)
    assert np.array_equal(a._flat_params, b._flat_params)


def test_dropout_changes_training_but_not_initialisation_or_prediction():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((200, 6)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    plain = nf.Network([6, 32, 2], seed=0)
    drop = nf.Network([6, 32, 2], seed=0, dropout=0.5)
    assert np.array_equal(plain._flat_params, drop._flat_params)
    # prediction never drops: same weights, same outputs, every call
    assert np.array_equal(plain.forward(X), drop.forward(X))
    assert np.array_equal(drop.forward(X), drop.forward(X))
    assert plain.evaluate(X, y) == drop.evaluate(X, y)
    plain.fit(X, y, epochs=2, batch_size=20, verbose=False)
    drop.fit(X, y, epochs=2, batch_size=20, verbose=False)
    assert not np.array_equal(plain._flat_params, drop._flat_params)


def test_network_with_dropout_learns():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((600, 10)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(np.int64)
    net = nf.Network([10, 64, 64, 2], seed=0, dropout=0.3)
    net.fit(X[:500], y[:500], epochs=30, batch_size=32, optimizer=nf.Adam(lr=3e-3),
            verbose=False)
    assert net.evaluate(X[500:], y[500:])["accuracy"] > 0.9


def test_dropout_saved_and_loaded(tmp_path):
    net = nf.Network([4, 6, 5, 2], dropout=[0.25, 0.0], seed=0)
    net.save(tmp_path / "m.npz")
    back = nf.load(tmp_path / "m.npz")
    assert back.dropout == (0.25, 0.0)
    plain = nf.Network([4, 6, 5, 2])
    plain.save(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as f:
        assert "dropout" not in f.files                 # files without dropout unchanged
    assert nf.load(tmp_path / "p.npz").dropout == (0.0, 0.0)


def test_summary_and_repr_show_dropout(capsys):
    net = nf.Network([4, 6, 2], dropout=0.2)
    net.summary()
    assert "dropout 0.2" in capsys.readouterr().out
    assert "dropout=[0.2]" in repr(net)


@pytest.mark.parametrize("dropout, exc, match", [
    (1.0, ValueError, r"\[0, 1\)"),
    (-0.1, ValueError, r"\[0, 1\)"),
    (float("nan"), ValueError, r"\[0, 1\)"),
    ("0.5", TypeError, "number"),
    (True, TypeError, "number"),
    (None, TypeError, "number"),
    ([0.1], ValueError, "2 rates"),
    ([0.1, 0.2, 0.3], ValueError, "2 rates"),
])
def test_bad_dropout_is_refused(dropout, exc, match):
    with pytest.raises(exc, match=match):
        nf.Network([4, 6, 5, 2], dropout=dropout)


def test_dropout_needs_hidden_layers():
    with pytest.raises(ValueError, match="hidden layers"):
        nf.Network([4, 2], dropout=0.5)
    assert nf.Network([4, 2], dropout=0.0).dropout == ()


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "a"])
def test_bad_dropout_seed_is_refused(seed):
    net = nf.Network([4, 6, 2], dropout=0.5)
    with pytest.raises((TypeError, ValueError), match="dropout_seed"):
        net.loss_and_grads(np.zeros((3, 4)), [0, 1, 0], dropout_seed=seed)
