"""Several Python threads using nnfast at once: fits of different networks, predictions,
set_num_threads from anywhere. Never a hang, never a corrupted result, and the thread
setting is the process's: a running fit never reverts it and get_num_threads tells it.

The scenarios run in a subprocess with a timeout, so that a hang fails the test instead
of stopping the suite."""
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading

import numpy as np
import pytest

import nnfast as nf


def _run(code, timeout=120):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout,
                          cwd=tempfile.gettempdir())     # the installed nnfast, not ./nnfast
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_two_threads_fit_two_networks_each_as_if_alone():
    """The issue's repro: a fit in a thread, set_num_threads from the main thread, a second
    fit there. Each result is bit-identical to the same fit run alone."""
    out = _run("""
        import threading, time
        import numpy as np
        import nnfast as nf
        rng = np.random.default_rng(0)
        X = rng.random((512, 256), dtype=np.float32)
        y = rng.integers(0, 10, 512)

        def fit(net):
            net.fit(X, y, epochs=20, batch_size=64, verbose=False)
            return net

        nf.set_num_threads(2)
        alone = [fit(nf.Network([256, 512, 10], seed=s)).flat_params.copy() for s in (1, 2)]
        a, b = nf.Network([256, 512, 10], seed=1), nf.Network([256, 512, 10], seed=2)
        t = threading.Thread(target=fit, args=(a,))
        t.start()
        time.sleep(0.05)
        nf.set_num_threads(2)
        fit(b)
        t.join()
        print(np.array_equal(a.flat_params, alone[0]), np.array_equal(b.flat_params, alone[1]))
    """)
    assert out.split() == ["True", "True"]


def test_many_threads_fit_and_predict_while_the_setting_changes():
    """4 fits (float32 / float64, dropout, batch sizes), 2 predicting threads and a thread
    flipping set_num_threads between 1 and 2: all finish, every fit's weights are finite
    and no false divergence is reported; with the setting held at 2, each fit's weights
    equal those of the same fit alone."""
    out = _run("""
        import threading
        import numpy as np
        import nnfast as nf
        rng = np.random.default_rng(0)
        X = rng.random((600, 40), dtype=np.float32)
        y = rng.integers(0, 5, 600)
        configs = [dict(sizes=[40, 64, 5], dtype=np.float32, batch=32, dropout=0.0),
                   dict(sizes=[40, 96, 48, 5], dtype=np.float64, batch=100, dropout=0.2),
                   dict(sizes=[40, 32, 5], dtype=np.float32, batch=7, dropout=0.5),
                   dict(sizes=[40, 128, 5], dtype=np.float64, batch=600, dropout=0.0)]

        def make(c, seed):
            return nf.Network(c["sizes"], dtype=c["dtype"], dropout=c["dropout"], seed=seed)

        def fit(net, c, errors):
            try:
                net.fit(X, y, epochs=6, batch_size=c["batch"], verbose=False)
            except Exception as exc:               # reported below, fails the test
                errors.append(repr(exc))

        def run(flip):
            nets = [make(c, i) for i, c in enumerate(configs)]
            errors, stop = [], threading.Event()
            predictor = make(configs[0], 9)

            def predict():
                while not stop.is_set():
                    p = predictor.predict_proba(X)
                    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)

            def flipper():
                k = 0
                while not stop.is_set():
                    nf.set_num_threads(1 + k % 2)
                    k += 1

            fits = [threading.Thread(target=fit, args=(n, c, errors))
                    for n, c in zip(nets, configs)]
            helpers = [threading.Thread(target=predict) for _ in range(2)]
            if flip:
                helpers.append(threading.Thread(target=flipper))
            for t in fits + helpers:
                t.start()
            for t in fits:
                t.join()
            stop.set()
            for t in helpers:
                t.join()
            assert not errors, errors
            return [n.flat_params.copy() for n in nets]

        nf.set_num_threads(2)
        alone = []
        for i, c in enumerate(configs):
            net = make(c, i)
            fit(net, c, [])
            alone.append(net.flat_params.copy())
        flipped = run(flip=True)
        print(all(np.isfinite(p).all() for p in flipped))
        nf.set_num_threads(2)
        together = run(flip=False)
        print(all(np.array_equal(p, q) for p, q in zip(together, alone)))
    """)
    assert out.split() == ["True", "True"]


class _RecordThreads(nf.callbacks.Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, net, epoch, logs):
        self.seen.append(nf.get_num_threads())


def test_get_num_threads_tells_the_setting_during_fit():
    before = nf.get_num_threads()
    try:
        nf.set_num_threads(2)
        rec = _RecordThreads()
        X = np.random.default_rng(0).random((200, 10), dtype=np.float32)
        nf.Network([10, 8, 3]).fit(X, np.arange(200) % 3, epochs=3, verbose=False,
                                   callbacks=[rec])
        assert rec.seen == [2, 2, 2]
        assert nf.get_num_threads() == 2
    finally:
        nf.set_num_threads(before)


def test_set_num_threads_from_another_thread_is_not_reverted_by_a_running_fit():
    before = nf.get_num_threads()
    changed = threading.Event()

    class SetFromElsewhere(nf.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            if epoch == 0:                  # another thread changes it mid-fit
                t = threading.Thread(target=nf.set_num_threads, args=(1,))
                t.start()
                t.join()
                changed.set()

    try:
        nf.set_num_threads(2)
        X = np.random.default_rng(0).random((300, 10), dtype=np.float32)
        nf.Network([10, 8, 3]).fit(X, np.arange(300) % 3, epochs=3, verbose=False,
                                   callbacks=[SetFromElsewhere()])
        assert changed.is_set()
        assert nf.get_num_threads() == 1            # the fit ended; the setting stays
    finally:
        nf.set_num_threads(before)


def test_fit_leaves_nnfast_blas_single_threaded():
    """nnfast's own OpenBLAS copy runs on one thread, always: all parallel work is the
    team's, so no fit ever changes a BLAS setting another thread relies on."""
    from nnfast import _kernels
    X = np.random.default_rng(0).random((100, 10), dtype=np.float32)
    nf.Network([10, 8, 3]).fit(X, np.arange(100) % 3, epochs=1, verbose=False)
    assert _kernels.get_blas_threads() == 1


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"),
                    reason="flush-to-zero is set through x86's MXCSR")
@pytest.mark.parametrize("dtype, tiny", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_denormal_inputs_are_read_as_zero(dtype, tiny):
    """Denormals are flushed in the step and in prediction (they would take a slow path
    ~100x slower): a fit and a prediction on denormal inputs equal those on zeros."""
    rng = np.random.default_rng(0)
    X = (rng.random((120, 12)) * tiny).astype(dtype)
    assert np.all((X == 0) | (np.abs(X) < np.finfo(dtype).tiny))
    y = np.arange(120) % 3
    nets = []
    for data in (X, np.zeros_like(X)):
        net = nf.Network([12, 16, 3], dtype=dtype, seed=0)
        net.fit(data, y, epochs=2, batch_size=16, verbose=False)
        nets.append((net.flat_params.copy(), net.forward(data)))
    assert np.array_equal(nets[0][0], nets[1][0])
    assert np.array_equal(nets[0][1], nets[1][1])


def test_compiled_forward_refuses_bad_arguments():
    from nnfast._step import forward
    w = np.ones((4, 3), np.float32)
    b = np.zeros(3, np.float32)
    x = np.ones((5, 4), np.float32)
    out = np.empty((5, 3), np.float32)
    forward(x, [out], [w], [b], [0], 2)
    assert np.allclose(out, 4.0)                       # relu(x @ w)
    with pytest.raises(ValueError, match="as many outputs"):
        forward(x, [], [w], [b], [0], 1)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        forward(x, [out], [w], [b], [0], 0)
    with pytest.raises(TypeError, match="C-contiguous float32"):
        forward(x, [out], [w.astype(np.float64)], [b], [0], 1)
    with pytest.raises(TypeError, match="C-contiguous"):
        forward(x, [out], [np.asfortranarray(np.ones((4, 3), np.float32))], [b], [0], 1)
    with pytest.raises(ValueError, match="do not chain"):
        forward(x, [np.empty((5, 2), np.float32)], [w], [b], [0], 1)
    with pytest.raises(ValueError, match="do not chain"):
        forward(x, [out], [w], [np.zeros((), np.float32)], [0], 1)     # a 0-d intercept
    with pytest.raises(ValueError, match="activation code"):
        forward(x, [out], [w], [b], [99], 1)
    buf = np.ones(40, np.float32)
    with pytest.raises(ValueError, match="overlaps x"):
        forward(buf[:20].reshape(5, 4), [buf[10:25].reshape(5, 3)], [w], [b], [0], 1)
    with pytest.raises(TypeError, match="2-d ndarray"):
        forward([[1.0]], [out], [w], [b], [0], 1)
