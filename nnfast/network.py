"""The Network: layout of the flat buffers, workspaces, training loop, prediction, files."""
from __future__ import annotations

import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _kernels as K
from . import _validate
from ._sparse import CSRInput, check_sparse, is_sparse
from ._step import TrainStep
from ._threads import single_threaded_blas
from ._layout import build_layout, layer_views, n_weights
from .io import load, save_network  # noqa: F401  (load: nf.load, also from here)
from ._progress import EpochProgress
from .distributed import DataParallel, dropout_seed as rank_dropout_seed, flat_grads_with_totals
from .optim import Optimizer, get_optimizer

HIDDEN = {"relu": K.ACT_RELU, "leaky_relu": K.ACT_LEAKY_RELU, "tanh": K.ACT_TANH,
          "sigmoid": K.ACT_SIGMOID, "linear": K.ACT_LINEAR}
OUTPUT = {"softmax": K.ACT_SOFTMAX, "sigmoid": K.ACT_SIGMOID, "linear": K.ACT_LINEAR}
LOSS = {"softmax": K.softmax_xent_backward, "sigmoid": K.sigmoid_bce_backward,
        "linear": K.squared_error_backward}
LOSS_CODE = {"softmax": K.LOSS_SOFTMAX_XENT, "sigmoid": K.LOSS_SIGMOID_BCE,
             "linear": K.LOSS_SQUARED_ERROR}
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_PARAMS = 2**31 - 1             # BLAS here takes 32-bit sizes
PREDICT_CHUNK = 4096               # rows per forward pass when predicting


class History:
    """What `fit` measured.

    Attributes
    ----------
    loss : list of float
        Mean training loss of each epoch (over the mini-batches, as they were trained).
    accuracy : list of float
        Training accuracy of each epoch, over the mini-batches as they were trained
        (classifiers only: softmax and sigmoid outputs).
    batch_loss : list of float
        Loss of every mini-batch, in order.
    val_loss, val_accuracy : list of float
        Per epoch, when validation data is given (accuracy for classifiers only).
    epoch_time : list of float
        Seconds of training per epoch (validation excluded).
    comm_time : list of float
        Data-parallel training (fit's comm): seconds of each epoch spent in the
        gradients' Allreduce on this rank.
    """

    def __init__(self):
        self.loss, self.accuracy, self.batch_loss, self.epoch_time = [], [], [], []
        self.comm_time = []
        self.val_loss, self.val_accuracy = [], []

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.4g}" if self.loss else ""
        return f"History({len(self.loss)} epochs{last})"


class _DeferredInterrupt:
    """Within: Ctrl-C (SIGINT) only sets `requested`, which fit checks between steps, so
    that an interrupt never falls between a step and its bookkeeping. Only in the main
    thread and only over Python's default handler; elsewhere a no-op."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _Workspace:
    """Activations a[l] (a[0] is the input batch), deltas d[l] and targets y for up to
    `rows` samples, and the compiled training step over them, the network's parameters
    and the given flat gradient buffer (the network's layout); a short batch uses the
    leading rows, which stay C-contiguous. `sparse`: for sparse input only, no input
    batch (a[0] is None): the step reads the CSR rows."""

    def __init__(self, net, rows, grads, dropout=True, sparse=False):
        self.rows = rows
        self.sparse = sparse
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


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _check_names(owner, name, value, allowed):
    if not isinstance(value, str):
        raise TypeError(f"{owner}: {name} must be a name, one of {sorted(allowed)}, got "
                        f"{type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"{owner}: unknown {name} {value!r}; expected one of {sorted(allowed)}")
    return value


class Network:
    """A multi-layer perceptron: ``A_next = act(A @ W + b)`` layer by layer.

    Parameters
    ----------
    sizes : sequence of int
        Layer sizes, input size first, e.g. ``[784, 256, 128, 10]``.
    hidden : str or sequence of str
        Hidden activation, "relu", "leaky_relu" (slope 0.01), "tanh", "sigmoid" or
        "linear"; or one name per hidden layer.
    output : str
        "softmax" (softmax cross-entropy), "sigmoid" (binary cross-entropy, binary or
        multi-label) or "linear" (squared error, regression).
    dtype : np.float32 or np.float64
        Dtype of the parameters and of all computation.
    seed : int, None or np.random.Generator
        Seeds the initialisation, the shuffling of `fit` and the dropout masks.
    dropout : float or sequence of float in [0, 1)
        Inverted dropout on the hidden layers while training (one rate, or one per hidden
        layer; default 0: none): each activation is zeroed with probability p and the
        others scaled by 1 / (1 - p), so prediction (which never drops) needs no rescaling.
    input_scale : float > 0
        Every input, whatever its dtype, is multiplied by this as the network reads it
        (training and prediction alike), e.g. 1/255 for raw uint8 images; saved with the
        model. Nothing else scales inputs: uint8 arrays go in as 0..255 times this.

    Notes
    -----
    Weights are He-initialised (normal, std sqrt(2 / fan_in)) for layers followed by
    relu / leaky_relu, Glorot-uniform otherwise; biases start at zero. Parameters live
    in one flat buffer (all weights, then all biases); `params`, `coefs` and `intercepts`
    are views into it. Non-goals: convolutions, recurrent layers, GPUs, autodiff.
    """

    def __init__(self, sizes: Sequence[int], hidden: str | Sequence[str] = "relu",
                 output: str = "softmax", dtype: DTypeLike = np.float32,
                 seed: int | np.random.Generator | None = 0,
                 dropout: float | Sequence[float] = 0.0, input_scale: float = 1.0) -> None:
        self.sizes = self._check_sizes(sizes)
        n_layers = len(self.sizes) - 1
        if isinstance(hidden, str):
            hidden = [hidden] * (n_layers - 1)
        elif isinstance(hidden, (Sequence, np.ndarray)):
            hidden = [h.item() if isinstance(h, np.generic) else h for h in hidden]
            if len(hidden) != n_layers - 1:
                raise ValueError(f"Network: hidden must be one name or {n_layers - 1} names "
                                 f"(one per hidden layer), got {len(hidden)}")
        else:
            raise TypeError(f"Network: hidden must be a name or a sequence of names, got "
                            f"{type(hidden).__name__}")
        self.hidden = tuple(_check_names("Network", "hidden activation", h, HIDDEN)
                            for h in hidden)
        self.output = _check_names("Network", "output", output, OUTPUT)
        if self.output == "softmax" and self.sizes[-1] < 2:
            raise ValueError("Network: a softmax output needs at least 2 units, got 1; "
                             "use output='sigmoid' for a single binary output")
        self.dtype = self._check_dtype(dtype)
        self.dropout = self._check_dropout(dropout, n_layers - 1)
        if not (_is_number(input_scale) and math.isfinite(input_scale) and input_scale > 0):
            raise (ValueError if _is_number(input_scale) else TypeError)(
                f"Network: input_scale must be a finite number > 0, got {input_scale!r}")
        self.input_scale = float(input_scale)
        if not (seed is None or isinstance(seed, np.random.Generator)
                or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
                    and seed >= 0)):
            raise TypeError(f"Network: seed must be None, an int >= 0 or a "
                            f"np.random.Generator, got {seed!r}")
        self.n_layers = n_layers
        self._rng = np.random.default_rng(seed)
        self._layout, self.n_params = build_layout(self.sizes)
        self._n_decay = n_weights(self._layout)
        self._flat_params = np.zeros(self.n_params, self.dtype)
        # extra entries after the gradients: a data-parallel step's loss, correct count and
        # Ctrl-C flag travel in the gradients' Allreduce (nnfast.distributed)
        self._flat_grads_ext, self._flat_grads = flat_grads_with_totals(self.n_params,
                                                                         self.dtype)
        views = layer_views(self._flat_params, self._layout)
        self.coefs = [w for w, _ in views]
        self.intercepts = [b for _, b in views]
        gviews = layer_views(self._flat_grads, self._layout)
        self.dcoefs = [w for w, _ in gviews]
        self.dintercepts = [b for _, b in gviews]
        # Kernel codes, mapped once: hidden layers, then the output used for prediction.
        self._hidden_codes = [HIDDEN[h] for h in self.hidden]
        self._output_code = OUTPUT[self.output]
        self._loss_kernel = LOSS[self.output]
        self._workspace = None
        self._order = None
        self._fit_lock = threading.Lock()
        self._initialize()
        # Dropout masks come from (seed, step, layer): a seed drawn once, a step counter
        # that every training step advances (so fit(2) == fit(1) twice).
        self._dropout_seed = int(self._rng.integers(2**63)) if any(self.dropout) else 0
        self._dropout_step = 0

    # ------------------------------------------------------------ construction helpers

    @staticmethod
    def _check_sizes(sizes):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"Network: sizes must be a sequence of ints (input size first), "
                            f"got {type(sizes).__name__}")
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"Network: sizes needs at least 2 entries (input, output), got "
                             f"{sizes}")
        out = tuple(_validate.check_int("Network", f"sizes[{i}]", s, 1)
                    for i, s in enumerate(sizes))
        n_params = sum(i * o + o for i, o in zip(out, out[1:]))      # Python ints: exact
        if n_params > MAX_PARAMS or max(out) > MAX_PARAMS:
            raise ValueError(f"Network: {n_params} parameters for sizes {list(out)}; at most "
                             f"{MAX_PARAMS} are supported")
        return out

    @staticmethod
    def _check_dropout(dropout, n_hidden):
        """One rate in [0, 1) per hidden layer, as a tuple of floats."""
        if isinstance(dropout, (Sequence, np.ndarray)) and not isinstance(dropout, str):
            rates = list(dropout)
            if len(rates) != n_hidden:
                raise ValueError(f"Network: dropout must be one rate or {n_hidden} rates (one "
                                 f"per hidden layer), got {len(rates)}")
        else:
            rates = [dropout] * n_hidden
            if n_hidden == 0 and _is_number(dropout) and dropout != 0:
                raise ValueError(f"Network: dropout {dropout!r} needs hidden layers; this "
                                 "network has none")
        for p in rates:
            if not _is_number(p):
                raise TypeError(f"Network: dropout must be a number in [0, 1) or a sequence "
                                f"of them, got {p!r}")
            if not 0 <= p < 1:
                raise ValueError(f"Network: dropout rates must be in [0, 1), got {p!r}")
        return tuple(float(p) for p in rates)

    @staticmethod
    def _check_dtype(dtype):
        if dtype is None:          # np.dtype(None) would silently mean float64
            raise TypeError("Network: dtype must be np.float32 or np.float64, got None")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"Network: dtype must be np.float32 or np.float64, got "
                            f"{dtype!r}") from None
        if dt not in DTYPES:
            raise ValueError(f"Network: dtype must be np.float32 or np.float64, got {dt}")
        return dt

    def _layer_activation(self, l):
        return self.hidden[l] if l < self.n_layers - 1 else self.output

    def _initialize(self):
        for l, (W, b) in enumerate(zip(self.coefs, self.intercepts)):
            fan_in, fan_out = W.shape
            if self._layer_activation(l) in ("relu", "leaky_relu"):
                W[...] = self._rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
            else:
                r = math.sqrt(6.0 / (fan_in + fan_out))
                W[...] = self._rng.uniform(-r, r, W.shape)
            b[...] = 0

    # ------------------------------------------------------------ public properties

    @property
    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """List of (W, b) per layer: views into the network's flat storage."""
        return list(zip(self.coefs, self.intercepts))

    def summary(self, print_fn: Callable[[str], object] = print) -> None:
        """Print a table of the layers: shapes, activations, parameter counts.

        Returns None, as Keras' ``Model.summary`` does (so a REPL shows the table once).

        Parameters
        ----------
        print_fn : callable, called once per line of the table (default: print); e.g.
            ``lines = []; net.summary(lines.append)`` to keep the text
        """
        rows = [("layer", "weights", "bias", "activation", "parameters")]
        for l, (W, b) in enumerate(self.params):
            act = self._layer_activation(l)
            if l < self.n_layers - 1 and self.dropout[l]:
                act += f" + dropout {self.dropout[l]:g}"
            rows.append((f"dense {l}", f"{W.shape[0]} x {W.shape[1]}", f"{b.shape[0]}",
                         act, f"{W.size + b.size:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total parameters: {self.n_params:,} ({self.dtype.name}, "
                     f"{self.n_params * self.dtype.itemsize / 2**20:.2f} MiB"
                     f"{f', inputs x {self.input_scale:g}' if self.input_scale != 1 else ''}"
                     "); loss: "
                     f"{dict(softmax='softmax cross-entropy', sigmoid='binary cross-entropy', linear='squared error')[self.output]}")
        for line in lines:
            print_fn(line)

    def __repr__(self):
        drop = f", dropout={list(self.dropout)!r}" if any(self.dropout) else ""
        if self.input_scale != 1:
            drop += f", input_scale={self.input_scale:g}"
        return (f"Network({list(self.sizes)}, hidden={list(self.hidden)!r}, "
                f"output={self.output!r}, dtype={self.dtype.name}{drop})")

    # ------------------------------------------------------------ input checks

    def _X(self, X, name="X", allow_empty=False):
        return _validate.features(X, self.sizes[0], self.dtype, name, allow_empty)

    def _inputs(self, X, name="X", allow_empty=False):
        """X checked, as (n, n_features) to read from: files (.npy paths, np.memmap) and
        uint8 arrays as they are, converted a mini-batch or chunk at a time; anything
        else converted once (`_X`). No samples only with `allow_empty` (prediction).
        scipy.sparse X: checked and converted to CSR once, never densified."""
        if is_sparse(X):
            return check_sparse(X, self.sizes[0], self.dtype, self.input_scale, name)
        src = _validate.source(X, self.sizes[0], self.dtype, self.input_scale, name,
                               allow_empty)
        return self._X(X, name, allow_empty) if src is None else src

    def _targets(self, y, n, name="y"):
        if isinstance(y, (str, os.PathLike)):
            y = _validate.open_npy(y, name)
        return self._Y(y, n, name)

    def _Y(self, y, n, name="y"):
        return _validate.targets(y, n, self.sizes[-1], self.output, self.dtype, name)

    # ------------------------------------------------------------ forward / predict

    def _forward_into(self, out, X, last_code):
        """out (n, n_out) := the network on X (checked), last layer with `last_code`.
        Runs in chunks with buffers of this call only (safe from several threads)."""
        n = X.shape[0]
        if n == 0:                              # no samples: nothing to compute
            return out
        rows = min(n, PREDICT_CHUNK)
        bufs = [np.empty((rows, s), self.dtype) for s in self.sizes[1:-1]]
        codes = self._hidden_codes + [last_code]
        sparse = isinstance(X, CSRInput)
        convert = not sparse and (X.dtype != self.dtype or self.input_scale != 1)
        if convert:                             # with the training step's own gather
            x_buf = np.empty((rows, self.sizes[0]), self.dtype)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            first = 0
            if sparse:                          # layer 0 reads the CSR rows directly
                a = out[start:stop] if self.n_layers == 1 else bufs[0][:stop - start]
                K.sparse_dense_forward(a, X.data, X.indices, X.indptr,
                                       np.arange(start, stop, dtype=np.intp), self.coefs[0],
                                       self.intercepts[0], codes[0], self.input_scale)
                first = 1
            else:
                a = X[start:stop]
            if convert:
                a = x_buf[:stop - start]
                K.gather_rows_scaled(a, X, np.arange(start, stop, dtype=np.intp),
                                     self.input_scale)
            for l in range(first, self.n_layers):
                nxt = out[start:stop] if l == self.n_layers - 1 else bufs[l][:stop - start]
                K.dense_forward(nxt, a, self.coefs[l], self.intercepts[l], codes[l])
                a = nxt
        return out

    def forward(self, X: ArrayLike) -> np.ndarray:
        """Output activations (softmax / sigmoid probabilities, or linear values).

        Parameters
        ----------
        X : array-like or scipy.sparse matrix / array of shape (n_samples, n_features)
            Everything `fit` takes (sparse input too, never densified); n_samples may
            be 0 (not for sparse input).

        Returns
        -------
        ndarray of shape (n_samples, n_out), the network's dtype
        """
        X = self._inputs(X, allow_empty=True)
        out = np.empty((X.shape[0], self.sizes[-1]), self.dtype)
        return self._forward_into(out, X, self._output_code)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_out): softmax or sigmoid outputs only."""
        if self.output == "linear":
            raise ValueError("predict_proba needs a softmax or sigmoid output; this network "
                             "has a linear (regression) output: use predict or forward")
        return self.forward(X)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions for X.

        Returns
        -------
        softmax: int64 class index, shape (n_samples,). sigmoid: 0/1 int64, shape
        (n_samples,) for one output unit, else (n_samples, n_out). linear: values, shape
        (n_samples,) for one output unit, else (n_samples, n_out). No samples give an
        empty result of these shapes.
        """
        X = self._inputs(X, allow_empty=True)
        code = self._output_code if self.output == "linear" else K.ACT_LINEAR
        out = self._forward_into(np.empty((X.shape[0], self.sizes[-1]), self.dtype), X, code)
        if self.output == "softmax":                  # decided on logits, as evaluate does
            return out.argmax(axis=1).astype(np.int64)
        if self.output == "sigmoid":                  # p > 0.5 <=> logit > 0
            out = (out > 0).astype(np.int64)
        return out[:, 0] if out.shape[1] == 1 else out

    def _loss_accuracy(self, X, Y, W=None):
        """(mean loss, accuracy or None) on checked arrays, a chunk of rows at a time;
        with sample weights W (checked), both weighted."""
        n = X.shape[0]
        rows = min(n, PREDICT_CHUNK)
        z = np.empty((rows, self.sizes[-1]), self.dtype)              # logits
        scratch = np.empty_like(z)
        loss, correct = 0.0, 0.0
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            zc, yc = z[:stop - start], Y[start:stop]
            self._forward_into(zc, X[start:stop], K.ACT_LINEAR)
            if W is None:
                loss += self._loss_kernel(scratch[:stop - start], zc, yc)
                right = np.ones(stop - start)
            else:
                right = W[start:stop]
                loss += K.weighted_loss_backward(scratch[:stop - start], zc, yc, right,
                                                 LOSS_CODE[self.output])
            if self.output == "softmax":
                correct += float(right[zc.argmax(axis=1) == yc.argmax(axis=1)].sum())
            elif self.output == "sigmoid":                        # p > 0.5 <=> z > 0
                correct += float((((zc > 0) == (yc > 0.5)) * right[:, None]).sum())
        total = n if W is None else float(W.sum(dtype=np.float64))
        if self.output == "linear":
            return float(loss / total), None
        per_sample = 1 if self.output == "softmax" else Y.shape[1]
        return float(loss / total), correct / (total * per_sample)

    def evaluate(self, X: ArrayLike, y: ArrayLike,
                 sample_weight: ArrayLike | None = None) -> dict[str, float]:
        """Mean loss (as defined for the output) and, for classifiers, accuracy.

        Accuracy is the fraction of correct argmax for softmax and of correct 0/1 entries
        (threshold 0.5) for sigmoid.

        Parameters
        ----------
        X, y : as for `fit`
        sample_weight : array-like of shape (n_samples,), optional
            Weights (finite, >= 0, not all 0): the loss is sum(w_i * l_i) / sum(w_i) and
            the accuracy the weighted fraction of correct predictions.

        Returns
        -------
        dict with "loss" (float) and, for softmax / sigmoid outputs, "accuracy" (float)
        """
        X = self._inputs(X)
        Y = self._targets(y, X.shape[0])
        W = _validate.sample_weights(sample_weight, X.shape[0], self.dtype)
        loss, acc = self._loss_accuracy(X, Y, W)
        return {"loss": loss} if acc is None else {"loss": loss, "accuracy": acc}

    # ------------------------------------------------------------ gradients

    def loss_and_grads(self, X: ArrayLike, y: ArrayLike, dropout_seed: int | None = None
                       ) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
        """Mean loss on (X, y) and its gradient for every parameter.

        Parameters
        ----------
        X, y : as for `evaluate`
        dropout_seed : int >= 0, optional
            For a network with dropout: apply dropout with the masks of this seed (the
            same seed gives the same masks, so the loss is a function of the parameters
            that finite differences can check). Default: no dropout, as at prediction.

        Returns
        -------
        loss : float
        grads : list of (dW, db) per layer, new arrays with the shapes of `params`
        """
        X = self._inputs(X)
        n = X.shape[0]
        Y = self._targets(y, n)
        if dropout_seed is not None:
            dropout_seed = _validate.check_int("loss_and_grads", "dropout_seed",
                                               dropout_seed, 0)
            if dropout_seed >= 2**64:
                raise ValueError(f"loss_and_grads: dropout_seed must be below 2**64, got "
                                 f"{dropout_seed}")
        grads = np.empty(self.n_params, self.dtype)
        ws = _Workspace(self, n, grads, dropout=dropout_seed is not None,
                        sparse=isinstance(X, CSRInput))
        self._bind(ws.step, X, Y, dropout_seed=dropout_seed or 0)
        with single_threaded_blas() as team:
            loss, _ = ws.step.gradients(np.arange(n, dtype=np.intp), n, 0, team)
        return float(loss / n), layer_views(grads, self._layout)

    # ------------------------------------------------------------ training

    def _get_workspace(self, rows, sparse=False):
        """The training workspace for batches of up to `rows` (kept between fits); one
        for dense input serves sparse input too, not the other way round."""
        ws = self._workspace
        if ws is None or ws.rows != rows or (ws.sparse and not sparse):
            self._workspace = _Workspace(self, rows, self._flat_grads, sparse=sparse)
        return self._workspace

    def _bind(self, step, X, Y, W=None, dropout_seed=0):
        """Bind checked training data (and the run's dropout seed) to a compiled step: a
        CSRInput with bind_csr (the first layer reads its rows), arrays with bind."""
        if isinstance(X, CSRInput):
            step.bind_csr(X.data, X.indices, X.indptr, Y, self.input_scale, W, dropout_seed)
        else:
            step.bind(X, Y, self.input_scale, W, dropout_seed)

    def _train_step(self, step, idx, optimizer, rule, team, dist=None, interrupted=False,
                    weight=None):
        """One mini-batch of the data bound to `step`: gather, forward, backward and the
        update `rule` (optimizer._rule()), in one compiled call on a team of `team`
        threads; with `dist` (data-parallel), this rank's part of it, the Allreduce, then
        the same compiled update. Here, and only here, the optimizer's step count t and
        the dropout step advance. Returns (mean loss, correct predictions, interrupted) of
        the batch; a non-finite loss is not applied (t stays). `interrupted` (Ctrl-C on
        this rank) comes back as is, or with `dist` rides along in the Allreduce and comes
        back true when any rank was interrupted.
        With sample weights bound, `weight` is the batch's weight sum (> 0): the divisor
        of its summed (weighted) loss and gradient, instead of its size."""
        div = float(idx.shape[0]) if weight is None else weight
        if dist is None:
            loss, right = step.step(idx, div, self._dropout_step, team, optimizer.t + 1, rule)
            if step.has_dropout:                # every step that ran used its masks
                self._dropout_step += 1
            loss /= div
            if math.isfinite(loss):             # else the step skipped its update
                optimizer.t += 1
            return loss, right, interrupted
        lo, hi = dist.part(idx.shape[0])
        totals = self._flat_grads_ext           # gradients, then loss, correct, interrupted
        if hi > lo:                             # gradient of the part, / the global batch
            totals[-3], totals[-2] = step.gradients(idx[lo:hi], div, self._dropout_step, team)
            if step.has_dropout:
                self._dropout_step += 1
        else:
            totals[:] = 0
        totals[-1] = 1 if interrupted else 0
        dist.allreduce(totals)
        loss = float(totals[-3]) / div
        if math.isfinite(loss):
            step.update(optimizer.t + 1, rule, team)
            optimizer.t += 1
        return loss, int(round(float(totals[-2]))), bool(totals[-1] > 0)

    def fit(self, X: ArrayLike | str | os.PathLike, y: ArrayLike | str | os.PathLike,
            epochs: int = 10, batch_size: int = 128, optimizer: str | Optimizer = "adam",
            shuffle: bool = True, validation_data: tuple | None = None, verbose: bool = True,
            validation_split: float | None = None, callbacks: Sequence | None = None,
            comm: object = None, sample_weight: ArrayLike | None = None) -> History:
        """Train on (X, y) with mini-batches, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), np.memmap, or path to a .npy file
            Files, memmaps and uint8 arrays are read in place: each mini-batch is gathered,
            converted and scaled (input_scale) on its own, so data larger than memory
            trains (at the speed of the disk when it is not in the page cache).
            A scipy.sparse matrix or array (CSR or CSC; other formats are converted to
            CSR once) is never densified: the first layer reads each mini-batch's rows
            from the CSR arrays, so memory stays close to the weights plus the data.
        y : array-like (or path to a .npy file)
            softmax: int labels (n_samples,) or one-hot (n_samples, n_out); sigmoid: 0/1
            (n_samples,) for one unit, else (n_samples, n_out); linear: (n_samples,) for
            one unit, else (n_samples, n_out).
        epochs : int >= 1
        batch_size : int >= 1 (capped at n_samples)
        optimizer : "adam", "sgd" or an Optimizer (nf.Adam, nf.SGD). The same object
            passed again continues from its state.
        shuffle : bool
            Reshuffle the samples every epoch (from the network's seeded generator).
        validation_data : (X_val, y_val) or (X_val, y_val, sample_weight_val), optional
            Evaluated after every epoch into ``val_loss`` / ``val_accuracy`` (weighted
            with sample_weight_val).
        verbose : bool
            Print one line per epoch (loss, accuracy, validation loss and accuracy,
            seconds) and, when stdout is a terminal, a progress bar over its mini-batches
            with the running loss.
        validation_split : float in [0, 1), optional
            Hold out this fraction of the samples (the last ones, as Keras does) for
            validation instead of `validation_data`; 0 (or None) holds out none.
        callbacks : sequence of callbacks (nnfast.callbacks, nnfast.schedules), optional
            Called when training begins, before and after every epoch, and when it ends
            (nnfast.callbacks); one returning True from on_epoch_end stops training.
        comm : mpi4py communicator, optional
            Data-parallel training over MPI (nnfast.distributed): every rank passes the
            same data and arguments, trains its part of each global mini-batch of
            `batch_size`, and the gradients are averaged by one Allreduce per step, so
            the weights stay identical on every rank. Only rank 0 prints.
        sample_weight : array-like of shape (n_samples,), optional
            Weights (finite, >= 0, not all 0) of the samples: a mini-batch's loss is
            sum(w_i * l_i) / sum(w_i), so with one full batch a weight of 2 is the same as
            the row twice, and a row of weight 0 changes nothing; a mini-batch whose
            weights are all 0 is skipped. validation_split holds out the weights of the
            held-out rows too (the validation loss is then weighted). The training
            accuracy in History counts rows, unweighted.

        Returns
        -------
        History

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C, after the step in progress: the network holds the weights of the
            last completed step, and the exception's `history` attribute what was trained.
        FloatingPointError
            When a batch's loss is NaN or inf (training diverged): that batch is not
            applied, the network keeps the last finite weights; `history` as above.
        """
        dist = DataParallel(comm) if comm is not None else None
        if dist is not None and dist.size == 1:
            dist = None                          # one rank: the plain path is the same math
        try:
            checked = self._fit_inputs(X, y, epochs, batch_size, optimizer, shuffle,
                                       validation_data, validation_split, callbacks,
                                       sample_weight)
        except (ValueError, TypeError) as exc:
            if dist is not None:
                dist.agree(exc)                  # every rank raises, none waits
            raise
        if dist is not None:
            dist.agree(None)
            dist.check_same("fit arguments (samples, features, epochs, batch_size, shuffle, "
                            "network sizes, dtype)",
                            (checked[3], self.sizes[0], epochs, batch_size, bool(shuffle),
                             self.sizes, self.dtype.name, checked[8] is not None))
        X, Y, val, n, epochs, batch_size, optimizer, callbacks, W = checked
        if dist is not None and dist.rank != 0:
            verbose = False
        return self._fit_checked(X, Y, val, n, epochs, batch_size, optimizer, shuffle,
                                 verbose, callbacks, dist, W)

    def _fit_inputs(self, X, y, epochs, batch_size, optimizer, shuffle, validation_data,
                    validation_split, callbacks, sample_weight=None):
        """fit's arguments checked and converted (nothing changes on error)."""
        epochs = _validate.check_int("fit", "epochs", epochs, 1)
        batch_size = _validate.check_int("fit", "batch_size", batch_size, 1)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"fit: shuffle must be a bool, got {type(shuffle).__name__}")
        optimizer = get_optimizer(optimizer)
        callbacks = list(callbacks) if callbacks is not None else []
        hooks = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")
        for cb in callbacks:
            if not any(hasattr(cb, hook) for hook in hooks):
                raise TypeError(f"fit: callbacks must have at least one of "
                                f"{', '.join(hooks)}, got {type(cb).__name__}")
        X = self._inputs(X)
        n = X.shape[0]
        Y = self._targets(y, n)
        W = _validate.sample_weights(sample_weight, n, self.dtype)
        val = None
        if _is_number(validation_split) and validation_split == 0:
            validation_split = None                 # 0: no validation, as in Keras
        if validation_split is not None:
            if validation_data is not None:
                raise ValueError("fit: give validation_data or validation_split, not both")
            if (isinstance(validation_split, bool) or not isinstance(validation_split, float)
                    or not 0 < validation_split < 1):
                raise ValueError(f"fit: validation_split must be a float in [0, 1) (0: no "
                                 f"validation), got {validation_split!r}")
            n_val = int(round(n * validation_split))
            if not 1 <= n_val < n:
                raise ValueError(f"fit: validation_split {validation_split} of {n} samples "
                                 f"leaves {n_val} for validation and {n - n_val} for training")
            if W is not None and not W[:n - n_val].any():
                raise ValueError(f"fit: sample_weight is zero for every one of the "
                                 f"{n - n_val} training samples left by validation_split")
            val = (X[n - n_val:], Y[n - n_val:],
                   None if W is None or not W[n - n_val:].any() else W[n - n_val:])
            X, Y, n = X[:n - n_val], Y[:n - n_val], n - n_val
            W = None if W is None else W[:n]
        if validation_data is not None:
            if (not isinstance(validation_data, (tuple, list))
                    or len(validation_data) not in (2, 3)):
                raise ValueError("fit: validation_data must be a pair (X_val, y_val) or a "
                                 "triple (X_val, y_val, sample_weight_val)")
            Xv = self._inputs(validation_data[0], "X_val")
            Wv = None
            if len(validation_data) == 3:
                Wv = _validate.sample_weights(validation_data[2], Xv.shape[0], self.dtype,
                                              "sample_weight_val")
            val = (Xv, self._targets(validation_data[1], Xv.shape[0], "y_val"), Wv)
        return X, Y, val, n, epochs, batch_size, optimizer, callbacks, W

    def _fit_checked(self, X, Y, val, n, epochs, batch_size, optimizer, shuffle, verbose,
                     callbacks, dist, W=None):
        if not self._fit_lock.acquire(blocking=False):
            raise RuntimeError("fit is already running on this network (in another thread); "
                               "train one network from one thread at a time")
        try:
            rows = min(batch_size, n)
            ws = self._get_workspace(rows if dist is None else -(-rows // dist.size),
                                     sparse=isinstance(X, CSRInput))
            # All input checked, buffers allocated: from here on the network changes.
            optimizer._prepare(self)
            if not shuffle:
                order = np.arange(n, dtype=np.intp)
            else:                               # kept, so that fit(2) == fit(1); fit(1)
                if self._order is None or self._order.shape[0] != n:
                    self._order = np.arange(n, dtype=np.intp)
                order = self._order
            hist = History()
            if dist is not None:
                dist.broadcast_start(self, optimizer, order)
            self._bind(ws.step, X, Y, W, self._dropout_seed if dist is None else
                       rank_dropout_seed(self._dropout_seed, dist.rank))
            try:
                with _DeferredInterrupt() as interrupt:
                    self._epochs(hist, ws.step, order, n, rows, epochs, shuffle, optimizer,
                                 val, verbose, interrupt, callbacks, dist, W)
            finally:
                ws.step.release()
            return hist
        finally:
            self._fit_lock.release()

    def _epochs(self, hist, step, order, n, rows, epochs, shuffle, optimizer, val, verbose,
                interrupt, callbacks, dist, W=None):
        n_batches = -(-n // rows)
        per_sample = self.sizes[-1] if self.output == "sigmoid" else 1   # accuracy units
        weights = None if W is None else W.astype(np.float64)
        batch_weight = None
        rule = optimizer._rule()
        for epoch in range(epochs):
            failure = None
            try:
                for cb in callbacks if epoch == 0 else ():
                    if hasattr(cb, "on_train_begin"):
                        cb.on_train_begin(self, optimizer)
                for cb in callbacks:
                    if hasattr(cb, "on_epoch_begin"):
                        cb.on_epoch_begin(self, epoch, optimizer)
                if callbacks:                           # a schedule may have changed lr
                    rule = optimizer._rule()
            except Exception as exc:
                if dist is None:
                    raise
                failure = exc
            if dist is not None:            # a rank failing here must not leave the others
                dist.agree(failure)         # waiting in the next Allreduce
            progress = EpochProgress(verbose, n_batches, epoch, epochs)
            t0 = time.perf_counter()
            if shuffle:
                self._rng.shuffle(order)
            if weights is not None:                # each mini-batch's weight sum
                batch_weight = np.add.reduceat(weights[order], np.arange(0, n, rows))
            total, seen, correct, trained, shown = 0.0, 0.0, 0, 0, 0
            comm_before = dist.comm_time if dist is not None else 0.0
            try:
                with single_threaded_blas() as team:   # the step's own team does the work
                    team = team if dist is None else dist.threads(team)
                    for k, start in enumerate(range(0, n, rows)):
                        idx = order[start:start + rows]
                        weight = None if weights is None else float(batch_weight[k])
                        if weight == 0:             # nothing to learn from: skipped
                            continue
                        loss, right, stop_now = self._train_step(
                            step, idx, optimizer, rule, team, dist, interrupt.requested, weight)
                        if not math.isfinite(loss):
                            # the step skipped its update: the weights are the last finite
                            err = FloatingPointError(
                                f"fit: training diverged: the loss of batch {k + 1} of epoch "
                                f"{epoch + 1} is {loss}; the network keeps the weights of "
                                "the step before (lower the learning rate)")
                            err.history = hist
                            raise err
                        hist.batch_loss.append(loss)
                        batch = idx.shape[0] if weight is None else weight
                        total += loss * batch
                        seen += batch
                        correct += right
                        trained += idx.shape[0]
                        if k + 1 - shown >= progress.every:
                            progress.update(k + 1 - shown, total / seen)
                            shown = k + 1
                        if stop_now:            # Ctrl-C (on any rank): stop between steps
                            err = KeyboardInterrupt()
                            err.history = hist
                            raise err
            finally:
                progress.close()
            hist.epoch_time.append(time.perf_counter() - t0)
            if dist is not None:
                hist.comm_time.append(dist.comm_time - comm_before)
            hist.loss.append(total / seen)
            failure, stop = None, False
            try:
                stop = self._epoch_end(hist, epoch, epochs, correct, trained * per_sample,
                                       val, optimizer, progress, callbacks)
            except Exception as exc:
                if dist is None:
                    raise
                failure = exc
            if dist is not None:            # every rank stops, or fails, together
                stop = dist.agree(failure, stop)
            if stop:
                break
        for cb in callbacks:                # by a stop or after the last epoch
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(self, optimizer)

    def _epoch_end(self, hist, epoch, epochs, correct, count, val, optimizer, progress,
                   callbacks):
        """History, the epoch's line and the callbacks; True when one asks to stop."""
        line = f"epoch {epoch + 1}/{epochs}  loss {hist.loss[-1]:.4f}"
        logs = {"loss": hist.loss[-1]}
        if self.output != "linear":
            hist.accuracy.append(correct / count)
            line += f"  accuracy {hist.accuracy[-1]:.4f}"
            logs["accuracy"] = hist.accuracy[-1]
        if val is not None:
            vloss, vacc = self._loss_accuracy(*val)
            hist.val_loss.append(vloss)
            line += f"  val_loss {vloss:.4f}"
            logs["val_loss"] = vloss
            if vacc is not None:
                hist.val_accuracy.append(vacc)
                line += f"  val_accuracy {vacc:.4f}"
                logs["val_accuracy"] = vacc
        progress.line(f"{line}  {hist.epoch_time[-1]:.2f}s")
        logs.update(epoch_time=hist.epoch_time[-1], lr=optimizer.lr)
        stop = False
        for cb in callbacks:
            if hasattr(cb, "on_epoch_end"):
                stop = bool(cb.on_epoch_end(self, epoch, logs)) or stop
        return stop

    # ------------------------------------------------------------ pickling

    def __getstate__(self):
        """What pickle (copy, joblib, multiprocessing) keeps: the architecture, the
        weights, the shuffling generator and order, and the dropout counter; the
        workspaces are rebuilt when needed."""
        return {"sizes": self.sizes, "hidden": self.hidden, "output": self.output,
                "dtype": self.dtype.name, "dropout": self.dropout,
                "input_scale": self.input_scale, "params": self._flat_params.copy(),
                "rng": self._rng.bit_generator.state, "dropout_seed": self._dropout_seed,
                "dropout_step": self._dropout_step,
                "order": None if self._order is None else self._order.copy()}

    def __setstate__(self, state):
        self.__init__(state["sizes"], hidden=list(state["hidden"]), output=state["output"],
                      dtype=state["dtype"], seed=None, dropout=list(state["dropout"]),
                      input_scale=state["input_scale"])
        params = np.asarray(state["params"])
        if params.shape != self._flat_params.shape:
            raise ValueError(f"Network: pickled params have shape {params.shape}, expected "
                             f"{self._flat_params.shape}")
        self._flat_params[...] = params
        self._rng.bit_generator.state = state["rng"]
        self._dropout_seed, self._dropout_step = state["dropout_seed"], state["dropout_step"]
        order = state.get("order")      # fit shuffles it in place, epoch after epoch
        self._order = None if order is None else np.array(order, dtype=np.intp)

    # ------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Write the network to an .npz file (no pickle), atomically (nnfast.io).

        The file is written to a temporary name in the same directory, flushed to disk,
        then renamed over `path`: an interrupted save never leaves a partial file.
        """
        save_network(self, path)

    def to_onnx(self, path: str | os.PathLike) -> None:
        """Write the network to an ONNX file (opset 17), atomically, as `save` does.

        The model's input "X" is float32 of shape [N, n_features] (N: any number of
        rows); its output "Y" is float32 of shape [N, n_out], what `forward` gives:
        probabilities for softmax / sigmoid outputs, the values for linear outputs.
        `input_scale` is applied inside the model. float64 networks are exported with
        float32 weights. Needs the onnx package: ``pip install nnfast[onnx]``.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists); its folder must exist.

        Raises
        ------
        ImportError without onnx; ValueError if `path` is a directory or its folder
        does not exist, or the parameters are not finite.
        """
        from ._onnx import write_onnx           # imports onnx: only when called
        write_onnx(self, path)


