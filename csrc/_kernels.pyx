# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Forward and backward kernels of a dense network, in network order.

Contents: dense forward (GEMM, then bias + activation in one pass), activation backward
from the saved post-activation, the output layer's gradient fused with its loss
(softmax cross-entropy, sigmoid binary cross-entropy, squared error), the parameter and
input gradients of a dense layer, the mini-batch row gather, and the first layer's
forward and weight gradient for a sparse (CSR) input, which read the batch's rows
straight from the CSR arrays (no dense copy of the batch is ever made).

Conventions: samples are rows; every array is C-contiguous; one fused type `floating`
covers every float argument (mixed dtypes are refused by Cython's dispatch). Outputs come
first, then inputs, then scalars. Nothing is allocated: outputs are overwritten. Each
`def` checks shapes once (ValueError), then runs without the GIL. Activations and losses
are passed as the integer codes below, defined once in csrc/_codes.h (nnfast/_names.py
maps the public names to them).

The bodies are in csrc/_ops.pxd (shared with the compiled training step of _step.pyx);
the bias + activation, activation-backward and column-sum loops are C with target_clones
in csrc/_vec.h, because Cython's loops are compiled for baseline SSE2 only and gcc cannot
vectorise a possibly in-place loop. Losses accumulate in double.
"""
from cython cimport floating
from _blas cimport gemm_rm, scipy_openblas_set_num_threads, scipy_openblas_get_num_threads
from _ops cimport (_dense_forward, _activation_backward, _linear_backward_params,
                   _linear_backward_input, _softmax_xent, _sigmoid_bce, _squared_error,
                   _gather_rows, _gather_convert, _dropout, _mul, nnf_dropout_key,
                   _weighted_loss_backward, _bias_act, _col_sum,
                   _csr_matmul, _csr_scatter, _csr_bad_row, csr_index)
from _ops cimport (ACT_LINEAR_, ACT_RELU_, ACT_LEAKY_RELU_, ACT_TANH_, ACT_SIGMOID_,
                   ACT_SOFTMAX_, ACT_LAST_HIDDEN_, ACT_LAST_, LOSS_SOFTMAX_XENT_,
                   LOSS_SIGMOID_BCE_, LOSS_SQUARED_ERROR_, LOSS_LAST_, SRC_UINT8_,
                   SRC_FLOAT32_, SRC_FLOAT64_, LEAKY_SLOPE_)
from libc.string cimport memset

# The codes of csrc/_codes.h, for Python (nnfast/_names.py maps the public names to them).
ACT_LINEAR = ACT_LINEAR_
ACT_RELU = ACT_RELU_
ACT_LEAKY_RELU = ACT_LEAKY_RELU_
ACT_TANH = ACT_TANH_
ACT_SIGMOID = ACT_SIGMOID_
ACT_SOFTMAX = ACT_SOFTMAX_
ACT_LAST_HIDDEN = ACT_LAST_HIDDEN_     # hidden activations: 0..ACT_LAST_HIDDEN
ACT_LAST = ACT_LAST_                   # any activation: 0..ACT_LAST
LEAKY_SLOPE = LEAKY_SLOPE_             # slope of leaky relu for z < 0, as in PyTorch
# Loss codes of the output layer (for weighted_loss_backward and nnfast._step.TrainStep).
LOSS_SOFTMAX_XENT = LOSS_SOFTMAX_XENT_
LOSS_SIGMOID_BCE = LOSS_SIGMOID_BCE_
LOSS_SQUARED_ERROR = LOSS_SQUARED_ERROR_
LOSS_LAST = LOSS_LAST_                 # 0..LOSS_LAST


def set_blas_threads(int n):
    """Set the number of threads of nnfast's OpenBLAS (n >= 1, checked by the caller)."""
    scipy_openblas_set_num_threads(n)


def get_blas_threads():
    """Number of threads of nnfast's OpenBLAS."""
    return scipy_openblas_get_num_threads()


# ---------------------------------------------------------------- forward

def dense_forward(floating[:, ::1] a, const floating[:, ::1] x, const floating[:, ::1] w,
                  const floating[::1] b, int act):
    """a := act(x @ w + b)
    x (n, n_in), w (n_in, n_out), b (n_out,), a (n, n_out); act is an ACT_* code.
    softmax is taken along each row. `a` is overwritten and must not overlap x.
    """
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[1]
    if w.shape[0] != n_in or a.shape[0] != n or a.shape[1] != n_out or b.shape[0] != n_out:
        raise ValueError(f"dense_forward: shape mismatch: x ({n}, {n_in}), w ({w.shape[0]}, "
                         f"{n_out}), b ({b.shape[0]},), a ({a.shape[0]}, {a.shape[1]})")
    if act < 0 or act > ACT_LAST_:
        raise ValueError(f"dense_forward: unknown activation code {act}")
    if n_in == 0 or n_out == 0:
        raise ValueError(f"dense_forward: a layer needs at least one unit, got w ({n_in}, "
                         f"{n_out})")
    if n == 0:
        return
    with nogil:
        _dense_forward(&a[0, 0], &x[0, 0], &w[0, 0], &b[0], n, n_in, n_out, act)


def dropout_threshold(double p):
    """The integer threshold of a drop probability p in [0, 1): round(p 2^32); an entry
    whose 32-bit hash is below it is dropped."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout_threshold: p must be in [0, 1), got {p}")
    return min(int(round(p * 4294967296.0)), 4294967295)


def dropout_key(unsigned long long seed, unsigned long long step, unsigned long long layer):
    """The 64-bit mask key of (seed, step, layer) (a splitmix64 chain)."""
    return nnf_dropout_key(seed, step, layer)


def dropout_forward(floating[:, ::1] a, floating[:, ::1] g, unsigned long long key,
                    double p, int act):
    """Inverted dropout, in place: a := a * mask / (1 - p);  g := act'(z) * mask / (1 - p).
    a (n, m) holds act(z) of a hidden layer (act an ACT_* code, not softmax); mask[i, j] is
    1 when hash32(hash32(c ^ key_lo) + key_hi) >= dropout_threshold(p), c = i m + j (the
    counter-based mask of csrc/_vec.h), else 0. g (n, m) is overwritten; the backward pass
    is then dz = da * g (dropout_backward).
    """
    cdef Py_ssize_t n = a.shape[0], m = a.shape[1]
    if g.shape[0] != n or g.shape[1] != m:
        raise ValueError(f"dropout_forward: shape mismatch: a ({n}, {m}), g ({g.shape[0]}, "
                         f"{g.shape[1]})")
    if act < 0 or act > ACT_LAST_HIDDEN_:
        raise ValueError(f"dropout_forward: unknown hidden activation code {act}")
    cdef unsigned int drop = dropout_threshold(p)
    cdef floating scale = <floating>(1 / (1 - p))
    if n == 0 or m == 0:
        return
    with nogil:
        _dropout(&a[0, 0], &g[0, 0], n, m, m, 0, key, drop, scale, act)


def dropout_backward(floating[:, ::1] d, const floating[:, ::1] g):
    """d := d * g, in place: the gradient through a hidden layer's activation and dropout,
    with g from dropout_forward. Both (n, m)."""
    cdef Py_ssize_t n = d.shape[0], m = d.shape[1]
    if g.shape[0] != n or g.shape[1] != m:
        raise ValueError(f"dropout_backward: shape mismatch: d ({n}, {m}), g ({g.shape[0]}, "
                         f"{g.shape[1]})")
    if n == 0 or m == 0:
        return
    with nogil:
        _mul(&d[0, 0], &g[0, 0], n, m, m)


# ---------------------------------------------------------------- backward

def activation_backward(floating[:, ::1] dz, const floating[:, ::1] da,
                        const floating[:, ::1] a, int act):
    """dz := da * act'(z), written from the saved post-activation a = act(z).
    relu: a > 0; leaky relu: 1 if a > 0 else LEAKY_SLOPE; tanh: 1 - a^2; sigmoid: a (1 - a);
    linear: 1. All (n, m). dz may be da (in place).
    """
    cdef Py_ssize_t n = a.shape[0], m = a.shape[1], size = n * m
    if da.shape[0] != n or da.shape[1] != m or dz.shape[0] != n or dz.shape[1] != m:
        raise ValueError(f"activation_backward: shape mismatch: a ({n}, {m}), "
                         f"da ({da.shape[0]}, {da.shape[1]}), dz ({dz.shape[0]}, {dz.shape[1]})")
    if act < 0 or act > ACT_LAST_HIDDEN_:
        raise ValueError(f"activation_backward: unknown activation code {act}")
    if size == 0:
        return
    with nogil:
        _activation_backward(&dz[0, 0], &da[0, 0], &a[0, 0], n, m, m, act)


def linear_backward_params(floating[:, ::1] dw, floating[::1] db,
                           const floating[:, ::1] dz, const floating[:, ::1] x,
                           floating scale):
    """dw := scale * x.T @ dz;  db := scale * dz.sum(axis=0)
    x (n, n_in), dz (n, n_out), dw (n_in, n_out), db (n_out,). Outputs are overwritten.
    """
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = dz.shape[1]
    if dz.shape[0] != n or dw.shape[0] != n_in or dw.shape[1] != n_out or db.shape[0] != n_out:
        raise ValueError(f"linear_backward_params: shape mismatch: x ({n}, {n_in}), "
                         f"dz ({dz.shape[0]}, {n_out}), dw ({dw.shape[0]}, {dw.shape[1]}), "
                         f"db ({db.shape[0]},)")
    if n == 0 or n_in == 0 or n_out == 0:
        raise ValueError(f"linear_backward_params: empty operand: x ({n}, {n_in}), "
                         f"dz ({n}, {n_out})")
    with nogil:
        _linear_backward_params(&dw[0, 0], &db[0], &dz[0, 0], &x[0, 0], n, n_in, n_out, scale)


def linear_backward_input(floating[:, ::1] dx, const floating[:, ::1] dz,
                          const floating[:, ::1] w):
    """dx := dz @ w.T
    dz (n, n_out), w (n_in, n_out), dx (n, n_in). dx is overwritten and must not overlap dz.
    """
    cdef Py_ssize_t n = dz.shape[0], n_out = dz.shape[1], n_in = w.shape[0]
    if w.shape[1] != n_out or dx.shape[0] != n or dx.shape[1] != n_in:
        raise ValueError(f"linear_backward_input: shape mismatch: dz ({n}, {n_out}), "
                         f"w ({n_in}, {w.shape[1]}), dx ({dx.shape[0]}, {dx.shape[1]})")
    if n_in == 0 or n_out == 0:
        raise ValueError(f"linear_backward_input: a layer needs at least one unit, got w "
                         f"({n_in}, {n_out})")
    if n == 0:
        return
    with nogil:
        _linear_backward_input(&dx[0, 0], &dz[0, 0], &w[0, 0], n, n_in, n_out)


# ---------------------------------------------------------------- output layer + loss

cdef inline void _check_loss_shapes(str name, Py_ssize_t n, Py_ssize_t m,
                                    Py_ssize_t dz0, Py_ssize_t dz1,
                                    Py_ssize_t y0, Py_ssize_t y1) except *:
    if dz0 != n or dz1 != m or y0 != n or y1 != m:
        raise ValueError(f"{name}: shape mismatch: z ({n}, {m}), y ({y0}, {y1}), "
                         f"dz ({dz0}, {dz1})")


def softmax_xent_backward(floating[:, ::1] dz, const floating[:, ::1] z,
                          const floating[:, ::1] y):
    """dz := softmax(z) - y;  returns sum_i sum_k -y[i, k] log softmax(z)[i, k]
    z logits (n, m), y targets (n, m) (one-hot rows, or any distribution), dz (n, m).
    Stable: log-softmax is z - max - log(sum exp(z - max)). dz may be z (in place).
    The 1/n of the mean is not applied here (the caller scales once).
    """
    cdef Py_ssize_t n = z.shape[0], m = z.shape[1]
    _check_loss_shapes("softmax_xent_backward", n, m, dz.shape[0], dz.shape[1],
                       y.shape[0], y.shape[1])
    if m == 0:
        raise ValueError("softmax_xent_backward: softmax needs at least one output unit")
    if n == 0:
        return 0.0
    cdef double total
    with nogil:
        total = _softmax_xent(&dz[0, 0], &z[0, 0], &y[0, 0], n, m)
    return total


def sigmoid_bce_backward(floating[:, ::1] dz, const floating[:, ::1] z,
                         const floating[:, ::1] y):
    """dz := sigmoid(z) - y;  returns sum -(y log p + (1 - y) log(1 - p)), p = sigmoid(z)
    z logits (n, m), y targets in [0, 1] (n, m), dz (n, m). dz may be z (in place).
    Stable: the loss is max(z, 0) - z y + log1p(exp(-|z|)).
    """
    cdef Py_ssize_t n = z.shape[0], m = z.shape[1], size = n * m
    _check_loss_shapes("sigmoid_bce_backward", n, m, dz.shape[0], dz.shape[1],
                       y.shape[0], y.shape[1])
    if size == 0:
        return 0.0
    cdef double total
    with nogil:
        total = _sigmoid_bce(&dz[0, 0], &z[0, 0], &y[0, 0], size)
    return total


def squared_error_backward(floating[:, ::1] dz, const floating[:, ::1] yhat,
                           const floating[:, ::1] y):
    """dz := yhat - y;  returns 0.5 * sum (yhat - y)^2
    yhat (n, m), y (n, m), dz (n, m). dz may be yhat (in place).
    """
    cdef Py_ssize_t n = yhat.shape[0], m = yhat.shape[1], size = n * m
    _check_loss_shapes("squared_error_backward", n, m, dz.shape[0], dz.shape[1],
                       y.shape[0], y.shape[1])
    if size == 0:
        return 0.0
    cdef double total
    with nogil:
        total = _squared_error(&dz[0, 0], &yhat[0, 0], &y[0, 0], size)
    return total


# ---------------------------------------------------------------- mini-batch gather

cdef bint _gather_checked(str name, Py_ssize_t out_rows, Py_ssize_t out_cols,
                          const Py_ssize_t[::1] idx, Py_ssize_t n_rows, Py_ssize_t m) except -1:
    """ValueError unless out (out_rows, out_cols) holds len(idx) rows of m and every index
    is in [0, n_rows); False when there is nothing to copy."""
    cdef Py_ssize_t n = idx.shape[0], i
    if out_rows < n or out_cols != m:
        raise ValueError(f"{name}: out ({out_rows}, {out_cols}) cannot hold {n} rows of {m}")
    for i in range(n):
        if idx[i] < 0 or idx[i] >= n_rows:
            raise ValueError(f"{name}: index {idx[i]} out of range [0, {n_rows})")
    return n > 0 and m > 0


def weighted_loss_backward(floating[:, ::1] dz, const floating[:, ::1] z,
                           const floating[:, ::1] y, const floating[::1] w, int loss):
    """dz := w[:, None] * (the unweighted gradient of `loss`);
    returns sum_i w[i] * (loss of row i)
    z logits (n, m), y targets (n, m), w (n,) row weights, dz (n, m) (may be z); loss a
    LOSS_* code. The loss of a row is that of softmax_xent_backward,
    sigmoid_bce_backward or squared_error_backward on that row alone.
    """
    cdef Py_ssize_t n = z.shape[0], m = z.shape[1]
    _check_loss_shapes("weighted_loss_backward", n, m, dz.shape[0], dz.shape[1],
                       y.shape[0], y.shape[1])
    if w.shape[0] != n:
        raise ValueError(f"weighted_loss_backward: w has {w.shape[0]} entries, z {n} rows")
    if loss < 0 or loss > LOSS_LAST_:
        raise ValueError(f"weighted_loss_backward: unknown loss code {loss}")
    if m == 0:
        raise ValueError("weighted_loss_backward: needs at least one output unit")
    if n == 0:
        return 0.0
    cdef double total
    with nogil:
        total = _weighted_loss_backward(loss, &dz[0, 0], &z[0, 0], &y[0, 0], &w[0], n, m)
    return total


def gather_rows(floating[:, ::1] out, const floating[:, ::1] x, const Py_ssize_t[::1] idx):
    """out[i] := x[idx[i]] for i < len(idx)
    x (N, m), idx (n,) of np.intp with every entry in [0, N), out (>= n, m): the leading
    n rows are written.
    """
    cdef Py_ssize_t n = idx.shape[0], m = x.shape[1]
    if not _gather_checked("gather_rows", out.shape[0], out.shape[1], idx, x.shape[0], m):
        return
    with nogil:
        _gather_rows(&out[0, 0], &x[0, 0], &idx[0], n, m)


ctypedef unsigned char uchar

ctypedef fused source:
    uchar
    float
    double


def gather_rows_scaled(floating[:, ::1] out, const source[:, ::1] x,
                       const Py_ssize_t[::1] idx, double scale):
    """out[i] := x[idx[i]] * scale for i < len(idx), converted to out's dtype
    x (N, m) of uint8, float32 or float64; idx (n,) of np.intp in [0, N); out (>= n, m).
    Each entry is converted to out's dtype, then multiplied by scale in that dtype.
    """
    cdef Py_ssize_t n = idx.shape[0], m = x.shape[1]
    cdef int src = (SRC_UINT8_ if source is uchar else
                    SRC_FLOAT32_ if source is float else SRC_FLOAT64_)
    if not _gather_checked("gather_rows_scaled", out.shape[0], out.shape[1], idx,
                           x.shape[0], m):
        return
    with nogil:
        _gather_convert(&out[0, 0], <const void *>&x[0, 0], src, &idx[0], n, m,
                        <floating>scale)


# ---------------------------------------------------------------- sparse (CSR) input

cdef Py_ssize_t _csr_rows_checked(str name, Py_ssize_t n_data, const csr_index[::1] indices,
                                  const csr_index[::1] indptr, const Py_ssize_t[::1] rows,
                                  Py_ssize_t n_cols) except -1:
    """ValueError unless every one of `rows` is a row of the CSR matrix (data of n_data
    entries, indices, indptr) that the kernels can read safely; returns len(rows)."""
    cdef Py_ssize_t n = rows.shape[0], bad
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t nnz_max = min(n_data, indices.shape[0])
    if n_rows < 0:
        raise ValueError(f"{name}: indptr must have n_rows + 1 >= 1 entries, got 0")
    if n == 0:
        return 0
    with nogil:
        bad = _csr_bad_row(&indices[0] if indices.shape[0] else NULL, &indptr[0], n_rows,
                           n_cols, nnz_max, &rows[0], n)
    if bad >= 0:
        r = rows[bad]
        if not 0 <= r < n_rows:
            raise ValueError(f"{name}: row index {r} out of range [0, {n_rows})")
        raise ValueError(f"{name}: row {r} of the CSR matrix is invalid: its indptr range "
                         f"[{indptr[r]}, {indptr[r + 1]}) must lie in [0, {nnz_max}] in "
                         f"order and its column indices in [0, {n_cols})")
    return n


def sparse_dense_forward(floating[:, ::1] a, const floating[::1] data,
                         const csr_index[::1] indices, const csr_index[::1] indptr,
                         const Py_ssize_t[::1] rows, const floating[:, ::1] w,
                         const floating[::1] b, int act, double x_scale=1):
    """a := act(x_scale * X[rows] @ w + b), X the CSR matrix (data, indices, indptr)
    X (len(indptr) - 1, n_in) with int32 or int64 indices / indptr; rows (n,) of np.intp;
    w (n_in, n_out), b (n_out,), a (n, n_out); act an ACT_* code (softmax along rows).
    Row i of a sums the rows of w of X[rows[i]]'s non-zeros in their stored order
    (duplicate column indices add up, as in scipy). Every row used is checked. x_scale
    multiplies each non-zero in a's dtype.
    """
    cdef Py_ssize_t n = rows.shape[0], n_in = w.shape[0], n_out = w.shape[1]
    if a.shape[0] != n or a.shape[1] != n_out or b.shape[0] != n_out:
        raise ValueError(f"sparse_dense_forward: shape mismatch: rows ({n},), w ({n_in}, "
                         f"{n_out}), b ({b.shape[0]},), a ({a.shape[0]}, {a.shape[1]})")
    if act < 0 or act > ACT_LAST_:
        raise ValueError(f"sparse_dense_forward: unknown activation code {act}")
    if n_in == 0 or n_out == 0:
        raise ValueError(f"sparse_dense_forward: a layer needs at least one unit, got w "
                         f"({n_in}, {n_out})")
    if _csr_rows_checked("sparse_dense_forward", data.shape[0], indices, indptr, rows,
                         n_in) == 0:
        return
    cdef floating scale = <floating>x_scale
    with nogil:
        _csr_matmul(&a[0, 0], n_out, &data[0] if data.shape[0] else NULL,
                    &indices[0] if indices.shape[0] else NULL, &indptr[0], &rows[0], n,
                    &w[0, 0], n_out, scale)
        _bias_act(&a[0, 0], &b[0], n, n_out, n_out, act)


def sparse_linear_backward_params(floating[:, ::1] dw, floating[::1] db,
                                  const floating[:, ::1] dz, const floating[::1] data,
                                  const csr_index[::1] indices, const csr_index[::1] indptr,
                                  const Py_ssize_t[::1] rows, double x_scale, floating scale):
    """dw := scale * (x_scale * X[rows]).T @ dz;  db := scale * dz.sum(axis=0)
    X the CSR matrix (data, indices, indptr) of shape (len(indptr) - 1, n_in); rows (n,)
    of np.intp, dz (n, n_out), dw (n_in, n_out), db (n_out,). Outputs are overwritten: dw
    is zeroed, then each non-zero of the batch's rows adds its term to its row of dw
    (batch rows in order). No input gradient: a sparse input is always the first layer.
    """
    cdef Py_ssize_t n = rows.shape[0], n_in = dw.shape[0], n_out = dw.shape[1]
    if dz.shape[0] != n or dz.shape[1] != n_out or db.shape[0] != n_out:
        raise ValueError(f"sparse_linear_backward_params: shape mismatch: rows ({n},), "
                         f"dz ({dz.shape[0]}, {dz.shape[1]}), dw ({n_in}, {n_out}), "
                         f"db ({db.shape[0]},)")
    if n == 0 or n_in == 0 or n_out == 0:
        raise ValueError(f"sparse_linear_backward_params: empty operand: rows ({n},), "
                         f"dw ({n_in}, {n_out})")
    _csr_rows_checked("sparse_linear_backward_params", data.shape[0], indices, indptr, rows,
                      n_in)
    cdef floating v_scale = <floating>(x_scale * <double>scale)
    with nogil:
        memset(&dw[0, 0], 0, n_in * n_out * sizeof(floating))
        _csr_scatter(&dw[0, 0], n_out, &dz[0, 0], n_out, &data[0] if data.shape[0] else NULL,
                     &indices[0] if indices.shape[0] else NULL, &indptr[0], &rows[0], n,
                     n_out, v_scale)
        _col_sum(&db[0], &dz[0, 0], n, n_out, n_out, scale)


# ---------------------------------------------------------------- plain matrix product

cdef int _product_dims(str name, const Py_ssize_t *c, const Py_ssize_t *a,
                       const Py_ssize_t *b, bint trans_a, bint trans_b, Py_ssize_t *m,
                       Py_ssize_t *n, Py_ssize_t *k) except -1:
    """m, n, k of c (m, n) := op(a) (m, k) @ op(b) (k, n) from the three shapes, or
    ValueError naming `name` when they do not fit."""
    cdef Py_ssize_t kb = b[1] if trans_b else b[0]
    m[0] = a[1] if trans_a else a[0]
    k[0] = a[0] if trans_a else a[1]
    n[0] = b[0] if trans_b else b[1]
    if kb != k[0] or c[0] != m[0] or c[1] != n[0]:
        raise ValueError(f"{name}: shape mismatch: op(a) ({m[0]}, {k[0]}), op(b) ({kb}, "
                         f"{n[0]}), c ({c[0]}, {c[1]})")
    return 0


cdef int _separate(str name, const void *c, const void *a, const void *b, Py_ssize_t m,
                   Py_ssize_t n, Py_ssize_t k, size_t item) except -1:
    """ValueError naming `name` when c (m, n) overlaps a (m x k entries) or b (k x n): the
    products read their inputs while writing c. Empty inputs (k == 0) have no bytes."""
    cdef size_t c0 = <size_t>c, c1 = c0 + m * n * item, x0, x1
    cdef const void *inputs[2]
    cdef Py_ssize_t sizes[2]
    inputs[0], inputs[1], sizes[0], sizes[1] = a, b, m * k, k * n
    for i in range(2):
        x0 = <size_t>inputs[i]
        x1 = x0 + sizes[i] * item
        if sizes[i] and c0 < x1 and x0 < c1:
            raise ValueError(f"{name}: c overlaps {'ab'[i]}; expected c in memory of its own")
    return 0


def gemm(floating[:, ::1] c not None, const floating[:, ::1] a not None,
         const floating[:, ::1] b not None,
         bint trans_a=False, bint trans_b=False, floating alpha=1, floating beta=0):
    """c := alpha * op(a) @ op(b) + beta * c, op(a) = a.T if trans_a (same for b).
    The bare BLAS call of the other kernels; used by benchmarks for the GEMM floor.
    c must not overlap a or b.
    """
    cdef Py_ssize_t m, n, k
    _product_dims("gemm", c.shape, a.shape, b.shape, trans_a, trans_b, &m, &n, &k)
    if m == 0 or n == 0:
        return
    if k == 0:
        raise ValueError("gemm: inner dimension is 0")
    _separate("gemm", &c[0, 0], &a[0, 0], &b[0, 0], m, n, k, sizeof(floating))
    with nogil:
        gemm_rm(trans_a, trans_b, m, n, k, alpha, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
                beta, &c[0, 0], n)


# ---------------------------------------------------------------- bfloat16 matrix product

cdef extern from "_fpmode.h" nogil:
    unsigned nnf_flush_denormals()
    void nnf_restore_denormals(unsigned before)

cdef extern from "_bf16.h" nogil:
    int NNF_BF16_N_PATHS
    int nnf_bf16_path_available(int path)
    int nnf_bf16_best_path()
    unsigned short nnf_to_bf16(float x)
    float nnf_from_bf16(unsigned short h)
    int nnf_bf16_pieces_only
    void nnf_gemm_bf16(int path, int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N,
                       Py_ssize_t K, float alpha, const float *a, Py_ssize_t lda,
                       const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc)

cdef extern from "_sgemm.h" nogil:
    int nnf_sgemm_available()
    void nnf_sgemm(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   float alpha, const float *a, Py_ssize_t lda, const float *b,
                   Py_ssize_t ldb, float *c, Py_ssize_t ldc)
    void nnf_sgemm_chain(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N,
                         Py_ssize_t K, float alpha, const float *a, Py_ssize_t lda,
                         const float *b, Py_ssize_t ldb, float *c, Py_ssize_t ldc)

# The ways csrc/_bf16.h computes a bfloat16 product, by code; all give the same bits.
BF16_PATHS = ("generic", "fma", "avx512f", "avx512bf16")


def bf16_paths():
    """The paths of the bfloat16 product this CPU runs, slowest first."""
    return tuple(name for code, name in enumerate(BF16_PATHS) if nnf_bf16_path_available(code))


def bf16_best_path():
    """The path the bfloat16 products use on this CPU (the fastest it runs)."""
    return BF16_PATHS[nnf_bf16_best_path()]


def _bf16_pieces_only(bint on):
    """Tests: make gemm_bf16 take its stack path (as without scratch memory) or not;
    returns the previous setting."""
    global nnf_bf16_pieces_only
    previous = bool(nnf_bf16_pieces_only)
    nnf_bf16_pieces_only = on
    return previous


def bf16_round(float[::1] out, const float[::1] x):
    """out := x rounded to the nearest bfloat16 (ties to even; NaN stays NaN), as float32."""
    cdef Py_ssize_t i, n = x.shape[0]
    if out.shape[0] != n:
        raise ValueError(f"bf16_round: out has {out.shape[0]} entries, x {n}")
    with nogil:
        for i in range(n):
            out[i] = nnf_from_bf16(nnf_to_bf16(x[i]))


def gemm_bf16(float[:, ::1] c not None, const float[:, ::1] a not None,
              const float[:, ::1] b not None,
              bint trans_a=False, bint trans_b=False, float alpha=1, str path=None):
    """c := alpha * op(a) @ op(b) with a and b rounded to bfloat16 and float32 sums
    (csrc/_bf16.h), with denormals flushed as in the training step; op(a) = a.T if
    trans_a (same for b). `path`: one of bf16_paths() (default: bf16_best_path()).
    c must not overlap a or b."""
    cdef int code = nnf_bf16_best_path()
    if path is not None:
        if path not in BF16_PATHS:
            raise ValueError(f"gemm_bf16: path must be one of {BF16_PATHS}, got {path!r}")
        code = BF16_PATHS.index(path)
        if not nnf_bf16_path_available(code):
            raise ValueError(f"gemm_bf16: this CPU does not run the {path!r} path "
                             f"(it runs {bf16_paths()})")
    cdef Py_ssize_t m, n, k
    _product_dims("gemm_bf16", c.shape, a.shape, b.shape, trans_a, trans_b, &m, &n, &k)
    if m == 0 or n == 0:
        return
    cdef const float *pa = &a[0, 0] if k else NULL
    cdef const float *pb = &b[0, 0] if k else NULL
    _separate("gemm_bf16", &c[0, 0], pa, pb, m, n, k, sizeof(float))
    cdef unsigned mode
    with nogil:
        mode = nnf_flush_denormals()
        nnf_gemm_bf16(code, trans_a, trans_b, m, n, k, alpha,
                      pa, a.shape[1], pb, b.shape[1], &c[0, 0], n)
        nnf_restore_denormals(mode)


# ---------------------------------------------------------------- nnfast's float32 products

# The ways csrc/_sgemm.h computes a float32 product; both give the same bits.
F32_PATHS = ("generic", "avx512f")


def f32_paths():
    """The paths of nnfast's own float32 product this CPU runs, slowest first."""
    return ("generic", "avx512f") if nnf_sgemm_available() else ("generic",)


def gemm_f32(float[:, ::1] c not None, const float[:, ::1] a not None,
             const float[:, ::1] b not None,
             bint trans_a=False, bint trans_b=False, float alpha=1, str path=None):
    """c := alpha * op(a) @ op(b) in float32 by nnfast's own products (csrc/_sgemm.h: one
    fused multiply-add chain over k per entry), with denormals flushed as in the training
    step; op(a) = a.T if trans_a (same for b). `path`: one of f32_paths() (default: the
    fastest). c must not overlap a or b."""
    cdef bint generic
    if path is None:
        path = "avx512f" if nnf_sgemm_available() else "generic"
    if path not in F32_PATHS:
        raise ValueError(f"gemm_f32: path must be one of {F32_PATHS}, got {path!r}")
    if path not in f32_paths():
        raise ValueError(f"gemm_f32: this CPU does not run the {path!r} path "
                         f"(it runs {f32_paths()})")
    generic = path == "generic"
    cdef Py_ssize_t m, n, k
    _product_dims("gemm_f32", c.shape, a.shape, b.shape, trans_a, trans_b, &m, &n, &k)
    if m == 0 or n == 0:
        return
    cdef const float *pa = &a[0, 0] if k else NULL
    cdef const float *pb = &b[0, 0] if k else NULL
    _separate("gemm_f32", &c[0, 0], pa, pb, m, n, k, sizeof(float))
    cdef unsigned mode
    with nogil:
        mode = nnf_flush_denormals()
        if generic:
            nnf_sgemm_chain(trans_a, trans_b, m, n, k, alpha, pa, a.shape[1], pb,
                            b.shape[1], &c[0, 0], n)
        else:
            nnf_sgemm(trans_a, trans_b, m, n, k, alpha, pa, a.shape[1], pb, b.shape[1],
                      &c[0, 0], n)
        nnf_restore_denormals(mode)
