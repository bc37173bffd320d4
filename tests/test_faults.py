"""Faults inside fit that must not pass silently: hyperparameters a callback sets are
checked like the constructor's, NaN written into the weights stops fit, NaN flows through
ReLU instead of being mapped to 0, and stateful callbacks start afresh in each fit."""
import numpy as np
import pytest

import nnfast as nf


def _data(n=96, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


class SetOnEpoch(nf.callbacks.Callback):
    def __init__(self, name, value):
        self.name, self.value = name, value

    def on_epoch_begin(self, net, epoch, optimizer):
        if epoch == 1:
            setattr(optimizer, self.name, self.value)


@pytest.mark.parametrize("opt, name, value, match", [
    (nf.Adam, "lr", -1, r"Adam: lr must be in \(0"),
    (nf.Adam, "lr", float("nan"), r"Adam: lr must be in"),
    (nf.Adam, "beta1", 1.0, r"Adam: beta1 must be in \[0, 1\)"),
    (nf.Adam, "beta2", 1.0, r"Adam: beta2 must be in \[0, 1\)"),
    (nf.Adam, "eps", 0.0, r"Adam: eps must be in"),
    (nf.Adam, "weight_decay", -0.1, r"Adam: weight_decay must be in"),
    (nf.SGD, "lr", 0.0, r"SGD: lr must be in"),
    (nf.SGD, "momentum", 1.0, r"SGD: momentum must be in \[0, 1\)"),
])
def test_a_hyperparameter_set_by_a_callback_is_checked(opt, name, value, match):
    X, y = _data()
    net = nf.Network([6, 8, 3], seed=0)
    optimizer = opt()
    with pytest.raises(ValueError, match=match):
        net.fit(X, y, epochs=3, batch_size=32, optimizer=optimizer, verbose=False,
                callbacks=[SetOnEpoch(name, value)])
    assert np.isfinite(net.flat_params).all()
    assert optimizer.t == 3                 # epoch 1's steps ran; epoch 2's none


def test_hyperparameters_are_checked_when_set_outside_fit_too():
    opt = nf.Adam()
    with pytest.raises(TypeError, match="Adam: lr must be a real number"):
        opt.lr = "fast"
    with pytest.raises(ValueError, match="beta2"):
        opt.beta2 = 1.5
    assert opt.beta2 == 0.999               # a refused value is not kept
    opt.lr = 2                              # converted as the constructor does
    assert opt.lr == 2.0 and type(opt.lr) is float
    sgd = nf.SGD(momentum=0.9, nesterov=True)
    with pytest.raises(TypeError, match="nesterov must be a bool"):
        sgd.nesterov = 1


def test_nesterov_without_momentum_set_later_is_refused_at_the_next_epoch():
    X, y = _data()
    sgd = nf.SGD(lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        nf.Network([6, 8, 3], seed=0).fit(X, y, epochs=2, optimizer=sgd, verbose=False,
                                         callbacks=[SetOnEpoch("momentum", 0.0)])


def test_an_eps_below_the_dtype_s_smallest_normal_set_by_a_callback_is_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="smallest normal"):
        nf.Network([6, 8, 3], seed=0).fit(X, y, epochs=2, verbose=False,
                                         callbacks=[SetOnEpoch("eps", 1e-40)])


class Poison(nf.callbacks.Callback):
    def __init__(self, value, epoch=0):
        self.value, self.epoch = value, epoch

    def on_epoch_end(self, net, epoch, logs):
        if epoch == self.epoch:
            net.params[0][0][0, 0] = self.value


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("hidden", ["relu", "leaky_relu", "tanh", "sigmoid", "linear"])
def test_non_finite_weights_written_by_a_callback_stop_fit(value, hidden):
    X, y = _data()
    net = nf.Network([6, 8, 3], hidden=hidden, seed=0)
    with pytest.raises(ValueError, match="parameters hold NaN or inf after the callbacks "
                                         "of epoch 1"):
        net.fit(X, y, epochs=3, verbose=False, callbacks=[Poison(value)])


def test_non_finite_weights_before_fit_are_refused_and_left_as_they_are():
    X, y = _data()
    net = nf.Network([6, 8, 3], seed=0)
    net.params[1][1][2] = np.nan
    before = net.flat_params.copy()
    opt = nf.Adam()
    with pytest.raises(ValueError, match="at the start of fit"):
        net.fit(X, y, epochs=1, optimizer=opt, verbose=False)
    np.testing.assert_array_equal(net.flat_params, before)
    assert opt.t == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_passes_nan_on(dtype):
    net = nf.Network([3, 4, 2], dtype=dtype, seed=0)
    net.params[0][0][:, :] = np.nan         # every hidden pre-activation is NaN
    out = net.predict_proba(np.ones((2, 3), dtype))
    assert np.isnan(out).all()              # not mapped to 0 (a confident class)


def test_nan_in_a_training_file_rewritten_during_fit_stops_fit(tmp_path):
    X, y = _data(n=128)
    path = tmp_path / "x.npy"
    np.save(path, X)

    class Rewrite(nf.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            mm = np.load(path, mmap_mode="r+")
            mm[5, 2] = np.nan
            mm.flush()

    net = nf.Network([6, 8, 3], seed=0)
    with pytest.raises(FloatingPointError, match="X holds finite numbers") as info:
        net.fit(str(path), y, epochs=3, batch_size=32, shuffle=False, verbose=False,
                callbacks=[Rewrite()])
    assert len(info.value.history.loss) == 1
    assert np.isfinite(net.flat_params).all()


def _fit(net, X, y, callbacks, **kw):
    return net.fit(X, y, epochs=6, batch_size=16, validation_data=(X[:32], y[:32]),
                   verbose=False, callbacks=callbacks, **kw)


@pytest.mark.parametrize("make", [
    lambda: nf.callbacks.EarlyStopping(monitor="val_loss", patience=1),
    lambda: nf.callbacks.EarlyStopping(monitor="loss", patience=2, restore_best=False),
    lambda: nf.schedules.StepDecay(step_size=2, gamma=0.5),
    lambda: nf.schedules.Cosine(epochs=6, min_lr=1e-5),
])
def test_a_reused_callback_starts_afresh_in_each_fit(make):
    X, y = _data()
    reused = make()
    _fit(nf.Network([6, 12, 3], seed=1), X, y, [reused])
    for sizes, seed in (([6, 12, 3], 2), ([6, 5, 3], 3)):      # another shape too
        a, b = nf.Network(sizes, seed=seed), nf.Network(sizes, seed=seed)
        ha = _fit(a, X, y, [reused], optimizer=nf.Adam(lr=3e-2))
        hb = _fit(b, X, y, [make()], optimizer=nf.Adam(lr=3e-2))
        np.testing.assert_array_equal(a.flat_params, b.flat_params)
        assert ha.loss == hb.loss


def test_a_schedule_gives_the_rate_back_when_fit_fails():
    X, y = _data()
    opt = nf.Adam(lr=0.01)

    class Fail(nf.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            if epoch == 2:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nf.Network([6, 8, 3], seed=0).fit(
            X, y, epochs=5, optimizer=opt, verbose=False,
            callbacks=[nf.schedules.StepDecay(step_size=1, gamma=0.5), Fail()])
    assert opt.lr == 0.01
