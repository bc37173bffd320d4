"""scikit-learn estimators around `nnfast.Network`: NNClassifier and NNRegressor.

    from nnfast.sklearn import NNClassifier
    clf = NNClassifier(hidden_layer_sizes=(256, 128), epochs=30).fit(X, y)
    clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

They follow scikit-learn's estimator contract (get_params / set_params, clone, Pipeline,
GridSearchCV, pickle, partial_fit) and pass `check_estimator`. The parameters and their
defaults follow MLPClassifier / MLPRegressor where they overlap (hidden_layer_sizes=(100,),
batch_size="auto", 200 epochs, stopping on tol / n_iter_no_change).

Needs scikit-learn >= 1.6 (``pip install nnfast[sklearn]``); ``import nnfast`` never
imports this module, so nnfast itself does not need scikit-learn.
"""
from __future__ import annotations

import numbers
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

try:
    import sklearn
except ImportError as exc:
    raise ImportError("nnfast.sklearn needs scikit-learn, which is not installed: "
                      "pip install nnfast[sklearn]") from exc
try:
    from sklearn.utils.validation import validate_data        # scikit-learn >= 1.6
except ImportError as exc:
    raise ImportError(f"nnfast.sklearn needs scikit-learn >= 1.6, found "
                      f"{sklearn.__version__}: pip install -U 'scikit-learn>=1.6' "
                      "(or pip install nnfast[sklearn])") from exc
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._sparse import dense_only as _dense_only
from ._validate import check_int, check_number, sample_weights
from .callbacks import Callback, EarlyStopping
from .network import Network
from .optim import SGD, Adam

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["NNClassifier", "NNRegressor"]

_MAX_SEED = np.iinfo(np.int32).max
# Sparse X: CSR and CSC as they are (the network reads CSC as CSR after one conversion),
# other formats converted to CSR by validate_data; never densified.
_SPARSE = ["csr", "csc"]
# dtype=None: scikit-learn's rule. float32 X stays float32, any other X becomes float64
# (validate_data keeps a dtype of this list and converts the rest to the first).
_FOLLOW_X = (np.float64, np.float32)
# MLPClassifier's activation names beside nnfast's
_ACTIVATION = {"identity": "linear", "logistic": "sigmoid"}
_OUT_ACTIVATION = {"softmax": "softmax", "sigmoid": "logistic", "linear": "identity"}


class _ValidationScores(Callback):
    """After each epoch: the estimator's score (accuracy, or R^2) on the held-out data."""

    def __init__(self, score):
        self.score, self.scores = score, []

    def on_epoch_end(self, net, epoch, logs):
        self.scores.append(float(self.score(net)))
        return False


class _NNBase(BaseEstimator):
    """Parameters, fitting and pickling shared by NNClassifier and NNRegressor."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate=1e-3, momentum=0.9, weight_decay=0.0, dropout=0.0,
                 batch_size="auto", epochs=200, tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, shuffle=True,
                 random_state=None, dtype=None, verbose=False, warm_start=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.epochs = epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.shuffle = shuffle
        self.random_state = random_state
        self.dtype = dtype
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------ subclass hooks

    def _targets(self, y, first, classes=None):
        """(targets for the network, output name, n_out, fitted target attributes)."""
        raise NotImplementedError

    def _stratify(self, Y):
        """Labels to stratify the early-stopping split on, or None."""
        return None

    def _weights(self, y, sample_weight, first):
        """The weight of each sample (float64), or None: sample_weight times, for
        classifiers, the class weights (`first`: of a fit, else of a partial_fit)."""
        return sample_weights(sample_weight, y.shape[0], np.float64)

    def _score_output(self, Y, out, sample_weight):
        """The estimator's score from targets Y (as the network takes them) and outputs."""
        raise NotImplementedError

    # ------------------------------------------------------------ MLP's attributes

    @property
    def coefs_(self):
        """Weight matrices, (fan_in, fan_out) each: views into the network."""
        return [w for w, _ in self.network_.params]

    @property
    def intercepts_(self):
        """Bias vectors, (fan_out,) each: views into the network."""
        return [b for _, b in self.network_.params]

    @property
    def n_layers_(self):
        return len(self.network_.sizes)

    @property
    def out_activation_(self):
        return _OUT_ACTIVATION[self.network_.output]

    # ------------------------------------------------------------ checks

    def _check_params(self):
        """The hidden sizes and dtype, after checking what Network and the optimizers
        do not check themselves (they check the rest when built)."""
        name = type(self).__name__
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral):
            sizes = (sizes,)
        if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"{name}: hidden_layer_sizes must be a sequence of ints, got "
                            f"{type(sizes).__name__}")
        sizes = [check_int(name, f"hidden_layer_sizes[{i}]", s, 1)
                 for i, s in enumerate(sizes)]
        if isinstance(self.learning_rate, str):
            raise ValueError(
                f"{name}: learning_rate is the step size in nnfast (a float > 0, "
                f"MLPClassifier's learning_rate_init), got {self.learning_rate!r}; "
                "MLP's learning_rate schedules ('constant', 'invscaling', 'adaptive') are "
                "nnfast.schedules (Constant, StepDecay, Cosine, ReduceOnPlateau) for "
                "Network.fit")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"{name}: warm_start must be a bool, got "
                            f"{type(self.warm_start).__name__}")
        if not (isinstance(self.optimizer, str) and self.optimizer in ("adam", "sgd")):
            raise ValueError(f"{name}: optimizer must be 'adam' or 'sgd', got "
                             f"{self.optimizer!r}")
        if isinstance(self.batch_size, str):
            if self.batch_size != "auto":
                raise ValueError(f"{name}: batch_size must be an int >= 1 or 'auto', got "
                                 f"{self.batch_size!r}")
        else:
            check_int(name, "batch_size", self.batch_size, 1)
        check_int(name, "epochs", self.epochs, 1)
        check_int(name, "n_iter_no_change", self.n_iter_no_change, 1)
        check_number(name, "tol", self.tol, 0, np.inf)
        check_number(name, "validation_fraction", self.validation_fraction, 0, 1,
                      low_open=True, high_open=True)
        if self.dtype is None:
            return sizes, _FOLLOW_X
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise TypeError(f"{name}: dtype must be None, 'float32' or 'float64', got "
                            f"{self.dtype!r}") from None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"{name}: dtype must be None, 'float32' or 'float64', got "
                             f"{dtype}")
        return sizes, dtype

    def _new_optimizer(self):
        if self.optimizer == "adam":
            return Adam(lr=self.learning_rate, weight_decay=self.weight_decay)
        return SGD(lr=self.learning_rate, momentum=self.momentum,
                   weight_decay=self.weight_decay)

    def _new_network(self, sizes, output, dtype, rng):
        extra = {}
        if not (isinstance(self.dropout, numbers.Real) and self.dropout == 0):
            extra["dropout"] = self.dropout        # only then: Network may predate dropout
        hidden = self.activation
        if isinstance(hidden, str):
            hidden = _ACTIVATION.get(hidden, hidden)
        elif isinstance(hidden, (list, tuple)):
            hidden = [_ACTIVATION.get(h, h) if isinstance(h, str) else h for h in hidden]
        return Network(sizes, hidden=hidden, output=output, dtype=dtype,
                       seed=int(rng.randint(_MAX_SEED)), **extra)

    def _batch_size(self, n):
        return min(200, n) if isinstance(self.batch_size, str) else self.batch_size

    # ------------------------------------------------------------ fitting

    def _fit(self, X, y, sample_weight=None):
        name = type(self).__name__
        hidden, dtype = self._check_params()
        warm = bool(self.warm_start) and hasattr(self, "network_")
        if warm:
            dtype = self.network_.dtype
        X, y = validate_data(self, X, y, reset=not warm, dtype=dtype, order="C",
                             accept_sparse=_SPARSE, multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin))
        _dense_only(y, "y")
        Y, output, n_out, fitted = self._targets(y, first=not warm)
        weights = self._weights(y, sample_weight, first=True)
        rng = check_random_state(self.random_state)
        if warm:                                # MLP's warm_start: continue from the fit
            net, optimizer = self.network_, self._optimizer
            if net.output != output or net.sizes[-1] != n_out:
                raise ValueError(f"{name}: warm_start needs targets like those of the "
                                 f"previous fit ({net.sizes[-1]} {net.output} outputs)")
        else:
            net = self._new_network([X.shape[1], *hidden, n_out], output, X.dtype, rng)
            optimizer = self._new_optimizer()
        validation, callbacks = None, []
        if self.early_stopping:
            parts = train_test_split(X, Y, *([] if weights is None else [weights]),
                                     test_size=self.validation_fraction, random_state=rng,
                                     stratify=self._stratify(Y))
            X, X_val, Y, Y_val = parts[:4]
            w_val = None
            if weights is not None:
                weights, w_val = parts[4], parts[5]
                if not np.any(weights):
                    raise ValueError(f"{name}: sample_weight is zero for every sample "
                                     "left for training by the early-stopping split")
                if not np.any(w_val):
                    w_val = None
            validation = (X_val, Y_val) if w_val is None else (X_val, Y_val, w_val)
            callbacks.append(_ValidationScores(
                lambda net: self._score_output(Y_val, net.forward(X_val), w_val)))
        stop = EarlyStopping(monitor="val_loss" if self.early_stopping else "loss",
                             patience=self.n_iter_no_change, min_delta=self.tol,
                             restore_best=bool(self.early_stopping))
        hist = net.fit(X, Y, epochs=self.epochs, batch_size=self._batch_size(X.shape[0]),
                       optimizer=optimizer, shuffle=self.shuffle, validation_data=validation,
                       verbose=bool(self.verbose), callbacks=callbacks + [stop],
                       sample_weight=weights)
        if stop.stopped_epoch is None:
            monitored = "validation" if self.early_stopping else "training"
            warnings.warn(f"{name}: stopped after the last of {self.epochs} epochs before "
                          f"the {monitored} loss had gone {self.n_iter_no_change} epochs "
                          f"without improving by more than tol={self.tol}: training has "
                          "not converged; raise epochs to train longer", ConvergenceWarning)
        if not warm:
            for key, value in fitted.items():
                setattr(self, key, value)
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
            self.validation_loss_curve_ = [] if self.early_stopping else None
            self.validation_scores_ = [] if self.early_stopping else None
        self.network_ = net
        self._optimizer = optimizer
        self._record(hist, X.shape[0], callbacks[0].scores if self.early_stopping else None)
        return self

    def _record(self, hist, n_samples, scores=None):
        """MLP's attributes after epochs of `hist` on n_samples samples."""
        self.loss_curve_ += list(hist.loss)
        self.n_iter_ += len(hist.loss)
        self.t_ += len(hist.loss) * n_samples
        self.loss_ = self.loss_curve_[-1]
        self.n_outputs_ = self.network_.sizes[-1]
        if scores is not None and self.validation_scores_ is not None:
            self.validation_loss_curve_ = (self.validation_loss_curve_ or []) + list(
                hist.val_loss)
            self.validation_scores_ += scores
        if self.validation_scores_ is not None:            # early stopping: MLP's Nones
            self.best_loss_ = None
            self.best_validation_score_ = max(self.validation_scores_)
        else:
            self.best_loss_ = min(self.loss_curve_)
            self.best_validation_score_ = None

    def _partial_fit(self, X, y, classes=None, sample_weight=None):
        first = not hasattr(self, "network_")
        hidden, dtype = self._check_params()
        if not first:
            dtype = self.network_.dtype
        X, y = validate_data(self, X, y, reset=first, dtype=dtype, order="C",
                             accept_sparse=_SPARSE, multi_output=True,
                             y_numeric=isinstance(self, RegressorMixin))
        _dense_only(y, "y")
        Y, output, n_out, fitted = self._targets(y, first, classes)
        if first:
            for key, value in fitted.items():      # the class weights need classes_
                setattr(self, key, value)
        weights = self._weights(y, sample_weight, first=False)
        if first:
            net = self._new_network([X.shape[1], *hidden, n_out], output, X.dtype,
                                    check_random_state(self.random_state))
            optimizer = self._new_optimizer()
        else:
            net, optimizer = self.network_, self._optimizer
        hist = net.fit(X, Y, epochs=1, batch_size=self._batch_size(X.shape[0]),
                       optimizer=optimizer, shuffle=self.shuffle, verbose=bool(self.verbose),
                       sample_weight=weights)
        if first:
            self.network_ = net
            self._optimizer = optimizer
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
            self.validation_loss_curve_ = self.validation_scores_ = None
        self._record(hist, X.shape[0])
        return self

    def _output(self, X):
        """The network's output on X (softmax / sigmoid probabilities, or values), in the
        network's dtype."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self.network_.dtype, order="C",
                          accept_sparse=_SPARSE)
        return self.network_.forward(X)

    def _to_onnx(self, path):
        check_is_fitted(self)
        self.network_.to_onnx(path)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True          # scipy.sparse X (never densified)
        return tags


_PARAMETERS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : sequence of int, default=(100,)
        Units of each hidden layer; () trains a network without hidden layers.
    activation : str or sequence of str, default="relu"
        Hidden activation: "relu", "leaky_relu", "tanh", "sigmoid" (MLP's "logistic") or
        "linear" (MLP's "identity"); or one name per hidden layer.
    optimizer : {"adam", "sgd"}, default="adam"
    learning_rate : float > 0, default=1e-3
        The step size (MLP's learning_rate_init; MLP's schedule strings are refused).
    momentum : float in [0, 1), default=0.9
        Momentum of "sgd" (ignored by "adam").
    weight_decay : float >= 0, default=0.0
        Decoupled (AdamW) for "adam", an L2 term for "sgd"; weights only, never biases.
    dropout : float in [0, 1) or sequence of float, default=0.0
        Inverted dropout on the hidden layers while training.
    batch_size : int >= 1 or "auto", default="auto"
        "auto" is min(200, n_samples), as in MLPClassifier.
    epochs : int >= 1, default=200
        Most passes over the data in `fit`.
    tol : float >= 0, default=1e-4
    n_iter_no_change : int >= 1, default=10
        `fit` stops when the training loss (or, with early_stopping, the validation loss)
        has not improved by more than `tol` for this many epochs.
    early_stopping : bool, default=False
        Hold out `validation_fraction` of the samples (stratified for classifiers), stop
        on their loss and keep the weights of the best epoch.
    validation_fraction : float in (0, 1), default=0.1
    shuffle : bool, default=True
        Reshuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling, dropout and the validation split; the
        same int gives the same model.
    dtype : None, "float32" or "float64", default=None
        Dtype of the network; X is converted to it once. None follows scikit-learn's
        rule: float32 X trains (and predicts) in float32, any other X in float64. Pass
        float32 X, or "float32", for speed (about 2x); in float64 a row's prediction
        does not depend on which other rows are predicted with it (see the README).
    verbose : bool, default=False
        Print one line per epoch.
    warm_start : bool, default=False
        `fit` continues the fitted network (weights, optimizer state, shuffling) instead
        of starting anew, as in MLPClassifier; the targets must be like the first fit's.
"""

_ATTRIBUTES_DOC = """
    network_ : nnfast.Network
        The fitted network (``network_.summary()``, ``network_.save(path)``);
        ``to_onnx(path)`` exports it.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When X was a DataFrame with string column names.
    loss_curve_ : list of float
        Mean training loss of each epoch (of every partial_fit call).
    validation_loss_curve_ : list of float or None
        Validation loss of each epoch, with early_stopping.
    n_iter_ : int
        Epochs trained.
    coefs_, intercepts_ : list of ndarray
        Weights (fan_in, fan_out) and biases (fan_out,) of each layer, as MLP's: views
        into the network (writing into them changes it).
    loss_ : float
        Training loss of the last epoch (MLP's loss_ also holds its L2 penalty).
    best_loss_ : float or None
        Lowest training loss; None with early_stopping, as in MLP.
    t_ : int
        Training samples seen.
    validation_scores_ : list of float or None
        With early_stopping: the score (accuracy, or R^2) on the held-out samples after
        each epoch.
    best_validation_score_ : float or None
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
        Output units.
    out_activation_ : str
        "softmax", "logistic" (multi-label) or "identity" (regression), as MLP names them.
"""


class NNClassifier(ClassifierMixin, _NNBase):
    __doc__ = """Multi-layer perceptron classifier on nnfast, in place of MLPClassifier.

    A softmax output with cross-entropy for single-label targets (binary too: two
    outputs), a sigmoid output with binary cross-entropy for multi-label targets (a 2-D
    0/1 indicator matrix).
""" + _PARAMETERS_DOC + """    class_weight : None, "balanced" or dict {label: weight}, default=None
        Multiplies each sample's weight by its class's ("balanced": n_samples /
        (n_classes * count of the class), as scikit-learn computes it); single-label
        targets only, and no "balanced" in partial_fit.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted (any values, strings too); for multi-label targets
        ``arange(n_labels)``.""" + _ATTRIBUTES_DOC + """
    Notes
    -----
    After unpickling, predictions are identical and partial_fit continues exactly as
    without pickling (weights, optimizer state, shuffling and dropout state are kept).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam",
                 learning_rate=1e-3, momentum=0.9, weight_decay=0.0, dropout=0.0,
                 batch_size="auto", epochs=200, tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, shuffle=True,
                 random_state=None, dtype=None, verbose=False, warm_start=False,
                 class_weight=None):
        super().__init__(hidden_layer_sizes, activation, optimizer=optimizer,
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay, dropout=dropout, batch_size=batch_size,
                         epochs=epochs, tol=tol, n_iter_no_change=n_iter_no_change,
                         early_stopping=early_stopping,
                         validation_fraction=validation_fraction, shuffle=shuffle,
                         random_state=random_state, dtype=dtype, verbose=verbose,
                         warm_start=warm_start)
        self.class_weight = class_weight

    def _weights(self, y, sample_weight, first):
        w = super()._weights(y, sample_weight, first)
        cw, name = self.class_weight, type(self).__name__
        if cw is None:
            return w
        if y.ndim == 2 and y.shape[1] > 1:
            raise ValueError(f"{name}: class_weight is for single-label targets; for "
                             "multi-label y pass sample_weight")
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"{name}: class_weight must be None, 'balanced' or a dict "
                                 f"{{label: weight}}, got {cw!r}")
            if not first:
                raise ValueError(f"{name}: class_weight='balanced' needs all of y and is "
                                 "not available in partial_fit; pass a dict, e.g. from "
                                 "sklearn.utils.class_weight.compute_class_weight")
        elif isinstance(cw, dict):
            labels = set(np.unique(column_or_1d(y)).tolist()) | set(
                getattr(self, "classes_", np.array([])).tolist())
            unknown = [k for k in cw if k not in labels]
            if unknown:
                raise ValueError(f"{name}: class_weight has labels {unknown[:10]} that are "
                                 f"not classes of y ({sorted(labels, key=str)[:10]})")
            for label, value in cw.items():
                check_number(name, f"class_weight[{label!r}]", value, 0, np.inf)
        else:
            raise TypeError(f"{name}: class_weight must be None, 'balanced' or a dict "
                            f"{{label: weight}}, got {type(cw).__name__}")
        per_class = compute_sample_weight(cw, column_or_1d(y))
        return per_class if w is None else w * per_class

    def _score_output(self, Y, out, sample_weight):
        if Y.ndim == 2:                         # multi-label: exact match of every label
            return accuracy_score(Y, out > 0.5, sample_weight=sample_weight)
        return accuracy_score(Y, out.argmax(axis=1), sample_weight=sample_weight)

    def _targets(self, y, first, classes=None):
        name = type(self).__name__
        check_classification_targets(y)
        if classes is not None:
            classes = np.unique(classes)
        if not first:
            if classes is not None and not np.array_equal(classes, self.classes_):
                raise ValueError(f"{name}: classes {classes.tolist()} differ from the "
                                 f"classes {self.classes_.tolist()} of the first call")
            classes = self.classes_
        multilabel = y.ndim == 2 and y.shape[1] > 1
        if not first and multilabel != self._multilabel:
            kind = "multi-label" if self._multilabel else "single-label"
            raise ValueError(f"{name}: the model was trained on {kind} targets; y of shape "
                             f"{y.shape} is not one")
        if multilabel:
            if type_of_target(y) != "multilabel-indicator":
                raise ValueError(f"{name}: a 2-D y must be a multi-label indicator matrix "
                                 f"of 0/1; multiclass-multioutput targets are not supported")
            labels = np.arange(y.shape[1])
            if classes is not None and not np.array_equal(classes, labels):
                raise ValueError(f"{name}: a multi-label y of {y.shape[1]} columns has the "
                                 f"classes {labels.tolist()}, expected {classes.tolist()}")
            Y = y.astype(np.float64)
        else:
            y = column_or_1d(y, warn=True)
            labels = np.unique(y) if classes is None else classes
            unseen = np.setdiff1d(y, labels)
            if unseen.size:
                raise ValueError(f"{name}: y has labels {unseen.tolist()[:10]} that are not "
                                 f"in classes {labels.tolist()}")
            Y = np.searchsorted(labels, y)         # class indices
        if labels.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 classes to train, got 1 class "
                             f"({labels[0]!r})")
        fitted = {"classes_": labels, "_multilabel": multilabel}
        return Y, ("sigmoid" if multilabel else "softmax"), labels.shape[0], fitted

    def _stratify(self, Y):
        return None if Y.ndim == 2 else Y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Self:
        """Train a new network on (X, y) (with warm_start, continue the fitted one).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) of labels, or (n_samples, n_labels) of 0/1
            for multi-label classification
        sample_weight : array-like of shape (n_samples,), optional
            Weights (>= 0): a mini-batch's loss is sum(w_i * l_i) / sum(w_i); multiplied
            by the class weights of class_weight.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    def partial_fit(self, X: ArrayLike, y: ArrayLike, classes: ArrayLike | None = None,
                    sample_weight: ArrayLike | None = None) -> Self:
        """Train one epoch on (X, y), continuing from the current weights and optimizer.

        early_stopping, tol and n_iter_no_change apply to `fit` only.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        classes : array-like of shape (n_classes,)
            All the labels; needed on the first call (without an earlier fit), optional
            after it (then it must be the same).
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        if classes is None and not hasattr(self, "network_"):
            raise ValueError(f"{type(self).__name__}: classes must be passed on the first "
                             "call to partial_fit")
        return self._partial_fit(X, y, classes, sample_weight)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities.

        Returns
        -------
        ndarray of shape (n_samples, n_classes) in the network's dtype: rows sum to 1
        (single-label) or one independent probability per label (multi-label)
        """
        return self._output(X)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted labels.

        Returns
        -------
        ndarray of shape (n_samples,) with values of `classes_`, or for multi-label
        targets an int64 0/1 array of shape (n_samples, n_labels)
        """
        proba = self._output(X)
        if self._multilabel:
            return (proba > 0.5).astype(np.int64)
        return self.classes_[proba.argmax(axis=1)]

    def to_onnx(self, path: str | os.PathLike) -> None:
        """Write the fitted network to an ONNX file (see `nnfast.Network.to_onnx`).

        The model's input "X" is float32 of shape [N, n_features]; its output "Y" is
        float32 of shape [N, n_classes]: the probability of each class in the order of
        `classes_` (what predict_proba gives), so the label of a row is
        ``classes_[Y.argmax(axis=1)]``; for multi-label targets, each label's own
        probability. The labels themselves are not in the model.

        Parameters
        ----------
        path : str or os.PathLike

        Raises
        ------
        NotFittedError before fit; ImportError without onnx (pip install nnfast[onnx])
        """
        self._to_onnx(path)


class NNRegressor(RegressorMixin, _NNBase):
    __doc__ = """Multi-layer perceptron regressor on nnfast, in place of MLPRegressor.

    A linear output with squared error (half the squared error, summed over the
    outputs); y 1-D, or 2-D for several outputs.
""" + _PARAMETERS_DOC + """
    Attributes
    ----------""" + _ATTRIBUTES_DOC + """
    Notes
    -----
    After unpickling, predictions are identical and partial_fit continues exactly as
    without pickling (weights, optimizer state, shuffling and dropout state are kept).
    """

    def _score_output(self, Y, out, sample_weight):
        return r2_score(Y, out[:, 0] if Y.ndim == 1 else out, sample_weight=sample_weight)

    def _targets(self, y, first, classes=None):
        n_out = 1 if y.ndim == 1 else y.shape[1]
        if not first and n_out != self.n_outputs_:
            raise ValueError(f"{type(self).__name__}: y has {n_out} outputs, the model was "
                             f"trained on {self.n_outputs_}")
        return y, "linear", n_out, {"n_outputs_": n_out, "_y_ndim": y.ndim}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Self:
        """Train a new network on (X, y) (with warm_start, continue the fitted one).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
            Weights (>= 0): a mini-batch's loss is sum(w_i * l_i) / sum(w_i).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight)

    def partial_fit(self, X: ArrayLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None) -> Self:
        """Train one epoch on (X, y), continuing from the current weights and optimizer.

        early_stopping, tol and n_iter_no_change apply to `fit` only.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), as on the first call
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        return self._partial_fit(X, y, sample_weight=sample_weight)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted values.

        Returns
        -------
        ndarray in the network's dtype, shape (n_samples,) when y was 1-D, else
        (n_samples, n_outputs)
        """
        out = self._output(X)
        return out[:, 0] if self._y_ndim == 1 else out

    def to_onnx(self, path: str | os.PathLike) -> None:
        """Write the fitted network to an ONNX file (see `nnfast.Network.to_onnx`).

        The model's input "X" is float32 of shape [N, n_features]; its output "Y" is
        float32 of shape [N, n_outputs]: the predicted values. A regressor fitted on a
        1-D y gives shape [N, 1] (predict gives (n_samples,)).

        Parameters
        ----------
        path : str or os.PathLike

        Raises
        ------
        NotFittedError before fit; ImportError without onnx (pip install nnfast[onnx])
        """
        self._to_onnx(path)
