"""Where the time of a training step goes: workload W's step, phase by phase.

The compiled step (nnfast._step.TrainStep) reads the clock between its phases when its
`profile` flag is on (about 25 clock reads a step, ~0.5 us); "python" is what is left of
the epoch: the loop of `fit` and the call of the step. Phases: gather (the mini-batch rows of X and Y),
gemm_forward / gemm_dW / gemm_dX (the 8 matrix products), bias_activation (bias + ReLU,
one pass after each forward GEMM), loss_gradient (softmax cross-entropy and its
gradient), bias_gradient (the column sums for db), activation_backward (the ReLU mask),
optimizer (Adam, run layer by layer inside the step as soon as a layer's gradients are
complete).

    python bench/bench_step.py                     # batch 32,128,512, float32
    python bench/bench_step.py --batch 128 --dtype float64 --epochs 5 --threads 1
    python bench/bench_step.py --batch 32 --matmul-precision bfloat16

Sample output: see bench/README.md.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from bench_train import SIZES, load_data  # noqa: E402

ORDER = ("gemm_forward", "gemm_dW", "gemm_dX", "bias_activation", "activation_backward",
         "bias_gradient", "loss_gradient", "optimizer", "gather", "python")


def profile_epochs(X, y, batch, dtype, epochs, seed, precision="float32"):
    """Per-step seconds of each phase, averaged over `epochs` epochs after a warm-up."""
    import nnfast as nf
    from nnfast._step import PHASES
    from nnfast._threads import team_size
    from nnfast._group import LocalGroup
    net = nf.Network(SIZES, hidden="relu", output="softmax", dtype=dtype, seed=seed,
                     matmul_precision=precision)
    opt = nf.Adam(lr=1e-3)
    net.fit(X, y, epochs=1, batch_size=batch, optimizer=opt, verbose=False)   # warm-up
    plain = net.fit(X, y, epochs=epochs, batch_size=batch, optimizer=opt, verbose=False)
    Y = net._Y(y, X.shape[0])
    ws = net._get_workspace(min(batch, X.shape[0]))
    step = ws.step
    step.bind(X, Y)                                    # as fit does
    rule = opt._rule()
    group = LocalGroup()
    step.reset_timings()
    step.profile = True
    rng = np.random.default_rng(seed)
    order = np.arange(X.shape[0], dtype=np.intp)
    n_steps = 0
    start = time.perf_counter()
    for _ in range(epochs):
        rng.shuffle(order)
        for s in range(0, X.shape[0], batch):
            idx = order[s:s + batch]                  # as nnfast.training does
            group.step(step, idx, float(idx.shape[0]), opt.t + 1, rule, 0, team_size(),
                       False)
            opt.t += 1
            n_steps += 1
    total = time.perf_counter() - start
    step.profile = False
    step.release()
    phases = step.timings()
    assert set(phases) == set(PHASES)
    phases["python"] = total - sum(phases.values())
    return ({k: v / n_steps for k, v in phases.items()}, total / epochs,
            float(np.median(plain.epoch_time)), n_steps // epochs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="32,128,512")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None)
    p.add_argument("--matmul-precision", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--float32-products", default=None, choices=("nnfast", "blas"),
                   help="who computes float32 products (default: nnfast's own on AVX-512F)")
    p.add_argument("--quick", action="store_true", help="6000 samples, batch 128, 1 epoch")
    args = p.parse_args(argv)
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.batch, args.epochs, args.n = "128", 1, 6000
    import nnfast as nf
    nf.set_num_threads(args.threads)
    if args.float32_products:
        from nnfast import _precision
        _precision.set_float32_products(args.float32_products)
    print("\n".join(_common.environment_report()))
    dtype = np.dtype(args.dtype).type
    X, y, source = load_data(args.n, dtype, args.data)
    batches = [int(b) for b in args.batch.split(",")]
    results = {b: profile_epochs(X, y, b, dtype, args.epochs, args.seed,
                                     args.matmul_precision) for b in batches}
    print(f"\nworkload: {SIZES} relu / softmax-CE / Adam, {args.dtype}, {source}, "
          f"{args.n} samples, {args.threads} threads, matmul_precision "
          f"{args.matmul_precision}; us per step (share of the step)\n")
    header = ["phase"] + [f"batch {b}" for b in batches]
    rows = []
    for name in ORDER:
        row = [name]
        for b in batches:
            per_step = results[b][0]
            step_total = sum(per_step.values())
            row.append(f"{per_step[name] * 1e6:9.1f} ({100 * per_step[name] / step_total:4.1f}%)")
        rows.append(row)
    rows.append(["step, profiled"] + [f"{sum(results[b][0].values()) * 1e6:9.1f}"
                                       for b in batches])
    rows.append(["steps / epoch"] + [str(results[b][3]) for b in batches])
    rows.append(["epoch s, profiled"] + [f"{results[b][1]:.3f}" for b in batches])
    rows.append(["epoch s, fit()"] + [f"{results[b][2]:.3f}" for b in batches])
    _common.print_table(header, rows)
    gemm = {b: sum(results[b][0][k] for k in ("gemm_forward", "gemm_dW", "gemm_dX"))
            for b in batches}
    print("\nnon-GEMM share of the step: " + ", ".join(
        f"batch {b} {100 * (1 - gemm[b] / sum(results[b][0].values())):.1f}%"
        for b in batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
