"""How `Network.fit` trains, top to bottom.

    Network.fit(X, y, ...)                    network.py
      settings = _validate.fit_settings(...)  every argument checked once -> FitSettings
      train(net, settings, group)             here:
        group.start: every rank takes rank 0's weights, optimizer state, TrainState
        for each epoch:
          callbacks.on_epoch_begin; rule = optimizer._rule()   (a schedule may set lr)
          shuffle the sample order (the network's own generator)
          for each mini-batch:  group.step -> TrainStep (csrc/_step.pyx): gather,
              forward, loss, backward and the Adam / SGD update, one compiled call
          History, validation, callbacks.on_epoch_end
        callbacks.on_train_end

The group is a `LocalGroup` (one process: nothing to exchange, nnfast._group) or a
`DataParallel` (MPI: nnfast.distributed); the loop is the same for both. The step
counter `optimizer.t` is advanced here, and only here, once per applied update.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from ._backup import find_backup, fingerprint, restore_callbacks, restore_network, snapshot
from ._npyfile import NpyFile
from ._progress import EpochProgress
from ._threads import TeamChooser, refresh_cpus, team_size
from ._validate import all_finite


class History:
    """What `fit` measured.

    Attributes
    ----------
    loss : list of float
        Mean training loss of each epoch (over the mini-batches, as they were trained).
    accuracy : list of float
        Training accuracy of each epoch, over the mini-batches as they were trained
        (classifiers only: softmax and sigmoid outputs).
    batch_loss : list of float
        Loss of every mini-batch, in order.
    val_loss, val_accuracy : list of float
        Per epoch, when validation data is given (accuracy for classifiers only).
    epoch_time : list of float
        Seconds of training per epoch (validation excluded).
    comm_time : list of float
        Data-parallel training (fit's comm): seconds of each epoch spent in the
        gradients' Allreduce on this rank.
    """

    def __init__(self):
        self.loss, self.accuracy, self.batch_loss, self.epoch_time = [], [], [], []
        self.comm_time = []
        self.val_loss, self.val_accuracy = [], []

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.4g}" if self.loss else ""
        return f"History({len(self.loss)} epochs{last})"


@dataclass(frozen=True)
class Validation:
    """Checked validation data: X (n, n_features), Y (n, n_out), W (n,) weights or None."""
    X: object
    Y: np.ndarray
    W: np.ndarray | None


@dataclass(frozen=True)
class FitSettings:
    """fit's arguments, checked and converted (nnfast._validate.fit_settings).

    X, Y, W: the training rows (X possibly read in place: a file, a memmap, uint8, CSR),
    their targets (n, n_out) and sample weights (n,) or None; validation: a Validation or
    None; optimizer: an Optimizer; callbacks: a list; opened: the data files fit_settings
    opened (NpyFile), which fit closes when it ends.
    """
    X: object
    Y: np.ndarray
    W: np.ndarray | None
    validation: Validation | None
    epochs: int
    batch_size: int
    optimizer: object
    shuffle: bool
    verbose: bool
    callbacks: list
    opened: list

    @property
    def n(self):
        return self.X.shape[0]


class TrainState:
    """What a network carries from one fit to the next besides its weights, so that
    fit(2) equals fit(1) twice: the shuffling generator, the sample order it shuffles in
    place (None until a shuffled fit), the dropout seed and the dropout step counter
    (the masks of a step come from (seed, step, layer))."""

    def __init__(self, rng, dropout_seed):
        self.rng = rng
        self.order = None
        self.dropout_seed = dropout_seed
        self.dropout_step = 0

    def sample_order(self, n, shuffle):
        """The order the epochs walk the samples in: 0..n-1, kept (and shuffled in place)
        between fits when shuffling."""
        if not shuffle:
            return np.arange(n, dtype=np.intp)
        if self.order is None or self.order.shape[0] != n:
            self.order = np.arange(n, dtype=np.intp)
        return self.order


class DeferredInterrupt:
    """Within: Ctrl-C (SIGINT) during a step only sets `requested`, which the loop checks
    after the step's bookkeeping, so that an interrupt never falls between a step and its
    bookkeeping; inside `immediate()` (callbacks, validation) it raises KeyboardInterrupt
    at once, as Python does. Only in the main thread and only over Python's default
    handler; elsewhere a no-op (`requested` stays False)."""

    def __init__(self):
        self.requested = False
        self._raise_now = False
        self._previous = None

    def _handle(self, signum, frame):
        if self._raise_now:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def immediate(self):
        """Ctrl-C raises at once in this block (and one that came before it raises on
        entry)."""
        if self.requested:
            raise KeyboardInterrupt
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def train(net, settings, group):
    """Run `settings` on `net` over `group`; returns the History. The network's lock is
    held by the caller; every argument is checked."""
    s, opt, state = settings, settings.optimizer, net._train_state
    n = s.n
    refresh_cpus()
    rows = min(s.batch_size, n)
    step_rows = group.batch_rows(rows)      # of each mini-batch, the rows this rank runs
    ws = net._training_workspace(step_rows, s.X)
    step = ws.step
    _check_params_finite(net, "at the start of fit")
    backup = Backups(find_backup(s.callbacks), net, s, group)
    # All input checked, buffers allocated: from here on the network changes.
    opt._prepare(net)
    order = state.sample_order(n, s.shuffle)
    resume = backup.resume(state, order)    # None, or a backup to go on from
    group.start(net._flat_params, net._flat_grads_ext, opt, state, order)
    net._bind(step, s.X, s.Y, s.W, group.dropout_seed(state.dropout_seed))
    useful = step.useful_threads(step_rows)
    if ws.team is None or ws.team.useful != useful:     # timings carry over between fits
        ws.team = TeamChooser(useful)
    team = ws.team
    hist = History()
    weights = None if s.W is None else s.W.astype(np.float64)   # once: per-batch sums
    at = resume["meta"]["position"] if resume else {"epoch": 0, "batch": 0, "sums": None,
                                                    "stopped": False}
    try:
        with DeferredInterrupt() as interrupt:
            _begin_training(net, s, group, interrupt, resume, hist)
            for epoch in range(at["epoch"], at["epoch"] if at["stopped"] else s.epochs):
                within = at if epoch == at["epoch"] and at["batch"] > 0 else None
                rule = _begin_epoch(net, s, epoch, group, interrupt, within is None)
                progress = _train_epoch(net, s, epoch, step, rule, order, rows, weights,
                                        group, interrupt, hist, team, within, backup)
                stop = _end_epoch(net, s, epoch, hist, progress, group, interrupt)
                backup.after_epoch(epoch, -(-n // rows), stop, order, hist)
                if stop:
                    break
            _end_training(net, s, group, interrupt)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and not hasattr(exc, "history"):
            exc.history = hist
        for cb in s.callbacks:              # a schedule gives the optimizer its rate back
            if hasattr(cb, "_abandon"):
                cb._abandon(opt)
        raise
    finally:
        step.release()
    backup.finished()
    return hist


class Backups:
    """The fit's BackupAndRestore (or none): restoring at the start, saving after the
    steps and epochs it asks for (rank 0 writes; every rank agrees on a failure)."""

    def __init__(self, callback, net, s, group):
        self.callback, self.net, self.s, self.group = callback, net, s, group
        self.fp = None if callback is None else fingerprint(net, s, group.size)

    def resume(self, state, order):
        """Load the backup (rank 0; shared with every rank) and put the network's, the
        optimizer's and the TrainState's part in place; returns it, or None."""
        if self.callback is None:
            return None
        saved, failure = None, None
        if self.group.is_root:
            try:
                saved = self.callback._load(self.fp)
            except Exception as exc:        # every rank must hear of it
                failure = exc
        self.group.agree(failure)
        saved = self.group.share(saved)
        if saved is not None:
            order[...] = restore_network(self.net, self.s, state, saved)
        return saved

    def after_step(self, epoch, k, n_batches, sums, order, hist):
        if self.callback is not None and self.callback._due_after_step(
                epoch * n_batches + k + 1, k + 1 == n_batches):
            self._save(order, hist, {"epoch": epoch, "batch": k + 1, "sums": sums,
                                     "stopped": False})

    def after_epoch(self, epoch, n_batches, stopped, order, hist):
        if self.callback is not None and self.callback._due_after_epoch(
                (epoch + 1) * n_batches):
            self._save(order, hist, {"epoch": epoch + 1, "batch": 0, "sums": None,
                                     "stopped": bool(stopped)})

    def _save(self, order, hist, position):
        failure = None
        if self.group.is_root:
            try:
                self.callback._save(snapshot(self.net, self.s, self.net._train_state, order,
                                             hist, position, self.fp))
            except Exception as exc:
                failure = exc
        self.group.agree(failure)

    def finished(self):
        """fit ended normally: the backup has served."""
        if self.callback is not None and self.group.is_root:
            self.callback._remove()


def _begin_training(net, s, group, interrupt, resume, hist):
    """on_train_begin, then (resuming) the callbacks' saved state and the History."""
    failure = None
    try:
        with interrupt.immediate():
            for cb in s.callbacks:
                if hasattr(cb, "on_train_begin"):
                    cb.on_train_begin(net, s.optimizer)
        if resume is not None:
            restore_callbacks(s, resume, hist)
    except BaseException as exc:            # noqa: B036 -- Ctrl-C, SystemExit too
        failure = exc
    group.agree(failure)


def _end_training(net, s, group, interrupt):
    """on_train_end (by a stop or after the last epoch), then a last agreement: a Ctrl-C
    that came during the last step, validation or callbacks stops fit with
    KeyboardInterrupt on every rank instead of being dropped."""
    failure = None
    try:
        with interrupt.immediate():
            for cb in s.callbacks:
                if hasattr(cb, "on_train_end"):
                    cb.on_train_end(net, s.optimizer)
    except BaseException as exc:            # noqa: B036 -- every rank must hear of it
        failure = exc
    if failure is None and interrupt.requested:
        failure = KeyboardInterrupt()
    group.agree(failure)


def _begin_epoch(net, s, epoch, group, interrupt, begins=True):
    """Callbacks before the epoch (a schedule may change the optimizer's lr; not when
    resuming inside it: `begins` False); returns the optimizer's update rule with the
    hyperparameters of this epoch."""
    failure, rule = None, None
    try:
        with interrupt.immediate():
            for cb in s.callbacks if begins else ():
                if hasattr(cb, "on_epoch_begin"):
                    cb.on_epoch_begin(net, epoch, s.optimizer)
        rule = s.optimizer._rule()          # the hyperparameters checked once more
    except BaseException as exc:            # noqa: B036 -- Ctrl-C, SystemExit too
        failure = exc
    group.agree(failure)            # a rank failing here must not leave the others waiting
    return rule


def _train_epoch(net, s, epoch, step, rule, order, rows, weights, group, interrupt, hist,
                 team, within, backup):
    """One pass over the shuffled samples, a mini-batch per step (resuming: from the
    backup's position `within` the epoch, already shuffled); returns the epoch's progress
    display (its line is printed at the epoch's end)."""
    n, opt, state = s.n, s.optimizer, net._train_state
    n_batches = -(-n // rows)
    progress = EpochProgress(s.verbose and group.is_root, n_batches, epoch, s.epochs)
    t0 = time.perf_counter()
    comm_before = group.comm_time
    if s.shuffle and within is None:
        state.rng.shuffle(order)
    divisors = _batch_divisors(weights, order, rows)
    total, seen, correct, trained = within["sums"] if within else (0.0, 0.0, 0, 0)
    first = within["batch"] if within else 0
    shown = first
    dropout = any(net.dropout)
    try:
        for k in range(first, n_batches):
            idx = order[k * rows:(k + 1) * rows]
            div = float(idx.shape[0]) if divisors is None else float(divisors[k])
            if div == 0:                        # all weights 0: nothing to learn
                continue
            # threads: 1 for a step too small to split, else the chooser's (timed on
            # full batches only, so that like is compared with like)
            threads = team.pick(group.threads(team_size())) if team.useful > 1 else 1
            started = time.perf_counter()
            try:
                loss, right, stop_now = group.step(step, idx, div, opt.t + 1, rule,
                                                   state.dropout_step, threads,
                                                   interrupt.requested)
            except FloatingPointError as err:   # an overflowing update, not applied
                raise _overflowed(err, k, epoch, hist) from None
            if team.useful > 1 and idx.shape[0] == rows:
                team.record(threads, time.perf_counter() - started)
            if dropout:                         # every step that ran drew masks
                state.dropout_step += 1
            if not math.isfinite(loss):         # the step skipped its update
                raise _diverged(loss, k, epoch, hist)
            opt.t += 1
            hist.batch_loss.append(loss)
            weight = idx.shape[0] if divisors is None else div
            total += loss * weight
            seen += weight
            correct += right
            trained += idx.shape[0]
            if k + 1 - shown >= progress.every:
                progress.update(k + 1 - shown, total / seen)
                shown = k + 1
            if stop_now:                        # Ctrl-C (on any rank): stop here
                err = KeyboardInterrupt()
                err.history = hist
                raise err
            backup.after_step(epoch, k, n_batches, [total, seen, correct, trained], order,
                              hist)
    finally:
        progress.close()
    hist.epoch_time.append(time.perf_counter() - t0)
    if group.size > 1:
        hist.comm_time.append(group.comm_time - comm_before)
    hist.loss.append(total / seen)
    units = net.sizes[-1] if net.output == "sigmoid" else 1      # accuracy's units
    if net.output != "linear":
        hist.accuracy.append(correct / (trained * units))
    return progress


def _batch_divisors(weights, order, rows):
    """With sample weights (float64): each mini-batch's weight sum (the divisor of its
    summed loss and gradient); None without (the divisor is the batch size)."""
    if weights is None:
        return None
    return np.add.reduceat(weights[order], np.arange(0, order.shape[0], rows))


def _check_params_finite(net, when):
    """ValueError when a parameter is NaN or inf (written through `net.params`, say):
    training on would spread it silently."""
    if not all_finite(net._flat_params):
        raise ValueError(f"fit: the network's parameters hold NaN or inf {when} (written "
                         "through net.params?); expected finite numbers")


def _diverged(loss, k, epoch, hist):
    err = FloatingPointError(
        f"fit: training diverged: the loss of batch {k + 1} of epoch {epoch + 1} is "
        f"{loss}; the network keeps the weights of the step before (lower the learning "
        "rate, or check that X holds finite numbers if it changed during fit)")
    err.history = hist
    return err


def _overflowed(err, k, epoch, hist):
    detail = str(err).removeprefix("TrainStep: ")
    err = FloatingPointError(
        f"fit: training diverged at batch {k + 1} of epoch {epoch + 1}: {detail} (lower "
        "the learning rate)")
    err.history = hist
    return err


def _end_epoch(net, s, epoch, hist, progress, group, interrupt):
    """Validation, the epoch's line and the callbacks; True when training stops (any
    rank's callback asking to stop stops every rank). A failure on any rank, Ctrl-C and
    SystemExit included, ends every rank."""
    failure, stop = None, False
    try:
        with interrupt.immediate():
            _check_files_unchanged(s)           # (validation checks its own reads)
            logs = _epoch_logs(net, s, hist)
            line = "  ".join(f"{k} {logs[k]:.4f}" for k in
                             ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs)
            progress.line(f"epoch {epoch + 1}/{s.epochs}  {line}  "
                          f"{hist.epoch_time[-1]:.2f}s")
            logs.update(epoch_time=hist.epoch_time[-1], lr=s.optimizer.lr)
            for cb in s.callbacks:
                if hasattr(cb, "on_epoch_end"):
                    stop = bool(cb.on_epoch_end(net, epoch, logs)) or stop
        _check_params_finite(net, f"after the callbacks of epoch {epoch + 1}")
    except BaseException as exc:            # noqa: B036 -- Ctrl-C, SystemExit too
        failure = exc
    return group.agree(failure, stop)


def _check_files_unchanged(s):
    """DataFileChanged when a data file read by the epoch (X, validation X) was modified
    since fit opened it: a short read stops a step at once, this finds a rewrite."""
    for X in (s.X, None if s.validation is None else s.validation.X):
        if isinstance(X, NpyFile):
            X.check_unchanged()


def _epoch_logs(net, s, hist):
    """The epoch's numbers for History, the printed line and the callbacks."""
    logs = {"loss": hist.loss[-1]}
    if net.output != "linear":
        logs["accuracy"] = hist.accuracy[-1]
    if s.validation is not None:
        v = s.validation
        vloss, vacc = net._loss_accuracy(v.X, v.Y, v.W)
        hist.val_loss.append(vloss)
        logs["val_loss"] = vloss
        if vacc is not None:
            hist.val_accuracy.append(vacc)
            logs["val_accuracy"] = vacc
    return logs
