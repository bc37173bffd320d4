"""Model files against hostile targets and hostile files: save never replaces a FIFO or
a device, leaves no temporary files behind when terminated, and load refuses special
files, bombs and malformed members from the archive's directory and the .npy headers,
before it reads or allocates."""
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import nnfast as nf

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX special files and signals")


@pytest.fixture
def net():
    return nf.Network([4, 6, 3], seed=0)


@posix
def test_save_onto_a_fifo_is_refused_and_the_fifo_kept(tmp_path, net):
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="exists and is not a regular file"):
        net.save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


@posix
def test_save_onto_a_device_or_a_link_to_one_is_refused(tmp_path, net):
    with pytest.raises(ValueError, match="not a regular file"):
        net.save("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    link = tmp_path / "null.npz"
    link.symlink_to("/dev/null")
    with pytest.raises(ValueError, match="not a regular file"):
        net.save(link)
    with pytest.raises(ValueError, match="not a regular file"):
        net.to_onnx(link)


def test_save_replaces_a_regular_file_and_leaves_no_temporary(tmp_path, net):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    net.save(path)
    net.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    np.testing.assert_array_equal(nf.load(path).flat_params, net.flat_params)


def test_a_temporary_left_by_a_killed_save_is_reused(tmp_path, net):
    path = tmp_path / "m.npz"
    leftover = tmp_path / ".nnfast-m.npz.tmp"      # what SIGKILL mid-save leaves
    leftover.write_bytes(b"x" * 100_000)
    net.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    nf.load(path)


@posix
def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path, net):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / ".nnfast-m.npz.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        net.save(tmp_path / "m.npz")
    assert victim.read_bytes() == b"keep me"


TERM_CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from nnfast._files import write_atomically
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # as in a fresh process

    def write(f):
        f.write(b"x" * 1_000_000)
        os.kill(os.getpid(), signal.SIGTERM)      # mid-write
        f.write(b"y" * 1_000_000)

    write_atomically(sys.argv[1], write, "save")
    print("survived")
""")


@posix
def test_sigterm_during_save_leaves_the_old_file_and_no_temporary(tmp_path, net):
    path = tmp_path / "m.npz"
    net.save(path)
    before = path.read_bytes()
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", TERM_CHILD, str(path)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == -signal.SIGTERM, proc.stderr
        assert "survived" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert path.read_bytes() == before


@posix
def test_load_of_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-c", f"import nnfast as nf; nf.load({str(fifo)!r})"],
                          capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)                 # blocking would time out
    assert "is not a regular file" in proc.stderr


@posix
def test_load_of_a_device_is_refused():
    with pytest.raises(ValueError, match="not a regular file"):
        nf.load("/dev/zero")


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def test_a_member_that_is_not_npy_is_refused(tmp_path):
    for name in ("format", "input_scale", "dropout", "extra.npy"):
        path = _zip(tmp_path / f"{name}.npz", {name: b"raw bytes", "sizes.npy": _npy([2, 1])})
        with pytest.raises(ValueError, match=rf"not an nnfast model file \(unexpected or "
                                             rf"repeated member '{name}'"):
            nf.load(path)


def test_a_repeated_member_is_refused(tmp_path):
    path = tmp_path / "dup.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("sizes.npy", _npy([2, 1]))
        with pytest.warns(UserWarning):
            z.writestr("sizes.npy", _npy([3, 1]))
    with pytest.raises(ValueError, match="repeated member 'sizes.npy'"):
        nf.load(path)


def test_a_zip_bomb_is_refused_from_the_directory(tmp_path):
    big = np.zeros(64 * 2**20 // 4, np.float32)          # 64 MiB of zeros deflate to ~64 KiB
    path = _zip(tmp_path / "bomb.npz", {"params.npy": _npy(big), "sizes.npy": _npy([4, 3])},
                zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 2**20
    import tracemalloc
    tracemalloc.start()
    with pytest.raises(ValueError, match="would inflate"):
        nf.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20


def test_a_header_that_disagrees_with_the_directory_is_refused(tmp_path, net):
    data = _npy(np.zeros(10, np.float64))
    header = data[:-80]                                   # claims 10 entries, holds 0
    path = _zip(tmp_path / "short.npz", {"params.npy": header, "sizes.npy": _npy([4, 3])})
    with pytest.raises(ValueError, match="member 'params' cannot be read: the archive "
                                         "declares"):
        nf.load(path)


def test_a_model_declaring_too_many_layers_is_refused_before_it_is_built(tmp_path):
    sizes = np.ones(200_000, np.int64)
    path = _zip(tmp_path / "deep.npz", {"sizes.npy": _npy(sizes),
                                         "params.npy": _npy(np.zeros(399_998, np.float32))})
    with pytest.raises(ValueError, match="member 'sizes' cannot be read: shape"):
        nf.load(path)
    with pytest.raises(ValueError, match="at most 4097"):
        nf.Network([1] * 5000)


def test_object_and_odd_dtypes_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, params=np.array([print], object))
    with pytest.raises(ValueError, match="Python objects") as info:
        nf.load(path)
    assert "allow_pickle" not in str(info.value)
    path = _zip(tmp_path / "c.npz", {"params.npy": _npy(np.zeros(3, np.complex64)),
                                      "sizes.npy": _npy([2, 1])})
    with pytest.raises(ValueError, match="dtype complex64 is not one of a model file's"):
        nf.load(path)


def test_garbage_gets_no_allow_pickle_hint(tmp_path):
    for name, data in (("g.npz", os.urandom(3000)), ("p.npz", b"\x80\x04K\x01."),
                       ("z.npz", b"PK\x05\x06" + bytes(18))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not an nnfast model file") as info:
            nf.load(path)
        assert "allow_pickle" not in str(info.value)


@posix
def test_a_sparse_file_of_4_gib_is_refused_without_reading_it(tmp_path):
    for name, head in (("sparse.npz", b"PK\x03\x04"), ("sparse.npy", _npy(np.zeros(1))[:128])):
        path = tmp_path / name
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(4 * 2**30)
        import tracemalloc
        tracemalloc.start()
        with pytest.raises(ValueError, match="not an nnfast model|single array"):
            nf.load(path)
        assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
        tracemalloc.stop()


def test_a_truncated_member_is_refused(tmp_path, net):
    path = tmp_path / "m.npz"
    net.save(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        (tmp_path / "t.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not an nnfast model file"):
            nf.load(tmp_path / "t.npz")


def _write_idx(path, arr, code, gz=True):
    import gzip
    import struct
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with (gzip.open(path, "wb", compresslevel=1) if gz else open(path, "wb")) as f:
        f.write(header + arr.tobytes())
    return path


@pytest.mark.parametrize("code, dtype", [(0x08, np.uint8), (0x0D, ">f4"), (0x0E, ">f8")])
@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_file_is_read_with_the_peak_memory_of_its_array(tmp_path, code, dtype, gz):
    from nnfast.datasets import load_idx
    a = (np.arange(2**25 // np.dtype(dtype).itemsize) % 251).astype(dtype).reshape(-1, 32)
    path = _write_idx(tmp_path / "x.idx", a, code, gz)
    import tracemalloc
    tracemalloc.start()
    b = load_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(a, b)
    assert b.dtype.isnative
    assert peak < 1.5 * a.nbytes, peak / a.nbytes          # joining and converting: 3x


def test_a_gzip_idx_declaring_more_than_deflate_can_hold_is_refused_at_once(tmp_path):
    from nnfast.datasets import load_idx
    import gzip
    import struct
    path = tmp_path / "lie.idx.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2**31) + b"x"))
    with pytest.raises(ValueError, match="holds at most"):
        load_idx(path)


def test_float_idx_labels_are_refused_not_truncated(tmp_path):
    from nnfast.datasets import load_mnist_format
    rng = np.random.default_rng(0)
    for part, n in (("train", 8), ("t10k", 4)):
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz",
                   rng.integers(0, 255, (n, 2, 2)).astype(np.uint8), 0x08)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz",
                   np.resize(np.array([2.9, -0.7]), n).astype(">f4"), 0x0D)
    with pytest.raises(ValueError, match=r"class labels must be integers >= 0, got 2.9"):
        load_mnist_format([tmp_path])
