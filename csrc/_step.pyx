# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The whole training step of a network in one compiled call.

Contents: `TrainStep`, built once per (network, workspace). It keeps raw pointers to the
layers' weights, biases and gradients (views into the network's flat buffers), to the
workspace's activations and deltas, to the bound training data and to the optimizer's
state. `step(idx, t)` then gathers the mini-batch, runs the forward pass, the fused
output/loss gradient, the backward pass and each layer's update as soon as its gradients
are done, all without the GIL and without Python between the kernels, on a team of
`threads` threads (csrc/_pool.h) that split every phase, each calling single-threaded
BLAS on its block (the caller makes nnfast's BLAS single-threaded meanwhile:
nnfast._threads.single_threaded_blas).

Why: a step is ~15 kernel calls, and each `def` call with its memoryviews costs ~0.7 us of
Python dispatch: at batch 32 (1875 steps an epoch) that was ~10% of an epoch. And with
BLAS's own threads only the matrix products used the second core: the optimizer, the
gather and the elementwise passes (~25% of a step at batch 32) ran on one.

Conventions: the same kernel bodies as _kernels.pyx (csrc/_ops.pxd). All arrays are
checked here once (dtype, C order, shapes) when the step is built or data is bound; the
array objects are kept alive by this object, and the network never rebinds its views.
Indices are checked against the bound data on every step (n comparisons).

Sparse input (bind_csr): the training data is a CSR matrix (data, indices, indptr). The
first layer then never sees a dense batch: its forward pass reads the batch's rows
straight from the CSR arrays (z = X[idx] @ W0, by rows of the batch), and its weight
gradient is a scatter-add over the non-zeros of those rows (dW0 = X[idx].T @ dZ, split
by columns of dW0, each thread scattering only its own columns, rows in batch order: no
write races, and the same bits for any team size). The workspace then needs no input
buffer (a[0] may be None). dW0 is zeroed at the start of the step (by rows) and the
optimizer updates all of W0 afterwards, exactly as for dense input.
"""
from cython cimport floating
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.stdint cimport int32_t, int64_t
from libc.math cimport pow, isfinite
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from _blas cimport gemm_rm
from _ops cimport (_bias_act, _col_sum, _activation_backward, _loss_backward, _gather_rows,
                   _weighted_loss_backward, _gather_values,
                   _dropout, _mul, nnf_dropout_key, _gather_convert, SRC_UINT8_,
                   SRC_FLOAT32_, SRC_FLOAT64_, ACT_LINEAR_, LOSS_SOFTMAX_XENT_,
                   LOSS_SIGMOID_BCE_, _csr_matmul, _csr_scatter, _csr_bad_row,
                   ACT_LAST_HIDDEN_, LOSS_LAST_)

from _ops cimport nnf_adam_f32, nnf_adam_f64, nnf_sgd_f32, nnf_sgd_f64

cdef extern from "_pool.h" nogil:
    ctypedef void (*nnf_task_fn)(void *ctx, int tid, int nthreads) noexcept nogil
    int NNF_MAX_THREADS
    int nnf_pool_reserve(int nthreads)
    void nnf_parallel(nnf_task_fn fn, void *ctx, int nthreads)
    void nnf_barrier(int nthreads)
    void nnf_part(Py_ssize_t n, int tid, int nthreads, Py_ssize_t align, Py_ssize_t *begin,
                  Py_ssize_t *end)

import numpy as np

# Phases of a step, for the optional profile (TrainStep.profile = True).
PHASES = ("gather", "gemm_forward", "bias_activation", "loss_gradient", "gemm_dW",
          "bias_gradient", "gemm_dX", "activation_backward", "optimizer")
cdef enum:
    P_GATHER = 0
    P_GEMM_FWD = 1
    P_BIAS_ACT = 2
    P_LOSS = 3
    P_GEMM_DW = 4
    P_DB = 5
    P_GEMM_DX = 6
    P_ACT_BWD = 7
    P_OPT = 8
    N_PHASES = 9

cdef enum:
    OPT_NONE = 0
    OPT_ADAM = 1
    OPT_SGD = 2


cdef class TrainStep:
    """A network's training step over one workspace, as one compiled call.

    Parameters
    ----------
    coefs, intercepts, dcoefs, dintercepts : lists of the L weight (n_in, n_out), bias
        (n_out,) and gradient arrays, layer by layer
    a, d : lists of L + 1 workspace arrays (rows, sizes[l]); d[0] is unused (may be None),
        and a[0] (the gathered input batch) may be None for a step that only ever gets
        sparse data (bind_csr)
    y : workspace array (rows, sizes[-1]) for the targets
    codes : list of L - 1 hidden activation codes
    loss : LOSS_* code of the output layer

    With an optimizer set (`set_optimizer`), `step(idx, t)` also updates each layer's
    parameters as soon as its gradients are complete (its dX computed), while they are
    still in cache; the gradient arrays keep the batch's gradient. `threads` (default 1)
    is the size of the team that runs a step; with more than one, nnfast's BLAS must be
    single-threaded during the call (else every team thread starts BLAS threads too).
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
    cdef const void *W                      # sample weights (N,) of the bound data, or NULL
    cdef void *rw                           # the batch's row weights (rows,)
    cdef int x_src                          # X's SRC_* type, -1: the step's dtype, unscaled
    cdef bint x_sparse                      # X is the CSR (x_data, x_indices, x_indptr)
    cdef bint x_idx64                       # ... with int64 (else int32) indices / indptr
    cdef const void *x_data
    cdef const void *x_indices
    cdef const void *x_indptr
    cdef double x_scale
    cdef int *codes
    cdef int loss
    cdef bint is_double
    cdef public bint profile
    cdef long long phase_ns[N_PHASES]
    cdef object _keep, _data, _opt_keep, dtype
    # optimizer: flat params / grads / state bases (same layout), hyperparameters, and
    # the scalars of the current step
    cdef int opt
    cdef char *p0
    cdef char *g0
    cdef char *s1
    cdef char *s2
    cdef double lr, beta1, beta2, eps, momentum, weight_decay
    cdef bint nesterov
    cdef double step_size, inv_bc2
    cdef double grad_div                    # the gradient of this step is a sum / grad_div
    cdef public int threads                 # team size for a step (1: the caller alone)
    # dropout of hidden layer l (None where off): g[l] = act' * mask / (1 - p), the
    # threshold and scale of its mask, and this step's key; the seed and step counter
    # that make the keys
    cdef void **g
    cdef unsigned int *drop
    cdef double *dscale
    cdef unsigned long long *keys
    cdef bint has_dropout
    cdef object _dropout_keep
    cdef public unsigned long long dropout_seed, dropout_step
    cdef double loss_part[64]               # NNF_MAX_THREADS
    cdef Py_ssize_t correct_part[64]
    cdef public Py_ssize_t correct          # the last step's correct predictions

    def __cinit__(self):
        self.profile = False
        self.threads = 1
        for i in range(N_PHASES):
            self.phase_ns[i] = 0
        self.sizes = NULL
        self.a = self.d = self.w = self.b = self.dw = self.db = NULL
        self.codes = NULL
        self.g = NULL
        self.drop = NULL
        self.dscale = NULL
        self.keys = NULL
        self.has_dropout = False
        self.dropout_seed = self.dropout_step = 0
        self.X = self.Y = self.W = NULL
        self.x_data = self.x_indices = self.x_indptr = NULL
        self.x_sparse = self.x_idx64 = False
        self.rw = NULL
        self.opt = OPT_NONE
        self.p0 = self.g0 = self.s1 = self.s2 = NULL

    def __dealloc__(self):
        free(self.rw)
        free(self.sizes)
        free(self.a)
        free(self.d)
        free(self.w)
        free(self.b)
        free(self.dw)
        free(self.db)
        free(self.codes)
        free(self.g)
        free(self.drop)
        free(self.dscale)
        free(self.keys)

    def __init__(self, coefs, intercepts, dcoefs, dintercepts, a, d, y, codes, int loss):
        cdef Py_ssize_t L = len(coefs), l
        if L < 1 or not (len(intercepts) == len(dcoefs) == len(dintercepts) == L
                         and len(a) == len(d) == L + 1 and len(codes) == max(L - 1, 0)):
            raise ValueError("TrainStep: inconsistent layer lists")
        if loss < 0 or loss > LOSS_LAST_:
            raise ValueError(f"TrainStep: unknown loss code {loss}")
        self.dtype = np.dtype(coefs[0].dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"TrainStep: dtype must be float32 or float64, got {self.dtype}")
        self.is_double = self.dtype == np.float64
        self.n_layers = L
        self.loss = loss
        # a[0] None: sparse input only (bind_csr), no dense batch buffer
        cdef bint no_input = a[0] is None and L >= 1 and a[1] is not None
        self.rows = (a[1] if no_input else a[0]).shape[0]
        self.sizes = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
        self.codes = <int *>malloc(max(L, 1) * sizeof(int))
        self.a = <void **>malloc((L + 1) * sizeof(void *))
        self.d = <void **>malloc((L + 1) * sizeof(void *))
        self.w = <void **>malloc(L * sizeof(void *))
        self.b = <void **>malloc(L * sizeof(void *))
        self.dw = <void **>malloc(L * sizeof(void *))
        self.db = <void **>malloc(L * sizeof(void *))
        self.g = <void **>malloc(L * sizeof(void *))
        self.drop = <unsigned int *>malloc(L * sizeof(unsigned int))
        self.dscale = <double *>malloc(L * sizeof(double))
        self.keys = <unsigned long long *>malloc(L * sizeof(unsigned long long))
        self.rw = malloc(max(self.rows, 1) * self.dtype.itemsize)
        if (self.g == NULL or self.rw == NULL or self.drop == NULL or self.dscale == NULL or self.keys == NULL
                or self.sizes == NULL or self.codes == NULL or self.a == NULL or self.d == NULL
                or self.w == NULL or self.b == NULL or self.dw == NULL or self.db == NULL):
            raise MemoryError()
        for l in range(L + 1):
            self.sizes[l] = coefs[0].shape[0] if l == 0 and no_input else a[l].shape[1]
        for l in range(L - 1):
            if not 0 <= codes[l] <= ACT_LAST_HIDDEN_:
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
            self.a[l] = (NULL if l == 0 and no_input else
                         self._pointer(a[l], (self.rows, self.sizes[l]), keep))
            self.d[l] = NULL if l == 0 else self._pointer(d[l], (self.rows, self.sizes[l]), keep)
        self.y = self._pointer(y, (self.rows, self.sizes[L]), keep)
        self._keep = keep
        for l in range(L):
            self.g[l] = NULL

    def set_dropout(self, rates=None, masks=None):
        """Inverted dropout on the hidden layers during `step`: rates (L - 1 floats in
        [0, 1); 0: none) and masks (L - 1 workspace arrays (rows, sizes[l + 1]) that get
        act' * mask / (1 - p), or None where the rate is 0). No arguments: off. The mask
        of a step comes from (dropout_seed, dropout_step, layer); step() increments
        dropout_step."""
        from nnfast._kernels import dropout_threshold
        cdef Py_ssize_t l, L = self.n_layers
        self.has_dropout = False
        for l in range(L):
            self.g[l] = NULL
        self._dropout_keep = None
        if rates is None:
            return
        if len(rates) != L - 1 or len(masks) != L - 1:
            raise ValueError(f"TrainStep.set_dropout: expected {L - 1} rates and masks")
        keep = []
        for l in range(L - 1):
            p = float(rates[l])
            if p == 0:
                continue
            self.drop[l] = dropout_threshold(p)
            self.dscale[l] = 1 / (1 - p)
            self.g[l] = self._pointer(masks[l], (self.rows, self.sizes[l + 1]), keep)
            self.has_dropout = True
        self._dropout_keep = keep

    cdef void *_pointer(self, arr, tuple shape, list keep, bint write=True) except NULL:
        """Address of arr's data after checking dtype, C order, shape (and writability)."""
        if (not isinstance(arr, np.ndarray) or arr.dtype != self.dtype
                or not arr.flags.c_contiguous or arr.shape != shape or arr.size == 0
                or (write and not arr.flags.writeable)):
            raise ValueError(f"TrainStep: expected a C-contiguous{' writable' if write else ''} "
                             f"{self.dtype} array of shape {shape}, got "
                             f"{getattr(arr, 'dtype', type(arr).__name__)} "
                             f"{getattr(arr, 'shape', '')}")
        keep.append(arr)
        return <void *><size_t>arr.ctypes.data

    def bind(self, X, Y, double x_scale=1.0, W=None):
        """Use X (N, sizes[0]) and Y (N, sizes[-1]) as the training data (checked arrays,
        kept alive until the next bind). X may be uint8, float32 or float64 (an np.memmap
        too): its rows are converted to the step's dtype and multiplied by x_scale as
        each mini-batch is gathered; Y has the step's dtype. W (N,) of the step's dtype,
        optional: sample weights (finite, >= 0): a row's loss and gradient are multiplied
        by its weight (the caller passes the batch's weight sum as step's grad_div)."""
        keep = []
        n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else -1
        if n < 1:
            raise ValueError("TrainStep.bind: X must be a non-empty 2-D array")
        if self.a[0] == NULL:
            raise ValueError("TrainStep.bind: this step has no input buffer (a[0] is None): "
                             "it takes sparse data only (bind_csr)")
        if X.dtype == self.dtype and x_scale == 1:
            src = -1
        elif X.dtype in (np.uint8, np.float32, np.float64):
            src = {"uint8": SRC_UINT8_, "float32": SRC_FLOAT32_,
                   "float64": SRC_FLOAT64_}[X.dtype.name]
        else:
            raise ValueError(f"TrainStep.bind: X must be uint8, float32 or float64, got "
                             f"{X.dtype}")
        if not (X.flags.c_contiguous and X.shape == (n, self.sizes[0])):
            raise ValueError(f"TrainStep.bind: X must be C-contiguous of shape (N, "
                             f"{self.sizes[0]}), got {X.shape}")
        keep.append(X)
        self.Y = self._pointer(Y, (n, self.sizes[self.n_layers]), keep, False)
        self.W = NULL if W is None else self._pointer(W, (n,), keep, False)
        self.X = <const void *><size_t>X.ctypes.data
        self.x_src, self.x_scale = src, x_scale
        self.x_sparse = False
        self.n_data = n
        self._data = keep

    def bind_csr(self, data, indices, indptr, Y, double x_scale=1.0, W=None):
        """Use the CSR matrix X (data, indices, indptr) of shape (N, sizes[0]) and Y (N,
        sizes[-1]) as the training data, as `bind` does for a dense X; each non-zero is
        multiplied by x_scale as the first layer reads it. data: 1-D of the step's dtype;
        indices, indptr: 1-D, both int32 or both int64; indptr has N + 1 >= 2 entries. All
        C-contiguous. The structure is checked here once (O(N + nnz)): every row's indptr
        range must lie in order inside data and indices, every column index in [0,
        sizes[0]). Duplicate and unsorted column indices are allowed (they add up)."""
        keep = []
        for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
            if not (isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.flags.c_contiguous):
                raise ValueError(f"TrainStep.bind_csr: {name} must be a C-contiguous 1-D "
                                 f"array, got {type(arr).__name__} "
                                 f"{getattr(arr, 'shape', '')}")
        if data.dtype != self.dtype:
            raise ValueError(f"TrainStep.bind_csr: data must be {self.dtype}, got {data.dtype}")
        if not (indices.dtype == indptr.dtype and indices.dtype in (np.int32, np.int64)):
            raise ValueError(f"TrainStep.bind_csr: indices and indptr must both be int32 or "
                             f"both int64, got {indices.dtype} and {indptr.dtype}")
        cdef Py_ssize_t n = indptr.shape[0] - 1, bad
        if n < 1:
            raise ValueError(f"TrainStep.bind_csr: X needs at least one row (indptr of >= 2 "
                             f"entries), got indptr of {indptr.shape[0]}")
        cdef bint idx64 = indices.dtype == np.int64
        cdef const void *xi = <const void *><size_t>indices.ctypes.data
        cdef const void *xp = <const void *><size_t>indptr.ctypes.data
        cdef Py_ssize_t n_cols = self.sizes[0]
        cdef Py_ssize_t nnz_max = min(data.shape[0], indices.shape[0])
        with nogil:
            if idx64:
                bad = _csr_bad_row(<const int64_t *>xi, <const int64_t *>xp, n, n_cols,
                                   nnz_max, NULL, n)
            else:
                bad = _csr_bad_row(<const int32_t *>xi, <const int32_t *>xp, n, n_cols,
                                   nnz_max, NULL, n)
        if bad >= 0:
            raise ValueError(f"TrainStep.bind_csr: row {bad} is invalid: its indptr range "
                             f"[{indptr[bad]}, {indptr[bad + 1]}) must lie in [0, {nnz_max}] "
                             f"in order and its column indices in [0, {n_cols})")
        keep += [data, indices, indptr]
        self.Y = self._pointer(Y, (n, self.sizes[self.n_layers]), keep, False)
        self.W = NULL if W is None else self._pointer(W, (n,), keep, False)
        self.X = NULL
        self.x_data = <const void *><size_t>data.ctypes.data
        self.x_indices, self.x_indptr, self.x_idx64 = xi, xp, idx64
        self.x_src, self.x_scale = -1, x_scale
        self.x_sparse = True
        self.n_data = n
        self._data = keep

    def set_optimizer(self, str kind, params=None, grads=None, state=(), double lr=0,
                      double beta1=0.9, double beta2=0.999, double eps=1e-8,
                      double momentum=0, bint nesterov=False, double weight_decay=0):
        """Update the parameters inside `step(idx, t)`.

        kind : "adam" (state = (m, v)), "sgd" (state = (velocity,)) or "none"
        params, grads : the flat buffers that the layers' weight / bias arrays (given at
            construction) and their gradients are views of, with the same layout; the
            state arrays have that layout too. Weights are decayed, biases never.
        Hyperparameters as in nnfast.optim (checked there).
        """
        self.opt = OPT_NONE
        self.p0 = self.g0 = self.s1 = self.s2 = NULL
        self._opt_keep = None
        if kind == "none":
            return
        if kind not in ("adam", "sgd"):
            raise ValueError(f"TrainStep.set_optimizer: unknown kind {kind!r}")
        keep = []
        n = params.shape[0] if isinstance(params, np.ndarray) and params.ndim == 1 else -1
        if n < 1:
            raise ValueError("TrainStep.set_optimizer: params must be a non-empty 1-D array")
        need = 2 if kind == "adam" else 1
        if len(state) != need:
            raise ValueError(f"TrainStep.set_optimizer: {kind} needs {need} state arrays")
        cdef char *p0 = <char *>self._pointer(params, (n,), keep)
        cdef char *g0 = <char *>self._pointer(grads, (n,), keep)
        bases = [<size_t>self._pointer(a, (n,), keep) for a in state]
        cdef Py_ssize_t l, k, item = self.dtype.itemsize, off, count
        cdef char *pk
        cdef char *gk
        for l in range(self.n_layers):            # every layer a view of the flat buffers
            for k in range(2):
                pk = <char *>(self.w[l] if k == 0 else self.b[l])
                gk = <char *>(self.dw[l] if k == 0 else self.db[l])
                count = self.sizes[l + 1] * (self.sizes[l] if k == 0 else 1)
                off = pk - p0
                if off != gk - g0 or off < 0 or off % item or off // item + count > n:
                    raise ValueError(f"TrainStep.set_optimizer: layer {l}'s parameters or "
                                     "gradients are not views of params / grads at the same "
                                     "offsets")
        self.p0, self.g0 = p0, g0
        self.s1 = <char *><size_t>bases[0]
        self.s2 = <char *><size_t>bases[1] if need == 2 else NULL
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.opt = OPT_ADAM if kind == "adam" else OPT_SGD
        self._opt_keep = keep

    def timings(self):
        """Seconds spent in each phase (PHASES) while `profile` was on, since the last
        reset_timings(). Profiling reads the clock ~20 times a step (~0.5 us)."""
        return {name: self.phase_ns[i] * 1e-9 for i, name in enumerate(PHASES)}

    def reset_timings(self):
        for i in range(N_PHASES):
            self.phase_ns[i] = 0

    def release(self):
        """Forget the bound data and the optimizer (they are no longer kept alive)."""
        self.X = self.Y = self.W = NULL
        self.x_data = self.x_indices = self.x_indptr = NULL
        self.x_sparse = False
        self.n_data = 0
        self._data = None
        self.set_optimizer("none")

    def step(self, const Py_ssize_t[::1] idx, Py_ssize_t t=0, double grad_div=0):
        """Gather the rows idx of the bound data, forward, backward: the gradient arrays
        get the batch's mean gradient. With t >= 1 (the optimizer's step number), the
        optimizer set by set_optimizer also updates the parameters. Returns the summed loss
        of the batch (a float; weighted, with sample weights bound). `correct` is then the batch's number of correct
        predictions: rows whose logits' argmax is the target's (softmax), entries whose
        logit sign agrees with the 0/1 target (sigmoid), 0 (linear).
        grad_div > 0 replaces the batch size as the divisor of the summed gradient (a part
        of a larger batch: data-parallel training)."""
        cdef Py_ssize_t n = idx.shape[0], i, n_data = self.n_data
        cdef double loss
        cdef const void *X = self.X
        cdef const void *Y = self.Y
        cdef const void *W = self.W
        data = self._data               # the arrays stay alive even if another thread rebinds
        if data is None:
            raise ValueError("TrainStep.step: no data bound (call bind first)")
        if t < 0 or (t > 0 and self.opt == OPT_NONE):
            raise ValueError(f"TrainStep.step: t must be 0, or >= 1 with an optimizer set; "
                             f"got {t}")
        if self.opt == OPT_ADAM and t > 0:         # bias corrections of this step
            self.step_size = self.lr / (1 - pow(self.beta1, <double>t))
            self.inv_bc2 = 1 / (1 - pow(self.beta2, <double>t))
        if n < 1 or n > self.rows:
            raise ValueError(f"TrainStep.step: a batch has 1 to {self.rows} rows, got {n}")
        if not grad_div >= 0:
            raise ValueError(f"TrainStep.step: grad_div must be >= 0, got {grad_div}")
        self.grad_div = grad_div if grad_div > 0 else n
        for i in range(n):
            if idx[i] < 0 or idx[i] >= n_data:
                raise ValueError(f"TrainStep.step: index {idx[i]} out of range [0, {n_data})")
        if self.has_dropout:
            for i in range(self.n_layers - 1):
                self.keys[i] = nnf_dropout_key(self.dropout_seed, self.dropout_step, i)
            self.dropout_step += 1
        cdef StepCall call
        call.s = <void *>self
        call.X = X
        call.Y = Y
        call.W = W
        call.sparse = self.x_sparse
        call.idx64 = self.x_idx64
        call.x_data = self.x_data
        call.x_indices = self.x_indices
        call.x_indptr = self.x_indptr
        call.idx = &idx[0]
        call.n = n
        call.update = t > 0
        cdef int team = nnf_pool_reserve(max(1, min(self.threads, n, 64)))
        with nogil:
            if self.is_double:
                nnf_parallel(_task_f64, &call, team)
            else:
                nnf_parallel(_task_f32, &call, team)
        loss = 0
        self.correct = 0
        for i in range(team):
            loss += self.loss_part[i]
            self.correct += self.correct_part[i]
        return loss


cdef inline long long _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000LL + ts.tv_nsec


cdef inline void _mark(bint prof, TrainStep s, int phase, long long *t) noexcept nogil:
    """With profiling on (thread 0 only): charge the time since the last mark to `phase`."""
    cdef long long now
    if prof:
        now = _now()
        s.phase_ns[phase] += now - t[0]
        t[0] = now


cdef void _update(TrainStep s, floating *p, Py_ssize_t count, bint decay,
                  floating kind) noexcept nogil:
    """The optimizer on p[0:count], a slice of the flat parameters; the gradient and the
    state are at the same offset in their buffers. `kind` selects the instance."""
    cdef Py_ssize_t off = <char *>p - s.p0
    cdef floating *g = <floating *>(s.g0 + off)
    cdef floating *s1 = <floating *>(s.s1 + off)
    cdef floating *s2
    cdef double wd = s.weight_decay if decay else 0
    if s.opt == OPT_ADAM:
        s2 = <floating *>(s.s2 + off)
        if floating is float:
            nnf_adam_f32(p, s1, s2, g, count, s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2,
                         s.eps, 1 - s.lr * wd, s.step_size, s.inv_bc2)
        else:
            nnf_adam_f64(p, s1, s2, g, count, s.beta1, 1 - s.beta1, s.beta2, 1 - s.beta2,
                         s.eps, 1 - s.lr * wd, s.step_size, s.inv_bc2)
    elif s.opt == OPT_SGD:
        if floating is float:
            nnf_sgd_f32(p, s1, g, count, s.lr, s.momentum, s.nesterov, wd)
        else:
            nnf_sgd_f64(p, s1, g, count, s.lr, s.momentum, s.nesterov, wd)


cdef struct StepCall:
    void *s                     # the TrainStep (borrowed: alive for the call)
    const void *X
    const void *Y
    const void *W
    bint sparse                 # X is the CSR (x_data, x_indices, x_indptr) instead
    bint idx64                  # ... with int64 indices / indptr (else int32)
    const void *x_data
    const void *x_indices
    const void *x_indptr
    const Py_ssize_t *idx
    Py_ssize_t n
    bint update


cdef void _task_f32(void *ctx, int tid, int nthreads) noexcept nogil:
    _task_run[float](<StepCall *>ctx, tid, nthreads, 0)


cdef void _task_f64(void *ctx, int tid, int nthreads) noexcept nogil:
    _task_run[double](<StepCall *>ctx, tid, nthreads, 0)


cdef void _task_run(StepCall *call, int tid, int nthreads, floating kind) noexcept nogil:
    (<TrainStep>call.s).loss_part[tid] = _run(<TrainStep>call.s, call, call.X, call.Y,
                                             call.W, call.idx, call.n, call.update, tid,
                                             nthreads, kind)


cdef inline void _sparse_forward(const StepCall *c, floating *z, const Py_ssize_t *rows,
                                 Py_ssize_t n, const floating *w, Py_ssize_t m,
                                 floating scale) noexcept nogil:
    """z (n, m) := scale * X[rows] @ w for the bound CSR X (its index type's kernel)."""
    if c.idx64:
        _csr_matmul(z, m, <const floating *>c.x_data, <const int64_t *>c.x_indices,
                    <const int64_t *>c.x_indptr, rows, n, w, m, scale)
    else:
        _csr_matmul(z, m, <const floating *>c.x_data, <const int32_t *>c.x_indices,
                    <const int32_t *>c.x_indptr, rows, n, w, m, scale)


cdef inline void _sparse_scatter(const StepCall *c, floating *dw, Py_ssize_t ldw,
                                 const floating *dz, Py_ssize_t ldz, const Py_ssize_t *rows,
                                 Py_ssize_t n, Py_ssize_t m, floating scale) noexcept nogil:
    """dw (n_in, m), rows ldw apart += scale * X[rows].T @ dz (n, m), rows ldz apart."""
    if c.idx64:
        _csr_scatter(dw, ldw, dz, ldz, <const floating *>c.x_data,
                     <const int64_t *>c.x_indices, <const int64_t *>c.x_indptr, rows, n, m,
                     scale)
    else:
        _csr_scatter(dw, ldw, dz, ldz, <const floating *>c.x_data,
                     <const int32_t *>c.x_indices, <const int32_t *>c.x_indptr, rows, n, m,
                     scale)


cdef inline double _sum(const double *x, int n) noexcept nogil:
    cdef double total = 0
    cdef int i
    for i in range(n):
        total += x[i]
    return total


cdef Py_ssize_t _correct(int loss, const floating *z, const floating *y, Py_ssize_t n,
                         Py_ssize_t m) noexcept nogil:
    """Correct predictions of logits z (n, m) for targets y: rows with argmax z = argmax y
    (softmax), entries with (z > 0) = (y > 0.5) (sigmoid); 0 for regression."""
    cdef Py_ssize_t i, j, jz, jy, count = 0
    if loss == LOSS_SOFTMAX_XENT_:
        for i in range(n):
            jz = jy = 0
            for j in range(1, m):
                if z[i * m + j] > z[i * m + jz]:
                    jz = j
                if y[i * m + j] > y[i * m + jy]:
                    jy = j
            count += jz == jy
    elif loss == LOSS_SIGMOID_BCE_:
        for i in range(n * m):
            count += (z[i] > 0) == (y[i] > 0.5)
    return count


cdef double _run(TrainStep s, const StepCall *c, const void *X, const void *Y,
                 const void *W, const Py_ssize_t *idx, Py_ssize_t n, bint update, int tid,
                 int T, floating kind) noexcept nogil:
    """Thread tid's share of a step on a team of T (T = 1: the whole step): gather,
    forward, loss gradient, backward and, with `update`, each layer's update once its
    gradients and dX are done. Returns this thread's part of the summed loss. When the
    batch's loss is not finite and `update` is set, nothing after the loss runs: the
    parameters stay those of the previous step (the caller reports the divergence).

    Work split: rows of the batch for the gather and the loss; for the forward GEMM +
    bias/activation rows when the batch is at least twice as tall as the layer is wide,
    else columns (output units); columns for db; input units of a layer for dW (a
    contiguous slab of W's rows) and dX (the same columns of d[l]), so a thread updates
    exactly the rows of W it alone read for dX. Barriers where a phase needs what other
    threads wrote: before a forward layer unless it and the one before are split by
    rows, before the loss unless the last layer is split by rows, after the loss and
    after each backward layer.
    Sparse input (c.sparse): no gather of X; dW0 is zeroed first (rows of W0, as the
    update splits them); layer 0's forward pass is split by rows of the batch; its dW by
    output units (the same columns as db), with a barrier before W0's update.
    """
    cdef Py_ssize_t L = s.n_layers, l, r0, r1, c0, c1, i0, i1, m
    cdef Py_ssize_t *sz = s.sizes
    cdef floating **a = <floating **>s.a
    cdef floating **d = <floating **>s.d
    cdef floating **w = <floating **>s.w
    cdef floating **b = <floating **>s.b
    cdef floating **dw = <floating **>s.dw
    cdef floating **db = <floating **>s.db
    cdef floating *y = <floating *>s.y
    cdef floating scale = <floating>(1.0 / s.grad_div)
    cdef Py_ssize_t align = 64 // sizeof(floating)             # a cache line of entries
    cdef double loss = 0
    cdef bint prof = s.profile and tid == 0
    cdef long long t = _now() if prof else 0
    cdef bint by_rows, prev_by_rows = True           # the gather is split by rows
    cdef bint sparse = c.sparse
    nnf_part(n, tid, T, 1, &r0, &r1)
    m = sz[L]
    if sparse:                             # dW0 is a scatter-add: it starts from zero
        nnf_part(sz[0], tid, T, align, &i0, &i1)
        if i1 > i0:
            memset(dw[0] + i0 * sz[1], 0, (i1 - i0) * sz[1] * sizeof(floating))
    if r1 > r0:
        if sparse:
            pass                           # layer 0 reads the CSR rows itself
        elif s.x_src < 0:
            _gather_rows(a[0] + r0 * sz[0], <const floating *>X, idx + r0, r1 - r0, sz[0])
        else:
            _gather_convert(a[0] + r0 * sz[0], X, s.x_src, idx + r0, r1 - r0, sz[0],
                            <floating>s.x_scale)
        _gather_rows(y + r0 * m, <const floating *>Y, idx + r0, r1 - r0, m)
        if W != NULL:
            _gather_values(<floating *>s.rw + r0, <const floating *>W, idx + r0, r1 - r0)
    _mark(prof, s, P_GATHER, &t)
    for l in range(L):                                  # a[l+1] = act(a[l] @ w[l] + b[l])
        # Split by rows when the batch is taller than the layer is wide: each thread then
        # packs w[l] (sz[l] x sz[l+1]) rather than the whole batch's a[l] (n x sz[l]) for
        # BLAS, and needs only its own rows of a[l]. Otherwise by output columns.
        # A sparse first layer always by rows: each row of its output reads only that
        # row's non-zeros.
        by_rows = (sparse and l == 0) or (T > 1 and n >= 2 * sz[l + 1])
        if not (by_rows and prev_by_rows):
            nnf_barrier(T)                               # all of a[l] is needed
        if by_rows:
            if r1 > r0 and sparse and l == 0:
                _sparse_forward(c, a[1] + r0 * sz[1], idx + r0, r1 - r0, w[0], sz[1],
                                <floating>s.x_scale)
            elif r1 > r0:
                gemm_rm(False, False, r1 - r0, sz[l + 1], sz[l], 1, a[l] + r0 * sz[l], sz[l],
                        w[l], sz[l + 1], 0, a[l + 1] + r0 * sz[l + 1], sz[l + 1])
            if r1 > r0:
                _mark(prof, s, P_GEMM_FWD, &t)
                _bias_act(a[l + 1] + r0 * sz[l + 1], b[l], r1 - r0, sz[l + 1], sz[l + 1],
                          s.codes[l] if l < L - 1 else ACT_LINEAR_)
                if l < L - 1 and s.g[l] != NULL:
                    _dropout(a[l + 1] + r0 * sz[l + 1], <floating *>s.g[l] + r0 * sz[l + 1],
                             r1 - r0, sz[l + 1], sz[l + 1], r0 * sz[l + 1], s.keys[l],
                             s.drop[l], <floating>s.dscale[l], s.codes[l])
        else:
            nnf_part(sz[l + 1], tid, T, align, &c0, &c1)
            if c1 > c0:
                gemm_rm(False, False, n, c1 - c0, sz[l], 1, a[l], sz[l], w[l] + c0, sz[l + 1],
                        0, a[l + 1] + c0, sz[l + 1])
                _mark(prof, s, P_GEMM_FWD, &t)
                _bias_act(a[l + 1] + c0, b[l] + c0, n, c1 - c0, sz[l + 1],
                          s.codes[l] if l < L - 1 else ACT_LINEAR_)  # logits; loss fuses act
                if l < L - 1 and s.g[l] != NULL:
                    _dropout(a[l + 1] + c0, <floating *>s.g[l] + c0, n, c1 - c0, sz[l + 1], c0,
                             s.keys[l], s.drop[l], <floating>s.dscale[l], s.codes[l])
        _mark(prof, s, P_BIAS_ACT, &t)
        prev_by_rows = by_rows
    if not prev_by_rows:
        nnf_barrier(T)                                  # the loss needs whole rows
    if r1 > r0 and W == NULL:                                  # d[L] = y_hat - y, by rows
        loss = _loss_backward(s.loss, d[L] + r0 * m, a[L] + r0 * m, y + r0 * m, r1 - r0, m)
    elif r1 > r0:                                              # d[L] = w (y_hat - y)
        loss = _weighted_loss_backward(s.loss, d[L] + r0 * m, a[L] + r0 * m, y + r0 * m,
                                       <floating *>s.rw + r0, r1 - r0, m)
    s.correct_part[tid] = _correct(s.loss, a[L] + r0 * m, y + r0 * m, r1 - r0, m)
    s.loss_part[tid] = loss
    nnf_barrier(T)
    _mark(prof, s, P_LOSS, &t)
    if update and not isfinite(_sum(s.loss_part, T)):
        return loss        # diverged: every thread skips the backward pass and the update
    for l in range(L - 1, -1, -1):
        nnf_part(sz[l], tid, T, align, &i0, &i1)                  # input units of layer l
        nnf_part(sz[l + 1], tid, T, align, &c0, &c1)              # its output units
        if sparse and l == 0:                          # dw[:, c0:c1] += X[idx].T d[:, c0:c1]
            if c1 > c0:
                _sparse_scatter(c, dw[0] + c0, sz[1], d[1] + c0, sz[1], idx, n, c1 - c0,
                                <floating>(s.x_scale * <double>scale))
        elif i1 > i0:                                  # dw[i0:i1] = scale a[l][:, i0:i1].T d
            gemm_rm(True, False, i1 - i0, sz[l + 1], n, scale, a[l] + i0, sz[l], d[l + 1],
                    sz[l + 1], 0, dw[l] + i0 * sz[l + 1], sz[l + 1])
        _mark(prof, s, P_GEMM_DW, &t)
        if c1 > c0:
            _col_sum(db[l] + c0, d[l + 1] + c0, n, c1 - c0, sz[l + 1], scale)
        _mark(prof, s, P_DB, &t)
        if sparse and l == 0 and update:
            nnf_barrier(T)                # all columns of dw[0][i0:i1] before its update
        if l > 0 and i1 > i0:                          # d[l][:, i0:i1] = d @ w[l][i0:i1].T
            gemm_rm(False, True, n, i1 - i0, sz[l + 1], 1, d[l + 1], sz[l + 1],
                    w[l] + i0 * sz[l + 1], sz[l + 1], 0, d[l] + i0, sz[l])
            _mark(prof, s, P_GEMM_DX, &t)
            if s.g[l - 1] != NULL:                     # through dropout + activation
                _mul(d[l] + i0, <floating *>s.g[l - 1] + i0, n, i1 - i0, sz[l])
            else:
                _activation_backward(d[l] + i0, d[l] + i0, a[l] + i0, n, i1 - i0, sz[l],
                                     s.codes[l - 1])
            _mark(prof, s, P_ACT_BWD, &t)
        if update:                       # rows i0:i1 of w[l]: read by this thread only
            if i1 > i0:
                _update(s, w[l] + i0 * sz[l + 1], (i1 - i0) * sz[l + 1], True, kind)
            if c1 > c0:
                _update(s, b[l] + c0, c1 - c0, False, kind)
            _mark(prof, s, P_OPT, &t)
        if l > 0:
            nnf_barrier(T)                             # d[l] complete for layer l - 1
            _mark(prof, s, P_ACT_BWD, &t)
    return loss
