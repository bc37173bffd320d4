"""Data-parallel training over MPI: ``net.fit(X, y, ..., comm=MPI.COMM_WORLD)``.

Every rank passes the same data (in memory, or the same .npy file / np.memmap, which the
ranks of a host then share through the page cache) and the same fit arguments. At the
start of fit, rank 0's weights, optimizer state, shuffling generator and dropout counter
are broadcast, so that every rank starts identical. Each global mini-batch of
`batch_size` samples (the same indices on every rank) is cut into one contiguous part per
rank; a rank runs the compiled forward/backward step on its part (TrainStep.gradients),
with the gradient divided by the global batch size, and ONE Allreduce (sum, in place)
over the flat gradient buffer, which carries the batch's summed loss, correct-prediction
count and Ctrl-C flag in three extra entries, gives every rank the global batch's mean
gradient. The optimizer then runs identically everywhere (TrainStep.update: the same
compiled update as inside a single-process step, same inputs), so the weights stay
bit-identical across ranks, and training equals a single process with the same batch
size up to the rounding of the gradient sums.

Failures are agreed on, so that no rank waits forever in an Allreduce the others left:
the input checks of fit, the callbacks before and after each epoch (and the validation)
end with a collective exchange of errors: the rank that failed raises its own error,
every other rank a ValueError naming it (KeyboardInterrupt when that rank's was one).
Ctrl-C on any rank stops every rank after the same step (its flag travels in the step's
Allreduce; one during callbacks or validation raises there and is agreed on at the
epoch's end; one during the last step, at the end of fit); the decision to stop early is
the same everywhere (any rank's callback asking to stop stops all). A step that fails on
one rank (its data file changed) is flagged in the same Allreduce and agreed on at once.

Threads: each rank runs a team of at most (CPUs / ranks on this host) threads, and BLAS
stays single-threaded during a step, as without MPI.

mpi4py is an optional extra (``pip install nnfast[mpi]``, which brings the MPICH wheel);
this module imports it only when a communicator is passed.
"""
import math
import os
import time

import numpy as np

# A rank whose gradients failed adds this to the interrupted-ranks entry of the step's
# Allreduce: both counts stay exact and apart in float32 with fewer than 1024 ranks
STEP_FAILED = 1 << 10

_REQUIRED = ("Get_rank", "Get_size", "Allreduce", "Bcast", "allgather", "bcast")


class DataParallel:
    """The collective operations of one data-parallel `fit` on an mpi4py communicator."""

    def __init__(self, comm):
        missing = [name for name in _REQUIRED if not hasattr(comm, name)]
        if missing:
            raise TypeError(f"fit: comm must be an mpi4py communicator (e.g. "
                            f"MPI.COMM_WORLD), got {type(comm).__name__} without "
                            f"{', '.join(missing)}")
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = local.Get_size()
        local.Free()
        self.comm_time = 0.0

    def agree(self, exc=None, stop=False):
        """Collective: raise on every rank if `exc` (this rank's failure, or None) is set
        on any: the failing rank raises its own exception, the others a ValueError naming
        it. Else returns whether any rank asked to `stop`."""
        note = None if exc is None else (type(exc).__name__, str(exc),
                                         isinstance(exc, KeyboardInterrupt))
        notes = self.comm.allgather((note, bool(stop)))
        failed = [(rank, n) for rank, (n, _) in enumerate(notes) if n is not None]
        if not failed:
            return any(s for _, s in notes)
        if exc is not None:
            raise exc
        rank, (name, text, ctrl_c) = failed[0]
        if ctrl_c:                  # Ctrl-C on one rank is Ctrl-C on every rank
            raise KeyboardInterrupt(f"fit: rank {rank} of {self.size} was interrupted")
        raise ValueError(f"fit: rank {rank} of {self.size} failed, so every rank stops: "
                         f"{name}: {text}")

    def share(self, value):
        """Collective: rank 0's `value` on every rank."""
        return self.comm.bcast(value, root=0)

    def check_config(self, config):
        """Collective: ValueError on every rank, naming what differs and each rank's value,
        unless `config` (a dict) is equal on all ranks."""
        configs = self.comm.allgather(config)
        differ = [k for k in configs[0] if any(c.get(k) != configs[0][k] for c in configs)]
        differ += [k for c in configs for k in c if k not in configs[0] and k not in differ]
        if differ:
            parts = "; ".join(f"{k}: " + ", ".join(f"rank {r}: {c.get(k)!r}"
                                                    for r, c in enumerate(configs))
                              for k in differ)
            raise ValueError(f"fit: every rank must pass the same fit arguments, network "
                             f"and optimizer; they differ in {parts}")

    is_root = property(lambda self: self.rank == 0, doc="Rank 0 alone prints.")

    def start(self, params, grads, optimizer, state, order):
        """Collective: every rank takes rank 0's params, optimizer state and step count,
        TrainState (shuffling generator, dropout seed and counter) and sample `order`.
        `grads` is the flat gradient buffer with the three extra entries that travel in
        each step's Allreduce (flat_grads_with_totals)."""
        self.comm.Bcast(params, root=0)
        for buf in optimizer._state_arrays():
            self.comm.Bcast(buf, root=0)
        optimizer.t = self.comm.bcast(optimizer.t, root=0)
        state.rng.bit_generator.state = self.comm.bcast(state.rng.bit_generator.state,
                                                        root=0)
        state.dropout_seed, state.dropout_step = self.comm.bcast(
            (state.dropout_seed, state.dropout_step), root=0)
        self.comm.Bcast(order, root=0)
        self._totals = grads

    def batch_rows(self, rows):
        """Rows of a global mini-batch of `rows` that one rank computes, at most."""
        return -(-rows // self.size)

    def dropout_seed(self, seed):
        """The dropout seed of this rank: the ranks' masks must differ (rank 0 keeps
        `seed`)."""
        return (seed + self.rank * 0x9E3779B97F4A7C15) % 2**64

    def step(self, step, idx, div, t, rule, dropout_step, threads, interrupted):
        """Collective: this rank's contiguous part of the global mini-batch `idx`
        (gradient summed, divided by `div`, the global batch's size or weight), ONE
        Allreduce of the gradients with the part's loss, correct count and Ctrl-C flag,
        then, when the global loss is finite, the update `rule` as step `t` on every
        rank alike. Returns (mean loss, correct predictions, any rank interrupted)."""
        lo, hi = self.part(idx.shape[0])
        totals = self._totals                   # gradients, then loss, correct, flags
        failure = None
        try:
            if hi > lo:
                totals[-3], totals[-2] = step.gradients(idx[lo:hi], div, dropout_step,
                                                        threads)
            else:
                totals[:] = 0
        except Exception as exc:                # e.g. its data file changed: tell all
            failure, totals[:] = exc, 0
        totals[-1] = (1 if interrupted else 0) + (STEP_FAILED if failure else 0)
        self.allreduce(totals)
        if totals[-1] >= STEP_FAILED:           # every rank sees it: agree, then raise
            self.agree(failure)
        loss = float(totals[-3]) / div
        if math.isfinite(loss):
            step.update(t, rule, threads)      # the same compiled update as one process
        return loss, int(round(float(totals[-2]))), bool(totals[-1] > 0)

    def threads(self, team):
        """Team size of this rank: its share of the host's CPUs."""
        return max(1, min(team, (os.cpu_count() or 1) // self.local_size))

    def part(self, n):
        """[lo, hi): this rank's contiguous part of a global batch of n samples."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def allreduce(self, buf):
        """Collective: buf := the sum of every rank's buf, in place."""
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.comm_time += time.perf_counter() - t0


def flat_grads_with_totals(n_params, dtype):
    """The flat gradient buffer with three extra entries (summed loss, correct count,
    interrupted ranks) that ride along in the same Allreduce; returns (buffer, gradient
    view)."""
    ext = np.zeros(n_params + 3, dtype)
    return ext, ext[:n_params]
