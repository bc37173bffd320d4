"""Which way this CPU computes the matrix products of training and prediction.

matmul_precision="bfloat16": csrc/_bf16.h has four paths that give the same bits:
VDPBF16PS (AVX512-BF16), and the same float32 fused multiply-adds in AVX-512F, in AVX2 +
FMA, or in portable C. The fastest one this CPU runs is chosen once, at import.

matmul_precision="float32" (a float32 network): on a CPU with AVX-512F nnfast's own
products (csrc/_sgemm.h), which on the step's small shapes match or beat OpenBLAS's
sgemm (bench/README.md, "nnfast's own float32 products"); elsewhere BLAS. float64
networks always use BLAS.
"""
import numpy as np

from . import _kernels as K
from . import _step

_BEST = K.bf16_best_path()
_F32_OWN = "avx512f" in K.f32_paths()
_float32_products = "nnfast" if _F32_OWN else "blas"


def bf16_path():
    """(name, code) of the bfloat16 path the compiled steps and prediction use."""
    return _BEST, K.BF16_PATHS.index(_BEST)


def float32_products():
    """"nnfast" (csrc/_sgemm.h, AVX-512F) or "blas": who computes float32 products."""
    return _float32_products


def set_float32_products(kind):
    """Use nnfast's own float32 products ("nnfast", on a CPU with AVX-512F) or BLAS's
    ("blas") in networks whose workspaces are built from now on (for tests and
    benchmarks). Returns the previous setting."""
    global _float32_products
    if type(kind) is not str or kind not in ("nnfast", "blas"):
        raise ValueError(f"set_float32_products: kind must be 'nnfast' or 'blas', got {kind!r}")
    if kind == "nnfast" and not _F32_OWN:
        raise ValueError("set_float32_products: nnfast's float32 products need AVX-512F, "
                         "which this CPU lacks")
    previous, _float32_products = _float32_products, kind
    return previous


def _checked(name, precision, dtype):
    """(precision, dtype name) after checking that a network can have them."""
    if type(precision) is not str or precision not in ("float32", "bfloat16"):
        raise ValueError(f"{name}: precision must be 'float32' or 'bfloat16', got "
                         f"{precision!r}")
    try:
        dtype = np.dtype(dtype).name
    except TypeError:
        dtype = None
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{name}: dtype must be float32 or float64, got {dtype!r}")
    if precision == "bfloat16" and dtype != "float32":
        raise ValueError(f"{name}: bfloat16 products are for float32 networks, got {dtype}")
    return precision, dtype


def matmul_path(precision, dtype):
    """The compiled steps' matmul path for a network of this precision and dtype."""
    precision, dtype = _checked("matmul_path", precision, dtype)
    if precision == "bfloat16":
        return bf16_path()[1]
    if dtype == "float32" and _float32_products == "nnfast":
        return _step.MATMUL_F32
    return _step.MATMUL_BLAS


def matmul_description(precision, dtype="float32"):
    """How a network of this matmul precision and dtype multiplies, for reports: e.g.
    "bfloat16 (avx512bf16)", "float32 (nnfast avx512f)" or "float32 (OpenBLAS)"."""
    precision, dtype = _checked("matmul_description", precision, dtype)
    if precision == "bfloat16":
        return f"bfloat16 ({_BEST})"
    if dtype == "float32" and _float32_products == "nnfast":
        return "float32 (nnfast avx512f)"
    return f"{dtype} (OpenBLAS)"
