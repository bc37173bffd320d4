"""Each compiled kernel against its pure-NumPy twin, at the shapes of workload W.

W's network is 784-256-128-10 (layers L0 784->256, L1 256->128, L2 128->10). Forward and
parameter-gradient kernels run at L0's shapes (the largest GEMM), the input gradient and
the activation backward at L1's (the first layer that needs them), the loss kernels at the
output (batch, 10), gather_rows draws random rows of a 60000x784 array (one epoch's
shuffled batches in turn, so rows come from memory as in training), and the optimizers
update a flat buffer of 235146 entries (the whole network; Adam at a mid-training state).
The shape column says which. "numpy" is the twin of the same name in nnfast.reference.

First every kernel's output is checked against its twin on the same inputs, in one
process (rtol 1e-5 float32, 1e-12 float64, absolute floor rtol * max|twin| for entries
that are ~0); any difference stops the run with exit status 1. Then nnfast's kernels are
timed in one worker process and the twins in another (NumPy and nnfast load two OpenBLAS
copies that must not alternate in one process): per kernel a warm-up, then `--repeat`
blocks of many calls, each timed with time.perf_counter; median and min microseconds per
call over the blocks. Times include the Python call of the kernel.

    python bench/bench_kernels.py                          # batch 128, float32 and float64
    python bench/bench_kernels.py --batch 32,512 --dtype float32 --repeat 30
    python bench/bench_kernels.py --quick                  # smoke test (CI): float32, few blocks

Sample output (2-core AMD EPYC Zen 5, shared and noisy, 2026-11-29; `--batch 128 --dtype
float32,float64`, 2 threads, 20 blocks of 20 ms; the check passed):

    kernel                                        shape    dtype  nnfast median us  nnfast min us  numpy median us  speedup
    ------------------------  -------------------------  -------  ----------------  -------------  ---------------  -------
    dense_forward relu         L0 x(128,784) w(784,256)  float32             141.7          140.1            159.4     1.12
    dense_forward tanh         L0 x(128,784) w(784,256)  float32             579.9          571.8            150.2     0.26
    dense_forward sigmoid      L0 x(128,784) w(784,256)  float32             315.9          314.0            199.5     0.63
    dense_forward softmax      L0 x(128,784) w(784,256)  float32             260.6          259.4            189.6     0.73
    dense_forward softmax       L2 x(128,128) w(128,10)  float32              8.01           7.91             16.7     2.08
    activation_backward relu          L1 da,a (128,256)  float32              2.24           2.22             41.8    18.64
    activation_backward tanh          L1 da,a (128,256)  float32              2.12           2.11             8.12     3.83
    linear_backward_params    L0 x(128,784) dz(128,256)  float32             117.9          116.7            135.1     1.15
    linear_backward_input     L1 dz(128,128) w(256,128)  float32              25.6           25.3             29.6     1.16
    softmax_xent_backward               L2 z,y (128,10)  float32              9.96           9.89             16.7     1.67
    sigmoid_bce_backward                L2 z,y (128,10)  float32              19.4           19.2             13.4     0.69
    squared_error_backward              L2 z,y (128,10)  float32              1.21           1.19             3.32     2.75
    gather_rows                  X(60000,784)[128 rand]  float32              31.1           29.8             40.5     1.30
    adam_update                     flat (235146,) t=10  float32              42.7           42.2            293.9     6.88
    sgd_update momentum 0.9              flat (235146,)  float32              28.5           28.1            121.1     4.25
    dense_forward relu         L0 x(128,784) w(784,256)  float64             300.3          295.2            319.7     1.06
    dense_forward tanh         L0 x(128,784) w(784,256)  float64             733.7          723.5            331.8     0.45
    dense_forward sigmoid      L0 x(128,784) w(784,256)  float64             476.3          470.4            378.2     0.79
    dense_forward softmax      L0 x(128,784) w(784,256)  float64             410.3          407.5            365.5     0.89
    dense_forward softmax       L2 x(128,128) w(128,10)  float64              10.2           10.1             17.5     1.73
    activation_backward relu          L1 da,a (128,256)  float64              5.55           5.51             35.7     6.43
    activation_backward tanh          L1 da,a (128,256)  float64              4.90           4.85             18.4     3.76
    linear_backward_params    L0 x(128,784) dz(128,256)  float64             290.4          285.8            312.4     1.08
    linear_backward_input     L1 dz(128,128) w(256,128)  float64              53.5           52.7             50.8     0.95
    softmax_xent_backward               L2 z,y (128,10)  float64              11.6           11.5             16.0     1.37
    sigmoid_bce_backward                L2 z,y (128,10)  float64              18.5           18.3             15.4     0.83
    squared_error_backward              L2 z,y (128,10)  float64              1.05           1.05             3.13     2.97
    gather_rows                  X(60000,784)[128 rand]  float64              57.0           53.9             79.8     1.40
    adam_update                     flat (235146,) t=10  float64             105.4          103.3             2063    19.58
    sgd_update momentum 0.9              flat (235146,)  float64              49.2           48.7             1580    32.12
    ...
    cores kept busy by other processes while timing: nnfast float32 batch 128 0.01, ...

Reading it: the GEMM-bound kernels are within ~15 % of NumPy (same OpenBLAS kernels;
nnfast saves the separate bias / activation passes). nnfast's tanh, sigmoid and softmax
forward are slower than NumPy: their loops call scalar libm tanhf / expf per element
(~13 ns for tanhf) where NumPy's ufuncs are SIMD; sigmoid_bce_backward likewise. The
float64 NumPy optimizers are slow mostly through page faults: glibc hands the large
temporaries back to the kernel after each call (with MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ at 268435456, NumPy's float64 Adam takes ~0.73 ms, SGD ~0.26 ms).
If another process keeps a core busy, a 2-thread GEMM waits whole scheduler ticks (4-32 ms
per call instead of 0.1-0.3 ms): check the "cores kept busy" line, or use --threads 1.
"""
import argparse
import itertools
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SIZES = [784, 256, 128, 10]
N_TRAIN = 60000                                   # rows of the gathered array
N_PARAMS = sum(i * o + o for i, o in zip(SIZES, SIZES[1:]))          # 235146
N_WEIGHTS = sum(i * o for i, o in zip(SIZES, SIZES[1:]))             # 234752
RTOL = {"float32": 1e-5, "float64": 1e-12}
ADAM = dict(t=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4)
SGD = dict(lr=1e-3, momentum=0.9, nesterov=False, weight_decay=1e-4)


# ------------------------------------------------------------------ inputs and cases

def make_inputs(batch, dtype, seed=0):
    """Read-only inputs shared by nnfast and the twin (same seed: same values)."""
    rng = np.random.default_rng(seed)

    def normal(shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    B, (n0, n1, n2, n3) = batch, SIZES
    z1 = normal((B, n1))
    y_class = rng.integers(0, n3, B)
    inp = {
        "x0": rng.random((B, n0)).astype(dtype),                  # pixels in [0, 1)
        "w0": normal((n0, n1), np.sqrt(2 / n0)), "b0": normal(n1, 0.1),
        "x2": np.maximum(normal((B, n2)), 0),                     # ReLU output of L1
        "w2": normal((n2, n3), np.sqrt(1 / n2)), "b2": normal(n3, 0.1),
        "w1": normal((n1, n2), np.sqrt(2 / n1)),
        "a1_relu": np.maximum(z1, 0), "a1_tanh": np.tanh(z1),     # saved post-activations
        "da1": normal((B, n1)),
        "dz0": normal((B, n1)), "dz1": normal((B, n2)),
        "z": normal((B, n3), 2.0),                                # logits
        "y_onehot": np.eye(n3, dtype=dtype)[y_class],
        "y_binary": (rng.random((B, n3)) > 0.5).astype(dtype),
        "y_real": normal((B, n3)),
        "X": rng.random((N_TRAIN, n0), dtype=np.float32 if dtype == np.float32 else np.float64),
        "order": rng.permutation(N_TRAIN)[:N_TRAIN // B * B].reshape(-1, B).astype(np.intp),
        # optimizer state: gradient, parameters, Adam moments, SGD velocity
        "g": normal(N_PARAMS, 0.01), "p": normal(N_PARAMS, 0.05),
        "m": normal(N_PARAMS, 0.005), "v": np.square(normal(N_PARAMS, 0.01)),
        "vel": normal(N_PARAMS, 0.05),
    }
    for a in inp.values():
        a.flags.writeable = False
    return inp


class Case:
    """One kernel call: fn(*args) writes `outs`, [(name, array)] (fresh arrays, one set per
    contender)."""

    def __init__(self, kernel, shape, fn, args, outs):
        self.kernel, self.shape, self.fn, self.args, self.outs = kernel, shape, fn, args, outs


def make_cases(inp, which):
    """The benchmarked calls, with nnfast's kernels (which="nnfast") or their twins."""
    from nnfast import _kernels as K
    if which == "nnfast":
        from nnfast import _kernels as kern
        from nnfast import _optim as optim
    else:
        from nnfast import reference as kern
        optim = kern
    dt = inp["x0"].dtype
    B = inp["x0"].shape[0]
    n0, n1, n2, n3 = SIZES
    cases = []

    def add(kernel, shape, fn, args, outs):
        cases.append(Case(kernel, shape, fn, args, outs))

    for name, code in (("relu", K.ACT_RELU), ("tanh", K.ACT_TANH),
                       ("sigmoid", K.ACT_SIGMOID), ("softmax", K.ACT_SOFTMAX)):
        a = np.empty((B, n1), dt)
        add(f"dense_forward {name}", f"L0 x({B},{n0}) w({n0},{n1})", kern.dense_forward,
            (a, inp["x0"], inp["w0"], inp["b0"], code), [("a", a)])
    a = np.empty((B, n3), dt)
    add("dense_forward softmax", f"L2 x({B},{n2}) w({n2},{n3})", kern.dense_forward,
        (a, inp["x2"], inp["w2"], inp["b2"], K.ACT_SOFTMAX), [("a", a)])
    for name, code in (("relu", K.ACT_RELU), ("tanh", K.ACT_TANH)):
        dz = np.empty((B, n1), dt)
        add(f"activation_backward {name}", f"L1 da,a ({B},{n1})", kern.activation_backward,
            (dz, inp["da1"], inp[f"a1_{name}"], code), [("dz", dz)])
    dw, db = np.empty((n0, n1), dt), np.empty(n1, dt)
    add("linear_backward_params", f"L0 x({B},{n0}) dz({B},{n1})",
        kern.linear_backward_params, (dw, db, inp["dz0"], inp["x0"], 1.0 / B),
        [("dw", dw), ("db", db)])
    dx = np.empty((B, n1), dt)
    add("linear_backward_input", f"L1 dz({B},{n2}) w({n1},{n2})",
        kern.linear_backward_input, (dx, inp["dz1"], inp["w1"]), [("dx", dx)])
    for name, y in (("softmax_xent_backward", "y_onehot"), ("sigmoid_bce_backward", "y_binary"),
                    ("squared_error_backward", "y_real")):
        dz = np.empty((B, n3), dt)
        add(name, f"L2 z,y ({B},{n3})", getattr(kern, name), (dz, inp["z"], inp[y]),
            [("dz", dz)])

    out = np.empty((B, n0), dt)
    batches = itertools.cycle(inp["order"])       # a new shuffled batch at every call
    gather = kern.gather_rows

    def gather_next(out, X):
        gather(out, X, next(batches))
    add("gather_rows", f"X({N_TRAIN},{n0})[{B} rand]", gather_next, (out, inp["X"]),
        [("out", out)])

    p, m, v = inp["p"].copy(), inp["m"].copy(), inp["v"].copy()
    h = ADAM
    add("adam_update", f"flat ({N_PARAMS},) t={h['t']}", optim.adam_update,
        (p, m, v, inp["g"], h["t"], h["lr"], h["beta1"], h["beta2"], h["eps"],
         h["weight_decay"], N_WEIGHTS), [("params", p), ("m", m), ("v", v)])
    p, vel = inp["p"].copy(), inp["vel"].copy()
    h = SGD
    add(f"sgd_update momentum {h['momentum']}", f"flat ({N_PARAMS},)", optim.sgd_update,
        (p, vel, inp["g"], h["lr"], h["momentum"], h["nesterov"], h["weight_decay"],
         N_WEIGHTS), [("params", p), ("velocity", vel)])
    return cases


# ------------------------------------------------------------------ workers

def compare(got, want, rtol):
    """(worst |got - want| / (rtol * (|want| + max|want|)), max abs difference)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.abs(want).max(initial=0.0))
    err = np.abs(got - want)
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return float("inf"), float("nan")
    bound = rtol * (np.abs(want) + scale)
    ratio = np.divide(err, bound, out=np.where(err > 0, np.inf, 0.0), where=bound > 0)
    return float(ratio.max(initial=0.0)), float(err.max(initial=0.0))


def worker_check(dtypes, batches):
    """Every kernel once, nnfast and its twin on the same inputs, in this one process."""
    rows = []
    for dtype in dtypes:
        for batch in batches:
            inp = make_inputs(batch, np.dtype(dtype).type)
            ours, twins = make_cases(inp, "nnfast"), make_cases(inp, "numpy")
            for c, r in zip(ours, twins):
                got, want = c.fn(*c.args), r.fn(*r.args)
                pairs = [(name, o, t) for (name, o), (_, t) in zip(c.outs, r.outs)]
                if want is not None or got is not None:
                    pairs.append(("return value", got, want))
                for what, o, t in pairs:
                    ratio, err = compare(o, t, RTOL[dtype])
                    rows.append({"kernel": c.kernel, "shape": c.shape, "dtype": dtype,
                                 "what": what, "ratio": ratio, "err": err})
    return {"rows": rows}


def time_calls(fn, args, repeat, block_s):
    """Warm up, then `repeat` blocks of n calls; seconds per call of each block, and n."""
    t0 = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - t0 < block_s:          # warm-up, estimate
        fn(*args)
        calls += 1
    n = max(1, round(block_s * calls / (time.perf_counter() - t0)))
    per_call = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(*args)
        per_call.append((time.perf_counter() - t0) / n)
    return per_call, n


def worker_time(which, dtype, batch, repeat, block_s, threads):
    import nnfast as nf
    from nnfast import _kernels
    nf.set_num_threads(threads)
    # The single kernels call nnfast's BLAS directly, outside the team (which keeps it
    # single-threaded): give it the threads here, as NumPy's get OPENBLAS_NUM_THREADS.
    _kernels.set_blas_threads(threads)
    inp = make_inputs(batch, np.dtype(dtype).type)
    rows = []
    for c in make_cases(inp, which):
        per_call, n = time_calls(c.fn, c.args, repeat, block_s)
        rows.append({"kernel": c.kernel, "shape": c.shape, "us": [s * 1e6 for s in per_call],
                     "calls": n})
    return {"rows": rows, "blas": _common.blas_report()}


def worker_main(args):
    if args.role == "check":
        out = worker_check(args.dtype.split(","), [int(b) for b in args.batch.split(",")])
    else:
        out = worker_time(args.role, args.dtype, int(args.batch), args.repeat,
                          args.block_ms / 1000, args.threads)
    _common.emit(out)


# ------------------------------------------------------------------ driver

def run_check(script, dtypes, batches):
    """The correctness worker, with 1 BLAS thread (both copies run in that process)."""
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        res = _common.run_worker(script, ["--role", "check", "--dtype", ",".join(dtypes),
                                          "--batch", ",".join(map(str, batches))])
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved
    return res["rows"]


def _busy_cpu_s():
    """Seconds of CPU time used by every process on the machine so far (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # minus idle, iowait


def timed_worker(script, args):
    """run_worker, plus the cores other processes kept busy meanwhile (None if unknown)."""
    busy0, t0 = _busy_cpu_s(), time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = _common.run_worker(script, args)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, wall = _busy_cpu_s(), time.perf_counter() - t0
    if busy0 is None or busy1 is None:
        return res, None
    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return res, max(0.0, (busy1 - busy0 - ours) / wall)


def fmt_us(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="128", help="batch sizes, comma-separated (default 128)")
    p.add_argument("--dtype", default="float32,float64", help="dtypes (default both)")
    p.add_argument("--repeat", type=int, default=20, help="timed blocks per kernel (default 20)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="BLAS threads of both contenders (default: all cores)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: float32, batch 128, 3 short blocks per kernel")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--block-ms", type=float, default=20.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.batch, args.dtype, args.repeat, args.block_ms = "128", "float32", 3, 4.0
    dtypes = [d for d in args.dtype.split(",") if d]
    batches = [int(b) for b in args.batch.split(",") if b]
    for d in dtypes:
        if d not in RTOL:
            p.error(f"--dtype: {d!r} is not float32 or float64")
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    print("\n".join(_common.environment_report()))
    print(f"network {'-'.join(map(str, SIZES))}: L0 {SIZES[0]}->{SIZES[1]}, "
          f"L1 {SIZES[1]}->{SIZES[2]}, L2 {SIZES[2]}->{SIZES[3]}; {args.threads} BLAS threads; "
          f"per kernel a warm-up, then {args.repeat} blocks of ~{args.block_ms:g} ms\n")

    # (1) correctness, one process: every kernel against its twin on the same inputs.
    checks = run_check(__file__, dtypes, batches)
    bad = [r for r in checks if not r["ratio"] <= 1.0]
    if bad:
        for r in bad:
            print(f"DIFFERS: {r['kernel']} [{r['shape']}] {r['dtype']} {r['what']}: max abs "
                  f"diff {r['err']:.3g} = {r['ratio']:.3g} x tolerance", file=sys.stderr)
        raise SystemExit(f"nnfast differs from nnfast.reference in {len(bad)} output(s); "
                         "no timings")
    worst = max(checks, key=lambda r: r["ratio"])
    n_kernels = len({r["kernel"] for r in checks})
    print(f"check: {n_kernels} kernels x {len(dtypes)} dtype(s) x {len(batches)} batch(es) "
          f"agree with nnfast.reference (worst: {worst['kernel']} {worst['dtype']} "
          f"{worst['what']} at {worst['ratio']:.2f} x tolerance)\n")

    # (2) timings: each contender in its own process.
    rows, blas, others = [], {}, []
    for dtype in dtypes:
        for batch in batches:
            res = {}
            for which in ("nnfast", "numpy"):
                out, busy = timed_worker(__file__, [
                    "--role", which, "--dtype", dtype, "--batch", str(batch),
                    "--repeat", str(args.repeat), "--block-ms", str(args.block_ms),
                    "--threads", str(args.threads)])
                res[which] = out["rows"]
                blas.setdefault(which, out["blas"])
                if busy is not None:
                    others.append((f"{which} {dtype} batch {batch}", busy))
            for ours, twin in zip(res["nnfast"], res["numpy"]):
                med, lo, _ = _common.summarize(ours["us"])
                tmed = _common.summarize(twin["us"])[0]
                rows.append([ours["kernel"], ours["shape"], dtype, fmt_us(med), fmt_us(lo),
                             fmt_us(tmed), f"{tmed / med:.2f}"])

    # (3) one table.
    _common.print_table(["kernel", "shape", "dtype", "nnfast median us", "nnfast min us",
                         "numpy median us", "speedup"], rows)
    for which in ("nnfast", "numpy"):
        print(f"\nBLAS in the {which} worker: " + "; ".join(blas.get(which, [])), end="")
    print()
    if others:
        # Other processes on the same cores stall BLAS threads for whole scheduler ticks.
        print("cores kept busy by other processes while timing: "
              + ", ".join(f"{what} {busy:.2f}" for what, busy in others))
        if max(busy for _, busy in others) > 0.2:
            print("(a busy machine: these times are inflated; rerun for clean numbers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
