/* Hot elementwise loops: bias + activation, activation backward, column sums, and the
 * optimizers, compiled once per x86-64 level.
 *
 * target_clones builds each function for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and a
 * baseline, and picks one at load time, so a distributable build (no -march=native)
 * still runs the widest vector code the CPU has (Cython's own loops get SSE2 only).
 * Loops are written so that gcc -O3 vectorises them: the switch on the activation is
 * outside the loops, pointers are restrict, and in-place use has a loop of its own (with
 * possibly-aliasing pointers gcc falls back to a scalar, branchy loop: measured 6x slower
 * for the ReLU backward on real data). Activation codes are those of _kernels.pyx.
 */
#ifndef NNFAST_VEC_H
#define NNFAST_VEC_H

#include <math.h>
#include <stddef.h>

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

enum { NNF_LINEAR = 0, NNF_RELU = 1, NNF_LEAKY_RELU = 2, NNF_TANH = 3, NNF_SIGMOID = 4,
       NNF_SOFTMAX = 5 };
#define NNF_LEAKY_SLOPE 0.01

/* a (n, m) := act(a + b), b (m,) broadcast over rows; softmax along each row. */
#define NNF_BIAS_ACT(NAME, T, EXP, TANH)                                               \
    static NNF_CLONES void NAME(T *restrict a, const T *restrict b, ptrdiff_t n,      \
                                ptrdiff_t m, int act)                                 \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T *restrict r = a + i * m;                                                 \
            switch (act) {                                                             \
            case NNF_RELU:                                                             \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    T v = r[j] + b[j];                                                 \
                    r[j] = v > 0 ? v : (T)0;                                           \
                }                                                                      \
                break;                                                                 \
            case NNF_LEAKY_RELU:                                                       \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    T v = r[j] + b[j];                                                 \
                    r[j] = v > 0 ? v : (T)NNF_LEAKY_SLOPE * v;                         \
                }                                                                      \
                break;                                                                 \
            case NNF_TANH:                                                             \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] = TANH(r[j] + b[j]);                                          \
                break;                                                                 \
            case NNF_SIGMOID: /* exp of a non-positive number only: no overflow */    \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    T v = r[j] + b[j];                                                 \
                    T e = EXP(v > 0 ? -v : v);                                         \
                    r[j] = v > 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);                 \
                }                                                                      \
                break;                                                                 \
            case NNF_SOFTMAX: {                                                        \
                T mx = r[0] + b[0], s = 0;                                             \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    r[j] += b[j];                                                      \
                    mx = r[j] > mx ? r[j] : mx;                                        \
                }                                                                      \
                for (ptrdiff_t j = 0; j < m; j++) {                                    \
                    r[j] = EXP(r[j] - mx);                                             \
                    s += r[j];                                                         \
                }                                                                      \
                s = (T)1 / s;                                                          \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] *= s;                                                         \
                break;                                                                 \
            }                                                                          \
            default:                                                                   \
                for (ptrdiff_t j = 0; j < m; j++)                                      \
                    r[j] += b[j];                                                      \
            }                                                                          \
        }                                                                              \
    }
NNF_BIAS_ACT(nnf_bias_act_f32, float, expf, tanhf)
NNF_BIAS_ACT(nnf_bias_act_f64, double, exp, tanh)

/* o := g * act'(z) from y = act(z), k < size; OUT/IN name the pointers so that the same
 * body serves out-of-place (three restrict pointers) and in-place (o is g) use. */
#define NNF_ACT_BACKWARD_BODY(T, OUT, IN)                                              \
    switch (act) {                                                                     \
    case NNF_RELU:                                                                     \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = y[k] > 0 ? IN[k] : (T)0;                                          \
        break;                                                                         \
    case NNF_LEAKY_RELU:                                                               \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = y[k] > 0 ? IN[k] : (T)NNF_LEAKY_SLOPE * IN[k];                    \
        break;                                                                         \
    case NNF_TANH:                                                                     \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = IN[k] * ((T)1 - y[k] * y[k]);                                     \
        break;                                                                         \
    case NNF_SIGMOID:                                                                  \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = IN[k] * y[k] * ((T)1 - y[k]);                                     \
        break;                                                                         \
    default:                                                                           \
        for (ptrdiff_t k = 0; k < size; k++)                                           \
            OUT[k] = IN[k];                                                            \
    }

#define NNF_ACT_BACKWARD(NAME, T)                                                      \
    static NNF_CLONES void NAME##_inplace(T *restrict o, const T *restrict y,         \
                                          ptrdiff_t size, int act)                    \
    {                                                                                  \
        if (act == NNF_LINEAR)                                                         \
            return;                                                                    \
        NNF_ACT_BACKWARD_BODY(T, o, o)                                                 \
    }                                                                                  \
    static NNF_CLONES void NAME##_copy(T *restrict o, const T *restrict g,            \
                                       const T *restrict y, ptrdiff_t size, int act)  \
    {                                                                                  \
        NNF_ACT_BACKWARD_BODY(T, o, g)                                                 \
    }                                                                                  \
    static void NAME(T *o, const T *g, const T *y, ptrdiff_t size, int act)           \
    {                                                                                  \
        if (o == g)                                                                    \
            NAME##_inplace(o, y, size, act);                                           \
        else                                                                           \
            NAME##_copy(o, g, y, size, act);                                           \
    }
NNF_ACT_BACKWARD(nnf_act_backward_f32, float)
NNF_ACT_BACKWARD(nnf_act_backward_f64, double)

/* s (m,) := scale * x.sum(axis=0), x (n, m); sums in double (a float32 sum of a full
 * data set's rows would lose digits), columns in blocks held on the stack. */
#define NNF_COL_BLOCK 512
#define NNF_COL_SUM(NAME, T)                                                           \
    static NNF_CLONES void NAME(T *restrict s, const T *restrict x, ptrdiff_t n,      \
                                ptrdiff_t m, T scale)                                 \
    {                                                                                  \
        double acc[NNF_COL_BLOCK];                                                     \
        for (ptrdiff_t j0 = 0; j0 < m; j0 += NNF_COL_BLOCK) {                          \
            ptrdiff_t w = m - j0 < NNF_COL_BLOCK ? m - j0 : NNF_COL_BLOCK;             \
            for (ptrdiff_t j = 0; j < w; j++)                                          \
                acc[j] = 0;                                                            \
            for (ptrdiff_t i = 0; i < n; i++) {                                        \
                const T *restrict r = x + i * m + j0;                                  \
                for (ptrdiff_t j = 0; j < w; j++)                                      \
                    acc[j] += r[j];                                                    \
            }                                                                          \
            for (ptrdiff_t j = 0; j < w; j++)                                          \
                s[j0 + j] = (T)(scale * acc[j]);                                       \
        }                                                                              \
    }
NNF_COL_SUM(nnf_col_sum_f32, float)
NNF_COL_SUM(nnf_col_sum_f64, double)

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
