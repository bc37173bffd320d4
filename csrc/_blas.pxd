# The only BLAS binding of nnfast: row-major CBLAS gemm of the scipy-openblas32 wheel.
# Symbols carry the wheel's `scipy_` prefix; blasint is a 32-bit int (the "32" wheel).
# The library is loaded (RTLD_GLOBAL) by `import scipy_openblas32` in nnfast/__init__.py
# before any extension module is imported, so no rpath is needed.
from cython cimport floating

cdef extern from "cblas.h" nogil:
    ctypedef int blasint
    ctypedef enum CBLAS_ORDER:
        CblasRowMajor
    ctypedef enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           blasint m, blasint n, blasint k, float alpha,
                           const float *a, blasint lda, const float *b, blasint ldb,
                           float beta, float *c, blasint ldc)
    void scipy_cblas_dgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           blasint m, blasint n, blasint k, double alpha,
                           const double *a, blasint lda, const double *b, blasint ldb,
                           double beta, double *c, blasint ldc)
    void scipy_openblas_set_num_threads(int num_threads)
    int scipy_openblas_get_num_threads()


cdef inline void gemm_rm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         floating alpha, const floating *a, Py_ssize_t lda,
                         const floating *b, Py_ssize_t ldb,
                         floating beta, floating *c, Py_ssize_t ldc) noexcept nogil:
    """c (m, n) := alpha * op(a) @ op(b) + beta * c, all row-major; op(a) is (m, k)."""
    cdef CBLAS_TRANSPOSE ta = CblasTrans if trans_a else CblasNoTrans
    cdef CBLAS_TRANSPOSE tb = CblasTrans if trans_b else CblasNoTrans
    if floating is float:
        scipy_cblas_sgemm(CblasRowMajor, ta, tb, <blasint>m, <blasint>n, <blasint>k, alpha,
                          a, <blasint>lda, b, <blasint>ldb, beta, c, <blasint>ldc)
    else:
        scipy_cblas_dgemm(CblasRowMajor, ta, tb, <blasint>m, <blasint>n, <blasint>k, alpha,
                          a, <blasint>lda, b, <blasint>ldb, beta, c, <blasint>ldc)
