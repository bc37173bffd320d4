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


# The arrays of a model file: (dtype kinds, largest number of entries); "params" is
# checked against the layer sizes after the checksum.
_MEMBERS = {"format": ("U", 1), "version": ("iu", 1), "checksum": ("U", 1),
            "output": ("U", 1), "dtype": ("U", 1), "matmul_precision": ("U", 1),
            "input_scale": ("f", 1), "sizes": ("iu", _validate.MAX_LAYERS + 1),
            "hidden": ("U", _validate.MAX_LAYERS), "dropout": ("f", _validate.MAX_LAYERS),
            "params": ("f", None)}
_MAX_ITEMSIZE = 256                         # bytes: names of at most 64 characters
_MAX_RATIO = 64             # save never compresses; a member inflating more is refused


def _read_model_arrays(path):
    """{name: array} of the model file at `path`, each member checked before it is read:
    a known name ending in .npy, at most _MAX_RATIO times its compressed size, its size in
    the zip directory equal to what its .npy header declares, a plain numeric or string
    dtype (never objects), at most _MEMBERS' entries (params: bounded by the file's own
    size; load then checks them against the layer sizes). ValueError naming the
    problem."""
    import stat
    import zipfile
    not_model = f"load: {path!s} is not an nnfast model file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise ValueError(f"load: {path!s} is a directory, not a model file") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):        # a FIFO would block, a device never end
            raise ValueError(f"load: {path!s} is not a regular file (a FIFO, device or "
                             "socket); expected a model file written by Network.save")
        head = fh.read(6)
        if head == b"\x93NUMPY":
            raise ValueError(f"load: {path!s} is a single array, not an nnfast model (.npz)")
        try:
            fh.seek(0)
            archive = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise ValueError(f"{not_model} (not a readable .npz archive: another kind of "
                             "file, or a damaged or truncated one)") from None
        with archive:
            infos = {}
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if name not in _MEMBERS or name in infos:
                    raise ValueError(f"{not_model} (unexpected or repeated member "
                                     f"{info.filename!r})")
                if info.file_size > _MAX_RATIO * max(info.compress_size, 1) + 4096:
                    raise ValueError(f"{not_model} (member {info.filename!r} would inflate "
                                     f"{info.compress_size} bytes to {info.file_size})")
                infos[name] = info
            return {name: _read_member(archive, info, name, not_model)
                    for name, info in infos.items()}


def _read_member(archive, info, name, not_model):
    """One .npy member, its header checked against the directory and _MEMBERS first."""
    kinds, most = _MEMBERS[name]
    fmt = np.lib.format
    try:
        with archive.open(info) as f:
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0,
                           (2, 0): fmt.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(f)
            if dtype.hasobject:
                raise ValueError("it holds Python objects")
            if dtype.kind not in kinds or dtype.itemsize > _MAX_ITEMSIZE:
                raise ValueError(f"dtype {dtype} is not one of a model file's")
            entries = int(np.prod(shape, dtype=object))
            if len(shape) > 1 or (most is not None and entries > most):
                raise ValueError(f"shape {shape} is not one of a model file's")
            if info.file_size != f.tell() + entries * dtype.itemsize:
                raise ValueError(f"the archive declares {info.file_size} bytes, the .npy "
                                 f"header {f.tell() + entries * dtype.itemsize}")
            out = np.empty(shape, dtype)        # the size is checked: safe to allocate
            got = f.readinto(out.reshape(-1).view(np.uint8)) if entries else 0
            f.read(1)                           # at the end: the member's CRC is checked
    except Exception as exc:        # truncated or damaged members, CRC errors, headers
        raise ValueError(f"{not_model} (member {name!r} cannot be read: "
                         f"{_validate.npy_problem(exc)})") from None
    if got != entries * dtype.itemsize:
        raise ValueError(f"{not_model} (member {name!r} is truncated)")
    return out


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
    that matches its arrays: truncated, damaged or hand-edited files are refused. Every
    array's size is checked against the archive's directory, its .npy header and the
    layer sizes before it is read, so a hostile file costs no more memory than the model
    it declares; only regular files are opened (a FIFO or a device is refused, never
    waited on).

    Raises
    ------
    FileNotFoundError if nothing exists at `path`.
    ValueError if the file is not an nnfast model or is inconsistent.
    """
    from .network import Network            # network imports this module
    _validate.check_exists(path, "a model file written by Network.save", "load")
    data = _read_model_arrays(os.fspath(path))
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
