"""Shared pieces of the benchmarks: a clean BLAS environment, workers in their own
processes, the environment report and the statistics.

Why workers: NumPy and nnfast each load their own OpenBLAS. When matrix products
alternate between the two copies with 2 threads each, the idle threads of one copy spin
and starve the other, so each contender is timed in a process of its own.
"""
import json
import os
import statistics
import subprocess
import sys

from nnfast._bench import SLOWING_VARS, clean_env, cpu_model, slowing_vars_set  # noqa: F401
from nnfast._bench import blas_lines as blas_report  # noqa: F401
from nnfast._bench import environment_lines as environment_report  # noqa: F401


def reexec_without_slowing_vars():
    """Restart this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they are read
    when OpenBLAS loads, so they must be gone before the process starts); kept with
    NNFAST_BENCH_KEEP_ENV=1."""
    if slowing_vars_set():
        os.execve(sys.executable, [sys.executable, *sys.argv], clean_env())


def run_worker(script, args, timeout=1800, env=None):
    """Run `python script --worker ...args` in a fresh process (environment `env`,
    default this one's); return its JSON result."""
    cmd = [sys.executable, script, "--worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=os.environ.copy() if env is None else env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result):
    """Worker side: print the JSON result as the last line of stdout."""
    print(json.dumps(result), flush=True)


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
