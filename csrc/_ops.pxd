# The bodies of the kernels on raw pointers, shared by _kernels.pyx (the checked `def`
# kernels, one call per operation) and _step.pyx (the whole training step in one call).
# All arrays are row-major and contiguous; shapes were checked by the caller. Nothing is
# allocated. The elementwise loops live in _vec.h (target_clones); libm calls go through
# _exp / _log / _log1p so that float32 data uses expf / logf / log1pf. The activation,
# loss and source codes come from _codes.h.
from cython cimport floating
from libc.math cimport exp, expf, log, logf, log1p, log1pf, fabs
from libc.stdint cimport int32_t, int64_t
from _blas cimport gemm_rm

# Index type of a CSR input: scipy stores indices / indptr as int32, or int64 when large.
ctypedef fused csr_index:
    int32_t
    int64_t

cdef extern from "_vec.h" nogil:
    void nnf_bias_act_f32(float *a, const float *b, Py_ssize_t n, Py_ssize_t m,
                          Py_ssize_t ld, int act)
    void nnf_bias_act_f64(double *a, const double *b, Py_ssize_t n, Py_ssize_t m,
                          Py_ssize_t ld, int act)
    void nnf_act_backward_f32(float *o, const float *g, const float *y, Py_ssize_t n,
                              Py_ssize_t m, Py_ssize_t ld, int act)
    void nnf_act_backward_f64(double *o, const double *g, const double *y, Py_ssize_t n,
                              Py_ssize_t m, Py_ssize_t ld, int act)
    void nnf_col_sum_f32(float *s, const float *x, Py_ssize_t n, Py_ssize_t m,
                         Py_ssize_t ld, float scale)
    void nnf_col_sum_f64(double *s, const double *x, Py_ssize_t n, Py_ssize_t m,
                         Py_ssize_t ld, double scale)
    void nnf_dropout_f32(float *a, float *g, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld,
                         unsigned long long base, unsigned long long key, unsigned int drop,
                         float scale, int act)
    void nnf_dropout_f64(double *a, double *g, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld,
                         unsigned long long base, unsigned long long key, unsigned int drop,
                         double scale, int act)
    void nnf_mul_f32(float *o, const float *g, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld)
    void nnf_mul_f64(double *o, const double *g, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld)
    unsigned long long nnf_dropout_key(unsigned long long seed, unsigned long long step,
                                       unsigned long long layer)
    void nnf_gather_f32_u8(float *out, const unsigned char *x, const Py_ssize_t *idx,
                           Py_ssize_t n, Py_ssize_t m, float scale)
    void nnf_gather_f32_f32(float *out, const float *x, const Py_ssize_t *idx, Py_ssize_t n,
                            Py_ssize_t m, float scale)
    void nnf_gather_f32_f64(float *out, const double *x, const Py_ssize_t *idx, Py_ssize_t n,
                            Py_ssize_t m, float scale)
    void nnf_gather_f64_u8(double *out, const unsigned char *x, const Py_ssize_t *idx,
                           Py_ssize_t n, Py_ssize_t m, double scale)
    void nnf_gather_f64_f32(double *out, const float *x, const Py_ssize_t *idx, Py_ssize_t n,
                            Py_ssize_t m, double scale)
    void nnf_gather_f64_f64(double *out, const double *x, const Py_ssize_t *idx, Py_ssize_t n,
                            Py_ssize_t m, double scale)
    void nnf_gather_rows(char *out, const char *x, const Py_ssize_t *idx, Py_ssize_t n,
                         size_t row_bytes)
    float nnf_max_abs_f32(const float *x, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld)
    double nnf_max_abs_f64(const double *x, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld)
    void nnf_adam_f32(float *p, float *m, float *v, const float *g, Py_ssize_t n,
                      float beta1, float c1, float beta2, float c2, float eps, float decay,
                      float step_size, float inv_bc2)
    void nnf_adam_f64(double *p, double *m, double *v, const double *g, Py_ssize_t n,
                      double beta1, double c1, double beta2, double c2, double eps,
                      double decay, double step_size, double inv_bc2)
    void nnf_sgd_f32(float *p, float *vel, const float *g, Py_ssize_t n, float lr,
                     float momentum, int nesterov, float wd)
    void nnf_sgd_f64(double *p, double *vel, const double *g, Py_ssize_t n, double lr,
                     double momentum, int nesterov, double wd)
    void nnf_csr_matmul_f32_i32(float *z, Py_ssize_t ldz, const float *data,
                                const int32_t *indices, const int32_t *indptr,
                                const Py_ssize_t *rows, Py_ssize_t n, const float *w,
                                Py_ssize_t ldw, Py_ssize_t m, float scale)
    void nnf_csr_matmul_f32_i64(float *z, Py_ssize_t ldz, const float *data,
                                const int64_t *indices, const int64_t *indptr,
                                const Py_ssize_t *rows, Py_ssize_t n, const float *w,
                                Py_ssize_t ldw, Py_ssize_t m, float scale)
    void nnf_csr_matmul_f64_i32(double *z, Py_ssize_t ldz, const double *data,
                                const int32_t *indices, const int32_t *indptr,
                                const Py_ssize_t *rows, Py_ssize_t n, const double *w,
                                Py_ssize_t ldw, Py_ssize_t m, double scale)
    void nnf_csr_matmul_f64_i64(double *z, Py_ssize_t ldz, const double *data,
                                const int64_t *indices, const int64_t *indptr,
                                const Py_ssize_t *rows, Py_ssize_t n, const double *w,
                                Py_ssize_t ldw, Py_ssize_t m, double scale)
    void nnf_csr_scatter_f32_i32(float *dw, Py_ssize_t ldw, const float *dz, Py_ssize_t ldz,
                                 const float *data, const int32_t *indices,
                                 const int32_t *indptr, const Py_ssize_t *rows, Py_ssize_t n,
                                 Py_ssize_t m, float scale)
    void nnf_csr_scatter_f32_i64(float *dw, Py_ssize_t ldw, const float *dz, Py_ssize_t ldz,
                                 const float *data, const int64_t *indices,
                                 const int64_t *indptr, const Py_ssize_t *rows, Py_ssize_t n,
                                 Py_ssize_t m, float scale)
    void nnf_csr_scatter_f64_i32(double *dw, Py_ssize_t ldw, const double *dz,
                                 Py_ssize_t ldz, const double *data, const int32_t *indices,
                                 const int32_t *indptr, const Py_ssize_t *rows, Py_ssize_t n,
                                 Py_ssize_t m, double scale)
    void nnf_csr_scatter_f64_i64(double *dw, Py_ssize_t ldw, const double *dz,
                                 Py_ssize_t ldz, const double *data, const int64_t *indices,
                                 const int64_t *indptr, const Py_ssize_t *rows, Py_ssize_t n,
                                 Py_ssize_t m, double scale)
    Py_ssize_t nnf_csr_bad_row_i32(const int32_t *indices, const int32_t *indptr,
                                   Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t nnz_max,
                                   const Py_ssize_t *rows, Py_ssize_t n)
    Py_ssize_t nnf_csr_bad_row_i64(const int64_t *indices, const int64_t *indptr,
                                   Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t nnz_max,
                                   const Py_ssize_t *rows, Py_ssize_t n)

# The codes of _codes.h (their one definition), under the names the .pyx files use.
cdef extern from "_codes.h":
    enum:
        ACT_LINEAR_ "NNF_ACT_LINEAR"
        ACT_RELU_ "NNF_ACT_RELU"
        ACT_LEAKY_RELU_ "NNF_ACT_LEAKY_RELU"
        ACT_TANH_ "NNF_ACT_TANH"
        ACT_SIGMOID_ "NNF_ACT_SIGMOID"
        ACT_SOFTMAX_ "NNF_ACT_SOFTMAX"
        ACT_LAST_HIDDEN_ "NNF_ACT_LAST_HIDDEN"      # hidden layers: 0..ACT_LAST_HIDDEN_
        ACT_LAST_ "NNF_ACT_LAST"                    # any layer: 0..ACT_LAST_
        LOSS_SOFTMAX_XENT_ "NNF_LOSS_SOFTMAX_XENT"
        LOSS_SIGMOID_BCE_ "NNF_LOSS_SIGMOID_BCE"
        LOSS_SQUARED_ERROR_ "NNF_LOSS_SQUARED_ERROR"
        LOSS_LAST_ "NNF_LOSS_LAST"                  # 0..LOSS_LAST_
        SRC_UINT8_ "NNF_SRC_UINT8"                  # element types of a data source
        SRC_FLOAT32_ "NNF_SRC_FLOAT32"              # for _gather_convert
        SRC_FLOAT64_ "NNF_SRC_FLOAT64"
    const double LEAKY_SLOPE_ "NNF_LEAKY_SLOPE"


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline void _bias_act(floating *a, const floating *b, Py_ssize_t n, Py_ssize_t m,
                           Py_ssize_t ld, int act) noexcept nogil:
    """a (n, m), rows ld apart := act(a + b), in place."""
    if floating is float:
        nnf_bias_act_f32(a, b, n, m, ld, act)
    else:
        nnf_bias_act_f64(a, b, n, m, ld, act)


cdef inline void _dense_forward(floating *a, const floating *x, const floating *w,
                                const floating *b, Py_ssize_t n, Py_ssize_t n_in,
                                Py_ssize_t n_out, int act) noexcept nogil:
    """a (n, n_out) := act(x (n, n_in) @ w (n_in, n_out) + b)."""
    gemm_rm(False, False, n, n_out, n_in, 1, x, n_in, w, n_out, 0, a, n_out)
    _bias_act(a, b, n, n_out, n_out, act)


cdef inline void _activation_backward(floating *dz, const floating *da, const floating *a,
                                      Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld,
                                      int act) noexcept nogil:
    """dz := da * act'(z) from a = act(z); (n, m) blocks, rows ld apart; dz may be da."""
    if floating is float:
        nnf_act_backward_f32(dz, da, a, n, m, ld, act)
    else:
        nnf_act_backward_f64(dz, da, a, n, m, ld, act)


cdef inline void _dropout(floating *a, floating *g, Py_ssize_t n, Py_ssize_t m, Py_ssize_t ld,
                          unsigned long long base, unsigned long long key, unsigned int drop,
                          floating scale, int act) noexcept nogil:
    """Inverted dropout of a (n, m) block of act(z) (rows ld apart, at entry `base` of the
    layer's batch array): a := a * mask * scale, g := act'(z) * mask * scale (_vec.h)."""
    if floating is float:
        nnf_dropout_f32(a, g, n, m, ld, base, key, drop, scale, act)
    else:
        nnf_dropout_f64(a, g, n, m, ld, base, key, drop, scale, act)


cdef inline void _mul(floating *o, const floating *g, Py_ssize_t n, Py_ssize_t m,
                      Py_ssize_t ld) noexcept nogil:
    """o (n, m) *= g, rows ld apart: the backward pass through dropout + activation."""
    if floating is float:
        nnf_mul_f32(o, g, n, m, ld)
    else:
        nnf_mul_f64(o, g, n, m, ld)


cdef inline void _linear_backward_params(floating *dw, floating *db, const floating *dz,
                                         const floating *x, Py_ssize_t n, Py_ssize_t n_in,
                                         Py_ssize_t n_out, floating scale) noexcept nogil:
    """dw := scale * x.T @ dz;  db := scale * dz.sum(axis=0)."""
    gemm_rm(True, False, n_in, n_out, n, scale, x, n_in, dz, n_out, 0, dw, n_out)
    _col_sum(db, dz, n, n_out, n_out, scale)


cdef inline void _col_sum(floating *s, const floating *x, Py_ssize_t n, Py_ssize_t m,
                          Py_ssize_t ld, floating scale) noexcept nogil:
    """s (m,) := scale * x (n, m).sum(axis=0), rows of x ld apart."""
    if floating is float:
        nnf_col_sum_f32(s, x, n, m, ld, scale)
    else:
        nnf_col_sum_f64(s, x, n, m, ld, scale)


cdef inline void _linear_backward_input(floating *dx, const floating *dz, const floating *w,
                                        Py_ssize_t n, Py_ssize_t n_in,
                                        Py_ssize_t n_out) noexcept nogil:
    """dx (n, n_in) := dz (n, n_out) @ w.T."""
    gemm_rm(False, True, n, n_in, n_out, 1, dz, n_out, w, n_out, 0, dx, n_in)


cdef inline double _softmax_xent(floating *dz, const floating *z, const floating *y,
                                 Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """dz := softmax(z) - y; returns sum -y log softmax(z). m >= 1; dz may be z."""
    cdef Py_ssize_t i, j
    cdef double total = 0
    cdef floating mx, s, yz, ys, inv, e
    cdef const floating *zr
    cdef const floating *yr
    cdef floating *dr
    for i in range(n):
        zr = z + i * m
        yr = y + i * m
        dr = dz + i * m
        mx = zr[0]
        for j in range(1, m):
            if zr[j] > mx:
                mx = zr[j]
        s = 0
        yz = 0
        ys = 0
        for j in range(m):                         # reads zr[j] before writing dr[j]
            e = _exp(zr[j] - mx)
            s += e
            yz += yr[j] * (zr[j] - mx)
            ys += yr[j]
            dr[j] = e
        total += ys * _log(s) - yz                 # sum_k y_k (lse - (z_k - max))
        inv = 1 / s
        for j in range(m):
            dr[j] = dr[j] * inv - yr[j]
    return total


cdef inline double _sigmoid_bce(floating *dz, const floating *z, const floating *y,
                                Py_ssize_t size) noexcept nogil:
    """dz := sigmoid(z) - y; returns sum max(z, 0) - z y + log1p(exp(-|z|)); dz may be z."""
    cdef Py_ssize_t k
    cdef double total = 0
    cdef floating v, t, e
    for k in range(size):
        v = z[k]
        t = y[k]
        e = _exp(-fabs(v))                         # one exp: in (0, 1], never overflows
        total += (v if v > 0 else 0) - v * t + _log1p(e)
        dz[k] = (1 / (1 + e) if v >= 0 else e / (1 + e)) - t
    return total


cdef inline double _squared_error(floating *dz, const floating *yhat, const floating *y,
                                  Py_ssize_t size) noexcept nogil:
    """dz := yhat - y; returns 0.5 sum (yhat - y)^2; dz may be yhat."""
    cdef Py_ssize_t k
    cdef double total = 0
    cdef floating e
    for k in range(size):
        e = yhat[k] - y[k]
        dz[k] = e
        total += e * e
    return 0.5 * total


cdef inline double _loss_backward(int loss, floating *dz, const floating *z,
                                  const floating *y, Py_ssize_t n,
                                  Py_ssize_t m) noexcept nogil:
    """The output layer's gradient and summed loss, for a LOSS_* code."""
    if loss == LOSS_SOFTMAX_XENT_:
        return _softmax_xent(dz, z, y, n, m)
    if loss == LOSS_SIGMOID_BCE_:
        return _sigmoid_bce(dz, z, y, n * m)
    return _squared_error(dz, z, y, n * m)


cdef inline double _weighted_loss_backward(int loss, floating *dz, const floating *z,
                                           const floating *y, const floating *w,
                                           Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """The output layer's gradient and loss with a weight per row: row i of dz := w[i] *
    (its unweighted gradient); returns sum_i w[i] * loss of row i."""
    cdef Py_ssize_t i, j
    cdef double total = 0
    cdef floating wi
    for i in range(n):
        wi = w[i]
        total += wi * _loss_backward(loss, dz + i * m, z + i * m, y + i * m, 1, m)
        for j in range(m):
            dz[i * m + j] *= wi
    return total


cdef inline void _gather_values(floating *out, const floating *x, const Py_ssize_t *idx,
                                Py_ssize_t n) noexcept nogil:
    """out[i] := x[idx[i]], i < n (one value per row: sample weights)."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = x[idx[i]]


cdef inline void _gather_rows(floating *out, const floating *x, const Py_ssize_t *idx,
                              Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """out[i] := x[idx[i]], i < n, rows of m entries (rows ahead are prefetched)."""
    nnf_gather_rows(<char *>out, <const char *>x, idx, n, m * sizeof(floating))


cdef inline void _gather_convert(floating *out, const void *x, int src, const Py_ssize_t *idx,
                                 Py_ssize_t n, Py_ssize_t m, floating scale) noexcept nogil:
    """out[i] := x[idx[i]] * scale, i < n, rows of m entries of the SRC_* type `src`."""
    if floating is float:
        if src == SRC_UINT8_:
            nnf_gather_f32_u8(out, <const unsigned char *>x, idx, n, m, scale)
        elif src == SRC_FLOAT32_:
            nnf_gather_f32_f32(out, <const float *>x, idx, n, m, scale)
        else:
            nnf_gather_f32_f64(out, <const double *>x, idx, n, m, scale)
    else:
        if src == SRC_UINT8_:
            nnf_gather_f64_u8(out, <const unsigned char *>x, idx, n, m, scale)
        elif src == SRC_FLOAT32_:
            nnf_gather_f64_f32(out, <const float *>x, idx, n, m, scale)
        else:
            nnf_gather_f64_f64(out, <const double *>x, idx, n, m, scale)


# ---------------------------------------------------------------- sparse (CSR) input

cdef inline void _csr_matmul(floating *z, Py_ssize_t ldz, const floating *data,
                             const csr_index *indices, const csr_index *indptr,
                             const Py_ssize_t *rows, Py_ssize_t n, const floating *w,
                             Py_ssize_t m, floating scale) noexcept nogil:
    """z (n, m), rows ldz apart := scale * X[rows] @ w; X the CSR (data, indices, indptr),
    w (n_in, m) C-contiguous. Rows and indices were checked (_csr_bad_row)."""
    if floating is float:
        if csr_index is int32_t:
            nnf_csr_matmul_f32_i32(z, ldz, data, indices, indptr, rows, n, w, m, m, scale)
        else:
            nnf_csr_matmul_f32_i64(z, ldz, data, indices, indptr, rows, n, w, m, m, scale)
    else:
        if csr_index is int32_t:
            nnf_csr_matmul_f64_i32(z, ldz, data, indices, indptr, rows, n, w, m, m, scale)
        else:
            nnf_csr_matmul_f64_i64(z, ldz, data, indices, indptr, rows, n, w, m, m, scale)


cdef inline void _csr_scatter(floating *dw, Py_ssize_t ldw, const floating *dz,
                              Py_ssize_t ldz, const floating *data, const csr_index *indices,
                              const csr_index *indptr, const Py_ssize_t *rows, Py_ssize_t n,
                              Py_ssize_t m, floating scale) noexcept nogil:
    """dw (n_in, m), rows ldw apart += scale * X[rows].T @ dz (n, m), rows ldz apart: a
    scatter-add over the non-zeros of the batch's rows, in batch order."""
    if floating is float:
        if csr_index is int32_t:
            nnf_csr_scatter_f32_i32(dw, ldw, dz, ldz, data, indices, indptr, rows, n, m, scale)
        else:
            nnf_csr_scatter_f32_i64(dw, ldw, dz, ldz, data, indices, indptr, rows, n, m, scale)
    else:
        if csr_index is int32_t:
            nnf_csr_scatter_f64_i32(dw, ldw, dz, ldz, data, indices, indptr, rows, n, m, scale)
        else:
            nnf_csr_scatter_f64_i64(dw, ldw, dz, ldz, data, indices, indptr, rows, n, m, scale)


cdef inline Py_ssize_t _csr_bad_row(const csr_index *indices, const csr_index *indptr,
                                    Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t nnz_max,
                                    const Py_ssize_t *rows, Py_ssize_t n) noexcept nogil:
    """Position of the first of rows[0:n] (NULL: 0..n-1) the CSR kernels cannot read
    safely (row out of range, indptr range outside [0, nnz_max), a column index outside
    [0, n_cols)), or -1."""
    if csr_index is int32_t:
        return nnf_csr_bad_row_i32(indices, indptr, n_rows, n_cols, nnz_max, rows, n)
    else:
        return nnf_csr_bad_row_i64(indices, indptr, n_rows, n_cols, nnz_max, rows, n)


# ---------------------------------------------------------------- optimizer updates
from libc.math cimport pow

# The scalars of one Adam(W) step for nnf_adam_*: filled by _adam_coefs only.
cdef struct AdamCoefs:
    double beta1, c1, beta2, c2, eps
    double decay                # 1 - lr * weight_decay: the weights' factor (biases: 1)
    double step_size            # lr / (1 - beta1^t)
    double inv_bc2              # 1 / (1 - beta2^t)


cdef inline AdamCoefs _adam_coefs(double lr, double beta1, double beta2, double eps,
                                  double weight_decay, Py_ssize_t t) noexcept nogil:
    """Adam's bias corrections and factors of step t >= 1, all in double (c1 = 1 - beta1
    and c2 = 1 - beta2 too: in float, 1 - 0.999f is 1.3e-5 off, see _vec.h). The one place
    they are computed: the training step (_step.pyx) and _optim.adam_update both call it."""
    cdef AdamCoefs c
    c.beta1 = beta1
    c.c1 = 1 - beta1
    c.beta2 = beta2
    c.c2 = 1 - beta2
    c.eps = eps
    c.decay = 1 - lr * weight_decay
    c.step_size = lr / (1 - pow(beta1, <double>t))
    c.inv_bc2 = 1 / (1 - pow(beta2, <double>t))
    return c


cdef inline void _adam(floating *p, floating *m, floating *v, const floating *g,
                       Py_ssize_t n, const AdamCoefs *c, bint decay) noexcept nogil:
    """One Adam(W) step over p[0:n] (moments m, v; gradient g) with the scalars c; the
    decoupled weight decay only with `decay` (weights, never biases)."""
    if floating is float:
        nnf_adam_f32(p, m, v, g, n, c.beta1, c.c1, c.beta2, c.c2, c.eps,
                     c.decay if decay else 1, c.step_size, c.inv_bc2)
    else:
        nnf_adam_f64(p, m, v, g, n, c.beta1, c.c1, c.beta2, c.c2, c.eps,
                     c.decay if decay else 1, c.step_size, c.inv_bc2)


cdef inline double _max_abs(const floating *x, Py_ssize_t n, Py_ssize_t m,
                            Py_ssize_t ld) noexcept nogil:
    """The largest |x| of n rows of m entries, rows ld apart (inf: some entry is not
    finite)."""
    if floating is float:
        return nnf_max_abs_f32(x, n, m, ld)
    else:
        return nnf_max_abs_f64(x, n, m, ld)


cdef inline void _sgd(floating *p, floating *vel, const floating *g, Py_ssize_t n,
                      double lr, double momentum, bint nesterov, double wd) noexcept nogil:
    """One SGD step over p[0:n] (velocity vel; gradient g), L2 weight decay wd."""
    if floating is float:
        nnf_sgd_f32(p, vel, g, n, lr, momentum, nesterov, wd)
    else:
        nnf_sgd_f64(p, vel, g, n, lr, momentum, nesterov, wd)
