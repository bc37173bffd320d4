"""The thread team under small work and contention: default threads vs 1 and 2 fixed.

For each workload (fit of a network at a batch size, or predict of some rows), each
thread setting (nnfast's default, set_num_threads(1), set_num_threads(2)) runs in a
process of its own, the settings interleaved round by round; "one core busy" repeats
it all with another process spinning on one core for the whole measurement. Prints
microseconds per step (fit) or per call (predict): medians over the rounds, and
default / best of the fixed settings (median of the per-round ratios).

    python bench/bench_threads.py              # full table (a few minutes)
    python bench/bench_threads.py --quick      # CI smoke run: two workloads, one round

Sample output: see bench/README.md.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

# (name, kind, sizes, batch or rows)
WORKLOADS = [("fit [16,32,3] batch 16", "fit", [16, 32, 3], 16),
             ("fit [64,64,10] batch 64", "fit", [64, 64, 10], 64),
             ("fit [784,256,128,10] batch 128", "fit", [784, 256, 128, 10], 128),
             ("fit [784,1024,1024,10] batch 256", "fit", [784, 1024, 1024, 10], 256),
             ("predict 784-256-128-10, 1 row", "predict", [784, 256, 128, 10], 1),
             ("predict 784-256-128-10, 1000 rows", "predict", [784, 256, 128, 10], 1000),
             ("fit [784,256,128,10] batch 32", "fit", [784, 256, 128, 10], 32)]
QUICK = [0, 4]
SETTINGS = ["default", "1", "2"]
WORK_SECONDS = 0.3                  # timed work per repeat in a worker


def worker(kind, sizes, count, setting, repeat):
    """Microseconds per step (fit) or per call (predict), median of `repeat`."""
    import nnfast as nf
    if setting != "default":            # a fixed team: no timed choice of one thread
        nf.set_num_threads(int(setting))
        import nnfast._threads
        nnfast._threads.timed_team_choice = False
    rng = np.random.default_rng(0)
    net = nf.Network(sizes, seed=0)
    if kind == "fit":
        steps = max(4, int(2e7 // (count * sum(a * b for a, b in zip(sizes, sizes[1:])))))
        X = rng.random((count * steps, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], X.shape[0])
        opt = nf.Adam()

        def run():
            net.fit(X, y, epochs=1, batch_size=count, optimizer=opt, verbose=False)
        per_run = steps
    else:
        X = rng.random((count, sizes[0]), dtype=np.float32)

        def run():
            net.predict(X)
        per_run = 1
    run()                                               # warm-up, workspace allocation
    t0 = time.perf_counter()
    run()
    once = time.perf_counter() - t0
    loops = max(1, int(WORK_SECONDS / max(once, 1e-6)))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            run()
        times.append((time.perf_counter() - t0) / (loops * per_run) * 1e6)
    return statistics.median(times)


def spinner():
    """Another process keeping one core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(workloads, rounds, repeat):
    """{workload name: {setting: [us per round]}}, settings interleaved in each round."""
    results = {w[0]: {s: [] for s in SETTINGS} for w in workloads}
    for _ in range(rounds):
        for name, kind, sizes, count in workloads:
            for setting in SETTINGS:
                out = _common.run_worker(__file__, [kind, ",".join(map(str, sizes)),
                                                    str(count), setting, str(repeat)])
                results[name][setting].append(out["us"])
    return results


def table(results):
    rows = []
    for name, by_setting in results.items():
        med = {s: statistics.median(v) for s, v in by_setting.items()}
        ratios = [d / min(a, b) for d, a, b in zip(by_setting["default"], by_setting["1"],
                                                   by_setting["2"])]
        rows.append([name, f"{med['default']:.1f}", f"{med['1']:.1f}", f"{med['2']:.1f}",
                     f"{statistics.median(ratios):.2f}"])
    _common.print_table(["workload (us per step / call)", "default", "1 thread",
                         "2 threads", "default/best"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3, help="timed repeats in each worker")
    p.add_argument("--quick", action="store_true", help="two workloads, one round")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, sizes, count, setting, repeat = args.worker
        _common.emit({"us": worker(kind, [int(s) for s in sizes.split(",")], int(count),
                                   setting, int(repeat))})
        return 0
    _common.reexec_without_slowing_vars()
    workloads = [WORKLOADS[i] for i in QUICK] if args.quick else WORKLOADS
    rounds = 1 if args.quick else args.rounds
    print("\n".join(_common.environment_report()))
    print(f"{len(os.sched_getaffinity(0))} cores for this process")
    for busy in (False, True):
        spin = spinner() if busy else None
        try:
            if spin is not None:
                time.sleep(0.2)
            results = measure(workloads, rounds, args.repeat)
        finally:
            if spin is not None:
                spin.kill()
                spin.wait()
        print(f"\n{'one core busy (another process spinning)' if busy else 'quiet'}, "
              f"{rounds} round(s), each setting in its own process:\n")
        table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
