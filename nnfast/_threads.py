"""Thread control: nnfast's matrix products run on its own OpenBLAS."""
import numbers

from . import _kernels

MAX_THREADS = 4096


def set_num_threads(n):
    """Set the number of threads used by nnfast's BLAS (every matrix product).

    The elementwise kernels (bias, activations, losses, optimizers, gather) are serial:
    on small dense networks a second thread pool spinning beside BLAS's costs more than
    it brings. NumPy's own BLAS is not affected.

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


def get_num_threads():
    """Number of threads nnfast's BLAS uses."""
    return _kernels.get_blas_threads()
