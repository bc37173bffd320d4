"""What fit prints: nothing when quiet, one clean line per epoch in logs, a tqdm bar with
the live loss on a terminal; the training accuracy it reports."""
import io
import sys

import numpy as np
import pytest

import nnfast as nf
from nnfast._progress import EpochProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def test_quiet_fit_prints_nothing(capsys):
    X, y = _data()
    nf.Network([5, 8, 2]).fit(X, y, epochs=2, batch_size=16, verbose=False,
                              validation_split=0.2)
    assert capsys.readouterr() == ("", "")


def test_verbose_fit_outside_a_terminal_prints_one_clean_line_per_epoch(capsys):
    X, y = _data()
    nf.Network([5, 8, 2]).fit(X, y, epochs=3, batch_size=16, verbose=True,
                              validation_split=0.2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and err == ""
    assert "\r" not in out and "\x1b" not in out
    for k, line in enumerate(lines):
        assert line.startswith(f"epoch {k + 1}/3  loss ")
        for field in ("accuracy", "val_loss", "val_accuracy"):
            assert f" {field} " in line
        assert line.endswith("s")


def test_verbose_fit_on_a_terminal_shows_a_bar_with_the_loss(monkeypatch):
    X, y = _data(2000)
    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    nf.Network([5, 8, 2]).fit(X, y, epochs=2, batch_size=8, verbose=True)
    out = term.getvalue()
    assert "\r" in out                                 # the bar redraws in place
    assert "epoch 1/2" in out and "batch" in out and "loss 0." in out
    finished = [l for l in out.replace("\r", "\n").splitlines()
                if l.startswith("epoch 2/2  loss")]
    assert len(finished) == 1                         # the epoch line, once, after the bar


def test_progress_updates_are_batched_for_long_epochs():
    assert EpochProgress(False, 10, 0, 1).every == 1
    assert EpochProgress(False, 100_000, 0, 1).every == 500


@pytest.mark.parametrize("output, k", [("softmax", 3), ("sigmoid", 1), ("sigmoid", 3)])
def test_training_accuracy_is_that_of_the_batches_as_trained(output, k):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 4))
    y = rng.integers(0, 3, 64) if output == "softmax" else rng.integers(0, 2, (64, k))
    if k == 1:
        y = y[:, 0]
    net = nf.Network([4, 6, k], output=output, dtype=np.float64)
    before = net.evaluate(X, y)["accuracy"]
    hist = net.fit(X, y, epochs=1, batch_size=64, verbose=False)   # one batch: pre-update
    assert hist.accuracy == [pytest.approx(before, abs=1e-12)]


def test_regression_has_no_accuracy():
    X, _ = _data()
    hist = nf.Network([5, 4, 1], output="linear").fit(X, X[:, 0], epochs=2, verbose=False)
    assert hist.accuracy == [] and len(hist.loss) == 2
