"""oneDNN's float32 matmul for the benchmarks, through its C API (ctypes).

Only for measuring: the `onednn-cpu-gomp` wheel (oneDNN 3.2, CPU only) is not a
dependency of nnfast. `OneDnnMatmul()` raises ImportError where the library is absent.
A primitive is created once per shape and layout (oneDNN JIT-compiles a kernel for it)
and reused; each call points its memory objects at the arrays (only when they moved)
and executes. Threads: oneDNN's OpenMP team, OMP_NUM_THREADS when the library loads.
"""
import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

_F32 = 3                           # dnnl_f32
_CPU = 1                           # dnnl_cpu
_IN_ORDER = 1                      # dnnl_stream_in_order
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS = 1, 17, 33
_QUERY_IMPL_INFO_STR = 8           # dnnl_query_impl_info_str
_MAX_NDIMS = 12

_Dims = ctypes.c_int64 * _MAX_NDIMS


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


def library_candidates():
    """Paths of libdnnl.so that could be loaded (none: oneDNN is not installed). Finding
    them loads nothing: a process that loaded oneDNN once keeps its OpenMP team."""
    names = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libdnnl.so*")))
    found = ctypes.util.find_library("dnnl")
    return names + ([found] if found else [])


def _load():
    for name in library_candidates():
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise ImportError("oneDNN (libdnnl.so) not found; pip install onednn-cpu-gomp")


def _ok(status, what):
    if status != 0:
        raise RuntimeError(f"oneDNN: {what} failed with status {status}")


class OneDnnMatmul:
    """c[:] = op(a) @ op(b) for float32 C-contiguous arrays, on oneDNN's matmul."""

    def __init__(self):
        self.lib = _load()
        self.engine, self.stream = ctypes.c_void_p(), ctypes.c_void_p()
        _ok(self.lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU, ctypes.c_size_t(0)),
            "engine")
        _ok(self.lib.dnnl_stream_create(ctypes.byref(self.stream), self.engine,
                                        ctypes.c_uint(_IN_ORDER)), "stream")
        self.prims = {}

    def _desc(self, rows, cols, row_stride, col_stride):
        md = ctypes.c_void_p()
        dims, strides = _Dims(rows, cols), _Dims(row_stride, col_stride)
        _ok(self.lib.dnnl_memory_desc_create_with_strides(ctypes.byref(md), 2, dims, _F32,
                                                          strides), "memory desc")
        return md

    def _memory(self, md):
        mem = ctypes.c_void_p()
        _ok(self.lib.dnnl_memory_create(ctypes.byref(mem), md, self.engine, None), "memory")
        return mem

    def _primitive(self, m, n, k, trans_a, trans_b):
        key = (m, n, k, trans_a, trans_b)
        if key not in self.prims:
            # op(a) is (m, k): a (k, m) read with strides (1, m) when transposed
            a_md = self._desc(m, k, 1, m) if trans_a else self._desc(m, k, k, 1)
            b_md = self._desc(k, n, 1, k) if trans_b else self._desc(k, n, n, 1)
            c_md = self._desc(m, n, n, 1)
            pd, prim = ctypes.c_void_p(), ctypes.c_void_p()
            _ok(self.lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), self.engine,
                                                           a_md, b_md, None, c_md, None),
                "matmul descriptor")
            _ok(self.lib.dnnl_primitive_create(ctypes.byref(prim), pd), "primitive")
            info = ctypes.c_char_p()
            _ok(self.lib.dnnl_primitive_desc_query(pd, _QUERY_IMPL_INFO_STR, 0,
                                                   ctypes.byref(info)), "query")
            mems = [self._memory(md) for md in (a_md, b_md, c_md)]
            args = (_ExecArg * 3)(_ExecArg(_ARG_SRC, mems[0]), _ExecArg(_ARG_WEIGHTS, mems[1]),
                                  _ExecArg(_ARG_DST, mems[2]))
            self.prims[key] = (prim, mems, args, info.value.decode(), [None, None, None])
        return self.prims[key]

    def implementation(self, m, n, k, trans_a=False, trans_b=False):
        """oneDNN's name of the kernel it picked for this product (e.g. brg:avx512_core)."""
        return self._primitive(m, n, k, trans_a, trans_b)[3]

    def __call__(self, c, a, b, trans_a=False, trans_b=False):
        for x in (a, b, c):
            if x.dtype != np.float32 or not x.flags.c_contiguous:
                raise TypeError("OneDnnMatmul: expected C-contiguous float32 arrays")
        m, n = c.shape
        k = a.shape[0] if trans_a else a.shape[1]
        if (b.shape[1] if trans_b else b.shape[0]) != k:
            raise ValueError(f"OneDnnMatmul: op(a) has {k} columns, op(b) does not match")
        prim, mems, args, _, bound = self._primitive(m, n, k, trans_a, trans_b)
        for i, x in enumerate((a, b, c)):
            address = x.ctypes.data
            if bound[i] != address:         # the same arrays again: no call needed
                self.lib.dnnl_memory_set_data_handle(mems[i], ctypes.c_void_p(address))
                bound[i] = address
        _ok(self.lib.dnnl_primitive_execute(prim, self.stream, 3, args), "execute")
        _ok(self.lib.dnnl_stream_wait(self.stream), "wait")
