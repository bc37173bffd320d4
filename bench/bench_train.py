"""One training epoch of workload W, side by side: nnfast, pure NumPy, the GEMM floor.

W = Fashion-MNIST (60k), MLP 784-256-128-10, ReLU, softmax cross-entropy, Adam lr 1e-3,
shuffled mini-batches. The GEMM floor is the 8 matrix products of every step alone (3
forward, 3 dW, 2 dA) into preallocated outputs: with NumPy's matmul ("floor") and with
nnfast's own BLAS binding ("floor-nnfast-blas"); with PyTorch installed also torch.mm,
which is MKL in the benchmark's dtype ("floor-mkl") and oneDNN on bfloat16 tensors ("floor-bf16",
float32 only: AMX or AVX512-BF16 where the CPU has them). "nnfast-bf16" is nnfast with
matmul_precision="bfloat16" (float32 only); "floor-onednn" the products on oneDNN's
float32 matmul where the onednn-cpu-gomp wheel is installed (bench/_onednn.py; float32
only; its ~3 us Python call per product is part of it); "nnfast-blas" is nnfast float32 with its
matrix products on BLAS instead of its own AVX-512F ones (csrc/_sgemm.h; the same where
the CPU lacks AVX-512F). "numpy" is nnfast.reference's
ReferenceNetwork (the same math in NumPy ops). PyTorch (eager, torch.optim.Adam; and
"torch-bf16": the same under torch.autocast to bfloat16) and JAX (the step jitted:
"jax"; every full batch of an epoch in one jitted lax.scan: "jax-scan") run when
installed.
Every contender runs in its own process (two OpenBLAS copies must not alternate).
"x floor" is a contender's median over NumPy's floor; "x best floor" over the fastest of
floor, floor-nnfast-blas, floor-mkl and floor-onednn (the best float32 or float64 GEMM
measured).

    python bench/bench_train.py                      # batch 32,128,512; float32, float64
    python bench/bench_train.py --batch 128 --dtype float32 --repeat 5
    python bench/bench_train.py --quick              # smoke test: small data, 2 epochs

Sample output (see bench/README.md for the latest full table):

    batch  dtype    contender          median s  min s  max s  x floor
    128    float32  floor                 0.172  0.170  0.176     1.00
    ...
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SIZES = [784, 256, 128, 10]
CONTENDERS = ("floor", "floor-nnfast-blas", "floor-mkl", "floor-onednn", "floor-bf16", "nnfast",
              "nnfast-blas", "nnfast-bf16", "numpy", "torch", "torch-bf16", "jax", "jax-scan")
TORCH = ("floor-mkl", "floor-bf16", "torch", "torch-bf16")   # need PyTorch
FLOAT32_ONLY = ("floor-bf16", "floor-onednn", "nnfast-blas", "nnfast-bf16", "torch-bf16")
BEST_FLOORS = ("floor", "floor-nnfast-blas", "floor-mkl", "floor-onednn")


def load_data(n, dtype, data_dir):
    """(X, y) of the first n Fashion-MNIST training samples; synthetic when absent."""
    import nnfast as nf
    try:
        (X, y), _ = nf.datasets.load_fashion_mnist(data_dir)
        source = "fashion-mnist"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        X = rng.random((60000, 784), dtype=np.float32)
        y = rng.integers(0, 10, 60000)
        source = "synthetic (Fashion-MNIST not installed)"
    return np.ascontiguousarray(X[:n], dtype=dtype), y[:n].astype(np.int64), source


def batches(n, batch):
    return [(s, min(s + batch, n)) for s in range(0, n, batch)]


# ------------------------------------------------------------------ workers

def worker_floor(X, batch, dtype, epochs, use_nnfast_blas, torch_dtype=None, threads=1,
                 use_onednn=False):
    """The 8 GEMMs of every step, nothing else: NumPy's matmul, nnfast's BLAS, torch.mm
    on tensors of torch_dtype ("float32": MKL, "bfloat16": oneDNN), or oneDNN's float32
    matmul called directly (use_onednn)."""
    import nnfast as nf
    from nnfast import _kernels as K
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((i, o)).astype(dtype) * 0.05 for i, o in zip(SIZES, SIZES[1:])]
    dW = [np.empty_like(w) for w in W]
    A = [np.empty((batch, s), dtype) for s in SIZES]
    D = [None] + [rng.standard_normal((batch, s)).astype(dtype) for s in SIZES[1:]]
    A[0][...] = X[:batch]
    for a in A[1:]:
        a[...] = rng.random(a.shape)
    if use_nnfast_blas:       # one BLAS call per product on all of nnfast's threads
        K.set_blas_threads(nf.get_num_threads())
    del nf
    if torch_dtype is not None:
        import torch
        torch.set_num_threads(threads)
        tt = getattr(torch, torch_dtype)
        W = [torch.from_numpy(w).to(tt) for w in W]
        dW = [torch.empty_like(w) for w in W]
        A = [torch.from_numpy(a).to(tt) for a in A]
        D = [None] + [torch.from_numpy(d).to(tt) for d in D[1:]]

        def mm(c, a, b, ta=False, tb=False):
            torch.mm(a.t() if ta else a, b.t() if tb else b, out=c)
    elif use_onednn:
        os.environ["OMP_NUM_THREADS"] = str(threads)      # read when oneDNN loads
        import _onednn
        mm = _onednn.OneDnnMatmul()
    elif use_nnfast_blas:
        def mm(c, a, b, ta=False, tb=False):
            K.gemm(c, a, b, ta, tb)
    else:
        def mm(c, a, b, ta=False, tb=False):
            np.matmul(a.T if ta else a, b.T if tb else b, out=c)

    def epoch():
        for s, e in batches(X.shape[0], batch):
            n = e - s
            a = [x[:n] for x in A]
            d = [None] + [x[:n] for x in D[1:]]
            for l in range(3):
                mm(a[l + 1], a[l], W[l])
            for l in (2, 1, 0):
                mm(dW[l], a[l], d[l + 1], True, False)
                if l > 0:
                    mm(d[l], d[l + 1], W[l], False, True)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return {"times": times[1:]}


def worker_nnfast(X, y, batch, dtype, epochs, seed, precision="float32"):
    import nnfast as nf
    from nnfast.reference import ReferenceNetwork
    net = nf.Network(SIZES, hidden="relu", output="softmax", dtype=dtype, seed=seed,
                     matmul_precision=precision)
    # Correctness first: the loss and gradient of one batch must match pure NumPy (float32
    # products; bfloat16 inputs are within what 8 bits of mantissa allow).
    Xb, yb = X[:batch], y[:batch]
    loss, grads = net.loss_and_grads(Xb, yb)
    ref = ReferenceNetwork.from_network(net)
    rloss, rgrad = ref.loss_and_grads(Xb, net._Y(yb, Xb.shape[0]))
    flat = np.concatenate([w.ravel() for w, _ in grads] + [b.ravel() for _, b in grads])
    tol = 1e-4 if dtype == np.float32 else 1e-10
    if precision == "bfloat16":
        tol = 0.05
    err = np.abs(flat - rgrad).max() / max(np.abs(rgrad).max(), 1e-30)
    if abs(loss - rloss) > tol * max(1.0, abs(rloss)) or err > tol:
        raise SystemExit(f"nnfast differs from NumPy: loss {loss} vs {rloss}, grad rel err {err}")
    # The check ran NumPy's matmul: its OpenBLAS threads now spin for up to ~0.1 s
    # (OpenBLAS's default thread timeout) on the core nnfast's BLAS needs. Let them sleep.
    time.sleep(0.5)
    opt = nf.Adam(lr=1e-3)
    net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, verbose=False)      # warm-up
    hist = net.fit(X, y, epochs=epochs, batch_size=batch, optimizer=opt, verbose=False)
    return {"times": hist.epoch_time, "loss": hist.loss[-1]}


def worker_numpy(X, y, batch, dtype, epochs, seed):
    import nnfast as nf
    from nnfast.reference import ReferenceAdam, ReferenceNetwork
    net = nf.Network(SIZES, hidden="relu", output="softmax", dtype=dtype, seed=seed)
    ref = ReferenceNetwork.from_network(net)
    Y = net._Y(y, X.shape[0])
    opt = ReferenceAdam(lr=1e-3)
    rng = np.random.default_rng(seed)
    times, loss = [], None
    for _ in range(epochs + 1):
        order = rng.permutation(X.shape[0])
        t0 = time.perf_counter()
        loss = ref.train_epoch(X, Y, order, batch, opt)
        times.append(time.perf_counter() - t0)
    return {"times": times[1:], "loss": float(loss)}


def worker_torch(X, y, batch, dtype, epochs, seed, threads, autocast=False):
    """PyTorch eager; with autocast, its forward (and so backward) products in bfloat16."""
    import contextlib
    import torch
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    layers = []
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=tdtype))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(X.shape[0], generator=g)
        for s, e in batches(X.shape[0], batch):
            idx = order[s:e]
            opt.zero_grad(set_to_none=True)
            with (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
                  else contextlib.nullcontext()):
                loss = lossf(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return {"times": times[1:], "version": torch.__version__}


def worker_jax(X, y, batch, dtype, epochs, seed, scan=False):
    import jax
    import jax.numpy as jnp
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    key = jax.random.PRNGKey(seed)
    params = []
    for a, b in zip(SIZES, SIZES[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (a, b), dtype) * np.sqrt(2 / a),
                       jnp.zeros(b, dtype)))

    def loss_fn(p, xb, yb):
        h = xb
        for w, b in p[:-1]:
            h = jax.nn.relu(h @ w + b)
        z = h @ p[-1][0] + p[-1][1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yb[:, None], 1))

    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-3

    @jax.jit
    def step(p, m, v, t, xb, yb):
        g = jax.grad(loss_fn)(p, xb, yb)
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        p = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps),
                                   p, m, v)
        return p, m, v

    @jax.jit
    def full_batches(p, m, v, t0, idx):
        """Every full batch of an epoch in one lax.scan; idx (n_batches, batch)."""
        def body(carry, rows):
            p, m, v, t = carry
            p, m, v = step(p, m, v, t, Xj[rows], yj[rows])
            return (p, m, v, t + 1), None
        (p, m, v, _), _ = jax.lax.scan(body, (p, m, v, t0), idx)
        return p, m, v

    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    Xj, yj = jnp.asarray(X), jnp.asarray(y.astype(np.int32))
    rng = np.random.default_rng(seed)
    n_full = X.shape[0] // batch
    times, t = [], 0
    for _ in range(epochs + 1):
        order = rng.permutation(X.shape[0])
        t0 = time.perf_counter()
        if scan:                               # full batches in one call, then the rest
            params, m, v = full_batches(params, m, v, t + 1,
                                        jnp.asarray(order[:n_full * batch].reshape(n_full, batch)))
            t += n_full
            rest = [(n_full * batch, X.shape[0])] if X.shape[0] % batch else []
        else:
            rest = batches(X.shape[0], batch)
        for s, e in rest:
            t += 1
            idx = order[s:e]
            params, m, v = step(params, m, v, t, Xj[idx], yj[idx])
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    return {"times": times[1:], "version": jax.__version__}


def worker_main(args):
    dtype = np.dtype(args.dtype).type
    import nnfast as nf
    nf.set_num_threads(args.threads)
    X, y, source = load_data(args.n, dtype, args.data)
    c = args.contender
    if c in ("floor", "floor-nnfast-blas", "floor-mkl", "floor-onednn", "floor-bf16"):
        out = worker_floor(X, args.batch, dtype, args.repeat, c == "floor-nnfast-blas",
                           {"floor-mkl": np.dtype(dtype).name, "floor-bf16": "bfloat16"}.get(c),
                           args.threads, c == "floor-onednn")
    elif c in ("nnfast", "nnfast-blas", "nnfast-bf16"):
        from nnfast import _precision
        if c == "nnfast-blas":
            _precision.set_float32_products("blas")
        out = worker_nnfast(X, y, args.batch, dtype, args.repeat, args.seed,
                            "bfloat16" if c == "nnfast-bf16" else "float32")
        if c == "nnfast-bf16":
            out["path"] = _precision.bf16_path()[0]
        elif c == "nnfast" and dtype == np.float32:
            out["f32_path"] = _precision.matmul_description("float32")
    elif c == "numpy":
        out = worker_numpy(X, y, args.batch, dtype, args.repeat, args.seed)
    elif c in ("torch", "torch-bf16"):
        out = worker_torch(X, y, args.batch, dtype, args.repeat, args.seed, args.threads,
                           c == "torch-bf16")
    else:
        out = worker_jax(X, y, args.batch, dtype, args.repeat, args.seed, c == "jax-scan")
    out["source"] = source
    out["blas"] = _common.blas_report()
    _common.emit(out)


# ------------------------------------------------------------------ driver

def available(name):
    if name == "floor-onednn":             # found, not loaded: the driver stays clean
        import _onednn
        return bool(_onednn.library_candidates())
    if name not in TORCH + ("jax", "jax-scan"):
        return True
    try:
        __import__("torch" if name in TORCH else "jax")
        return True
    except ImportError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="32,128,512", help="batch sizes (default 32,128,512)")
    p.add_argument("--dtype", default="float32,float64", help="dtypes (default both)")
    p.add_argument("--repeat", type=int, default=5, help="timed epochs after a warm-up one")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the whole set of contenders, interleaved (default 1); "
                        "'x floor' is then the median of the rounds' ratios")
    p.add_argument("--n", type=int, default=60000, help="training samples (default 60000)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 6000 samples, batch 128, float32, 2 epochs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--contender", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.batch, args.dtype = int(args.batch), args.dtype
        return worker_main(args)
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.batch, args.dtype, args.repeat, args.n = "128", "float32", 2, 6000
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    print("\n".join(_common.environment_report()))
    print(f"workload: {SIZES}, relu, softmax-CE, Adam 1e-3, {args.n} samples, "
          f"{args.threads} threads, {args.repeat} timed epochs after 1 warm-up, "
          f"{args.rounds} round(s)\n")
    names = [c for c in args.contenders.split(",") if c]
    skipped = [c for c in names if not available(c)]
    names = [c for c in names if c not in skipped]
    rows, blas_seen, path_seen, f32_seen = [], None, None, None
    for dtype in args.dtype.split(","):
        here = [c for c in names if dtype == "float32" or c not in FLOAT32_ONLY]
        for batch in [int(b) for b in args.batch.split(",")]:
            times = {c: [] for c in here}
            ratios = {c: [] for c in here}       # per round: median / floor's median
            best = {c: [] for c in here}         # ... / the fastest floor's of this dtype
            for _ in range(args.rounds):
                medians = {}
                for c in here:
                    res = _common.run_worker(__file__, [
                        "--contender", c, "--batch", str(batch), "--dtype", dtype,
                        "--repeat", str(args.repeat), "--n", str(args.n),
                        "--threads", str(args.threads), "--seed", str(args.seed)]
                        + (["--data", args.data] if args.data else []))
                    times[c] += res["times"]
                    medians[c] = _common.summarize(res["times"])[0]
                    if c == "nnfast":
                        blas_seen = res["blas"]
                    path_seen = res.get("path", path_seen)
                    f32_seen = res.get("f32_path", f32_seen)
                if "floor" in medians:
                    for c in here:
                        ratios[c].append(medians[c] / medians["floor"])
                floors = [medians[c] for c in BEST_FLOORS if c in medians]
                for c in here if floors else ():
                    best[c].append(medians[c] / min(floors))
            for c in here:
                med, lo, hi = _common.summarize(times[c])
                ratio = f"{_common.summarize(ratios[c])[0]:.2f}" if ratios[c] else "-"
                to_best = f"{_common.summarize(best[c])[0]:.2f}" if best[c] else "-"
                rows.append([batch, dtype, c, f"{med:.3f}", f"{lo:.3f}", f"{hi:.3f}", ratio,
                             to_best])
    _common.print_table(["batch", "dtype", "contender", "median s", "min s", "max s",
                         "x floor", "x best floor"], rows)
    if blas_seen:
        print("\nBLAS in the nnfast worker: " + "; ".join(blas_seen))
    if f32_seen:
        print(f"nnfast's float32 products: {f32_seen}")
    if path_seen:
        print(f"nnfast-bf16's bfloat16 path: {path_seen}")
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
