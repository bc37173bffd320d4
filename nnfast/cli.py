"""Command line: `nnfast train` (also `python -m nnfast train`).

Errors in arguments or data exit with code 2 and one line on stderr, never a traceback.
"""
import argparse
import os
import sys


from . import datasets
from ._threads import set_num_threads
from .network import HIDDEN, Network
from .optim import SGD, Adam

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
    train_seconds = 0.0
    for epoch in range(args.epochs):
        hist = net.fit(X, y, epochs=1, batch_size=args.batch_size, optimizer=opt,
                       verbose=False)
        train_seconds += hist.epoch_time[0]
        if not args.quiet:
            loss, acc = net._loss_accuracy(Xt, Yt)
            print(f"epoch {epoch + 1:>3}/{args.epochs}  loss {hist.loss[0]:.4f}  "
                  f"test_loss {loss:.4f}  test_accuracy {acc:.4f}  "
                  f"{hist.epoch_time[0]:.2f}s", flush=True)
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
