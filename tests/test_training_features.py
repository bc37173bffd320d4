"""Callbacks, early stopping, learning-rate schedules, validation_split, summary()."""
import math

import numpy as np
import pytest

import nnfast as nf
from nnfast.callbacks import Callback, EarlyStopping
from nnfast.schedules import Constant, Cosine, ReduceOnPlateau, StepDecay


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


class Recorder(Callback):
    def __init__(self, name, calls):
        self.name, self.calls, self.params, self.lrs = name, calls, [], []

    def on_epoch_begin(self, net, epoch, optimizer):
        self.calls.append((self.name, "begin", epoch))

    def on_epoch_end(self, net, epoch, logs):
        self.calls.append((self.name, "end", epoch))
        self.params.append(net._flat_params.copy())
        self.lrs.append(logs["lr"])
        return False


def test_callbacks_are_called_in_order_and_can_stop():
    X, y = _data()
    calls = []

    class StopAfter(Callback):
        def on_epoch_end(self, net, epoch, logs):
            calls.append(("stop", "end", epoch))
            return epoch == 2

    net = nf.Network([6, 8, 2], seed=0)
    hist = net.fit(X, y, epochs=10, callbacks=[Recorder("a", calls), StopAfter(),
                                               Recorder("b", calls)], verbose=False)
    assert len(hist.loss) == 3
    assert calls[:5] == [("a", "begin", 0), ("b", "begin", 0), ("a", "end", 0),
                         ("stop", "end", 0), ("b", "end", 0)]


def test_early_stopping_stops_and_restores_the_best_weights():
    # Few noisy samples, a wide net and a big learning rate: validation loss rises.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 6)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    net = nf.Network([6, 128, 2], seed=0)
    calls = []
    rec = Recorder("r", calls)
    es = EarlyStopping(patience=3)
    hist = net.fit(X, y, epochs=200, batch_size=8, optimizer=nf.Adam(lr=0.01),
                   validation_split=0.5, callbacks=[rec, es], verbose=False)
    assert es.stopped_epoch is not None and len(hist.loss) == es.stopped_epoch + 1 < 200
    assert es.best_epoch == int(np.argmin(hist.val_loss))
    assert len(hist.loss) - 1 - es.best_epoch == 3                   # patience epochs
    np.testing.assert_array_equal(net._flat_params, rec.params[es.best_epoch])
    assert net.evaluate(X[30:], y[30:])["loss"] == pytest.approx(min(hist.val_loss), rel=1e-5)


def test_early_stopping_on_training_loss_and_its_errors():
    X, y = _data()
    es = EarlyStopping(monitor="loss", patience=1, min_delta=10.0, restore_best=False)
    hist = nf.Network([6, 8, 2], seed=0).fit(X, y, epochs=10, callbacks=[es], verbose=False)
    assert len(hist.loss) == 2                             # no gain of 10 after the first
    with pytest.raises(ValueError, match="needs validation data"):
        nf.Network([6, 8, 2]).fit(X, y, epochs=2, callbacks=[EarlyStopping()], verbose=False)
    with pytest.raises(ValueError, match="monitor must be"):
        EarlyStopping(monitor="accuracy")
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStopping(patience=0)


@pytest.mark.parametrize("schedule,expected", [
    (Constant(), [0.1, 0.1, 0.1, 0.1]),
    (StepDecay(step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05]),
    (Cosine(epochs=4, min_lr=0.01), [0.1, 0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2,
                                     0.055, 0.01 + 0.09 * (1 + math.cos(3 * math.pi / 4)) / 2]),
])
def test_schedules_give_the_documented_rates(schedule, expected):
    X, y = _data()
    calls = []
    rec = Recorder("r", calls)
    opt = nf.SGD(lr=0.1)
    nf.Network([6, 8, 2], seed=0).fit(X, y, epochs=4, optimizer=opt,
                                      callbacks=[schedule, rec], verbose=False)
    np.testing.assert_allclose(rec.lrs, expected, rtol=1e-12)


def test_the_scheduled_rate_is_the_one_trained_with():
    X, y = _data()
    a, b = nf.Network([6, 8, 2], seed=0), nf.Network([6, 8, 2], seed=0)
    a.fit(X, y, epochs=3, optimizer=nf.SGD(lr=0.05), shuffle=False, verbose=False,
          callbacks=[StepDecay(step_size=1, gamma=0.5)])
    opt = nf.SGD(lr=0.05)
    for lr in (0.05, 0.025, 0.0125):                       # the same rates, by hand
        opt.lr = lr
        b.fit(X, y, epochs=1, optimizer=opt, shuffle=False, verbose=False)
    np.testing.assert_array_equal(a._flat_params, b._flat_params)


def test_reduce_on_plateau():
    sched = ReduceOnPlateau(monitor="loss", factor=0.5, patience=2)
    assert sched.rate(0, 1.0) == 1.0
    for loss, want in ((1.0, 1.0), (1.0, 1.0), (1.0, 0.5), (0.9, 0.5), (0.95, 0.5),
                       (0.95, 0.25)):
        sched.on_epoch_end(None, 1, {"loss": loss})
        assert sched.rate(1, 1.0) == want
    with pytest.raises(ValueError, match="factor must be in"):
        ReduceOnPlateau(factor=1.0)


def test_validation_split_holds_out_the_last_samples():
    X, y = _data(200)
    net = nf.Network([6, 8, 2], seed=0)
    hist = net.fit(X, y, epochs=2, validation_split=0.25, verbose=False)
    assert len(hist.val_loss) == 2
    assert hist.val_loss[-1] == pytest.approx(net.evaluate(X[150:], y[150:])["loss"])
    assert len(hist.batch_loss) == 2 * math.ceil(150 / 128)


@pytest.mark.parametrize("split", [0.0, 0])
def test_validation_split_0_is_no_validation(split):
    X, y = _data(100)
    a, b = nf.Network([6, 8, 2], seed=0), nf.Network([6, 8, 2], seed=0)
    hist = a.fit(X, y, epochs=2, validation_split=split, verbose=False)
    b.fit(X, y, epochs=2, verbose=False)
    assert hist.val_loss == [] and len(hist.loss) == 2
    np.testing.assert_array_equal(a._flat_params, b._flat_params)    # every sample trained
    hist = a.fit(X, y, epochs=1, validation_split=split, validation_data=(X[:10], y[:10]),
                 verbose=False)
    assert len(hist.val_loss) == 1


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(validation_split=1.5), ValueError, r"validation_split must be a float in \[0, 1\)"),
    (dict(validation_split=-0.1), ValueError, r"validation_split must be a float in \[0, 1\)"),
    (dict(validation_split=0.001), ValueError, r"leaves 0 for validation"),
    (dict(validation_split=0.2, validation_data=(np.zeros((2, 6)), [0, 1])), ValueError,
     "not both"),
    (dict(callbacks=[object()]), TypeError, "callbacks must have"),
])
def test_bad_training_options(kwargs, exc, match):
    X, y = _data(100)
    net = nf.Network([6, 8, 2], seed=0)
    before = net._flat_params.copy()
    with pytest.raises(exc, match=match):
        net.fit(X, y, epochs=1, verbose=False, **kwargs)
    np.testing.assert_array_equal(net._flat_params, before)


def test_summary(capsys):
    """Printed once and None returned (a REPL would show a returned string again)."""
    net = nf.Network([784, 256, 10], hidden="tanh", dtype=np.float64)
    assert net.summary() is None
    text = capsys.readouterr().out.strip()
    lines = []
    assert net.summary(print_fn=lines.append) is None
    assert capsys.readouterr().out == "" and "\n".join(lines) == text
    assert "784 x 256" in text and "tanh" in text and "softmax" in text
    assert "total parameters: 203,530 (float64" in text


def test_early_stopping_restores_the_best_weights_when_the_epochs_run_out_first():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 6)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    net = nf.Network([6, 128, 2], seed=0)
    rec = Recorder("r", [])
    es = EarlyStopping(patience=100)
    hist = net.fit(X, y, epochs=12, batch_size=8, optimizer=nf.Adam(lr=0.01),
                   validation_split=0.5, callbacks=[rec, es], verbose=False)
    assert es.stopped_epoch is None and len(hist.loss) == 12
    best = int(np.argmin(hist.val_loss))
    assert best < 11                                 # the last epoch is not the best
    np.testing.assert_array_equal(net._flat_params, rec.params[best])


def test_early_stopping_starts_afresh_in_each_fit():
    X, y = _data()
    es = EarlyStopping(monitor="loss", patience=2)
    a = nf.Network([6, 8, 2], seed=0)
    a.fit(X, y, epochs=3, callbacks=[es], verbose=False)
    b = nf.Network([6, 16, 2], seed=1)                # another shape: nothing of a's
    alone = nf.Network([6, 16, 2], seed=1)
    b.fit(X, y, epochs=1, callbacks=[es], verbose=False)
    alone.fit(X, y, epochs=1, verbose=False)
    np.testing.assert_array_equal(b._flat_params, alone._flat_params)
    assert es.best_epoch == 0 and es.stopped_epoch is None


def test_schedules_leave_the_optimizers_rate_as_set():
    X, y = _data()
    net = nf.Network([6, 8, 2], seed=0)
    opt = nf.Adam(lr=1e-2)
    rec = Recorder("r", [])
    net.fit(X, y, epochs=4, optimizer=opt, callbacks=[StepDecay(1, 0.5), rec],
            verbose=False)
    assert rec.lrs == [1e-2, 5e-3, 2.5e-3, 1.25e-3]
    assert opt.lr == 1e-2
    rec2 = Recorder("r", [])
    net.fit(X, y, epochs=2, optimizer=opt, callbacks=[Cosine(epochs=2), rec2],
            verbose=False)
    assert rec2.lrs == [1e-2, 5e-3] and opt.lr == 1e-2
    plateau = ReduceOnPlateau(monitor="loss", factor=0.5, patience=1)
    net.fit(X, y, epochs=3, optimizer=nf.SGD(lr=1e-12), callbacks=[plateau], verbose=False)
    rec3 = Recorder("r", [])
    net.fit(X, y, epochs=1, optimizer=opt, callbacks=[plateau, rec3], verbose=False)
    assert rec3.lrs == [1e-2]                        # the plateau's state does not carry


def test_train_begin_and_end_hooks():
    X, y = _data()
    calls = []

    class Hooks:
        def on_train_begin(self, net, optimizer):
            calls.append("begin")

        def on_train_end(self, net, optimizer):
            calls.append("end")

    nf.Network([6, 8, 2], seed=0).fit(X, y, epochs=2, callbacks=[Hooks()], verbose=False)
    assert calls == ["begin", "end"]
