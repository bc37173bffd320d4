"""An update that would overflow is never applied: fit stops with FloatingPointError and
the network and the optimizer keep the state of the step before, exactly."""
import numpy as np
import pytest

import nnfast as nf
from nnfast._workspace import Workspace


def _data(n=256, k=20, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, k)).astype(np.float32), rng.integers(0, classes, n)


OVERFLOWING = [lambda: nf.optim.SGD(lr=1e37), lambda: nf.optim.Adam(lr=1e38),
               lambda: nf.optim.SGD(lr=1e36, momentum=0.9, nesterov=True),
               lambda: nf.optim.Adam(lr=1e36, weight_decay=0.5)]


@pytest.mark.parametrize("make", OVERFLOWING)
def test_an_overflowing_update_is_not_applied(make):
    """Refused outright, or (a first update in range) the next loss is not finite: either
    way the network and the optimizer hold finite numbers."""
    X, y = _data()
    net = nf.Network([20, 16, 3], seed=0)
    before = net._flat_params.copy()
    opt = make()
    with pytest.raises(FloatingPointError, match="not applied|keeps the weights") as info:
        net.fit(X, y, epochs=2, batch_size=32, optimizer=opt, verbose=False)
    assert info.value.history is not None
    assert np.all(np.isfinite(net._flat_params))
    assert all(np.all(np.isfinite(a)) for a in opt._state_arrays())
    if opt.t == 0:                         # the very first update was refused
        assert np.array_equal(net._flat_params, before)
        assert all(not a.any() for a in opt._state_arrays())


def _step_with_gradients(net, value, count):
    """A workspace of net whose flat gradients are `value` in the first `count` entries,
    0 elsewhere."""
    ws = Workspace(net, 32, net._flat_grads)
    net._flat_grads[:] = 0
    net._flat_grads[:count] = value
    return ws.step


def test_the_refused_update_leaves_bit_identical_weights_and_state():
    """Steps that fit in range, then one that overflows: everything is as after the last
    good step."""
    X, y = _data()
    net = nf.Network([20, 16, 3], seed=0)
    opt = nf.optim.SGD(lr=1e-3)
    net.fit(X, y, epochs=1, batch_size=32, optimizer=opt, verbose=False, shuffle=False)
    params, t = net._flat_params.copy(), opt.t
    opt.lr = 1e37
    with pytest.raises(FloatingPointError, match="batch 1 of epoch 1.*not applied"):
        net.fit(X, y, epochs=1, batch_size=32, optimizer=opt, verbose=False)
    assert np.array_equal(net._flat_params, params) and opt.t == t
    opt.lr = 1e-3                           # and training goes on from there
    net.fit(X, y, epochs=1, batch_size=32, optimizer=opt, verbose=False)
    assert np.all(np.isfinite(net._flat_params)) and opt.t == 2 * t


def test_adam_state_that_would_overflow_is_refused():
    """Gradients whose square overflows float32 would make Adam's v inf (and freeze those
    weights silently): refused, though the parameters themselves would stay finite."""
    net = nf.Network([20, 16, 3], seed=0)
    before = net._flat_params.copy()
    step = _step_with_gradients(net, 1e22, 5)       # (1 - b2) g^2 = 1e41
    opt = nf.optim.Adam()
    opt._prepare(net)
    with pytest.raises(FloatingPointError, match="5 entries of Adam's v"):
        step.update(1, opt._rule(), 1)
    assert np.array_equal(net._flat_params, before)
    assert all(not a.any() for a in opt._state_arrays())


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_normal_training_never_takes_the_checked_path(kind):
    X, y = _data(1024)
    net = nf.Network([20, 32, 16, 3], seed=0)
    net.fit(X / 255, y, epochs=3, batch_size=32, optimizer=kind, verbose=False)
    assert net._workspace.step.checked_updates == 0


def test_a_large_but_finite_update_is_applied_by_the_checked_path():
    """An update the bound cannot prove (lr * |g| above a quarter of float32's range)
    but that stays finite is applied, with the bits of the plain update."""
    net = nf.Network([20, 16, 3], seed=0)
    before = net._flat_params.copy()
    step = _step_with_gradients(net, 1.0, 7)
    opt = nf.optim.SGD(lr=1.5e38)
    opt._prepare(net)
    step.update(1, opt._rule(), 2)
    assert step.checked_updates == 1
    expected = before - np.float32(1.5e38) * net._flat_grads
    assert np.all(np.isfinite(net._flat_params))
    assert np.array_equal(net._flat_params, expected)


def test_the_mpi_style_update_refuses_an_overflow_too():
    X, y = _data()
    net = nf.Network([20, 16, 3], seed=0)
    ws = Workspace(net, 32, net._flat_grads)
    ws.step.bind(X, np.eye(3, dtype=np.float32)[y], 1.0, None, 0)
    ws.step.gradients(np.arange(32, dtype=np.intp), 0, 0, 1)
    opt = nf.optim.Adam(lr=1e38)
    opt._prepare(net)
    before = net._flat_params.copy()
    with pytest.raises(FloatingPointError, match="not applied"):
        ws.step.update(1, opt._rule(), 2)
    assert np.array_equal(net._flat_params, before)
    assert all(not a.any() for a in opt._state_arrays())


def test_non_finite_optimizer_state_is_refused():
    X, y = _data()
    net = nf.Network([20, 16, 3], seed=0)
    opt = nf.optim.Adam()
    net.fit(X / 255, y, epochs=1, batch_size=32, optimizer=opt, verbose=False)
    opt._state["v"][3] = np.inf                      # a corrupted state
    with pytest.raises(FloatingPointError, match="Adam's v"):
        net.fit(X / 255, y, epochs=1, batch_size=32, optimizer=opt, verbose=False)
