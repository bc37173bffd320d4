"""Thread control. All of nnfast's parallel work - a training step, prediction - runs on
its own team of threads (csrc/_pool.h), each thread calling single-threaded BLAS on its
block. nnfast's OpenBLAS (its own copy, not NumPy's) is set to one thread at import and
stays so: nothing else in nnfast changes it, so a fit never changes a setting another
thread relies on.

The thread count is nnfast's own setting, one per process: `set_num_threads` stores it,
`get_num_threads` reads it, and every training step and every prediction call reads it
when it starts. So a call from any thread takes effect at the next step of a running fit
(and the next prediction), and nothing reverts it. It is the most threads: each fit
times its steps to choose between one thread and the team (TeamChooser).
"""
from __future__ import annotations

import numbers
import os

from . import _kernels

MAX_THREADS = 4096


def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_threads():
    """The thread count the environment asks for: OPENBLAS_NUM_THREADS, then
    OMP_NUM_THREADS (joblib's process workers set them to their share of the CPUs), else
    None. A value that is not a positive integer is ignored."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) >= 1:
            return min(int(value), MAX_THREADS)
    return None


_requested = _env_threads() or _available_cpus()
# Off: every step runs on the whole team the limit allows (benchmarks of fixed team
# sizes, tests); on: TeamChooser times one thread against the team.
timed_team_choice = True
_cpus = _available_cpus()                 # refreshed at the start of every fit
_kernels.set_blas_threads(1)


def set_num_threads(n: int) -> None:
    """Set the most threads nnfast uses.

    A training step (fit, loss_and_grads) splits all its work - matrix products, bias,
    activations, loss, optimizer, gather - over a team of up to n threads of nnfast's
    own, each calling single-threaded BLAS; prediction (predict, predict_proba, forward,
    evaluate) splits its rows over the same team. NumPy's own BLAS is not affected.
    The setting is the process's: a fit running in another thread uses it from its next
    step on. The team never has more threads than the CPUs this process may use, nor than
    a step's work can use (a small network's step runs on the calling thread alone).

    During a fit each step runs on one thread or on the whole team, whichever the fit's
    timing shows is faster now (see TeamChooser): a machine whose cores are busy with
    other work trains on one thread instead of waiting for a team that lost a core.
    Results are the same bits for any team size, so the choice never changes them.

    Parameters
    ----------
    n : int in [1, 4096]. The default is OPENBLAS_NUM_THREADS or OMP_NUM_THREADS when
        set at import, else the number of CPUs this process may use.
    """
    global _requested
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int >= 1, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    _requested = int(n)


def get_num_threads() -> int:
    """The most threads nnfast uses: the last `set_num_threads`, else the default."""
    return _requested


def refresh_cpus() -> None:
    """Read again which CPUs this process may use (at the start of a fit)."""
    global _cpus
    _cpus = _available_cpus()


def team_size() -> int:
    """Threads of the team for the next step or prediction: the setting, at most the CPUs
    this process may use (a spinning team larger than that would wait on itself)."""
    return max(1, min(_requested, _cpus))


class TeamChooser:
    """The team size of each training step of one fit, chosen by measuring.

    The candidates are one thread and the most the step can use (the setting, the CPUs,
    the step's own grid). Each is timed for a few steps at the start; then the faster one
    runs, and every PROBE_EVERY steps the other is timed again for PROBE_STEPS steps (the
    first of them not counted: it wakes sleeping workers). So a team that loses a core to
    another process is dropped within a few steps (its own times rise), and taken back
    within PROBE_EVERY steps of the core's return. This is safe because a step's results
    are the same bits for any team size.

    Why: with one core taken by another process, a 2-thread team waits at every barrier
    for the thread that lost its core: 784-256-128-10 at batch 128 then took 3.3 ms a step
    against 1.8 ms on one thread, while on a quiet machine 2 threads take 1.0 ms. No
    static rule sees that; a measurement does, at the cost of the probes (1.5% of steps).
    """

    PROBE_EVERY = 200
    PROBE_STEPS = 3
    SMOOTHING = 0.2                   # weight of a new time in the running estimate

    def __init__(self, useful):
        self.useful = useful          # the most threads a full batch's step can use
        self.limit = None
        self.estimate = {}
        self.steps = 0
        self.probing = None           # (candidate, steps left) while timing the other one

    def _reset(self, limit):
        self.limit = limit
        self.candidates = sorted({1, limit}, reverse=True)        # the team first
        self.estimate = {c: None for c in self.candidates}
        self.pending = [c for c in self.candidates for _ in range(self.PROBE_STEPS)]
        self.steps = 0
        self.probing = None

    def pick(self, limit):
        """The team size for the next full-batch step, given the current limit (the
        setting and the CPUs: read every step, so set_num_threads applies at once)."""
        limit = max(1, min(limit, self.useful))
        if not timed_team_choice:
            return limit
        if limit != self.limit:
            self._reset(limit)
        if limit == 1:
            return 1
        if self.pending:                              # the first timings
            return self.pending[0]
        self.steps += 1
        best = min(self.candidates, key=lambda c: self.estimate[c])
        if self.probing is None and self.steps % self.PROBE_EVERY == 0:
            other = next(c for c in self.candidates if c != best)
            self.probing = [other, self.PROBE_STEPS]
        return self.probing[0] if self.probing is not None else best

    def record(self, threads, seconds):
        """The time of a full-batch step that ran on `threads`."""
        if self.limit in (None, 1) or threads not in self.estimate or not timed_team_choice:
            return
        if self.pending:
            first = self.pending.count(threads) == self.PROBE_STEPS
            self.pending.remove(threads)
            if not first:                             # the first one wakes the team
                self._update(threads, seconds)
            return
        if self.probing is not None and self.probing[0] == threads:
            left = self.probing[1] - 1
            if left < self.PROBE_STEPS - 1:           # the first probe step: not counted
                self._update(threads, seconds, fresh=left == self.PROBE_STEPS - 2)
            self.probing = None if left == 0 else [threads, left]
            return
        self._update(threads, seconds)

    def _update(self, threads, seconds, fresh=False):
        old = self.estimate[threads]
        self.estimate[threads] = (seconds if old is None or fresh else
                                  (1 - self.SMOOTHING) * old + self.SMOOTHING * seconds)
