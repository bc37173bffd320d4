"""Print the OpenBLAS kernel families that the tests should also run under on this CPU,
one `OPENBLAS_CORETYPE` value a line, leaving out the family this environment already runs.

Rounding differs between families (a matrix product's summation order), so a test that
passes under one may fail under another. Users get:
  Haswell   every x86-64 CPU with AVX2 and no AVX-512 (Intel up to Skylake client, AMD
            Zen 1-3: OpenBLAS's "Zen" target uses the Haswell kernels), and whoever sets
            OPENBLAS_CORETYPE=Haswell;
  SkylakeX  every AVX-512 CPU: Intel Skylake-SP and later (Cooperlake / SapphireRapids
            targets share its float32 and float64 kernels), AMD Zen 4/5.
Any AVX-512 CPU can run both; an AVX2 CPU only the first.

Usage (.ci/run): for f in $(python tools/blas_families.py); do OPENBLAS_CORETYPE=$f pytest; done
"""
import os
import sys

FAMILY = {"haswell": "Haswell", "zen": "Haswell",
          "skylakex": "SkylakeX", "cooperlake": "SkylakeX", "sapphirerapids": "SkylakeX"}


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def running_family():
    """The family of the kernels nnfast's OpenBLAS uses in this environment, or None."""
    import nnfast  # noqa: F401  (loads nnfast's OpenBLAS: libscipy_openblas.so)
    from threadpoolctl import threadpool_info
    for pool in threadpool_info():
        if os.path.basename(pool.get("filepath", "")).startswith("libscipy_openblas."):
            return FAMILY.get(str(pool.get("architecture")).lower())
    return None


def main():
    flags = cpu_flags()
    families = ["Haswell"] if "avx2" in flags else []
    if "avx512f" in flags:
        families.append("SkylakeX")
    current = running_family()
    for family in families:
        if family != current:
            print(family)
    return 0


if __name__ == "__main__":
    sys.exit(main())
