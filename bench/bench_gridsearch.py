"""nnfast's estimators under scikit-learn's parallel search: no oversubscription.

GridSearchCV over NNClassifier on scikit-learn's bundled digits (1,797 x 64, 10
classes; hidden_layer_sizes (256, 128) and (512,) x weight_decay 0 and 1e-4, 3 folds: 12
fits of 30 epochs, batch 64), timed as a whole:

    n_jobs=1                 one fit at a time in this process
    n_jobs=2 (loky)          joblib's default: 2 worker processes; joblib sets
                             OMP_NUM_THREADS / OPENBLAS_NUM_THREADS in them to their share
                             of the CPUs, which nnfast reads as its thread setting
    n_jobs=2 (loky, 2 threads each)
                             the same with joblib's inner_max_num_threads=2: 4 threads
                             on 2 cores, where each fit's timed team choice must see that
                             one thread is faster
    n_jobs=2 (threading)     2 threads in this process, fitting at once: they share
                             nnfast's one thread team (a step waits while the other's runs)

For each it prints the wall time of the second of two searches (the first starts the
workers), the thread setting in
the search's workers (nf.get_num_threads() there) and the machine's busy CPU time over
the wall time (/proc/stat; a search that oversubscribes spins threads that wait: more
CPU for no less wall time). Each
configuration runs in a process of its own, the configurations interleaved round by
round; medians over the rounds.

    python bench/bench_gridsearch.py            # 3 rounds
    python bench/bench_gridsearch.py --quick    # smoke test: 1 round, fewer epochs
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

CONFIGS = ["n_jobs=1", "n_jobs=2 (loky)", "n_jobs=2 (loky, 2 threads each)",
           "n_jobs=2 (threading)"]


def _busy_jiffies():
    """CPU time (all CPUs, all processes) since boot, in clock ticks: /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]            # minus idle and iowait


def worker(config, epochs):
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from nnfast.sklearn import NNClassifier
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype("float32")
    grid = {"hidden_layer_sizes": [(256, 128), (512,)], "weight_decay": [0.0, 1e-4]}
    est = NNClassifier(epochs=epochs, batch_size=64, random_state=0,
                       early_stopping=False, tol=0.0)
    n_jobs = 1 if config == "n_jobs=1" else 2
    backend = "threading" if "threading" in config else "loky"
    inner = {"inner_max_num_threads": 2} if "2 threads each" in config else {}
    search = GridSearchCV(est, grid, cv=3, n_jobs=n_jobs)
    with joblib.parallel_backend(backend, **inner):
        seen = joblib.Parallel(n_jobs=n_jobs)(
            joblib.delayed(_threads_in_worker)() for _ in range(n_jobs))
        search.fit(X, y)                                # warm-up: starts the workers
        cpu0, t0 = _busy_jiffies(), time.perf_counter()
        search.fit(X, y)
        wall = time.perf_counter() - t0
        cpu = (_busy_jiffies() - cpu0) / os.sysconf("SC_CLK_TCK")
    _common.emit({"wall": wall, "cpu": cpu, "score": float(search.best_score_),
                  "threads": sorted(set(seen))})


def _threads_in_worker():
    import nnfast as nf
    return nf.get_num_threads()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.epochs)
        return
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.rounds, args.epochs = 1, 3
    print("\n".join(_common.environment_report()))
    print(f"GridSearchCV(NNClassifier, 4 candidates x 3 folds, {args.epochs} epochs) on "
          f"digits, {args.rounds} round(s), each configuration in its own process\n")
    results = {c: [] for c in CONFIGS}
    for _ in range(args.rounds):
        for c in CONFIGS:
            results[c].append(_common.run_worker(__file__, [c, "--epochs",
                                                            str(args.epochs)]))
    rows = []
    for c in CONFIGS:
        wall = statistics.median(r["wall"] for r in results[c])
        cpu = statistics.median(r["cpu"] / r["wall"] for r in results[c])
        threads = ",".join(str(t) for t in results[c][-1]["threads"])
        score = results[c][-1]["score"]
        rows.append([c, f"{wall:.2f}", f"{cpu:.2f}", threads, f"{score:.3f}"])
    _common.print_table(["configuration", "wall s", "cpu / wall", "nnfast threads",
                         "best score"], rows)


if __name__ == "__main__":
    main()
