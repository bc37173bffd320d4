"""Command line: `nnfast train | evaluate | predict | bench` (also `python -m nnfast ...`).

Errors in arguments, files or data exit with code 2 and one line on stderr, never a
traceback; Ctrl-C exits with 130.
"""
import argparse
import functools
import math
import os
import sys
import textwrap

import numpy as np

from . import __version__, _bench, _validate, datasets, plots
from ._threads import _available_cpus, set_num_threads
from .callbacks import BackupAndRestore, Callback, EarlyStopping
from .distributed import DataParallel
from ._names import HIDDEN
from .network import Network, load
from .optim import SGD, Adam
from .schedules import Constant, Cosine, ReduceOnPlateau, StepDecay

FORCING_VARS = _bench.SLOWING_VARS
RANGE_SAMPLE_ROWS = 10000        # rows looked at to judge the value range of uint8 data
DATA_HELP = ("directory of MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, ...), or of "
             "x_train.npy, y_train.npy, x_test.npy, y_test.npy (read from disk a batch at a "
             "time: data larger than memory) (default: $NNFAST_DATA, then "
             "/usr/share/datasets/fashion-mnist)")


class CommandError(Exception):
    """A problem the command line reports in one line, exiting with code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------ argument types

KIND_NAMES = {int: "integer", float: "number"}


def _int_list(text):
    """Comma-separated positive integers; an empty entry (64,,32 or a trailing comma) is
    refused, not skipped."""
    entries = text.replace(" ", "").split(",")
    if "" in entries:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers "
                                         f"without empty entries, got {text!r}")
    try:
        sizes = [int(s) for s in entries]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sizes


def _number(kind, text, low, what):
    """`text` as `kind` (int or float), finite, > low (what="positive") or >= low."""
    name = KIND_NAMES[kind]
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} {name}, got {text!r}") from None
    ok = value > low if what == "a positive" else value >= low
    if not ok or value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected {what} {name}, got {text!r}")
    return value


def _positive(kind):
    """An argparse type: a positive integer (kind=int) or finite number (kind=float)."""
    return lambda text: _number(kind, text, 0, "a positive")


def _non_negative(kind):
    """An argparse type: an integer or finite number >= 0."""
    return lambda text: _number(kind, text, 0, "a non-negative")


def _threads(text):
    """A positive integer, at most the CPUs this process may use (its affinity mask)."""
    n = _number(int, text, 0, "a positive")
    cpus = _available_cpus()
    if n > cpus:
        raise argparse.ArgumentTypeError(f"expected at most {cpus}, the CPUs this process "
                                         f"may use (os.sched_getaffinity), got {text!r}")
    return n


def _rate(text):
    """A float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _scale(text):
    """A finite number > 0, written as a number (0.0039) or a fraction (1/255)."""
    top, slash, bottom = text.partition("/")
    try:
        value = float(top) / float(bottom) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number > 0 such as 0.5 or 1/255, "
                                         f"got {text!r}")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _dtype_list(text):
    names = [s for s in text.replace(" ", "").split(",") if s]
    if not names or any(n not in ("float32", "float64") for n in names):
        raise argparse.ArgumentTypeError(f"expected float32 and/or float64, comma-separated, "
                                         f"got {text!r}")
    return names


# ------------------------------------------------------------------ the parser

def _subparser(sub, name, summary, description, examples):
    return sub.add_parser(name, help=summary, description=textwrap.fill(description, 79),
                          epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_model(p):
    p.add_argument("--model", metavar="PATH", required=True,
                   help="model file written by `nnfast train --save` or Network.save "
                        "(required)")


SCALE_RULE = ("A network multiplies every input, whatever its dtype, by its input_scale "
              "(saved in the model file); nothing else scales inputs.")


def _add_input_scale(p):
    p.add_argument("--input-scale", type=_scale, default=None, metavar="S",
                   help="multiply the samples by S (a number, or a fraction such as 1/255) "
                        "before the model, which then multiplies them by its own "
                        "input_scale (default: 1, the samples as stored)")


def _add_threads(p):
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="threads of nnfast, at most the CPUs this process may use "
                        "(default: OpenBLAS's choice, one per core)")


def _add_train(sub):
    train = _subparser(
        sub, "train", "train a network on Fashion-MNIST (or any MNIST-format IDX data)",
        "Train a dense network on Fashion-MNIST (or another directory of MNIST-format IDX "
        "files, or of .npy files) and report the test accuracy and the time; one line per "
        "epoch. The samples go in as stored (IDX pixels as uint8) and the network "
        "multiplies them by its input_scale (--input-scale). " + SCALE_RULE,
        ["nnfast train",
         "nnfast train --hidden 512,256 --epochs 20 --dropout 0.2 --save model.npz",
         "nnfast train --data ~/kmnist --validation-split 0.1 --early-stopping 3 "
         "--plot curves.png"])
    train.add_argument("--hidden", type=_int_list, default=[256, 128], metavar="N,N,...",
                       help="hidden layer sizes (default: 256,128)")
    train.add_argument("--activation", choices=sorted(HIDDEN), default="relu",
                       help="hidden activation (default: relu)")
    train.add_argument("--dropout", type=_rate, default=0.0, metavar="P",
                       help="drop each hidden unit with probability P while training, in "
                            "[0, 1) (default: 0, no dropout)")
    train.add_argument("--epochs", type=_positive(int), default=10, metavar="N",
                       help="training epochs (default: 10)")
    train.add_argument("--batch-size", type=_positive(int), default=128, metavar="N",
                       help="samples per mini-batch (default: 128)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                       help="adam (AdamW with --weight-decay) or sgd with momentum "
                            "(default: adam)")
    train.add_argument("--lr", type=_positive(float), default=None,
                       help="learning rate (default: 1e-3 for adam, 0.05 for sgd)")
    train.add_argument("--momentum", type=_rate, default=None, metavar="M",
                       help="momentum of sgd, in [0, 1); only with --optimizer sgd "
                            "(default: 0.9)")
    train.add_argument("--weight-decay", type=_non_negative(float), default=0.0,
                       help="decoupled (adam) or L2 (sgd) weight decay (default: 0)")
    train.add_argument("--validation-split", type=float, default=None, metavar="FRACTION",
                       help="hold out this fraction of the training data for validation "
                            "(default: none)")
    train.add_argument("--early-stopping", type=_positive(int), default=None,
                       metavar="PATIENCE",
                       help="stop when the validation loss (training loss without "
                            "--validation-split) has not improved for PATIENCE epochs, "
                            "and keep the best epoch's weights (default: off)")
    train.add_argument("--schedule", choices=["constant", "step", "cosine", "plateau"],
                       default="constant",
                       help="learning-rate schedule: step (x0.1 every third of the "
                            "epochs), cosine (to lr/100), plateau (x0.1 after 2 epochs "
                            "without improvement) (default: constant)")
    train.add_argument("--input-scale", type=_scale, default=None, metavar="S",
                       help="the network's input_scale, saved with it: it multiplies every "
                            "sample by S (a number, or a fraction such as 1/255) in training "
                            "and in every later prediction (default: 1/255 for uint8 data, "
                            "pixels to [0, 1]; 1 for other data)")
    train.add_argument("--seed", type=_non_negative(int), default=0,
                       help="seed of the initial weights, shuffling and dropout (default: 0)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="dtype of the weights and of all computation (default: float32)")
    train.add_argument("--matmul-precision", choices=["float32", "bfloat16"],
                       default="float32",
                       help="bfloat16: round the inputs of every matrix product to "
                            "bfloat16, with float32 sums, weights and optimizer (faster on "
                            "CPUs with bfloat16 instructions; float32 dtype only; saved "
                            "with the model) (default: float32)")
    _add_threads(train)
    train.add_argument("--data", metavar="DIR", default=None, help=DATA_HELP)
    train.add_argument("--save", metavar="PATH", default=None,
                       help="write the trained network (an .npz archive) at exactly PATH "
                            "(default: not saved)")
    train.add_argument("--backup", metavar="PATH", default=None,
                       help="back up the whole training state to PATH after every epoch; "
                            "the same command after a crash resumes from it and ends as "
                            "if never interrupted; removed when training completes "
                            "(default: no backup)")
    train.add_argument("--plot", metavar="PATH", default=None,
                       help="write a picture of the loss and accuracy per epoch - "
                            "training, validation, test - at exactly PATH (format from "
                            "its extension, PNG without one); needs matplotlib "
                            "(default: none)")
    train.add_argument("--quiet", action="store_true",
                       help="print only the final line (default: one line per epoch too)")


def _add_evaluate(sub):
    ev = _subparser(
        sub, "evaluate", "test loss, accuracy and confusion matrix of a saved model",
        "Evaluate a saved model on the test split of a data directory (MNIST-format IDX "
        "files, or x_test.npy / y_test.npy): "
        "test loss and accuracy, the confusion matrix (rows: true class, columns: "
        "predicted class) and the accuracy of each class. " + SCALE_RULE,
        ["nnfast evaluate --model model.npz",
         "nnfast evaluate --model model.npz --data ~/mnist --plot confusion.png"])
    _add_model(ev)
    ev.add_argument("--data", metavar="DIR", default=None, help=DATA_HELP)
    _add_input_scale(ev)
    ev.add_argument("--plot", metavar="PATH", default=None,
                    help="write a picture of the confusion matrix at exactly PATH "
                         "(format from its extension, PNG without one); needs "
                         "matplotlib (default: none)")
    _add_threads(ev)


def _add_predict(sub):
    pr = _subparser(
        sub, "predict", "predict the classes of samples in a .npy file",
        "Predict with a saved model: read samples from a .npy file (2-D (n, features), or "
        "(n, rows, cols) images, flattened) and write the predicted class indices (int64, "
        "shape (n,)) - or with --proba the probabilities (n, classes) - to a .npy file. "
        + SCALE_RULE + " A model trained on [0, 1] inputs takes uint8 pixels with "
        "--input-scale 1/255.",
        ["nnfast predict --model model.npz --input images.npy --output classes.npy",
         "nnfast predict --model model.npz --input images.npy --output proba.npy --proba"])
    _add_model(pr)
    pr.add_argument("--input", metavar="PATH", required=True,
                    help="samples, a .npy file: (n, features) or (n, rows, cols) "
                         "(required)")
    pr.add_argument("--output", metavar="PATH", required=True,
                    help="where to write the predictions, a .npy file (written at exactly "
                         "this path) (required)")
    _add_input_scale(pr)
    pr.add_argument("--proba", action="store_true",
                    help="write probabilities instead of class indices (default: off)")
    _add_threads(pr)


def _add_bench(sub):
    q, f = _bench.QUICK, _bench.FULL
    be = _subparser(
        sub, "bench", "time training epochs against the GEMM floor",
        "Time one training epoch of 784-256-128-10 (ReLU, softmax, Adam) on synthetic data "
        "next to its GEMM floor: the same matrix products alone, through nnfast's BLAS. "
        "Prints the environment (versions, OpenBLAS variables, the BLAS kernel), then "
        "seconds per epoch (medians) and nnfast / floor. Rows whose timings contradict "
        "each other (nnfast faster than its floor, a floor that rises with the batch size, "
        "widely spread epochs) are measured again, and reported on an 'unreliable: the "
        "machine was busy' line if they stay so. Reruns itself without "
        "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which force slower kernels (set "
        "NNFAST_BENCH_KEEP_ENV=1 to keep them). For the full comparison with pure NumPy, "
        "PyTorch and JAX on Fashion-MNIST, run `python -m bench` in a source checkout.",
        ["nnfast bench", "nnfast bench --full",
         "nnfast bench --batch 128 --dtype float64 --repeat 9 --threads 1"])
    be.add_argument("--full", action="store_true",
                    help=f"{f['samples']} samples, float32 and float64 (default: quick, "
                         f"{q['samples']} samples, float32)")
    be.add_argument("--batch", type=_int_list, default=None, metavar="N,N,...",
                    help=f"batch sizes (default: {','.join(map(str, q['batch']))})")
    be.add_argument("--dtype", type=_dtype_list, default=None, metavar="DTYPE,...",
                    help="float32 and/or float64 (default: float32; both with --full)")
    be.add_argument("--samples", type=_positive(int), default=None, metavar="N",
                    help=f"samples per epoch (default: {q['samples']}; {f['samples']} "
                         "with --full)")
    be.add_argument("--repeat", type=_positive(int), default=None, metavar="N",
                    help=f"timed epochs after one warm-up (default: {q['repeat']})")
    _add_threads(be)


def build_parser():
    parser = _Parser(
        prog="nnfast", description="Train and use multi-layer perceptrons with nnfast.",
        epilog="examples:\n  nnfast train --save model.npz --plot curves.png\n"
               "  nnfast evaluate --model model.npz --plot confusion.png\n"
               "  nnfast predict --model model.npz --input x.npy --output y.npy\n"
               "  nnfast bench\n\n`nnfast COMMAND --help` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nnfast {__version__}",
                        help="print nnfast's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_bench(sub)
    return parser


# ------------------------------------------------------------------ shared helpers

def _load_data(data_dir):
    """(X, y), (X_test, y_test) from DIR, else $NNFAST_DATA, else the Debian package, with
    the samples as stored: IDX images as their uint8 pixels, .npy files left on disk
    (np.memmap, whose file fit reads with pread) when nnfast reads their dtype in place
    (uint8, float32, float64), read into memory otherwise (int64, float16, ...:
    converted once, as `predict` does). The network scales them (its input_scale).
    Labels: int64, integers >= 0 (checked)."""
    if data_dir is not None:                   # an explicit directory is the only place looked
        if os.path.isfile(os.path.join(data_dir, datasets.NPY_FILES[0])):
            parts = datasets.load_npy_dir(data_dir)
            return tuple((_readable(X), y) for X, y in parts)
        return datasets.load_mnist_format([data_dir], raw=True)
    dirs = [d for d in (os.environ.get("NNFAST_DATA"),) if d] + list(datasets.DEFAULT_DIRS)
    return datasets.load_mnist_format(dirs, raw=True)


def _readable(X):
    """A memmap as it is when nnfast reads its dtype in place (fit and evaluate then read
    its file with pread, see _validate.source), else its data in memory."""
    if X.dtype.name in _validate.STREAM_DTYPES:
        return X
    return np.array(X)


def _few(values, limit=10):
    """Up to `limit` integers, comma-separated, then "..." for the rest."""
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _n_classes(y, y_test):
    """K, for training labels that are the integers 0..K-1, each of them present (test
    labels may miss some, not go beyond); CommandError naming the missing classes, the
    values found and the fix otherwise."""
    found = np.unique(y)
    k = int(max(found[-1], y_test.max())) + 1
    missing = np.setdiff1d(np.arange(k), found)
    if missing.size:
        raise CommandError(
            f"the class labels must be the integers 0..K-1 with every class in the training "
            f"labels; the training labels hold {found.size} distinct values "
            f"({_few(found)}), so classes {_few(missing)} of 0..{k - 1} have no training "
            f"sample. Relabel them 0..{found.size - 1}, e.g. with np.unique(y_train, "
            "return_inverse=True)[1], and the test labels with the same mapping")
    return k


def _scale_inputs(net, X, scale, command):
    """Apply --input-scale: `net` multiplies its inputs by `scale` too (the data stay as
    they are, read in place). Notes on stderr when uint8 samples meet a network that
    takes them unscaled (input_scale 1) and no --input-scale was given."""
    if scale is not None:
        net.input_scale *= scale
    elif X.dtype == np.uint8 and net.input_scale == 1:
        print(f"nnfast {command}: note: uint8 samples go into the model unscaled (its "
              f"input_scale is 1); if it was trained on [0, 1] inputs, pass --input-scale "
              f"{1 / 255!r}", file=sys.stderr)


def _default_scale(X):
    """train's input_scale without --input-scale: 1/255 for uint8 data, else 1."""
    return 1 / 255 if X.dtype == np.uint8 else 1.0


def _uint8_range_note(X, scale):
    """A note when uint8 training data, scaled by the default 1/255, stay far below 1
    (e.g. 0..16 digit intensities): judged on the first rows only (data may be on disk)."""
    if X.dtype != np.uint8 or X.shape[0] == 0:
        return None
    top = int(X[:RANGE_SAMPLE_ROWS].max())
    if top >= 64 or top == 0:
        return None
    return (f"note: the uint8 training samples go up to {top}, so input_scale 1/255 puts "
            f"them in [0, {top / 255:.3g}]; for [0, 1] pass --input-scale 1/{top}")


def _mpi_world():
    """COMM_WORLD when this process was started by mpiexec with more than one process
    (MPICH's PMI_SIZE, Open MPI's OMPI_COMM_WORLD_SIZE), else None."""
    size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE")
    if not size or not size.isdigit() or int(size) < 2:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise CommandError(f"started by mpiexec with {size} processes, but mpi4py is not "
                           "installed: pip install nnfast[mpi]") from None
    return MPI.COMM_WORLD


def _check_plot(path):
    """Before any long work: matplotlib is there and `path` can take a picture."""
    if path is None:
        return
    try:
        plots.require_matplotlib()
    except ImportError:
        raise CommandError(f"--plot needs matplotlib: {plots.INSTALL_HINT}") from None
    try:
        plots.check_output_path(path)
    except ValueError as exc:
        raise CommandError(f"--plot: {exc}") from None


def _check_output(path, option):
    """Before any long work: a file can be written at `path` (given with `option`)."""
    try:
        _validate.check_output_file(path)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None


def _load_model(path):
    net = load(path)
    if net.output != "softmax":
        raise CommandError(f"{path} is a {net.output}-output network; this command needs a "
                           "softmax classifier")
    return net


def _describe(net):
    return "-".join(str(s) for s in net.sizes)


# ------------------------------------------------------------------ train

def _schedule(args, monitor):
    third = max(1, args.epochs // 3)
    return {"constant": lambda: Constant(),
            "step": lambda: StepDecay(step_size=third, gamma=0.1),
            "cosine": lambda: Cosine(epochs=args.epochs, min_lr=(args.lr or 1e-3) / 100),
            "plateau": lambda: ReduceOnPlateau(monitor=monitor, factor=0.1, patience=2),
            }[args.schedule]()


class _EpochLog(Callback):
    """Records the test loss and accuracy after every epoch and, unless quiet, prints one
    line: training loss, validation loss, test loss and accuracy, learning rate, seconds."""

    def __init__(self, Xt, yt, epochs, quiet):
        self.Xt, self.yt, self.epochs, self.quiet = Xt, yt, epochs, quiet
        self.test_loss, self.test_accuracy = [], []

    def on_epoch_end(self, net, epoch, logs):
        test = net.evaluate(self.Xt, self.yt)
        loss, acc = test["loss"], test["accuracy"]
        self.test_loss.append(loss)
        self.test_accuracy.append(acc)
        if not self.quiet:
            val = f"  val_loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
            print(f"epoch {epoch + 1:>3}/{self.epochs}  loss {logs['loss']:.4f}{val}  "
                  f"test_loss {loss:.4f}  test_accuracy {acc:.4f}  lr {logs['lr']:.3g}  "
                  f"{logs['epoch_time']:.2f}s", flush=True)
        return False


def _check_optimizer_options(args):
    """Options of one optimizer given with the other: refused, not ignored."""
    if args.momentum is not None and args.optimizer != "sgd":
        raise CommandError(f"--momentum applies to --optimizer sgd only; {args.optimizer} "
                           "has no momentum option (drop --momentum, or add --optimizer "
                           "sgd)")


def _optimizer(args):
    if args.optimizer == "adam":
        return Adam(lr=args.lr or 1e-3, weight_decay=args.weight_decay)
    momentum = 0.9 if args.momentum is None else args.momentum
    return SGD(lr=args.lr or 0.05, momentum=momentum, nesterov=False,
               weight_decay=args.weight_decay)


def _train(args):
    comm = _mpi_world()
    lead = comm is None or comm.Get_rank() == 0   # under mpiexec rank 0 alone talks and writes
    quiet = args.quiet or not lead
    _check_optimizer_options(args)
    if args.matmul_precision == "bfloat16" and args.dtype != "float32":
        raise CommandError("--matmul-precision bfloat16 needs --dtype float32 (its sums, "
                           f"weights and optimizer are float32), got --dtype {args.dtype}")
    _check_plot(args.plot if lead else None)
    if args.save and lead:
        _check_output(args.save, "--save")
    (X, y), (Xt, yt) = _load_data(args.data)
    if args.threads:
        set_num_threads(args.threads)
    elif comm is not None:                      # the ranks of a host share its cores
        set_num_threads(DataParallel(comm).threads(os.cpu_count() or 1))
    n_classes = _n_classes(y, yt)
    sizes = [X.shape[1], *args.hidden, n_classes]
    scale = _default_scale(X) if args.input_scale is None else args.input_scale
    net = Network(sizes, hidden=args.activation, output="softmax", dtype=args.dtype,
                  seed=args.seed, dropout=args.dropout, input_scale=scale,
                  matmul_precision=args.matmul_precision)
    opt = _optimizer(args)
    if not quiet:
        ranks = f", {comm.Get_size()} MPI ranks" if comm is not None else ""
        print(f"nnfast: {net}, {opt}, batch {args.batch_size}{ranks}, {X.shape[0]} train / "
              f"{Xt.shape[0]} test samples", flush=True)
        forced = [f"{k}={os.environ[k]}" for k in FORCING_VARS if k in os.environ]
        if forced:
            print(f"note: {' '.join(forced)} set: OpenBLAS then uses those (possibly "
                  "slower) kernels; unset it for the CPU's own", flush=True)
        note = _uint8_range_note(X, scale) if args.input_scale is None else None
        if note:
            print(note, flush=True)
    Xt = _validate.network_inputs(net, Xt, "X_test")      # refused before any training
    _validate.network_targets(net, yt, Xt.shape[0], "y_test")
    monitor = "val_loss" if args.validation_split else "loss"
    log = _EpochLog(Xt, yt, args.epochs, quiet)
    # The log comes first: it sees each epoch's own weights, before EarlyStopping restores.
    callbacks = [log] if lead and (not quiet or args.plot) else []
    callbacks.append(_schedule(args, monitor))
    if args.early_stopping:
        callbacks.append(EarlyStopping(monitor=monitor, patience=args.early_stopping))
    if args.backup:
        callbacks.append(BackupAndRestore(args.backup))
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, optimizer=opt,
                   verbose=False, validation_split=args.validation_split,
                   callbacks=callbacks, comm=comm)
    if not lead:
        return 0
    train_seconds = sum(hist.epoch_time)
    epochs = len(hist.epoch_time)               # fewer when stopped early
    test = net.evaluate(Xt, yt)
    loss, acc = test["loss"], test["accuracy"]
    print(f"test accuracy {acc:.4f}  test loss {loss:.4f}  ({epochs} epochs, "
          f"{train_seconds:.2f} s training, {train_seconds / epochs:.3f} s/epoch)")
    if args.save:
        net.save(args.save)
        if not args.quiet:
            print(f"saved to {args.save}")
    if args.plot:
        plots.plot_training_curves(args.plot, hist, log.test_loss, log.test_accuracy,
                                   title=f"nnfast {_describe(net)}")
        if not args.quiet:
            print(f"plotted to {args.plot}")
    return 0


# ------------------------------------------------------------------ evaluate

def format_confusion(counts):
    """Lines of a confusion matrix: a header of class indices, then one row per true class
    with its counts and the class's accuracy, columns right-aligned."""
    k = counts.shape[0]
    corner = "true\\pred"
    width = max(len(str(int(counts.max()))), len(str(k - 1)), 3)
    label = max(len(corner), len(str(k - 1)))
    lines = [f"{corner:>{label}}  " + " ".join(f"{j:>{width}}" for j in range(k))
             + "  accuracy"]
    for i in range(k):
        total = counts[i].sum()
        acc = f"{counts[i, i] / total:.4f}" if total else "-"
        lines.append(f"{i:>{label}}  " + " ".join(f"{int(c):>{width}}" for c in counts[i])
                     + f"  {acc:>8}")
    return lines


def _evaluate(args):
    _check_plot(args.plot)
    net = _load_model(args.model)
    _, (Xt, yt) = _load_data(args.data)
    if Xt.shape[1] != net.sizes[0]:
        raise CommandError(f"{args.model} expects {net.sizes[0]} features per sample, the "
                           f"test images have {Xt.shape[1]}")
    if yt.max() >= net.sizes[-1]:
        raise CommandError(f"{args.model} has {net.sizes[-1]} classes, the test labels go "
                           f"up to {int(yt.max())}")
    if args.threads:
        set_num_threads(args.threads)
    _scale_inputs(net, Xt, args.input_scale, "evaluate")
    scores = net.evaluate(Xt, yt)
    counts = plots.confusion_matrix(yt, net.predict(Xt), net.sizes[-1])
    print(f"model {_describe(net)} on {Xt.shape[0]} test samples")
    print(f"test loss {scores['loss']:.4f}  test accuracy {scores['accuracy']:.4f}")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print("\n".join(format_confusion(counts)))
    if args.plot:
        plots.plot_confusion_matrix(args.plot, counts, title=f"nnfast {_describe(net)}: "
                                    f"test accuracy {scores['accuracy']:.4f}")
        print(f"plotted to {args.plot}")
    return 0


# ------------------------------------------------------------------ predict

def read_samples(path, n_features):
    """Samples from a .npy file as (n, n_features), values as stored: samples of more
    dimensions (images) are flattened, as the API does; n may be 0. CommandError naming
    the file for anything else."""
    try:
        X = np.load(os.fspath(path), allow_pickle=False)
    except OSError:                 # missing or unreadable: the OS's message names it
        raise
    except Exception as exc:        # not .npy, damaged, pickled objects, ...
        raise CommandError(f"{path} is not a readable .npy file: "
                           f"{_validate.npy_problem(exc)}") from None
    if not isinstance(X, np.ndarray):
        X.close()
        raise CommandError(f"{path} is an .npz archive; expected one array in a .npy file")
    if X.ndim > 2 and math.prod(X.shape[1:]) == n_features:
        X = X.reshape(X.shape[0], n_features)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise CommandError(f"{path} holds an array of shape {X.shape}; the model expects "
                           f"(n, {n_features}) or images (n, rows, cols, ...) of "
                           f"{n_features} values each")
    return X


def _predict(args):
    _check_output(args.output, "--output")
    net = _load_model(args.model)
    X = read_samples(args.input, net.sizes[0])
    _scale_inputs(net, X, args.input_scale, "predict")
    if args.threads:
        set_num_threads(args.threads)
    if args.proba:
        out, what = net.predict_proba(X), "probabilities"
    else:
        out, what = net.predict(X), "class indices"
    with open(args.output, "wb") as f:        # np.save(name) would append ".npy"
        np.save(f, out)
    print(f"predicted {X.shape[0]} samples with {args.model} ({_describe(net)}): {what}, "
          f"{out.dtype} {out.shape} -> {args.output}")
    return 0


# ------------------------------------------------------------------ bench

def _bench_command(args):
    if _bench.slowing_vars_set():
        return _bench.clean_rerun(args.argv)
    preset = _bench.FULL if args.full else _bench.QUICK
    if args.threads:
        set_num_threads(args.threads)
    out = functools.partial(print, flush=True)
    out("\n".join(_bench.environment_lines()))
    try:
        _bench.run(args.batch or preset["batch"], args.dtype or preset["dtype"],
                   args.samples or preset["samples"], args.repeat or preset["repeat"], out)
    except RuntimeError as exc:               # nnfast differs from NumPy: no timings
        print(f"nnfast bench: {exc}", file=sys.stderr)
        return 1
    out("\nx floor: nnfast's epoch over the time of its matrix products alone. Full "
        "comparison (NumPy, PyTorch, JAX): python -m bench in a source checkout.")
    return 0


# ------------------------------------------------------------------ main

COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict,
            "bench": _bench_command}


def main(argv=None):
    """Run `nnfast` with `argv` (default: sys.argv[1:]); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return COMMANDS[args.command](args)
    except (CommandError, ValueError, TypeError, OSError, FloatingPointError,
            MemoryError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"nnfast {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnfast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
