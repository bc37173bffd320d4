"""The epoch benchmark behind `nnfast bench`: one training epoch of nnfast next to its
GEMM floor, on synthetic data, in one process.

Workload: MLP 784-256-128-10, ReLU, softmax cross-entropy, Adam lr 1e-3, shuffled
mini-batches; inputs uniform in [0, 1), 10 random classes. The GEMM floor is the 8 matrix
products of every step alone (3 forward, 3 dW, 2 dX) into preallocated outputs, through
nnfast's own BLAS (`nnfast._kernels.gemm`); "x floor" is nnfast's median epoch over the
floor's. Everything above 1.00 is overhead: bias, activations, loss, optimizer, gather,
Python. Each timing is one warm-up epoch, then `repeat` timed epochs (`time.perf_counter`;
for nnfast `History.epoch_time`).

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE force slower OpenBLAS kernels and are read when
OpenBLAS loads: `nnfast bench` reruns itself without them (see `clean_rerun`).

For the full comparison (Fashion-MNIST, pure NumPy, PyTorch, JAX, one process per
contender), run `python -m bench` in a source checkout of nnfast.

Consistency: a row is inconsistent when nnfast is faster than its own GEMM floor by more
than the noise (NOISE), when a larger batch has a higher floor than a smaller one (the
floor falls with the batch size), or when the epochs of a row spread widely (MAX_SPREAD).
Those rows are measured again, at most REMEASURE times; rows still inconsistent then are
reported on "unreliable: the machine was busy" lines (see `inconsistencies`).

Sample output (`nnfast bench --full` on a 2-core AMD EPYC Zen 5; its first row. The
timings of a shared machine vary: compare within one run.):

    batch    dtype  steps  floor s  nnfast s   min s   max s  x floor
    -----  -------  -----  -------  --------  ------  ------  -------
       32  float32   1875    0.241     0.263   0.260   0.272     1.09
       ...
"""
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

SIZES = (784, 256, 128, 10)
SLOWING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
QUICK = {"batch": [32, 128, 512], "dtype": ["float32"], "samples": 12000, "repeat": 5}
FULL = {"batch": [32, 128, 512], "dtype": ["float32", "float64"], "samples": 60000,
        "repeat": 5}
HEADER = ("batch", "dtype", "steps", "floor s", "nnfast s", "min s", "max s", "x floor")
WIDTHS = (5, 7, 5, 7, 8, 6, 6, 7)
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
PAUSE = 0.2                  # s; idle OpenBLAS threads spin ~0.1 s (its thread timeout)
NOISE = 0.10                 # relative timing differences up to this are noise
MAX_SPREAD = 0.25            # (max - min) / median of a row's epochs above this: disturbed
REMEASURE = 2                # re-measurements of inconsistent rows, at most


# ------------------------------------------------------------------ environment

def slowing_vars_set():
    """The variables of SLOWING_VARS set now, unless NNFAST_BENCH_KEEP_ENV=1."""
    if os.environ.get("NNFAST_BENCH_KEEP_ENV") == "1":
        return []
    return [k for k in SLOWING_VARS if k in os.environ]


def clean_env():
    """os.environ without SLOWING_VARS, noting what was removed in NNFAST_BENCH_UNSET."""
    env = {k: v for k, v in os.environ.items() if k not in SLOWING_VARS}
    env["NNFAST_BENCH_UNSET"] = ",".join(f"{k}={os.environ[k]}" for k in slowing_vars_set())
    return env


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), or "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def clean_rerun(argv):
    """Run `nnfast <argv>` in a child process without SLOWING_VARS; return its exit code.

    The child imports the same nnfast as this process (its folder goes first on the path,
    so a source tree in the working directory cannot shadow it), and inherits stdout.
    """
    env = clean_env()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {here!r}); from nnfast.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode


def blas_lines():
    """One line per BLAS / OpenMP library loaded in this process (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["BLAS kernel: unknown (pip install threadpoolctl, or nnfast[bench])"]
    return [f"{pool.get('internal_api')} {pool.get('version')} "
            f"kernel={pool.get('architecture')} threads={pool.get('num_threads')} "
            f"{os.path.basename(pool.get('filepath', ''))}" for pool in threadpool_info()]


def environment_lines():
    """Versions, machine, OpenBLAS/OpenMP variables, threads and BLAS kernels."""
    import nnfast as nf
    lines = [f"python {platform.python_version()}  numpy {np.__version__}  nnfast "
             f"{nf.__version__}  {platform.machine()}  {os.cpu_count()} cpus",
             f"cpu: {cpu_model()}"]
    unset = os.environ.get("NNFAST_BENCH_UNSET")
    if unset:
        lines.append(f"unset for this benchmark: {unset}")
    env = sorted((k, v) for k, v in os.environ.items()
                 if k.startswith(("OMP_", "OPENBLAS_", "MKL_")))
    lines.append("env: " + (" ".join(f"{k}={v}" for k, v in env) or "(none)"))
    lines.append(f"nnfast BLAS threads: {nf.get_num_threads()}")
    from ._precision import bf16_path, matmul_description
    lines.append(f"float32 matmul path (float32 networks): "
                 f"{matmul_description('float32')}")
    lines.append(f"bfloat16 matmul path (matmul_precision='bfloat16'): {bf16_path()[0]}")
    return lines + blas_lines()


# ------------------------------------------------------------------ measurements

def synthetic_data(n, dtype, seed=0):
    """(X, y): n samples of SIZES[0] features uniform in [0, 1), labels in [0, SIZES[-1])."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, SIZES[0]), dtype=np.float32).astype(dtype, copy=False)
    return np.ascontiguousarray(X), rng.integers(0, SIZES[-1], n)


def check_against_numpy(dtype, X, y, rows=64):
    """RuntimeError unless nnfast's loss and gradient on X[:rows] match pure NumPy's."""
    import nnfast as nf
    from nnfast.reference import ReferenceNetwork
    net = nf.Network(list(SIZES), dtype=dtype, seed=0)
    Xb, yb = X[:rows], y[:rows]
    loss, grads = net.loss_and_grads(Xb, yb)
    ref_loss, ref_grad = ReferenceNetwork.from_network(net).loss_and_grads(
        Xb, net._Y(yb, Xb.shape[0]))
    flat = np.concatenate([w.ravel() for w, _ in grads] + [b.ravel() for _, b in grads])
    err = np.abs(flat - ref_grad).max() / max(np.abs(ref_grad).max(), 1e-30)
    tol = TOLERANCE[np.dtype(dtype).name]
    if abs(loss - ref_loss) > tol * max(1.0, abs(ref_loss)) or err > tol:
        raise RuntimeError(f"nnfast differs from NumPy ({np.dtype(dtype).name}): loss {loss} "
                           f"vs {ref_loss}, gradient relative error {err:.2e}")


def floor_epochs(X, batch, repeat):
    """Seconds of `repeat` epochs of the 8 matrix products of every step, after a warm-up."""
    from nnfast import _kernels
    n, dtype = X.shape[0], X.dtype
    rows = min(batch, n)
    rng = np.random.default_rng(0)
    W = [(rng.standard_normal((i, o)) * 0.05).astype(dtype) for i, o in zip(SIZES, SIZES[1:])]
    dW = [np.empty_like(w) for w in W]
    A = [np.ascontiguousarray(X[:rows])] + [rng.random((rows, s)).astype(dtype)
                                             for s in SIZES[1:]]
    D = [None] + [rng.standard_normal((rows, s)).astype(dtype) for s in SIZES[1:]]
    bounds = [(s, min(s + rows, n)) for s in range(0, n, rows)]

    def epoch():
        for s, e in bounds:
            m = e - s
            for l in range(3):                              # forward: A[l+1] := A[l] @ W[l]
                _kernels.gemm(A[l + 1][:m], A[l][:m], W[l])
            for l in (2, 1, 0):                             # dW[l] := A[l].T @ D[l+1]
                _kernels.gemm(dW[l], A[l][:m], D[l + 1][:m], True, False)
                if l > 0:                                   # D[l] := D[l+1] @ W[l].T
                    _kernels.gemm(D[l][:m], D[l + 1][:m], W[l], False, True)

    import nnfast as nf
    # The floor is one BLAS call per product, with all of nnfast's threads on it (outside
    # the team, nnfast's BLAS is otherwise kept single-threaded).
    _kernels.set_blas_threads(nf.get_num_threads())
    try:
        times = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            epoch()
            times.append(time.perf_counter() - t0)
    finally:
        _kernels.set_blas_threads(1)
    return times[1:]


def nnfast_epochs(X, y, batch, repeat, seed=0):
    """Seconds of `repeat` training epochs of nnfast (History.epoch_time), after a warm-up."""
    import nnfast as nf
    net = nf.Network(list(SIZES), hidden="relu", output="softmax", dtype=X.dtype, seed=seed)
    opt = nf.Adam(lr=1e-3)
    net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, verbose=False)
    return net.fit(X, y, epochs=repeat, batch_size=batch, optimizer=opt,
                   verbose=False).epoch_time


def format_row(cells):
    """Cells right-aligned in the columns of HEADER."""
    return "  ".join(str(c).rjust(w) for c, w in zip(cells, WIDTHS))


def spread(times):
    """(max - min) / median of epoch times: 0 for one epoch."""
    return (max(times) - min(times)) / statistics.median(times)


def inconsistencies(rows, noise=NOISE, max_spread=MAX_SPREAD):
    """The rows whose timings contradict each other or themselves.

    Parameters
    ----------
    rows : list of dict with batch, dtype, floor, nnfast (median seconds) and
        floor_spread, nnfast_spread (see `spread`)
    noise : float, relative differences up to this are not held against a row
    max_spread : float, a larger spread of a row's epochs marks it

    Returns
    -------
    dict {row index: [reason, ...]}, empty when every row is consistent: nnfast no
    faster than its floor beyond the noise, the floor not rising with the batch size
    (both rows of such a pair are marked), spreads at most max_spread.
    """
    issues = {}

    def mark(i, reason):
        issues.setdefault(i, []).append(reason)

    for i, r in enumerate(rows):
        if r["nnfast"] < r["floor"] * (1 - noise):
            mark(i, f"nnfast {r['nnfast']:.3f} s is faster than its GEMM floor "
                    f"{r['floor']:.3f} s")
        for what in ("floor", "nnfast"):
            if r[f"{what}_spread"] > max_spread:
                mark(i, f"{what} epochs spread {r[what + '_spread']:.0%} around their median")
    for i, small in enumerate(rows):
        for j, large in enumerate(rows):
            if (small["dtype"] == large["dtype"] and small["batch"] < large["batch"]
                    and large["floor"] > small["floor"] * (1 + noise)):
                reason = (f"GEMM floor of batch {large['batch']} ({large['floor']:.3f} s) is "
                          f"above batch {small['batch']}'s ({small['floor']:.3f} s)")
                mark(i, reason)
                mark(j, reason)
    return issues


def measure(X, y, batch, repeat):
    """One row: the GEMM floor's and nnfast's epochs on (X, y) at `batch`, medians and
    spreads, each block starting with the other's BLAS threads asleep."""
    time.sleep(PAUSE)
    floor = floor_epochs(X, batch, repeat)
    time.sleep(PAUSE)
    times = nnfast_epochs(X, y, batch, repeat)
    med = statistics.median(times)
    return {"batch": batch, "dtype": np.dtype(X.dtype).name, "floor": statistics.median(floor),
            "nnfast": med, "min": min(times), "max": max(times),
            "ratio": med / statistics.median(floor), "floor_spread": spread(floor),
            "nnfast_spread": spread(times), "steps": -(-X.shape[0] // min(batch, X.shape[0]))}


def _row_cells(r):
    return [r["batch"], r["dtype"], r["steps"], f"{r['floor']:.3f}", f"{r['nnfast']:.3f}",
            f"{r['min']:.3f}", f"{r['max']:.3f}", f"{r['ratio']:.2f}"]


def run(batches, dtypes, samples, repeat, out=print):
    """Check, then time every (dtype, batch); print the table row by row with `out`;
    measure inconsistent rows again (at most REMEASURE times) and say which stay so.

    Returns
    -------
    list of dict, one per row: batch, dtype, floor, nnfast (medians, s), ratio, min, max,
    spreads, and "unreliable": the reasons (a list, empty when the row is consistent)
    """
    data = {d: synthetic_data(samples, np.dtype(d).type) for d in dtypes}
    for d in dtypes:
        check_against_numpy(np.dtype(d).type, *data[d])
    out(f"workload: {'-'.join(map(str, SIZES))}, relu, softmax-CE, Adam 1e-3, {samples} "
        f"synthetic samples, {repeat} timed epoch{'s' if repeat > 1 else ''} after 1 warm-up; "
        "nnfast's loss and "
        f"gradient checked against NumPy\n")
    out(format_row(HEADER))
    out(format_row(["-" * w for w in WIDTHS]))
    results = []
    for d in dtypes:
        for batch in batches:
            results.append(measure(*data[d], batch, repeat))
            out(format_row(_row_cells(results[-1])))
    for attempt in range(1, REMEASURE + 1):
        issues = inconsistencies(results)
        if not issues:
            break
        out(f"inconsistent timings, measuring {len(issues)} row"
            f"{'s' if len(issues) > 1 else ''} again ({attempt} of {REMEASURE}; "
            "these replace the rows above):")
        for i in sorted(issues):
            results[i] = measure(*data[results[i]["dtype"]], results[i]["batch"], repeat)
            out(format_row(_row_cells(results[i])))
    issues = inconsistencies(results)
    for i, r in enumerate(results):
        r["unreliable"] = issues.get(i, [])
        if r["unreliable"]:
            out(f"unreliable: the machine was busy: batch {r['batch']} {r['dtype']}: "
                f"{'; '.join(r['unreliable'])} (after {REMEASURE} re-measurements; rerun on "
                "an idle machine)")
    return results
