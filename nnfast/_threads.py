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

import math
import numbers
import os
import statistics

from . import _kernels, _step

MAX_THREADS = 4096


GRID_MAX = 16                     # the most blocks a phase of a step is cut into


def _cpu_quota(path="/sys/fs/cgroup/cpu.max"):
    """The CPUs of this process's cgroup v2 quota (a container's --cpus), or None."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return None


def _available_cpus():
    """The CPUs this process may use: its affinity, within its cgroup's quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cpu_quota()
    return min(n, quota) if quota else n


def _env_threads():
    """The thread count the environment asks for: OPENBLAS_NUM_THREADS, then
    OMP_NUM_THREADS (joblib's process workers set them to their share of the CPUs), else
    None. A value that is not a positive integer is ignored."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) >= 1:
            return min(int(value), MAX_THREADS)
    return None


_cpus = _available_cpus()                 # refreshed at the start of every fit
_requested = _env_threads() or _cpus
# The work grid (csrc/_step.pyx): blocks per phase at most this process's CPUs at import,
# at most GRID_MAX. Fixed for the process, never following the team size, so results are
# the same bits for any thread count. Capped because one thread running many blocks pays
# for each BLAS call's packing: measured on 784-256-128-10, 4 blocks cost one thread
# 5-25% per product, 8 blocks up to 50%.
_step._set_grid_cpus(max(1, min(_cpus, GRID_MAX)))
# Off: every step runs on the whole team the limit allows (benchmarks of fixed team
# sizes, tests); on: TeamChooser times one thread against the team.
timed_team_choice = True
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
    the step's own grid). Each is timed for PROBE_STEPS steps at the start (the first of
    them not counted: it wakes sleeping workers); then the faster one runs, and every
    PROBE_EVERY steps the other is timed again the same way, every PROBE_SOON steps when
    its last time was close to the best's (the machine's load may be changing). A
    candidate's time is the median of its last RECENT counted steps, so one step slowed
    by an interrupt does not flip the choice, while a team that loses a core to another
    process is dropped after a few slow steps, and taken back soon after the core
    returns. This is safe because a step's results are the same bits for any team size.

    Why: with one core taken by another process, a 2-thread team keeps waiting for the
    blocks of the thread that lost its core: 784-256-128-10 at batch 128 then took 2.2
    ms a step against 1.6 ms on one thread (3.0 ms when each thread had a fixed share),
    while on a quiet machine 2 threads take 1.1 ms. No static rule sees that; a
    measurement does, at the cost of the probes (2% of steps).
    """

    PROBE_EVERY = 200
    PROBE_SOON = 20                   # ... when the other was within CLOSE of the best
    CLOSE = 1.25
    PROBE_STEPS = 4
    RECENT = 5

    def __init__(self, useful):
        self.useful = useful          # the most threads a full batch's step can use
        self.limit = None
        self.times = {}
        self.estimates = {}
        self.steps = 0
        self.probe = []               # the team sizes of the coming timed probe steps

    def _reset(self, limit):
        self.limit = limit
        self.candidates = sorted({1, limit}, reverse=True)        # the team first
        self.times = {c: [] for c in self.candidates}
        self.estimates = {}
        self.probe = [c for c in self.candidates for _ in range(self.PROBE_STEPS)]
        self.steps = 0

    def _estimate(self, c):
        """Candidate c's time: the median of its recent steps (0 before the first), kept
        by record (pick runs every step: recomputing medians there cost ~3 us a step,
        1% of a batch-32 step of 784-256-128-10)."""
        return self.estimates.get(c, 0.0)

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
        if self.probe:
            return self.probe[0]
        self.steps += 1
        best = min(self.candidates, key=self._estimate)
        other = next(c for c in self.candidates if c != best)
        close = self._estimate(other) < self.CLOSE * self._estimate(best)
        if self.steps >= (self.PROBE_SOON if close else self.PROBE_EVERY):
            self.steps = 0
            self.probe = [other] * self.PROBE_STEPS
            self.times[other] = []                    # stale: timed afresh
            self.estimates.pop(other, None)
            return other
        return best

    def record(self, threads, seconds):
        """The time of a full-batch step that ran on `threads` (after pick)."""
        if self.limit in (None, 1) or threads not in self.times or not timed_team_choice:
            return
        if self.probe and self.probe[0] == threads:
            first = self.probe.count(threads) == self.PROBE_STEPS     # none timed yet
            self.probe.pop(0)
            if first:                                 # the first one wakes the team
                return
        recent = self.times[threads]
        recent.append(seconds)
        del recent[:-self.RECENT]
        self.estimates[threads] = statistics.median(recent)
