"""A .npy file changed while nnfast reads it (fit / predict / evaluate take its path): a
clear DataFileChanged (an OSError) naming the file, never SIGBUS, and the network as after
its last completed step. Also: special and byte-swapped files are refused up front."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnfast as nf
from nnfast._npyfile import DataFileChanged, NpyFile


def _data(n=1000, features=16, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, features)).astype(dtype)
    y = (X[:, :4].sum(axis=1) > 2).astype(np.int64)
    return X, y


def _saved(tmp_path, X):
    """X saved as x.npy, its modification time set an hour back (a rewrite then
    changes it even on a coarse file-system clock)."""
    path = tmp_path / "x.npy"
    np.save(path, X)
    past = os.stat(path).st_mtime - 3600
    os.utime(path, (past, past))
    return path


class _AfterEpoch(nf.callbacks.Callback):
    """Runs `change` after the first epoch, keeping a copy of the weights then."""

    def __init__(self, change):
        self.change, self.params = change, None

    def on_epoch_end(self, net, epoch, logs):
        if epoch == 0:
            self.params = net._flat_params.copy()
            self.change()
        return False


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_a_file_truncated_during_fit_stops_it_with_the_weights_of_the_last_step(
        tmp_path, dtype, threads):
    X, y = _data(dtype=np.float32)
    if dtype == np.uint8:
        X = (X * 255).astype(np.uint8)
    path = _saved(tmp_path, X)
    net = nf.Network([16, 8, 2], seed=0, input_scale=1 / 255 if dtype == np.uint8 else 1)
    cb = _AfterEpoch(lambda: os.truncate(path, os.path.getsize(path) // 3))
    before = nf.get_num_threads()
    nf.set_num_threads(threads)
    try:
        with pytest.raises(DataFileChanged, match=r"X: .*x\.npy changed while nnfast was "
                                                  r"reading it \(it ends before row \d+"):
            net.fit(path, y, epochs=3, batch_size=64, verbose=False, callbacks=[cb])
    finally:
        nf.set_num_threads(before)
    assert np.array_equal(net._flat_params, cb.params)    # the failed step changed nothing
    assert issubclass(DataFileChanged, OSError) and nf.DataFileChanged is DataFileChanged


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1.0), (np.uint8, 1 / 255)])
def test_a_row_missing_on_any_thread_of_the_team_ends_the_step_with_the_error(
        tmp_path, dtype, scale):
    """The compiled gather on a team of two (each thread reads its own rows): the row it
    cannot read is named, and no stage after the gather ran (the gradients untouched)."""
    X, y = _data(n=512, features=256)
    X = (X * 255).astype(dtype) if dtype == np.uint8 else X
    path = _saved(tmp_path, X)
    net = nf.Network([256, 512, 10], seed=0, input_scale=scale)
    ws = net._get_workspace(256)
    rows = NpyFile.open(path)
    net._bind(ws.step, rows, net._Y(y, 512))
    assert ws.step.useful_threads(256) >= 2
    ws.step.gradients(np.arange(256, dtype=np.intp), 0, 0, 2)
    expected = net._flat_grads.copy()
    os.truncate(path, os.path.getsize(path) - 300 * 256 * X.itemsize)    # rows 212..
    for idx in (np.arange(256), np.arange(256)[::-1], np.arange(200, 456)):
        net._flat_grads[...] = 7
        with pytest.raises(DataFileChanged, match=r"ends before row 2\d\d of its 512 rows"):
            ws.step.gradients(np.ascontiguousarray(idx, dtype=np.intp), 0, 0, 2)
        assert (net._flat_grads == 7).all()
    ws.step.gradients(np.arange(200, dtype=np.intp), 0, 0, 2)         # rows still there
    assert np.isfinite(net._flat_grads).all() and not np.array_equal(net._flat_grads,
                                                                      expected)


def test_a_file_rewritten_in_place_during_fit_is_found_at_the_end_of_the_epoch(tmp_path):
    X, y = _data()
    path = _saved(tmp_path, X)
    net = nf.Network([16, 8, 2], seed=0)

    def rewrite():                                      # same size, new values
        with open(path, "r+b") as f:
            f.seek(-4 * 16, os.SEEK_END)
            f.write(np.ones(16, np.float32).tobytes())
    with pytest.raises(DataFileChanged, match="it was modified"):
        net.fit(path, y, epochs=3, verbose=False, callbacks=[_AfterEpoch(rewrite)])


def test_a_validation_file_truncated_during_fit_is_an_error(tmp_path):
    X, y = _data()
    path = _saved(tmp_path, X)
    net = nf.Network([16, 8, 2], seed=0)
    cb = _AfterEpoch(lambda: os.truncate(path, 200))
    with pytest.raises(DataFileChanged, match="its size went from"):
        net.fit(X, y, epochs=3, verbose=False, validation_data=(path, y), callbacks=[cb])


def test_a_file_replaced_by_rename_during_fit_keeps_the_one_opened(tmp_path):
    """Writing a new file and renaming it over the path (np.save to another name, then
    os.replace) does not change what the running fit reads: it has the old file open."""
    X, y = _data()
    path = _saved(tmp_path, X)

    def replace():
        np.save(tmp_path / "new.npy", np.zeros_like(X))
        os.replace(tmp_path / "new.npy", path)
    a, b = nf.Network([16, 8, 2], seed=0), nf.Network([16, 8, 2], seed=0)
    a.fit(path, y, epochs=2, verbose=False, callbacks=[_AfterEpoch(replace)])
    b.fit(X, y, epochs=2, verbose=False)
    assert np.array_equal(a._flat_params, b._flat_params)


def test_read_of_a_file_that_shrank_names_the_row(tmp_path):
    X, _ = _data()
    path = _saved(tmp_path, X)
    rows = NpyFile.open(path)
    assert np.array_equal(rows.read(10, 20), X[10:20])
    assert np.array_equal(rows[100:200].read(5, 7), X[105:107])
    os.truncate(path, os.path.getsize(path) - 1)
    with pytest.raises(DataFileChanged, match="ends before row 999 of the 1000 rows"):
        rows.read()
    with pytest.raises(DataFileChanged, match="size went from"):
        rows.check_unchanged()


def test_predict_and_evaluate_on_a_truncated_file_are_clear_errors(tmp_path):
    X, y = _data()
    path = _saved(tmp_path, X)
    net = nf.Network([16, 8, 2], seed=0)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 4)           # before open: the header says more
    for call in (lambda: net.predict(path), lambda: net.evaluate(path, y)):
        with pytest.raises(ValueError, match=r"x\.npy is truncated: its header declares "
                                             r"shape \(1000, 16\)"):
            call()


def test_truncation_by_another_process_is_an_error_not_sigbus(tmp_path):
    """The case that used to kill the process: another process truncates the file while
    fit reads it. The child must exit with the error, not die of a signal."""
    X, y = _data(n=20_000, features=64)
    path = _saved(tmp_path, X)
    np.save(tmp_path / "y.npy", y)
    child = textwrap.dedent(f"""
        import subprocess, sys, nnfast as nf
        class Cut(nf.callbacks.Callback):
            def on_epoch_end(self, net, epoch, logs):
                if epoch == 0:
                    subprocess.run(["truncate", "-s", "4096", {str(path)!r}], check=True)
                return False
        net = nf.Network([64, 32, 2], seed=0)
        try:
            net.fit({str(path)!r}, {str(tmp_path / "y.npy")!r}, epochs=3, verbose=False,
                    callbacks=[Cut()])
        except OSError as exc:
            print(type(exc).__name__, exc)
            sys.exit(7)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 7, (proc.returncode, -signal.SIGBUS, proc.stderr)
    assert "DataFileChanged" in proc.stdout and "x.npy changed" in proc.stdout


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    child = (f"import nnfast as nf; nf.Network([4, 3, 2]).predict({str(fifo)!r})")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)             # a wait would time out
    assert proc.returncode == 1
    assert "x.npy is not a regular file" in proc.stderr


@pytest.mark.parametrize("order", [">f4", ">f8"])
def test_byte_swapped_files_and_memmaps_are_refused(tmp_path, order):
    """Read in place, a big-endian file would be taken as little-endian numbers."""
    X, y = _data()
    np.save(tmp_path / "x.npy", X.astype(order))
    net = nf.Network([16, 8, 2])
    with pytest.raises(ValueError, match="this machine's byte order"):
        net.fit(tmp_path / "x.npy", y, verbose=False)
    with pytest.raises(ValueError, match="this machine's byte order"):
        net.predict(np.load(tmp_path / "x.npy", mmap_mode="r"))


def test_a_directory_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a regular file"):
        nf.Network([4, 3, 2]).predict(tmp_path)


@pytest.mark.parametrize("dtype, scale", [(np.uint8, 1 / 255), (np.float64, 1.0),
                                          (np.float32, 0.5), (np.float32, 1.0)])
def test_fit_predict_evaluate_from_a_file_equal_the_array_in_memory(tmp_path, dtype, scale):
    X, y = _data(n=700)
    X = (X * 255).astype(dtype) if dtype == np.uint8 else X.astype(dtype)
    path = _saved(tmp_path, X)
    a = nf.Network([16, 8, 2], seed=3, input_scale=scale)
    b = nf.Network([16, 8, 2], seed=3, input_scale=scale)
    kw = dict(epochs=2, batch_size=50, verbose=False, validation_split=0.2)
    ha, hb = a.fit(path, y, **kw), b.fit(X, y, **kw)
    assert np.array_equal(a._flat_params, b._flat_params)
    assert ha.val_loss == hb.val_loss
    assert np.array_equal(a.forward(path), b.forward(X))
    assert a.evaluate(path, y) == b.evaluate(X, y)


def _npy_with_header(path, header, data_bytes):
    header = header + " " * (118 - len(header)) + "\n"             # 128-byte preamble
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                     + header.encode() + b"\0" * data_bytes)


@pytest.mark.parametrize("shape, match", [
    ("(-5, 4)", r"declares the shape \(-5, 4\)"),
    ("(4, -1)", r"declares the shape \(4, -1\)"),
    (f"({2**40}, {2**40})", "is truncated: its header declares shape"),
    ("(10, 4)", "is truncated: its header declares shape"),
    ("(True, 4)", r"declares the shape \(True, 4\)")])
def test_hostile_headers_are_refused_before_reading(tmp_path, shape, match):
    path = tmp_path / "x.npy"
    _npy_with_header(path, f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}",
                     64)
    with pytest.raises(ValueError, match=match):
        nf.Network([4, 3, 2]).fit(path, np.zeros(10, int), verbose=False)


def test_a_memmap_of_a_whole_file_is_read_from_the_file(tmp_path):
    """What load_npy_dir returns (np.load(..., mmap_mode="r"), reshaped) is read with
    pread too: its file truncated during fit is DataFileChanged, not SIGBUS."""
    X, y = _data()
    path = _saved(tmp_path, X.reshape(1000, 4, 4))
    mapped = np.load(path, mmap_mode="r").reshape(1000, -1)
    net = nf.Network([16, 8, 2], seed=0)
    cb = _AfterEpoch(lambda: os.truncate(path, 1000))
    with pytest.raises(DataFileChanged, match="x.npy changed"):
        net.fit(mapped, y, epochs=3, verbose=False, callbacks=[cb])
    assert np.array_equal(net._flat_params, cb.params)


def test_a_copy_on_write_memmap_is_read_through_its_mapping(tmp_path):
    """mode "c" holds private changes the file does not: they are what fit sees."""
    X, y = _data()
    path = _saved(tmp_path, X)
    private = np.load(path, mmap_mode="c")
    private[:100] = 0.5
    X[:100] = 0.5
    a, b = nf.Network([16, 8, 2], seed=0), nf.Network([16, 8, 2], seed=0)
    a.fit(private, y, epochs=2, verbose=False)
    b.fit(X, y, epochs=2, verbose=False)
    assert np.array_equal(a._flat_params, b._flat_params)


def test_a_target_path_is_read_into_memory(tmp_path):
    """Float targets of a linear output would be used in place if mapped: y is read
    whole, so a change to its file during fit changes nothing."""
    X, _ = _data()
    Y = np.random.default_rng(1).random((1000, 2)).astype(np.float32)
    np.save(tmp_path / "y.npy", Y)
    a = nf.Network([16, 8, 2], output="linear", seed=0)
    b = nf.Network([16, 8, 2], output="linear", seed=0)
    cb = _AfterEpoch(lambda: os.truncate(tmp_path / "y.npy", 0))
    a.fit(X, tmp_path / "y.npy", epochs=2, verbose=False, callbacks=[cb])
    b.fit(X, Y, epochs=2, verbose=False)
    assert np.array_equal(a._flat_params, b._flat_params)


def test_a_target_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "y.npy")
    child = (f"import numpy as np, nnfast as nf; nf.Network([4, 3, 2]).fit("
             f"np.zeros((4, 4), np.float32), {str(tmp_path / 'y.npy')!r}, verbose=False)")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and "y.npy is not a regular file" in proc.stderr


def test_a_non_npy_target_file_is_named_as_such(tmp_path):
    (tmp_path / "labels.txt").write_text("0\n1\n0\n1\n")
    with pytest.raises(ValueError, match="labels.txt is not a readable .npy file") as info:
        nf.Network([4, 3, 2]).fit(np.zeros((4, 4)), tmp_path / "labels.txt", verbose=False)
    assert "pickle" not in str(info.value)


def test_a_rewrite_during_prediction_is_an_error_not_a_result(tmp_path):
    X, _ = _data()
    path = _saved(tmp_path, X)
    rows = NpyFile.open(path)
    with open(path, "r+b") as f:                     # after the open, before the reads
        f.seek(-64, os.SEEK_END)
        f.write(np.full(16, 2, np.float32).tobytes())
    with pytest.raises(DataFileChanged, match="it was modified"):
        nf.Network([16, 8, 2]).forward(rows)


def test_a_rewrite_that_restores_the_old_mtime_is_still_found(tmp_path):
    X, y = _data()
    path = _saved(tmp_path, X)

    def rewrite():                                   # rsync --inplace -t, tar, utime
        st = os.stat(path)
        with open(path, "r+b") as f:
            f.seek(-64, os.SEEK_END)
            f.write(np.ones(16, np.float32).tobytes())
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataFileChanged, match="it was modified"):
        nf.Network([16, 8, 2]).fit(path, y, epochs=3, verbose=False,
                                   callbacks=[_AfterEpoch(rewrite)])


def test_failed_fits_leave_no_file_open(tmp_path):
    import gc
    X, y = _data(n=50)
    path = _saved(tmp_path, X)
    net = nf.Network([16, 8, 2])
    fds = lambda: len(os.listdir("/proc/self/fd"))              # noqa: E731
    gc.collect()
    gc.disable()
    try:
        before = fds()
        for _ in range(30):
            with pytest.raises(ValueError, match="y has 10 rows"):
                net.fit(path, y[:10], epochs=1, verbose=False)
            with pytest.raises(DataFileChanged):
                net.fit(path, y, epochs=2, verbose=False,
                        callbacks=[_AfterEpoch(lambda: os.truncate(path, 200))])
            np.save(path, X)
        assert fds() == before
    finally:
        gc.enable()


def test_a_socket_path_is_refused_as_not_a_regular_file(tmp_path):
    import socket
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "x.npy"))
        with pytest.raises(ValueError, match="is not a regular file"):
            nf.Network([4, 3, 2]).predict(tmp_path / "x.npy")
    finally:
        sock.close()
