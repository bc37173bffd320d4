"""Build the compiled core: csrc/*.pyx -> nnfast.<name>, linked to scipy-openblas32's CBLAS."""
import glob
import os

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

# No rpath: the build-time library path is pip's temporary build environment.
# At run time nnfast/__init__.py imports scipy_openblas32, which loads the library globally.
blas = dict(
    include_dirs=[scipy_openblas32.get_include_dir(), np.get_include(), "csrc"],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    # -fno-math-errno: sqrt inline (Adam 2.8x faster); -fno-trapping-math: lets gcc
    # if-convert the selects in the exp/tanh/sigmoid loops of csrc/_vec.h (AVX2, SSE2)
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

extensions = []
for pyx in sorted(glob.glob(os.path.join("csrc", "*.pyx"))):
    name = os.path.splitext(os.path.basename(pyx))[0]
    extensions.append(Extension(f"nnfast.{name}", [pyx], **blas))

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["csrc"],
        compiler_directives=dict(language_level=3, boundscheck=False, wraparound=False,
                                 cdivision=True, initializedcheck=False),
    ),
)
