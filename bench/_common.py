"""Shared pieces of the benchmarks: a clean BLAS environment, workers in their own
processes, the environment report and the statistics.

Why workers: NumPy and nnfast each load their own OpenBLAS. When matrix products
alternate between the two copies with 2 threads each, the idle threads of one copy spin
and starve the other, so each contender is timed in a process of its own.
"""
import json
import os
import platform
import statistics
import subprocess
import sys

SLOWING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def clean_env():
    """os.environ without the variables that force slower OpenBLAS kernels."""
    return {k: v for k, v in os.environ.items() if k not in SLOWING_VARS}


def reexec_without_slowing_vars():
    """Restart this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they are read
    when OpenBLAS loads, so they must be gone before the process starts)."""
    removed = [k for k in SLOWING_VARS if k in os.environ]
    if removed and os.environ.get("NNFAST_BENCH_KEEP_ENV") != "1":
        env = clean_env()
        env["NNFAST_BENCH_UNSET"] = ",".join(f"{k}={os.environ[k]}" for k in removed)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def run_worker(script, args, timeout=1800):
    """Run `python script --worker ...args` in a fresh process; return its JSON result."""
    cmd = [sys.executable, script, "--worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(),
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result):
    """Worker side: print the JSON result as the last line of stdout."""
    print(json.dumps(result), flush=True)


def blas_report():
    """Lines describing every BLAS / OpenMP pool loaded in this process (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed: BLAS kernel unknown (pip install threadpoolctl)"]
    lines = []
    for pool in threadpool_info():
        lines.append(f"{pool.get('internal_api')} {pool.get('version')} "
                     f"kernel={pool.get('architecture')} threads={pool.get('num_threads')} "
                     f"{os.path.basename(pool.get('filepath', ''))}")
    return lines


def environment_report():
    """Versions, BLAS kernels and thread settings, as printed at the top of each run."""
    import numpy as np

    import nnfast as nf
    lines = [f"python {platform.python_version()}  numpy {np.__version__}  "
             f"nnfast {nf.__version__}  machine {platform.machine()} "
             f"{os.cpu_count()} cpus  {platform.processor() or ''}".rstrip()]
    unset = os.environ.get("NNFAST_BENCH_UNSET")
    if unset:
        lines.append(f"unset for this benchmark: {unset}")
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OMP_", "OPENBLAS_", "MKL_")) and k != "NNFAST_BENCH_UNSET"}
    lines.append("env: " + (" ".join(f"{k}={v}" for k, v in sorted(env.items())) or "(none)"))
    lines.append(f"nnfast BLAS threads: {nf.get_num_threads()}")
    lines += blas_report()
    return lines


def summarize(times):
    """median, min, max of a list of seconds."""
    return statistics.median(times), min(times), max(times)


def print_table(header, rows):
    """Plain text table, columns right-aligned except the first."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(r)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
