"""A training workspace: the buffers of one compiled training step (nnfast._step)."""
import numpy as np

from ._layout import layer_views
from ._names import LOSS_CODE
from ._step import TrainStep


class Workspace:
    """Activations a[l] (a[0] is the input batch), deltas d[l] and targets y for up to
    `rows` samples, and the compiled training step over them, the network's parameters
    and the given flat gradient buffer (the network's layout); a short batch uses the
    leading rows, which stay C-contiguous. `sparse`: for sparse input only, no input
    batch (a[0] is None): the step reads the CSR rows."""

    def __init__(self, net, rows, grads, dropout=True, sparse=False):
        self.rows = rows
        self.sparse = sparse
        self.team = None                      # the TeamChooser of its steps (training)
        self.a = [None if sparse and l == 0 else np.empty((rows, s), net.dtype)
                  for l, s in enumerate(net.sizes)]
        self.d = [None] + [np.empty((rows, s), net.dtype) for s in net.sizes[1:]]
        self.y = np.empty((rows, net.sizes[-1]), net.dtype)
        self.g = None
        if dropout and any(net.dropout):     # g[l] = act' * mask / (1 - p), per hidden layer
            self.g = [np.empty((rows, s), net.dtype) if p else None
                      for s, p in zip(net.sizes[1:-1], net.dropout)]
        views = layer_views(grads, net._layout)
        self.step = TrainStep(net._flat_params, grads, net.coefs, net.intercepts,
                              [w for w, _ in views], [b for _, b in views], self.a, self.d,
                              self.y, net._hidden_codes, LOSS_CODE[net.output],
                              dropout=None if self.g is None else net.dropout, masks=self.g)
        self.step.matmul_path = net._matmul_path()
