"""What a user sees who calls NumPy's matrix product between nnfast calls.

NumPy and nnfast each load an OpenBLAS. After a NumPy matrix product, NumPy's BLAS threads
keep spinning for a while (OpenBLAS's thread timeout: ~0.1 s by default) on the cores that
nnfast's training step needs. This times one epoch of `fit` on a slice of W's data, alone
(after a pause) and right after a NumPy product of two 600x600 matrices, alternating.

    python bench/bench_interleave.py
    OPENBLAS_THREAD_TIMEOUT=4 python bench/bench_interleave.py   # NumPy's threads sleep at once

Sample output: see bench/README.md.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from bench_train import SIZES, load_data  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=12000, help="training samples (default 12000)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="3000 samples, 3 repeats")
    args = p.parse_args(argv)
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.n, args.repeat = 3000, 3
    import nnfast as nf
    print("\n".join(_common.environment_report()))
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "(unset: OpenBLAS's default)")
    print(f"OPENBLAS_THREAD_TIMEOUT={timeout}")
    X, y, source = load_data(args.n, np.float32, None)
    net = nf.Network(SIZES, seed=0)
    opt = nf.Adam()
    A = np.random.default_rng(0).random((600, 600))
    net.fit(X, y, epochs=1, batch_size=args.batch, optimizer=opt, verbose=False)  # warm-up
    times = {"alone": [], "after numpy": []}
    for _ in range(args.repeat):
        time.sleep(0.3)                          # any spinning BLAS thread has slept by now
        t0 = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=args.batch, optimizer=opt, verbose=False)
        times["alone"].append(time.perf_counter() - t0)
        time.sleep(0.3)
        A @ A                                    # NumPy's BLAS, 2 threads
        t0 = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=args.batch, optimizer=opt, verbose=False)
        times["after numpy"].append(time.perf_counter() - t0)
    print(f"\nfit, one epoch of {args.n} samples ({source}), batch {args.batch}, "
          f"{args.repeat} times each:\n")
    rows = [[k, f"{statistics.median(v):.4f}", f"{min(v):.4f}", f"{max(v):.4f}"]
            for k, v in times.items()]
    _common.print_table(["", "median s", "min s", "max s"], rows)
    ratio = statistics.median(times["after numpy"]) / statistics.median(times["alone"])
    print(f"\nafter a NumPy product: {ratio:.2f}x the time alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
