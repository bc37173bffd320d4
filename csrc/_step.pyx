# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The whole training step of a network in one compiled call.

Contents: `TrainStep`, built once per (network, workspace), `UpdateRule`, an
optimizer's update as the step runs it, and `forward`, prediction's forward pass with
the rows split over the same team.

A TrainStep keeps raw pointers to the network's flat parameter and gradient buffers and
to the layers' weights, biases and gradients in them, to the workspace's activations,
deltas and dropout masks, and, per fit (`bind` / `bind_csr`), to the training data and
the dropout seed of the run. What changes from step to step comes with each call:

    step(idx, grad_div, dropout_step, threads, t, rule) -> (loss_sum, correct)
        gathers the mini-batch idx, runs the forward pass, the fused output/loss
        gradient, the backward pass and then the update of the whole flat buffer (the
        rule, at optimizer step t);
    gradients(idx, grad_div, dropout_step, threads) -> (loss_sum, correct)
        the same without the update;
    update(t, rule, threads)
        the update alone over the whole flat buffer from the gradients (data-parallel
        training: after the Allreduce of the gradients).

An update is never applied unless every parameter and state entry stays finite (see
"the update's finiteness" below): it is proven from a few scalars (the step's largest
|gradient|, taken block by block while each is in cache, and carried bounds of |params|
and |state|), or, when they do not prove it, checked on a copy; an update that would
overflow raises FloatingPointError and leaves everything as it was. That is why the
update waits for the last gradient: each layer's update used to follow its gradients
at once, while they were in cache, but then a layer was updated before a later one's
gradients could show that the step overflows. Measured on 784-256-128-10, Adam (Zen 4,
a noisy host), the step with the whole-buffer update and the |gradient| checks took
555 / 1671 / 6507 us at batch 32 / 128 / 512 on one thread against 530 / 1857 / 6757 us
fused, and 344 / 955 / 3477 us on two against 361 / 1143 / 3568 us.

All without the GIL and without Python between the kernels, on a team of `threads`
threads (csrc/_pool.h) that split every phase, each calling single-threaded BLAS on its
block (nnfast's OpenBLAS is single-threaded always: nnfast._threads). The step keeps no
counters: the training loop owns
the optimizer's step number t and the dropout step, and passes them in. An UpdateRule is
built by the optimizer (nnfast.optim, Optimizer._rule) from its hyperparameters whenever
they may have changed; Adam's bias corrections of step t are computed in one place,
_ops._adam_coefs, which _optim.adam_update uses too.

Why: a step is ~15 kernel calls, and each `def` call with its memoryviews costs ~0.7 us of
Python dispatch: at batch 32 (1875 steps an epoch) that was ~10% of an epoch. And with
BLAS's own threads only the matrix products used the second core: the optimizer, the
gather and the elementwise passes (~25% of a step at batch 32) ran on one.

Conventions: the same kernel bodies as _kernels.pyx (csrc/_ops.pxd). All arrays are
checked here once (dtype, C order, shapes, the layers' offsets in the flat buffers) when
the step is built, data is bound or a rule is built; a step then only compares the rule's
size and dtype with the parameters'. The array objects are kept alive by these objects,
and the network never rebinds its views. Indices are checked against the bound data on
every step (n comparisons).

A step is a plan of stages (`TrainStep._plan`: gather, each layer forward, the loss,
each layer backward), each cut into blocks, and `_step_item` runs one block of one
stage, on whichever thread of the team claimed it (csrc/_pool.h). It is a short driver
over per-layer helpers that follow
nnfast.reference.ReferenceNetwork._backprop: `_gather_batch`, `_forward_layer` (a block
of rows x columns of one layer's output: the split by rows and the split by columns are
the same call with other ranges), `_output_gradient`, `_backward_weights` (a block of a
layer's input units: dW rows, dX columns), `_backward_bias` (a block of its output
units: db) and `_update_flat`. The work split (the grid's blocks, see
_n_blocks) is in `_plan` and `_step_item`, and so are the profiling marks between
helpers; a helper that spans two phases (a product and its activation)
marks the boundary on the clock `_step_item` passes it (NULL: not profiling).

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
from libc.math cimport isfinite, fabs
from libc.float cimport FLT_MAX, DBL_MAX
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport pread
from libc.errno cimport errno, EINTR
from _blas cimport gemm_rm
from _ops cimport (_bias_act, _col_sum, _activation_backward, _loss_backward, _gather_rows,
                   _weighted_loss_backward, _gather_values,
                   _dropout, _mul, nnf_dropout_key, _gather_convert, SRC_UINT8_,
                   SRC_FLOAT32_, SRC_FLOAT64_, ACT_LINEAR_, LOSS_SOFTMAX_XENT_,
                   LOSS_SIGMOID_BCE_, _csr_matmul, _csr_scatter, _csr_bad_row,
                   ACT_LAST_HIDDEN_, ACT_LAST_, LOSS_LAST_)
from _ops cimport AdamCoefs, _adam_coefs, _adam, _sgd, _max_abs

cdef extern from "_pool.h" nogil:
    ctypedef void (*nnf_item_fn)(void *ctx, int phase, Py_ssize_t item, int tid) noexcept nogil
    ctypedef struct nnf_task_t:
        nnf_item_fn fn
        void *ctx
        int n_phases
        const Py_ssize_t *phase_end
    int NNF_MAX_THREADS
    int nnf_team_run(const nnf_task_t *task, int want)
    void nnf_part(Py_ssize_t n, int tid, int nthreads, Py_ssize_t align, Py_ssize_t *begin,
                  Py_ssize_t *end)

cdef extern from "_bf16.h" nogil:
    int nnf_bf16_path_available(int path)
    void nnf_gemm_bf16(int path, int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N,
                       Py_ssize_t K, float alpha, const float *a, Py_ssize_t lda,
                       const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc)

cdef extern from "_sgemm.h" nogil:
    int nnf_sgemm_available()
    void nnf_sgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   float alpha, const float *a, Py_ssize_t lda, const float *b,
                   Py_ssize_t ldb, float *c, Py_ssize_t ldc)

import os

import numpy as np

# A step's or forward's matmul path (TrainStep.matmul_path): BLAS, nnfast's own float32
# products (csrc/_sgemm.h), or >= 0: a bfloat16 path of csrc/_bf16.h.
cdef enum:
    MM_BLAS = -1
    MM_F32 = -2
MATMUL_BLAS = MM_BLAS
MATMUL_F32 = MM_F32

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

# The work grid. Every phase of a step is cut into blocks whose number and bounds depend
# on the shapes and on the process's CPU count at import (_grid_cpus) only, never on the
# team size: the threads of a team claim the same blocks one by one (csrc/_pool.h), and
# one thread runs them all in the same calls. So every matrix product is the same BLAS
# call, with the same shape, for any team, and the results are the same bits: BLAS kernels pick
# their summation order by shape, so a split that followed T changed the last bits (1 vs
# 2 threads differed by 3e-8 on [100, 96, 48, 10], batch 32). The loss is summed in blocks
# of LOSS_ROWS rows, in block order.
# GRAIN: the least work of a block, in flops. A block runs ~10-20 us on one core, so that
# the team's wake-up and waits between phases (~1-3 us each) stay small beside it; smaller phases run
# as one block, and a step whose phases all do is run by the caller alone, without the
# team (measured: [16,32,3] batch 16 took 3.8 us on one thread, 8.8 us on two).
cdef enum:
    LOSS_ROWS = 16
    GMAX_STRIDE = 8           # doubles between threads' slots: one cache line each
    PREDICT_ROWS = 8          # prediction's row blocks are cut at multiples of this
cdef double GRAIN = 2e6
cdef double UPDATE_FLOPS = 40        # a parameter's update takes as long as ~40 flops of
                                     # a product (Adam 0.35 ns, SGD 0.16 ns a float32
                                     # parameter on one Zen 4 core, with its |gradient|)
cdef double GROW = 1 + 2.0 ** -20    # _next_bounds: > the rounding of 6 float32 operations
cdef Py_ssize_t _grid_cpus = 1            # blocks per phase at most (nnfast._threads sets it)


def _set_grid_cpus(Py_ssize_t cpus):
    """Set the most blocks of a phase (nnfast._threads: the process's CPUs at import, at
    most 16; tests set others to check that results do not depend on the team size).
    Returns the previous."""
    global _grid_cpus
    if not 1 <= cpus <= 64:
        raise ValueError(f"_set_grid_cpus: cpus must be in [1, 64], got {cpus}")
    previous, _grid_cpus = _grid_cpus, cpus
    return previous




def _set_grain(double flops):
    """Set the least work of a block (GRAIN, in flops; for measurements). Returns the
    previous."""
    global GRAIN
    if not flops >= 1:
        raise ValueError(f"_set_grain: flops must be >= 1, got {flops}")
    previous, GRAIN = GRAIN, flops
    return previous


cdef inline Py_ssize_t _n_blocks(Py_ssize_t units, Py_ssize_t align,
                                 double flops) noexcept nogil:
    """Blocks of a phase over `units` (cut at multiples of `align`) doing `flops`: at
    least GRAIN flops each, at most the grid's CPUs and the aligned groups, at least 1."""
    cdef double b = flops / GRAIN
    cdef Py_ssize_t groups = (units + align - 1) // align
    if b > _grid_cpus:
        b = _grid_cpus
    if b > groups:
        b = groups
    return <Py_ssize_t>b if b >= 2 else 1


cdef inline bint _forward_by_rows(const StepCall *c, Py_ssize_t l, Py_ssize_t n,
                                  Py_ssize_t m) noexcept nogil:
    """Layer l's forward pass is cut by rows of the batch when the batch is at least twice
    as tall as the layer is wide (each block then packs w[l] for BLAS rather than all of
    a[l]), else by output columns; the sparse first layer always by rows (a row's output
    reads only its own non-zeros)."""
    return (c.sparse and l == 0) or n >= 2 * m


# The blocks of each phase of layer l (k inputs, m outputs, a batch of n), for _plan and
# for the team size a step can use (_blocks_at_most): one definition for both.

cdef inline Py_ssize_t _forward_blocks(const StepCall *c, Py_ssize_t l, Py_ssize_t n,
                                       Py_ssize_t k, Py_ssize_t m,
                                       Py_ssize_t align) noexcept nogil:
    """Blocks of layer l's forward product: of rows of the batch, or of output columns."""
    cdef double flops = 2.0 * n * k * m
    return _n_blocks(n, 1, flops) if _forward_by_rows(c, l, n, m) else _n_blocks(m, align,
                                                                                   flops)


cdef inline Py_ssize_t _input_blocks(Py_ssize_t l, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m,
                                     Py_ssize_t align) noexcept nogil:
    """Blocks of layer l's input units in the backward pass: dW's rows, with dX's columns
    for l > 0 (a second product)."""
    return _n_blocks(k, align, (4.0 if l > 0 else 2.0) * n * k * m)


cdef inline Py_ssize_t _output_blocks(const StepCall *c, Py_ssize_t l, Py_ssize_t n,
                                      Py_ssize_t k, Py_ssize_t m,
                                      Py_ssize_t align) noexcept nogil:
    """Blocks of layer l's output units in the backward pass: db alone is one light block;
    the sparse first layer's scatter-added dW is split with it."""
    return _n_blocks(m, align, 2.0 * n * k * m) if c.sparse and l == 0 else 1


cdef inline void _block(Py_ssize_t units, Py_ssize_t j, Py_ssize_t blocks, Py_ssize_t align,
                        Py_ssize_t *begin, Py_ssize_t *end) noexcept nogil:
    """[begin, end) of block j of `blocks` over `units`, cut at multiples of align."""
    nnf_part(units, <int>j, <int>blocks, align, begin, end)


cdef inline void _matmul(int path, bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                         Py_ssize_t k, floating alpha, const floating *a, Py_ssize_t lda,
                         const floating *b, Py_ssize_t ldb, floating *c,
                         Py_ssize_t ldc) noexcept nogil:
    """c (m, n) := alpha * op(a) @ op(b): BLAS, or for float32 with a bfloat16 path
    (path >= 0, csrc/_bf16.h) bfloat16 inputs with float32 sums, or with MATMUL_F32
    nnfast's own float32 products (csrc/_sgemm.h)."""
    if floating is float:
        if path >= 0:
            nnf_gemm_bf16(path, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, c, ldc)
            return
        if path == MM_F32:
            nnf_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, c, ldc)
            return
    gemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc)


def _check_matmul_path(int path, dtype):
    """A TrainStep's or forward's matmul path: MATMUL_BLAS, or MATMUL_F32 or a bfloat16
    path this CPU runs, which need float32."""
    if path == MATMUL_BLAS:
        return
    if path == MATMUL_F32:
        if not nnf_sgemm_available():
            raise ValueError("matmul path MATMUL_F32 needs AVX-512F, which this CPU lacks")
        if dtype != np.float32:
            raise ValueError(f"nnfast's float32 matrix products need float32, not {dtype}")
        return
    if not nnf_bf16_path_available(path) or path < 0:
        raise ValueError(f"matmul path {path} is not one this CPU runs")
    if dtype != np.float32:
        raise ValueError(f"bfloat16 matrix products need float32, not {dtype}")


cdef struct Update:
    # An update rule resolved for one optimizer step t (OPT_NONE: no update)
    int kind
    char *s1                    # the state buffers' bases (the flat parameters' layout)
    char *s2
    AdamCoefs adam              # Adam's scalars of step t (_ops._adam_coefs)
    double lr, momentum, weight_decay
    bint nesterov


cdef class UpdateRule:
    """An optimizer's update over state buffers with the flat parameter layout.

    Parameters
    ----------
    kind : "adam" (Adam / AdamW: state = (m, v)) or "sgd" (SGD with optional (Nesterov)
        momentum: state = (velocity,))
    state : the state arrays: 1-D, C-contiguous, writable, float32 or float64, all of one
        size and dtype (those of the parameters they belong to); kept alive here
    lr, beta1, beta2, eps, momentum, nesterov, weight_decay : hyperparameters as in
        nnfast.optim (checked there); weight decay applies to weights only

    The optimizer builds one from its current hyperparameters (Optimizer._rule), again
    whenever they may have changed; the step number t comes with each update
    (TrainStep.step / TrainStep.update).
    """
    cdef readonly str kind
    cdef readonly tuple state
    cdef readonly double lr, beta1, beta2, eps, momentum, weight_decay
    cdef readonly bint nesterov
    cdef readonly Py_ssize_t size           # entries of each state array
    cdef readonly object dtype
    cdef int opt
    cdef bint is_double
    cdef char *s1
    cdef char *s2

    def __cinit__(self):
        self.opt = OPT_NONE
        self.s1 = self.s2 = NULL

    def __init__(self, kind, state, double lr, double beta1=0.9, double beta2=0.999,
                 double eps=1e-8, double momentum=0.0, bint nesterov=False,
                 double weight_decay=0.0):
        if not isinstance(kind, str) or kind not in ("adam", "sgd"):
            raise ValueError(f"UpdateRule: unknown kind {kind!r}; expected 'adam' or 'sgd'")
        need = 2 if kind == "adam" else 1
        if not isinstance(state, (tuple, list)) or len(state) != need:
            raise ValueError(f"UpdateRule: {kind} needs {need} state array"
                             f"{'s (m, v)' if need == 2 else ' (velocity,)'}, got "
                             f"{len(state) if isinstance(state, (tuple, list)) else type(state).__name__}")
        state = tuple(state)
        for arr in state:
            if not (isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.size > 0
                    and arr.dtype in (np.float32, np.float64) and arr.flags.c_contiguous
                    and arr.flags.writeable):
                raise ValueError(f"UpdateRule: a state array must be a non-empty "
                                 f"C-contiguous writable 1-D float32 or float64 array, got "
                                 f"{getattr(arr, 'dtype', type(arr).__name__)} "
                                 f"{getattr(arr, 'shape', '')}")
            if arr.dtype != state[0].dtype or arr.shape != state[0].shape:
                raise ValueError(f"UpdateRule: the state arrays differ: {state[0].dtype} "
                                 f"{state[0].shape} and {arr.dtype} {arr.shape}")
        self.kind = str(kind)
        self.state = state
        self.size = state[0].shape[0]
        self.dtype = state[0].dtype
        self.is_double = self.dtype == np.float64
        self.s1 = <char *><size_t>state[0].ctypes.data
        self.s2 = <char *><size_t>state[1].ctypes.data if need == 2 else NULL
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.opt = OPT_ADAM if kind == "adam" else OPT_SGD

    cdef void _at(self, Py_ssize_t t, Update *u) noexcept:
        """u := this rule at optimizer step t >= 1."""
        u.kind = self.opt
        u.s1, u.s2 = self.s1, self.s2
        u.adam = _adam_coefs(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, t)
        u.lr, u.momentum, u.weight_decay = self.lr, self.momentum, self.weight_decay
        u.nesterov = self.nesterov

    def __repr__(self):
        hyper = (f"beta1={self.beta1!r}, beta2={self.beta2!r}, eps={self.eps!r}"
                 if self.opt == OPT_ADAM else
                 f"momentum={self.momentum!r}, nesterov={self.nesterov!r}")
        return (f"UpdateRule({self.kind!r}, lr={self.lr!r}, {hyper}, "
                f"weight_decay={self.weight_decay!r}, {self.size} {self.dtype})")


cdef class TrainStep:
    """A network's training step over one workspace, as one compiled call.

    Parameters
    ----------
    params, grads : the network's flat parameter and gradient buffers (1-D, all weights
        then all biases); the layer arrays below must be views of them at the same
        offsets, weights in the first n_decay entries (the decayed ones), biases after
    coefs, intercepts, dcoefs, dintercepts : lists of the L weight (n_in, n_out), bias
        (n_out,) and gradient arrays, layer by layer
    a, d : lists of L + 1 workspace arrays (rows, sizes[l]); d[0] is unused (may be None),
        and a[0] (the gathered input batch) may be None for a step that only ever gets
        sparse data (bind_csr)
    y : workspace array (rows, sizes[-1]) for the targets
    codes : list of L - 1 hidden activation codes
    loss : LOSS_* code of the output layer
    dropout : optional L - 1 inverted-dropout rates in [0, 1) of the hidden layers (None
        or all 0: no dropout)
    masks : with dropout, L - 1 workspace arrays (rows, sizes[l + 1]) that get
        act' * mask / (1 - p), or None where the rate is 0

    Then `bind` the data of a run, and call `step`, `gradients` or `update` (module
    docstring). `threads` of a call is the size of the team that runs it; with more than
    one, nnfast's BLAS must be single-threaded during the call (else every team thread
    starts BLAS threads too). The gradient arrays keep the last batch's gradient.
    """
    cdef Py_ssize_t n_layers, rows, n_data
    cdef readonly Py_ssize_t n_params       # entries of the flat buffers
    cdef readonly Py_ssize_t n_decay        # of them weights: [0, n_decay) is decayed
    cdef Py_ssize_t *sizes
    cdef void **a
    cdef void **d
    cdef void **w
    cdef void **b
    cdef void **dw
    cdef void **db
    cdef void *y
    cdef char *p0                           # the flat parameters and gradients
    cdef char *g0
    cdef const void *X
    cdef const void *Y
    cdef const void *W                      # sample weights (N,) of the bound data, or NULL
    cdef void *rw                           # the batch's row weights (rows,)
    cdef int x_src                          # X's SRC_* type, -1: the step's dtype, unscaled
    cdef bint x_sparse                      # X is the CSR (x_data, x_indices, x_indptr)
    # X is a file (bind_file): rows of x_row_bytes from x_offset of the open file x_fd,
    # read with pread (converted ones through x_stage, rows x_row_bytes apart); x_bad:
    # per gather item, the first row it could not read and the errno (-1: all read)
    cdef int x_fd
    cdef Py_ssize_t x_offset, x_row_bytes
    cdef char *x_stage
    cdef Py_ssize_t *x_bad
    cdef Py_ssize_t *iota                   # 0, 1, ..., rows - 1
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
    cdef object _keep, _data, dtype
    # dropout of hidden layer l (None where off): g[l] = act' * mask / (1 - p), the
    # threshold and scale of its mask, and this step's key; the seed of the bound run
    cdef void **g
    cdef unsigned int *drop
    cdef double *dscale
    cdef unsigned long long *keys
    cdef readonly bint has_dropout
    cdef unsigned long long dropout_seed
    cdef double *loss_block                 # the loss of each LOSS_ROWS rows of a batch
    cdef Py_ssize_t *correct_block          # ... and their correct predictions
    cdef Stage *plan                        # a step's stages (2 L + 3 at most, _plan)
    cdef Py_ssize_t *plan_end               # their items, cumulative
    cdef long long clock0                   # profiling: the caller's clock during a step
    cdef int mm_path                        # MM_BLAS, MM_F32 or a bfloat16 path (_bf16.h)
    # The proof that an update stays finite (_proven): the largest |gradient| of the
    # step so far, per team thread (GMAX_STRIDE apart: no false sharing), and bounds of
    # |params|, |state 1| and |state 2| after the last update of `bounded_rule`'s state
    # (None: taken afresh, exactly, at the next update)
    cdef double *gmax
    cdef double bound[3]
    cdef object bounded_rule
    cdef object params_array
    cdef readonly Py_ssize_t checked_updates  # updates that needed the checked path

    def __cinit__(self):
        self.profile = False
        for i in range(N_PHASES):
            self.phase_ns[i] = 0
        self.sizes = NULL
        self.a = self.d = self.w = self.b = self.dw = self.db = NULL
        self.p0 = self.g0 = NULL
        self.codes = NULL
        self.g = NULL
        self.drop = NULL
        self.dscale = NULL
        self.keys = NULL
        self.has_dropout = False
        self.dropout_seed = 0
        self.X = self.Y = self.W = NULL
        self.x_data = self.x_indices = self.x_indptr = NULL
        self.x_sparse = self.x_idx64 = False
        self.x_fd = -1
        self.x_stage = NULL
        self.x_bad = NULL
        self.iota = NULL
        self.rw = NULL
        self.loss_block = NULL
        self.mm_path = -1
        self.correct_block = NULL
        self.plan = NULL
        self.plan_end = NULL
        self.gmax = NULL
        self.bounded_rule = None
        self.checked_updates = 0

    def __dealloc__(self):
        free(self.gmax)
        free(self.x_stage)
        free(self.x_bad)
        free(self.iota)
        free(self.rw)
        free(self.loss_block)
        free(self.correct_block)
        free(self.plan)
        free(self.plan_end)
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

    def __init__(self, params, grads, coefs, intercepts, dcoefs, dintercepts, a, d, y, codes,
                 int loss, dropout=None, masks=None):
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
        self.loss_block = <double *>malloc((self.rows // LOSS_ROWS + 1) * sizeof(double))
        self.correct_block = <Py_ssize_t *>malloc((self.rows // LOSS_ROWS + 1)
                                                  * sizeof(Py_ssize_t))
        self.plan = <Stage *>malloc((2 * L + 3) * sizeof(Stage))
        self.plan_end = <Py_ssize_t *>malloc((2 * L + 3) * sizeof(Py_ssize_t))
        self.gmax = <double *>malloc(NNF_MAX_THREADS * GMAX_STRIDE * sizeof(double))
        if (self.gmax == NULL or self.correct_block == NULL or self.plan == NULL or self.plan_end == NULL
                or self.loss_block == NULL or self.g == NULL or self.rw == NULL or self.drop == NULL or self.dscale == NULL or self.keys == NULL
                or self.sizes == NULL or self.codes == NULL or self.a == NULL or self.d == NULL
                or self.w == NULL or self.b == NULL or self.dw == NULL or self.db == NULL):
            raise MemoryError()
        for l in range(L):
            self.g[l] = NULL
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
        self._flat(params, grads, keep)
        self._set_dropout(dropout, masks, keep)
        self._keep = keep

    cdef _flat(self, params, grads, list keep):
        """Check that every layer's arrays are views of the flat buffers at the same
        offsets, weights first (n_decay entries), then biases; keep their bases."""
        cdef Py_ssize_t L = self.n_layers, l, k, off, count, lo, hi
        cdef Py_ssize_t n_w = 0, n_b = 0, item = self.dtype.itemsize
        for l in range(L):
            n_w += self.sizes[l] * self.sizes[l + 1]
            n_b += self.sizes[l + 1]
        n = params.shape[0] if isinstance(params, np.ndarray) and params.ndim == 1 else -1
        if n != n_w + n_b:
            raise ValueError(f"TrainStep: params must be a 1-D array of the layers' "
                             f"{n_w + n_b} parameters, got "
                             f"{getattr(params, 'shape', type(params).__name__)}")
        cdef char *p0 = <char *>self._pointer(params, (n,), keep)
        cdef char *g0 = <char *>self._pointer(grads, (n,), keep)
        cdef char *pk
        cdef char *gk
        for l in range(L):
            for k in range(2):
                pk = <char *>(self.w[l] if k == 0 else self.b[l])
                gk = <char *>(self.dw[l] if k == 0 else self.db[l])
                count = self.sizes[l + 1] * (self.sizes[l] if k == 0 else 1)
                lo, hi = (0, n_w) if k == 0 else (n_w, n)
                off = pk - p0
                if (off != gk - g0 or off % item or off // item < lo
                        or off // item + count > hi):
                    raise ValueError(f"TrainStep: layer {l}'s parameters or gradients are "
                                     f"not views of params / grads at the same offsets "
                                     f"(all weights first, then all biases)")
        self.p0, self.g0 = p0, g0
        self.n_params, self.n_decay = n, n_w
        self.params_array = params

    cdef _set_dropout(self, rates, masks, list keep):
        """Inverted dropout on the hidden layers: rates (L - 1 floats in [0, 1); 0: none)
        and masks (L - 1 workspace arrays (rows, sizes[l + 1]), None where the rate is 0).
        The mask of a step comes from (dropout_seed, dropout_step, layer)."""
        from nnfast._kernels import dropout_threshold
        cdef Py_ssize_t l, L = self.n_layers
        if rates is None:
            return
        if len(rates) != L - 1:
            raise ValueError(f"TrainStep: expected {L - 1} dropout rates, got {len(rates)}")
        if not any(float(p) != 0 for p in rates):
            return
        if masks is None or len(masks) != L - 1:
            raise ValueError(f"TrainStep: dropout needs {L - 1} masks (None where the rate "
                             f"is 0)")
        for l in range(L - 1):
            p = float(rates[l])
            if p == 0:
                continue
            self.drop[l] = dropout_threshold(p)
            self.dscale[l] = 1 / (1 - p)
            self.g[l] = self._pointer(masks[l], (self.rows, self.sizes[l + 1]), keep)
            self.has_dropout = True

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

    def bind(self, X, Y, double x_scale=1.0, W=None, unsigned long long dropout_seed=0):
        """Use X (N, sizes[0]) and Y (N, sizes[-1]) as the training data (checked arrays,
        kept alive until the next bind or release), and dropout_seed for the dropout masks
        of this run. X may be uint8, float32 or float64 (an np.memmap too): its rows are
        converted to the step's dtype and multiplied by x_scale as each mini-batch is
        gathered; Y has the step's dtype. W (N,) of the step's dtype, optional: sample
        weights (finite, >= 0): a row's loss and gradient are multiplied by its weight
        (the caller passes the batch's weight sum as the step's grad_div)."""
        keep = []
        n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim == 2 else -1
        if n < 1:
            raise ValueError("TrainStep.bind: X must be a non-empty 2-D array")
        if self.a[0] == NULL:
            raise ValueError("TrainStep.bind: this step has no input buffer (a[0] is None): "
                             "it takes sparse data only (bind_csr)")
        src = self._x_source("bind", X.dtype, x_scale)
        if not (X.flags.c_contiguous and X.shape == (n, self.sizes[0])):
            raise ValueError(f"TrainStep.bind: X must be C-contiguous of shape (N, "
                             f"{self.sizes[0]}), got {X.shape}")
        keep.append(X)
        cdef const void *yp = self._pointer(Y, (n, self.sizes[self.n_layers]), keep, False)
        cdef const void *wp = NULL if W is None else self._pointer(W, (n,), keep, False)
        self.Y, self.W = yp, wp
        self.X = <const void *><size_t>X.ctypes.data
        self.x_src, self.x_scale = src, x_scale
        self.x_sparse = False
        self.x_fd = -1
        self.n_data = n
        self.dropout_seed = dropout_seed
        self._data = keep

    cdef int _x_source(self, str name, dtype, double x_scale) except -2:
        """The SRC_* type the gather converts X's rows from (-1: the step's dtype, rows
        copied as they are)."""
        if dtype == self.dtype and x_scale == 1:
            return -1
        if dtype in (np.uint8, np.float32, np.float64):     # native byte order only
            return {"uint8": SRC_UINT8_, "float32": SRC_FLOAT32_,
                    "float64": SRC_FLOAT64_}[dtype.name]
        raise ValueError(f"TrainStep.{name}: X must be uint8, float32 or float64, got "
                         f"{dtype}")

    def bind_file(self, X, Y, double x_scale=1.0, W=None, unsigned long long dropout_seed=0):
        """As `bind`, for X an NpyFile (nnfast._npyfile) of (N, sizes[0]) rows: each
        mini-batch's rows are read from its open file with pread as they are gathered
        (on the team, each thread its own rows). A row the file no longer holds ends the
        step before anything is computed: X.changed(...) (DataFileChanged) is raised, the
        parameters as they were."""
        cdef Py_ssize_t n = X.shape[0], i
        if self.a[0] == NULL:
            raise ValueError("TrainStep.bind_file: this step has no input buffer (a[0] is "
                             "None): it takes sparse data only (bind_csr)")
        if n < 1 or X.shape[1] != self.sizes[0] or X.fd < 0:
            raise ValueError(f"TrainStep.bind_file: X must be an open file of (N >= 1, "
                             f"{self.sizes[0]}) rows, got {X.shape}")
        src = self._x_source("bind_file", X.dtype, x_scale)
        keep = [X]
        cdef const void *yp = self._pointer(Y, (n, self.sizes[self.n_layers]), keep, False)
        cdef const void *wp = NULL if W is None else self._pointer(W, (n,), keep, False)
        cdef Py_ssize_t row_bytes = X.row_bytes
        if self.x_bad == NULL:
            self.x_bad = <Py_ssize_t *>malloc(2 * NNF_MAX_THREADS * sizeof(Py_ssize_t))
            self.iota = <Py_ssize_t *>malloc(self.rows * sizeof(Py_ssize_t))
            if self.x_bad == NULL or self.iota == NULL:
                raise MemoryError()
            for i in range(self.rows):
                self.iota[i] = i
        free(self.x_stage)
        self.x_stage = NULL
        if src >= 0:
            self.x_stage = <char *>malloc(self.rows * row_bytes)
            if self.x_stage == NULL:
                raise MemoryError()
        self.Y, self.W = yp, wp
        self.X = NULL
        self.x_fd, self.x_offset, self.x_row_bytes = X.fd, X.offset, row_bytes
        self.x_src, self.x_scale = src, x_scale
        self.x_sparse = False
        self.n_data = n
        self.dropout_seed = dropout_seed
        self._data = keep

    def bind_csr(self, data, indices, indptr, Y, double x_scale=1.0, W=None,
                 unsigned long long dropout_seed=0):
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
        cdef const void *yp = self._pointer(Y, (n, self.sizes[self.n_layers]), keep, False)
        cdef const void *wp = NULL if W is None else self._pointer(W, (n,), keep, False)
        self.Y, self.W = yp, wp
        self.X = NULL
        self.x_data = <const void *><size_t>data.ctypes.data
        self.x_indices, self.x_indptr, self.x_idx64 = xi, xp, idx64
        self.x_src, self.x_scale = -1, x_scale
        self.x_sparse = True
        self.x_fd = -1
        self.n_data = n
        self.dropout_seed = dropout_seed
        self._data = keep

    property matmul_path:
        """MATMUL_BLAS (-1): the matrix products are BLAS calls in the step's dtype;
        MATMUL_F32 (-2): nnfast's own float32 products (csrc/_sgemm.h); else the code of
        the bfloat16 path (csrc/_bf16.h) they run on (float32 steps only)."""
        def __get__(self):
            return self.mm_path

        def __set__(self, int path):
            _check_matmul_path(path, self.dtype)
            self.mm_path = path

    def timings(self):
        """Seconds spent in each phase (PHASES) while `profile` was on, since the last
        reset_timings(). Profiling reads the clock ~20 times a step (~0.5 us)."""
        return {name: self.phase_ns[i] * 1e-9 for i, name in enumerate(PHASES)}

    def reset_timings(self):
        for i in range(N_PHASES):
            self.phase_ns[i] = 0

    def release(self):
        """Forget the bound data (it is no longer kept alive) and the run's dropout seed."""
        self.X = self.Y = self.W = NULL
        self.x_data = self.x_indices = self.x_indptr = NULL
        self.x_sparse = False
        self.x_fd = -1
        self.n_data = 0
        self.dropout_seed = 0
        self._data = None

    cdef _check_rule(self, str name, Py_ssize_t t, UpdateRule rule, int threads):
        if t < 1:
            raise ValueError(f"TrainStep.{name}: t (the optimizer step this update makes) "
                             f"must be >= 1, got {t}")
        if rule.size != self.n_params or rule.is_double != self.is_double:
            raise ValueError(f"TrainStep.{name}: the rule's state ({rule.size} {rule.dtype}) "
                             f"does not fit the parameters ({self.n_params} {self.dtype})")
        if threads < 1:
            raise ValueError(f"TrainStep.{name}: threads must be >= 1, got {threads}")

    def step(self, const Py_ssize_t[::1] idx, double grad_div, unsigned long long dropout_step,
             int threads, Py_ssize_t t, UpdateRule rule not None):
        """One training step on the rows idx of the bound data, on a team of `threads`:
        gather, forward, backward (the gradient arrays get the batch's gradient, its sum
        divided by grad_div, or by the batch's size for grad_div = 0) and `rule`'s update
        of optimizer step t >= 1 once all of them are done; no update when the batch's
        loss is not finite (the caller reports the divergence). An update that would
        make a parameter or a state entry inf or NaN is not applied: FloatingPointError,
        with the parameters and the optimizer's state as before it. Dropout masks of (the bound dropout_seed, dropout_step, layer).
        Returns (loss_sum, correct): the summed loss of the batch (weighted, with sample
        weights bound) and its number of correct predictions: rows whose logits' argmax
        is the target's (softmax), entries whose logit sign agrees with the 0/1 target
        (sigmoid), 0 (linear). grad_div > 0 replaces the batch size as the divisor of the
        summed gradient (the batch's weight sum; a part of a larger batch: data-parallel
        training)."""
        self._check_rule("step", t, rule, threads)
        return self._call("step", &idx[0] if idx.shape[0] else NULL, idx.shape[0], grad_div,
                          dropout_step, threads, rule, t)

    def gradients(self, const Py_ssize_t[::1] idx, double grad_div,
                  unsigned long long dropout_step, int threads):
        """As `step`, without the update: the gradient arrays get the batch's gradient.
        Returns (loss_sum, correct)."""
        if threads < 1:
            raise ValueError(f"TrainStep.gradients: threads must be >= 1, got {threads}")
        return self._call("gradients", &idx[0] if idx.shape[0] else NULL, idx.shape[0],
                          grad_div, dropout_step, threads, None, 0)

    def update(self, Py_ssize_t t, UpdateRule rule not None, int threads):
        """`rule`'s update of optimizer step t >= 1 over all the flat parameters from the
        flat gradients (weight decay on the weights [0, n_decay) only), on a team of
        `threads`, each thread on its own cache-line-aligned range (elementwise: the same
        bits for any team size, and as the update inside `step`). First the largest
        |gradient|, then the update when `_proven` (else the checked path): an update
        that would make a parameter or a state entry inf or NaN is never applied
        (FloatingPointError, as in `step`)."""
        self._check_rule("update", t, rule, threads)
        if rule is not self.bounded_rule:
            self._take_bounds(rule)
        self._clear_gmax()
        cdef UpdateCall call
        self._update_call(&call, t, rule, threads, True)
        self._run_update(&call, 2)
        self._finish_update(&call.u, t, rule, threads, 0.0)

    cdef void _update_call(self, UpdateCall *call, Py_ssize_t t, UpdateRule rule,
                           int threads, bint gated) noexcept:
        """call := rule's update at step t, in at most `threads` parts."""
        call.s = <void *>self
        rule._at(t, &call.u)
        call.parts = <int>min(threads, _update_blocks(self.n_params, self.dtype.itemsize))
        call.gated = gated

    cdef _run_update(self, UpdateCall *call, int n_phases):
        """Run call on the team: with 2 phases the largest |gradient| of each part, then
        the update (call.gated: only when _proven); with 1 the update alone."""
        cdef Py_ssize_t items[2]
        items[0] = call.parts
        items[1] = 2 * call.parts
        cdef nnf_task_t task
        task.fn = _update_item_f64 if self.is_double else _update_item_f32
        task.ctx = call
        task.n_phases = n_phases
        task.phase_end = items
        call.first_phase = 2 - n_phases
        if self.profile:
            self.clock0 = _now()
        with nogil:
            nnf_team_run(&task, call.parts)

    cdef _clear_gmax(self):
        cdef int i
        for i in range(NNF_MAX_THREADS):
            self.gmax[i * GMAX_STRIDE] = 0

    cdef _take_bounds(self, UpdateRule rule):
        """Bounds for the next update of rule's state: the largest |params| and |state|,
        exactly (inf where one is not finite: no update is then proven)."""
        self.bound[0] = _flat_max_abs(self.p0, self.n_params, self.is_double)
        self.bound[1] = _flat_max_abs(rule.s1, rule.size, self.is_double)
        self.bound[2] = 0 if rule.s2 == NULL else _flat_max_abs(rule.s2, rule.size,
                                                                self.is_double)
        self.bounded_rule = rule

    cdef _finish_update(self, const Update *u, Py_ssize_t t, UpdateRule rule, int threads,
                        double loss_sum):
        """After a step's or update's run: the bounds after the update the team applied,
        or, when it was not proven finite (the team applied nothing), the checked path."""
        cdef double after[3]
        if _next_bounds(u, _gmax(self), self.bound, _limit(self.is_double), after):
            self.bound[0], self.bound[1], self.bound[2] = after[0], after[1], after[2]
        else:
            self._checked_update(t, rule, threads, loss_sum)

    cdef _checked_update(self, Py_ssize_t t, UpdateRule rule, int threads, double loss_sum):
        """The update that no bound proved finite: applied on the real arrays after a copy
        of them, kept when every parameter and state entry is finite, else undone from the
        copy (the same kernel, so the same bits as an unchecked update) and
        FloatingPointError. Rare (a learning rate near the dtype's range, or gradients
        near it) and costs a copy of the parameters and the state."""
        arrays = (self.params_array,) + tuple(rule.state)
        saved = [a.copy() for a in arrays]
        self.checked_updates += 1
        self.bounded_rule = None                 # the bounds are taken afresh next time
        cdef UpdateCall call
        self._update_call(&call, t, rule, threads, False)
        self._run_update(&call, 1)
        bad = [int(np.count_nonzero(~np.isfinite(a))) for a in arrays]
        if not any(bad):
            return
        for a, copy in zip(arrays, saved):
            np.copyto(a, copy)
        names = ("parameters",) + (("entries of Adam's m", "entries of Adam's v")
                                   if rule.kind == "adam" else ("entries of the velocity",))
        what = ", ".join(f"{k} {name}" for k, name in zip(bad, names) if k)
        raise FloatingPointError(
            f"TrainStep: the update of optimizer step {t} would make {what} inf or NaN "
            f"(lr={rule.lr!r}, the largest |gradient| {_gmax(self):g}, batch loss sum "
            f"{loss_sum:g}); it was not applied: the parameters and the optimizer's state "
            f"are those before it")

    cdef tuple _call(self, str name, const Py_ssize_t *idx, Py_ssize_t n, double grad_div,
                     unsigned long long dropout_step, int threads, UpdateRule rule,
                     Py_ssize_t t):
        """The checks of a step on the batch idx[0:n] and its run on the team, with
        rule's update at step t (rule None: gradients only); (loss_sum, correct)."""
        cdef Py_ssize_t i, n_data = self.n_data
        data = self._data               # the arrays stay alive even if another thread rebinds
        if data is None:
            raise ValueError(f"TrainStep.{name}: no data bound (call bind first)")
        if n < 1 or n > self.rows:
            raise ValueError(f"TrainStep.{name}: a batch has 1 to {self.rows} rows, got {n}")
        if not grad_div >= 0:
            raise ValueError(f"TrainStep.{name}: grad_div must be >= 0, got {grad_div}")
        for i in range(n):
            if idx[i] < 0 or idx[i] >= n_data:
                raise ValueError(f"TrainStep.{name}: index {idx[i]} out of range "
                                 f"[0, {n_data})")
        if self.has_dropout:
            for i in range(self.n_layers - 1):
                self.keys[i] = nnf_dropout_key(self.dropout_seed, dropout_step, i)
        cdef StepCall call
        call.s = <void *>self
        call.X = self.X
        call.x_fd = self.x_fd
        if self.x_fd >= 0:
            for i in range(2 * NNF_MAX_THREADS):
                self.x_bad[i] = -1
        call.Y = self.Y
        call.W = self.W
        call.sparse = self.x_sparse
        call.idx64 = self.x_idx64
        call.x_data = self.x_data
        call.x_indices = self.x_indices
        call.x_indptr = self.x_indptr
        call.idx = idx
        call.n = n
        call.grad_div = grad_div if grad_div > 0 else n
        if rule is None:
            call.u.kind = OPT_NONE
        else:
            rule._at(t, &call.u)
            if rule is not self.bounded_rule:
                self._take_bounds(rule)
            self._clear_gmax()
        call.loss_blocks = (n + LOSS_ROWS - 1) // LOSS_ROWS
        cdef int want = <int>min(threads, self._blocks_at_most(&call), NNF_MAX_THREADS)
        cdef nnf_task_t task
        task.fn = _step_item_f64 if self.is_double else _step_item_f32
        task.ctx = &call
        task.n_phases = self._plan(&call, want)
        task.phase_end = self.plan_end
        if self.profile:
            self.clock0 = _now()
        with nogil:
            nnf_team_run(&task, want)
        if self.x_fd >= 0 and _read_failed(self):
            self._read_error(data[0])
        cdef Py_ssize_t correct = 0
        for i in range(call.loss_blocks):
            correct += self.correct_block[i]
        cdef double loss_sum = _sum(self.loss_block, call.loss_blocks)
        if rule is not None and isfinite(loss_sum):
            self._finish_update(&call.u, t, rule, threads, loss_sum)
        return loss_sum, correct

    cdef _read_error(self, X):
        """X.changed(...) for the first row a gather item could not read."""
        cdef Py_ssize_t j
        for j in range(NNF_MAX_THREADS):
            if self.x_bad[2 * j] >= 0:
                row, err = self.x_bad[2 * j], self.x_bad[2 * j + 1]
                what = (f"reading row {row} failed: {os.strerror(err)}" if err else
                        f"it ends before row {row} of its {self.n_data} rows")
                raise X.changed(what)

    def useful_threads(self, Py_ssize_t n):
        """The most threads a step on a batch of n rows of the bound data can use: the
        most blocks of any of its phases (1: the step runs on the caller alone)."""
        if n < 1 or n > self.rows:
            raise ValueError(f"TrainStep.useful_threads: a batch has 1 to {self.rows} "
                             f"rows, got {n}")
        cdef StepCall call
        call.sparse = self.x_sparse
        call.n = n
        return self._blocks_at_most(&call)

    cdef int _plan(self, const StepCall *c, int want):
        """Fill self.plan with the stages of a step on c's batch for a team of up to
        `want` (self.plan_end: their items, cumulative); returns their number. Each
        stage is a phase of the team's task: its items start once all earlier ones are
        done. The gather and the loss are cut by `want` (copies, and losses kept per
        LOSS_ROWS rows: the bits do not depend on it), every other stage by the grid."""
        cdef Py_ssize_t l, k, m, n = c.n, L = self.n_layers
        cdef Py_ssize_t align = 64 // self.dtype.itemsize
        cdef int count = 0
        count = _add_stage(self, count, STAGE_GATHER, 0, min(want, n), 0)
        for l in range(L):
            k, m = self.sizes[l], self.sizes[l + 1]
            count = _add_stage(self, count, STAGE_FORWARD, l,
                               _forward_blocks(c, l, n, k, m, align), 0)
        count = _add_stage(self, count, STAGE_LOSS, L, min(want, c.loss_blocks), 0)
        for l in range(L - 1, -1, -1):
            k, m = self.sizes[l], self.sizes[l + 1]
            count = _add_stage(self, count, STAGE_BACKWARD, l,
                               0 if c.sparse and l == 0 else _input_blocks(l, n, k, m, align),
                               _output_blocks(c, l, n, k, m, align))
        if c.u.kind != OPT_NONE:
            count = _add_stage(self, count, STAGE_UPDATE, 0,
                               _update_blocks(self.n_params, self.dtype.itemsize), 0)
        return count

    cdef Py_ssize_t _blocks_at_most(self, const StepCall *c):
        """The most blocks of any phase of this step: more threads would only wait."""
        cdef Py_ssize_t l, k, m, n = c.n, most = 1, align = 64 // self.dtype.itemsize
        for l in range(self.n_layers):
            k, m = self.sizes[l], self.sizes[l + 1]
            most = max(most, _forward_blocks(c, l, n, k, m, align),
                       _input_blocks(l, n, k, m, align), _output_blocks(c, l, n, k, m, align))
        return max(most, _update_blocks(self.n_params, self.dtype.itemsize))


cdef struct StepCall:
    void *s                     # the TrainStep (borrowed: alive for the call)
    const void *X
    int x_fd                    # >= 0: X's rows are read from this file (bind_file)
    const void *Y
    const void *W
    bint sparse                 # X is the CSR (x_data, x_indices, x_indptr) instead
    bint idx64                  # ... with int64 indices / indptr (else int32)
    const void *x_data
    const void *x_indices
    const void *x_indptr
    const Py_ssize_t *idx
    Py_ssize_t n
    double grad_div             # the gradient of this step is a sum / grad_div
    Update u                    # kind OPT_NONE: gradients only
    Py_ssize_t loss_blocks      # of LOSS_ROWS rows: ceil(n / LOSS_ROWS)


cdef struct UpdateCall:
    void *s                     # the TrainStep (borrowed: alive for the call)
    Update u
    int parts                   # ranges of the flat buffer (the items of each phase)
    int first_phase             # 0: |gradient| then the update; 1: the update alone
    bint gated                  # the update only when _proven (False: the checked path's)


# The stages of a step (TrainStep._plan), in this order, each one phase of the task:
cdef enum:
    STAGE_GATHER = 0            # `blocks` runs of the batch's rows (sparse: and of dW0's)
    STAGE_FORWARD = 1           # layer l's forward blocks (_forward_blocks)
    STAGE_LOSS = 2              # `blocks` runs of the loss's LOSS_ROWS-row blocks
    STAGE_BACKWARD = 3          # layer l's input-unit blocks, then its `more` output ones
    STAGE_UPDATE = 4            # the optimizer's update of the flat buffer (_update_blocks)


cdef struct Stage:
    int kind                    # STAGE_*
    Py_ssize_t layer
    Py_ssize_t blocks
    Py_ssize_t more             # STAGE_BACKWARD: the output-unit blocks after `blocks`


cdef int _add_stage(TrainStep s, int count, int kind, Py_ssize_t layer, Py_ssize_t blocks,
                    Py_ssize_t more) noexcept:
    """Append a stage of blocks + more items to s.plan; returns the new count."""
    s.plan[count].kind = kind
    s.plan[count].layer = layer
    s.plan[count].blocks = blocks
    s.plan[count].more = more
    s.plan_end[count] = (s.plan_end[count - 1] if count > 0 else 0) + blocks + more
    return count + 1


cdef void _step_item_f32(void *ctx, int stage, Py_ssize_t j, int tid) noexcept nogil:
    _step_item[float](<TrainStep>(<StepCall *>ctx).s, <StepCall *>ctx, stage, j, tid, 0)


cdef void _step_item_f64(void *ctx, int stage, Py_ssize_t j, int tid) noexcept nogil:
    _step_item[double](<TrainStep>(<StepCall *>ctx).s, <StepCall *>ctx, stage, j, tid, 0)


cdef void _update_item_f32(void *ctx, int phase, Py_ssize_t j, int tid) noexcept nogil:
    _update_item(<TrainStep>(<UpdateCall *>ctx).s, <UpdateCall *>ctx, phase, j, tid, <float>0)


cdef void _update_item_f64(void *ctx, int phase, Py_ssize_t j, int tid) noexcept nogil:
    _update_item(<TrainStep>(<UpdateCall *>ctx).s, <UpdateCall *>ctx, phase, j, tid, <double>0)


cdef inline void _update_item(TrainStep s, UpdateCall *c, int phase, Py_ssize_t j, int tid,
                              floating kind) noexcept nogil:
    """Item j of TrainStep.update's task on s: in phase 0 the largest |gradient| of part
    j, in phase 1 part j's update (when gated, only once _proven)."""
    cdef Py_ssize_t begin, end
    if phase + c.first_phase == 0:
        _flat_range(s, j, c.parts, sizeof(floating), &begin, &end)
        if end > begin:
            _note_gmax(s, tid, _max_abs(<floating *>s.g0 + begin, 1, end - begin, 0))
    elif not c.gated or _proven(s, &c.u):
        _update_flat(s, &c.u, j, c.parts, tid, kind)


# ---------------------------------------------------------------- one thread's share

cdef inline long long _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000LL + ts.tv_nsec


cdef inline void _mark(TrainStep s, int phase, long long *clock) noexcept nogil:
    """Profiling (clock not NULL: thread 0 with profile on): charge the time since the
    last mark to `phase`."""
    cdef long long now
    if clock != NULL:
        now = _now()
        s.phase_ns[phase] += now - clock[0]
        clock[0] = now


cdef void _step_item(TrainStep s, const StepCall *c, int stage, Py_ssize_t j, int tid,
                     floating kind) noexcept nogil:
    """Item j of stage `stage` of a step (s.plan, built by TrainStep._plan): gather,
    forward, loss gradient, backward (with an update: each gradient block's largest
    |entry|) and the update of the flat buffer when _proven. The team runs a stage's items only once every earlier
    stage is done, on any thread (tid is for profiling: thread 0 marks the clock). The
    loss and correct count of each LOSS_ROWS rows go to s.loss_block and
    s.correct_block. When the batch's loss is not finite and there is an update, nothing
    after the loss runs: the parameters stay those of the previous step (the caller
    reports the divergence).

    Blocks: the forward product + bias/activation of a layer by rows of the batch or by
    output columns (_forward_by_rows); a layer's backward by its input units (a slab of
    dW's rows, with the same columns of dX = d[l]), then by its output units (db); the
    update by ranges of the flat buffer (_flat_range). Sparse input (c.sparse): no gather
    of X, but the gather zeroes dW0 (by rows); layer 0's forward pass is cut by rows of
    the batch; its dW by output units (with db).
    """
    cdef const Stage *st = &s.plan[stage]
    cdef Py_ssize_t n = c.n, l = st.layer, b0, b1, q, q0, q1, correct
    cdef Py_ssize_t k = s.sizes[l], m = s.sizes[l + 1] if l < s.n_layers else 0
    cdef Py_ssize_t align = 64 // sizeof(floating)             # a cache line of entries
    cdef bint update = c.u.kind != OPT_NONE
    cdef long long *clock = &s.clock0 if s.profile and tid == 0 else NULL
    if c.x_fd >= 0 and st.kind != STAGE_GATHER and _read_failed(s):
        return             # a row could not be read from the file: the step ends here
    if st.kind == STAGE_GATHER:
        if c.sparse:                       # dW0 is a scatter-add: it starts from zero
            nnf_part(s.sizes[0], <int>j, <int>st.blocks, align, &b0, &b1)
            if b1 > b0:
                memset(<floating *>s.dw[0] + b0 * s.sizes[1], 0,
                       (b1 - b0) * s.sizes[1] * sizeof(floating))
        nnf_part(n, <int>j, <int>st.blocks, 1, &b0, &b1)
        _gather_batch(s, c, b0, b1, j, kind)
        _mark(s, P_GATHER, clock)
    elif st.kind == STAGE_FORWARD:                      # a[l+1] = act(a[l] @ w[l] + b[l])
        if _forward_by_rows(c, l, n, m):
            _block(n, j, st.blocks, 1, &b0, &b1)
            _forward_layer(s, c, l, b0, b1, 0, m, clock, kind)
        else:
            _block(m, j, st.blocks, align, &b0, &b1)
            _forward_layer(s, c, l, 0, n, b0, b1, clock, kind)
        _mark(s, P_BIAS_ACT, clock)
    elif st.kind == STAGE_LOSS:
        nnf_part(c.loss_blocks, <int>j, <int>st.blocks, 1, &q0, &q1)
        for q in range(q0, q1):
            correct = 0
            s.loss_block[q] = _output_gradient(s, c, q * LOSS_ROWS,
                                               min(n, (q + 1) * LOSS_ROWS), &correct, kind)
            s.correct_block[q] = correct
        _mark(s, P_LOSS, clock)
    elif update and not isfinite(_sum(s.loss_block, <int>c.loss_blocks)):
        return             # diverged: every item skips the backward pass and the update
    elif st.kind == STAGE_BACKWARD and j < st.blocks:   # dW rows, dX columns
        _block(k, j, st.blocks, align, &b0, &b1)
        _backward_weights(s, c, l, b0, b1, clock, kind)
        if update and b1 > b0:                          # the block's |dW| while in cache
            _note_gmax(s, tid, _max_abs(<floating *>s.dw[l] + b0 * m, b1 - b0, m, m))
            _mark(s, P_OPT, clock)
    elif st.kind == STAGE_BACKWARD:                     # db (sparse layer 0: and dW0) columns
        _block(m, j - st.blocks, st.more, align, &b0, &b1)
        _backward_bias(s, c, l, b0, b1, clock, kind)
        if update and b1 > b0:
            _note_gmax(s, tid, _max_abs(<floating *>s.db[l] + b0, 1, b1 - b0, 0))
            if c.sparse and l == 0:
                _note_gmax(s, tid, _max_abs(<floating *>s.dw[0] + b0, k, b1 - b0, m))
            _mark(s, P_OPT, clock)
    elif st.kind == STAGE_UPDATE and _proven(s, &c.u):  # all gradients are done
        _update_flat(s, &c.u, j, <int>st.blocks, tid, kind)


cdef inline void _gather_batch(TrainStep s, const StepCall *c, Py_ssize_t r0, Py_ssize_t r1,
                               Py_ssize_t j, floating kind) noexcept nogil:
    """Rows r0:r1 of the batch (gather item j): a[0] := X[idx] (converted and scaled; not
    for sparse input, which the first layer reads itself; from the file of bind_file
    with pread), y := Y[idx], the row weights := W[idx]."""
    cdef Py_ssize_t k = s.sizes[0], m = s.sizes[s.n_layers]
    cdef const Py_ssize_t *idx = c.idx + r0
    if r1 <= r0:
        return
    if c.sparse:
        pass
    elif c.x_fd >= 0 and s.x_src < 0:
        _read_rows(s, <char *>(<floating *>s.a[0] + r0 * k), idx, r1 - r0, j)
    elif c.x_fd >= 0:
        _read_rows(s, s.x_stage + r0 * s.x_row_bytes, idx, r1 - r0, j)
        _gather_convert(<floating *>s.a[0] + r0 * k, s.x_stage + r0 * s.x_row_bytes,
                        s.x_src, s.iota, r1 - r0, k, <floating>s.x_scale)
    elif s.x_src < 0:
        _gather_rows(<floating *>s.a[0] + r0 * k, <const floating *>c.X, idx, r1 - r0, k)
    else:
        _gather_convert(<floating *>s.a[0] + r0 * k, c.X, s.x_src, idx, r1 - r0, k,
                        <floating>s.x_scale)
    _gather_rows(<floating *>s.y + r0 * m, <const floating *>c.Y, idx, r1 - r0, m)
    if c.W != NULL:
        _gather_values(<floating *>s.rw + r0, <const floating *>c.W, idx, r1 - r0)


cdef void _read_rows(TrainStep s, char *out, const Py_ssize_t *idx, Py_ssize_t n,
                     Py_ssize_t j) noexcept nogil:
    """out row i := row idx[i] of the bound file (x_row_bytes each, i < n), with pread;
    the first row that cannot be read in full goes to x_bad[2 j] (its errno, 0 for the
    end of the file, to x_bad[2 j + 1]) and the item stops there."""
    cdef Py_ssize_t i, done, rb = s.x_row_bytes
    cdef ssize_t got
    for i in range(n):
        done = 0
        while done < rb:
            got = pread(s.x_fd, out + i * rb + done, rb - done,
                        s.x_offset + idx[i] * rb + done)
            if got > 0:
                done += got
            elif got < 0 and errno == EINTR:
                continue
            else:
                s.x_bad[2 * j] = idx[i]
                s.x_bad[2 * j + 1] = errno if got < 0 else 0
                return


cdef bint _read_failed(TrainStep s) noexcept nogil:
    """Whether a gather item of this step could not read a row from the file."""
    cdef Py_ssize_t j
    for j in range(s.plan[0].blocks):
        if s.x_bad[2 * j] >= 0:
            return True
    return False


cdef inline void _forward_layer(TrainStep s, const StepCall *c, Py_ssize_t l, Py_ssize_t r0,
                                Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
                                long long *clock, floating kind) noexcept nogil:
    """The block rows r0:r1 x columns c0:c1 of layer l's output: a[l+1] := act(a[l] @ w[l]
    + b[l]) (the output layer: the logits; the loss fuses its activation), then, on a
    hidden layer with dropout, its mask (keyed by the block's offset r0 * ld + c0 in the
    layer's batch array, so any split gives the same mask). The sparse first layer is
    always called with all the columns."""
    cdef Py_ssize_t k = s.sizes[l], ld = s.sizes[l + 1]          # layer l's inputs, outputs
    cdef floating *z = <floating *>s.a[l + 1] + r0 * ld + c0
    cdef bint hidden = l < s.n_layers - 1
    if r1 <= r0 or c1 <= c0:
        return
    if c.sparse and l == 0:                                  # z := X[idx[r0:r1]] @ w[0]
        _sparse_forward(c, z, c.idx + r0, r1 - r0, <const floating *>s.w[0], ld,
                        <floating>s.x_scale)
    else:
        _matmul(s.mm_path, False, False, r1 - r0, c1 - c0, k, <floating>1,
                <floating *>s.a[l] + r0 * k, k, <floating *>s.w[l] + c0, ld, z, ld)
    _mark(s, P_GEMM_FWD, clock)
    _bias_act(z, <floating *>s.b[l] + c0, r1 - r0, c1 - c0, ld,
              s.codes[l] if hidden else ACT_LINEAR_)
    if hidden and s.g[l] != NULL:
        _dropout(z, <floating *>s.g[l] + r0 * ld + c0, r1 - r0, c1 - c0, ld, r0 * ld + c0,
                 s.keys[l], s.drop[l], <floating>s.dscale[l], s.codes[l])


cdef inline double _output_gradient(TrainStep s, const StepCall *c, Py_ssize_t r0,
                                    Py_ssize_t r1, Py_ssize_t *correct,
                                    floating kind) noexcept nogil:
    """Rows r0:r1: d[L] := y_hat - y (times the row weights, if any) from the logits
    a[L]; returns their summed loss and adds their correct predictions to *correct."""
    cdef Py_ssize_t L = s.n_layers, m = s.sizes[L]
    cdef floating *z = <floating *>s.a[L] + r0 * m
    cdef floating *y = <floating *>s.y + r0 * m
    cdef double loss = 0
    if r1 > r0 and c.W == NULL:
        loss = _loss_backward(s.loss, <floating *>s.d[L] + r0 * m, z, y, r1 - r0, m)
    elif r1 > r0:
        loss = _weighted_loss_backward(s.loss, <floating *>s.d[L] + r0 * m, z, y,
                                       <floating *>s.rw + r0, r1 - r0, m)
    correct[0] += _correct(s.loss, z, y, r1 - r0, m)
    return loss


cdef inline void _backward_weights(TrainStep s, const StepCall *c, Py_ssize_t l,
                                   Py_ssize_t i0, Py_ssize_t i1, long long *clock,
                                   floating kind) noexcept nogil:
    """Layer l's input units i0:i1, from dz = d[l+1] (its output's gradient): rows i0:i1
    of dw[l] = scale a[l][:, i0:i1].T @ dz and, for l > 0, the columns i0:i1 of
    d[l] = dz @ w[l][i0:i1].T, through layer l - 1's dropout and activation. Dense
    layers only (the sparse first layer's dW is _backward_bias's)."""
    cdef Py_ssize_t n = c.n, k = s.sizes[l], m = s.sizes[l + 1]  # layer l's inputs, outputs
    cdef floating scale = <floating>(1.0 / c.grad_div)
    cdef floating *dz = <floating *>s.d[l + 1]
    cdef floating *dx = <floating *>s.d[l] + i0 if l > 0 else NULL
    if i1 <= i0:
        return
    _matmul(s.mm_path, True, False, i1 - i0, m, n, scale, <floating *>s.a[l] + i0, k, dz, m,
            <floating *>s.dw[l] + i0 * m, m)
    _mark(s, P_GEMM_DW, clock)
    if l > 0:
        _matmul(s.mm_path, False, True, n, i1 - i0, m, <floating>1, dz, m,
                <floating *>s.w[l] + i0 * m, m, dx, k)
        _mark(s, P_GEMM_DX, clock)
        if s.g[l - 1] != NULL:                         # through dropout + activation
            _mul(dx, <floating *>s.g[l - 1] + i0, n, i1 - i0, k)
        else:
            _activation_backward(dx, dx, <floating *>s.a[l] + i0, n, i1 - i0, k,
                                 s.codes[l - 1])
        _mark(s, P_ACT_BWD, clock)


cdef inline void _backward_bias(TrainStep s, const StepCall *c, Py_ssize_t l, Py_ssize_t c0,
                                Py_ssize_t c1, long long *clock, floating kind) noexcept nogil:
    """Layer l's output units c0:c1: db[l][c0:c1] = scale dz's column sums; for the sparse
    first layer also dw[0][:, c0:c1], a scatter-add of X[idx].T @ dz over the batch's
    non-zeros, rows in batch order."""
    cdef Py_ssize_t n = c.n, m = s.sizes[l + 1]
    cdef floating scale = <floating>(1.0 / c.grad_div)
    cdef floating *dz = <floating *>s.d[l + 1]
    if c1 <= c0:
        return
    if c.sparse and l == 0:
        _sparse_scatter(c, <floating *>s.dw[0] + c0, m, dz + c0, m, c.idx, n, c1 - c0,
                        <floating>(s.x_scale * <double>scale))
        _mark(s, P_GEMM_DW, clock)
    _col_sum(<floating *>s.db[l] + c0, dz + c0, n, c1 - c0, m, scale)
    _mark(s, P_DB, clock)


cdef inline void _flat_range(TrainStep s, Py_ssize_t j, int parts, Py_ssize_t item,
                             Py_ssize_t *begin, Py_ssize_t *end) noexcept nogil:
    """[begin, end): range j of `parts` of the flat buffer (entries of `item` bytes),
    whole cache lines of the parameters (by address)."""
    cdef Py_ssize_t align = 64 // item
    cdef Py_ssize_t lead = (<size_t>s.p0 % 64) // item     # entries before p0
    nnf_part(s.n_params + lead, <int>j, parts, align, begin, end)
    begin[0] = max(begin[0] - lead, 0)
    end[0] = max(end[0] - lead, 0)


cdef void _update_flat(TrainStep s, const Update *u, Py_ssize_t j, int parts, int tid,
                       floating kind) noexcept nogil:
    """Range j of `parts` of the update over the whole flat buffer (_flat_range), the
    weights [0, n_decay) decayed. tid: the thread running it (0 marks the profile's
    clock)."""
    cdef Py_ssize_t begin, end, k = s.n_decay
    cdef floating *p = <floating *>s.p0
    cdef long long *clock = &s.clock0 if s.profile and tid == 0 else NULL
    _flat_range(s, j, parts, sizeof(floating), &begin, &end)
    if begin < end and begin < k:
        _update(s, u, p + begin, min(end, k) - begin, True)
    if begin < end and end > k:
        _update(s, u, p + max(begin, k), end - max(begin, k), False)
    _mark(s, P_OPT, clock)


cdef inline void _update(TrainStep s, const Update *u, floating *p, Py_ssize_t count,
                         bint decay) noexcept nogil:
    """The update of p[0:count], a slice of the flat parameters; its gradient and state
    are at the same offset in their buffers. Weight decay only with `decay`."""
    cdef Py_ssize_t off = <char *>p - s.p0
    cdef floating *g = <floating *>(s.g0 + off)
    cdef floating *s1 = <floating *>(u.s1 + off)
    if u.kind == OPT_ADAM:
        _adam(p, s1, <floating *>(u.s2 + off), g, count, &u.adam, decay)
    elif u.kind == OPT_SGD:
        _sgd(p, s1, g, count, u.lr, u.momentum, u.nesterov, u.weight_decay if decay else 0)


# ---------------------------------------------------------------- the update's finiteness
# An update is applied only once it is proven to leave every parameter and state entry
# finite: an overflowing update must never be applied, and a step cannot be undone. The
# proof is a few scalars: the largest |gradient| of the step (each gradient block's,
# taken while the block is in cache), and bounds of |params| and |state| carried from
# update to update (_next_bounds), taken exactly whenever a step gets a rule it has not
# bounded (a new rule: at least every epoch, after the callbacks). In real training the
# bounds are tens of orders of magnitude below overflow. When they do not prove it (a
# learning rate near the dtype's range), the checked path decides exactly
# (TrainStep._checked_update).

cdef inline void _note_gmax(TrainStep s, int tid, double value) noexcept nogil:
    """Thread tid's largest |gradient| of this step so far (value: inf for NaN)."""
    cdef double *slot = &s.gmax[tid * GMAX_STRIDE]
    if value > slot[0]:
        slot[0] = value


cdef inline double _gmax(TrainStep s) noexcept nogil:
    """The largest |gradient| of this step (over the team's slots)."""
    cdef double top = 0
    cdef int i
    for i in range(NNF_MAX_THREADS):
        if s.gmax[i * GMAX_STRIDE] > top:
            top = s.gmax[i * GMAX_STRIDE]
    return top


cdef inline double _limit(bint is_double) noexcept nogil:
    """A quarter of the dtype's largest value: a bound below it stays finite after the
    kernels' roundings (and the coefficients' rounding to float32)."""
    return (DBL_MAX if is_double else FLT_MAX) / 4


cdef inline bint _proven(TrainStep s, const Update *u) noexcept nogil:
    """Whether this step's update keeps everything finite (every item decides the same:
    the same scalars, all final before the update stage starts)."""
    cdef double after[3]
    return _next_bounds(u, _gmax(s), s.bound, _limit(s.is_double), after)


cdef inline bint _below(double x, double limit) noexcept nogil:
    return x < limit                    # False for NaN


cdef bint _next_bounds(const Update *u, double G, const double *bound, double limit,
                       double *after) noexcept nogil:
    """Whether u's update with every |gradient| <= G keeps every value the kernels
    (_vec.h NNF_SGD / NNF_ADAM) compute below `limit`, given |params| <= bound[0],
    |state 1| <= bound[1] (velocity, or Adam's m) and state 2 <= bound[2] (Adam's v);
    `after` gets the bounds after the update, GROW above the exact sums for the
    kernels' rounding. inf or NaN anywhere fails."""
    cdef double P = bound[0], S1 = bound[1], S2 = bound[2]
    cdef double gd, v1, step, m1, v2, p1, move
    cdef const AdamCoefs *a = &u.adam
    if u.kind == OPT_SGD:
        gd = G + u.weight_decay * P                       # g + wd p
        v1 = u.momentum * S1 + gd if u.momentum != 0 else S1
        step = gd if u.momentum == 0 else (gd + u.momentum * v1 if u.nesterov else v1)
        p1 = P + u.lr * step
        after[0], after[1], after[2] = p1 * GROW, v1 * GROW, 0
        return (_below(G, limit) and _below(u.lr, limit) and _below(gd, limit)
                and _below(v1, limit) and _below(step, limit) and _below(u.lr * step, limit)
                and _below(p1, limit))
    m1 = a.beta1 * S1 + a.c1 * G                          # |m| after
    v2 = a.beta2 * S2 + a.c2 * G * G                      # v after
    move = a.step_size * m1 / a.eps       # the step divides by sqrt(v_hat) + eps >= eps
    p1 = max(fabs(a.decay), 1.0) * P + move               # biases are not decayed
    after[0], after[1], after[2] = p1 * GROW, m1 * GROW, v2 * GROW
    return (_below(G, limit) and _below(m1, limit) and _below(v2 * a.inv_bc2, limit)
            and _below(a.step_size * m1, limit) and _below(move, limit)
            and _below(a.step_size, limit) and _below(a.eps, limit)
            and _below(fabs(a.decay) * P, limit) and _below(p1, limit))


cdef double _flat_max_abs(const char *x, Py_ssize_t n, bint is_double) noexcept nogil:
    """The largest |x[i]| of a flat float32 / float64 buffer (inf: one is not finite)."""
    if is_double:
        return _max_abs(<const double *>x, 1, n, 0)
    return _max_abs(<const float *>x, 1, n, 0)


cdef inline Py_ssize_t _update_blocks(Py_ssize_t n_params, Py_ssize_t item) noexcept nogil:
    """Blocks of the optimizer's update of the flat buffer, by the grid (_n_blocks), at
    UPDATE_FLOPS a parameter: 784-256-128-10's Adam update (235k parameters) took 83 us
    on one thread, 44 us on two."""
    return _n_blocks(n_params, 64 // item, UPDATE_FLOPS * n_params)


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


# ---------------------------------------------------------------- prediction on the team

cdef struct ForwardCall:
    const void *x               # (n, sizes[0]) the input rows
    void **out                  # out[l] (n, sizes[l + 1]): layer l's output
    const void **w              # w[l] (sizes[l], sizes[l + 1])
    const void **b              # b[l] (sizes[l + 1],)
    const int *codes            # codes[l]: layer l's activation (ACT_*)
    const Py_ssize_t *sizes     # L + 1 layer sizes
    Py_ssize_t L, n
    Py_ssize_t blocks           # of rows (the grid: by the work, not by the team size)
    int mm_path                 # MM_BLAS, MM_F32 or a bfloat16 path (_bf16.h)


def forward(x, list outs, list coefs, list intercepts, list codes, int threads,
            int matmul_path=-1):
    """outs[l] := act_l(a_l @ coefs[l] + intercepts[l]) for each layer l, with a_0 = x
    and a_l = outs[l - 1], act_l = codes[l] (an ACT_* code; softmax along rows), on a
    team of up to `threads`: the rows are cut into blocks of the grid (by the work, never
    by the team size, so a row's values do not depend on it), each block claimed by a
    thread of the team and run through all the layers (no wait between layers), calling
    single-threaded BLAS, or (float32 only) with matmul_path MATMUL_F32 nnfast's own
    float32 products, with matmul_path >= 0 the bfloat16 products of csrc/_bf16.h on that
    path. All arrays C-contiguous,
    of one float dtype; outs must not overlap x (checked), the parameters or each other
    (the network's own buffers)."""
    cdef Py_ssize_t L = len(coefs), l, n
    if L < 1 or len(intercepts) != L or len(outs) != L or len(codes) != L:
        raise ValueError(f"forward: expected as many outputs, intercepts and codes as "
                         f"coefs (>= 1), got {len(outs)}, {len(intercepts)}, {len(codes)} "
                         f"and {L}")
    if threads < 1:
        raise ValueError(f"forward: threads must be >= 1, got {threads}")
    if not (isinstance(x, np.ndarray) and x.ndim == 2):
        raise TypeError("forward: x must be a 2-d ndarray")
    dtype = x.dtype
    if dtype != np.float32 and dtype != np.float64:
        raise TypeError(f"forward: arrays must be float32 or float64, got {dtype}")
    n = x.shape[0]
    arrays = [x] + outs + coefs + intercepts
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
            raise TypeError(f"forward: every array must be a C-contiguous {dtype} ndarray")
    for l in range(L):
        prev = x if l == 0 else outs[l - 1]
        ok = coefs[l].ndim == 2 and intercepts[l].ndim == 1 and outs[l].ndim == 2
        k, m = (coefs[l].shape[0], intercepts[l].shape[0]) if ok else (-1, -1)
        if (not ok or prev.shape[1] != k or coefs[l].shape[1] != m or k < 1 or m < 1
                or outs[l].shape != (n, m)):
            raise ValueError(f"forward: layer {l}: shapes do not chain: input "
                             f"{prev.shape}, coefs {coefs[l].shape}, intercepts "
                             f"{intercepts[l].shape}, output {outs[l].shape}")
        if not 0 <= codes[l] <= ACT_LAST_:
            raise ValueError(f"forward: layer {l}: unknown activation code {codes[l]}")
        if not outs[l].flags.writeable:
            raise ValueError(f"forward: output {l} is read-only")
    for o in outs:                      # the network's own buffers: only x is the caller's
        if np.may_share_memory(o, x):
            raise ValueError("forward: an output overlaps x")
    _check_matmul_path(matmul_path, dtype)
    if n == 0:
        return
    cdef ForwardCall call
    cdef Py_ssize_t *sizes = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
    cdef int *acts = <int *>malloc(L * sizeof(int))
    cdef void **ptrs = <void **>malloc(3 * L * sizeof(void *))
    if sizes == NULL or acts == NULL or ptrs == NULL:
        free(sizes); free(acts); free(ptrs)
        raise MemoryError()
    sizes[0] = x.shape[1]
    for l in range(L):
        sizes[l + 1] = coefs[l].shape[1]
        acts[l] = codes[l]
        ptrs[l] = <void *><Py_ssize_t>outs[l].ctypes.data
        ptrs[L + l] = <void *><Py_ssize_t>coefs[l].ctypes.data
        ptrs[2 * L + l] = <void *><Py_ssize_t>intercepts[l].ctypes.data
    call.x = <const void *><Py_ssize_t>x.ctypes.data
    call.out = ptrs
    call.w = <const void **>(ptrs + L)
    call.b = <const void **>(ptrs + 2 * L)
    call.codes = acts
    call.sizes = sizes
    call.L = L
    call.n = n
    call.mm_path = matmul_path
    cdef double flops = 0
    for l in range(L):
        flops += 2.0 * n * sizes[l] * sizes[l + 1]
    call.blocks = _n_blocks(n, PREDICT_ROWS, flops)
    cdef int want = <int>min(threads, call.blocks)
    cdef nnf_task_t task
    task.fn = _forward_item_f64 if dtype == np.float64 else _forward_item_f32
    task.ctx = &call
    task.n_phases = 1
    task.phase_end = &call.blocks
    with nogil:
        nnf_team_run(&task, want)
    free(sizes); free(acts); free(ptrs)


cdef void _forward_item_f32(void *ctx, int phase, Py_ssize_t j, int tid) noexcept nogil:
    _forward_block[float](<ForwardCall *>ctx, j, 0)


cdef void _forward_item_f64(void *ctx, int phase, Py_ssize_t j, int tid) noexcept nogil:
    _forward_block[double](<ForwardCall *>ctx, j, 0)


cdef inline void _forward_block(const ForwardCall *c, Py_ssize_t j, floating kind) noexcept nogil:
    """Block j of the rows through every layer."""
    cdef Py_ssize_t r0, r1, l, k, m
    cdef const floating *a
    cdef floating *z
    _block(c.n, j, c.blocks, PREDICT_ROWS, &r0, &r1)
    if r1 <= r0:
        return
    for l in range(c.L):
        k, m = c.sizes[l], c.sizes[l + 1]
        a = <const floating *>c.x if l == 0 else <const floating *>c.out[l - 1]
        z = <floating *>c.out[l] + r0 * m
        _matmul(c.mm_path, False, False, r1 - r0, m, k, <floating>1, a + r0 * k, k,
                <const floating *>c.w[l], m, z, m)
        _bias_act(z, <const floating *>c.b[l], r1 - r0, m, m, c.codes[l])
