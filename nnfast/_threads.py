"""Thread control: nnfast's matrix products run on its own OpenBLAS."""
import numbers

from . import _kernels


def set_num_threads(n):
    """Set the number of threads used by nnfast's BLAS (every matrix product).

    The elementwise kernels (bias, activations, losses, optimizers, gather) are serial:
    on small dense networks a second thread pool spinning beside BLAS's costs more than
    it brings. NumPy's own BLAS is not affected.

    Parameters
    ----------
    n : int >= 1
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _kernels.set_blas_threads(int(n))


def get_num_threads():
    """Number of threads nnfast's BLAS uses."""
    return _kernels.get_blas_threads()
