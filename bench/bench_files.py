"""Training from a .npy path against the same data in memory, per build.

fit reads a path's mini-batches with pread (nnfast._npyfile); this measures what that
costs over an array in memory, for uint8 images (input_scale 1/255) and float32 rows,
on 784-256-128-10 with Adam, one epoch of 60,000 random rows (--rows) (the file in the page
cache). Each measurement runs in a process of its own with one build first on
PYTHONPATH (a checkout built in place, or `installed`), builds alternated within each
round. Prints microseconds per step: the median over rounds, and the median of the
per-round path / memory ratios of each build.

    python bench/bench_files.py installed --rounds 5
    python bench/bench_files.py installed --quick         # CI smoke run
    python bench/bench_files.py /path/to/before /path/to/after --batch 32,128 --threads 1,2
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SIZES = [784, 256, 128, 10]


def worker(source, dtype, batch, threads, data_dir):
    """Microseconds per step of one epoch's fit, the better of two epochs after a warm-up."""
    import nnfast as nf
    import nnfast._threads
    nf.set_num_threads(int(threads))
    nnfast._threads.timed_team_choice = False           # a fixed team
    path = os.path.join(data_dir, f"x_{dtype}.npy")
    y = np.load(os.path.join(data_dir, "y.npy"))
    X = path if source == "path" else np.load(path)
    net = nf.Network(SIZES, seed=0, input_scale=1 / 255 if dtype == "uint8" else 1.0)
    net.fit(X, y, epochs=1, batch_size=int(batch), verbose=False)       # warm-up
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=int(batch), verbose=False)
        best = min(best, time.perf_counter() - t0)
    return {"us": best / -(-y.shape[0] // int(batch)) * 1e6}


def make_data(data_dir, n_rows):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (n_rows, SIZES[0]), dtype=np.uint8)
    np.save(os.path.join(data_dir, "x_uint8.npy"), X)
    np.save(os.path.join(data_dir, "x_float32.npy"), X.astype(np.float32) / 255)
    np.save(os.path.join(data_dir, "y.npy"), rng.integers(0, SIZES[-1], n_rows))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("builds", nargs="+", help="checkouts built in place, or 'installed'")
    p.add_argument("--batch", default="32,128")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--dtypes", default="uint8,float32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--quick", action="store_true", help="smoke test: 3,000 rows, one "
                   "round, batch 32, one thread")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.rounds, args.batch, args.threads = 3000, 1, "32", "1"
    cases = [(d, int(b), int(t)) for d in args.dtypes.split(",")
             for b in args.batch.split(",") for t in args.threads.split(",")]
    print("\n".join(_common.environment_report()))
    results = {}
    with tempfile.TemporaryDirectory() as data_dir:
        make_data(data_dir, args.rows)
        for _ in range(args.rounds):
            for case in cases:
                for build in args.builds:
                    env = dict(os.environ)
                    if build != "installed":
                        env["PYTHONPATH"] = build
                    for source in ("memory", "path"):
                        out = _common.run_worker(os.path.abspath(__file__),
                                                 [source, case[0], str(case[1]),
                                                  str(case[2]), data_dir], env=env)
                        results.setdefault((case, build, source), []).append(out["us"])
    rows = []
    for case in cases:
        for build in args.builds:
            mem, path = results[(case, build, "memory")], results[(case, build, "path")]
            ratio = statistics.median(b / a for a, b in zip(mem, path))
            rows.append([f"{case[0]} batch {case[1]}, {case[2]} thread(s)", build,
                         f"{statistics.median(mem):.1f}", f"{statistics.median(path):.1f}",
                         f"{ratio:.3f}"])
    _common.print_table(["workload (us per step)", "build", "memory", "path",
                         "path/memory"], rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _common.emit(worker(*sys.argv[2:]))
    else:
        _common.reexec_without_slowing_vars()
        main()
