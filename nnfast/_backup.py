"""BackupAndRestore: a fit that crashed (even by SIGKILL) resumes exactly where it was.

The training loop (nnfast.training) asks this callback to save after a step or an epoch
and, at the start of fit, to restore. A backup holds everything the rest of the run
depends on: the parameters, the optimizer's state, step count and hyperparameters, the
shuffling generator and the shuffled order, the dropout seed and step, the position in
the run (epoch, batch) with the epoch's partial sums and the History so far, and the
state of the built-in stateful callbacks (EarlyStopping, the schedules). So the resumed
run's weights are bit-identical to a run never interrupted.

File: an .npz archive (never a pickle) of those arrays and one JSON member, with a
SHA-256 checksum over all of them, written atomically (nnfast._files).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ._files import write_atomically
from ._validate import check_int
from .callbacks import Callback

FORMAT = "nnfast-backup"
VERSION = 1


class BackupAndRestore(Callback):
    """Back up the whole training state during `fit`; the same `fit` call after a crash
    resumes from the last backup and ends with the weights of a run never interrupted.

    Parameters
    ----------
    path : str or os.PathLike
        The backup file (written atomically; removed when fit ends normally).
    save_freq : "epoch" or int >= 1
        After every epoch, or after every `save_freq` mini-batches.
    delete_on_success : bool, default True
        Remove the backup when fit completes (as Keras does).

    Notes
    -----
    The resumed fit must be the same call (same network architecture and seed, data,
    epochs, batch size, optimizer settings, callbacks): the network, data shape and
    optimizer settings are checked, and a backup of another fit is refused with
    ValueError. Built-in callbacks (EarlyStopping, the schedules) are restored; other
    callbacks start afresh. A fit resumed inside an epoch does not call that epoch's
    on_epoch_begin again (the optimizer's saved hyperparameters are restored instead).
    """

    def __init__(self, path: str | os.PathLike, save_freq: str | int = "epoch",
                 delete_on_success: bool = True) -> None:
        try:
            self.path = os.fsdecode(path)
        except TypeError:
            raise TypeError(f"BackupAndRestore: path must be a str or os.PathLike, got "
                            f"{type(path).__name__}") from None
        if save_freq != "epoch":
            save_freq = check_int("BackupAndRestore", "save_freq (\"epoch\" or a number "
                                  "of steps)", save_freq, 1)
        self.save_freq = save_freq
        self.delete_on_success = bool(delete_on_success)

    def __repr__(self):
        return f"BackupAndRestore({self.path!r}, save_freq={self.save_freq!r})"

    # -- what the training loop calls ---------------------------------------------------

    def _due_after_step(self, done, last_of_epoch):
        """Save after this step (`done` batches of the fit so far)?"""
        return (self.save_freq != "epoch" and done % self.save_freq == 0
                and not last_of_epoch)

    def _due_after_epoch(self, done):
        return self.save_freq == "epoch" or done % self.save_freq == 0

    def _save(self, snapshot):
        """Write `snapshot` (a dict from nnfast.training.snapshot) atomically."""
        meta, arrays = snapshot["meta"], snapshot["arrays"]
        text = json.dumps(meta, sort_keys=True)
        members = dict(arrays, meta=np.array(text))
        checksum = _checksum(members)

        def write(f):
            np.savez(f, checksum=np.array(checksum), **members)

        write_atomically(self.path, write, "BackupAndRestore")

    def _load(self, fingerprint):
        """The saved snapshot, or None when there is no backup. ValueError for a damaged
        file or one written by another fit (its fingerprint differs)."""
        if not os.path.exists(self.path):
            return None
        if not os.path.isfile(self.path):
            raise ValueError(f"BackupAndRestore: {self.path} is not a regular file")
        where = f"BackupAndRestore: {self.path}"
        try:
            with np.load(self.path, allow_pickle=False) as f:
                members = {k: f[k] for k in f.files}
        except Exception:
            raise ValueError(f"{where} is not a readable backup (damaged or truncated)") \
                from None
        checksum = members.pop("checksum", None)
        if checksum is None or "meta" not in members or str(checksum) != _checksum(members):
            raise ValueError(f"{where}: checksum mismatch: the backup is damaged")
        meta = json.loads(str(members.pop("meta")))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{where} is not a backup of this nnfast (format "
                             f"{meta.get('format')!r} version {meta.get('version')!r})")
        if meta["fingerprint"] != fingerprint:
            diff = sorted(k for k in set(fingerprint) | set(meta["fingerprint"])
                          if fingerprint.get(k) != meta["fingerprint"].get(k))
            raise ValueError(f"{where} was written by another fit (it differs in "
                             f"{', '.join(diff)}); remove it to start afresh")
        return {"meta": meta, "arrays": members}

    def _remove(self):
        if self.delete_on_success:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _checksum(members):
    h = hashlib.sha256()
    for name in sorted(members):
        a = np.ascontiguousarray(members[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def find_backup(callbacks):
    """The one BackupAndRestore among `callbacks`, or None (ValueError for two)."""
    found = [cb for cb in callbacks if isinstance(cb, BackupAndRestore)]
    if len(found) > 1:
        raise ValueError("fit: at most one BackupAndRestore callback, got "
                         f"{len(found)}")
    return found[0] if found else None


def fingerprint(net, s, group_size):
    """What a backup must agree with to be resumed by this fit (JSON values)."""
    fp = dict(fit_config(net, s), callbacks=[type(cb).__name__ for cb in s.callbacks],
              ranks=group_size)
    return json.loads(json.dumps(fp))


def fit_config(net, s):
    """The whole configuration of a fit that its result depends on, as JSON values: the
    network, the data's shape, the fit arguments, the optimizer and its settings, and
    the settings of the built-in stateful callbacks (schedules, EarlyStopping). Every
    MPI rank must pass the same; a backup must have been written by the same."""
    opt = s.optimizer
    cfg = {"sizes": list(net.sizes), "hidden": list(net.hidden), "output": net.output,
          "dtype": net.dtype.name, "dropout": [float(p) for p in net.dropout],
          "input_scale": float(net.input_scale), "matmul_precision": net.matmul_precision,
          "samples": int(s.n), "features": int(s.X.shape[1]), "targets": int(s.Y.shape[1]),
          "sample_weight": s.W is not None, "validation": s.validation is not None,
          "epochs": s.epochs, "batch_size": s.batch_size, "shuffle": bool(s.shuffle),
          "optimizer": type(opt).__name__,
          "hyperparameters": {k: getattr(opt, k) for k in opt._hyper},
          "schedules and early stopping": [
              [type(cb).__name__, {k: v for k, v in sorted(vars(cb).items())
                                   if not k.startswith("_") and k not in cb._backup_names
                                   and isinstance(v, (bool, int, float, str, type(None)))}]
              for cb in _stateful(s.callbacks)]}
    return json.loads(json.dumps(cfg))


def snapshot(net, s, state, order, hist, position, fp):
    """Everything a resumed fit needs, as {"meta": JSON values, "arrays": arrays}."""
    opt = s.optimizer
    arrays = {"params": net._flat_params.copy(), "order": order.copy()}
    for name, buf in zip(opt._state_names, opt._state_arrays()):
        arrays[f"optimizer.{name}"] = buf.copy()
    callbacks = []
    for i, cb in enumerate(_stateful(s.callbacks)):
        saved = {}
        for name in cb._backup_names:
            value = getattr(cb, name)
            if isinstance(value, np.ndarray):
                arrays[f"callback{i}.{name}"] = value.copy()
                saved[name] = {"array": True}
            else:
                saved[name] = {"value": value}
        callbacks.append(saved)
    bitgen = state.rng.bit_generator
    meta = {"format": FORMAT, "version": VERSION, "fingerprint": fp,
            "position": position, "optimizer_t": int(opt.t),
            "hyperparameters": {k: getattr(opt, k) for k in opt._hyper},
            "rng": {"name": type(bitgen).__name__, "state": bitgen.state},
            "dropout_seed": int(state.dropout_seed), "dropout_step": int(state.dropout_step),
            "history": sorted(vars(hist)), "callbacks": callbacks}
    for k, v in vars(hist).items():
        arrays[f"history.{k}"] = np.array(v, np.float64)
    return {"meta": meta, "arrays": arrays}


def restore_network(net, s, state, saved):
    """Put the saved parameters, optimizer state and TrainState in place (before the
    group's start, which then gives them to every rank)."""
    meta, arrays = saved["meta"], saved["arrays"]
    opt = s.optimizer
    bitgen = state.rng.bit_generator
    if meta["rng"]["name"] != type(bitgen).__name__:
        raise ValueError(f"BackupAndRestore: the backup's generator is "
                         f"{meta['rng']['name']}, this network's {type(bitgen).__name__}")
    expected = {"params": net._flat_params.shape, "order": (s.n,)}
    expected.update({f"optimizer.{k}": net._flat_params.shape for k in opt._state_names})
    for name, shape in expected.items():
        if name not in arrays or arrays[name].shape != shape:
            raise ValueError(f"BackupAndRestore: the backup's {name} does not fit this "
                             f"fit (expected shape {shape})")
    net._flat_params[...] = arrays["params"]
    for name, buf in zip(opt._state_names, opt._state_arrays()):
        buf[...] = arrays[f"optimizer.{name}"]
    opt.t = meta["optimizer_t"]
    bitgen.state = meta["rng"]["state"]
    state.dropout_seed, state.dropout_step = meta["dropout_seed"], meta["dropout_step"]
    return arrays["order"]


def restore_callbacks(s, saved, hist):
    """After on_train_begin: the callbacks' saved state, the optimizer's
    hyperparameters, and the History so far."""
    meta, arrays = saved["meta"], saved["arrays"]
    stateful = _stateful(s.callbacks)
    if len(stateful) != len(meta["callbacks"]):
        raise ValueError(f"BackupAndRestore: the backup holds {len(meta['callbacks'])} "
                         f"callbacks' state, this fit has {len(stateful)} such callbacks")
    for i, (cb, values) in enumerate(zip(stateful, meta["callbacks"])):
        for name, v in values.items():
            setattr(cb, name, arrays[f"callback{i}.{name}"].copy() if v.get("array")
                    else v["value"])
    for k, v in meta["hyperparameters"].items():
        setattr(s.optimizer, k, v)
    for k in meta["history"]:
        getattr(hist, k).extend(float(x) for x in arrays[f"history.{k}"])


def _stateful(callbacks):
    """The callbacks whose state a backup holds (the built-in ones that have any), in
    order: the same on every rank even where rank 0 alone has a logging callback."""
    return [cb for cb in callbacks if getattr(cb, "_backup_names", ())]
