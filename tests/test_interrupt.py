"""Ctrl-C during fit stops between steps: the network holds exactly the weights of the
last completed step and the history says what was trained; the CLI exits with 130 and
saves nothing."""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="POSIX signals")

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import nnfast as nf
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 64)).astype(np.float32)
    y = rng.integers(0, 10, 4096)
    B = 32
    net = nf.Network([64, 256, 256, 10], seed=0)
    opt = nf.Adam()
    print("ready", flush=True)
    try:
        net.fit(X, y, epochs=10**6, batch_size=B, shuffle=False, optimizer=opt, verbose=False)
        sys.exit(3)
    except KeyboardInterrupt as exc:
        hist = exc.history
    k = len(hist.batch_loss)
    assert k >= 1 and opt.t == k, (k, opt.t)
    assert np.isfinite(net._flat_params).all()
    # replay exactly k steps from scratch: whole epochs, then the first j batches
    steps_per_epoch = 4096 // B
    replay, opt2 = nf.Network([64, 256, 256, 10], seed=0), nf.Adam()
    if k // steps_per_epoch:
        replay.fit(X, y, epochs=k // steps_per_epoch, batch_size=B, shuffle=False,
                   optimizer=opt2, verbose=False)
    j = k % steps_per_epoch
    if j:
        replay.fit(X[:j * B], y[:j * B], epochs=1, batch_size=B, shuffle=False,
                   optimizer=opt2, verbose=False)
    assert opt2.t == k
    assert np.array_equal(replay._flat_params, net._flat_params), "not the last step's weights"
    print("consistent", k, flush=True)
""")


def _default_sigint():
    """In the child before exec: Ctrl-C's default disposition, even when this test runs in
    a background job, whose children inherit SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after_ready(cmd, wait=0.5, **kwargs):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tempfile.gettempdir(), preexec_fn=_default_sigint, **kwargs)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    time.sleep(wait)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, line + out, err


def test_fit_stops_between_steps_with_consistent_weights():
    rc, out, err = _interrupt_after_ready([sys.executable, "-c", CHILD])
    assert rc == 0, err
    assert "consistent" in out


def test_cli_exits_130_and_saves_nothing(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_cli import write_idx_data_set
    write_idx_data_set(tmp_path, 3000, 100, 8)
    model = tmp_path / "m.npz"
    rc, out, err = _interrupt_after_ready(
        [sys.executable, "-m", "nnfast", "train", "--data", str(tmp_path), "--epochs", "100000",
         "--batch-size", "8", "--save", str(model)], wait=1.0)
    assert rc == 130, (out, err)
    assert "interrupted" in err and "Traceback" not in err
    assert not model.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


# Ctrl-C at the end of fit: during the last step, the last validation or the last
# callbacks. Each child sends itself SIGINT at that point (deterministically: from a
# wrapped step, or from a callback) and reports how fit ended.
END_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import nnfast as nf
    import nnfast._group as group
    signal.signal(signal.SIGINT, signal.default_int_handler)
    where = sys.argv[1]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    steps = {"n": 0}
    real_step = group.LocalGroup.step

    def step(self, *args):
        out = real_step(self, *args)
        steps["n"] += 1
        if where == "last_step" and steps["n"] == 2 * 4:      # 2 epochs of 4 batches
            os.kill(os.getpid(), signal.SIGINT)
        return out

    group.LocalGroup.step = step
    after = []

    class Late(nf.callbacks.Callback):
        def on_epoch_end(self, net, epoch, logs):
            if where == "callback" and epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)              # Ctrl-C must end this sleep, not wait for it
                after.append("slept")

        def on_train_end(self, net, optimizer):
            if where == "train_end":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)
                after.append("slept")

    val = (X[:16], y[:16])
    net = nf.Network([6, 8, 3], seed=0)
    try:
        net.fit(X, y, epochs=2, batch_size=16, verbose=False, callbacks=[Late()],
                validation_data=val)
        print("returned normally", flush=True)
    except KeyboardInterrupt as exc:
        print("KeyboardInterrupt", len(exc.history.batch_loss), after, flush=True)
""")


@pytest.mark.parametrize("where", ["last_step", "callback", "train_end"])
def test_ctrl_c_at_the_end_of_fit_is_not_dropped(where):
    proc = subprocess.run([sys.executable, "-c", END_CHILD, where], capture_output=True,
                          text=True, timeout=25, cwd=tempfile.gettempdir(),
                          preexec_fn=_default_sigint)
    assert proc.returncode == 0, proc.stderr
    # every case trained all 8 steps; the sleeping callbacks were cut short
    assert "KeyboardInterrupt 8 []" in proc.stdout, (proc.stdout, proc.stderr)


def test_cli_ctrl_c_in_the_last_step_exits_130_and_saves_nothing(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_cli import SIGNAL_AFTER_STEP, write_idx_data_set
    write_idx_data_set(tmp_path, 64, 16, 4)
    model = tmp_path / "m.npz"
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER_STEP, "INT", str(2 * 64 // 16), "train", "--data",
         str(tmp_path), "--epochs", "2", "--batch-size", "16", "--hidden", "8",
         "--save", str(model)],
        capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(),
        preexec_fn=_default_sigint)
    assert proc.returncode == 130, (proc.stdout, proc.stderr)
    assert not model.exists()
