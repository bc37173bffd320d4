"""BackupAndRestore: a fit killed outright (SIGKILL) and run again resumes from its last
backup and ends bit-identical to a run never interrupted: weights, optimizer state,
shuffling and dropout, step counters, schedules and early stopping."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnfast as nf

CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import nnfast as nf
    import nnfast._group as group
    out, backup, kill_after, freq, dropout, dtype = sys.argv[1:7]
    kill_after = int(kill_after)
    freq = freq if freq == "epoch" else int(freq)
    real_step, calls = group.LocalGroup.step, [0]

    def step(self, *args):
        result = real_step(self, *args)
        calls[0] += 1
        if calls[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)        # no cleanup of any kind
        return result

    group.LocalGroup.step = step
    rng = np.random.default_rng(0)
    X = rng.standard_normal((250, 7)).astype(dtype)
    y = rng.integers(0, 3, 250)
    net = nf.Network([7, 16, 8, 3], dropout=float(dropout), dtype=dtype, seed=3)
    opt = nf.Adam(lr=0.02)
    callbacks = [nf.schedules.ReduceOnPlateau(monitor="val_loss", patience=1, factor=0.5),
                 nf.callbacks.EarlyStopping(monitor="val_loss", patience=4),
                 nf.callbacks.BackupAndRestore(backup, save_freq=freq)]
    hist = net.fit(X, y, epochs=9, batch_size=16, validation_split=0.2, optimizer=opt,
                   callbacks=callbacks, verbose=False)
    np.save(out, net.flat_params)
    np.save(out + ".m.npy", opt._state["m"])
    np.save(out + ".loss.npy", np.array(hist.batch_loss))
    print("steps", opt.t, "epochs", len(hist.loss), "lr", opt.lr, flush=True)
""")


def _run(tmp_path, name, backup, kill_after, freq, dropout, dtype):
    out = str(tmp_path / name)
    proc = subprocess.run([sys.executable, "-c", CHILD, out, str(backup), str(kill_after),
                           str(freq), str(dropout), dtype], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)     # not the source tree: the installed nnfast
    return proc, out


@pytest.mark.parametrize("freq, kill_after", [("epoch", 40), (5, 37), (1, 13), (5, 13 * 3)])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_killed_fit_resumes_bit_identical(tmp_path, freq, kill_after, dropout, dtype):
    ref, ref_out = _run(tmp_path, "ref", tmp_path / "unused.npz", 0, freq, dropout, dtype)
    assert ref.returncode == 0, ref.stderr
    backup = tmp_path / "backup.npz"
    killed, _ = _run(tmp_path, "killed", backup, kill_after, freq, dropout, dtype)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert backup.exists()
    resumed, out = _run(tmp_path, "resumed", backup, 0, freq, dropout, dtype)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == ref.stdout                 # steps, epochs (early stop), lr
    for suffix in (".npy", ".m.npy", ".loss.npy"):
        np.testing.assert_array_equal(np.load(out + suffix), np.load(ref_out + suffix))
    assert not backup.exists()                          # removed on success
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _data(n=120):
    rng = np.random.default_rng(1)
    return rng.random((n, 5), dtype=np.float32), rng.integers(0, 2, n)


class Fail(nf.callbacks.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, epoch, logs):
        if epoch == self.epoch:
            raise RuntimeError("crash")


def test_the_backup_stays_after_a_failure_and_serves_the_next_fit(tmp_path):
    X, y = _data()
    path = tmp_path / "b.npz"
    ref = nf.Network([5, 6, 2], seed=0)
    ref.fit(X, y, epochs=4, verbose=False)
    net = nf.Network([5, 6, 2], seed=0)
    with pytest.raises(RuntimeError):
        net.fit(X, y, epochs=4, verbose=False,
                callbacks=[nf.callbacks.BackupAndRestore(path), Fail(2)])
    assert path.exists()
    again = nf.Network([5, 6, 2], seed=0)                 # a new process would do this
    hist = again.fit(X, y, epochs=4, verbose=False,
                     callbacks=[nf.callbacks.BackupAndRestore(path), Fail(-1)])
    np.testing.assert_array_equal(again.flat_params, ref.flat_params)
    assert len(hist.loss) == 4 and not path.exists()


def test_keep_the_backup_when_asked(tmp_path):
    X, y = _data()
    path = tmp_path / "b.npz"
    nf.Network([5, 6, 2], seed=0).fit(
        X, y, epochs=2, verbose=False,
        callbacks=[nf.callbacks.BackupAndRestore(path, delete_on_success=False)])
    assert path.exists()


def test_a_backup_of_another_fit_is_refused(tmp_path):
    X, y = _data()
    path = tmp_path / "b.npz"
    with pytest.raises(RuntimeError):
        nf.Network([5, 6, 2], seed=0).fit(
            X, y, epochs=4, batch_size=16, verbose=False,
            callbacks=[nf.callbacks.BackupAndRestore(path), Fail(1)])
    for net, kw in ((nf.Network([5, 6, 2], seed=0), dict(batch_size=32)),
                    (nf.Network([5, 7, 2], seed=0), dict(batch_size=16)),
                    (nf.Network([5, 6, 2], seed=0), dict(batch_size=16, optimizer="sgd"))):
        before = net.flat_params.copy()
        with pytest.raises(ValueError, match="was written by another fit"):
            net.fit(X, y, epochs=4, verbose=False,
                    callbacks=[nf.callbacks.BackupAndRestore(path), Fail(-1)], **kw)
        np.testing.assert_array_equal(net.flat_params, before)


def test_a_damaged_backup_is_refused(tmp_path):
    X, y = _data()
    path = tmp_path / "b.npz"
    with pytest.raises(RuntimeError):
        nf.Network([5, 6, 2], seed=0).fit(
            X, y, epochs=4, verbose=False,
            callbacks=[nf.callbacks.BackupAndRestore(path), Fail(1)])
    data = bytearray(path.read_bytes())
    i = data.find(b"\x93NUMPY", data.find(b"params.npy")) + 200
    data[i] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="BackupAndRestore: .*(damaged|readable)"):
        nf.Network([5, 6, 2], seed=0).fit(
            X, y, epochs=4, verbose=False,
            callbacks=[nf.callbacks.BackupAndRestore(path), Fail(-1)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="save_freq"):
        nf.callbacks.BackupAndRestore("b.npz", save_freq=0)
    with pytest.raises(TypeError, match="save_freq"):
        nf.callbacks.BackupAndRestore("b.npz", save_freq="daily")
    with pytest.raises(TypeError, match="path must be a str"):
        nf.callbacks.BackupAndRestore(3)
    X, y = _data()
    with pytest.raises(ValueError, match="at most one BackupAndRestore"):
        nf.Network([5, 2]).fit(X, y, verbose=False,
                               callbacks=[nf.callbacks.BackupAndRestore("a.npz"),
                                          nf.callbacks.BackupAndRestore("b.npz")])


def test_cli_backup_resumes_a_killed_train(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_cli import SIGNAL_AFTER_STEP, write_idx_data_set
    write_idx_data_set(tmp_path, 96, 16, 4)

    def train(kill_after, model, backup):
        args = ["train", "--data", str(tmp_path), "--epochs", "4", "--batch-size", "16",
                "--hidden", "8", "--dropout", "0.2", "--quiet", "--save", str(model)]
        if backup:
            args += ["--backup", str(backup)]
        return subprocess.run([sys.executable, "-c", SIGNAL_AFTER_STEP, "KILL",
                               str(kill_after), *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)

    assert train(0, tmp_path / "ref.npz", None).returncode == 0
    backup = tmp_path / "state.npz"
    assert train(6 * 2 + 3, tmp_path / "m.npz", backup).returncode == -signal.SIGKILL
    assert backup.exists() and not (tmp_path / "m.npz").exists()
    proc = train(0, tmp_path / "m.npz", backup)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(nf.load(tmp_path / "m.npz").flat_params,
                                  nf.load(tmp_path / "ref.npz").flat_params)
    assert not backup.exists()
