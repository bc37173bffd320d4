"""Checks and one-time conversions of user input, before anything reaches the compiled core.

The kernels trust their inputs (no bounds checks); everything they get passes here first:
numeric dtype, rank, shape, finiteness, label range, C order and the network's dtype.
"""
import math
import numbers
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from ._names import HIDDEN, OUTPUT
from ._npyfile import STREAM_DTYPES, NpyFile, file_of_memmap, npy_problem, read_array
from ._sparse import check_sparse, dense_only, is_sparse

_NUMERIC_KINDS = "biuf"          # bool, signed, unsigned, float; not complex/object/str/time
_FINITE_CHUNK = 1 << 20          # entries per isfinite() pass: bounded temporary memory


def check_int(owner, name, value, low, high=None):
    """Return int(value) after checking it is an integer (not a bool) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{owner}: {name} must be {bound}, got {value}")
    return value


def check_number(owner, name, value, low, high, low_open=False, high_open=False):
    """Return float(value) after checking it is a finite real in the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{owner}: {name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return value


def _as_numeric_array(a, name):
    """np.asarray(a) with a numeric (bool/int/float) dtype, else TypeError."""
    if a is None:
        raise TypeError(f"{name} must be an array of numbers, got None")
    dense_only(a, name)              # scipy.sparse: X has its own path (nnfast._sparse)
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:          # ragged lists and the like
        raise ValueError(f"{name} could not be read as a rectangular array: {exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must hold numbers (bool, int or float), got dtype {arr.dtype}")
    return arr


def all_finite(a):
    """True when every entry of the float array `a` is finite; bounded extra memory."""
    flat = a.reshape(-1)
    for start in range(0, flat.size, _FINITE_CHUNK):
        if not np.isfinite(flat[start:start + _FINITE_CHUNK]).all():
            return False
    return True


def _check_finite(arr, name):
    if arr.dtype.kind == "f" and not all_finite(arr):
        raise ValueError(f"{name} contains NaN or inf (or values too large for {arr.dtype}); "
                         "expected finite numbers")


def features(X, n_features, dtype, name="X", allow_empty=False):
    """X as a C-contiguous (n, n_features) array of `dtype`, n >= 1 (n >= 0 with
    `allow_empty`, for prediction), all finite.

    Samples of more than one dimension, (n, ...) with n_features values each (images
    (n, 28, 28)), are flattened, whatever the dtype (as `source` does for arrays read in
    place). Returns X itself when it already is one (it is only ever read), else a
    converted copy.
    """
    arr = _as_numeric_array(X, name)
    if arr.ndim > 2 and math.prod(arr.shape[1:]) == n_features:
        arr = arr.reshape(arr.shape[0], n_features)
    if arr.ndim != 2:
        hint = " (use X.reshape(1, -1) for a single sample)" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D of shape (n_samples, {n_features}) (or "
                         f"(n_samples, ...) of {n_features} values per sample), got "
                         f"shape {arr.shape}{hint}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: expected at least one sample, got shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, the network expects "
                         f"{n_features} (shape (n_samples, {n_features}))")
    with np.errstate(over="ignore"):             # overflow to inf is reported just below
        out = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(out, name)
    return out


def check_output_file(path):
    """ValueError unless a file can be written at `path`: it is not a directory, its
    folder exists (and is a folder, not a file), this process can create files in that
    folder (tried: a temporary file, removed at once) and an existing file there is not
    read-only. For commands to call before long work whose result goes to `path`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a directory; give a file name")
    if not os.path.isdir(folder):
        above = folder
        while not os.path.exists(above):            # the nearest part of the path that exists
            above = os.path.dirname(above)
        if os.path.isdir(above):
            raise ValueError(f"cannot write {path}: folder {folder} does not exist")
        raise ValueError(f"cannot write {path}: {above} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write {path}: cannot create files in folder {folder} "
                         f"({exc.strerror or exc})") from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {path}: the file exists and is read-only")


def check_exists(path, what, owner):
    """FileNotFoundError naming `path` unless something exists there."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{owner}: {path} does not exist (expected {what})")


def open_npy(path, name="X"):
    """A .npy file opened with mmap_mode="r" (load_npy_dir's X; fit and predict read a
    memmap of a whole file from the file itself, see `source`).
    FileNotFoundError naming the path when it does not exist; ValueError when it is
    not a readable .npy file."""
    check_exists(path, "a .npy file", name)
    try:
        arr = np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
    except Exception as exc:        # unreadable, pickled objects, not .npy, ...
        raise ValueError(f"{name}: {os.fspath(path)!s} is not a readable .npy file: "
                         f"{npy_problem(exc)}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: {os.fspath(path)!s} is an .npz archive; expected one "
                         ".npy array")
    return arr


def source(X, n_features, dtype, scale, name="X", allow_empty=False):
    """X to be read in place and converted one mini-batch (or chunk) at a time, or None
    when it should be converted up front with `features`.

    Read in place: a path to a .npy file (an NpyFile: its rows are read with pread, see
    nnfast._npyfile; so is a memmap of a whole .npy file), an np.memmap, and a
    C-contiguous uint8 array; their dtype must be
    uint8, float32 or float64. Returns a C-contiguous (n, n_features) view (trailing
    dimensions of images are flattened). Float data are checked for NaN / inf (after
    conversion to `dtype` and `scale`) in bounded chunks, so a file is read once and
    never held in memory.
    """
    if isinstance(X, (str, os.PathLike)):
        X = NpyFile.open(X, name)
    elif isinstance(X, np.memmap):          # a whole .npy file mapped: read its file
        X = file_of_memmap(X, name) or X
    if isinstance(X, NpyFile):
        shape, contiguous = X.file_shape, not X.fortran or len(X.file_shape) < 2
    elif not isinstance(X, np.ndarray) or not (isinstance(X, np.memmap)
                                               or X.dtype == np.uint8):
        return None
    else:
        shape, contiguous = X.shape, X.flags.c_contiguous
        if not isinstance(X, np.memmap) and X.dtype == np.uint8 and not contiguous:
            return None                      # a non-contiguous array in memory: convert it
    if X.dtype.name not in STREAM_DTYPES or not X.dtype.isnative or not contiguous:
        raise ValueError(f"{name}: data read from disk must be a C-contiguous array of "
                         f"{', '.join(STREAM_DTYPES)} (in this machine's byte order); got a "
                         f"{'C' if contiguous else 'non-C'}-contiguous {X.dtype} "
                         "array (convert the file once, e.g. np.save(path, "
                         "np.ascontiguousarray(X, np.float32)))")
    if len(shape) < 2:
        raise ValueError(f"{name} must be 2-D of shape (n_samples, {n_features}) (or images "
                         f"(n_samples, ...) of {n_features} values), got shape {shape}")
    if shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: expected at least one sample, got shape {shape}")
    X2 = X if isinstance(X, NpyFile) else X.reshape(shape[0], math.prod(shape[1:]))
    if X2.shape[1] != n_features:
        raise ValueError(f"{name} has {X2.shape[1]} features (shape {shape}), the network "
                         f"expects {n_features}")
    if X2.dtype.kind == "f":
        _check_finite_converted(X2, dtype, scale, name)
    elif not np.isfinite(np.dtype(dtype).type(255) * np.dtype(dtype).type(scale)):
        raise ValueError(f"{name}: uint8 values times input_scale {scale:g} overflow "
                         f"{np.dtype(dtype)}")
    return X2


def read_rows(X, start, stop):
    """Rows start:stop of X read in place (an NpyFile, a memmap, an array) as an array."""
    return X.read(start, stop) if isinstance(X, NpyFile) else X[start:stop]


def _check_finite_converted(X, dtype, scale, name):
    """NaN / inf in X as the network sees it (converted to dtype, times scale), by chunks."""
    rows = max(1, _FINITE_CHUNK // max(1, X.shape[1]))
    s = np.dtype(dtype).type(scale)
    with np.errstate(over="ignore"):
        for start in range(0, X.shape[0], rows):
            chunk = np.asarray(read_rows(X, start, start + rows), dtype=dtype) * s
            if not np.isfinite(chunk).all():
                raise ValueError(f"{name} contains NaN or inf (or values too large for "
                                 f"{np.dtype(dtype)} after scaling by {scale:g}) in rows "
                                 f"{start}..{start + chunk.shape[0] - 1}; expected finite "
                                 "numbers")


def targets(y, n_samples, n_out, output, dtype, name="y"):
    """Targets as a C-contiguous (n_samples, n_out) array of `dtype`.

    softmax: integer labels (n,) in [0, n_out) become one-hot rows; (n, n_out) rows must
    be distributions (entries in [0, 1], summing to 1). sigmoid: entries in [0, 1],
    (n,) allowed when n_out == 1. linear: finite values, (n,) allowed when n_out == 1.
    """
    arr = _as_numeric_array(y, name)
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} rows but X has {n_samples} samples")
    _check_finite(arr, name)
    if output == "softmax":
        if arr.ndim == 1:
            return _one_hot(arr, n_out, dtype, name)
        if arr.shape[1] != n_out:
            raise ValueError(f"{name} for a softmax output must be integer labels of shape "
                             f"({n_samples},) or one-hot rows of shape ({n_samples}, {n_out}), "
                             f"got shape {arr.shape}")
        out = np.ascontiguousarray(arr, dtype=dtype)
        _check_range(out, name, "one-hot rows")
        sums = out.sum(axis=1, dtype=np.float64)
        if np.abs(sums - 1).max() > 1e-3:
            i = int(np.argmax(np.abs(sums - 1)))
            raise ValueError(f"{name}: one-hot rows must sum to 1, row {i} sums to {sums[i]:g}")
        return out
    if arr.ndim == 1:
        if n_out != 1:
            raise ValueError(f"{name} for a {output} output with {n_out} units must have shape "
                             f"({n_samples}, {n_out}), got shape {arr.shape}")
        arr = arr.reshape(-1, 1)
    if arr.shape[1] != n_out:
        raise ValueError(f"{name} for a {output} output must have shape ({n_samples}, {n_out})"
                         + (f" or ({n_samples},)" if n_out == 1 else "") +
                         f", got shape {arr.shape}")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(out, name)                 # conversion to float32 may overflow to inf
    if output == "sigmoid":
        _check_range(out, name, "targets of a sigmoid output")
    return out


def sample_weights(w, n_samples, dtype, name="sample_weight"):
    """Sample weights as a C-contiguous (n_samples,) array of `dtype`, or None for None.

    Finite, >= 0 and not all zero: a row's loss and gradient are multiplied by its weight,
    and a mini-batch's loss is sum(w_i * l_i) / sum(w_i). That is the same for weights
    times any constant, so they are divided by their largest (in float64) before the
    conversion to `dtype`: weighted gradients then never overflow where unweighted ones
    do not."""
    if w is None:
        return None
    arr = _as_numeric_array(w, name)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(f"{name} must be 1-D with one weight per sample, shape "
                         f"({n_samples},), got shape {arr.shape}")
    w64 = arr.astype(np.float64)
    _check_finite(w64, name)
    if n_samples and w64.min() < 0:
        i = int(np.argmin(w64))
        raise ValueError(f"{name} must be >= 0, got {w64[i]:g} for sample {i}")
    top = w64.max() if n_samples else 0.0
    if not top > 0:
        raise ValueError(f"{name} is zero for every sample: at least one weight must be "
                         "positive")
    return np.ascontiguousarray(w64 / top, dtype=dtype)


def _check_range(out, name, what):
    lo, hi = out.min(), out.max()
    if lo < 0 or hi > 1:
        raise ValueError(f"{name}: {what} must lie in [0, 1], got values in [{lo:g}, {hi:g}]")


def _one_hot(labels, n_out, dtype, name):
    if labels.dtype.kind == "f":
        fractional = labels != np.round(labels)
        if fractional.any():
            i = int(np.argmax(fractional))
            raise ValueError(f"{name}: class labels must be integers in [0, {n_out}), got "
                             f"{labels[i].item()!r} (label {i})")
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi >= n_out:
        raise ValueError(f"{name}: class labels must be in [0, {n_out}) for {n_out} output "
                         f"units, got values in [{lo}, {hi}]")
    out = np.zeros((labels.shape[0], n_out), dtype=dtype)
    out[np.arange(labels.shape[0]), labels.astype(np.intp)] = 1
    return out


# ------------------------------------------------------------------ a network's inputs

def network_inputs(net, X, name="X", allow_empty=False):
    """X checked for `net`, as (n, n_features) to read from: files (.npy paths,
    np.memmap) and uint8 arrays as they are, converted a mini-batch or chunk at a time;
    anything else converted once (`features`). No samples only with `allow_empty`
    (prediction). scipy.sparse X: checked and converted to CSR once, never densified."""
    if is_sparse(X):
        return check_sparse(X, net.sizes[0], net.dtype, net.input_scale, name)
    src = source(X, net.sizes[0], net.dtype, net.input_scale, name, allow_empty)
    if src is not None:
        return src
    return features(X, net.sizes[0], net.dtype, name, allow_empty)


def network_targets(net, y, n, name="y"):
    """Targets y (an array, or a path to a .npy file) of n samples, checked for `net`."""
    if isinstance(y, (str, os.PathLike)):
        y = read_array(y, name)              # in memory: never a mapping to fault on
    return targets(y, n, net.sizes[-1], net.output, net.dtype, name)


def fit_settings(net, X, y, epochs, batch_size, optimizer, shuffle, validation_data,
                 validation_split, callbacks, sample_weight, verbose):
    """fit's arguments checked and converted into a FitSettings (nothing changes on
    error). The data files it opens (paths, memmaps of whole files) are in its `opened`
    (fit closes them when it ends), and closed here on error."""
    opened = []
    try:
        return _fit_settings(net, X, y, epochs, batch_size, optimizer, shuffle,
                             validation_data, validation_split, callbacks, sample_weight,
                             verbose, opened)
    except BaseException:
        close_files(opened)
        raise


def close_files(files):
    """Close the NpyFiles in `files` (the data files a call opened)."""
    for f in files:
        f.close()


def _inputs_opened(net, X, name, opened):
    """network_inputs, noting in `opened` a file this opens."""
    checked = network_inputs(net, X, name)
    if isinstance(checked, NpyFile) and checked is not X:
        opened.append(checked)
    return checked


def _fit_settings(net, X, y, epochs, batch_size, optimizer, shuffle, validation_data,
                  validation_split, callbacks, sample_weight, verbose, opened):
    from .optim import get_optimizer
    from .training import FitSettings, Validation
    epochs = check_int("fit", "epochs", epochs, 1)
    batch_size = check_int("fit", "batch_size", batch_size, 1)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"fit: shuffle must be a bool, got {type(shuffle).__name__}")
    optimizer = get_optimizer(optimizer)
    callbacks = list(callbacks) if callbacks is not None else []
    hooks = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")
    for cb in callbacks:
        if not any(hasattr(cb, hook) for hook in hooks):
            raise TypeError(f"fit: callbacks must have at least one of "
                            f"{', '.join(hooks)}, got {type(cb).__name__}")
    X = _inputs_opened(net, X, "X", opened)
    n = X.shape[0]
    Y = network_targets(net, y, n)
    W = sample_weights(sample_weight, n, net.dtype)
    val = None
    if is_number(validation_split) and validation_split == 0:
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
        val = Validation(X[n - n_val:], Y[n - n_val:],
                         None if W is None or not W[n - n_val:].any() else W[n - n_val:])
        X, Y = X[:n - n_val], Y[:n - n_val]
        W = None if W is None else W[:n - n_val]
    if validation_data is not None:
        if (not isinstance(validation_data, (tuple, list))
                or len(validation_data) not in (2, 3)):
            raise ValueError("fit: validation_data must be a pair (X_val, y_val) or a "
                             "triple (X_val, y_val, sample_weight_val)")
        Xv = _inputs_opened(net, validation_data[0], "X_val", opened)
        Wv = None
        if len(validation_data) == 3:
            Wv = sample_weights(validation_data[2], Xv.shape[0], net.dtype,
                                "sample_weight_val")
        val = Validation(Xv, network_targets(net, validation_data[1], Xv.shape[0], "y_val"),
                         Wv)
    return FitSettings(X=X, Y=Y, W=W, validation=val, epochs=epochs, batch_size=batch_size,
                       optimizer=optimizer, shuffle=bool(shuffle), verbose=verbose,
                       callbacks=callbacks, opened=opened)


def is_number(x):
    """A real number, not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def check_name(owner, name, value, allowed):
    """Return `value` after checking it is a str in `allowed`."""
    if not isinstance(value, str):
        raise TypeError(f"{owner}: {name} must be a name, one of {sorted(allowed)}, got "
                        f"{type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"{owner}: unknown {name} {value!r}; expected one of {sorted(allowed)}")
    return value


def dropout_seed(owner, seed):
    """A dropout seed: an int in [0, 2**64)."""
    seed = check_int(owner, "dropout_seed", seed, 0)
    if seed >= 2**64:
        raise ValueError(f"{owner}: dropout_seed must be below 2**64, got {seed}")
    return seed


def flat_values(values, shape, dtype):
    """`values` as an array of numbers of `shape` that is finite in `dtype` (for
    Network.set_flat_params), else ValueError."""
    arr = np.asarray(values)
    if arr.shape != shape or arr.dtype.kind not in "fiu":
        raise ValueError(f"set_flat_params: expected numbers of shape {shape}, got "
                         f"{arr.dtype} {arr.shape}")
    if not all_finite(arr.astype(dtype, copy=False)):
        raise ValueError(f"set_flat_params: values contain NaN or inf (or overflow {dtype})")
    return arr


# ---------------------------------------------------------------- the Network constructor

NETWORK_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_PARAMS = 2**31 - 1             # BLAS here takes 32-bit sizes
MAX_LAYERS = 4096                  # weight layers: bounds what a model file may declare


def network_sizes(sizes):
    """Layer sizes as a tuple of ints >= 1 (input first), at most MAX_PARAMS parameters."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"Network: sizes must be a sequence of ints (input size first), "
                        f"got {type(sizes).__name__}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"Network: sizes needs at least 2 entries (input, output), got "
                         f"{sizes}")
    if len(sizes) > MAX_LAYERS + 1:
        raise ValueError(f"Network: sizes has {len(sizes)} entries; at most "
                         f"{MAX_LAYERS + 1} ({MAX_LAYERS} layers) are supported")
    out = tuple(check_int("Network", f"sizes[{i}]", s, 1) for i, s in enumerate(sizes))
    n_params = sum(i * o + o for i, o in zip(out, out[1:]))      # Python ints: exact
    if n_params > MAX_PARAMS or max(out) > MAX_PARAMS:
        raise ValueError(f"Network: {n_params} parameters for sizes {list(out)}; at most "
                         f"{MAX_PARAMS} are supported")
    return out


def hidden_activations(hidden, n_hidden):
    """One hidden activation name per hidden layer, from one name or a sequence."""
    if isinstance(hidden, str):
        hidden = [hidden] * n_hidden
    elif isinstance(hidden, (Sequence, np.ndarray)):
        hidden = [h.item() if isinstance(h, np.generic) else h for h in hidden]
        if len(hidden) != n_hidden:
            raise ValueError(f"Network: hidden must be one name or {n_hidden} names "
                             f"(one per hidden layer), got {len(hidden)}")
    else:
        raise TypeError(f"Network: hidden must be a name or a sequence of names, got "
                        f"{type(hidden).__name__}")
    return tuple(check_name("Network", "hidden activation", h, HIDDEN) for h in hidden)


def output_activation(output, n_out):
    """The output activation name; softmax needs at least 2 units."""
    output = check_name("Network", "output", output, OUTPUT)
    if output == "softmax" and n_out < 2:
        raise ValueError("Network: a softmax output needs at least 2 units, got 1; "
                         "use output='sigmoid' for a single binary output")
    return output


def dropout_rates(dropout, n_hidden):
    """One rate in [0, 1) per hidden layer, as a tuple of floats."""
    if isinstance(dropout, (Sequence, np.ndarray)) and not isinstance(dropout, str):
        rates = list(dropout)
        if len(rates) != n_hidden:
            raise ValueError(f"Network: dropout must be one rate or {n_hidden} rates (one "
                             f"per hidden layer), got {len(rates)}")
    else:
        rates = [dropout] * n_hidden
        if n_hidden == 0 and is_number(dropout) and dropout != 0:
            raise ValueError(f"Network: dropout {dropout!r} needs hidden layers; this "
                             "network has none")
    for p in rates:
        if not is_number(p):
            raise TypeError(f"Network: dropout must be a number in [0, 1) or a sequence "
                            f"of them, got {p!r}")
        if not 0 <= p < 1:
            raise ValueError(f"Network: dropout rates must be in [0, 1), got {p!r}")
    return tuple(float(p) for p in rates)


def network_dtype(dtype):
    """np.dtype float32 or float64."""
    if dtype is None:          # np.dtype(None) would silently mean float64
        raise TypeError("Network: dtype must be np.float32 or np.float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"Network: dtype must be np.float32 or np.float64, got "
                        f"{dtype!r}") from None
    if dt not in NETWORK_DTYPES:
        raise ValueError(f"Network: dtype must be np.float32 or np.float64, got {dt}")
    return dt


MATMUL_PRECISIONS = ("float32", "bfloat16")


def matmul_precision(precision, dtype):
    """The matmul precision: "float32" or "bfloat16" (float32 networks only)."""
    if not isinstance(precision, str):
        raise TypeError(f"Network: matmul_precision must be one of {MATMUL_PRECISIONS}, "
                        f"got {precision!r}")
    # a plain str from here on: a subclass (np.str_, or one with its own __eq__) could
    # compare equal to a name it is not
    precision = str.__str__(precision)
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"Network: matmul_precision must be one of {MATMUL_PRECISIONS}, "
                         f"got {precision!r}")
    if precision == "bfloat16" and dtype != np.float32:
        raise ValueError(f"Network: matmul_precision='bfloat16' needs dtype float32 (its "
                         f"sums and weights are float32), got dtype {dtype}")
    return precision


def input_scale(scale):
    """The input scale as a finite float > 0."""
    if not (is_number(scale) and math.isfinite(scale) and scale > 0):
        raise (ValueError if is_number(scale) else TypeError)(
            f"Network: input_scale must be a finite number > 0, got {scale!r}")
    return float(scale)


def network_seed(seed):
    """None, an int >= 0 or a np.random.Generator, else TypeError."""
    if not (seed is None or isinstance(seed, np.random.Generator)
            or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
                and seed >= 0)):
        raise TypeError(f"Network: seed must be None, an int >= 0 or a "
                        f"np.random.Generator, got {seed!r}")
