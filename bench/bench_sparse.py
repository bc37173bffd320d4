"""Training on sparse input: nnfast against scikit-learn's MLPClassifier on the same CSR.

The data are synthetic TF-IDF-like matrices (no download: scikit-learn's
fetch_20newsgroups needs the network): column indices drawn from a Zipf-like word
distribution, 1 + log(count) times idf, rows L2-normalised, float32 CSR; the labels
come from a random linear model of the 2% most frequent words' features (argmax over
the classes), so both learn something and the held-out accuracy can be compared. Cases:

    tfidf        100,000 features, 20,000 rows, ~50 non-zeros a row, 10 classes
    news20-like  130,107 features, 11,314 rows, ~158 non-zeros a row, 20 classes
                 (the shape of 20 newsgroups' training set as TfidfVectorizer gives it)

Both train one hidden layer of 64 ReLU units with softmax cross-entropy, Adam lr 1e-3,
no L2 penalty (MLP alpha=0), shuffled mini-batches of 200 (MLP's "auto"), float32.
One epoch is one call: nnfast `Network.fit(X, y, epochs=1)` with the same optimizer
object, MLP `partial_fit(X, y)`; both wall-timed per call, input checks included. Each
contender runs in its own process (two OpenBLAS copies must not alternate), a warm-up
epoch first, then --epochs timed ones; --rounds repeats the pair, interleaved. The table
shows the median, min and max epoch over all rounds, the speed-up over MLP (ratio of
medians), the held-out accuracy after the last epoch (20% of the rows), and the peak
RSS of the worker process (data, weights and everything else).

Correctness first: nnfast's loss and gradients on one sparse batch are checked against
the NumPy reference on the same batch densified; the run stops if they differ.

    python bench/bench_sparse.py                      # both cases, 5 epochs, 3 rounds
    python bench/bench_sparse.py --case tfidf --rounds 1
    python bench/bench_sparse.py --quick              # smoke test, a few seconds

Sample output (2-core AMD EPYC Zen 3; bench/README.md has the whole run):

    case             contender  median s  min s  max s  x MLP  test acc  peak RSS MiB
    tfidf         nnfast 0.1.0     0.411  0.389  0.470  14.29     0.419           410
    tfidf        sklearn 1.9.1     5.873  5.593  6.272   1.00     0.417           378
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

CASES = {   # features, rows, non-zeros a row, classes
    "tfidf": (100_000, 20_000, 50, 10),
    "news20-like": (130_107, 11_314, 158, 20),
    "quick": (20_000, 2_000, 20, 5),
}
CONTENDERS = ("nnfast", "sklearn")
HIDDEN = 64
BATCH = 200


def make_data(case, seed=0):
    """(X_train, y_train, X_test, y_test): a TF-IDF-like float32 CSR and int labels."""
    from scipy import sparse
    n_features, n, per_row, k = CASES[case]
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(n_features) + 10.0) ** 1.07           # Zipf-like word frequencies
    p /= p.sum()
    lengths = rng.poisson(per_row, n).clip(1)                  # words (with repeats) a row
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    perm = rng.permutation(n_features)                         # word of frequency rank r
    words = perm[rng.choice(n_features, indptr[-1], p=p)]
    counts = sparse.csr_matrix((np.ones(indptr[-1], np.float32), words, indptr),
                               shape=(n, n_features))
    counts.sum_duplicates()                                    # counts of each word
    df = np.bincount(counts.indices, minlength=n_features)
    idf = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
    X = counts.copy()
    X.data = (1 + np.log(X.data)) * idf[X.indices]
    norms = np.sqrt(np.add.reduceat(X.data ** 2, X.indptr[:-1])) if X.nnz else 1
    X.data /= np.repeat(norms, np.diff(X.indptr)).astype(np.float32)
    X = X.astype(np.float32)
    R = np.zeros((n_features, k), np.float32)                  # the 2% most frequent words
    top = perm[:n_features // 50]                              # decide the class
    R[top] = rng.standard_normal((top.size, k))
    y = np.asarray((X @ R).argmax(axis=1)).ravel()
    cut = int(0.8 * n)
    return X[:cut], y[:cut], X[cut:], y[cut:]


# ------------------------------------------------------------------ workers

def check_nnfast(net, X, y):
    """nnfast's loss and gradients on one sparse batch against NumPy on it densified."""
    from nnfast.reference import ReferenceNetwork
    Xb, yb = X[:BATCH], y[:BATCH]
    loss, grads = net.loss_and_grads(Xb, yb)
    ref = ReferenceNetwork.from_network(net)
    rloss, rgrad = ref.loss_and_grads(Xb.toarray(), net._Y(yb, Xb.shape[0]))
    flat = np.concatenate([w.ravel() for w, _ in grads] + [b.ravel() for _, b in grads])
    err = np.abs(flat - rgrad).max() / max(np.abs(rgrad).max(), 1e-30)
    if abs(loss - rloss) > 1e-4 * max(1.0, abs(rloss)) or err > 1e-4:
        raise SystemExit(f"nnfast differs from NumPy: loss {loss} vs {rloss}, grad rel err "
                         f"{err}")
    time.sleep(0.5)         # NumPy's matmul ran: let its OpenBLAS threads go to sleep


def worker_nnfast(data, epochs, threads, seed):
    import nnfast as nf
    X, y, Xt, yt = data
    nf.set_num_threads(threads)
    net = nf.Network([X.shape[1], HIDDEN, int(y.max()) + 1], hidden="relu", seed=seed)
    check_nnfast(net, X, y)
    opt = nf.Adam(lr=1e-3)
    times = []
    for _ in range(epochs + 1):                     # the first is the warm-up
        t0 = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=BATCH, optimizer=opt, verbose=False)
        times.append(time.perf_counter() - t0)
    acc = float((net.predict(Xt) == yt).mean())
    return {"times": times[1:], "accuracy": acc, "version": nf.__version__}


def worker_sklearn(data, epochs, threads, seed):
    import warnings

    import sklearn
    from sklearn.neural_network import MLPClassifier
    X, y, Xt, yt = data
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam",
                        learning_rate_init=1e-3, alpha=0.0, batch_size=BATCH,
                        shuffle=True, random_state=seed)
    classes = np.arange(int(y.max()) + 1)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs + 1):
            t0 = time.perf_counter()
            clf.partial_fit(X, y, classes=classes)
            times.append(time.perf_counter() - t0)
    acc = float((clf.predict(Xt) == yt).mean())
    return {"times": times[1:], "accuracy": acc, "version": sklearn.__version__}


def worker_main(args):
    data = make_data(args.case, args.seed)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = worker_nnfast if args.contender == "nnfast" else worker_sklearn
    out = run(data, args.epochs, args.threads, args.seed)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["data_rss_mib"] = rss0 / 1024
    out["nnz"] = int(data[0].nnz + data[2].nnz)
    out["blas"] = _common.blas_report()
    _common.emit(out)


# ------------------------------------------------------------------ driver

def available(name):
    if name != "sklearn":
        return True
    try:
        import sklearn  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", default="tfidf,news20-like",
                   help=f"cases, comma-separated, of {', '.join(CASES)}")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs after a warm-up")
    p.add_argument("--rounds", type=int, default=3,
                   help="runs of every contender, interleaved (default 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 20,000 features, 2,000 rows, 1 epoch, 1 round")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--contender", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        raise SystemExit("bench_sparse.py needs scipy (pip install scipy scikit-learn)")
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.case, args.epochs, args.rounds = "quick", 1, 1
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    print("\n".join(_common.environment_report()))
    print(f"workload: one hidden layer of {HIDDEN} relu, softmax-CE, Adam 1e-3, batch "
          f"{BATCH}, float32, {args.threads} threads, {args.epochs} timed epochs after 1 "
          f"warm-up, {args.rounds} round(s)\n")
    names = [c for c in args.contenders.split(",") if c]
    skipped = [c for c in names if not available(c)]
    names = [c for c in names if c not in skipped]
    rows, notes = [], []
    for case in args.case.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; expected one of {', '.join(CASES)}")
        results = {c: [] for c in names}
        for _ in range(args.rounds):
            for c in names:
                results[c].append(_common.run_worker(__file__, [
                    "--contender", c, "--case", case, "--epochs", str(args.epochs),
                    "--threads", str(args.threads), "--seed", str(args.seed)]))
        medians = {c: _common.summarize([t for r in results[c] for t in r["times"]])
                   for c in names}
        f, n, per_row, k = CASES[case]
        nnz = results[names[0]][0]["nnz"]
        notes.append(f"{case}: {f:,} features, {n:,} rows ({int(0.8 * n):,} to train), "
                     f"{nnz / n:.0f} stored entries a row after merging repeats, {k} classes")
        for c in names:
            med, lo, hi = medians[c]
            ratio = (f"{medians['sklearn'][0] / med:.2f}" if "sklearn" in medians else "-")
            acc = np.median([r["accuracy"] for r in results[c]])
            rss = max(r["peak_rss_mib"] for r in results[c])
            rows.append([case, f"{c} {results[c][0]['version']}", f"{med:.3f}", f"{lo:.3f}",
                         f"{hi:.3f}", ratio, f"{acc:.3f}", f"{rss:.0f}"])
        if "nnfast" in results:
            blas = results["nnfast"][0]["blas"]
    _common.print_table(["case", "contender", "median s", "min s", "max s", "x MLP",
                         "test acc", "peak RSS MiB"], rows)
    print()
    for line in notes:
        print(line)
    if "nnfast" in names:
        print("BLAS in the nnfast worker: " + "; ".join(blas))
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
