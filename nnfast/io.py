"""The model file: an .npz archive of named arrays, never a pickle.

Arrays: format ("nnfast-model"), version, checksum (SHA-256 of the arrays below: names,
dtypes, shapes, bytes), sizes, hidden, output, dtype, params (the flat parameters: all
weights, then all biases), and, when they differ from the defaults, dropout,
input_scale and matmul_precision. Files are written atomically (nnfast._files); `load` checks the format,
the version, the checksum and every size against the data before it allocates.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np

from . import _validate
from ._files import write_atomically
from ._layout import build_layout

if TYPE_CHECKING:
    from .network import Network

FORMAT = "nnfast-model"
FORMAT_VERSION = 2                 # 2: with a SHA-256 checksum of the contents


def save_network(net: Network, path: str | os.PathLike) -> None:
    """Write `net` to `path` (see Network.save)."""
    if not _validate.all_finite(net.flat_params):
        raise ValueError("save: the network's parameters contain NaN or inf (training "
                         "diverged?); refusing to write a model that cannot be used")
    arrays = dict(sizes=np.array(net.sizes, np.int64),
                  hidden=np.array(net.hidden, dtype=str).reshape(-1),
                  output=np.array(net.output), dtype=np.array(net.dtype.name),
                  params=net.flat_params)
    if any(net.dropout):        # optional: files without it have no dropout
        arrays["dropout"] = np.array(net.dropout, np.float64)
    if net.input_scale != 1:    # optional too
        arrays["input_scale"] = np.array(net.input_scale, np.float64)
    if net.matmul_precision != "float32":     # and this: files without it are float32
        arrays["matmul_precision"] = np.array(net.matmul_precision)

    def write(f):
        np.savez(f, format=np.array(FORMAT), version=np.array(FORMAT_VERSION),
                 checksum=np.array(_checksum(arrays)), **arrays)

    write_atomically(path, write, "save")


def _checksum(arrays):
    """SHA-256 (hex) of the model's arrays: names, dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for name in ("sizes", "hidden", "output", "dtype", "params", "dropout", "input_scale",
                 "matmul_precision"):
        if name not in arrays:          # the optional ones (load checks the others first)
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load(path: str | os.PathLike) -> Network:
    """Read a network written by `Network.save`. Never unpickles.

    The file must carry this nnfast's format name and version and a SHA-256 checksum
    that matches its arrays: truncated, damaged or hand-edited files are refused.

    Raises
    ------
    FileNotFoundError if nothing exists at `path`.
    ValueError if the file is not an nnfast model or is inconsistent.
    """
    from .network import Network            # network imports this module
    _validate.check_exists(path, "a model file written by Network.save", "load")
    try:
        f = np.load(os.fspath(path), allow_pickle=False)
    except Exception:               # unreadable, not .npy/.npz, damaged zip, pickle, ...
        raise ValueError(f"load: {path!s} is not an nnfast model file (not a readable .npz "
                         "archive: another kind of file, or a damaged or truncated "
                         "one)") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"load: {path!s} is a single array, not an nnfast model (.npz)")
    try:
        with f:
            data = {k: f[k] for k in f.files}
    except Exception as exc:        # truncated or damaged members, pickled objects, ...
        raise ValueError(f"load: {path!s} is not an nnfast model file (an .npz archive "
                         f"whose arrays cannot be read: {_validate.npy_problem(exc)})") from None
    need = {"format", "version", "checksum", "sizes", "hidden", "output", "dtype", "params"}
    if ("format" not in data or data["format"].shape != () or str(data["format"]) != FORMAT):
        raise ValueError(f"load: {path!s} is not an nnfast model file (no format "
                         f"{FORMAT!r}; arrays {sorted(data)})")
    version = data.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"load: {path!s} has no valid format version")
    if int(version) != FORMAT_VERSION:
        raise ValueError(f"load: {path!s} has format version {int(version)}; this nnfast "
                         f"reads version {FORMAT_VERSION}")
    if not need <= set(data):
        raise ValueError(f"load: {path!s} lacks arrays {sorted(need - set(data))}")
    if str(data["checksum"]) != _checksum(data):
        raise ValueError(f"load: {path!s}: checksum mismatch: the file was modified or "
                         "damaged after it was saved")
    params = data["params"]
    try:
        sizes = _validate.network_sizes([int(s) for s in data["sizes"].reshape(-1)])
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"load: {path!s} describes an invalid network: {exc}") from None
    n_params = build_layout(sizes)[1]
    if params.shape != (n_params,) or params.dtype.name != str(data["dtype"]):
        raise ValueError(f"load: {path!s}: params have shape {params.shape} and dtype "
                         f"{params.dtype}, expected ({n_params},) {data['dtype']}")
    try:                                       # sizes agree with the data: safe to allocate
        dropout = data.get("dropout")
        if dropout is not None:
            if dropout.dtype != np.float64 or dropout.shape != (len(sizes) - 2,):
                raise ValueError(f"dropout has dtype {dropout.dtype} and shape "
                                 f"{dropout.shape}, expected ({len(sizes) - 2},) float64")
            dropout = [float(p) for p in dropout]
        scale = data.get("input_scale", np.array(1.0))
        if scale.dtype != np.float64 or scale.shape != ():
            raise ValueError(f"input_scale has dtype {scale.dtype} and shape {scale.shape}, "
                             "expected a float64 scalar")
        precision = data.get("matmul_precision", np.array("float32"))
        if precision.dtype.kind != "U" or precision.shape != ():
            raise ValueError(f"matmul_precision has dtype {precision.dtype} and shape "
                             f"{precision.shape}, expected a string")
        net = Network(sizes, hidden=[str(h) for h in data["hidden"]],
                      output=str(data["output"]), dtype=str(data["dtype"]),
                      dropout=0.0 if dropout is None else dropout, input_scale=float(scale),
                      matmul_precision=str(precision))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"load: {path!s} describes an invalid network: {exc}") from None
    if not _validate.all_finite(params):
        raise ValueError(f"load: {path!s}: params contain NaN or inf")
    net.set_flat_params(params)
    return net
