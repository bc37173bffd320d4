"""nnfast: small, fast, correct multi-layer perceptrons with a compiled core.

    import nnfast as nf
    net = nf.Network([784, 256, 128, 10], hidden="relu", output="softmax")
    hist = net.fit(X, y, epochs=10, batch_size=128, optimizer=nf.Adam(lr=1e-3))
"""
# The only place the version is written: pyproject.toml reads it (without importing
# nnfast), `nnfast --version` prints it.
__version__ = "0.1.0"

# Loads libscipy_openblas with RTLD_GLOBAL: the compiled modules below resolve their
# CBLAS symbols against it (they are linked without an rpath). Must come first.
import scipy_openblas32 as _scipy_openblas32  # noqa: F401

from . import callbacks, datasets, schedules
from ._threads import get_num_threads, set_num_threads
from .gradcheck import gradcheck
from ._npyfile import DataFileChanged
from .io import load
from .network import Network
from .training import History
from .optim import SGD, Adam, Optimizer

__all__ = ["Network", "History", "load", "gradcheck", "SGD", "Adam", "Optimizer",
           "set_num_threads", "get_num_threads", "datasets", "callbacks", "schedules",
           "DataFileChanged", "__version__"]
