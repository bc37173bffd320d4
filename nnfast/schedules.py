"""Learning-rate schedules: callbacks that set the optimizer's `lr` before each epoch.

    net.fit(X, y, epochs=30, optimizer=nf.Adam(1e-3),
            callbacks=[nf.schedules.Cosine(epochs=30, min_lr=1e-5)])

The rate of epoch e (from 0 within the fit call) is computed from the optimizer's rate
when training started (`base_lr`); when training ends, the optimizer gets that rate back,
so a schedule never changes `optimizer.lr` for good, and the next fit (with another
schedule, or none) starts from it.
"""
from __future__ import annotations

import math

from ._validate import check_int, check_number
from .callbacks import Callback


class Schedule(Callback):
    """Base class: `rate(epoch, base_lr)` gives the learning rate of an epoch."""

    _backup_names = ("base_lr",)             # what BackupAndRestore saves and restores

    def __init__(self):
        self.base_lr = None

    def rate(self, epoch: int, base_lr: float) -> float:
        raise NotImplementedError

    def on_train_begin(self, net, optimizer):
        self.base_lr = optimizer.lr

    def on_train_end(self, net, optimizer):
        if self.base_lr is not None:
            optimizer.lr = self.base_lr
        self.base_lr = None                     # the next fit starts from its own rate

    def _abandon(self, optimizer):
        """fit failed or was interrupted: the optimizer gets its rate back all the same."""
        self.on_train_end(None, optimizer)

    def on_epoch_begin(self, net, epoch, optimizer):
        if self.base_lr is None:                # used outside fit: from the current rate
            self.base_lr = optimizer.lr
        optimizer.lr = float(self.rate(epoch, self.base_lr))


class Constant(Schedule):
    """The same rate every epoch."""

    def rate(self, epoch, base_lr):
        return base_lr


class StepDecay(Schedule):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, step_size: int = 10, gamma: float = 0.1) -> None:
        super().__init__()
        self.step_size = check_int("StepDecay", "step_size", step_size, 1)
        self.gamma = check_number("StepDecay", "gamma", gamma, 0, 1, low_open=True)

    def rate(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class Cosine(Schedule):
    """Cosine annealing from base_lr to min_lr over `epochs` epochs, then min_lr:
    lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2."""

    def __init__(self, epochs: int, min_lr: float = 0.0) -> None:
        super().__init__()
        self.epochs = check_int("Cosine", "epochs", epochs, 1)
        self.min_lr = check_number("Cosine", "min_lr", min_lr, 0, math.inf)

    def rate(self, epoch, base_lr):
        t = min(epoch, self.epochs) / self.epochs
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2


class ReduceOnPlateau(Schedule):
    """Multiply the rate by `factor` when `monitor` has not improved for `patience`
    epochs (never below min_lr)."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 2,
                 min_lr: float = 0.0) -> None:
        super().__init__()
        if monitor not in ("val_loss", "loss"):
            raise ValueError(f"ReduceOnPlateau: monitor must be 'val_loss' or 'loss', got "
                             f"{monitor!r}")
        self.monitor = monitor
        self.factor = check_number("ReduceOnPlateau", "factor", factor, 0, 1,
                                    low_open=True, high_open=True)
        self.patience = check_int("ReduceOnPlateau", "patience", patience, 1)
        self.min_lr = check_number("ReduceOnPlateau", "min_lr", min_lr, 0, math.inf)
        self.current, self.best, self._wait = None, math.inf, 0

    _backup_names = ("base_lr", "current", "best", "_wait")

    def on_train_begin(self, net, optimizer):
        super().on_train_begin(net, optimizer)
        self.current, self.best, self._wait = None, math.inf, 0

    def rate(self, epoch, base_lr):
        if self.current is None:
            self.current, self.best, self._wait = base_lr, math.inf, 0
        return self.current

    def on_epoch_end(self, net, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"ReduceOnPlateau: monitor {self.monitor!r} needs validation "
                             "data (validation_data or validation_split)")
        if logs[self.monitor] < self.best:
            self.best, self._wait = logs[self.monitor], 0
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.current = max(self.current * self.factor, self.min_lr)
                self._wait = 0
        return False
