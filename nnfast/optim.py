"""Optimizers: hyperparameters and state, with the update itself in the compiled core.

An optimizer object holds its state (Adam's moments, SGD's velocity) in flat buffers with
the network's parameter layout. Passing the same object to `fit` again continues from
that state; a new object (or a name such as "adam") starts fresh. The state belongs to
one network: passing the object to another network's `fit` starts it afresh there (use
one optimizer object per network). Weight decay applies to
weights only, never to biases.
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from ._step import UpdateRule
from ._validate import check_number


class Optimizer:
    """Base class: binds state buffers to one network and describes its update (the
    compiled training step runs it; the training loop counts the steps in `t`).

    Every hyperparameter is checked when it is set, in the constructor or later (a
    callback or schedule setting ``optimizer.lr = -1`` gets the constructor's ValueError).
    """

    _state_names = ()
    _hyper = ()

    def __setattr__(self, name, value):
        if name in self._hyper:
            value = self._check_hyper(name, value)
        object.__setattr__(self, name, value)

    def _check_hyper(self, name, value):
        """`value` checked and converted for the hyperparameter `name`."""
        raise NotImplementedError

    def __init__(self):
        self._owner = None
        self._state = {}
        self.t = 0
        self._unpickled = False

    def __getstate__(self):
        """Hyperparameters, step count and state arrays (not the network they belong to:
        after unpickling, the first network it trains with state of the right shape adopts
        it, so a pickled (network, optimizer) pair continues where it stopped)."""
        state = dict(self.__dict__)
        state["_owner"] = None
        state["_unpickled"] = bool(self._state)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def reset(self) -> None:
        """Forget the state (moments, velocity, step count)."""
        self._owner = None
        self._state = {}
        self.t = 0

    def _check_dtype(self, dtype):
        """Refuse hyperparameters that the network's dtype cannot represent."""

    def _prepare(self, net):
        """Allocate zeroed state for `net` unless this object already holds its state (or,
        just unpickled, holds state of the right shape, which `net` then adopts)."""
        self._check_dtype(net._flat_params.dtype)
        owner = self._owner() if self._owner is not None else None
        flat = net._flat_params
        fits = len(self._state) == len(self._state_names) and all(
            s.shape == flat.shape and s.dtype == flat.dtype for s in self._state.values())
        if self._unpickled and fits:
            owner = net
            self._owner = weakref.ref(net)
        self._unpickled = False
        fresh = owner is not net or not fits
        if fresh:
            self._state = {k: np.zeros_like(flat) for k in self._state_names}
            self._owner = weakref.ref(net)
            self.t = 0

    def _state_arrays(self):
        """The state buffers (flat, the network's layout), in a fixed order."""
        return tuple(self._state[k] for k in self._state_names)

    def _rule(self) -> UpdateRule:
        """The compiled update with the current hyperparameters over this optimizer's
        state (after `_prepare`): built at the start of fit and again whenever a callback
        may have changed a hyperparameter."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    Follows PyTorch's convention (dampening 0): with g the gradient plus
    ``weight_decay * W`` (weights only, an L2 penalty),
    ``v := momentum * v + g`` and ``p := p - lr * (g + momentum * v if nesterov else v)``.

    Parameters
    ----------
    lr : float > 0
    momentum : float in [0, 1)
    nesterov : bool, needs momentum > 0
    weight_decay : float >= 0
    """

    _state_names = ("velocity",)
    _hyper = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.nesterov = nesterov
        self._check_nesterov()

    def _check_hyper(self, name, value):
        if name == "nesterov":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"SGD: nesterov must be a bool, got {type(value).__name__}")
            return bool(value)
        low_open, high = {"lr": (True, math.inf), "momentum": (False, 1),
                          "weight_decay": (False, math.inf)}[name]
        return check_number("SGD", name, value, 0, high, low_open=low_open,
                            high_open=name == "momentum")

    def _check_nesterov(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0, got momentum=0")

    def _rule(self):
        self._check_nesterov()
        return UpdateRule("sgd", (self._state["velocity"],), self.lr, momentum=self.momentum,
                          nesterov=self.nesterov, weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam with decoupled weight decay (AdamW when ``weight_decay > 0``).

    ``m := b1 m + (1 - b1) g``, ``v := b2 v + (1 - b2) g^2``,
    ``W := W - lr * weight_decay * W`` (weights only),
    ``p := p - lr * m_hat / (sqrt(v_hat) + eps)`` with the bias-corrected
    ``m_hat = m / (1 - b1^t)`` and ``v_hat = v / (1 - b2^t)``.

    Parameters
    ----------
    lr : float > 0
    beta1, beta2 : float in [0, 1)
    eps : float > 0
    weight_decay : float >= 0
    """

    _state_names = ("m", "v")
    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay

    def _check_hyper(self, name, value):
        low_open, high, high_open = {
            "lr": (True, math.inf, False), "beta1": (False, 1, True),
            "beta2": (False, 1, True), "eps": (True, math.inf, False),
            "weight_decay": (False, math.inf, False)}[name]
        return check_number("Adam", name, value, 0, high, low_open=low_open,
                            high_open=high_open)

    def _check_dtype(self, dtype):
        tiny = float(np.finfo(dtype).tiny)
        if self.eps < tiny:       # flushed to zero in the update: 0 / 0 for a zero gradient
            raise ValueError(f"Adam: eps must be >= {tiny:g} (the smallest normal {dtype}) "
                             f"for a {dtype} network, got {self.eps!r}")

    def _rule(self):
        if self._owner is not None:         # eps may have been set since _prepare
            self._check_dtype(self._state["m"].dtype)
        return UpdateRule("adam", (self._state["m"], self._state["v"]), self.lr,
                          beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                          weight_decay=self.weight_decay)


_BY_NAME = {"adam": Adam, "sgd": SGD}


def get_optimizer(optimizer: str | Optimizer) -> Optimizer:
    """An Optimizer from an instance (returned as is) or a name ("adam", "sgd")."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        raise ValueError(f"optimizer must be one of {sorted(_BY_NAME)} or an Optimizer "
                         f"instance, got {optimizer!r}")
    raise TypeError(f"optimizer must be a name ({sorted(_BY_NAME)}) or an Optimizer "
                    f"instance (nf.Adam, nf.SGD), got {type(optimizer).__name__}")
