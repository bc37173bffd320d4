/* Matrix products with bfloat16 inputs and float32 accumulation, for
 * matmul_precision="bfloat16":
 *
 *     C (M, N) := alpha * op(A) @ op(B),   row-major, op(A) (M, K), op(B) (K, N)
 *
 * A and B are float32; each entry is rounded to bfloat16 (round to nearest even) as it
 * is packed, and every product of two bfloat16 numbers is exact in float32. Each entry
 * of C is then a chain of float32 fused multiply-adds over k in a fixed order, pairs
 * (2p, 2p + 1) of k taken odd first:
 *
 *     acc = fma(a[2p], b[2p], fma(a[2p+1], b[2p+1], acc))        p = 0, 1, ...
 *
 * which is what AVX512-BF16's VDPBF16PS computes in each lane (measured bit for bit on
 * Zen 4 over 2 million random lanes: the other orders and a single rounding of the pair
 * differ in 7-8% of them). So the same chain runs on every CPU, by one of these paths,
 * chosen at run time (nnf_bf16_best_path):
 *
 *     NNF_BF16_AVX512BF16  VDPBF16PS, 32 products per instruction
 *     NNF_BF16_AVX512F     the chain in AVX-512F fused multiply-adds (no BF16 unit)
 *     NNF_BF16_FMA         ... in AVX2 + FMA
 *     NNF_BF16_GENERIC     ... in C's fmaf, on any x86-64
 *
 * and all give the same bits (tests/test_bf16.py runs every path the CPU has). The
 * callers run with flush-to-zero and denormals-are-zero set (csrc/_pool.h), as
 * VDPBF16PS always does. Each entry of C depends only on its row of op(A), its column
 * of op(B) and K: never on M, N or where the block lies, so a row's result does not
 * depend on the rows beside it, and the grid's blocks give the same bits for any team.
 *
 * Blocking: all of op(B) is packed once per call into NR-column panels (pairs of k
 * interleaved per column), and op(A) MC rows at a time into MR-row panels (pairs of k
 * per row), in a scratch buffer the thread keeps; a micro-kernel computes an MR x NR
 * tile of C over all of K. Without memory for the scratch, the product runs in pieces
 * of KC k on the stack, keeping the float32 sums in C between them: the same chain, the
 * same bits. Packing takes a float32 denormal as zero (as the products do) and rounds to
 * bfloat16 in integer arithmetic, or by VCVTNE2PS2BF16 on the AVX512-BF16 path: the same
 * bits (nnf_bf16_pair). beta is always 0.
 */
#ifndef NNFAST_BF16_H
#define NNFAST_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "_vec.h"                   /* NNF_CLONES */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NNF_BF16_X86 1
#endif

#define NNF_BF16_MR 8              /* rows of a micro-tile */
#define NNF_BF16_NR 32             /* columns of a micro-tile: 2 x 16 float32 lanes */
#define NNF_BF16_MC 64             /* rows of op(A) packed at a time */
#define NNF_BF16_KC 256            /* k packed at a time (even) */

enum {
    NNF_BF16_GENERIC = 0,
    NNF_BF16_FMA = 1,
    NNF_BF16_AVX512F = 2,
    NNF_BF16_AVX512BF16 = 3,
    NNF_BF16_N_PATHS = 4
};

static const char *const nnf_bf16_path_names[NNF_BF16_N_PATHS] = {
    "generic", "fma", "avx512f", "avx512bf16"};

/* Whether this CPU (and its OS) runs `path`. */
static int nnf_bf16_path_available(int path)
{
#ifdef NNF_BF16_X86
    __builtin_cpu_init();
    switch (path) {
    case NNF_BF16_GENERIC:
        return 1;
    case NNF_BF16_FMA:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case NNF_BF16_AVX512F:
        return __builtin_cpu_supports("avx512f");
    case NNF_BF16_AVX512BF16:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    }
    return 0;
#else
    return path == NNF_BF16_GENERIC;
#endif
}

static int nnf_bf16_best_path(void)
{
    for (int path = NNF_BF16_N_PATHS - 1; path > 0; path--)
        if (nnf_bf16_path_available(path))
            return path;
    return NNF_BF16_GENERIC;
}

/* float32 bits -> bfloat16 bits, round to nearest even; a NaN stays a (quiet) NaN. */
static inline uint32_t nnf_bf16_round_bits(uint32_t u)
{
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    uint32_t nan = (u >> 16) << 16 | 0x400000u;
    return ((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded) >> 16;
}

/* Two float32 -> one 32-bit pair of bfloat16 as the products read them, lo in the low
 * half (the order VDPBF16PS reads them): a denormal is first taken as a zero of its sign
 * (as every product of the step takes it, with denormals-are-zero), then rounded. This
 * is what VCVTNE2PS2BF16 computes: measured equal on all 2^32 float32 values (Zen 4), so
 * the AVX512-BF16 path packs with it (nnf_bf16_pack_*_cvt). Written so that loops of it
 * vectorize. */
static inline uint32_t nnf_bf16_pair(float lo, float hi)
{
    uint32_t u[2];
    memcpy(&u[0], &lo, sizeof(float));
    memcpy(&u[1], &hi, sizeof(float));
    for (int h = 0; h < 2; h++)
        u[h] = nnf_bf16_round_bits((u[h] & 0x7f800000u) == 0 ? u[h] & 0x80000000u : u[h]);
    return u[0] | u[1] << 16;
}

/* float32 -> bfloat16, round to nearest even (a denormal too); a NaN stays a (quiet) NaN. */
static inline uint16_t nnf_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)nnf_bf16_round_bits(u);
}

static inline float nnf_from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

#ifdef NNF_BF16_X86
/* Packing on the AVX512-BF16 path: VCVTNE2PS2BF16 rounds 32 float32 at once
 * (nnf_bf16_pair's bits), and a word permutation interleaves two rows into pairs.
 * Measured on Zen 4, a 784 x 128 panel of op(B) = B packed from cache: 7.8 us instead of
 * 14.6. Masked loads read nothing past n (the lanes past it are zero). */
#define NNF_BF16_CVT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* dst[0:16] := the pairs (lo[j], hi[j]), j < n <= 16, zero past n. */
NNF_BF16_CVT static inline void nnf_bf16_pairs16(const float *lo, const float *hi,
                                                 ptrdiff_t n, uint32_t *dst)
{
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26,
                                                10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
                                                4, 19, 3, 18, 2, 17, 1, 16, 0);
    __mmask16 k = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    __m512 l = _mm512_maskz_loadu_ps(k, lo), h = _mm512_maskz_loadu_ps(k, hi);
    __m512i words = (__m512i)_mm512_cvtne2ps_pbh(h, l);    /* lo's 16, then hi's 16 */
    _mm512_storeu_si512(dst, _mm512_permutexvar_epi16(interleave, words));
}

/* dst[0:8] := the pairs (lo[j], hi[j]), j < n <= 8, zero past n. */
NNF_BF16_CVT static inline void nnf_bf16_pairs8(const float *lo, const float *hi,
                                                ptrdiff_t n, uint32_t *dst)
{
    const __m256i interleave = _mm256_set_epi16(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2,
                                                9, 1, 8, 0);
    __mmask8 k = n >= 8 ? (__mmask8)0xff : (__mmask8)((1u << n) - 1);
    __m256 l = _mm256_maskz_loadu_ps(k, lo), h = _mm256_maskz_loadu_ps(k, hi);
    __m256i words = (__m256i)_mm256_cvtne2ps_pbh(h, l);
    _mm256_storeu_si256((__m256i *)dst, _mm256_permutexvar_epi16(interleave, words));
}

/* nnf_bf16_pack_b's full pairs of op(B) = B: rows 2p, 2p + 1 of b, columns j0:j0+nb. */
NNF_BF16_CVT static void nnf_bf16_pack_b_cvt(const float *b, ptrdiff_t ldb, ptrdiff_t k0,
                                             ptrdiff_t full, ptrdiff_t j0, ptrdiff_t nb,
                                             uint32_t *pb)
{
    for (ptrdiff_t p = 0; p < full; p++) {
        const float *lo = b + (k0 + 2 * p) * ldb + j0;
        nnf_bf16_pairs16(lo, lo + ldb, nb < 16 ? nb : 16, pb + p * NNF_BF16_NR);
        nnf_bf16_pairs16(lo + 16, lo + ldb + 16, nb > 16 ? nb - 16 : 0,
                         pb + p * NNF_BF16_NR + 16);
    }
}

/* The full pairs of k along `rows` <= 8 rows of a from row i (k0 on): pair p of row r
 * goes to dst[p * stride + r], zero for r past `rows`. Each row gives 8 pairs at a time,
 * and an 8 x 8 transpose of 32-bit words puts them side by side. This packs op(A) = A
 * (a panel's rows) and op(B) = B.T (8 of a panel's columns). */
NNF_BF16_CVT static void nnf_bf16_pack_rows_cvt(const float *a, ptrdiff_t lda, ptrdiff_t k0,
                                                ptrdiff_t full, ptrdiff_t i, ptrdiff_t rows,
                                                uint32_t *dst, ptrdiff_t stride)
{
    for (ptrdiff_t p0 = 0; p0 < full; p0 += 8) {
        ptrdiff_t np = full - p0 < 8 ? full - p0 : 8;
        __mmask16 k = np == 8 ? (__mmask16)0xffff : (__mmask16)((1u << (2 * np)) - 1);
        __m256i w[8], t[8], u[8];
        for (int r = 0; r < 8; r++)        /* w[r]: row r's pairs p0 .. p0 + 7 */
            w[r] = r < rows ? (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(
                                  k, a + (i + r) * lda + k0 + 2 * p0))
                            : _mm256_setzero_si256();
        for (int r = 0; r < 8; r += 2) {
            t[r] = _mm256_unpacklo_epi32(w[r], w[r + 1]);
            t[r + 1] = _mm256_unpackhi_epi32(w[r], w[r + 1]);
        }
        for (int r = 0; r < 8; r += 4) {
            u[r] = _mm256_unpacklo_epi64(t[r], t[r + 2]);
            u[r + 1] = _mm256_unpackhi_epi64(t[r], t[r + 2]);
            u[r + 2] = _mm256_unpacklo_epi64(t[r + 1], t[r + 3]);
            u[r + 3] = _mm256_unpackhi_epi64(t[r + 1], t[r + 3]);
        }
        for (int q = 0; q < np; q++)      /* pair p0 + q of the 8 rows */
            _mm256_storeu_si256((__m256i *)(dst + (p0 + q) * stride),
                                q < 4 ? _mm256_permute2x128_si256(u[q], u[q + 4], 0x20)
                                      : _mm256_permute2x128_si256(u[q - 4], u[q], 0x31));
    }
}

/* nnf_bf16_pack_a's full pairs of one panel of op(A) = A.T: rows 2p, 2p + 1 of a, the
 * panel's `rows` columns from i. */
NNF_BF16_CVT static void nnf_bf16_pack_at_cvt(const float *a, ptrdiff_t lda, ptrdiff_t k0,
                                              ptrdiff_t full, ptrdiff_t i, ptrdiff_t rows,
                                              uint32_t *dst)
{
    for (ptrdiff_t p = 0; p < full; p++) {
        const float *lo = a + (k0 + 2 * p) * lda + i;
        nnf_bf16_pairs8(lo, lo + lda, rows, dst + p * NNF_BF16_MR);
    }
}
#endif

/* Pack rows i0:i0+mb, k k0:k0+kb of op(A) into MR-row panels: panel q, pair p holds the
 * pair (op(A)[r][2p], op(A)[r][2p+1]) of each of its MR rows r; rows past mb and the k
 * past kb are zero. */
static NNF_CLONES void nnf_bf16_pack_a(int path, int trans, const float *a, ptrdiff_t lda,
                                       ptrdiff_t i0, ptrdiff_t mb, ptrdiff_t k0,
                                       ptrdiff_t kb, uint32_t *pa)
{
    ptrdiff_t kp = (kb + 1) / 2, full = kb / 2, panels = (mb + NNF_BF16_MR - 1) / NNF_BF16_MR;
    for (ptrdiff_t q = 0; q < panels; q++) {
        uint32_t *dst = pa + q * kp * NNF_BF16_MR;
        ptrdiff_t rows = mb - q * NNF_BF16_MR < NNF_BF16_MR ? mb - q * NNF_BF16_MR : NNF_BF16_MR;
        if (trans && path == NNF_BF16_AVX512BF16) {
#ifdef NNF_BF16_X86
            nnf_bf16_pack_at_cvt(a, lda, k0, full, i0 + q * NNF_BF16_MR, rows, dst);
#endif
        } else if (trans) {             /* op(A)[i][k] = a[k][i]: rows of a are contiguous in i */
            for (ptrdiff_t p = 0; p < full; p++) {
                const float *lo = a + (k0 + 2 * p) * lda + i0 + q * NNF_BF16_MR;
                for (ptrdiff_t r = 0; r < rows; r++)
                    dst[p * NNF_BF16_MR + r] = nnf_bf16_pair(lo[r], lo[lda + r]);
            }
        } else if (path == NNF_BF16_AVX512BF16) {
#ifdef NNF_BF16_X86
            nnf_bf16_pack_rows_cvt(a, lda, k0, full, i0 + q * NNF_BF16_MR, rows, dst,
                                   NNF_BF16_MR);
#endif
        } else {
            for (ptrdiff_t r = 0; r < rows; r++) {
                const float *row = a + (i0 + q * NNF_BF16_MR + r) * lda + k0;
                for (ptrdiff_t p = 0; p < full; p++)
                    dst[p * NNF_BF16_MR + r] = nnf_bf16_pair(row[2 * p], row[2 * p + 1]);
            }
        }
        for (ptrdiff_t r = 0; r < rows && full < kp; r++) {   /* odd kb: the last k alone */
            ptrdiff_t i = i0 + q * NNF_BF16_MR + r, k = k0 + kb - 1;
            dst[full * NNF_BF16_MR + r] = nnf_bf16_pair(trans ? a[k * lda + i] : a[i * lda + k], 0);
        }
        for (ptrdiff_t p = 0; p < kp; p++)                     /* rows past mb */
            for (ptrdiff_t r = rows; r < NNF_BF16_MR; r++)
                dst[p * NNF_BF16_MR + r] = 0;
    }
}

/* Pack k k0:k0+kb, columns j0:j0+nb of op(B) into one NR-column panel: pair p holds the
 * pair (op(B)[2p][j], op(B)[2p+1][j]) of each of its NR columns j; the rest is zero. */
static NNF_CLONES void nnf_bf16_pack_b(int path, int trans, const float *b, ptrdiff_t ldb,
                                       ptrdiff_t k0, ptrdiff_t kb, ptrdiff_t j0,
                                       ptrdiff_t nb, uint32_t *pb)
{
    ptrdiff_t kp = (kb + 1) / 2, full = kb / 2;
    if (trans && path == NNF_BF16_AVX512BF16) {
#ifdef NNF_BF16_X86
        for (ptrdiff_t g = 0; g < NNF_BF16_NR; g += 8)
            nnf_bf16_pack_rows_cvt(b, ldb, k0, full, j0 + g, nb - g, pb + g, NNF_BF16_NR);
#endif
    } else if (trans) {                 /* op(B)[k][j] = b[j][k]: a column's pairs are adjacent */
        for (ptrdiff_t j = 0; j < nb; j++) {
            const float *row = b + (j0 + j) * ldb + k0;
            for (ptrdiff_t p = 0; p < full; p++)
                pb[p * NNF_BF16_NR + j] = nnf_bf16_pair(row[2 * p], row[2 * p + 1]);
        }
    } else if (path == NNF_BF16_AVX512BF16) {
#ifdef NNF_BF16_X86
        nnf_bf16_pack_b_cvt(b, ldb, k0, full, j0, nb, pb);
#endif
    } else {
        for (ptrdiff_t p = 0; p < full; p++) {
            const float *lo = b + (k0 + 2 * p) * ldb + j0;
            for (ptrdiff_t j = 0; j < nb; j++)
                pb[p * NNF_BF16_NR + j] = nnf_bf16_pair(lo[j], lo[ldb + j]);
        }
    }
    for (ptrdiff_t j = 0; j < nb && full < kp; j++) {         /* odd kb: the last k alone */
        ptrdiff_t k = k0 + kb - 1;
        pb[full * NNF_BF16_NR + j] = nnf_bf16_pair(trans ? b[(j0 + j) * ldb + k] : b[k * ldb + j0 + j], 0);
    }
    for (ptrdiff_t p = 0; p < kp; p++)                         /* columns past nb */
        for (ptrdiff_t j = nb; j < NNF_BF16_NR; j++)
            pb[p * NNF_BF16_NR + j] = 0;
}

/* The micro-kernels: c (MR x NR, rows ldc apart) := [c if `more` else 0] + the chain over
 * kp pairs of the packed panels, times alpha if `last`. */
typedef void (*nnf_bf16_kernel_t)(ptrdiff_t kp, const uint32_t *pa, const uint32_t *pb,
                                  float *c, ptrdiff_t ldc, int more, int last, float alpha);

/* The chain in plain C: the compiler vectorizes the column loop for each target. */
#define NNF_BF16_CHAIN_BODY                                                              \
    float acc[NNF_BF16_MR][NNF_BF16_NR];                                                 \
    for (int r = 0; r < NNF_BF16_MR; r++)                                                \
        for (int j = 0; j < NNF_BF16_NR; j++)                                            \
            acc[r][j] = more ? c[r * ldc + j] : 0.0f;                                    \
    for (ptrdiff_t p = 0; p < kp; p++) {                                                 \
        const uint32_t *bp = pb + p * NNF_BF16_NR;                                       \
        float b0[NNF_BF16_NR], b1[NNF_BF16_NR];                                          \
        for (int j = 0; j < NNF_BF16_NR; j++) {                                          \
            b0[j] = nnf_from_bf16((uint16_t)bp[j]);                                      \
            b1[j] = nnf_from_bf16((uint16_t)(bp[j] >> 16));                              \
        }                                                                                \
        for (int r = 0; r < NNF_BF16_MR; r++) {                                          \
            float a0 = nnf_from_bf16((uint16_t)pa[p * NNF_BF16_MR + r]);                 \
            float a1 = nnf_from_bf16((uint16_t)(pa[p * NNF_BF16_MR + r] >> 16));         \
            for (int j = 0; j < NNF_BF16_NR; j++)                                        \
                acc[r][j] = fmaf(a0, b0[j], fmaf(a1, b1[j], acc[r][j]));                 \
        }                                                                                \
    }                                                                                    \
    for (int r = 0; r < NNF_BF16_MR; r++)                                                \
        for (int j = 0; j < NNF_BF16_NR; j++)                                            \
            c[r * ldc + j] = last ? acc[r][j] * alpha : acc[r][j];

static void nnf_bf16_kernel_generic(ptrdiff_t kp, const uint32_t *pa, const uint32_t *pb,
                                    float *c, ptrdiff_t ldc, int more, int last, float alpha)
{
    NNF_BF16_CHAIN_BODY
}

#ifdef NNF_BF16_X86
__attribute__((target("avx2,fma")))
static void nnf_bf16_kernel_fma(ptrdiff_t kp, const uint32_t *pa, const uint32_t *pb,
                                float *c, ptrdiff_t ldc, int more, int last, float alpha)
{
    NNF_BF16_CHAIN_BODY
}

__attribute__((target("avx512f")))
static void nnf_bf16_kernel_avx512f(ptrdiff_t kp, const uint32_t *pa, const uint32_t *pb,
                                    float *c, ptrdiff_t ldc, int more, int last, float alpha)
{
    NNF_BF16_CHAIN_BODY
}

/* VDPBF16PS: lane j of acc += a[2j+1] b[2j+1], then += a[2j] b[2j] (the chain). Each
 * step broadcasts one row's pair of A and multiplies it into the two halves of B's
 * panel: 16 accumulators of 16 lanes. */
__attribute__((target("avx512f,avx512bf16")))
static void nnf_bf16_kernel_avx512bf16(ptrdiff_t kp, const uint32_t *pa, const uint32_t *pb,
                                       float *c, ptrdiff_t ldc, int more, int last,
                                       float alpha)
{
    __m512 acc[NNF_BF16_MR][2];
    for (int r = 0; r < NNF_BF16_MR; r++)
        for (int h = 0; h < 2; h++)
            acc[r][h] = more ? _mm512_loadu_ps(c + r * ldc + 16 * h) : _mm512_setzero_ps();
    for (ptrdiff_t p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(pb + p * NNF_BF16_NR);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(pb + p * NNF_BF16_NR + 16);
        const uint32_t *ap = pa + p * NNF_BF16_MR;
        for (int r = 0; r < NNF_BF16_MR; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int32_t)ap[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    __m512 scale = _mm512_set1_ps(alpha);
    for (int r = 0; r < NNF_BF16_MR; r++)
        for (int h = 0; h < 2; h++)
            _mm512_storeu_ps(c + r * ldc + 16 * h,
                             last ? _mm512_mul_ps(acc[r][h], scale) : acc[r][h]);
}
#endif

static nnf_bf16_kernel_t nnf_bf16_kernel(int path)
{
#ifdef NNF_BF16_X86
    switch (path) {
    case NNF_BF16_FMA:
        return nnf_bf16_kernel_fma;
    case NNF_BF16_AVX512F:
        return nnf_bf16_kernel_avx512f;
    case NNF_BF16_AVX512BF16:
        return nnf_bf16_kernel_avx512bf16;
    }
#endif
    return nnf_bf16_kernel_generic;
}

/* One MR x NR tile of c at (i, j) with rb x nb of it inside c: the kernel, through a
 * full tile of our own when the tile is partial. */
static void nnf_bf16_tile(nnf_bf16_kernel_t kernel, ptrdiff_t kp, const uint32_t *pa,
                          const uint32_t *pb, float *c, ptrdiff_t ldc, ptrdiff_t rb,
                          ptrdiff_t nb, int more, int last, float alpha)
{
    float edge[NNF_BF16_MR * NNF_BF16_NR];
    if (rb == NNF_BF16_MR && nb == NNF_BF16_NR) {
        kernel(kp, pa, pb, c, ldc, more, last, alpha);
        return;
    }
    if (more) {
        memset(edge, 0, sizeof edge);
        for (ptrdiff_t r = 0; r < rb; r++)
            memcpy(edge + r * NNF_BF16_NR, c + r * ldc, nb * sizeof(float));
    }
    kernel(kp, pa, pb, edge, NNF_BF16_NR, more, last, alpha);
    for (ptrdiff_t r = 0; r < rb; r++)
        memcpy(c + r * ldc, edge + r * NNF_BF16_NR, nb * sizeof(float));
}

/* Scratch of the calling thread for the packed operands, kept between calls and freed
 * when the thread exits; NULL if it cannot have `bytes` (then the caller packs in
 * pieces on its stack, which gives the same bits). */
static pthread_key_t nnf_bf16_key;
static pthread_once_t nnf_bf16_key_once = PTHREAD_ONCE_INIT;
static int nnf_bf16_key_ok = 0;

typedef struct {
    void *p;
    size_t bytes;
} nnf_bf16_scratch_t;

static void nnf_bf16_scratch_free(void *v)
{
    nnf_bf16_scratch_t *s = v;
    free(s->p);
    free(s);
}

static void nnf_bf16_make_key(void)
{
    nnf_bf16_key_ok = pthread_key_create(&nnf_bf16_key, nnf_bf16_scratch_free) == 0;
}

static int nnf_bf16_pieces_only = 0;  /* tests: always the stack path */

static void *nnf_bf16_scratch(size_t bytes)
{
    if (nnf_bf16_pieces_only)
        return NULL;
    pthread_once(&nnf_bf16_key_once, nnf_bf16_make_key);
    if (!nnf_bf16_key_ok)
        return NULL;
    nnf_bf16_scratch_t *s = pthread_getspecific(nnf_bf16_key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL || pthread_setspecific(nnf_bf16_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes < bytes) {
        free(s->p);
        s->bytes = 0;
        if (posix_memalign(&s->p, 64, bytes) != 0) {
            s->p = NULL;
            return NULL;
        }
        s->bytes = bytes;
    }
    return s->p;
}

/* The product in pieces: op(A) MC rows x KC columns, op(B) KC x NR at a time, on the
 * stack; the sums stay in c between pieces of k. */
static void nnf_gemm_bf16_pieces(int path, int trans_a, int trans_b,
                                 ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float alpha,
                                 const float *a, ptrdiff_t lda, const float *b,
                                 ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    nnf_bf16_kernel_t kernel = nnf_bf16_kernel(path);
    uint32_t pa[NNF_BF16_MC * NNF_BF16_KC / 2];
    uint32_t pb[NNF_BF16_KC / 2 * NNF_BF16_NR];
    for (ptrdiff_t i0 = 0; i0 < M; i0 += NNF_BF16_MC) {
        ptrdiff_t mb = M - i0 < NNF_BF16_MC ? M - i0 : NNF_BF16_MC;
        for (ptrdiff_t k0 = 0; k0 < K; k0 += NNF_BF16_KC) {
            ptrdiff_t kb = K - k0 < NNF_BF16_KC ? K - k0 : NNF_BF16_KC, kp = (kb + 1) / 2;
            nnf_bf16_pack_a(path, trans_a, a, lda, i0, mb, k0, kb, pa);
            for (ptrdiff_t j0 = 0; j0 < N; j0 += NNF_BF16_NR) {
                ptrdiff_t nb = N - j0 < NNF_BF16_NR ? N - j0 : NNF_BF16_NR;
                nnf_bf16_pack_b(path, trans_b, b, ldb, k0, kb, j0, nb, pb);
                for (ptrdiff_t r0 = 0; r0 < mb; r0 += NNF_BF16_MR)
                    nnf_bf16_tile(kernel, kp, pa + r0 * kp, pb, c + (i0 + r0) * ldc + j0,
                                  ldc, mb - r0 < NNF_BF16_MR ? mb - r0 : NNF_BF16_MR, nb,
                                  k0 > 0, k0 + kb >= K, alpha);
            }
        }
    }
}

/* C (M, N), rows ldc apart := alpha * op(A) @ op(B) through bfloat16 inputs, on `path`
 * (one nnf_bf16_path_available says this CPU runs). op(A) is A (M, K) or, with trans_a,
 * A.T of A (K, M); op(B) is B (K, N) or B.T of B (N, K); all row-major.
 * All of op(B) is packed once and each MC rows of op(A) once, over all of K, in the
 * thread's scratch; without scratch memory, in pieces on the stack (the same bits). */
static void nnf_gemm_bf16(int path, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                          ptrdiff_t K, float alpha, const float *a, ptrdiff_t lda,
                          const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    nnf_bf16_kernel_t kernel = nnf_bf16_kernel(path);
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {                       /* alpha times an empty sum, as the chain has it */
        float zero = alpha != 1.0f ? 0.0f * alpha : 0.0f;  /* -0 for alpha < 0, NaN for NaN */
        for (ptrdiff_t i = 0; i < M; i++)
            for (ptrdiff_t j = 0; j < N; j++)
                c[i * ldc + j] = zero;
        return;
    }
    ptrdiff_t kp = (K + 1) / 2, panels = (N + NNF_BF16_NR - 1) / NNF_BF16_NR;
    size_t b_words = (size_t)panels * kp * NNF_BF16_NR, a_words = (size_t)NNF_BF16_MC * kp;
    uint32_t *pb = nnf_bf16_scratch((b_words + a_words) * sizeof(uint32_t));
    if (pb == NULL) {
        nnf_gemm_bf16_pieces(path, trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, c, ldc);
        return;
    }
    uint32_t *pa = pb + b_words;
    for (ptrdiff_t q = 0; q < panels; q++)
        nnf_bf16_pack_b(path, trans_b, b, ldb, 0, K, q * NNF_BF16_NR,
                        N - q * NNF_BF16_NR < NNF_BF16_NR ? N - q * NNF_BF16_NR : NNF_BF16_NR,
                        pb + q * kp * NNF_BF16_NR);
    for (ptrdiff_t i0 = 0; i0 < M; i0 += NNF_BF16_MC) {
        ptrdiff_t mb = M - i0 < NNF_BF16_MC ? M - i0 : NNF_BF16_MC;
        nnf_bf16_pack_a(path, trans_a, a, lda, i0, mb, 0, K, pa);
        for (ptrdiff_t q = 0; q < panels; q++) {
            ptrdiff_t j0 = q * NNF_BF16_NR, nb = N - j0 < NNF_BF16_NR ? N - j0 : NNF_BF16_NR;
            for (ptrdiff_t r0 = 0; r0 < mb; r0 += NNF_BF16_MR)
                nnf_bf16_tile(kernel, kp, pa + r0 * kp, pb + q * kp * NNF_BF16_NR,
                              c + (i0 + r0) * ldc + j0, ldc,
                              mb - r0 < NNF_BF16_MR ? mb - r0 : NNF_BF16_MR, nb, 0, 1, alpha);
        }
    }
}

#endif
