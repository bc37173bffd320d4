"""Run by tests/test_mpi.py under `mpiexec -n N python mpi_worker.py CASE OUTDIR` (and
with N = 1 without mpiexec for the single-process reference): trains and writes what each
rank ended with to OUTDIR."""
import json
import sys

import numpy as np

import nnfast as nf


def data(n=203, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 12))
    y = (X[:, :3].sum(axis=1) > X[:, 3]).astype(np.int64) + (X[:, 4] > 0.5)
    return X, y


def train(comm, optimizer, batch_size, dtype=np.float64, zeros=None, **kw):
    X, y = data()
    if zeros is not None:              # half the entries 0: as a scipy CSR matrix, or dense
        X[np.abs(X) < 0.7] = 0
        if zeros == "csr":
            from scipy import sparse
            X = sparse.csr_matrix(X)
    net = nf.Network([12, 16, 8, 3], hidden=["tanh", "relu"], dtype=dtype, seed=5)
    hist = net.fit(X, y, epochs=3, batch_size=batch_size, optimizer=optimizer,
                   verbose=False, comm=comm, **kw)
    return net, hist


def main():
    case, out = sys.argv[1], sys.argv[2]
    comm = None
    rank = 0
    if case != "single":
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
    if case in ("single", "parallel"):
        opt = sys.argv[3]
        batch = int(sys.argv[4])
        optimizer = nf.Adam(lr=1e-2) if opt == "adam" else nf.SGD(lr=0.05, momentum=0.9,
                                                                  nesterov=True,
                                                                  weight_decay=1e-3)
        kw = {}
        for zeros in ("csr", "dense"):
            if zeros in sys.argv[5:]:
                kw["zeros"] = zeros
        if "weighted" in sys.argv[5:]:         # sample weights, some of them 0
            weights = np.random.default_rng(1).uniform(0, 3, data()[0].shape[0])
            weights[::7] = 0
            kw["sample_weight"] = weights
        net, hist = train(comm, optimizer, batch, **kw)
        np.save(f"{out}/params_{rank}.npy", net._flat_params)
        with open(f"{out}/hist_{rank}.json", "w") as f:
            json.dump(dict(loss=hist.loss, batch_loss=hist.batch_loss,
                           accuracy=hist.accuracy, comm_time=hist.comm_time,
                           t=optimizer.t), f)
    elif case == "bad_shard":            # rank 1's data holds a NaN
        X, y = data()
        if rank == 1:
            X[7, 3] = np.nan
        net = nf.Network([12, 16, 3], seed=0)
        try:
            net.fit(X, y, epochs=1, verbose=False, comm=comm)
        except ValueError as exc:
            print(f"rank {rank}: ValueError: {exc}", flush=True)
            sys.exit(3)
        print(f"rank {rank}: trained", flush=True)
    elif case == "mismatch":             # the ranks disagree on the batch size
        X, y = data()
        net = nf.Network([12, 16, 3], seed=0)
        try:
            net.fit(X, y, epochs=1, batch_size=16 + rank, verbose=False, comm=comm)
        except ValueError as exc:
            print(f"rank {rank}: ValueError: {exc}", flush=True)
            sys.exit(3)
    elif case == "callback_fails":       # rank 1's callback raises after epoch 2
        class Boom(nf.callbacks.Callback):
            def on_epoch_end(self, net, epoch, logs):
                if rank == 1 and epoch == 1:
                    raise RuntimeError("boom")
                return False
        X, y = data()
        try:
            nf.Network([12, 16, 3], seed=0).fit(X, y, epochs=4, verbose=False, comm=comm,
                                                callbacks=[Boom()])
        except (RuntimeError, ValueError) as exc:
            print(f"rank {rank}: {type(exc).__name__}: {exc}", flush=True)
            sys.exit(3)
    elif case == "file_truncated":       # rank 1's own copy of X shrinks after epoch 1
        import os
        X, y = data()
        path = f"{out}/x_{rank}.npy"
        np.save(path, X)

        class Shrink(nf.callbacks.Callback):
            def on_epoch_end(self, net, epoch, logs):
                if rank == 1 and epoch == 0:
                    os.truncate(path, os.path.getsize(path) // 2)
                return False
        try:
            nf.Network([12, 16, 3], seed=0).fit(path, y, epochs=3, verbose=False,
                                                comm=comm, callbacks=[Shrink()])
        except (OSError, ValueError) as exc:
            print(f"rank {rank}: {type(exc).__name__}: {exc}", flush=True)
            sys.exit(3)
    elif case == "early_stop_on_one_rank":   # only rank 0's callback stops: all stop
        class StopOnRank0(nf.callbacks.Callback):
            def on_epoch_end(self, net, epoch, logs):
                return rank == 0 and epoch == 1
        X, y = data()
        hist = nf.Network([12, 16, 3], seed=0).fit(X, y, epochs=5, verbose=False,
                                                   comm=comm, callbacks=[StopOnRank0()])
        print(f"rank {rank}: {len(hist.loss)} epochs", flush=True)
    elif case == "interrupt":            # Ctrl-C on rank 1 only, early in epoch 2
        import os
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)   # even in a background job

        class CtrlC(nf.callbacks.Callback):
            def on_epoch_begin(self, net, epoch, optimizer):
                if rank == 1 and epoch == 1:
                    os.kill(os.getpid(), signal.SIGINT)

        X, y = data()
        net = nf.Network([12, 16, 3], seed=0)
        try:
            net.fit(X, y, epochs=5, batch_size=32, verbose=False, comm=comm,
                    callbacks=[CtrlC()])
        except KeyboardInterrupt as exc:
            np.save(f"{out}/params_{rank}.npy", net._flat_params)
            print(f"rank {rank}: interrupted after {len(exc.history.batch_loss)} steps",
                  flush=True)
    elif case in ("raise_keyboard", "raise_systemexit"):     # rank 1's callback raises
        class Raise(nf.callbacks.Callback):
            def on_epoch_end(self, net, epoch, logs):
                if rank == 1 and epoch == 1:
                    raise KeyboardInterrupt if case == "raise_keyboard" else SystemExit(4)

        X, y = data()
        try:
            nf.Network([12, 16, 3], seed=0).fit(X, y, epochs=5, batch_size=32,
                                                verbose=False, comm=comm,
                                                callbacks=[Raise()])
        except (KeyboardInterrupt, SystemExit, ValueError) as exc:
            print(f"rank {rank}: {type(exc).__name__}", flush=True)
    elif case == "disagree":             # argv[3]: what rank 1 passes differently
        what = sys.argv[3]
        other = rank == 1
        opt = {"optimizer": nf.SGD(lr=0.1) if other else nf.Adam(),
               "lr": nf.Adam(lr=0.01 if other else 0.001),
               "eps": nf.Adam(eps=1e-40 if other else 1e-8)}.get(what, nf.Adam())
        hidden = "tanh" if other and what == "activation" else "relu"
        dropout = 0.1 if other and what == "dropout" else 0.0
        callbacks = [nf.schedules.StepDecay(step_size=3 if other and what == "schedule"
                                            else 2)]
        X, y = data()
        try:
            nf.Network([12, 16, 3], hidden=hidden, dropout=dropout, dtype=np.float32,
                       seed=0).fit(X, y, epochs=2, batch_size=16, verbose=False, comm=comm,
                                   optimizer=opt, callbacks=callbacks)
            print(f"rank {rank}: trained", flush=True)
        except ValueError as exc:       # one write per line: the ranks' lines don't mix
            sys.stdout.write(f"rank {rank}: ValueError: {exc}\n")
            sys.stdout.flush()
    elif case == "backup":               # argv[3]: ref, crash (rank 0 fails) or resume
        phase = sys.argv[3]

        class Crash(nf.callbacks.Callback):
            def on_epoch_end(self, net, epoch, logs):
                if phase == "crash" and rank == 0 and epoch == 2:
                    raise RuntimeError("crash")

        X, y = data()
        net = nf.Network([12, 16, 3], dropout=0.25, seed=2)
        cbs = [nf.schedules.StepDecay(step_size=2, gamma=0.5),
               nf.callbacks.BackupAndRestore(f"{out}/backup.npz", save_freq=5), Crash()]
        try:
            net.fit(X, y, epochs=5, batch_size=16, verbose=False, comm=comm, callbacks=cbs)
        except (RuntimeError, ValueError) as exc:
            print(f"rank {rank}: {type(exc).__name__}", flush=True)
            return
        np.save(f"{out}/{phase}_{rank}.npy", net._flat_params)
    elif case == "dropout":              # different masks per rank, identical weights
        net, hist = train(comm, nf.Adam(lr=1e-2), 32)
        np.save(f"{out}/params_{rank}.npy", net._flat_params)
        net2 = nf.Network([12, 16, 8, 3], dropout=0.5, seed=5)
        net2.fit(*data(), epochs=2, batch_size=32, verbose=False, comm=comm)
        np.save(f"{out}/dropout_{rank}.npy", net2._flat_params)


if __name__ == "__main__":
    main()
