/* Hot elementwise loops of the optimizers, compiled once per x86-64 level.
 *
 * target_clones builds each function for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and a
 * baseline, and picks one at load time, so a distributable build (no -march=native)
 * still runs the widest vector code the CPU has. Loops are written so that gcc -O3
 * vectorises them: no branch inside, restrict pointers, the decayed and the undecayed
 * slices of the flat buffer are separate calls.
 */
#ifndef NNFAST_VEC_H
#define NNFAST_VEC_H

#include <math.h>
#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 11)
#define NNF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NNF_CLONES
#endif

/* Adam/AdamW over p[0:n]: m, v updated in place;
 * p := decay * p - step_size * m / (sqrt(v * inv_bc2) + eps), decay = 1 - lr * weight_decay. */
#define NNF_ADAM(NAME, T, SQRT)                                                        \
    static NNF_CLONES void NAME(T *restrict p, T *restrict m, T *restrict v,           \
                                const T *restrict g, ptrdiff_t n, T beta1, T beta2,    \
                                T eps, T decay, T step_size, T inv_bc2)                \
    {                                                                                  \
        const T c1 = (T)1 - beta1, c2 = (T)1 - beta2;                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T gi = g[i];                                                               \
            T mi = beta1 * m[i] + c1 * gi;                                             \
            T vi = beta2 * v[i] + c2 * gi * gi;                                        \
            m[i] = mi;                                                                 \
            v[i] = vi;                                                                 \
            p[i] = decay * p[i] - step_size * mi / (SQRT(vi * inv_bc2) + eps);         \
        }                                                                              \
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
    }
NNF_SGD(nnf_sgd_f32, float)
NNF_SGD(nnf_sgd_f64, double)

#endif
