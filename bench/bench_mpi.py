"""Data-parallel training over MPI: throughput of 1 and 2 ranks on this machine, the
Allreduce's share of a step, and what that predicts for N hosts.

Workload W (784-256-128-10, ReLU, softmax-CE, Adam, float32, 60,000 samples), global
batch B. Three ways to use the machine's cores, each in processes of its own:

    1 process x 1 thread      the baseline: one core
    1 process x 2 threads     nnfast's own thread team (the default without MPI)
    2 ranks x 1 thread        mpiexec -n 2, fit(..., comm=MPI.COMM_WORLD): each rank
                              computes B/2 samples, one Allreduce of the flat gradients

For the 2-rank run, "allreduce" is the time ranks spend in the Allreduce per step (it
includes waiting for the slower rank), and "allreduce alone" the same call timed in a
loop with nothing else running. The model at the end: a step on N hosts costs
compute(B / N) + optimizer + Allreduce(S bytes), Allreduce by the ring algorithm
2 (N - 1) / N * S / bandwidth + 2 (N - 1) * latency (bench/README.md).

    python bench/bench_mpi.py              # batch 128,512, 3 epochs
    python bench/bench_mpi.py --quick      # 12,000 samples, batch 128, 2 epochs
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from bench_train import SIZES, load_data  # noqa: E402

HERE = os.path.abspath(__file__)


def mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def worker(args):
    """Train W for --epochs (after a warm-up epoch); rank 0 prints a JSON line."""
    import nnfast as nf
    comm = None
    if args.worker == "mpi":
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    nf.set_num_threads(args.threads)
    X, y, _ = load_data(args.n, np.float32, args.data)
    net = nf.Network(SIZES, seed=0)
    opt = nf.Adam(lr=1e-3)
    net.fit(X, y, epochs=1, batch_size=args.batch, optimizer=opt, verbose=False, comm=comm)
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch, optimizer=opt,
                   verbose=False, comm=comm)
    steps = -(-X.shape[0] // args.batch)
    result = {"epoch_s": float(np.median(hist.epoch_time)), "steps": steps,
              "samples_per_s": X.shape[0] / float(np.median(hist.epoch_time)),
              "params": net.n_params, "accuracy": net.evaluate(X[:5000], y[:5000])["accuracy"]}
    # the optimizer over the whole flat buffer on one core, as a data-parallel step runs
    # it after the Allreduce (TrainStep.update)
    step, rule = net._workspace.step, opt._rule()
    t0 = time.perf_counter()
    for _ in range(50):
        step.update(opt.t + 1, rule, 1)
    result["optimizer_us"] = (time.perf_counter() - t0) / 50 * 1e6
    if comm is not None:
        result["allreduce_us"] = float(np.median(hist.comm_time)) / steps * 1e6
        buf = net._flat_grads_ext.copy()
        comm.Barrier()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(50):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append((time.perf_counter() - t0) / 50)
        result["allreduce_alone_us"] = float(np.median(times)) * 1e6
        result["identical"] = bool(comm.allreduce(
            int(np.array_equal(comm.bcast(net._flat_params, root=0), net._flat_params)),
            op=MPI.MIN))
        if comm.Get_rank() != 0:
            return 0
    _common.emit(result)
    return 0


def run(kind, threads, batch, args):
    cmd = [sys.executable, HERE, "--worker", kind, "--threads", str(threads), "--batch",
           str(batch), "--epochs", str(args.epochs), "--n", str(args.n)]
    if args.data:
        cmd += ["--data", args.data]
    if kind == "mpi":
        cmd = [mpiexec(), "-n", "2"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model(single, mpi, batch, hosts, bandwidth, latency):
    """Samples / s on `hosts` hosts (one rank each, one core), from the measured
    single-core step, optimizer and message size, with a ring Allreduce."""
    step = single["epoch_s"] / single["steps"] * 1e6                  # us, batch B, 1 core
    opt = single["optimizer_us"]
    compute = (step - opt) / hosts
    size = (single["params"] + 3) * 4
    allreduce = (0.0 if hosts == 1 else
                 2 * (hosts - 1) / hosts * size / bandwidth * 1e6 + 2 * (hosts - 1) * latency)
    return batch / ((compute + opt + allreduce) * 1e-6), allreduce


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="128,512")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--data", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="12,000 samples, batch 128, 2 epochs")
    args = p.parse_args(argv)
    if args.worker:
        args.batch = int(args.batch)
        return worker(args)
    _common.reexec_without_slowing_vars()
    if args.quick:
        args.batch, args.epochs, args.n = "128", 2, 12000
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("bench_mpi: mpi4py is not installed (pip install nnfast[mpi]); skipped")
        return 0
    if mpiexec() is None:
        print("bench_mpi: no mpiexec on PATH (pip install mpich); skipped")
        return 0
    print("\n".join(_common.environment_report()))
    batches = [int(b) for b in args.batch.split(",")]
    rows, measured = [], {}
    for b in batches:
        one = run("single", 1, b, args)
        two = run("single", 2, b, args)
        mpi = run("mpi", 1, b, args)
        measured[b] = (one, mpi)
        if not mpi["identical"]:
            raise RuntimeError("the ranks' weights differ")
        step = mpi["epoch_s"] / mpi["steps"] * 1e6
        for name, r in (("1 process x 1 thread", one), ("1 process x 2 threads", two),
                        ("2 ranks x 1 thread", mpi)):
            rows.append([str(b), name, f"{r['samples_per_s']:,.0f}",
                         f"{r['samples_per_s'] / one['samples_per_s']:.2f}x",
                         f"{r['epoch_s'] / r['steps'] * 1e6:.0f}",
                         f"{r['allreduce_us']:.0f} ({100 * r['allreduce_us'] / step:.0f}%)"
                         if "allreduce_us" in r else "-",
                         f"{r['allreduce_alone_us']:.0f}" if "allreduce_alone_us" in r
                         else "-"])
    print(f"\nworkload: {SIZES} relu / softmax-CE / Adam, float32, {args.n} samples, "
          f"median of {args.epochs} epochs; message {(one['params'] + 3) * 4 / 2**20:.2f} "
          "MiB (flat gradients + loss, correct count, Ctrl-C flag)\n")
    _common.print_table(["batch", "configuration", "samples/s", "vs 1 core", "us/step",
                         "allreduce us/step", "allreduce alone us"], rows)
    print(f"\noptimizer (Adam) over the whole flat buffer on one core: "
          f"{measured[batches[0]][0]['optimizer_us']:.0f} us")
    print("model, one rank per host (ring Allreduce; compute and optimizer per core as "
          "measured above):")
    rows = []
    for b in batches:
        one, mpi = measured[b]
        for net_name, bw, lat in (("10 GbE", 1.25e9, 10.0), ("100 Gb/s IB", 12.5e9, 1.5)):
            cells = []
            for hosts in (1, 2, 4, 8, 16):
                rate, ar = model(one, mpi, b, hosts, bw, lat)
                cells.append(f"{rate:,.0f} ({ar:.0f} us)")
            rows.append([str(b), net_name] + cells)
    _common.print_table(["batch", "network"] + [f"{h} hosts: samples/s (allreduce)"
                                                for h in (1, 2, 4, 8, 16)], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
