"""Readers for IDX files (the MNIST format) and the Fashion-MNIST data set."""
import gzip
import os
import zlib

import numpy as np

from . import _validate

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}
_READ_CHUNK = 1 << 22
DEFAULT_DIRS = ("/usr/share/datasets/fashion-mnist",)
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


_DEFLATE_RATIO = 1032       # the most a deflate stream can expand (its maximal ratio)


def _open(path):
    """(file object, the most data bytes it can yield): a gzip stream by its magic,
    else the raw file."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rb"), size * _DEFLATE_RATIO
    return open(path, "rb"), size


def load_idx(path):
    """Read an IDX file (gzip-compressed or raw) into an array.

    The header (magic 0x0000, dtype code, rank, big-endian uint32 sizes) is checked
    against the data before the array is built: a header that declares more data than
    the file can hold (its size, or for gzip the most a deflate stream of that size can
    expand to) is refused without allocating. The data is read into the array in
    chunks, so the peak memory is the array and one chunk.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray of the file's shape, dtype uint8 / int8 / int16 / int32 / float32 / float64
    (native byte order)
    """
    path = os.fspath(path)
    f, most = _open(path)                   # a missing file raises FileNotFoundError
    with f:
        try:
            return _read_idx(f, path, most)
        except (OSError, EOFError, zlib.error) as exc:     # damaged compressed data
            raise ValueError(f"load_idx: {path}: cannot read: {exc}") from None


def _read_idx(f, path, most):
    """Parse the header, check its size against `most`, then read exactly the declared
    data (and one byte to show there is no more) into the array."""
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise ValueError(f"load_idx: {path} is not an IDX file (bad magic number "
                         f"{head.hex() or 'empty'})")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"load_idx: {path}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"load_idx: {path}: rank 0 is not supported")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) != 4 * ndim:
        raise ValueError(f"load_idx: {path}: truncated header")
    shape = tuple(int(d) for d in np.frombuffer(dims_raw, ">u4"))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    declares = f"header declares shape {shape} ({expected} bytes of data)"
    if expected > most - 4 - 4 * ndim:     # a raw file's size is exact, gzip's a bound
        holds = "at most" if isinstance(f, gzip.GzipFile) else "only"
        raise ValueError(f"load_idx: {path}: {declares} but the file holds {holds} "
                         f"{max(most - 4 - 4 * ndim, 0)}")
    data = np.empty(expected, np.uint8)
    got = 0
    while got < expected:
        n = f.readinto(memoryview(data)[got:got + _READ_CHUNK])
        if not n:
            break
        got += n
    if got < expected:
        raise ValueError(f"load_idx: {path}: {declares} but the file holds only {got}")
    if f.read(1):
        raise ValueError(f"load_idx: {path}: {declares} but the file holds more")
    out = data.view(dtype)
    if not dtype.isnative:                  # big-endian in the file: swapped in place
        out = out.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return out.reshape(shape)


def class_labels(y, name="y"):
    """Class labels as int64: integers, or floats of integral value, all >= 0.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
    name : str, names the labels in errors (a file name)

    Returns
    -------
    ndarray of int64 of shape (n_samples,)

    Raises
    ------
    ValueError naming the first label that is not an integer >= 0 (2.5, nan, -1) and
    its position; TypeError for non-numeric labels.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name}: class labels must be integers >= 0, got {y[i].item()!r} "
                             f"(label {i})")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise ValueError(f"{name}: class labels must be integers >= 0, got {y[i].item()!r} "
                         f"(label {i})")
    return y.astype(np.int64)


def _find(name, dirs):
    for d in dirs:
        for candidate in (os.path.join(d, name + ".gz"), os.path.join(d, name)):
            if os.path.isfile(candidate):
                return candidate
    return None


def load_mnist_format(dirs, raw=False):
    """(X_train, y_train), (X_test, y_test) from the four MNIST-named IDX files in the
    first of `dirs` that has them; X float32 in [0, 1] of shape (n, rows * cols), or with
    `raw` the uint8 pixels (for a network with input_scale=1/255)."""
    dirs = [os.fspath(d) for d in dirs]
    found = {}
    for d in dirs:
        found = {k: _find(v, [d]) for k, v in FILES.items()}
        if all(found.values()):
            break
    else:
        names = ", ".join(v + "[.gz]" for v in FILES.values())
        raise FileNotFoundError(
            f"MNIST-format IDX files ({names}) not found; looked in: {', '.join(dirs)}. "
            "For Fashion-MNIST: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu); "
            "or put the IDX files in a directory and pass it (root=..., --data DIR) or "
            "set $NNFAST_DATA.")
    out = []
    for part in ("train", "test"):
        images = load_idx(found[f"{part}_images"])
        labels = load_idx(found[f"{part}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"{found[part + '_images']}: expected images (n, rows, cols) "
                             f"and labels (n,), got {images.shape} and {labels.shape}")
        X = images.reshape(images.shape[0], -1)
        if not raw:
            X = X.astype(np.float32)
            X /= 255.0
        out.append((X, class_labels(labels, found[f"{part}_labels"])))
    return tuple(out)


def load_fashion_mnist(root=None):
    """Fashion-MNIST: (X_train, y_train), (X_test, y_test).

    X is float32 in [0, 1] of shape (n, 784), y int64 in [0, 10). Looks in `root`, then
    $NNFAST_DATA, then /usr/share/datasets/fashion-mnist (Debian package
    dataset-fashion-mnist), for train-images-idx3-ubyte[.gz] and its three siblings.
    """
    dirs = [d for d in (root, os.environ.get("NNFAST_DATA")) if d] + list(DEFAULT_DIRS)
    return load_mnist_format(dirs)


NPY_FILES = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy")


def load_npy_dir(root):
    """(X_train, y_train), (X_test, y_test) from x_train.npy, y_train.npy, x_test.npy and
    y_test.npy in `root` (the names of Keras' mnist.npz).

    The X files are opened with mmap_mode="r" and stay on disk: pass them to `fit` and
    `predict` as they are, which read them a mini-batch at a time (uint8 images with
    ``Network(..., input_scale=1/255)``). X of shape (n, ...) (images are flattened),
    uint8, float32 or float64; y class labels (n,), integers (or integral floats) >= 0,
    read into memory as int64 (`class_labels`).
    """
    root = os.fspath(root)
    missing = [f for f in NPY_FILES if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise FileNotFoundError(f"{root}: missing {', '.join(missing)} (a .npy data set is "
                                f"the four files {', '.join(NPY_FILES)})")
    out = []
    for part in ("train", "test"):
        X = _validate.open_npy(os.path.join(root, f"x_{part}.npy"), f"x_{part}.npy")
        y = _validate.read_array(os.path.join(root, f"y_{part}.npy"), f"y_{part}.npy")
        if X.ndim < 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ValueError(f"{root}: x_{part}.npy must hold samples (n, ...) and "
                             f"y_{part}.npy labels (n,), got {X.shape} and {y.shape}")
        y = class_labels(y, os.path.join(root, f"y_{part}.npy"))
        if not X.flags.c_contiguous:
            raise ValueError(f"{root}: x_{part}.npy is not C-contiguous")
        out.append((X.reshape(X.shape[0], -1), y))
    return tuple(out)
