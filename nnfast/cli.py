"""Command line: `nnfast train` (also `python -m nnfast train`).

Errors in arguments or data exit with code 2 and one line on stderr, never a traceback.
"""
import argparse
import os
import sys


from . import datasets
from ._threads import set_num_threads
from .network import HIDDEN, Network
from .callbacks import Callback, EarlyStopping
from .optim import SGD, Adam
from .schedules import Constant, Cosine, ReduceOnPlateau, StepDecay

FORCING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _int_list(text):
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}")
        if not value > 0 or value != value:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nnfast", description="Train and use multi-layer perceptrons with nnfast.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train = sub.add_parser(
        "train", help="train a network on Fashion-MNIST (or any MNIST-format IDX data)",
        description="Train a dense network on Fashion-MNIST (or another directory of "
                    "MNIST-format IDX files) and report the test accuracy and the time.")
    train.add_argument("--hidden", type=_int_list, default=[256, 128], metavar="N,N,...",
                       help="hidden layer sizes (default: 256,128)")
    train.add_argument("--activation", choices=sorted(HIDDEN), default="relu",
                       help="hidden activation (default: relu)")
    train.add_argument("--epochs", type=_positive(int), default=10, help="(default: 10)")
    train.add_argument("--batch-size", type=_positive(int), default=128,
                       help="(default: 128)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                       help="(default: adam)")
    train.add_argument("--lr", type=_positive(float), default=None,
                       help="learning rate (default: 1e-3 for adam, 0.05 for sgd)")
    train.add_argument("--momentum", type=float, default=0.9,
                       help="sgd momentum (default: 0.9)")
    train.add_argument("--weight-decay", type=float, default=0.0,
                       help="decoupled (adam) or L2 (sgd) weight decay (default: 0)")
    train.add_argument("--validation-split", type=float, default=None, metavar="FRACTION",
                       help="hold out this fraction of the training data for validation")
    train.add_argument("--early-stopping", type=_positive(int), default=None,
                       metavar="PATIENCE",
                       help="stop when the validation loss (training loss without "
                            "--validation-split) has not improved for PATIENCE epochs, "
                            "and keep the best epoch's weights")
    train.add_argument("--schedule", choices=["constant", "step", "cosine", "plateau"],
                       default="constant",
                       help="learning-rate schedule: step (x0.1 every third of the "
                            "epochs), cosine (to lr/100), plateau (x0.1 after 2 epochs "
                            "without improvement); default constant")
    train.add_argument("--seed", type=int, default=0, help="(default: 0)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="(default: float32)")
    train.add_argument("--threads", type=_positive(int), default=None,
                       help="BLAS threads (default: OpenBLAS's choice)")
    train.add_argument("--data", metavar="DIR", default=None,
                       help="directory of MNIST-format IDX files (default: $NNFAST_DATA, "
                            "then /usr/share/datasets/fashion-mnist)")
    train.add_argument("--save", metavar="PATH", default=None,
                       help="write the trained network to PATH (.npz)")
    train.add_argument("--quiet", action="store_true", help="print only the final line")
    return parser


def _schedule(args, monitor):
    third = max(1, args.epochs // 3)
    return {"constant": lambda: Constant(),
            "step": lambda: StepDecay(step_size=third, gamma=0.1),
            "cosine": lambda: Cosine(epochs=args.epochs, min_lr=(args.lr or 1e-3) / 100),
            "plateau": lambda: ReduceOnPlateau(monitor=monitor, factor=0.1, patience=2),
            }[args.schedule]()


class _EpochLine(Callback):
    """Prints one line per epoch: training loss, test loss and accuracy, seconds."""

    def __init__(self, net, Xt, Yt, epochs):
        self.net, self.Xt, self.Yt, self.epochs = net, Xt, Yt, epochs

    def on_epoch_end(self, net, epoch, logs):
        loss, acc = net._loss_accuracy(self.Xt, self.Yt)
        val = f"  val_loss {logs['val_loss']:.4f}" if "val_loss" in logs else ""
        print(f"epoch {epoch + 1:>3}/{self.epochs}  loss {logs['loss']:.4f}{val}  "
              f"test_loss {loss:.4f}  test_accuracy {acc:.4f}  lr {logs['lr']:.3g}  "
              f"{logs['epoch_time']:.2f}s", flush=True)
        return False


def _train(args):
    if args.data is not None:                  # an explicit directory is the only place looked
        (X, y), (Xt, yt) = datasets.load_mnist_format([args.data])
    else:
        (X, y), (Xt, yt) = datasets.load_fashion_mnist()
    if args.threads:
        set_num_threads(args.threads)
    n_classes = int(max(y.max(), yt.max())) + 1
    sizes = [X.shape[1], *args.hidden, n_classes]
    net = Network(sizes, hidden=args.activation, output="softmax", dtype=args.dtype,
                  seed=args.seed)
    if args.optimizer == "adam":
        opt = Adam(lr=args.lr or 1e-3, weight_decay=args.weight_decay)
    else:
        opt = SGD(lr=args.lr or 0.05, momentum=args.momentum, nesterov=False,
                  weight_decay=args.weight_decay)
    if not args.quiet:
        print(f"nnfast: {net}, {opt}, batch {args.batch_size}, {X.shape[0]} train / "
              f"{Xt.shape[0]} test samples", flush=True)
        forced = [f"{k}={os.environ[k]}" for k in FORCING_VARS if k in os.environ]
        if forced:
            print(f"note: {' '.join(forced)} set: OpenBLAS then uses those (possibly "
                  "slower) kernels; unset it for the CPU's own", flush=True)
    Xt = net._X(Xt, "X_test")
    Yt = net._Y(yt, Xt.shape[0], "y_test")
    monitor = "val_loss" if args.validation_split else "loss"
    callbacks = [_schedule(args, monitor)]
    if args.early_stopping:
        callbacks.append(EarlyStopping(monitor=monitor, patience=args.early_stopping))
    if not args.quiet:
        callbacks.append(_EpochLine(net, Xt, Yt, args.epochs))
    hist = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, optimizer=opt,
                   verbose=False, validation_split=args.validation_split,
                   callbacks=callbacks)
    train_seconds = sum(hist.epoch_time)
    args.epochs = len(hist.epoch_time)          # fewer when stopped early
    loss, acc = net._loss_accuracy(Xt, Yt)
    print(f"test accuracy {acc:.4f}  test loss {loss:.4f}  ({args.epochs} epochs, "
          f"{train_seconds:.2f} s training, {train_seconds / args.epochs:.3f} s/epoch)")
    if args.save:
        net.save(args.save)
        if not args.quiet:
            print(f"saved to {args.save}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _train(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"nnfast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnfast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
