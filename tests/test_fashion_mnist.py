"""IDX reading (on small files written here) and Fashion-MNIST end to end."""
import gzip
import os
import struct
import tracemalloc

import numpy as np
import pytest

import nnfast as nf
from nnfast import datasets

FASHION_DIRS = [d for d in (os.environ.get("NNFAST_DATA"),) if d] + list(datasets.DEFAULT_DIRS)
HAVE_FASHION = any(os.path.isfile(os.path.join(d, "train-images-idx3-ubyte.gz"))
                   or os.path.isfile(os.path.join(d, "train-images-idx3-ubyte"))
                   for d in FASHION_DIRS)
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION,
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr, big_endian_dtype=None):
    """The IDX encoding of `arr` (header + big-endian data)."""
    dt = np.dtype(big_endian_dtype or arr.dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(">")
    head = bytes([0, 0, IDX_CODES[dt], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=dt).tobytes()


def write(path, data, gz=False):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


# ------------------------------------------------------------------ load_idx

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype,shape", [
    (np.uint8, (5, 3, 2)), (np.uint8, (7,)), (np.float32, (4, 6)), (np.float32, (2, 3, 4)),
    (np.int8, (3, 3)), (np.int16, (4,)), (np.int32, (2, 5)), (np.float64, (3, 2))])
def test_load_idx_roundtrip(tmp_path, gz, dtype, shape):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        arr = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    path = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(arr), gz)
    out = datasets.load_idx(path)
    assert out.shape == shape
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert datasets.load_idx(str(path)).shape == shape      # str works as well as Path


def test_load_idx_float32_is_big_endian_on_disk(tmp_path):
    """The file stores >f4: a known value has known bytes, and reads back right."""
    arr = np.array([1.0, -2.5, 3.25], np.float32)
    data = idx_bytes(arr)
    assert data[:4] == b"\x00\x00\x0d\x01"
    assert data[8:12] == struct.pack(">f", 1.0)
    out = datasets.load_idx(write(tmp_path / "f.idx", data))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.float32 and out.dtype.isnative


def test_load_idx_known_uint8_bytes(tmp_path):
    data = b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + bytes([0, 1, 2, 253, 254, 255])
    out = datasets.load_idx(write(tmp_path / "u.idx", data))
    np.testing.assert_array_equal(out, [[0, 1, 2], [253, 254, 255]])
    assert out.dtype == np.uint8


def test_load_idx_result_is_writable_copy(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = datasets.load_idx(write(tmp_path / "w.idx", idx_bytes(arr)))
    out[0, 0] = 9                                        # a writable, owned array
    assert out[0, 0] == 9


def _good():
    return idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


BAD_IDX = [
    ("bad_magic_first_byte", b"\x01" + _good()[1:], r"magic"),
    ("bad_magic_second_byte", b"\x00\x07" + _good()[2:], r"magic"),
    ("text_file", b"hello world, not an idx file at all", r"magic"),
    ("empty", b"", r"magic|empty"),
    ("short_header", b"\x00\x00", r"magic"),
    ("unknown_dtype", b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", r"dtype"),
    ("rank_zero", b"\x00\x00\x08\x00", r"rank"),
    ("truncated_dims", b"\x00\x00\x08\x03" + struct.pack(">I", 2), r"truncated"),
    ("truncated_data", _good()[:-5], r"only|holds"),
    ("no_data", _good()[:4 + 12], r"only|holds"),
    ("extra_data", _good() + b"\x00\x01", r"more"),
    ("float_size_mismatch", b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"\x00" * 10,
     r"only|holds"),
]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("data,match", [c[1:] for c in BAD_IDX], ids=[c[0] for c in BAD_IDX])
def test_load_idx_errors(tmp_path, data, match, gz):
    path = write(tmp_path / "bad.idx", data, gz)
    with pytest.raises(ValueError, match=match) as info:
        datasets.load_idx(path)
    assert "bad.idx" in str(info.value)                  # names the file


def test_load_idx_huge_header_refused_without_allocating(tmp_path):
    # header declares 4e9 x 4e9 bytes; the file holds 10
    data = b"\x00\x00\x08\x02" + struct.pack(">II", 4_000_000_000, 4_000_000_000) + b"x" * 10
    path = write(tmp_path / "huge.idx", data)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"only|holds"):
            datasets.load_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak} bytes for a 26-byte file"


def _big_gz():
    arr = (np.arange(200_000) % 251).astype(np.uint8).reshape(2000, 100)
    return gzip.compress(idx_bytes(arr))


@pytest.mark.parametrize("how", ["cut_in_data", "flipped_byte", "bad_crc"])
def test_load_idx_corrupt_gzip_is_a_clear_error(tmp_path, how):
    """A damaged .gz (cut in the middle of the data, a flipped byte, a wrong CRC in the
    trailer) is refused the way a damaged header is: ValueError naming the file."""
    good = _big_gz()
    if how == "cut_in_data":
        data = good[:len(good) // 2]
    else:
        b = bytearray(good)
        b[len(b) // 2 if how == "flipped_byte" else -8] ^= 0xFF     # trailer: CRC32, ISIZE
        data = bytes(b)
    path = write(tmp_path / "damaged.idx.gz", data)
    with pytest.raises(ValueError, match="damaged.idx.gz"):
        datasets.load_idx(path)


def test_load_idx_gzip_cut_in_header(tmp_path):
    path = write(tmp_path / "cut.idx.gz", _big_gz()[:12])
    with pytest.raises(ValueError, match="cut.idx.gz"):
        datasets.load_idx(path)


def test_load_idx_missing_file(tmp_path):
    with pytest.raises(OSError):
        datasets.load_idx(tmp_path / "nope.idx")


# ------------------------------------------------------------------ load_fashion_mnist

def write_fake_mnist(folder, n_train=12, n_test=5, gz=True, seed=0, rows=28, cols=28):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, rows, cols), endpoint=False).astype(np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, n).astype(np.uint8)
        parts[part] = (images, labels)
    names = datasets.FILES
    for key, (part, what) in {"train_images": ("train", 0), "train_labels": ("train", 1),
                              "test_images": ("test", 0), "test_labels": ("test", 1)}.items():
        name = names[key] + (".gz" if gz else "")
        write(folder / name, idx_bytes(parts[part][what]), gz)
    return parts


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """Point every place load_fashion_mnist looks at empty directories."""
    empty_default = tmp_path / "empty_default"
    empty_env = tmp_path / "empty_env"
    empty_default.mkdir()
    empty_env.mkdir()
    monkeypatch.setattr(datasets, "DEFAULT_DIRS", (str(empty_default),))
    monkeypatch.setenv("NNFAST_DATA", str(empty_env))
    return empty_default, empty_env


def test_load_fashion_mnist_missing_files_clear_error(tmp_path, no_default_data):
    root = tmp_path / "empty_root"
    root.mkdir()
    with pytest.raises((FileNotFoundError, OSError, ValueError)) as info:
        datasets.load_fashion_mnist(root=str(root))
    msg = str(info.value)
    for d in (root, *no_default_data):                  # every place it looked
        assert str(d) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "NNFAST_DATA" in msg and "root" in msg
    assert "train-images-idx3-ubyte" in msg


def test_load_fashion_mnist_missing_without_root(no_default_data, monkeypatch):
    monkeypatch.delenv("NNFAST_DATA")
    with pytest.raises((FileNotFoundError, OSError, ValueError)) as info:
        datasets.load_fashion_mnist()
    assert str(no_default_data[0]) in str(info.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_fashion_mnist_from_root(tmp_path, no_default_data, gz):
    parts = write_fake_mnist(tmp_path / "fm", gz=gz)
    (Xtr, ytr), (Xte, yte) = datasets.load_fashion_mnist(root=str(tmp_path / "fm"))
    assert Xtr.shape == (12, 784) and Xte.shape == (5, 784)
    assert Xtr.dtype == np.float32 and Xte.dtype == np.float32
    assert ytr.dtype == np.int64 and yte.dtype == np.int64
    assert Xtr.min() == 0.0 and Xtr.max() == 1.0
    np.testing.assert_allclose(Xtr, parts["train"][0].reshape(12, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ytr, parts["train"][1])
    np.testing.assert_array_equal(yte, parts["test"][1])
    assert Xtr.flags.c_contiguous


def test_load_fashion_mnist_search_order(tmp_path, no_default_data, monkeypatch):
    empty_default, env_dir = no_default_data
    write_fake_mnist(env_dir, n_train=3, n_test=2, seed=1)
    write_fake_mnist(empty_default, n_train=4, n_test=2, seed=2)
    # $NNFAST_DATA before the default directories
    (Xtr, _), _ = datasets.load_fashion_mnist()
    assert Xtr.shape[0] == 3
    # root before $NNFAST_DATA
    write_fake_mnist(tmp_path / "root", n_train=5, n_test=2, seed=3)
    (Xtr, _), _ = datasets.load_fashion_mnist(root=str(tmp_path / "root"))
    assert Xtr.shape[0] == 5
    # a root with only some of the files is passed over
    partial = tmp_path / "partial"
    partial.mkdir()
    write(partial / (datasets.FILES["train_images"] + ".gz"),
          idx_bytes(np.zeros((1, 28, 28), np.uint8)), gz=True)
    (Xtr, _), _ = datasets.load_fashion_mnist(root=str(partial))
    assert Xtr.shape[0] == 3
    # without $NNFAST_DATA the default directory is used
    monkeypatch.delenv("NNFAST_DATA")
    (Xtr, _), _ = datasets.load_fashion_mnist()
    assert Xtr.shape[0] == 4


def test_load_fashion_mnist_count_mismatch(tmp_path, no_default_data):
    root = tmp_path / "mm"
    write_fake_mnist(root)
    write(root / (datasets.FILES["train_labels"] + ".gz"),
          idx_bytes(np.zeros(11, np.uint8)), gz=True)     # 11 labels for 12 images
    with pytest.raises(ValueError):
        datasets.load_fashion_mnist(root=str(root))


def test_load_fashion_mnist_corrupt_file(tmp_path, no_default_data):
    root = tmp_path / "bad"
    write_fake_mnist(root)
    write(root / (datasets.FILES["test_images"] + ".gz"), b"\x01\x02\x03\x04junk", gz=True)
    with pytest.raises(ValueError, match="magic"):
        datasets.load_fashion_mnist(root=str(root))


# ------------------------------------------------------------------ the real data set

@pytest.fixture(scope="module")
def fashion():
    return datasets.load_fashion_mnist()


@needs_fashion
def test_real_fashion_mnist_shapes_and_values(fashion):
    (Xtr, ytr), (Xte, yte) = fashion
    assert Xtr.shape == (60000, 784) and Xte.shape == (10000, 784)
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert Xtr.dtype == np.float32 and Xte.dtype == np.float32
    assert ytr.dtype == np.int64 and yte.dtype == np.int64
    assert Xtr.min() == 0.0 and Xtr.max() == 1.0
    assert Xte.min() == 0.0 and Xte.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ytr), [6000] * 10)   # balanced classes
    np.testing.assert_array_equal(np.bincount(yte), [1000] * 10)
    sample = Xtr[:100] * 255
    np.testing.assert_allclose(sample, np.round(sample), atol=1e-3)  # multiples of 1/255
    assert 0.2 < Xtr.mean() < 0.4                                    # ~0.286 for F-MNIST


@needs_fashion
def test_real_fashion_mnist_trains_to_88_percent(fashion):
    (Xtr, ytr), (Xte, yte) = fashion
    net = nf.Network([784, 256, 128, 10], hidden="relu", output="softmax",
                     dtype=np.float32, seed=0)
    opt = nf.Adam(lr=1e-3)                       # one object: its moments carry over
    accs = []
    for _ in range(10):
        net.fit(Xtr, ytr, epochs=1, batch_size=128, optimizer=opt, verbose=False)
        accs.append(net.evaluate(Xte, yte)["accuracy"])
        if accs[-1] >= 0.88:
            break
    assert max(accs) >= 0.88, f"test accuracy per epoch: {accs}"
    assert np.mean(net.predict(Xte) == yte) == pytest.approx(accs[-1])
