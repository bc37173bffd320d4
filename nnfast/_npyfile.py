"""Rows of a .npy file on disk, read with pread: the out-of-core input of fit / predict.

A path given to `fit`, `predict` or `evaluate` becomes an NpyFile. Its rows are read with
plain reads of the open file (`pread`), never through a memory map: a mapped file that
another process truncates or rewrites kills the reader with SIGBUS, while a short read is
an ordinary error. nnfast reports one as `DataFileChanged` (an OSError) naming the file.
The compiled step reads its mini-batches the same way (TrainStep.bind_file); `read`
serves the contiguous chunks of prediction, evaluation and the finiteness check.

Measured reason for pread over a mapping (2-core Zen 4, a 60,000 x 784 file in the page
cache): a shuffled batch of 32 rows costs ~1 us more per row (16 -> 45 us per batch for
float32 rows, 5 -> 31 us for uint8), about 5% of a 784-256-128-10 training step; in
exchange no change to the file can crash the process.
"""
import math
import mmap
import os
import stat

import numpy as np

STREAM_DTYPES = ("uint8", "float32", "float64")


class DataFileChanged(OSError):
    """A data file nnfast is reading changed under it (truncated, rewritten, replaced)."""


class _Handle:
    """The open file of one or more NpyFile views: closed when the last one goes."""

    def __init__(self, fd, path, name, st):
        self.fd, self.path, self.name = fd, path, name
        # ctime too: a rewrite that sets the old mtime back (rsync -t, tar) still moves it
        self.size, self.mtime_ns, self.ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def changed(self, what):
        return DataFileChanged(f"{self.name}: {self.path} changed while nnfast was reading "
                               f"it ({what}); keep a data file unchanged during fit / "
                               "predict, or write a new file and pass that")

    def check_unchanged(self):
        st = os.fstat(self.fd)
        # a file no longer linked (replaced by a rename, deleted) cannot be rewritten by
        # name: its ctime moved with the unlink, not with its data
        ctime_moved = st.st_nlink > 0 and st.st_ctime_ns != self.ctime_ns
        if st.st_size != self.size:
            raise self.changed(f"its size went from {self.size} to {st.st_size} bytes")
        if st.st_mtime_ns != self.mtime_ns or ctime_moved:
            raise self.changed("it was modified: its modification or change time moved")

    def close(self):
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            os.close(fd)

    __del__ = close


class NpyFile:
    """Rows [start, start + n) of the 2-D (n_total, n_features) array of a .npy file.

    Attributes: shape (n, n_features), dtype (uint8, float32 or float64, native byte
    order), ndim 2, path, fd (the open file), offset (the file position of this view's
    first row) and row_bytes. Slicing rows (``X[a:b]``) gives a view of the same open
    file; ``read`` gives the data.
    """

    ndim = 2

    def __init__(self, handle, offset, n, n_features, dtype):
        self._handle = handle
        self.offset, self.dtype = offset, dtype
        self.shape = (n, n_features)
        self.file_shape, self.fortran = self.shape, False    # open: as the header says
        self.row_bytes = n_features * dtype.itemsize

    @classmethod
    def open(cls, path, name="X"):
        """The whole array of the .npy file at `path`, flattened to (n, features)
        (file_shape and fortran: as its header says; the caller checks them and dtype).

        FileNotFoundError when nothing is there; ValueError when it is not a regular file,
        not a .npy file (an .npz archive, pickled Python objects, a damaged header), or
        shorter than its header declares."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: {path} does not exist (expected a .npy file)")
        if not stat.S_ISREG(os.stat(path).st_mode):    # a socket cannot even be opened
            raise ValueError(f"{name}: {path} is not a regular file (a directory, FIFO, "
                             "device or socket); expected a .npy file")
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below too,
        # should the path change between the two checks)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{name}: {path} is not a regular file (a directory, FIFO, "
                                 "device or socket); expected a .npy file")
            os.set_blocking(fd, True)
            shape, fortran, dtype, offset = _read_header(fd, path, name)
        except BaseException:
            os.close(fd)
            raise
        if any(isinstance(d, bool) or d < 0 for d in shape):
            os.close(fd)
            raise ValueError(f"{name}: {path} is not a readable .npy file: its header "
                             f"declares the shape {shape}")
        n = shape[0] if shape else 1
        n_features = math.prod(shape[1:])
        need = offset + n * n_features * dtype.itemsize
        if st.st_size < need:
            os.close(fd)
            raise ValueError(f"{name}: {path} is truncated: its header declares shape "
                             f"{shape} of {dtype} ({need} bytes with the header), but the "
                             f"file has {st.st_size} bytes")
        X = cls(_Handle(fd, path, name, st), offset, n, n_features, dtype)
        X.file_shape, X.fortran = shape, fortran
        return X

    @property
    def path(self):
        return self._handle.path

    @property
    def fd(self):
        return self._handle.fd

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"NpyFile({self.path!r}, rows {self.shape[0]}, {self.dtype})"

    def __getitem__(self, key):
        """Rows key (a slice with step 1) as a view of the same file."""
        if not isinstance(key, slice):
            raise TypeError(f"NpyFile: index rows with a slice, got {type(key).__name__}")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise ValueError("NpyFile: row slices must have step 1")
        n = max(0, stop - start)
        return NpyFile(self._handle, self.offset + start * self.row_bytes, n, self.shape[1],
                       self.dtype)

    def read(self, start=0, stop=None, out=None):
        """Rows start:stop as an array (n, n_features) of the file's dtype (into `out`,
        C-contiguous of that shape and dtype, when given). DataFileChanged when the file
        no longer holds them."""
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        n = max(0, stop - start)
        if out is None:
            out = np.empty((n, self.shape[1]), self.dtype)
        buf = memoryview(out).cast("B")
        pos, done = self.offset + start * self.row_bytes, 0
        while done < buf.nbytes:
            got = os.preadv(self.fd, [buf[done:]], pos + done)
            if got == 0:
                raise self._handle.changed(f"it ends before row {start + done // self.row_bytes}"
                                           f" of the {self.shape[0]} rows read")
            done += got
        return out

    def check_unchanged(self):
        """DataFileChanged when the file's size, modification or change time is not what
        it was when it was opened (a chmod counts as a change too)."""
        self._handle.check_unchanged()

    def close(self):
        """Close the file (of every view of it); reads then fail."""
        self._handle.close()

    def changed(self, what):
        """The DataFileChanged error for this file, saying `what`."""
        return self._handle.changed(what)


def read_array(path, name="y"):
    """The whole array of the .npy file at `path`, read into memory (any dtype but
    Python objects, as its header says: shape, order, byte order), with the checks of
    NpyFile.open: a FIFO never blocks, a short file is refused."""
    rows = NpyFile.open(path, name)
    try:
        flat = rows.read().reshape(-1)
    finally:
        rows.close()
    return flat.reshape(rows.file_shape, order="F" if rows.fortran else "C")


def file_of_memmap(X, name="X"):
    """An NpyFile of the same data as the np.memmap X, or None: X must be a whole .npy
    file's array as mapped (reshaped at most, C order, not copy-on-write: mode "c" has
    private changes a read of the file would not see)."""
    base = X
    while isinstance(base.base, np.memmap):
        base = base.base
    if (not isinstance(base.base, mmap.mmap) or getattr(X, "mode", "c") == "c"
            or not X.filename or X.ndim < 1 or not X.flags.c_contiguous
            or X.ctypes.data != base.ctypes.data or X.nbytes != base.nbytes):
        return None
    try:
        rows = NpyFile.open(X.filename, name)
    except (OSError, ValueError):           # not a .npy file (a raw memmap), gone, ...
        return None
    if (rows.offset != X.offset or rows.fortran or rows.dtype != X.dtype
            or rows.shape[0] != X.shape[0] or rows.shape[0] * rows.shape[1] != X.size):
        rows.close()
        return None
    return rows


def npy_problem(exc):
    """Why reading a .npy file failed, in nnfast's words: NumPy's hint to pass
    allow_pickle=True would be wrong advice (nnfast never unpickles)."""
    if "pickle" in str(exc) or "Python objects" in str(exc):
        return "it holds Python objects (pickled data), not an array of numbers"
    return str(exc)


def _read_header(fd, path, name):
    """(shape, fortran_order, dtype, data offset) of the .npy file open as fd."""
    if os.pread(fd, 4, 0) == b"PK\x03\x04":
        raise ValueError(f"{name}: {path} is an .npz archive; expected one .npy array")
    with os.fdopen(fd, "rb", closefd=False) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject:
                raise ValueError("Python objects")
        except Exception as exc:                # not .npy, damaged header, Python objects
            raise ValueError(f"{name}: {path} is not a readable .npy file: "
                             f"{npy_problem(exc)}") from None
        return shape, fortran, dtype, f.tell()
