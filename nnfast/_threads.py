"""Thread control. All of nnfast's parallel work - a training step, prediction - runs on
its own team of threads (csrc/_pool.h), each thread calling single-threaded BLAS on its
block. nnfast's OpenBLAS (its own copy, not NumPy's) is set to one thread at import and
stays so: nothing else in nnfast changes it, so a fit never changes a setting another
thread relies on.

The thread count is nnfast's own setting, one per process: `set_num_threads` stores it,
`get_num_threads` reads it, and every training step and every prediction call reads it
when it starts. So a call from any thread takes effect at the next step of a running fit
(and the next prediction), and nothing reverts it.
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
_cpus = _available_cpus()                 # refreshed at the start of every fit
_kernels.set_blas_threads(1)


def set_num_threads(n: int) -> None:
    """Set the number of threads nnfast uses.

    A training step (fit, loss_and_grads) splits all its work - matrix products, bias,
    activations, loss, optimizer, gather - over a team of up to n threads of nnfast's
    own, each calling single-threaded BLAS; prediction (predict, predict_proba, forward,
    evaluate) splits its rows over the same team. NumPy's own BLAS is not affected.
    The setting is the process's: a fit running in another thread uses it from its next
    step on. The team never has more threads than the CPUs this process may use.

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
    """The number of threads nnfast uses: the last `set_num_threads`, else the default."""
    return _requested


def refresh_cpus() -> None:
    """Read again which CPUs this process may use (at the start of a fit)."""
    global _cpus
    _cpus = _available_cpus()


def team_size() -> int:
    """Threads of the team for the next step or prediction: the setting, at most the CPUs
    this process may use (a spinning team larger than that would wait on itself)."""
    return max(1, min(_requested, _cpus))
