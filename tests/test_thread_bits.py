"""The same seed gives the same bits for any thread count: every phase of a step is cut
into blocks by the shapes and the machine's CPU count only (csrc/_step.pyx, the grid),
never by the team size, and the loss is summed in fixed blocks of rows.

The grid is set to 4 blocks per phase and the CPU limit lifted, so that teams of 1-4
threads really split the work on any machine; the timed choice of one thread is off, so
each fit runs on exactly the team it asks for."""
import itertools

import numpy as np
import pytest

import nnfast as nf
import nnfast._threads as threads_mod
from nnfast import _step


@pytest.fixture
def grid4(monkeypatch):
    previous = _step._set_grid_cpus(4)
    monkeypatch.setattr(threads_mod, "_available_cpus", lambda: 64)
    monkeypatch.setattr(threads_mod, "timed_team_choice", False)
    before = nf.get_num_threads()
    yield
    nf.set_num_threads(before)
    _step._set_grid_cpus(previous)
    threads_mod.refresh_cpus()


def _fit(sizes, batch, dtype, dropout, threads, optimizer="adam", sparse=False,
         weights=False, epochs=2):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, sizes[0])).astype(dtype)
    if sparse:
        scipy_sparse = pytest.importorskip("scipy.sparse")
        X[rng.random(X.shape) < 0.8] = 0
        X = scipy_sparse.csr_matrix(X)
    y = rng.integers(0, sizes[-1], 300)
    w = rng.random(300) if weights else None
    nf.set_num_threads(threads)
    net = nf.Network(sizes, dtype=dtype, dropout=dropout, seed=0)
    opt = nf.SGD(lr=0.05, momentum=0.9) if optimizer == "sgd" else nf.Adam()
    hist = net.fit(X, y, epochs=epochs, batch_size=batch, optimizer=opt, verbose=False,
                   sample_weight=w)
    return net, hist


SHAPES = ([100, 96, 48, 10], [784, 256, 128, 10], [20, 300, 3], [64, 64, 10],
          [30, 200, 200, 200, 5])


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_fit_is_the_same_bits_for_1_to_4_threads(grid4, sizes, dtype):
    for batch, dropout in itertools.product((1, 7, 32, 128, 300), (0.0, 0.3)):
        ref, ref_hist = _fit(sizes, batch, dtype, dropout, 1)
        for t in (2, 3, 4):
            net, hist = _fit(sizes, batch, dtype, dropout, t)
            assert np.array_equal(net.flat_params, ref.flat_params), (batch, dropout, t)
            assert hist.batch_loss == ref_hist.batch_loss, (batch, dropout, t)
            assert hist.accuracy == ref_hist.accuracy


def test_the_sweep_really_splits_the_work(grid4):
    """The larger shapes of the sweep have phases of several blocks: the teams above did
    split them (a test of bits over an unsplit step would prove nothing)."""
    net, _ = _fit([784, 256, 128, 10], 128, np.float32, 0.0, 4, epochs=1)
    ws = net._workspace
    assert ws.step.useful_threads(128) == 4
    assert ws.step.useful_threads(32) == 4
    assert ws.step.useful_threads(1) == 4          # one row: the update of 235k params splits


@pytest.mark.parametrize("case", ["sgd", "sparse", "weights"])
def test_other_routes_are_the_same_bits_for_any_team(grid4, case):
    kw = dict(optimizer="sgd") if case == "sgd" else {case: True}
    ref, ref_hist = _fit([200, 128, 64, 4], 64, np.float32, 0.2, 1, **kw)
    for t in (2, 3, 4):
        net, hist = _fit([200, 128, 64, 4], 64, np.float32, 0.2, t, **kw)
        assert np.array_equal(net.flat_params, ref.flat_params), t
        assert hist.batch_loss == ref_hist.batch_loss


def test_prediction_and_gradients_are_the_same_bits_for_any_team(grid4):
    rng = np.random.default_rng(0)
    net = nf.Network([784, 256, 128, 10], seed=0)
    X = rng.random((1000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 1000)
    out = []
    for t in (1, 2, 3, 4):
        nf.set_num_threads(t)
        loss, grads = net.loss_and_grads(X[:256], y[:256])
        out.append((net.forward(X), net.evaluate(X, y), loss,
                    np.concatenate([g.ravel() for pair in grads for g in pair])))
    for t, got in enumerate(out[1:], 2):
        assert np.array_equal(got[0], out[0][0]), t
        assert got[1] == out[0][1] and got[2] == out[0][2], t
        assert np.array_equal(got[3], out[0][3]), t


def test_a_small_network_step_runs_on_the_caller_alone():
    """[16, 32, 3] at batch 16 is ~3 us of work: no phase is worth a second thread, so
    no team is woken for it."""
    net = nf.Network([16, 32, 3])
    X = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    net.fit(X, np.arange(64) % 3, epochs=1, batch_size=16, verbose=False)
    assert net._workspace.step.useful_threads(16) == 1


def test_useful_threads_checks_the_batch_size():
    net = nf.Network([16, 32, 3])
    X = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    net.fit(X, np.arange(64) % 3, epochs=1, batch_size=16, verbose=False)
    with pytest.raises(ValueError, match="1 to 16 rows, got 17"):
        net._workspace.step.useful_threads(17)
    with pytest.raises(ValueError, match="got 0"):
        net._workspace.step.useful_threads(0)


def test_set_grid_cpus_checks_its_range():
    with pytest.raises(ValueError, match=r"\[1, 64\]"):
        _step._set_grid_cpus(0)
    with pytest.raises(ValueError, match=r"\[1, 64\]"):
        _step._set_grid_cpus(65)


# ------------------------------------------------------------------ the timed choice

def _drive(chooser, limit, seconds_of, steps):
    """Run `steps` steps, each taking seconds_of(threads); the team sizes picked."""
    picked = []
    for _ in range(steps):
        t = chooser.pick(limit)
        chooser.record(t, seconds_of(t))
        picked.append(t)
    return picked


def test_chooser_keeps_the_team_when_it_is_faster():
    ch = threads_mod.TeamChooser(useful=4)
    picked = _drive(ch, 2, {1: 1.6e-3, 2: 1.0e-3}.get, 1000)
    k = ch.PROBE_STEPS
    assert picked[:2 * k] == [2] * k + [1] * k                      # each timed first
    tail = picked[2 * k:]
    assert tail.count(2) / len(tail) > 0.95                         # then the team
    assert tail.count(1) > 0                                        # with probes of one


def test_chooser_drops_a_team_that_lost_a_core_and_takes_it_back():
    ch = threads_mod.TeamChooser(useful=4)
    times = {1: 1.6e-3, 2: 1.0e-3}
    _drive(ch, 2, times.get, 300)
    times[2] = 3.2e-3                                               # a core is taken
    busy = _drive(ch, 2, times.get, 600)
    assert busy[-200:].count(1) / 200 > 0.95
    times[2] = 1.0e-3                                               # and given back
    quiet = _drive(ch, 2, times.get, 600)
    assert quiet[-200:].count(2) / 200 > 0.95


def test_chooser_ignores_a_single_slow_step():
    ch = threads_mod.TeamChooser(useful=2)
    times = {1: 1.6e-3, 2: 1.0e-3}
    _drive(ch, 2, times.get, 100)
    picked = []
    for i in range(50):                     # every 10th team step is 5x slower
        t = ch.pick(2)
        ch.record(t, times[t] * (5 if t == 2 and i % 10 == 0 else 1))
        picked.append(t)
    assert picked == [2] * 50


def test_chooser_follows_the_limit_and_the_fixed_mode(monkeypatch):
    ch = threads_mod.TeamChooser(useful=3)
    assert ch.pick(1) == 1                       # set_num_threads(1): one thread
    assert ch.pick(8) == 3                       # never more than the step can use
    ch1 = threads_mod.TeamChooser(useful=1)
    assert ch1.pick(8) == 1
    monkeypatch.setattr(threads_mod, "timed_team_choice", False)
    ch2 = threads_mod.TeamChooser(useful=4)
    assert _drive(ch2, 2, {1: 1e-3, 2: 9e-3}.get, 50) == [2] * 50


def test_set_grain_checks_and_returns_the_previous():
    with pytest.raises(ValueError, match="flops must be >= 1"):
        _step._set_grain(0)
    previous = _step._set_grain(1e6)
    try:
        assert _step._set_grain(previous) == 1e6
    finally:
        _step._set_grain(previous)


@pytest.mark.parametrize("text, cpus", [("max 100000\n", None), ("200000 100000\n", 2),
                                        ("150000 100000\n", 2), ("50000 100000\n", 1),
                                        ("garbage\n", None)])
def test_cgroup_quota_caps_the_cpus(tmp_path, text, cpus):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert threads_mod._cpu_quota(str(path)) == cpus
    assert threads_mod._cpu_quota(str(tmp_path / "missing")) is None
