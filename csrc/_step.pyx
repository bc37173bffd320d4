# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The whole training step of a network in one compiled call.

Contents: `TrainStep`, built once per (network, workspace). It keeps raw pointers to the
layers' weights, biases and gradients (views into the network's flat buffers), to the
workspace's activations and deltas, and to the bound training data. `step(idx)` then
gathers the mini-batch, runs the forward pass, the fused output/loss gradient and the
backward pass, all without the GIL and without Python between the kernels; the optimizer
update follows as one more call over the flat buffers.

Why: a step is ~15 kernel calls, and each `def` call with its memoryviews costs ~0.7 us of
Python dispatch: at batch 32 (1875 steps an epoch) that was ~10% of an epoch.

Conventions: the same kernel bodies as _kernels.pyx (csrc/_ops.pxd). All arrays are
checked here once (dtype, C order, shapes) when the step is built or data is bound; the
array objects are kept alive by this object, and the network never rebinds its views.
Indices are checked against the bound data on every step (n comparisons).
"""
from cython cimport floating
from libc.stdlib cimport malloc, free
from _ops cimport (_dense_forward, _activation_backward, _linear_backward_params,
                   _linear_backward_input, _loss_backward, _gather_rows, ACT_LINEAR_)

import numpy as np


cdef class TrainStep:
    """A network's training step over one workspace, as one compiled call.

    Parameters
    ----------
    coefs, intercepts, dcoefs, dintercepts : lists of the L weight (n_in, n_out), bias
        (n_out,) and gradient arrays, layer by layer
    a, d : lists of L + 1 workspace arrays (rows, sizes[l]); d[0] is unused (may be None)
    y : workspace array (rows, sizes[-1]) for the targets
    codes : list of L - 1 hidden activation codes
    loss : LOSS_* code of the output layer
    """
    cdef Py_ssize_t n_layers, rows, n_data
    cdef Py_ssize_t *sizes
    cdef void **a
    cdef void **d
    cdef void **w
    cdef void **b
    cdef void **dw
    cdef void **db
    cdef void *y
    cdef const void *X
    cdef const void *Y
    cdef int *codes
    cdef int loss
    cdef bint is_double
    cdef object _keep, _data, dtype

    def __cinit__(self):
        self.sizes = NULL
        self.a = self.d = self.w = self.b = self.dw = self.db = NULL
        self.codes = NULL
        self.X = self.Y = NULL

    def __dealloc__(self):
        free(self.sizes)
        free(self.a)
        free(self.d)
        free(self.w)
        free(self.b)
        free(self.dw)
        free(self.db)
        free(self.codes)

    def __init__(self, coefs, intercepts, dcoefs, dintercepts, a, d, y, codes, int loss):
        cdef Py_ssize_t L = len(coefs), l
        if L < 1 or not (len(intercepts) == len(dcoefs) == len(dintercepts) == L
                         and len(a) == len(d) == L + 1 and len(codes) == max(L - 1, 0)):
            raise ValueError("TrainStep: inconsistent layer lists")
        if loss < 0 or loss > 2:
            raise ValueError(f"TrainStep: unknown loss code {loss}")
        self.dtype = np.dtype(coefs[0].dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"TrainStep: dtype must be float32 or float64, got {self.dtype}")
        self.is_double = self.dtype == np.float64
        self.n_layers = L
        self.loss = loss
        self.rows = a[0].shape[0]
        self.sizes = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
        self.codes = <int *>malloc(max(L, 1) * sizeof(int))
        self.a = <void **>malloc((L + 1) * sizeof(void *))
        self.d = <void **>malloc((L + 1) * sizeof(void *))
        self.w = <void **>malloc(L * sizeof(void *))
        self.b = <void **>malloc(L * sizeof(void *))
        self.dw = <void **>malloc(L * sizeof(void *))
        self.db = <void **>malloc(L * sizeof(void *))
        if (self.sizes == NULL or self.codes == NULL or self.a == NULL or self.d == NULL
                or self.w == NULL or self.b == NULL or self.dw == NULL or self.db == NULL):
            raise MemoryError()
        for l in range(L + 1):
            self.sizes[l] = a[l].shape[1]
        for l in range(L - 1):
            if not 0 <= codes[l] <= 4:
                raise ValueError(f"TrainStep: unknown activation code {codes[l]}")
            self.codes[l] = codes[l]
        keep = []
        for l in range(L):
            shape = (self.sizes[l], self.sizes[l + 1])
            self.w[l] = self._pointer(coefs[l], shape, keep)
            self.dw[l] = self._pointer(dcoefs[l], shape, keep)
            self.b[l] = self._pointer(intercepts[l], (self.sizes[l + 1],), keep)
            self.db[l] = self._pointer(dintercepts[l], (self.sizes[l + 1],), keep)
        for l in range(L + 1):
            self.a[l] = self._pointer(a[l], (self.rows, self.sizes[l]), keep)
            self.d[l] = NULL if l == 0 else self._pointer(d[l], (self.rows, self.sizes[l]), keep)
        self.y = self._pointer(y, (self.rows, self.sizes[L]), keep)
        self._keep = keep

    cdef void *_pointer(self, arr, tuple shape, list keep) except NULL:
        """Address of arr's data after checking dtype, C order, shape and writability."""
        if (not isinstance(arr, np.ndarray) or arr.dtype != self.dtype
                or not arr.flags.c_contiguous or arr.shape != shape or arr.size == 0):
            raise ValueError(f"TrainStep: expected a C-contiguous {self.dtype} array of shape "
                             f"{shape}, got {getattr(arr, 'dtype', type(arr).__name__)} "
                             f"{getattr(arr, 'shape', '')}")
        keep.append(arr)
        return <void *><size_t>arr.ctypes.data

    def bind(self, X, Y):
        """Use X (N, sizes[0]) and Y (N, sizes[-1]) as the training data (checked arrays,
        kept alive until the next bind)."""
        keep = []
        n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else -1
        if n < 1:
            raise ValueError("TrainStep.bind: X must be a non-empty 2-D array")
        self.X = self._pointer(X, (n, self.sizes[0]), keep)
        self.Y = self._pointer(Y, (n, self.sizes[self.n_layers]), keep)
        self.n_data = n
        self._data = keep

    def release(self):
        """Forget the bound data (it is no longer kept alive)."""
        self.X = self.Y = NULL
        self.n_data = 0
        self._data = None

    def step(self, const Py_ssize_t[::1] idx):
        """Gather the rows idx of the bound data, forward, backward: the gradient arrays
        get the batch's mean gradient. Returns the summed loss of the batch (a float)."""
        cdef Py_ssize_t n = idx.shape[0], i
        cdef double loss
        if self._data is None:
            raise ValueError("TrainStep.step: no data bound (call bind first)")
        if n < 1 or n > self.rows:
            raise ValueError(f"TrainStep.step: a batch has 1 to {self.rows} rows, got {n}")
        for i in range(n):
            if idx[i] < 0 or idx[i] >= self.n_data:
                raise ValueError(f"TrainStep.step: index {idx[i]} out of range "
                                 f"[0, {self.n_data})")
        with nogil:
            if self.is_double:
                loss = _run[double](self, &idx[0], n, 0)
            else:
                loss = _run[float](self, &idx[0], n, 0)
        return loss


cdef double _run(TrainStep s, const Py_ssize_t *idx, Py_ssize_t n,
                 floating kind) noexcept nogil:
    """Gather, forward, loss gradient, backward; returns the summed loss of the batch.
    `kind` only selects the float or double instance."""
    cdef Py_ssize_t L = s.n_layers, l
    cdef Py_ssize_t *sz = s.sizes
    cdef floating **a = <floating **>s.a
    cdef floating **d = <floating **>s.d
    cdef floating **w = <floating **>s.w
    cdef floating **b = <floating **>s.b
    cdef floating **dw = <floating **>s.dw
    cdef floating **db = <floating **>s.db
    cdef floating *y = <floating *>s.y
    cdef floating scale = <floating>1.0 / n
    cdef double loss
    _gather_rows(a[0], <const floating *>s.X, idx, n, sz[0])
    _gather_rows(y, <const floating *>s.Y, idx, n, sz[L])
    for l in range(L):
        _dense_forward(a[l + 1], a[l], w[l], b[l], n, sz[l], sz[l + 1],
                       s.codes[l] if l < L - 1 else ACT_LINEAR_)   # logits; loss fuses act
    loss = _loss_backward(s.loss, d[L], a[L], y, n, sz[L])          # d[L] = y_hat - y
    for l in range(L - 1, -1, -1):
        _linear_backward_params(dw[l], db[l], d[l + 1], a[l], n, sz[l], sz[l + 1], scale)
        if l > 0:                                                   # no dX for the input
            _linear_backward_input(d[l], d[l + 1], w[l], n, sz[l], sz[l + 1])
            _activation_backward(d[l], d[l], a[l], n * sz[l], s.codes[l - 1])
    return loss
