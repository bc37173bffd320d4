"""The training step's matrix products one by one on one thread: nnfast's own float32
products (csrc/_sgemm.h, AVX-512F), nnfast's OpenBLAS sgemm, and the bfloat16 products
(csrc/_bf16.h) on this CPU's best path; where installed, also the other float32 GEMMs a
user can pip install: BLIS (`blis`, called from Python) and oneDNN's matmul
(`onednn-cpu-gomp`, through its C API: bench/_onednn.py). Neither is a dependency.
The last two are called through Python, and the line "call overhead" gives each one's
time for a 1x1x1 product, part of every row of theirs.

The shapes are those of workload W's step (784-256-128-10) on a team of two: each
thread's half of each product, cut as csrc/_step.pyx cuts them (the forward products by
output columns below a batch of twice the layer's width, else by rows; dW and dX by
input units), though the step leaves its smallest products whole. Each contender runs `--repeat` blocks of calls in turn, the contenders
alternated block by block; the table gives the median microseconds per call and the
GFLOP/s of that median. Results are first checked against float64 (float32: 1e-4
relative to the sum of |terms|; bfloat16: 1e-2).

    python bench/bench_products.py                 # batch 32,128,512
    python bench/bench_products.py --batch 32 --repeat 31
    python bench/bench_products.py --quick         # smoke test (CI)
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def step_shapes(n):
    """(name, m, n, k, trans_a, trans_b) of one thread's products in W's step, batch n."""
    rows = n >= 2 * 256                       # _forward_by_rows for L0 (256 outputs)
    shapes = [("fwd L0", n // 2 if rows else n, 256 if rows else 128, 784, False, False),
              ("fwd L1", n // 2 if n >= 256 else n, 128 if n >= 256 else 64, 256, False, False),
              ("fwd L2", n, 10, 128, False, False),
              ("dW L0", 392, 256, n, True, False),
              ("dW L1", 128, 128, n, True, False),
              ("dW L2", 64, 10, n, True, False),
              ("dX L1", n, 128, 128, False, True),
              ("dX L2", n, 64, 10, False, True)]
    return shapes


def contenders(with_others=True):
    from nnfast import _kernels as K
    out = {}
    if "avx512f" in K.f32_paths():
        out["nnfast f32"] = lambda c, a, b, ta, tb: K.gemm_f32(c, a, b, ta, tb)
    out["OpenBLAS sgemm"] = lambda c, a, b, ta, tb: K.gemm(c, a, b, ta, tb)
    out["nnfast bf16"] = lambda c, a, b, ta, tb: K.gemm_bf16(c, a, b, ta, tb)
    if with_others:
        out.update(other_gemms())
    return out


def other_gemms():
    """BLIS and oneDNN float32 products where their wheels are installed (one thread)."""
    out = {}
    try:
        import blis.py
        out["BLIS sgemm"] = lambda c, a, b, ta, tb: blis.py.gemm(
            a, b, out=c, trans1=ta, trans2=tb, alpha=1.0, beta=0.0)
    except ImportError:
        pass
    try:
        import _onednn
        out["oneDNN matmul"] = _onednn.OneDnnMatmul()
    except ImportError:
        pass
    return out


def call_overhead(fns, block_s):
    """Median microseconds of a 1x1x1 product per contender: what a call costs."""
    a, b, c = (np.ones((1, 1), np.float32) for _ in range(3))
    out = {}
    for name, fn in fns.items():
        times = []
        for _ in range(5):
            t0, calls = time.perf_counter(), 0
            while time.perf_counter() - t0 < block_s:
                fn(c, a, b, False, False)
                calls += 1
            times.append((time.perf_counter() - t0) / calls)
        out[name] = float(np.median(times))
    return out


def check(fns, m, n, k, ta, tb, rng):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    op_a = (a.T if ta else a).astype(np.float64)
    op_b = (b.T if tb else b).astype(np.float64)
    ref, scale = op_a @ op_b, np.abs(op_a) @ np.abs(op_b)
    for name, fn in fns.items():
        c = np.full((m, n), np.nan, np.float32)
        fn(c, a, b, ta, tb)
        tol = 1e-2 if "bf16" in name else 1e-4
        if not np.all(np.abs(c - ref) <= tol * scale + 1e-30):
            raise SystemExit(f"{name} differs from float64 at {m}x{n}x{k}")
    return a, b


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="32,128,512")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--block-s", type=float, default=0.02)
    p.add_argument("--quick", action="store_true", help="batch 128, few blocks")
    p.add_argument("--no-others", action="store_true",
                   help="leave out BLIS and oneDNN even where installed")
    args = p.parse_args(argv)
    _common.reexec_without_slowing_vars()
    os.environ["OMP_NUM_THREADS"] = "1"          # oneDNN's OpenMP team: one thread
    if args.quick:
        args.batch, args.repeat, args.block_s = "128", 3, 0.005
    import nnfast as nf
    from nnfast import _kernels as K
    nf.set_num_threads(1)
    K.set_blas_threads(1)
    print("\n".join(_common.environment_report()))
    rng = np.random.default_rng(0)
    fns = contenders(not args.no_others)
    names = list(fns)
    header = ["batch", "product", "m x n x k"] + [f"{c} us" for c in names] + [
        f"{c} GF/s" for c in names]
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        for label, m, n, k, ta, tb in step_shapes(batch):
            a, b = check(fns, m, n, k, ta, tb, rng)
            c = np.empty((m, n), np.float32)
            calls = {}
            for name, fn in fns.items():       # calls per block, from one warm timing
                fn(c, a, b, ta, tb)
                t0 = time.perf_counter()
                fn(c, a, b, ta, tb)
                calls[name] = max(1, int(args.block_s / max(time.perf_counter() - t0, 1e-7)))
            times = {name: [] for name in names}
            for _ in range(args.repeat):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    for _ in range(calls[name]):
                        fn(c, a, b, ta, tb)
                    times[name].append((time.perf_counter() - t0) / calls[name])
            med = {name: float(np.median(times[name])) for name in names}
            flops = 2.0 * m * n * k
            rows.append([batch, label, f"{m}x{n}x{k}"]
                        + [f"{med[c] * 1e6:.1f}" for c in names]
                        + [f"{flops / med[c] / 1e9:.1f}" for c in names])
    overhead = call_overhead(fns, args.block_s)
    rows.append(["-", "call overhead", "1x1x1"] + [f"{overhead[c] * 1e6:.1f}" for c in names]
                + ["-" for _ in names])
    print(f"\none thread; median of {args.repeat} alternated blocks per contender\n")
    _common.print_table(header, rows)
    if "oneDNN matmul" in fns:
        dnnl = fns["oneDNN matmul"]
        picked = sorted({dnnl.implementation(*shape) for shape in dnnl.prims})
        print(f"\noneDNN kernels: {', '.join(picked)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
