"""Sparse input (scipy.sparse): the checks, the one conversion to CSR, and row slices.

A sparse X is never densified. It is checked and brought to CSR once here; the compiled
first layer then reads the rows of each mini-batch straight from the CSR arrays
(csrc/_vec.h: the forward product and the scatter-add of the weight gradient).

What is checked, before any compiled code (scipy's own included) reads an index: the
structure (indptr starts at 0, never decreases and ends inside indices and data; every
column index in [0, n_features)), the shape, and that every stored value is finite in
the network's dtype (times input_scale). Duplicate and unsorted column indices are fine
as they are: every stored entry adds its own term, exactly as scipy's toarray() sums
duplicates, so neither is copied to sort or merge them.

Conversions, each at most once: CSC (and COO, LIL, DOK, BSR, DIA) to CSR with scipy;
data of another dtype (integer, bool, the other float) to the network's dtype; index
arrays of a type other than int32 / int64, or of two different types, to int64. CSR data
and int32 / int64 indices already in the right dtype are used as they are (an np.memmap
too: they are only read).

scipy is never imported here: a scipy.sparse object can only exist once scipy.sparse
has been imported, so `is_sparse` looks it up in sys.modules.
"""
import sys

import numpy as np

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def is_sparse(X):
    """True when X is a scipy.sparse matrix or array (scipy is not imported for this)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


class CSRInput:
    """A checked sparse input in CSR form, as the network reads it.

    Attributes
    ----------
    data : ndarray of shape (nnz,), the network's dtype
    indices : ndarray of shape (nnz,), int32 or int64 (the same type as indptr)
    indptr : ndarray of shape (n_samples + 1,); indptr[0] == 0
    shape : (n_samples, n_features)

    All three arrays are C-contiguous and only ever read. ``X[a:b]`` (a slice of rows,
    step 1) is a CSRInput that shares data and indices with X.
    """

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, data, indices, indptr, n_features):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (indptr.shape[0] - 1, int(n_features))

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self):
        return int(self.indptr[-1])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            raise TypeError(f"CSRInput: only slices of rows are supported, got "
                            f"{type(rows).__name__}")
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise TypeError(f"CSRInput: only slices of rows with step 1, got step {step}")
        stop = max(start, stop)
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        return CSRInput(self.data[lo:hi], self.indices[lo:hi],
                        self.indptr[start:stop + 1] - self.indptr[start], self.shape[1])

    def __repr__(self):
        return (f"CSRInput(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype.name}, "
                f"index dtype={self.indices.dtype.name})")


def _kind(X):
    """'scipy.sparse <format> <matrix|array>' for messages."""
    fmt = getattr(X, "format", "?")
    return f"scipy.sparse {fmt} {'matrix' if type(X).__name__.endswith('matrix') else 'array'}"


def _check_index_array(arr, what, name):
    if not (isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.dtype.kind in "iu"):
        raise ValueError(f"{name}: the sparse matrix's {what} must be a 1-D integer array, "
                         f"got {type(arr).__name__} {getattr(arr, 'dtype', '')} "
                         f"{getattr(arr, 'shape', '')}")


def _check_compressed(indptr, indices, n_data, n_major, n_minor, name, axis):
    """The structure of a compressed (CSR: axis "row", CSC: axis "column") matrix with
    n_major rows (columns) of n_minor entries; returns the number of stored entries."""
    _check_index_array(indptr, "indptr", name)
    _check_index_array(indices, "indices", name)
    if indptr.shape[0] != n_major + 1:
        raise ValueError(f"{name}: the sparse matrix's indptr has {indptr.shape[0]} entries, "
                         f"expected {n_major + 1} (one per {axis} + 1)")
    if indptr[0] != 0:
        raise ValueError(f"{name}: the sparse matrix's indptr must start at 0, got "
                         f"{indptr[0]}")
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        k = int(np.argmax(steps < 0))
        raise ValueError(f"{name}: the sparse matrix's indptr decreases at {axis} {k} "
                         f"({indptr[k]} then {indptr[k + 1]}): invalid sparse structure")
    nnz = int(indptr[-1])
    if nnz > indices.shape[0] or nnz > n_data:
        raise ValueError(f"{name}: the sparse matrix's indptr ends at {nnz}, past its "
                         f"{indices.shape[0]} indices / {n_data} values")
    other = "column" if axis == "row" else "row"
    if nnz and (indices[:nnz].min() < 0 or indices[:nnz].max() >= n_minor):
        raise ValueError(f"{name}: the sparse matrix has {other} indices in "
                         f"[{indices[:nnz].min()}, {indices[:nnz].max()}], expected "
                         f"[0, {n_minor})")
    return nnz


def _check_coordinates(X, name):
    """COO: row and column indices inside the shape (before scipy converts them)."""
    n, m = X.shape
    for what, arr, size in (("row", X.row, n), ("column", X.col, m)):
        _check_index_array(arr, f"{what} indices", name)
        if arr.shape[0] != X.data.shape[0]:
            raise ValueError(f"{name}: the COO matrix has {arr.shape[0]} {what} indices for "
                             f"{X.data.shape[0]} values")
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            raise ValueError(f"{name}: the COO matrix has {what} indices in [{arr.min()}, "
                             f"{arr.max()}], expected [0, {size})")


def _to_csr(X, name):
    """X (checked shape) as a scipy CSR object whose structure has been checked; only
    compressed and COO structures are checked before scipy reads them (the other
    formats hold Python-level structures that scipy converts without trusting them)."""
    n, m = X.shape
    fmt = X.format
    if fmt == "csr":
        _check_compressed(X.indptr, X.indices, X.data.shape[0], n, m, name, "row")
        return X
    if fmt == "csc":
        _check_compressed(X.indptr, X.indices, X.data.shape[0], m, n, name, "column")
    elif fmt == "coo":
        _check_coordinates(X, name)
    elif fmt == "bsr":
        r, c = X.blocksize
        _check_compressed(X.indptr, X.indices, X.data.shape[0], n // r, m // c, name, "row")
    csr = X.tocsr()                                 # the one conversion
    _check_compressed(csr.indptr, csr.indices, csr.data.shape[0], n, m, name, "row")
    return csr


def _index_arrays(indices, indptr):
    """indices and indptr of one type the kernels take: int32 or int64 as they are, any
    other type (or two different ones) converted to int64."""
    if indices.dtype == indptr.dtype and indices.dtype in _INDEX_DTYPES:
        return np.ascontiguousarray(indices), np.ascontiguousarray(indptr)
    return (np.ascontiguousarray(indices, dtype=np.int64),
            np.ascontiguousarray(indptr, dtype=np.int64))


def check_sparse(X, n_features, dtype, scale, name="X"):
    """A scipy.sparse X (CSR, CSC or any other format) checked, as a CSRInput.

    Parameters
    ----------
    X : scipy.sparse matrix or array of shape (n_samples, n_features)
    n_features : int, the features the network expects
    dtype : the network's dtype (data are converted to it once when they differ)
    scale : the network's input_scale (every value times it must stay finite)
    name : the argument's name, for messages

    Raises
    ------
    TypeError for non-numeric data; ValueError for a wrong rank, shape or feature count,
    no samples, an invalid structure, NaN / inf (or values that overflow `dtype`).
    """
    from ._validate import all_finite           # here: _validate imports this module
    dtype = np.dtype(dtype)
    kind = _kind(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers (bool, int or float), got a {kind} of "
                        f"dtype {X.dtype}")
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D of shape (n_samples, {n_features}), got a "
                         f"{kind} of shape {X.shape}")
    n, m = X.shape
    if n == 0:
        raise ValueError(f"{name} is empty: expected at least one sample, got a {kind} of "
                         f"shape {X.shape}")
    if m != n_features:
        raise ValueError(f"{name} has {m} features, the network expects {n_features} "
                         f"(shape (n_samples, {n_features})); got a {kind}")
    csr = _to_csr(X, name)
    nnz = int(csr.indptr[-1])
    indices, indptr = _index_arrays(csr.indices[:nnz], csr.indptr)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow: reported just below
        data = np.ascontiguousarray(csr.data[:nnz], dtype=dtype)
    if not all_finite(data):
        raise ValueError(f"{name} contains NaN or inf (or values too large for {dtype}) "
                         f"among its stored values; expected finite numbers")
    if nnz and scale != 1:
        top = max(abs(float(data.max())), abs(float(data.min())))
        with np.errstate(over="ignore"):
            if not np.isfinite(dtype.type(top) * dtype.type(scale)):
                raise ValueError(f"{name}: stored values times input_scale {scale:g} "
                                 f"overflow {dtype}")
    return CSRInput(data, indices, indptr, m)


def dense_only(value, name):
    """TypeError for a scipy.sparse `value` where only dense arrays are taken (y, weights)."""
    if is_sparse(value):
        raise TypeError(f"{name} must be a dense array (e.g. {name}.toarray()), got a "
                        f"{_kind(value)}; only X may be sparse")
