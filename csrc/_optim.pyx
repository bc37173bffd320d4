# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Optimizer updates in one pass over the flat parameter buffer.

The flat buffer holds all weights first, then all biases, so weight decay applies to the
slice [0, n_decay) only and biases are never decayed. The loops themselves are in
csrc/_vec.h (target_clones: AVX-512 / AVX2 / baseline picked at load time); here are
only the shape checks. Adam's bias corrections of step t come from _ops._adam_coefs, the
one place they are computed (the training step, csrc/_step.pyx, uses it too).
"""
from cython cimport floating

from _ops cimport AdamCoefs, _adam_coefs, _adam, _sgd


cdef inline void _check(Py_ssize_t n, Py_ssize_t n_state, Py_ssize_t n_grads,
                        Py_ssize_t n_decay) except *:
    if n_state != n or n_grads != n:
        raise ValueError(f"optimizer buffers differ in size: params {n}, state {n_state}, "
                         f"grads {n_grads}")
    if n_decay < 0 or n_decay > n:
        raise ValueError(f"n_decay must be in [0, {n}], got {n_decay}")


def adam_update(floating[::1] params, floating[::1] m, floating[::1] v,
                const floating[::1] grads, Py_ssize_t t, double lr, double beta1,
                double beta2, double eps, double weight_decay, Py_ssize_t n_decay):
    """One Adam(W) step, t >= 1 the step number:
    m := b1 m + (1 - b1) g;  v := b2 v + (1 - b2) g^2
    p := p - lr * wd * p  (decoupled, entries [0, n_decay) only)
    p := p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    All buffers (N,), updated in place.
    """
    cdef Py_ssize_t n = params.shape[0]
    _check(n, m.shape[0], grads.shape[0], n_decay)
    _check(n, v.shape[0], grads.shape[0], n_decay)
    if t < 1:
        raise ValueError(f"adam_update: step t must be >= 1, got {t}")
    if n == 0:
        return
    cdef AdamCoefs c = _adam_coefs(lr, beta1, beta2, eps, weight_decay, t)
    cdef Py_ssize_t k = n_decay
    with nogil:
        _adam(&params[0], &m[0], &v[0], &grads[0], k, &c, True)
        _adam(&params[k], &m[k], &v[k], &grads[k], n - k, &c, False)


def sgd_update(floating[::1] params, floating[::1] velocity, const floating[::1] grads,
               double lr, double momentum, bint nesterov, double weight_decay,
               Py_ssize_t n_decay):
    """One SGD step (PyTorch's convention, dampening 0):
    g := g + wd * p  (entries [0, n_decay) only)
    momentum 0: p := p - lr g
    else: v := momentum v + g;  p := p - lr (g + momentum v if nesterov else v)
    All buffers (N,), updated in place; velocity is untouched when momentum is 0.
    """
    cdef Py_ssize_t n = params.shape[0]
    _check(n, velocity.shape[0], grads.shape[0], n_decay)
    if n == 0:
        return
    cdef Py_ssize_t k = n_decay
    with nogil:
        _sgd(&params[0], &velocity[0], &grads[0], k, lr, momentum, nesterov, weight_decay)
        _sgd(&params[k], &velocity[k], &grads[k], n - k, lr, momentum, nesterov, 0)
