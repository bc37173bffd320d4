/* float32 matrix products on AVX-512F for the training step and prediction
 * (matmul_precision="float32" on a CPU with AVX-512F; elsewhere BLAS):
 *
 *     C (M, N) := alpha * op(A) @ op(B),   row-major, op(A) (M, K), op(B) (K, N)
 *
 * Each entry of C is one chain of float32 fused multiply-adds over k in order,
 *
 *     acc = fma(op(A)[i][k], op(B)[k][j], acc)        k = 0, 1, ..., K - 1
 *
 * times alpha at the end (unless alpha is 1): it depends only on its row of op(A), its
 * column of op(B) and K, never on M, N or where the block lies, so the team's blocks give
 * the same bits for any team size, as with the bfloat16 products (_bf16.h).
 *
 * Why our own: the step's products are small (a batch of 32 to 512 rows against weights
 * of a few hundred units), where a BLAS spends much of each call packing both operands.
 * Here nothing is packed when op(B) is B: an 8 x 32 tile of C keeps its 16 accumulators
 * in registers over all of K, broadcasting op(A)'s entries from where they lie (either
 * layout) and loading op(B)'s 32 columns of row k straight from B, whose rows the
 * hardware prefetcher streams. Only op(B) = B.T (dX = dZ @ W.T) is transposed, KC rows
 * of k at a time, into a panel on the stack. Measured on Zen 4 (one core, the step's
 * shapes): see bench/README.md, "nnfast's own float32 products".
 *
 * Edges: N past a multiple of 32 by masked loads and stores (masked-off lanes are never
 * read or written); a tile of fewer than 8 rows repeats its last row in the registers of
 * the missing ones and stores only its own rows. The callers run with flush-to-zero and
 * denormals-are-zero set (csrc/_pool.h), as for every product of the step.
 */
#ifndef NNFAST_SGEMM_H
#define NNFAST_SGEMM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NNF_SGEMM_X86 1
#endif

#define NNF_SGEMM_MR 8             /* rows of a tile */
#define NNF_SGEMM_NR 32            /* columns of a tile: 2 x 16 float32 lanes */
#define NNF_SGEMM_KC 256           /* k of op(B) = B.T transposed at a time (32 KiB) */
#define NNF_SGEMM_B_BYTES (512 * 1024)  /* columns of B used by all rows before the next */

/* Whether this CPU (and its OS) runs the AVX-512F products. */
static int nnf_sgemm_available(void)
{
#ifdef NNF_SGEMM_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* The same chain in portable C, one entry at a time: the reference the AVX-512F products
 * are tested against bit for bit, and the products off x86-64. */
static void nnf_sgemm_chain(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                            ptrdiff_t K, float alpha, const float *a, ptrdiff_t lda,
                            const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    for (ptrdiff_t i = 0; i < M; i++)
        for (ptrdiff_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (ptrdiff_t k = 0; k < K; k++)
                acc = fmaf(trans_a ? a[k * lda + i] : a[i * lda + k],
                           trans_b ? b[j * ldb + k] : b[k * ldb + j], acc);
            c[i * ldc + j] = alpha != 1.0f ? acc * alpha : acc;
        }
}

#ifdef NNF_SGEMM_X86
/* c rows 0:rb, the columns of masks m0 | m1 := [c if `more` else 0] + sum over k < kb of
 * a[r * a_row + k * a_k] * bp[k * ldbp + 0:32], times alpha if `last`. Inlined into one
 * function per layout of A (nnf_sgemm_tile_a, _at), where a_k or a_row is the constant 1. */
/* The tile's 8 rows, each two named accumulators (an array of them was kept on the
 * stack by gcc: 40 GFLOP/s instead of ~100 on one Zen 4 core). */
#define NNF_SGEMM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define NNF_SGEMM_DECLARE(r)                                                           \
    const float *a##r = a + (r < rb ? r : rb - 1) * a_row;                             \
    __m512 lo##r = _mm512_setzero_ps(), hi##r = _mm512_setzero_ps();                   \
    if (more && r < rb) {                                                              \
        lo##r = _mm512_maskz_loadu_ps(m0, c + r * ldc);                                \
        hi##r = _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);                           \
    }
#define NNF_SGEMM_FMA(r)                                                               \
    {                                                                                  \
        __m512 x = _mm512_set1_ps(a##r[k * a_k]);                                      \
        lo##r = _mm512_fmadd_ps(x, b0, lo##r);                                         \
        if (!half)                                                                     \
            hi##r = _mm512_fmadd_ps(x, b1, hi##r);                                     \
    }
#define NNF_SGEMM_STORE(r)                                                             \
    if (r < rb) {                                                                      \
        if (last && alpha != 1.0f) {                                                   \
            lo##r = _mm512_mul_ps(lo##r, scale);                                       \
            hi##r = _mm512_mul_ps(hi##r, scale);                                       \
        }                                                                              \
        _mm512_mask_storeu_ps(c + r * ldc, m0, lo##r);                                 \
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, hi##r);                            \
    }

__attribute__((target("avx512f"), always_inline))
static inline void nnf_sgemm_tile(ptrdiff_t kb, const float *a, ptrdiff_t a_row, ptrdiff_t a_k,
                                  const float *bp, ptrdiff_t ldbp, float *c, ptrdiff_t ldc,
                                  ptrdiff_t rb, __mmask16 m0, __mmask16 m1, int more,
                                  int last, float alpha, int half)
{
    NNF_SGEMM_ROWS(NNF_SGEMM_DECLARE)
    for (ptrdiff_t k = 0; k < kb; k++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, bp + k * ldbp);
        __m512 b1 = half ? b0 : _mm512_maskz_loadu_ps(m1, bp + k * ldbp + 16);
        NNF_SGEMM_ROWS(NNF_SGEMM_FMA)
    }
    __m512 scale = _mm512_set1_ps(alpha);
    NNF_SGEMM_ROWS(NNF_SGEMM_STORE)
}

/* One instance per layout of A (a_k or a_row the constant 1) and width of the tile (32
 * columns, or at most 16, as the output layer's 10, without the FMAs of an empty half). */
#define NNF_SGEMM_INSTANCE(NAME, A_ROW, A_K, HALF)                                     \
    __attribute__((target("avx512f")))                                                 \
    static void NAME(ptrdiff_t kb, const float *a, ptrdiff_t lda, const float *bp,     \
                     ptrdiff_t ldbp, float *c, ptrdiff_t ldc, ptrdiff_t rb,            \
                     __mmask16 m0, __mmask16 m1, int more, int last, float alpha)      \
    {                                                                                  \
        (void)lda;                                                                     \
        nnf_sgemm_tile(kb, a, A_ROW, A_K, bp, ldbp, c, ldc, rb, m0, m1, more, last,    \
                       alpha, HALF);                                                   \
    }
NNF_SGEMM_INSTANCE(nnf_sgemm_tile_a, lda, 1, 0)
NNF_SGEMM_INSTANCE(nnf_sgemm_tile_at, 1, lda, 0)
NNF_SGEMM_INSTANCE(nnf_sgemm_tile_a16, lda, 1, 1)
NNF_SGEMM_INSTANCE(nnf_sgemm_tile_at16, 1, lda, 1)
#undef NNF_SGEMM_INSTANCE

typedef void (*nnf_sgemm_tile_t)(ptrdiff_t kb, const float *a, ptrdiff_t lda,
                                 const float *bp, ptrdiff_t ldbp, float *c, ptrdiff_t ldc,
                                 ptrdiff_t rb, __mmask16 m0, __mmask16 m1, int more,
                                 int last, float alpha);

/* The tile for columns j0:j0+nb (nb <= 32) of a product with A laid out as trans_a says,
 * and the lanes of its two halves inside N. */
static inline nnf_sgemm_tile_t nnf_sgemm_pick(int trans_a, ptrdiff_t nb, __mmask16 *m0,
                                              __mmask16 *m1)
{
    *m0 = nb >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nb) - 1);
    *m1 = nb >= 32 ? (__mmask16)0xffff : nb > 16 ? (__mmask16)((1u << (nb - 16)) - 1) : 0;
    if (nb <= 16)
        return trans_a ? nnf_sgemm_tile_at16 : nnf_sgemm_tile_a16;
    return trans_a ? nnf_sgemm_tile_at : nnf_sgemm_tile_a;
}

/* C (M, N), rows ldc apart := alpha * op(A) @ op(B) in float32 (the chain above); op(A)
 * is A (M, K) or, with trans_a, A.T of A (K, M); op(B) is B (K, N) or B.T of B (N, K);
 * all row-major. Only on a CPU where nnf_sgemm_available(). */
__attribute__((target("avx512f")))
static void nnf_sgemm(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                      float alpha, const float *a, ptrdiff_t lda, const float *b,
                      ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    ptrdiff_t a_row = trans_a ? 1 : lda, a_k = trans_a ? lda : 1;
    nnf_sgemm_tile_t tile;
    __mmask16 m0, m1;
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {                       /* alpha times an empty sum, as the chain has it */
        float zero = alpha != 1.0f ? 0.0f * alpha : 0.0f;  /* -0 for alpha < 0, NaN for NaN */
        for (ptrdiff_t i = 0; i < M; i++)
            for (ptrdiff_t j = 0; j < N; j++)
                c[i * ldc + j] = zero;
        return;
    }
    if (!trans_b) {
        /* NC columns of B at a time (at most NNF_SGEMM_B_BYTES of them, so that they stay
         * in L2), and in them rows outer: a tile's 8 rows of op(A) stay in L1 while the
         * panels stream by */
        ptrdiff_t nc = NNF_SGEMM_B_BYTES / ((ptrdiff_t)sizeof(float) * K);
        nc = nc < NNF_SGEMM_NR ? NNF_SGEMM_NR : nc / NNF_SGEMM_NR * NNF_SGEMM_NR;
        for (ptrdiff_t jc = 0; jc < N; jc += nc) {
            ptrdiff_t jend = N - jc < nc ? N : jc + nc;
            for (ptrdiff_t i0 = 0; i0 < M; i0 += NNF_SGEMM_MR) {
                ptrdiff_t rb = M - i0 < NNF_SGEMM_MR ? M - i0 : NNF_SGEMM_MR;
                for (ptrdiff_t j0 = jc; j0 < jend; j0 += NNF_SGEMM_NR) {
                    tile = nnf_sgemm_pick(trans_a, jend - j0, &m0, &m1);
                    tile(K, a + i0 * a_row, lda, b + j0, ldb, c + i0 * ldc + j0, ldc, rb,
                         m0, m1, 0, 1, alpha);
                }
            }
        }
        return;
    }
    /* op(B)[k][j] = b[j][k]: a panel of 32 columns, KC k at a time, transposed once and
     * used by every tile of rows; the sums stay in C between the pieces of k (a float32
     * store and load: the same chain, the same bits) */
    float bp[NNF_SGEMM_KC * NNF_SGEMM_NR] __attribute__((aligned(64)));
    for (ptrdiff_t j0 = 0; j0 < N; j0 += NNF_SGEMM_NR) {
        ptrdiff_t nb = N - j0 < NNF_SGEMM_NR ? N - j0 : NNF_SGEMM_NR;
        tile = nnf_sgemm_pick(trans_a, nb, &m0, &m1);
        for (ptrdiff_t k0 = 0; k0 < K; k0 += NNF_SGEMM_KC) {
            ptrdiff_t kb = K - k0 < NNF_SGEMM_KC ? K - k0 : NNF_SGEMM_KC;
            for (ptrdiff_t j = 0; j < nb; j++) {
                const float *row = b + (j0 + j) * ldb + k0;
                for (ptrdiff_t k = 0; k < kb; k++)
                    bp[k * NNF_SGEMM_NR + j] = row[k];
            }
            for (ptrdiff_t i0 = 0; i0 < M; i0 += NNF_SGEMM_MR) {
                ptrdiff_t rb = M - i0 < NNF_SGEMM_MR ? M - i0 : NNF_SGEMM_MR;
                tile(kb, a + i0 * a_row + k0 * a_k, lda, bp, NNF_SGEMM_NR, c + i0 * ldc + j0,
                     ldc, rb, m0, m1, k0 > 0, k0 + kb >= K, alpha);
            }
        }
    }
}
#undef NNF_SGEMM_ROWS
#undef NNF_SGEMM_DECLARE
#undef NNF_SGEMM_FMA
#undef NNF_SGEMM_STORE
#else
#define nnf_sgemm nnf_sgemm_chain
#endif

#endif
