"""Which way this CPU computes bfloat16 matrix products (matmul_precision="bfloat16").

csrc/_bf16.h has four paths that give the same bits: VDPBF16PS (AVX512-BF16), and the
same float32 fused multiply-adds in AVX-512F, in AVX2 + FMA, or in portable C. The
fastest one this CPU runs is chosen once, at import.
"""
from . import _kernels as K

_BEST = K.bf16_best_path()


def bf16_path():
    """(name, code) of the bfloat16 path the compiled steps and prediction use."""
    return _BEST, K.BF16_PATHS.index(_BEST)


def matmul_description(precision):
    """How a network of this matmul precision multiplies, for reports: e.g.
    "bfloat16 (avx512bf16)" or "float32 (OpenBLAS)"."""
    return f"bfloat16 ({_BEST})" if precision == "bfloat16" else f"{precision} (OpenBLAS)"
