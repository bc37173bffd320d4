"""Thread control: nnfast's matrix products run on its own OpenBLAS; a training step runs
on nnfast's own team of threads (csrc/_pool.h), each calling single-threaded BLAS."""
from __future__ import annotations

import contextlib
import numbers
import os

from . import _kernels

MAX_THREADS = 4096


def set_num_threads(n: int) -> None:
    """Set the number of threads nnfast uses.

    A training step (fit, loss_and_grads) splits all its work - matrix products, bias,
    activations, loss, optimizer, gather - over a team of n threads of nnfast's own,
    each calling single-threaded BLAS; prediction and evaluation use n BLAS threads.
    NumPy's own BLAS is not affected.

    Parameters
    ----------
    n : int in [1, 4096]; OpenBLAS caps it at the maximum it was built for (64 for
        the scipy-openblas32 wheel), which get_num_threads() then reports.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int >= 1, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    _kernels.set_blas_threads(int(n))


def get_num_threads() -> int:
    """Number of threads nnfast's BLAS uses."""
    return _kernels.get_blas_threads()


def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def single_threaded_blas():
    """Within: nnfast's BLAS runs on the calling thread only (its workers sleep), for the
    team of a training step, whose threads call BLAS each on a block of the work.
    Yields the team's size: the thread count set before, at most the CPUs this process
    may use (a spinning team larger than that would wait on itself)."""
    n = _kernels.get_blas_threads()
    if n > 1:
        _kernels.set_blas_threads(1)
    try:
        yield max(1, min(n, _available_cpus()))
    finally:
        if n > 1:
            _kernels.set_blas_threads(n)
