"""Pictures of training: loss and accuracy per epoch, and a confusion matrix.

Needs matplotlib (``pip install nnfast[plot]``), imported only when a picture is drawn.
Each function draws on a `matplotlib.figure.Figure` of its own and renders it with the
Agg backend: no display is needed, and pyplot's global state is never touched.

    from nnfast import plots
    hist = net.fit(X, y, epochs=10, validation_data=(Xv, yv))
    plots.plot_training_curves("curves.png", hist)
    counts = plots.confusion_matrix(yt, net.predict(Xt), n_classes=10)
    plots.plot_confusion_matrix("confusion.png", counts)
"""
import os

import numpy as np

from ._validate import check_output_file

INSTALL_HINT = "pip install nnfast[plot]"


def require_matplotlib():
    """Import matplotlib's Figure and Agg canvas; ImportError naming the extra if absent.

    Returns
    -------
    (Figure, FigureCanvasAgg)
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"nnfast.plots needs matplotlib: {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def picture_format(path):
    """The format a picture at `path` is written in: its extension, else "png"."""
    return os.path.splitext(os.fspath(path))[1].lower().lstrip(".") or "png"


def check_output_path(path):
    """ValueError unless `path` can take a picture: a file can be written there (not a
    directory, its folder exists and is writable) and its extension (if any) is a format
    matplotlib writes. Call before long work that ends in a plot."""
    path = os.fspath(path)
    check_output_file(path)
    ext = picture_format(path)
    _, canvas = require_matplotlib()
    formats = canvas.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"cannot write {path}: unknown picture format {ext!r}; use one of "
                         f"{', '.join(sorted(formats))}")


def confusion_matrix(y_true, y_pred, n_classes):
    """Counts of (true, predicted) class pairs.

    Parameters
    ----------
    y_true, y_pred : array-like of int of shape (n_samples,), in [0, n_classes)
    n_classes : int

    Returns
    -------
    ndarray of int64 of shape (n_classes, n_classes): rows true, columns predicted
    """
    y_true = np.asarray(y_true).astype(np.int64, copy=False).reshape(-1)
    y_pred = np.asarray(y_pred).astype(np.int64, copy=False).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: y_true has {y_true.size} labels, y_pred "
                         f"{y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"confusion_matrix: {name} must be in [0, {n_classes}), got "
                             f"values in [{y.min()}, {y.max()}]")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _save(fig, canvas_class, path):
    """Write `fig` at exactly `path`: without an explicit format, matplotlib would
    append ".png" to a name that has no extension."""
    canvas_class(fig)                      # Agg renders the figure; no pyplot, no display
    fig.savefig(os.fspath(path), format=picture_format(path))


def plot_training_curves(path, history, test_loss=None, test_accuracy=None, title=None):
    """Write a picture of loss and accuracy per epoch: two panels side by side.

    Left: training loss, validation loss (if any) and `test_loss` (if given). Right:
    validation accuracy (if any) and `test_accuracy` (if given).

    Parameters
    ----------
    path : str or os.PathLike, written as given; the format follows the extension
        (.png, .svg, .pdf, ...), PNG without one
    history : nnfast.History (``loss``, ``val_loss``, ``val_accuracy``)
    test_loss, test_accuracy : sequence of float, one per epoch, optional
    title : str, optional
    """
    Figure, canvas = require_matplotlib()
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    _curve(ax_loss, "training", history.loss)
    _curve(ax_loss, "validation", history.val_loss)
    _curve(ax_loss, "test", test_loss)
    _curve(ax_acc, "validation", history.val_accuracy)
    _curve(ax_acc, "test", [a for a in test_accuracy or [] if a is not None])
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no {name} recorded", ha="center", va="center",
                    transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    _save(fig, canvas, path)


COLORS = {"training": "C0", "validation": "C1", "test": "C2"}     # the same in both panels


def _curve(ax, label, values):
    """One line, epochs counted from 1; nothing when `values` is empty or None."""
    if values is None or len(values) == 0:
        return
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, values, marker="o" if len(values) <= 30 else None, label=label,
            color=COLORS[label])
    ax.xaxis.get_major_locator().set_params(integer=True)


def plot_confusion_matrix(path, counts, title=None):
    """Write a picture of a confusion matrix: counts as colours, annotated with numbers.

    Parameters
    ----------
    path : str or os.PathLike, written as given; the format follows the extension
        (.png, .svg, .pdf, ...), PNG without one
    counts : array-like of int of shape (n_classes, n_classes), rows true, columns predicted
    title : str, optional
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"plot_confusion_matrix: counts must be a square matrix, got shape "
                         f"{counts.shape}")
    Figure, canvas = require_matplotlib()
    k = counts.shape[0]
    side = min(max(5.0, 0.6 * k + 2.0), 30.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="samples")
    ticks = np.arange(k)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 40:                           # beyond that the numbers no longer fit
        _annotate(ax, counts)
    ax.set_title(title or "confusion matrix")
    _save(fig, canvas, path)


def _annotate(ax, counts):
    """Each cell's count, white on dark cells, black on light ones."""
    k = counts.shape[0]
    dark = counts.max() / 2 if counts.size else 0
    size = max(5, min(10, 120 // k))
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=size,
                    color="white" if counts[i, j] > dark else "black")
