"""Data-parallel training over MPI (nnfast.distributed), each case under `mpiexec -n 2`
on this host. Needs mpi4py and an `mpiexec` (the nnfast[mpi] extra: the MPICH wheel)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_worker.py")
MPIEXEC = (os.path.join(os.path.dirname(sys.executable), "mpiexec")
           if os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec"))
           else shutil.which("mpiexec"))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")
TIMEOUT = 120                       # a hang fails the test instead of blocking CI


def run(case, tmp_path, *args, ranks=2):
    cmd = [sys.executable, WORKER, case, str(tmp_path), *map(str, args)]
    if ranks:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path, env=env)


def results(tmp_path, rank):
    with open(tmp_path / f"hist_{rank}.json") as f:
        return np.load(tmp_path / f"params_{rank}.npy"), json.load(f)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("batch", [32, 31, 200])    # even and odd parts; a short last batch
def test_two_ranks_train_like_one_process_with_the_same_global_batch(tmp_path, optimizer,
                                                                     batch):
    single = tmp_path / "single"
    single.mkdir()
    out = run("single", single, optimizer, batch, ranks=0)
    assert out.returncode == 0, out.stderr
    proc = run("parallel", tmp_path, optimizer, batch)
    assert proc.returncode == 0, proc.stderr
    p0, h0 = results(tmp_path, 0)
    p1, h1 = results(tmp_path, 1)
    ps, hs = results(single, 0)
    assert np.array_equal(p0, p1)                       # bit-identical across ranks
    assert h0["batch_loss"] == h1["batch_loss"] and h0["t"] == h1["t"] == hs["t"]
    assert len(h0["batch_loss"]) == len(hs["batch_loss"]) == 3 * -(-203 // batch)
    np.testing.assert_allclose(p0, ps, rtol=1e-9, atol=1e-12)   # float64 rounding only
    np.testing.assert_allclose(h0["batch_loss"], hs["batch_loss"], rtol=1e-10)
    np.testing.assert_allclose(h0["accuracy"], hs["accuracy"], rtol=0, atol=1e-12)
    assert len(h0["comm_time"]) == 3 and hs["comm_time"] == []


@pytest.mark.parametrize("batch", [31, 200])
def test_two_ranks_with_sample_weights_train_like_one_process(tmp_path, batch):
    single = tmp_path / "single"
    single.mkdir()
    out = run("single", single, "adam", batch, "weighted", ranks=0)
    assert out.returncode == 0, out.stderr
    proc = run("parallel", tmp_path, "adam", batch, "weighted")
    assert proc.returncode == 0, proc.stderr
    p0, h0 = results(tmp_path, 0)
    p1, _ = results(tmp_path, 1)
    ps, hs = results(single, 0)
    assert np.array_equal(p0, p1)
    np.testing.assert_allclose(p0, ps, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h0["batch_loss"], hs["batch_loss"], rtol=1e-10)
    np.testing.assert_allclose(h0["loss"], hs["loss"], rtol=1e-10)


@pytest.mark.parametrize("weighted", [[], ["weighted"]], ids=["plain", "weighted"])
def test_two_ranks_on_sparse_input_train_like_two_ranks_on_the_same_data_dense(tmp_path,
                                                                              weighted):
    pytest.importorskip("scipy")
    dense = tmp_path / "dense"
    dense.mkdir()
    out = run("parallel", dense, "adam", 31, "dense", *weighted)
    assert out.returncode == 0, out.stderr
    proc = run("parallel", tmp_path, "adam", 31, "csr", *weighted)
    assert proc.returncode == 0, proc.stderr
    p0, h0 = results(tmp_path, 0)
    p1, _ = results(tmp_path, 1)
    pd, hd = results(dense, 0)
    assert np.array_equal(p0, p1)                       # bit-identical across ranks
    np.testing.assert_allclose(p0, pd, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h0["batch_loss"], hd["batch_loss"], rtol=1e-10)


def test_a_rank_with_bad_data_stops_every_rank_with_a_clear_error(tmp_path):
    proc = run("bad_shard", tmp_path)
    assert proc.returncode != 0
    assert "rank 1: ValueError: X contains NaN" in proc.stdout
    assert "rank 0: ValueError: fit: rank 1 of 2 failed, so every rank stops" in proc.stdout
    assert "trained" not in proc.stdout


def test_a_callback_failing_on_one_rank_stops_every_rank(tmp_path):
    proc = run("callback_fails", tmp_path)
    assert proc.returncode != 0
    assert "rank 1: RuntimeError: boom" in proc.stdout
    assert "rank 0: ValueError: fit: rank 1 of 2 failed" in proc.stdout


def test_a_data_file_shrinking_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    proc = run("file_truncated", tmp_path)              # a hang would time out
    assert proc.returncode != 0
    assert "rank 1: DataFileChanged: X:" in proc.stdout, proc.stdout + proc.stderr
    assert "changed while nnfast was reading it" in proc.stdout
    assert "rank 0: ValueError: fit: rank 1 of 2 failed, so every rank stops: " \
           "DataFileChanged" in proc.stdout


def test_a_stop_asked_on_one_rank_stops_every_rank(tmp_path):
    proc = run("early_stop_on_one_rank", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "rank 0: 2 epochs" in proc.stdout and "rank 1: 2 epochs" in proc.stdout


def test_ctrl_c_in_a_callback_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    proc = run("interrupt", tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = -(-203 // 32)           # epoch 1: the Ctrl-C in epoch 2's callback acts there
    for rank in (0, 1):
        assert f"rank {rank}: interrupted after {steps} steps" in proc.stdout
    assert np.array_equal(np.load(tmp_path / "params_0.npy"),
                          np.load(tmp_path / "params_1.npy"))


@pytest.mark.parametrize("case, own, others", [
    ("raise_keyboard", "KeyboardInterrupt", "KeyboardInterrupt"),
    ("raise_systemexit", "SystemExit", "ValueError")])
def test_a_callback_raising_a_base_exception_on_one_rank_ends_every_rank(tmp_path, case,
                                                                         own, others):
    proc = run(case, tmp_path)              # a hang would time out
    assert proc.returncode == 0, proc.stderr
    assert f"rank 1: {own}" in proc.stdout
    assert f"rank 0: {others}" in proc.stdout


def test_backup_and_restore_resumes_every_rank_bit_identical(tmp_path):
    assert run("backup", tmp_path, "ref").returncode == 0
    assert not (tmp_path / "backup.npz").exists()
    proc = run("backup", tmp_path, "crash")
    assert "rank 0: RuntimeError" in proc.stdout and "rank 1: ValueError" in proc.stdout
    assert (tmp_path / "backup.npz").exists()
    proc = run("backup", tmp_path, "resume")
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"resume_{rank}.npy"),
                                      np.load(tmp_path / f"ref_{rank}.npy"))
    assert not (tmp_path / "backup.npz").exists()


@pytest.mark.parametrize("what, named", [
    ("optimizer", "optimizer"), ("lr", "hyperparameters"), ("activation", "hidden"),
    ("dropout", "dropout"), ("schedule", "schedules and early stopping"),
    ("eps", "smallest normal")])
def test_ranks_must_agree_on_the_whole_configuration(tmp_path, what, named):
    proc = run("disagree", tmp_path, what)              # a hang would time out
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        line = next(l for l in proc.stdout.splitlines() if l.startswith(f"rank {rank}:"))
        assert "ValueError" in line and named in line, proc.stdout


def test_ranks_must_agree_on_the_arguments(tmp_path):
    proc = run("mismatch", tmp_path)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"rank {rank}: ValueError: fit: every rank must pass the same" in proc.stdout


def test_dropout_masks_differ_per_rank_weights_stay_identical(tmp_path):
    proc = run("dropout", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "dropout_0.npy"),
                          np.load(tmp_path / "dropout_1.npy"))


def test_comm_must_be_a_communicator():
    import nnfast as nf
    net = nf.Network([3, 2])
    with pytest.raises(TypeError, match="mpi4py communicator"):
        net.fit(np.zeros((4, 3)), [0, 1, 0, 1], comm=object(), verbose=False)
