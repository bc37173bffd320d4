"""Optimizers: trajectories against recurrences written out here, golden steps by hand,
hyperparameter validation, state continuation across `fit` calls, and weight decay that
never touches biases.

The expected values are derived in this file with plain Python floats (float64); nothing
here calls nnfast/reference.py for them.
"""
import math

import numpy as np
import pytest

import nnfast as nf
from nnfast import _optim as O

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
STEPS = 10

# The fixed small problem: a quadratic loss 0.5 p.H.p - c.p over 7 parameters, of which
# the first N_DECAY are "weights" and the last 3 "biases". Gradient g(p) = H p - c, with
# c large enough that no component of g comes near 0 within 10 steps (Adam's direction
# g / |g| would be ill-conditioned there).
N, N_DECAY = 7, 4
_rng = np.random.default_rng(42)
_A = _rng.standard_normal((N, N))
H = 0.5 * np.eye(N) + 0.05 * _A @ _A.T
C = np.array([5.0, -4.0, 6.0, -5.0, 4.5, -6.0, 5.5])
P0 = _rng.uniform(-1, 1, N)


def grad64(p):
    """g(p) = H p - c in Python floats."""
    return [sum(H[i][j] * p[j] for j in range(N)) - C[i] for i in range(N)]


def expected_sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0, steps=STEPS):
    """PyTorch's SGD, dampening 0, L2 decay added to the gradient of weights only."""
    p, vel, out = list(P0), [0.0] * N, []
    for _ in range(steps):
        g = grad64(p)
        for i in range(N):
            gi = g[i] + (weight_decay * p[i] if i < N_DECAY else 0.0)
            if momentum == 0:
                p[i] -= lr * gi
            else:
                vel[i] = momentum * vel[i] + gi
                p[i] -= lr * (gi + momentum * vel[i] if nesterov else vel[i])
        out.append((list(p), list(vel)))
    return out


def expected_adam(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, steps=STEPS):
    """Adam with bias correction and decoupled decay p -= lr * wd * p (weights only)."""
    p, m, v, out = list(P0), [0.0] * N, [0.0] * N, []
    for t in range(1, steps + 1):
        g = grad64(p)
        for i in range(N):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            if i < N_DECAY:
                p[i] -= lr * weight_decay * p[i]
            p[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append((list(p), list(m), list(v)))
    return out


def check(actual, expected, dtype, rtol=None):
    rtol = RTOL[dtype] if rtol is None else rtol
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


SGD_CASES = {
    "sgd": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.3),
    "momentum_weight_decay": dict(lr=0.05, momentum=0.5, weight_decay=0.3),
    "nesterov_weight_decay": dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.3),
}
ADAM_CASES = {
    "adam": dict(lr=0.05),
    "adamw": dict(lr=0.05, weight_decay=0.5),
    "adam_betas": dict(lr=0.05, beta1=0.5, beta2=0.75, eps=1e-3),
    "adamw_betas": dict(lr=0.02, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=2.0),
}
V_RTOL_F32 = 1e-5


# ---------------------------------------------------------------- 10-step trajectories

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_trajectory(dtype, case):
    hp = SGD_CASES[case]
    expected = expected_sgd(**hp)
    p, vel = P0.astype(dtype), np.zeros(N, dtype)
    Hd, Cd = H.astype(dtype), C.astype(dtype)
    for want_p, want_v in expected:
        g = Hd @ p - Cd
        O.sgd_update(p, vel, g, hp["lr"], hp.get("momentum", 0.0), hp.get("nesterov", False),
                     hp.get("weight_decay", 0.0), N_DECAY)
        check(p, want_p, dtype)
        if hp.get("momentum"):
            check(vel, want_v, dtype)
        else:
            np.testing.assert_array_equal(vel, 0)             # untouched without momentum


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_trajectory(dtype, case):
    hp = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0) | ADAM_CASES[case]
    expected = expected_adam(**hp)
    p, m, v = P0.astype(dtype), np.zeros(N, dtype), np.zeros(N, dtype)
    Hd, Cd = H.astype(dtype), C.astype(dtype)
    for t, (want_p, want_m, want_v) in enumerate(expected, start=1):
        g = Hd @ p - Cd
        O.adam_update(p, m, v, g, t, hp["lr"], hp["beta1"], hp["beta2"], hp["eps"],
                      hp["weight_decay"], N_DECAY)
        check(p, want_p, dtype)
        check(m, want_m, dtype)
        check(v, want_v, dtype, V_RTOL_F32 if dtype == np.float32 else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["sgd", "nesterov_weight_decay", "adam", "adamw_betas"])
def test_optimizer_objects_trajectory(dtype, case):
    """nf.SGD / nf.Adam pass their hyperparameters and their own step count t through."""
    if case in SGD_CASES:
        opt, expected = nf.SGD(**SGD_CASES[case]), expected_sgd(**SGD_CASES[case])
    else:
        hp = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0) | ADAM_CASES[case]
        opt, expected = nf.Adam(**ADAM_CASES[case]), expected_adam(**hp)
    net = nf.Network([2, 1, 2], dtype=dtype)      # the layout of the problem: 4 weights
    assert (net.n_params, net._n_decay) == (N, N_DECAY)
    net._flat_params[:] = P0
    opt._prepare(net)
    rule = opt._rule()
    for name in opt._hyper:                        # the hyperparameters, passed through
        assert getattr(rule, name) == getattr(opt, name)
    Hd, Cd = H.astype(dtype), C.astype(dtype)
    for t, want in enumerate(expected, start=1):
        _update(opt, net, Hd @ net._flat_params - Cd)
        assert opt.t == t
        check(net._flat_params, want[0], dtype)


def _update(opt, net, grads):
    """One update of net's flat params from the flat gradient `grads`, as the training
    loop runs it (data-parallel: TrainStep.update after the Allreduce; the loop counts
    the optimizer's steps)."""
    net._flat_grads[:] = grads
    net._get_workspace(1).step.update(opt.t + 1, opt._rule(), 1)
    opt.t += 1


# ---------------------------------------------------------------- golden steps

@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_golden_first_step(dtype):
    # t = 1: m = 0.1 g, v = 0.001 g^2, and the bias corrections undo exactly that:
    # m_hat = g, v_hat = g^2, so every param moves by lr * g / (|g| + eps) ~ lr * sign(g).
    p = np.array([1.0, -2.0, 0.5], dtype)
    g = np.array([0.5, -4.0, 0.0], dtype)
    m, v = np.zeros(3, dtype), np.zeros(3, dtype)
    O.adam_update(p, m, v, g, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, 0)
    # p0: 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 1 - 0.1 * (1 - 2e-8) = 0.900000002
    # p1: -2 - 0.1 * (-4) / (4 + 1e-8) = -2 + 0.1 * (1 - 2.5e-9) = -1.90000000025
    # p2: g = 0 -> m = 0 -> no move: 0.5
    check(p, [0.900000002, -1.90000000025, 0.5], dtype)
    check(m, [0.05, -0.4, 0.0], dtype)                    # 0.1 * g
    check(v, [0.00025, 0.016, 0.0], dtype)                # 0.001 * g^2
    # Same step with AdamW (wd = 0.5, weights = first 2 entries): the decay factor is
    # 1 - lr * wd = 0.95 applied before the Adam move:
    # p0: 0.95 * 1 - 0.099999998 = 0.850000002;  p1: 0.95 * -2 + 0.09999999975 = -1.80000000025
    p = np.array([1.0, -2.0, 0.5], dtype)
    O.adam_update(p, np.zeros(3, dtype), np.zeros(3, dtype), g, 1, 0.1, 0.9, 0.999, 1e-8,
                  0.5, 2)
    check(p, [0.850000002, -1.80000000025, 0.5], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_golden_two_steps(dtype):
    # lr 0.1, momentum 0.9, weight decay 0.1 on the first 2 entries (weights), g fixed.
    p = np.array([1.0, -2.0, 0.5], dtype)
    vel = np.zeros(3, dtype)
    g = np.array([0.5, -4.0, 1.0], dtype)
    # step 1: g' = g + 0.1 p (weights) = [0.6, -4.2, 1];  vel = g' = [0.6, -4.2, 1]
    #         p = p - 0.1 vel = [0.94, -1.58, 0.4]
    O.sgd_update(p, vel, g, 0.1, 0.9, False, 0.1, 2)
    check(vel, [0.6, -4.2, 1.0], dtype)
    check(p, [0.94, -1.58, 0.4], dtype)
    # step 2: g' = [0.5 + 0.094, -4 - 0.158, 1] = [0.594, -4.158, 1]
    #         vel = 0.9 [0.6, -4.2, 1] + g' = [1.134, -7.938, 1.9]
    #         p = [0.94 - 0.1134, -1.58 + 0.7938, 0.4 - 0.19] = [0.8266, -0.7862, 0.21]
    O.sgd_update(p, vel, g, 0.1, 0.9, False, 0.1, 2)
    check(vel, [1.134, -7.938, 1.9], dtype)
    check(p, [0.8266, -0.7862, 0.21], dtype)
    # Nesterov, one step from the start: vel = [0.6, -4.2, 1];
    # p = p - 0.1 (g' + 0.9 vel) = p - 0.19 g' = [1 - 0.114, -2 + 0.798, 0.5 - 0.19]
    p = np.array([1.0, -2.0, 0.5], dtype)
    O.sgd_update(p, np.zeros(3, dtype), g, 0.1, 0.9, True, 0.1, 2)
    check(p, [0.886, -1.202, 0.31], dtype)


# 1 - beta2 is formed in double: in float, 1 - 0.999f = 0.00099998713 (1.3e-5 relative off).
def test_adam_float32_second_moment_scale():
    p, m, v = np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32)
    O.adam_update(p, m, v, np.ones(4, np.float32), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0)
    np.testing.assert_allclose(v, 0.001, rtol=1e-6)      # (1 - 0.999) * 1^2


# ---------------------------------------------------------------- hyperparameters

@pytest.mark.parametrize("make,exc", [
    (lambda: nf.SGD(lr=-0.1), ValueError),
    (lambda: nf.SGD(lr=0), ValueError),
    (lambda: nf.SGD(lr=float("nan")), ValueError),
    (lambda: nf.SGD(lr=float("inf")), ValueError),
    (lambda: nf.SGD(lr=True), TypeError),
    (lambda: nf.SGD(lr="0.1"), TypeError),
    (lambda: nf.SGD(lr=None), TypeError),
    (lambda: nf.SGD(momentum=1.0), ValueError),
    (lambda: nf.SGD(momentum=-0.1), ValueError),
    (lambda: nf.SGD(momentum=float("nan")), ValueError),
    (lambda: nf.SGD(nesterov=True), ValueError),              # no momentum
    (lambda: nf.SGD(momentum=0.9, nesterov="yes"), TypeError),
    (lambda: nf.SGD(momentum=0.9, nesterov=1), TypeError),
    (lambda: nf.SGD(weight_decay=-1e-4), ValueError),
    (lambda: nf.SGD(weight_decay=float("nan")), ValueError),
    (lambda: nf.Adam(lr=-1e-3), ValueError),
    (lambda: nf.Adam(lr=float("nan")), ValueError),
    (lambda: nf.Adam(lr=False), TypeError),
    (lambda: nf.Adam(lr="1e-3"), TypeError),
    (lambda: nf.Adam(beta1=1.0), ValueError),
    (lambda: nf.Adam(beta1=-0.1), ValueError),
    (lambda: nf.Adam(beta2=1.0), ValueError),
    (lambda: nf.Adam(beta2=float("nan")), ValueError),
    (lambda: nf.Adam(beta1=True), TypeError),
    (lambda: nf.Adam(eps=0.0), ValueError),
    (lambda: nf.Adam(eps=-1e-8), ValueError),
    (lambda: nf.Adam(eps="tiny"), TypeError),
    (lambda: nf.Adam(weight_decay=-0.01), ValueError),
    (lambda: nf.Adam(weight_decay=float("inf")), ValueError),
    (lambda: nf.Adam(weight_decay=[0.1]), TypeError),
])
def test_bad_hyperparameters(make, exc):
    with pytest.raises(exc):
        make()


def test_good_hyperparameters():
    sgd = nf.SGD(lr=np.float32(0.5), momentum=0, nesterov=np.bool_(False), weight_decay=1)
    assert (sgd.lr, sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.5, 0.0, False, 1.0)
    assert isinstance(sgd.lr, float)
    adam = nf.Adam(lr=1, beta1=0, beta2=0.5, eps=1e-12, weight_decay=0)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (1.0, 0.0, 0.5, 1e-12)
    assert nf.SGD(momentum=0.9, nesterov=True).nesterov is True


# ---------------------------------------------------------------- state across fit calls

def _small_problem(dtype=np.float64):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 4))
    y = rng.integers(0, 3, 12)
    net = nf.Network([4, 5, 3], hidden="tanh", output="softmax", dtype=dtype, seed=7)
    return net, X, y


def _fit(net, X, y, opt, epochs=1, shuffle=False):
    return net.fit(X, y, epochs=epochs, batch_size=4, optimizer=opt, shuffle=shuffle,
                   verbose=False)


@pytest.mark.parametrize("make", [lambda: nf.Adam(lr=0.05), lambda: nf.SGD(lr=0.1, momentum=0.9)],
                         ids=["adam", "sgd"])
def test_same_optimizer_continues_its_state(make):
    # Two fits of one epoch with one optimizer object == one fit of two epochs. (Without
    # shuffling: fit restarts its permutation from arange(n) on every call, so the
    # shuffled order of a later epoch depends on how the epochs were split into calls.)
    net_a, X, y = _small_problem()
    net_b, _, _ = _small_problem()
    opt_a, opt_b = make(), make()
    _fit(net_a, X, y, opt_a, epochs=2, shuffle=False)
    _fit(net_b, X, y, opt_b, shuffle=False)
    assert opt_b.t == 3                                   # 12 samples / batch 4
    _fit(net_b, X, y, opt_b, shuffle=False)
    assert opt_a.t == opt_b.t == 6
    np.testing.assert_array_equal(net_a._flat_params, net_b._flat_params)
    # A new object (or a name) starts fresh: different from continuing.
    net_c, _, _ = _small_problem()
    _fit(net_c, X, y, make(), shuffle=False)
    opt_c = make()
    _fit(net_c, X, y, opt_c, shuffle=False)
    assert opt_c.t == 3
    assert not np.allclose(net_c._flat_params, net_a._flat_params, rtol=1e-9, atol=0)
    # A name builds a new optimizer on every call: the same as a fresh default object.
    key = "adam" if isinstance(opt_a, nf.Adam) else "sgd"
    net_d, _, _ = _small_problem()
    net_e, _, _ = _small_problem()
    for _ in range(2):
        _fit(net_d, X, y, key)
        _fit(net_e, X, y, nf.Adam() if key == "adam" else nf.SGD())
    np.testing.assert_array_equal(net_d._flat_params, net_e._flat_params)


def test_fresh_adam_first_step_is_bias_corrected():
    # Full-batch fit, one step: a fresh Adam has m = 0.1 g and moves every weight by
    # ~lr * sign(g); a continued one has m = 0.9 m_prev + 0.1 g.
    net, X, y = _small_problem()
    _, grads = net.loss_and_grads(X, y)
    g = np.concatenate([gr.ravel() for pair in zip(*grads) for gr in pair])
    p0 = net._flat_params.copy()
    opt = nf.Adam(lr=1e-3)
    net.fit(X, y, epochs=1, batch_size=12, optimizer=opt, shuffle=False, verbose=False)
    np.testing.assert_allclose(opt._state["m"], 0.1 * g, rtol=1e-12, atol=1e-15)
    moved = net._flat_params - p0
    big = np.abs(g) > 1e-3                                # eps-dominated entries aside
    np.testing.assert_allclose(moved[big], -1e-3 * np.sign(g[big]), rtol=1e-4)
    m1 = opt._state["m"].copy()
    _, grads = net.loss_and_grads(X, y)
    g2 = np.concatenate([gr.ravel() for pair in zip(*grads) for gr in pair])
    net.fit(X, y, epochs=1, batch_size=12, optimizer=opt, shuffle=False, verbose=False)
    assert opt.t == 2
    np.testing.assert_allclose(opt._state["m"], 0.9 * m1 + 0.1 * g2, rtol=1e-12, atol=1e-15)


def test_optimizer_on_another_network_starts_fresh():
    net_a, X, y = _small_problem()
    net_b, _, _ = _small_problem()
    opt = nf.Adam(lr=0.01)
    _fit(net_a, X, y, opt)
    _fit(net_b, X, y, opt)
    assert opt.t == 3
    # The same as a fresh optimizer on net_b.
    net_c, _, _ = _small_problem()
    _fit(net_c, X, y, nf.Adam(lr=0.01))
    np.testing.assert_array_equal(net_b._flat_params, net_c._flat_params)


# ---------------------------------------------------------------- weight decay vs biases

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd", "sgd_momentum", "adam"])
def test_zero_gradient_step_decays_weights_only(dtype, kind):
    # Kernel level: with g = 0 only the decay acts. Weights (first 4) shrink by
    # (1 - lr * wd) = 1 - 0.1 * 0.5 = 0.95; biases stay bit for bit.
    p = np.array([1.0, -2.0, 3.0, -4.0, 0.5, -0.25, 2.0], dtype)
    p0 = p.copy()
    zero = np.zeros(7, dtype)
    if kind == "adam":          # m = v = 0 -> Adam's move 0 / (0 + eps) = 0
        O.adam_update(p, zero.copy(), zero.copy(), zero, 1, 0.1, 0.9, 0.999, 1e-8, 0.5, 4)
    else:                       # g' = 0 + wd * W: W -= lr * wd * W (momentum: v = g')
        O.sgd_update(p, zero.copy(), zero, 0.1, 0.9 if kind == "sgd_momentum" else 0.0,
                     False, 0.5, 4)
    check(p[:4], 0.95 * p0[:4], dtype)
    np.testing.assert_array_equal(p[4:], p0[4:])


@pytest.mark.parametrize("make", [lambda: nf.Adam(lr=0.1, weight_decay=0.5),
                                  lambda: nf.SGD(lr=0.1, momentum=0.9, weight_decay=0.5)],
                         ids=["adamw", "sgd"])
def test_network_zero_gradient_step_decays_weights_only(make):
    # Optimizer level, on a network's flat buffer with its own n_decay.
    net, _, _ = _small_problem()
    for b in net.intercepts:
        b[...] = 0.75                                     # nonzero: decay would show
    p0 = net._flat_params.copy()
    opt = make()
    opt._prepare(net)
    _update(opt, net, np.zeros_like(net._flat_params))
    for (W, b), (W0, b0) in zip(net.params, _views(net, p0)):
        np.testing.assert_allclose(W, 0.95 * W0, rtol=1e-12)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_fit_weight_decay_leaves_biases_alone(kind):
    # One full-batch step through fit, with and without decay: identical biases, weights
    # differing by exactly the decay term lr * wd * W0.
    nets = []
    for wd in (0.0, 0.5):
        net, X, y = _small_problem()
        for b in net.intercepts:
            b[...] = 0.75
        opt = (nf.Adam(lr=0.1, weight_decay=wd) if kind == "adam"
               else nf.SGD(lr=0.1, weight_decay=wd))
        net.fit(X, y, epochs=1, batch_size=12, optimizer=opt, shuffle=False, verbose=False)
        nets.append(net)
    p0 = _small_problem()[0]
    for l in range(p0.n_layers):
        np.testing.assert_array_equal(nets[0].intercepts[l], nets[1].intercepts[l])
        np.testing.assert_allclose(nets[1].coefs[l], nets[0].coefs[l] - 0.05 * p0.coefs[l],
                                   rtol=1e-12, atol=1e-15)


def _views(net, flat):
    from nnfast._layout import layer_views
    return layer_views(flat, net._layout)


def test_adam_eps_below_float32_range_refused_before_training():
    # float32 flushes eps < 1.2e-38 to zero: a zero gradient would then give 0 / 0 = NaN.
    net = nf.Network([3, 4, 2], dtype=np.float32, seed=0)
    X = np.zeros((6, 3), np.float32)
    y = np.array([0, 1, 0, 1, 0, 1])
    before = net._flat_params.copy()
    with pytest.raises(ValueError, match="eps must be >="):
        net.fit(X, y, epochs=1, optimizer=nf.Adam(eps=1e-40), verbose=False)
    np.testing.assert_array_equal(net._flat_params, before)
    net64 = nf.Network([3, 4, 2], dtype=np.float64, seed=0)    # representable in float64
    net64.fit(X, y, epochs=1, optimizer=nf.Adam(eps=1e-40), verbose=False)
    assert np.isfinite(net64._flat_params).all()
