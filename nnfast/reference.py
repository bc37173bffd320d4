"""Pure-NumPy twin of every compiled kernel, and of the network built from them.

Each function has the name and the signature of its compiled counterpart in
`nnfast._kernels` or `nnfast._optim` (outputs first, written in place, then inputs, then
scalars; same return value), and computes the same math with plain NumPy operations in
the arrays' dtype. The tests hold every kernel to its twin; the benchmarks use
`ReferenceNetwork` as the pure-NumPy baseline. Nothing here is tuned for speed beyond
avoiding per-sample Python loops: clarity first.

Non-goals: input conversion and validation beyond what the kernels check (callers pass
C-contiguous arrays of one float dtype), threads, anything the compiled core lacks.
"""
import numpy as np

from ._kernels import (ACT_LAST, ACT_LAST_HIDDEN, ACT_LEAKY_RELU, ACT_LINEAR, ACT_RELU,
                       ACT_SIGMOID, ACT_SOFTMAX, ACT_TANH, LEAKY_SLOPE)
from ._layout import build_layout, layer_views, n_weights
from ._names import HIDDEN, LOSS_CODE, OUTPUT


def _sigmoid(z):
    """Stable logistic function: exp of a non-positive number only."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


# ---------------------------------------------------------------- forward

def dense_forward(a, x, w, b, act):
    """a := act(x @ w + b); x (n, n_in), w (n_in, n_out), b (n_out,), a (n, n_out)."""
    if not 0 <= act <= ACT_LAST:
        raise ValueError(f"dense_forward: unknown activation code {act}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"dense_forward: shape mismatch: w {w.shape}, b {b.shape}")
    np.matmul(x, w, out=a)
    _bias_activation(a, b, act)


def _bias_activation(a, b, act):
    """a := act(a + b) in place (softmax along rows)."""
    a += b
    if act == ACT_RELU:
        np.maximum(a, 0, out=a)
    elif act == ACT_LEAKY_RELU:
        np.multiply(a, a.dtype.type(LEAKY_SLOPE), out=a, where=a < 0)
    elif act == ACT_TANH:
        np.tanh(a, out=a)
    elif act == ACT_SIGMOID:
        a[...] = _sigmoid(a)
    elif act == ACT_SOFTMAX:
        a -= a.max(axis=1, keepdims=True)
        np.exp(a, out=a)
        a /= a.sum(axis=1, keepdims=True)


def _csr(data, indices, indptr, n_cols):
    """The scipy CSR matrix of the arrays (shared, not copied; duplicates kept)."""
    from scipy import sparse
    return sparse.csr_matrix((data, indices, indptr), shape=(indptr.shape[0] - 1, n_cols),
                             copy=False)


def sparse_dense_forward(a, data, indices, indptr, rows, w, b, act, x_scale=1):
    """a := act(x_scale * X[rows] @ w + b), X the CSR matrix (data, indices, indptr) of
    shape (len(indptr) - 1, w.shape[0]); scipy's sparse product in the arrays' dtype."""
    if not 0 <= act <= ACT_LAST:
        raise ValueError(f"sparse_dense_forward: unknown activation code {act}")
    if rows.shape[0] == 0:
        return
    x = _csr(data, indices, indptr, w.shape[0])[rows] * data.dtype.type(x_scale)
    a[...] = x @ w
    _bias_activation(a, b, act)


# ---------------------------------------------------------------- backward

def activation_backward(dz, da, a, act):
    """dz := da * act'(z) from the saved post-activation a = act(z); dz may be da."""
    if not 0 <= act <= ACT_LAST_HIDDEN:
        raise ValueError(f"activation_backward: unknown activation code {act}")
    if dz.shape != a.shape or da.shape != a.shape:
        raise ValueError(f"activation_backward: shape mismatch: a {a.shape}, da {da.shape}, "
                         f"dz {dz.shape}")
    if act == ACT_RELU:
        np.multiply(da, a > 0, out=dz)
    elif act == ACT_LEAKY_RELU:
        dz[...] = np.where(a > 0, da, a.dtype.type(LEAKY_SLOPE) * da)
    elif act == ACT_TANH:
        dz[...] = da * (1 - a * a)
    elif act == ACT_SIGMOID:
        dz[...] = da * a * (1 - a)
    elif dz is not da:
        np.copyto(dz, da)


# ---------------------------------------------------------------- dropout

_M64 = (1 << 64) - 1


def _mix64(z):
    """splitmix64's finaliser on a Python int (mod 2^64)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def dropout_key(seed, step, layer):
    """The 64-bit mask key of (seed, step, layer)."""
    return _mix64(_mix64(_mix64(seed) ^ step) ^ layer)


def dropout_threshold(p):
    """round(p 2^32), at most 2^32 - 1: entries whose hash is below it are dropped."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout_threshold: p must be in [0, 1), got {p}")
    return min(int(round(p * 4294967296.0)), 4294967295)


def _hash32(x):
    """lowbias32 on a uint32 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x21F0AAAD)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x735A2D97)
    return x ^ (x >> np.uint32(15))


def dropout_mask(n, m, key, p):
    """Boolean (n, m): True where an entry of a layer's (n, m) batch array is kept."""
    c = np.arange(n * m, dtype=np.uint64).astype(np.uint32).reshape(n, m)
    h = _hash32(_hash32(c ^ np.uint32(key & 0xFFFFFFFF)) + np.uint32(key >> 32))
    return h >= np.uint32(dropout_threshold(p))


def _activation_derivative(a, act):
    """act'(z) from a = act(z), for a hidden activation code."""
    if act == ACT_RELU:
        return (a > 0).astype(a.dtype)
    if act == ACT_LEAKY_RELU:
        return np.where(a > 0, a.dtype.type(1), a.dtype.type(LEAKY_SLOPE))
    if act == ACT_TANH:
        return 1 - a * a
    if act == ACT_SIGMOID:
        return a * (1 - a)
    return np.ones_like(a)


def dropout_forward(a, g, key, p, act):
    """a := a * mask / (1 - p);  g := act'(z) * mask / (1 - p), from a = act(z)."""
    if not 0 <= act <= ACT_LAST_HIDDEN:
        raise ValueError(f"dropout_forward: unknown hidden activation code {act}")
    if g.shape != a.shape:
        raise ValueError(f"dropout_forward: shape mismatch: a {a.shape}, g {g.shape}")
    keep = np.where(dropout_mask(a.shape[0], a.shape[1], key, p),
                    a.dtype.type(1 / (1 - p)), a.dtype.type(0))
    g[...] = _activation_derivative(a, act) * keep
    a *= keep


def dropout_backward(d, g):
    """d := d * g, in place."""
    if g.shape != d.shape:
        raise ValueError(f"dropout_backward: shape mismatch: d {d.shape}, g {g.shape}")
    d *= g


def linear_backward_params(dw, db, dz, x, scale):
    """dw := scale * x.T @ dz;  db := scale * dz.sum(axis=0). Outputs are overwritten."""
    if x.shape[0] == 0:
        raise ValueError("linear_backward_params: empty batch")
    if db.shape != (dz.shape[1],):
        raise ValueError(f"linear_backward_params: shape mismatch: dz {dz.shape}, db {db.shape}")
    scale = dw.dtype.type(scale)
    np.matmul(x.T, dz, out=dw)
    dw *= scale
    np.sum(dz, axis=0, out=db)
    db *= scale


def sparse_linear_backward_params(dw, db, dz, data, indices, indptr, rows, x_scale, scale):
    """dw := scale * (x_scale * X[rows]).T @ dz;  db := scale * dz.sum(axis=0), X the CSR
    matrix (data, indices, indptr); scipy's sparse product. Outputs are overwritten."""
    if rows.shape[0] == 0:
        raise ValueError("sparse_linear_backward_params: empty batch")
    x = _csr(data, indices, indptr, dw.shape[0])[rows] * data.dtype.type(x_scale)
    dw[...] = (x.T @ dz) * dw.dtype.type(scale)
    np.sum(dz, axis=0, out=db)
    db *= db.dtype.type(scale)


def linear_backward_input(dx, dz, w):
    """dx := dz @ w.T; dz (n, n_out), w (n_in, n_out), dx (n, n_in)."""
    np.matmul(dz, w.T, out=dx)


# ---------------------------------------------------------------- output layer + loss

def _check_loss_shapes(name, dz, z, y):
    if dz.ndim != 2 or dz.shape != z.shape or y.shape != z.shape:
        raise ValueError(f"{name}: shape mismatch: z {z.shape}, y {y.shape}, dz {dz.shape}")


def softmax_xent_backward(dz, z, y):
    """dz := softmax(z) - y; returns sum -y log softmax(z) (float). dz may be z."""
    _check_loss_shapes("softmax_xent_backward", dz, z, y)
    if z.size == 0:
        return 0.0
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(s)
    loss = -np.sum(y * log_p, dtype=np.float64)
    np.divide(e, s, out=dz)
    dz -= y
    return float(loss)


def sigmoid_bce_backward(dz, z, y):
    """dz := sigmoid(z) - y; returns sum max(z, 0) - z y + log1p(exp(-|z|)) (float)."""
    _check_loss_shapes("sigmoid_bce_backward", dz, z, y)
    terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    loss = np.sum(terms, dtype=np.float64)
    dz[...] = _sigmoid(z) - y
    return float(loss)


def squared_error_backward(dz, yhat, y):
    """dz := yhat - y; returns 0.5 * sum (yhat - y)^2 (float). dz may be yhat."""
    _check_loss_shapes("squared_error_backward", dz, yhat, y)
    np.subtract(yhat, y, out=dz)
    return float(0.5 * np.sum(dz * dz, dtype=np.float64))


def weighted_loss_backward(dz, z, y, w, loss):
    """dz := w[:, None] * (the unweighted gradient of the LOSS_* code `loss`); returns
    sum_i w[i] * (loss of row i) (float)."""
    _check_loss_shapes("weighted_loss_backward", dz, z, y)
    if w.shape != (z.shape[0],):
        raise ValueError(f"weighted_loss_backward: w {w.shape} for z {z.shape}")
    kernel = _LOSS_BY_CODE[loss]
    total = 0.0
    for i in range(z.shape[0]):                     # each row's loss on its own
        total += float(w[i]) * kernel(dz[i:i + 1], z[i:i + 1], y[i:i + 1])
    dz *= w[:, None]
    return total


# ---------------------------------------------------------------- mini-batch gather

def gather_rows(out, x, idx):
    """out[i] := x[idx[i]] for i < len(idx); out (>= n, m), only the leading n rows written."""
    n = idx.shape[0]
    if out.shape[0] < n or out.shape[1] != x.shape[1]:
        raise ValueError(f"gather_rows: out {out.shape} cannot hold {n} rows of {x.shape[1]}")
    np.take(x, idx, axis=0, out=out[:n], mode="clip")     # "raise" copies via a temporary


def gather_rows_scaled(out, x, idx, scale):
    """out[i] := x[idx[i]] * scale, converted to out's dtype first; x uint8 / float."""
    n = idx.shape[0]
    if out.shape[0] < n or out.shape[1] != x.shape[1]:
        raise ValueError(f"gather_rows_scaled: out {out.shape} cannot hold {n} rows of "
                         f"{x.shape[1]}")
    if n and (idx.min() < 0 or idx.max() >= x.shape[0]):
        raise ValueError("gather_rows_scaled: index out of range")
    out[:n] = x[idx].astype(out.dtype)
    out[:n] *= out.dtype.type(scale)


# ---------------------------------------------------------------- optimizers

def _check_optim(n, sizes, n_decay):
    if any(s != n for s in sizes):
        raise ValueError(f"optimizer buffers differ in size: params {n}, others {sizes}")
    if not 0 <= n_decay <= n:
        raise ValueError(f"n_decay must be in [0, {n}], got {n_decay}")


def adam_update(params, m, v, grads, t, lr, beta1, beta2, eps, weight_decay, n_decay):
    """One Adam(W) step t >= 1 in place; decoupled weight decay on params[:n_decay] only."""
    _check_optim(params.shape[0], (m.shape[0], v.shape[0], grads.shape[0]), n_decay)
    if t < 1:
        raise ValueError(f"adam_update: step t must be >= 1, got {t}")
    m *= beta1
    m += (1 - beta1) * grads
    v *= beta2
    v += (1 - beta2) * grads * grads
    params[:n_decay] *= 1 - lr * weight_decay
    params -= (lr / (1 - beta1 ** t)) * m / (np.sqrt(v / (1 - beta2 ** t)) + eps)


def sgd_update(params, velocity, grads, lr, momentum, nesterov, weight_decay, n_decay):
    """One SGD step in place (PyTorch convention, dampening 0, L2 decay on params[:n_decay])."""
    _check_optim(params.shape[0], (velocity.shape[0], grads.shape[0]), n_decay)
    g = grads.copy()
    g[:n_decay] += weight_decay * params[:n_decay]
    if momentum == 0:
        params -= lr * g
        return
    velocity *= momentum
    velocity += g
    params -= lr * (g + momentum * velocity if nesterov else velocity)


class ReferenceAdam:
    """NumPy Adam / AdamW state: the math of `nnfast.Adam` (decoupled decay, weights only)."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay
        self.t, self.m, self.v = 0, None, None

    def step(self, params, grads, n_decay):
        """One update of the flat `params` with `grads`; decay on params[:n_decay]."""
        if self.m is None:
            self.m, self.v = np.zeros_like(params), np.zeros_like(params)
        self.t += 1
        adam_update(params, self.m, self.v, grads, self.t, self.lr, self.beta1, self.beta2,
                    self.eps, self.weight_decay, n_decay)


class ReferenceSGD:
    """NumPy SGD state: the math of `nnfast.SGD` (momentum, Nesterov, L2 decay on weights)."""

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay
        self.t, self.velocity = 0, None

    def step(self, params, grads, n_decay):
        """One update of the flat `params` with `grads`; decay on params[:n_decay]."""
        if self.velocity is None:
            self.velocity = np.zeros_like(params)
        self.t += 1
        sgd_update(params, self.velocity, grads, self.lr, self.momentum, self.nesterov,
                   self.weight_decay, n_decay)


def reference_optimizer(opt):
    """A fresh ReferenceAdam / ReferenceSGD with the hyperparameters of nf.Adam / nf.SGD."""
    if hasattr(opt, "beta1"):
        return ReferenceAdam(opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay)
    return ReferenceSGD(opt.lr, opt.momentum, opt.nesterov, opt.weight_decay)


# ---------------------------------------------------------------- network

_LOSS = {"softmax": softmax_xent_backward, "sigmoid": sigmoid_bce_backward,
         "linear": squared_error_backward}
_LOSS_BY_CODE = {code: _LOSS[name] for name, code in LOSS_CODE.items()}


class ReferenceNetwork:
    """The math of `nnfast.Network` in plain NumPy, with the twin kernels above.

    Samples are rows. Parameters live in one flat buffer `params` with the layout of
    `nnfast._layout.build_layout` (all weights, then all biases); `coefs` / `intercepts`
    are views into it. Targets `Y` are always the (n, n_out) matrix in `dtype`.

    Parameters
    ----------
    sizes : sequence of int, input size first
    hidden : sequence of str, one name per hidden layer
    output : "softmax", "sigmoid" or "linear"
    dtype : np.float32 or np.float64
    params : ndarray of shape (n_params,), optional; copied (default: zeros)
    dropout : sequence of float, one rate per hidden layer (default: none). Masks come
        from (dropout_seed, dropout_step, layer); every training step advances
        dropout_step, as nnfast's training loop does.
    """

    def __init__(self, sizes, hidden, output, dtype=np.float32, params=None, dropout=None):
        self.sizes = tuple(int(s) for s in sizes)
        self.n_layers = len(self.sizes) - 1
        self.hidden = tuple(hidden)
        if len(self.hidden) != self.n_layers - 1:
            raise ValueError(f"ReferenceNetwork: need {self.n_layers - 1} hidden names, got "
                             f"{len(self.hidden)}")
        self.output = output
        self.dtype = np.dtype(dtype)
        self.layout, self.n_params = build_layout(self.sizes)
        self.n_decay = n_weights(self.layout)
        self.params = np.zeros(self.n_params, self.dtype)
        if params is not None:
            self.params[...] = params
        self.grads = np.zeros(self.n_params, self.dtype)
        views, gviews = layer_views(self.params, self.layout), layer_views(self.grads,
                                                                           self.layout)
        self.coefs, self.intercepts = [w for w, _ in views], [b for _, b in views]
        self.dcoefs, self.dintercepts = [w for w, _ in gviews], [b for _, b in gviews]
        self._codes = [HIDDEN[h] for h in self.hidden]
        self._output_code = OUTPUT[output]
        self._loss = _LOSS[output]
        self._ws_rows, self._ws = 0, None
        self.dropout = tuple(dropout) if dropout is not None else (0.0,) * (self.n_layers - 1)
        self.dropout_seed, self.dropout_step = 0, 0

    @classmethod
    def from_network(cls, net):
        """A copy of `net` (an nnfast.Network): sizes, activations, dtype, weights and
        dropout (rates, seed and step counter)."""
        ref = cls(net.sizes, net.hidden, net.output, net.dtype, net.flat_params,
                  net.dropout)
        ref.dropout_seed, ref.dropout_step = net.dropout_state
        if net.flat_params.shape != (ref.n_params,):
            raise ValueError("ReferenceNetwork: the network's parameters do not have the "
                             "layout of build_layout(sizes)")
        return ref

    def _workspace(self, rows):
        """(a, d, y) buffers for `rows` samples, allocated once per row count."""
        if self._ws_rows != rows:
            a = [np.empty((rows, s), self.dtype) for s in self.sizes]
            d = [None] + [np.empty((rows, s), self.dtype) for s in self.sizes[1:]]
            self._ws = (a, d, np.empty((rows, self.sizes[-1]), self.dtype))
            self._ws_rows = rows
        return self._ws

    def forward(self, X):
        """Output activations, shape (n, n_out)."""
        a = np.ascontiguousarray(X, self.dtype)
        codes = self._codes + [self._output_code]
        for l in range(self.n_layers):
            nxt = np.empty((a.shape[0], self.sizes[l + 1]), self.dtype)
            dense_forward(nxt, a, self.coefs[l], self.intercepts[l], codes[l])
            a = nxt
        return a

    def _backprop(self, a, d, y, dropout=False, w=None):
        """Forward + backward on the batch in a[0], y; self.grads := mean gradient.
        With `dropout`, the masks of (dropout_seed, dropout_step), then dropout_step += 1.
        With row weights `w`, the weighted mean: sum_i w_i grad_i / sum_i w_i.
        Returns the summed (weighted) loss."""
        L = self.n_layers
        g = [None] * (L - 1)
        for l in range(L - 1):
            dense_forward(a[l + 1], a[l], self.coefs[l], self.intercepts[l], self._codes[l])
            if dropout and self.dropout[l]:
                g[l] = np.empty_like(a[l + 1])
                dropout_forward(a[l + 1], g[l], dropout_key(self.dropout_seed,
                                                            self.dropout_step, l),
                                self.dropout[l], self._codes[l])
        if dropout and any(self.dropout):
            self.dropout_step += 1
        dense_forward(a[L], a[L - 1], self.coefs[L - 1], self.intercepts[L - 1], ACT_LINEAR)
        if w is None:
            loss = self._loss(d[L], a[L], y)
            scale = 1.0 / a[0].shape[0]
        else:
            loss = weighted_loss_backward(d[L], a[L], y, w, LOSS_CODE[self.output])
            scale = 1.0 / float(w.sum(dtype=np.float64))
        for l in range(L - 1, -1, -1):
            linear_backward_params(self.dcoefs[l], self.dintercepts[l], d[l + 1], a[l], scale)
            if l > 0:
                linear_backward_input(d[l], d[l + 1], self.coefs[l])
                if g[l - 1] is not None:
                    dropout_backward(d[l], g[l - 1])
                else:
                    activation_backward(d[l], d[l], a[l], self._codes[l - 1])
        return loss

    def loss_and_grads(self, X, Y, dropout_seed=None):
        """(mean loss, flat gradient array of shape (n_params,)) on X (n, n_in), Y (n, n_out).
        With dropout_seed, dropout with the masks of (dropout_seed, step 0)."""
        X = np.ascontiguousarray(X, self.dtype)
        Y = np.ascontiguousarray(Y, self.dtype)
        n = X.shape[0]
        a, d, y = self._workspace(n)
        a[0][...] = X
        y[...] = Y
        if dropout_seed is None:
            loss = self._backprop(a, d, y)
        else:
            seed, step = self.dropout_seed, self.dropout_step
            self.dropout_seed, self.dropout_step = dropout_seed, 0
            loss = self._backprop(a, d, y, dropout=True)
            self.dropout_seed, self.dropout_step = seed, step
        return loss / n, self.grads.copy()

    def train_epoch(self, X, Y, order, batch_size, optimizer, sample_weight=None):
        """One epoch of mini-batches over X[order] (the last one may be short).

        `optimizer` is a ReferenceAdam or ReferenceSGD, updated in place. With
        `sample_weight` (n,) (in `dtype`, as nnfast scales them: largest 1), each batch's
        gradient is its weighted mean, and a batch of weight 0 is skipped. Returns the
        mean training loss of the epoch (summed batch losses / number of samples, or
        weighted: / the sum of the weights).
        """
        X = np.ascontiguousarray(X, self.dtype)
        Y = np.ascontiguousarray(Y, self.dtype)
        order = np.asarray(order, np.intp)
        rows = min(int(batch_size), order.shape[0])
        a_full, d_full, y_full = self._workspace(rows)
        total = 0.0
        for start in range(0, order.shape[0], rows):
            idx = order[start:start + rows]
            n = idx.shape[0]
            w = None if sample_weight is None else sample_weight[idx]
            if w is not None and not w.any():
                continue
            a = [buf[:n] for buf in a_full]
            d = [None] + [buf[:n] for buf in d_full[1:]]
            y = y_full[:n]
            gather_rows(a[0], X, idx)
            gather_rows(y, Y, idx)
            total += self._backprop(a, d, y, dropout=True, w=w)
            optimizer.step(self.params, self.grads, self.n_decay)
        if sample_weight is None:
            return total / order.shape[0]
        return total / float(sample_weight.sum(dtype=np.float64))
