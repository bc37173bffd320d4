"""Callbacks of `Network.fit`: objects with any of

    on_train_begin(net, optimizer)                   when fit starts training
    on_epoch_begin(net, epoch, optimizer)            before the epoch's first step
    on_epoch_end(net, epoch, logs) -> bool           after it; True stops training
    on_train_end(net, optimizer)                     when training ends, by a stop or
                                                     after the last epoch (not on an error
                                                     or Ctrl-C)

`epoch` counts from 0 within the call; `logs` holds "loss", "accuracy" (classifiers),
"epoch_time", "lr" and, with validation data, "val_loss" (and "val_accuracy" for
classifiers). Schedules (nnfast.schedules) and EarlyStopping are callbacks themselves.

Ctrl-C while a callback runs raises KeyboardInterrupt in it at once; fit then ends with
KeyboardInterrupt (its `history` attribute holds the epochs so far). A callback that
raises (any exception, KeyboardInterrupt and SystemExit included) ends fit; over MPI it
ends every rank. A schedule gives the optimizer its rate back however fit ends.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._validate import check_int, check_number

if TYPE_CHECKING:
    from .network import Network
    from .optim import Optimizer


class Callback:
    """Base class: does nothing; override any method."""

    def on_train_begin(self, net: Network, optimizer: Optimizer) -> None:
        pass

    def on_train_end(self, net: Network, optimizer: Optimizer) -> None:
        pass

    def on_epoch_begin(self, net: Network, epoch: int, optimizer: Optimizer) -> None:
        pass

    def on_epoch_end(self, net: Network, epoch: int, logs: dict[str, float]) -> bool:
        return False


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience`
    epochs; with `restore_best`, the network ends with the weights of its best epoch,
    whether patience or the epochs ran out first. Each fit starts afresh.

    Parameters
    ----------
    monitor : str, default "val_loss" (needs validation data); or "loss"
    patience : int >= 1
    min_delta : float >= 0
    restore_best : bool
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        if monitor not in ("val_loss", "loss"):
            raise ValueError(f"EarlyStopping: monitor must be 'val_loss' or 'loss', got "
                             f"{monitor!r}")
        self.monitor = monitor
        self.patience = check_int("EarlyStopping", "patience", patience, 1)
        self._backup_names = ("best", "best_epoch", "stopped_epoch", "_best_params",
                              "_wait")         # what BackupAndRestore saves and restores
        self.min_delta = check_number("EarlyStopping", "min_delta", min_delta, 0, math.inf)
        self.restore_best = bool(restore_best)
        self.on_train_begin(None, None)

    def on_train_begin(self, net, optimizer):
        self.best, self.best_epoch, self.stopped_epoch = math.inf, None, None
        self._best_params, self._wait = None, 0

    def on_train_end(self, net, optimizer):
        if self.restore_best and self._best_params is not None:
            net.set_flat_params(self._best_params)

    def on_epoch_end(self, net, epoch, logs):
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: monitor {self.monitor!r} needs validation data "
                             "(validation_data or validation_split)")
        value = logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best:
                self._best_params = net.flat_params.copy()
            return False
        self._wait += 1
        if self._wait < self.patience:
            return False
        self.stopped_epoch = epoch
        return True                             # on_train_end restores the best


from ._backup import BackupAndRestore  # noqa: E402,F401  (nf.callbacks.BackupAndRestore)
