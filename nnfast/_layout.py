"""Offset table of the flat parameter buffer, and the per-layer views into it."""
import numpy as np


def build_layout(sizes):
    """Return ([(name, start, stop, shape), ...], n_params); weights first, then biases."""
    rows, start = [], 0
    shapes = [(f"W{l}", (i, o)) for l, (i, o) in enumerate(zip(sizes, sizes[1:]))]
    shapes += [(f"b{l}", (o,)) for l, o in enumerate(sizes[1:])]
    for name, shape in shapes:
        size = int(np.prod(shape))
        rows.append((name, start, start + size, shape))
        start += size
    return rows, start


def layer_views(flat, layout):
    """Per-layer (W, b) views into `flat`, in layer order."""
    views = [flat[s:e].reshape(shape) for _, s, e, shape in layout]
    n_layers = len(views) // 2
    return list(zip(views[:n_layers], views[n_layers:]))


def n_weights(layout):
    """Number of entries taken by the weights (the decayed slice [0, n_weights))."""
    return sum(e - s for name, s, e, _ in layout if name.startswith("W"))
