"""Two builds of nnfast side by side: bench_threads' workloads at a fixed thread setting.

Each measurement runs bench_threads.py's worker in a process of its own with the
nnfast of one checkout first on PYTHONPATH (a checkout built in place: `python setup.py
build_ext --inplace`; or `installed`: the nnfast this Python imports), the two builds
alternated within each round; quiet,
then with another process keeping one core busy. Prints microseconds per step or call:
the median and the minimum over the rounds of each build, and the median of the
per-round after / before ratios.

    python bench/compare_builds.py /path/to/before /path/to/after --rounds 5
    python bench/compare_builds.py BEFORE AFTER --threads default --workloads 2,5
    python bench/compare_builds.py installed installed --quick      # CI smoke run

Sample output: see bench/README.md ("Threads").
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from bench_threads import WORKLOADS, spinner  # noqa: E402


def measure(trees, workloads, setting, rounds, repeat):
    """{(workload name, build): [us per round]}, the builds alternated in each round."""
    results = {}
    for _ in range(rounds):
        for name, kind, sizes, count in workloads:
            for build, tree in trees.items():
                env = dict(os.environ) if tree is None else dict(os.environ, PYTHONPATH=tree)
                out = _common.run_worker(os.path.join(os.path.dirname(__file__),
                                                      "bench_threads.py"),
                                         [kind, ",".join(map(str, sizes)), str(count),
                                          setting, str(repeat)], env=env)
                results.setdefault((name, build), []).append(out["us"])
    return results


def table(results, workloads):
    rows = []
    for name, *_ in workloads:
        before, after = results[(name, "before")], results[(name, "after")]
        ratio = statistics.median(a / b for a, b in zip(after, before))
        rows.append([name, f"{statistics.median(before):.1f}", f"{min(before):.1f}",
                     f"{statistics.median(after):.1f}", f"{min(after):.1f}", f"{ratio:.2f}"])
    _common.print_table(["workload (us per step / call)", "before", "min", "after", "min",
                         "after/before"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before", help="checkout of the build before (built in place), or "
                                  "'installed'")
    p.add_argument("after", help="checkout of the build after, or 'installed'")
    p.add_argument("--threads", default="2", help="a fixed team size, or 'default'")
    p.add_argument("--workloads", default="2,3,5",
                   help="bench_threads workloads by index (default 2,3,5)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3, help="timed repeats in each worker")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the smallest workload, one round, one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.workloads, args.rounds, args.repeat = "0", 1, 1
    if args.rounds < 1 or args.repeat < 1:
        p.error("--rounds and --repeat must be >= 1")
    trees = {}
    for build in ("before", "after"):
        where = getattr(args, build)
        trees[build] = None if where == "installed" else os.path.abspath(where)
        if trees[build] is not None and not os.path.isfile(
                os.path.join(trees[build], "nnfast", "__init__.py")):
            p.error(f"{where} is not an nnfast checkout (nor 'installed')")
    if args.threads != "default" and not (args.threads.isdigit() and int(args.threads) >= 1):
        p.error(f"--threads must be a positive integer or 'default', got {args.threads!r}")
    try:
        workloads = [WORKLOADS[int(i)] for i in args.workloads.split(",")]
    except (ValueError, IndexError):
        p.error(f"--workloads: indices into {len(WORKLOADS)} workloads, got {args.workloads!r}")
    _common.reexec_without_slowing_vars()
    print("\n".join(_common.environment_report()))
    print(f"threads: {args.threads}; before: {args.before}; after: {args.after}")
    for busy in (False, True):
        spin = spinner() if busy else None
        try:
            if spin is not None:
                time.sleep(0.2)
            results = measure(trees, workloads, args.threads, args.rounds, args.repeat)
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
        print(f"\n{'one core busy (another process spinning)' if busy else 'quiet'}, "
              f"{args.rounds} round(s), each build in its own processes:\n")
        table(results, workloads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
