"""The Network: the model. Architecture, the flat parameter buffer and its views,
forward / predict / evaluate / loss_and_grads, pickling, and thin save / load.

Training lives in nnfast.training (the loop), checks in nnfast._validate, the file
format in nnfast.io, the compiled step in csrc/_step.pyx.
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _kernels as K
from . import _validate
from ._group import LocalGroup
from ._sparse import CSRInput
from . import _step
from ._threads import team_size
from ._layout import build_layout, layer_views, n_weights
from ._names import HIDDEN, LOSS_CODE, OUTPUT
from ._npyfile import NpyFile
from . import _precision
from ._workspace import Workspace
from .io import load, save_network  # noqa: F401  (load: nf.load, also from here)
from ._backup import fit_config
from .distributed import DataParallel, flat_grads_with_totals
from .optim import Optimizer
from .training import History, TrainState, train  # noqa: F401  (History: also from here)

LOSS = {"softmax": K.softmax_xent_backward, "sigmoid": K.sigmoid_bce_backward,
        "linear": K.squared_error_backward}
PREDICT_CHUNK = 4096               # rows per forward pass when predicting
FILE_CHUNK = 256                   # rows per read of a file converted while predicting


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
    matmul_precision : "float32" or "bfloat16"
        "bfloat16" (float32 networks only): the inputs of every dense matrix product
        (training and prediction) are rounded to bfloat16 and multiplied with float32
        sums; weights, optimizer state and everything else stay float32. Faster on CPUs
        with bfloat16 instructions, the same results (bit for bit) on every CPU.
        Saved with the model; set the attribute to change it, e.g. to predict in float32.

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
                 dropout: float | Sequence[float] = 0.0, input_scale: float = 1.0,
                 matmul_precision: str = "float32") -> None:
        self.sizes = _validate.network_sizes(sizes)
        n_layers = len(self.sizes) - 1
        self.hidden = _validate.hidden_activations(hidden, n_layers - 1)
        self.output = _validate.output_activation(output, self.sizes[-1])
        self.dtype = _validate.network_dtype(dtype)
        self.dropout = _validate.dropout_rates(dropout, n_layers - 1)
        self.input_scale = _validate.input_scale(input_scale)
        self._matmul_precision = _validate.matmul_precision(matmul_precision, self.dtype)
        _validate.network_seed(seed)
        self.n_layers = n_layers
        rng = np.random.default_rng(seed)
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
        self._fit_lock = threading.Lock()
        self._initialize(rng)
        # Dropout masks come from (seed, step, layer): a seed drawn once, a step counter
        # that every training step advances (so fit(2) == fit(1) twice).
        self._train_state = TrainState(
            rng, int(rng.integers(2**63)) if any(self.dropout) else 0)

    @property
    def matmul_precision(self) -> str:
        """"float32" or "bfloat16": the precision of the matrix products' inputs."""
        return self._matmul_precision

    @matmul_precision.setter
    def matmul_precision(self, precision: str) -> None:
        # from the next training step or prediction on (also from a callback during fit)
        self._matmul_precision = _validate.matmul_precision(precision, self.dtype)
        if self._workspace is not None:
            self._workspace.step.matmul_path = self._matmul_path()

    def _matmul_path(self):
        """The compiled steps' matmul path (nnfast._precision.matmul_path): BLAS, nnfast's
        own float32 products, or this CPU's bfloat16 path."""
        return _precision.matmul_path(self._matmul_precision, np.dtype(self.dtype).name)

    def _layer_activation(self, l):
        return self.hidden[l] if l < self.n_layers - 1 else self.output

    def _initialize(self, rng):
        for l, (W, b) in enumerate(zip(self.coefs, self.intercepts)):
            fan_in, fan_out = W.shape
            if self._layer_activation(l) in ("relu", "leaky_relu"):
                W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
            else:
                r = math.sqrt(6.0 / (fan_in + fan_out))
                W[...] = rng.uniform(-r, r, W.shape)
            b[...] = 0

    # ------------------------------------------------------------ public properties

    @property
    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """List of (W, b) per layer: views into the network's flat storage."""
        return list(zip(self.coefs, self.intercepts))

    @property
    def flat_params(self) -> np.ndarray:
        """All parameters in one read-only 1-D view: every layer's weights (row-major,
        layer by layer), then every layer's biases; `params` are views into the same
        storage. Copy it to keep a snapshot; write with `set_flat_params`."""
        view = self._flat_params.view()
        view.flags.writeable = False
        return view

    def set_flat_params(self, values: ArrayLike) -> None:
        """Overwrite every parameter from `values`, laid out as `flat_params`.

        Raises
        ------
        ValueError unless `values` has shape (n_params,) and is finite; the network is
        unchanged then.
        """
        arr = _validate.flat_values(values, self._flat_params.shape, self.dtype)
        self._flat_params[...] = arr

    @property
    def dropout_state(self) -> tuple[int, int]:
        """(seed, step) of the dropout masks: the next training step's masks come from
        (seed, step, layer), and every step advances step (0 without dropout)."""
        st = self._train_state
        return st.dropout_seed, st.dropout_step

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
        if self._matmul_precision != "float32":
            drop += f", matmul_precision={self._matmul_precision!r}"
        return (f"Network({list(self.sizes)}, hidden={list(self.hidden)!r}, "
                f"output={self.output!r}, dtype={self.dtype.name}{drop})")

    # ------------------------------------------------------------ input checks

    def _inputs(self, X, name="X", allow_empty=False):
        return _validate.network_inputs(self, X, name, allow_empty)

    def _targets(self, y, n, name="y"):
        return _validate.network_targets(self, y, n, name)

    _Y = _targets

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
        if convert or isinstance(X, NpyFile):   # with the training step's own gather
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
            elif isinstance(X, NpyFile):
                a = self._read_converted(x_buf[:stop - start], X, start, convert)
            elif convert:
                a = x_buf[:stop - start]
                K.gather_rows_scaled(a, X, np.arange(start, stop, dtype=np.intp),
                                     self.input_scale)
            else:
                a = X[start:stop]
            if first < self.n_layers:           # the dense layers, rows over the team
                outs = [bufs[l][:stop - start] for l in range(first, self.n_layers - 1)]
                _step.forward(a, outs + [out[start:stop]], self.coefs[first:],
                              self.intercepts[first:], codes[first:], team_size(),
                              self._matmul_path())
        if isinstance(X, NpyFile):              # a rewrite during the reads: not a result
            X.check_unchanged()
        return out

    def _read_converted(self, a, X, start, convert):
        """a := rows start: of the NpyFile X, converted and scaled as the step's gather
        does (read FILE_CHUNK rows at a time: a small buffer of the file's dtype)."""
        if not convert:
            return X.read(start, start + a.shape[0], a)
        raw = np.empty((min(a.shape[0], FILE_CHUNK), a.shape[1]), X.dtype)
        for i in range(0, a.shape[0], FILE_CHUNK):
            j = min(i + FILE_CHUNK, a.shape[0])
            part = X.read(start + i, start + j, raw[:j - i])
            K.gather_rows_scaled(a[i:j], part, np.arange(j - i, dtype=np.intp),
                                 self.input_scale)
        return a

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
            dropout_seed = _validate.dropout_seed("loss_and_grads", dropout_seed)
        grads = np.empty(self.n_params, self.dtype)
        ws = Workspace(self, n, grads, dropout=dropout_seed is not None,
                       sparse=isinstance(X, CSRInput))
        self._bind(ws.step, X, Y, dropout_seed=dropout_seed or 0)
        loss, _ = ws.step.gradients(np.arange(n, dtype=np.intp), n, 0, team_size())
        return float(loss / n), layer_views(grads, self._layout)

    # ------------------------------------------------------------ training

    def _training_workspace(self, rows, X):
        """The training workspace for batches of up to `rows` of X (its compiled step,
        and the team choice of its steps, kept between fits)."""
        return self._get_workspace(rows, sparse=isinstance(X, CSRInput))

    def _get_workspace(self, rows, sparse=False):
        """The training workspace for batches of up to `rows` (kept between fits); one
        for dense input serves sparse input too, not the other way round."""
        ws = self._workspace
        if ws is None or ws.rows != rows or (ws.sparse and not sparse):
            ws = self._workspace = Workspace(self, rows, self._flat_grads, sparse=sparse)
        return ws

    def _bind(self, step, X, Y, W=None, dropout_seed=0):
        """Bind checked training data to a compiled step: a CSRInput with bind_csr (the
        first layer reads its rows), arrays with bind."""
        if isinstance(X, CSRInput):
            step.bind_csr(X.data, X.indices, X.indptr, Y, self.input_scale, W, dropout_seed)
        elif isinstance(X, NpyFile):
            step.bind_file(X, Y, self.input_scale, W, dropout_seed)
        else:
            step.bind(X, Y, self.input_scale, W, dropout_seed)

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
        group = DataParallel(comm) if comm is not None else LocalGroup()
        if group.size == 1:
            group = LocalGroup()                 # one rank: the plain path is the same math
        settings = None
        try:
            try:
                settings = _validate.fit_settings(self, X, y, epochs, batch_size, optimizer,
                                                  shuffle, validation_data, validation_split,
                                                  callbacks, sample_weight, verbose)
                settings.optimizer._check_dtype(self._flat_params.dtype)  # before agreeing
                config = fit_config(self, settings)
                failure = None
            except (ValueError, TypeError) as exc:
                failure = exc
            group.agree(failure)                 # every rank raises, none waits
            group.check_config(config)           # the network, data, optimizer, schedules
            if not self._fit_lock.acquire(blocking=False):
                raise RuntimeError("fit is already running on this network (in another "
                                   "thread); train one network from one thread at a time")
            try:
                return train(self, settings, group)
            finally:
                self._fit_lock.release()
        finally:                                 # its data files, however fit ends (an
            if settings is not None:             # exception's frames would keep them open)
                _validate.close_files(settings.opened)

    # ------------------------------------------------------------ pickling

    def __getstate__(self):
        """What pickle (copy, joblib, multiprocessing) keeps: the architecture, the
        weights, the shuffling generator and order, and the dropout counter; the
        workspaces are rebuilt when needed."""
        st = self._train_state
        return {"sizes": self.sizes, "hidden": self.hidden, "output": self.output,
                "dtype": self.dtype.name, "dropout": self.dropout,
                "input_scale": self.input_scale, "params": self._flat_params.copy(),
                "matmul_precision": self._matmul_precision,
                "rng": st.rng.bit_generator.state, "dropout_seed": st.dropout_seed,
                "dropout_step": st.dropout_step,
                "order": None if st.order is None else st.order.copy()}

    def __setstate__(self, state):
        self.__init__(state["sizes"], hidden=list(state["hidden"]), output=state["output"],
                      dtype=state["dtype"], seed=None, dropout=list(state["dropout"]),
                      input_scale=state["input_scale"],
                      matmul_precision=state.get("matmul_precision", "float32"))
        params = np.asarray(state["params"])
        if params.shape != self._flat_params.shape:
            raise ValueError(f"Network: pickled params have shape {params.shape}, expected "
                             f"{self._flat_params.shape}")
        self._flat_params[...] = params
        st = self._train_state
        st.rng.bit_generator.state = state["rng"]
        st.dropout_seed, st.dropout_step = state["dropout_seed"], state["dropout_step"]
        order = state.get("order")      # fit shuffles it in place, epoch after epoch
        st.order = None if order is None else np.array(order, dtype=np.intp)

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


