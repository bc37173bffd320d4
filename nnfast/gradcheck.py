"""Finite-difference check of a network's analytic gradients."""
from __future__ import annotations

import numbers

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from . import _validate

if TYPE_CHECKING:
    from .network import Network


def gradcheck(net: Network, X: ArrayLike, y: ArrayLike, eps: float = 1e-6,
              n_entries: int | None = None, seed: int = 0,
              dropout_seed: int | None = None) -> float:
    """Largest relative error between analytic and central-difference gradients.

    For every parameter array (each W and b) the error is
    ``max|analytic - numeric| / max(max|analytic|, max|numeric|)``, and the largest over
    the arrays is returned (0 where both gradients are exactly zero). Numeric gradients
    are ``(L(p + eps) - L(p - eps)) / (2 eps)`` per entry; the parameters are restored
    bit for bit afterwards. Use a float64 network: in float32 expect about 1e-2; a
    network with matmul_precision="bfloat16" is refused (ValueError).

    Parameters
    ----------
    net : Network
    X, y : as for ``net.evaluate``
    eps : float > 0
    n_entries : int, optional
        Check only this many randomly chosen entries per array (default: all).
    seed : int
        Chooses the entries when `n_entries` is set.
    dropout_seed : int, optional
        For a network with dropout: check the gradient of the loss with dropout, its masks
        fixed by this seed (see ``Network.loss_and_grads``). Default: without dropout.

    Returns
    -------
    float
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"gradcheck: eps must be a positive finite number, got {eps!r}")
    eps = float(eps)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"gradcheck: eps must be a positive finite number, got {eps!r}")
    if n_entries is not None:
        n_entries = _validate.check_int("gradcheck", "n_entries", n_entries, 1)
    if getattr(net, "matmul_precision", "float32") == "bfloat16":
        # the loss sees the parameters rounded to bfloat16 (8 bits): a step of eps moves
        # almost none of them, and the central differences come out 0
        raise ValueError("gradcheck: expected a network with matmul_precision='float32'; "
                         "a bfloat16 network's loss is a step function of its parameters "
                         "(rounded to 8 bits), so finite differences say nothing. Check a "
                         "float64 copy (dtype='float64', the same parameters) instead")
    if dropout_seed is None:
        _, analytic = net.loss_and_grads(X, y)
    else:
        _, analytic = net.loss_and_grads(X, y, dropout_seed=dropout_seed)

    def loss():
        if dropout_seed is None:
            return net.evaluate(X, y)["loss"]
        return net.loss_and_grads(X, y, dropout_seed=dropout_seed)[0]

    rng = np.random.default_rng(seed)
    worst = 0.0
    for (W, b), (dW, db) in zip(net.params, analytic):
        for p, g in ((W, dW), (b, db)):
            flat, gflat = p.reshape(-1), g.reshape(-1)
            entries = np.arange(flat.size)
            if n_entries is not None and n_entries < flat.size:
                entries = rng.choice(flat.size, n_entries, replace=False)
            numeric = np.empty(entries.size)
            for k, i in enumerate(entries):
                keep = flat[i]
                try:
                    flat[i] = keep + eps
                    up = loss()
                    flat[i] = keep - eps
                    down = loss()
                finally:                             # restored even on Ctrl-C
                    flat[i] = keep
                numeric[k] = (up - down) / (2 * eps)
            exact = gflat[entries].astype(np.float64)
            scale = max(np.abs(exact).max(), np.abs(numeric).max())
            if scale > 0:
                worst = max(worst, float(np.abs(exact - numeric).max() / scale))
    return worst
