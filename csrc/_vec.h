/* Hot elementwise loops: bias + activation, activation backward, dropout, column sums,
 * the products with a sparse (CSR) input and the optimizers, compiled once per x86-64
 * level.
 *
 * target_clones builds each function for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and a
 * baseline, and picks one at load time, so a distributable build (no -march=native)
 * still runs the widest vector code the CPU has (Cython's own loops get SSE2 only).
 * Loops are written so that gcc -O3 vectorises them: the switch on the activation is
 * outside the loops, pointers are restrict, and in-place use has a loop of its own (with
 * possibly-aliasing pointers gcc falls back to a scalar, branchy loop: measured 6x slower
 * for the ReLU backward on real data). The activation codes and the leaky slope are
 * those of _codes.h.
 */
#ifndef NNFAST_VEC_H
#define NNFAST_VEC_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_codes.h"

/* Flush-to-zero and denormals-are-zero for the duration of one loop. Adam's first moment
 * of a weight whose gradient became zero decays geometrically through the denormal range,
 * where every arithmetic operation takes a slow microcode path: measured on a trained
 * 784-256-128-10 network, 2% denormal entries made an Adam step 1.75x slower. Values
 * below 1.2e-38 (float32) are then zero, which changes no result that matters. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define NNF_FTZ_BEGIN const unsigned int nnf_csr_ = _mm_getcsr(); _mm_setcsr(nnf_csr_ | 0x8040u);
#define NNF_FTZ_END _mm_setcsr(nnf_csr_);
#else
#define NNF_FTZ_BEGIN
#define NNF_FTZ_END
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 11)
#define NNF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NNF_CLONES
#endif

/* ------------------------------------------------------------------ vectorisable math
 * libm's expf/tanhf are scalar calls, so a loop that uses them runs one element at a time
 * (measured: tanh forward of a 128x256 block 13 ns an element, 4x slower than NumPy).
 * These inline versions are plain arithmetic that gcc vectorises inside the clones.
 *
 * exp of x <= 0 (all that sigmoid, tanh and softmax need): x = k ln2 + r with |r| <= ln2/2
 * (Cody-Waite: ln2 in a high part exact in the format and a low part), exp(r) by its
 * Taylor polynomial (float degree 7: truncation 5e-9; double degree 13: 4e-18), times 2^k
 * built in the exponent field; k is rounded by adding and subtracting 1.5 * 2^23 (2^52),
 * which vectorises where floor() does not. Results below the smallest normal number are 0.
 * tanh: for |x| < 0.625 x * P(x^2), P a Chebyshev fit of tanh(t)/t on [0, 0.625^2]
 * (float 6 terms: 3.9e-9; double 13 terms: 3.6e-19); above, 1 - 2 / (exp(2|x|) + 1)
 * written with e = exp(-2|x|) as (1 - e) / (1 + e), where no digits cancel. */
static inline float nnf_exp_neg_f32(float x)
{
    const float lo = -87.33654475f;                 /* exp(lo) = FLT_MIN */
    float xc = x < lo ? lo : x;
    float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round: 1.5 * 2^23 */
    float r = xc - k * 0.693359375f - k * -2.12194440e-4f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f
              + r * (8.33333333e-3f + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lo ? 0.0f : p * scale;
}

static inline double nnf_exp_neg_f64(double x)
{
    const double lo = -708.3964185322641;           /* exp(lo) = DBL_MIN */
    double xc = x < lo ? lo : x;
    double k = (xc * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;
    double r = xc - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10;
    double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24
               + r * (1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320
               + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800
               + r * (1.0 / 479001600 + r * (1.0 / 6227020800.0)))))))))))));
    int64_t bits = ((int64_t)k + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lo ? 0.0 : p * scale;
}

static inline float nnf_tanh_f32(float x)
{
    float t = fabsf(x), z = x * x;
    float small = x * (1.0f + z * (-0.3333325986f + z * (0.1333111406f + z * (-0.05372010766f
                  + z * (0.02058819145f + z * -0.005657135184f)))));
    float e = nnf_exp_neg_f32(-2.0f * t);
    float big = copysignf((1.0f - e) / (1.0f + e), x);
    return t < 0.625f ? small : big;
}

static inline double nnf_tanh_f64(double x)
{
    double t = fabs(x), z = x * x;
    double small = x * (0.999999999999999999642 + z * (-0.333333333333333023111
        + z * (0.133333333333288755019 + z * (-0.0539682539657323316679
        + z * (0.0218694884618859263545 + z * (-0.00886323422471306984296
        + z * (0.00359211326369681363001 + z * (-0.00145572181161269174619
        + z * (0.00058943608416454306803 + z * (-0.000236971895072786230698
        + z * (0.000091493870984202001983 + z * (-0.0000301267744594098264007
        + z * 0.00000601757585087818372158))))))))))));
    double e = nnf_exp_neg_f64(-2.0 * t);
    double big = copysign((1.0 - e) / (1.0 + e), x);
    return t < 0.625 ? small : big;
}

/* sigmoid(x) = 1 / (1 + exp(-x)) from e = exp(-|x|) <= 1: no overflow either way. */
static inline float nnf_sigmoid_f32(float x)
{
    float e = nnf_exp_neg_f32(-fabsf(x));
    return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static inline double nnf_sigmoid_f64(double x)
{
    double e = nnf_exp_neg_f64(-fabs(x));
    return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* a (n, m) := act(a + b), b (m,) broadcast over rows, rows ld apart (a block of a wider
 * array when ld > m); softmax along each row. */
#define NNF_BIAS_ACT(NAME, T, EXPNEG, TANH, SIGMOID)                                               \
    static NNF_CLONES void NAME(T *restrict a, const T *restrict b, ptrdiff_t n,      \
                                ptrdiff_t m, ptrdiff_t ld, int act)                   \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T *restrict r = a + i * ld;                                                \
            switch (act) {                                                             \
            case NNF_ACT_RELU:                                                         \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    T v = r[j] + b[j];                                                 \
                    r[j] = !(v <= 0) ? v : (T)0;    /* NaN stays NaN: the loss shows it */ \
                }                                                                      \
                break;                                                                 \
            case NNF_ACT_LEAKY_RELU:                                                   \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    T v = r[j] + b[j];                                                 \
                    r[j] = v > 0 ? v : (T)NNF_LEAKY_SLOPE * v;                         \
                }                                                                      \
                break;                                                                 \
            case NNF_ACT_TANH:                                                         \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] = TANH(r[j] + b[j]);                                          \
                break;                                                                 \
            case NNF_ACT_SIGMOID:                                                      \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] = SIGMOID(r[j] + b[j]);                                       \
                break;                                                                 \
            case NNF_ACT_SOFTMAX: {                                                    \
                T mx = r[0] + b[0], s = 0;                                             \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    r[j] += b[j];                                                      \
                    mx = r[j] > mx ? r[j] : mx;                                        \
                }                                                                      \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    r[j] = EXPNEG(r[j] - mx);                                          \
                    s += r[j];                                                         \
                }                                                                      \
                s = (T)1 / s;                                                          \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] *= s;                                                         \
                break;                                                                 \
            }                                                                          \
            default: /* NNF_ACT_LINEAR */                                              \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] += b[j];                                                      \
            }                                                                          \
        }                                                                              \
    }
NNF_BIAS_ACT(nnf_bias_act_f32, float, nnf_exp_neg_f32, nnf_tanh_f32, nnf_sigmoid_f32)
NNF_BIAS_ACT(nnf_bias_act_f64, double, nnf_exp_neg_f64, nnf_tanh_f64, nnf_sigmoid_f64)

/* o := g * act'(z) from y = act(z), k < size; OUT/IN name the pointers so that the same
 * body serves out-of-place (three restrict pointers) and in-place (o is g) use. */
#define NNF_ACT_BACKWARD_BODY(T, OUT, IN)                                              \
    switch (act) {                                                                     \
    case NNF_ACT_RELU:                                                                 \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = y[k] > 0 ? IN[k] : (T)0;                                          \
        break;                                                                         \
    case NNF_ACT_LEAKY_RELU:                                                           \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = y[k] > 0 ? IN[k] : (T)NNF_LEAKY_SLOPE * IN[k];                    \
        break;                                                                         \
    case NNF_ACT_TANH:                                                                 \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = IN[k] * ((T)1 - y[k] * y[k]);                                     \
        break;                                                                         \
    case NNF_ACT_SIGMOID:                                                              \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = IN[k] * y[k] * ((T)1 - y[k]);                                     \
        break;                                                                         \
    default: /* NNF_ACT_LINEAR */                                                      \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = IN[k];                                                            \
    }

#define NNF_ACT_BACKWARD(NAME, T)                                                      \
    static NNF_CLONES void NAME##_inplace(T *restrict o, const T *restrict y,         \
                                          ptrdiff_t size, int act)                    \
    {                                                                                  \
        if (act == NNF_ACT_LINEAR)                                                     \
            return;                                                                    \
        NNF_ACT_BACKWARD_BODY(T, o, o)                                                 \
    }                                                                                  \
    static NNF_CLONES void NAME##_copy(T *restrict o, const T *restrict g,            \
                                       const T *restrict y, ptrdiff_t size, int act)  \
    {                                                                                  \
        NNF_ACT_BACKWARD_BODY(T, o, g)                                                 \
    }                                                                                  \
    /* n rows of m entries, ld apart in all three arrays (contiguous when ld == m) */  \
    static void NAME(T *o, const T *g, const T *y, ptrdiff_t n, ptrdiff_t m,          \
                     ptrdiff_t ld, int act)                                            \
    {                                                                                  \
        if (ld == m) {                                                                 \
            m *= n;                                                                    \
            n = 1;                                                                     \
        }                                                                              \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            if (o == g)                                                                \
                NAME##_inplace(o + i * ld, y + i * ld, m, act);                        \
            else                                                                       \
                NAME##_copy(o + i * ld, g + i * ld, y + i * ld, m, act);               \
        }                                                                              \
    }
NNF_ACT_BACKWARD(nnf_act_backward_f32, float)
NNF_ACT_BACKWARD(nnf_act_backward_f64, double)

/* s (m,) := scale * x.sum(axis=0), x (n, m) with rows ld apart; sums in double (a float32
 * sum of a full data set's rows would lose digits), columns in blocks held on the stack. */
#define NNF_COL_BLOCK 512
#define NNF_COL_SUM(NAME, T)                                                           \
    static NNF_CLONES void NAME(T *restrict s, const T *restrict x, ptrdiff_t n,      \
                                ptrdiff_t m, ptrdiff_t ld, T scale)                   \
    {                                                                                  \
        double acc[NNF_COL_BLOCK];                                                     \
        for (ptrdiff_t j0 = 0; j0 < m; j0 += NNF_COL_BLOCK) {                          \
            ptrdiff_t w = m - j0 < NNF_COL_BLOCK ? m - j0 : NNF_COL_BLOCK;             \
            for (ptrdiff_t j = 0; j < w; j++)                                          \
                acc[j] = 0;                                                            \
            for (ptrdiff_t i = 0; i < n; i++) {                                        \
                const T *restrict r = x + i * ld + j0;                                 \
                for (ptrdiff_t j = 0; j < w; j++)                                      \
                    acc[j] += r[j];                                                    \
            }                                                                          \
            for (ptrdiff_t j = 0; j < w; j++)                                          \
                s[j0 + j] = (T)(scale * acc[j]);                                       \
        }                                                                              \
    }
NNF_COL_SUM(nnf_col_sum_f32, float)
NNF_COL_SUM(nnf_col_sum_f64, double)

/* ------------------------------------------------------------------ dropout
 * Inverted dropout of a hidden layer, after its bias + activation. The mask is counter-
 * based: entry c of the layer's (rows, m) batch array is kept when
 *     h = hash32(hash32(c ^ key_lo) + key_hi) >= drop,  drop = round(p 2^32)
 * (probability 1 - p), so it needs no generator state, and every split of the array over
 * threads draws the same mask; the key changes every step and layer (nnf_dropout_key).
 * hash32 is Wellons' "lowbias32" (a bijection with full avalanche); applied twice, once
 * per key half, so two steps' masks are not shifted copies of each other. */
static inline uint32_t nnf_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

/* splitmix64's finaliser: the key of (seed, step, layer). */
static inline uint64_t nnf_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t nnf_dropout_key(uint64_t seed, uint64_t step, uint64_t layer)
{
    return nnf_mix64(nnf_mix64(nnf_mix64(seed) ^ step) ^ layer);
}

/* One dropout loop for one activation: DERIV(v) is act'(z) written from v = act(z). */
#define NNF_DROPOUT_LOOP(T, DERIV)                                                     \
    for (ptrdiff_t j = 0; j < m; j++) {                                                \
        uint32_t h = nnf_hash32(nnf_hash32((c0 + (uint32_t)j) ^ k0) + k1);             \
        T keep = h >= drop ? scale : (T)0;                                             \
        T v = r[j];                                                                    \
        q[j] = (DERIV) * keep;                                                         \
        r[j] = v * keep;                                                               \
    }

/* a (n, m), rows ld apart, entry (i, j) at position base + i ld + j of the layer's batch
 * array, holds act(z): a := a * mask / (1 - p) and g := act'(z) * mask / (1 - p)
 * (scale = 1 / (1 - p)), so that the backward pass is dz = da * g. */
#define NNF_DROPOUT(NAME, T)                                                           \
    static NNF_CLONES void NAME(T *restrict a, T *restrict g, ptrdiff_t n, ptrdiff_t m, \
                                ptrdiff_t ld, uint64_t base, uint64_t key,             \
                                uint32_t drop, T scale, int act)                       \
    {                                                                                  \
        const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);                 \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T *restrict r = a + i * ld;                                                \
            T *restrict q = g + i * ld;                                                \
            const uint32_t c0 = (uint32_t)(base + (uint64_t)i * (uint64_t)ld);         \
            switch (act) {                                                             \
            case NNF_ACT_RELU:                                                         \
                NNF_DROPOUT_LOOP(T, v > 0 ? (T)1 : (T)0)                               \
                break;                                                                 \
            case NNF_ACT_LEAKY_RELU:                                                   \
                NNF_DROPOUT_LOOP(T, v > 0 ? (T)1 : (T)NNF_LEAKY_SLOPE)                 \
                break;                                                                 \
            case NNF_ACT_TANH:                                                         \
                NNF_DROPOUT_LOOP(T, (T)1 - v * v)                                      \
                break;                                                                 \
            case NNF_ACT_SIGMOID:                                                      \
                NNF_DROPOUT_LOOP(T, v * ((T)1 - v))                                    \
                break;                                                                 \
            default: /* NNF_ACT_LINEAR */                                              \
                NNF_DROPOUT_LOOP(T, (T)1)                                              \
            }                                                                          \
        }                                                                              \
    }
NNF_DROPOUT(nnf_dropout_f32, float)
NNF_DROPOUT(nnf_dropout_f64, double)

/* o (n, m) *= g, rows ld apart in both: the backward pass through dropout + activation. */
#define NNF_MUL(NAME, T)                                                               \
    static NNF_CLONES void NAME(T *restrict o, const T *restrict g, ptrdiff_t n,      \
                                ptrdiff_t m, ptrdiff_t ld)                             \
    {                                                                                  \
        if (ld == m) {                                                                 \
            m *= n;                                                                    \
            n = 1;                                                                     \
        }                                                                              \
        for (ptrdiff_t i = 0; i < n; i++)                                              \
            for (ptrdiff_t j = 0; j < m; j++)                                          \
                o[i * ld + j] *= g[i * ld + j];                                        \
    }
NNF_MUL(nnf_mul_f32, float)
NNF_MUL(nnf_mul_f64, double)

/* out[i] := x[idx[i]], i < n, rows of row_bytes bytes. Shuffled rows of a large data set
 * come from DRAM: one row at a time, each copy waits for its misses (measured ~270 ns a
 * 3 KB row). Prefetching the rows NNF_GATHER_AHEAD ahead keeps several rows in flight. */
#define NNF_GATHER_AHEAD 8
static inline void nnf_prefetch_row(const char *row, size_t row_bytes)
{
    for (size_t off = 0; off < row_bytes; off += 64)
        __builtin_prefetch(row + off, 0, 3);
}

static void nnf_gather_rows(char *restrict out, const char *restrict x,
                            const ptrdiff_t *restrict idx, ptrdiff_t n, size_t row_bytes)
{
    for (ptrdiff_t i = 0; i < n && i < NNF_GATHER_AHEAD; i++)
        nnf_prefetch_row(x + idx[i] * row_bytes, row_bytes);
    for (ptrdiff_t i = 0; i < n; i++) {
        if (i + NNF_GATHER_AHEAD < n)
            nnf_prefetch_row(x + idx[i + NNF_GATHER_AHEAD] * row_bytes, row_bytes);
        memcpy(out + i * row_bytes, x + idx[i] * row_bytes, row_bytes);
    }
}

/* out[i] := x[idx[i]] * scale, i < n, converting rows of m entries of type FROM (uint8
 * images, or the other float type) to TO: streamed data is converted one mini-batch at a
 * time, never all at once. The same prefetching as nnf_gather_rows. */
#define NNF_GATHER_CONVERT(NAME, TO, FROM)                                             \
    static NNF_CLONES void NAME(TO *restrict out, const FROM *restrict x,              \
                                const ptrdiff_t *restrict idx, ptrdiff_t n,            \
                                ptrdiff_t m, TO scale)                                 \
    {                                                                                  \
        const size_t row_bytes = (size_t)m * sizeof(FROM);                             \
        for (ptrdiff_t i = 0; i < n && i < NNF_GATHER_AHEAD; i++)                      \
            nnf_prefetch_row((const char *)(x + idx[i] * m), row_bytes);               \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            if (i + NNF_GATHER_AHEAD < n)                                              \
                nnf_prefetch_row((const char *)(x + idx[i + NNF_GATHER_AHEAD] * m),    \
                                 row_bytes);                                           \
            const FROM *restrict r = x + idx[i] * m;                                   \
            TO *restrict o = out + i * m;                                              \
            for (ptrdiff_t j = 0; j < m; j++)                                          \
                o[j] = (TO)r[j] * scale;                                               \
        }                                                                              \
    }
NNF_GATHER_CONVERT(nnf_gather_f32_u8, float, uint8_t)
NNF_GATHER_CONVERT(nnf_gather_f32_f32, float, float)
NNF_GATHER_CONVERT(nnf_gather_f32_f64, float, double)
NNF_GATHER_CONVERT(nnf_gather_f64_u8, double, uint8_t)
NNF_GATHER_CONVERT(nnf_gather_f64_f32, double, float)
NNF_GATHER_CONVERT(nnf_gather_f64_f64, double, double)

/* ------------------------------------------------------------------ sparse (CSR) input
 * X is a CSR matrix: row r's non-zeros are data[k], in column indices[k], for k in
 * [indptr[r], indptr[r + 1]); index type I (int32 or int64, as scipy stores them). The
 * caller checked every index. Duplicate or unsorted column indices need nothing special:
 * each non-zero adds its own term, as scipy's toarray() sums duplicates.
 *
 * z (n, m), rows ldz apart := scale * X[rows] @ w, w (n_in, m) rows ldw apart: for each
 * batch row, the rows of w of its non-zeros, weighted, summed in the order of the
 * non-zeros (one row of z in registers / L1, each w row read once). */
/* The rows of w (dw) that a batch's non-zeros pick are scattered over a matrix far larger
 * than the caches: each one misses. Prefetching the row of the non-zero NNF_CSR_AHEAD
 * ahead (within the same CSR row) keeps several misses in flight; measured on 100,000 x
 * 64 float32 weights, 200-row batches of ~48 non-zeros (AMD EPYC Zen 3, 1 thread): the
 * forward product 1.0 -> 0.38 ms a step, the scatter 0.51 -> 0.31 ms. */
#define NNF_CSR_AHEAD 8
#define NNF_CSR_MATMUL(NAME, T, I)                                                     \
    static NNF_CLONES void NAME(T *restrict z, ptrdiff_t ldz, const T *restrict data,  \
                                const I *restrict indices, const I *restrict indptr,   \
                                const ptrdiff_t *restrict rows, ptrdiff_t n,           \
                                const T *restrict w, ptrdiff_t ldw, ptrdiff_t m,       \
                                T scale)                                               \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T *restrict zr = z + i * ldz;                                              \
            const ptrdiff_t end = (ptrdiff_t)indptr[rows[i] + 1];                      \
            for (ptrdiff_t j = 0; j < m; j++)                                          \
                zr[j] = 0;                                                             \
            for (ptrdiff_t k = (ptrdiff_t)indptr[rows[i]]; k < end; k++) {             \
                if (k + NNF_CSR_AHEAD < end)                                           \
                    nnf_prefetch_row((const char *)(w + (ptrdiff_t)indices[k + NNF_CSR_AHEAD] \
                                                    * ldw), (size_t)m * sizeof(T));    \
                const T v = data[k] * scale;                                           \
                const T *restrict wr = w + (ptrdiff_t)indices[k] * ldw;                \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    zr[j] += v * wr[j];                                                \
            }                                                                          \
        }                                                                              \
    }
NNF_CSR_MATMUL(nnf_csr_matmul_f32_i32, float, int32_t)
NNF_CSR_MATMUL(nnf_csr_matmul_f32_i64, float, int64_t)
NNF_CSR_MATMUL(nnf_csr_matmul_f64_i32, double, int32_t)
NNF_CSR_MATMUL(nnf_csr_matmul_f64_i64, double, int64_t)

/* dw[indices[k], 0:m] += (scale * data[k]) * dz[i, 0:m] for every non-zero k of row
 * rows[i], batch rows in order: dw += scale * X[rows].T @ dz, a scatter-add; dw (n_in, m)
 * rows ldw apart, dz (n, m) rows ldz apart (m columns of wider arrays: a thread passes its
 * own block of columns). Each entry of dw sums its terms in batch order, whatever the
 * block, so the result does not depend on how the columns are split over threads. */
#define NNF_CSR_SCATTER(NAME, T, I)                                                    \
    static NNF_CLONES void NAME(T *restrict dw, ptrdiff_t ldw, const T *restrict dz,   \
                                ptrdiff_t ldz, const T *restrict data,                 \
                                const I *restrict indices, const I *restrict indptr,   \
                                const ptrdiff_t *restrict rows, ptrdiff_t n,           \
                                ptrdiff_t m, T scale)                                  \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            const T *restrict dr = dz + i * ldz;                                       \
            const ptrdiff_t end = (ptrdiff_t)indptr[rows[i] + 1];                      \
            for (ptrdiff_t k = (ptrdiff_t)indptr[rows[i]]; k < end; k++) {             \
                if (k + NNF_CSR_AHEAD < end)                                           \
                    nnf_prefetch_row((const char *)(dw + (ptrdiff_t)indices[k + NNF_CSR_AHEAD] \
                                                    * ldw), (size_t)m * sizeof(T));    \
                const T v = data[k] * scale;                                           \
                T *restrict wr = dw + (ptrdiff_t)indices[k] * ldw;                     \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    wr[j] += v * dr[j];                                                \
            }                                                                          \
        }                                                                              \
    }
NNF_CSR_SCATTER(nnf_csr_scatter_f32_i32, float, int32_t)
NNF_CSR_SCATTER(nnf_csr_scatter_f32_i64, float, int64_t)
NNF_CSR_SCATTER(nnf_csr_scatter_f64_i32, double, int32_t)
NNF_CSR_SCATTER(nnf_csr_scatter_f64_i64, double, int64_t)

/* Position i of the first of rows[0:n] (rows NULL: 0..n-1) that the kernels above cannot
 * read safely, or -1 when none: the row must be in [0, n_rows), its range [indptr[r],
 * indptr[r + 1]) ordered and inside [0, nnz_max) (nnz_max: the length of indices and
 * data), and its column indices in [0, n_cols). Only what the kernels read is checked. */
#define NNF_CSR_BAD_ROW(NAME, I)                                                       \
    static ptrdiff_t NAME(const I *restrict indices, const I *restrict indptr,         \
                          ptrdiff_t n_rows, ptrdiff_t n_cols, ptrdiff_t nnz_max,       \
                          const ptrdiff_t *restrict rows, ptrdiff_t n)                 \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            const ptrdiff_t r = rows != NULL ? rows[i] : i;                            \
            if (r < 0 || r >= n_rows)                                                  \
                return i;                                                              \
            const ptrdiff_t lo = (ptrdiff_t)indptr[r], hi = (ptrdiff_t)indptr[r + 1];  \
            if (lo < 0 || hi < lo || hi > nnz_max)                                     \
                return i;                                                              \
            for (ptrdiff_t k = lo; k < hi; k++)                                        \
                if (indices[k] < 0 || (ptrdiff_t)indices[k] >= n_cols)                 \
                    return i;                                                          \
        }                                                                              \
        return -1;                                                                     \
    }
NNF_CSR_BAD_ROW(nnf_csr_bad_row_i32, int32_t)
NNF_CSR_BAD_ROW(nnf_csr_bad_row_i64, int64_t)

/* Adam/AdamW over p[0:n]: m := beta1 m + c1 g, v := beta2 v + c2 g^2 in place;
 * p := decay * p - step_size * m / (sqrt(v * inv_bc2) + eps), decay = 1 - lr * weight_decay.
 * c1 = 1 - beta1 and c2 = 1 - beta2 come from the caller, computed in double: in float,
 * 1 - 0.999f is 1.3e-5 (relative) away from 0.001. */
#define NNF_ADAM(NAME, T, SQRT)                                                        \
    static NNF_CLONES void NAME(T *restrict p, T *restrict m, T *restrict v,           \
                                const T *restrict g, ptrdiff_t n, T beta1, T c1,       \
                                T beta2, T c2, T eps, T decay, T step_size, T inv_bc2) \
    {                                                                                  \
        NNF_FTZ_BEGIN                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T gi = g[i];                                                               \
            T mi = beta1 * m[i] + c1 * gi;                                             \
            T vi = beta2 * v[i] + c2 * gi * gi;                                        \
            m[i] = mi;                                                                 \
            v[i] = vi;                                                                 \
            p[i] = decay * p[i] - step_size * mi / (SQRT(vi * inv_bc2) + eps);         \
        }                                                                              \
        NNF_FTZ_END                                                                    \
    }
NNF_ADAM(nnf_adam_f32, float, sqrtf)
NNF_ADAM(nnf_adam_f64, double, sqrt)

/* The largest |x| of a block of n rows x m entries, rows ld apart, or +inf when any
 * entry is inf or NaN. The training step takes it of every gradient block while the block
 * is still in cache, to prove an update finite before applying it (_step.pyx). It works
 * on the bits: with the sign cleared, the order of the unsigned integers is that of the
 * magnitudes, inf is the largest but NaN, and NaN is above it; an integer max vectorises
 * (a float max or a NaN test summed in float does not without -ffast-math: measured 9x
 * slower, 0.9 ns an entry). */
#define NNF_MAX_ABS(NAME, T, U, ABS_MASK, INF_BITS)                                    \
    static NNF_CLONES T NAME(const T *restrict x, ptrdiff_t n, ptrdiff_t m, ptrdiff_t ld)\
    {                                                                                  \
        U top = 0;                                                                     \
        for (ptrdiff_t r = 0; r < n; r++) {                                            \
            const T *row = x + r * ld;                                                 \
            for (ptrdiff_t i = 0; i < m; i++) {                                        \
                U bits;                                                                \
                memcpy(&bits, row + i, sizeof bits);                                   \
                bits &= ABS_MASK;                                                      \
                top = bits > top ? bits : top;                                         \
            }                                                                          \
        }                                                                              \
        if (top >= INF_BITS)                                                           \
            return (T)INFINITY;                                                        \
        T value;                                                                       \
        memcpy(&value, &top, sizeof value);                                            \
        return value;                                                                  \
    }
NNF_MAX_ABS(nnf_max_abs_f32, float, uint32_t, 0x7fffffffu, 0x7f800000u)
NNF_MAX_ABS(nnf_max_abs_f64, double, uint64_t, 0x7fffffffffffffffull, 0x7ff0000000000000ull)

/* SGD over p[0:n], with L2 weight decay added to the gradient (g + wd * p).
 * momentum == 0: p -= lr * g (vel untouched).
 * else: vel := momentum * vel + g; p -= lr * (nesterov ? g + momentum * vel : vel). */
#define NNF_SGD(NAME, T)                                                               \
    static NNF_CLONES void NAME(T *restrict p, T *restrict vel, const T *restrict g,   \
                                ptrdiff_t n, T lr, T momentum, int nesterov, T wd)     \
    {                                                                                  \
        NNF_FTZ_BEGIN                                                                  \
        if (momentum == (T)0) {                                                        \
            for (ptrdiff_t i = 0; i < n; i++)                                          \
                p[i] -= lr * (g[i] + wd * p[i]);                                       \
        } else if (nesterov) {                                                         \
            for (ptrdiff_t i = 0; i < n; i++) {                                        \
                T gi = g[i] + wd * p[i];                                               \
                T vi = momentum * vel[i] + gi;                                         \
                vel[i] = vi;                                                           \
                p[i] -= lr * (gi + momentum * vi);                                     \
            }                                                                          \
        } else {                                                                       \
            for (ptrdiff_t i = 0; i < n; i++) {                                        \
                T vi = momentum * vel[i] + g[i] + wd * p[i];                           \
                vel[i] = vi;                                                           \
                p[i] -= lr * vi;                                                       \
            }                                                                          \
        }                                                                              \
        NNF_FTZ_END                                                                    \
    }
NNF_SGD(nnf_sgd_f32, float)
NNF_SGD(nnf_sgd_f64, double)

#endif
