"""load_idx on hostile files: random bytes, mutated real headers and data, truncations,
damaged gzip streams, absurd declared sizes. Every case either reads an array consistent
with its header or raises ValueError; none may crash, hang or allocate what the header
declares without the file holding it."""
import gzip
import os
import struct
import tempfile
import time

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nnfast.datasets import load_idx  # noqa: E402

FUZZ = settings(max_examples=1500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _valid(shape=(3, 4, 5), code=0x08, dtype=np.uint8):
    data = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    header = bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    return header + data.astype(np.dtype(dtype).newbyteorder(">")).tobytes()


def _load(raw, gz=False):
    fd, path = tempfile.mkstemp(suffix=".gz" if gz else ".idx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(gzip.compress(raw) if gz else raw)
        return load_idx(path)
    finally:
        os.unlink(path)


def _check(raw, gz=False):
    try:
        arr = _load(raw, gz)
    except ValueError:
        return
    # accepted: the header's shape and the data agree
    ndim = raw[3]
    shape = tuple(struct.unpack(">I", raw[4 + 4 * i:8 + 4 * i])[0] for i in range(ndim))
    assert arr.shape == shape
    assert 4 + 4 * ndim + arr.nbytes == len(raw)


@FUZZ
@given(st.binary(max_size=80), st.booleans())
def test_random_bytes(raw, gz):
    _check(raw, gz)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 31), st.integers(0, 255)), max_size=6),
       st.integers(-20, 20), st.booleans())
def test_mutated_headers_and_data(edits, resize, gz):
    raw = bytearray(_valid())
    for pos, value in edits:                  # header bytes are 0..15, data after
        raw[pos % len(raw)] = value
    if resize < 0:
        raw = raw[:resize]
    else:
        raw += bytes(resize)
    _check(bytes(raw), gz)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_absurd_sizes_refused_without_allocating(d0, d1, data):
    raw = bytes([0, 0, 0x0D, 2]) + struct.pack(">II", d0, d1) + data
    t0 = time.perf_counter()
    _check(raw)
    assert time.perf_counter() - t0 < 1.0


@FUZZ
@given(st.integers(0, 200), st.integers(0, 255))
def test_damaged_gzip_stream(pos, value):
    good = gzip.compress(_valid((7, 9)))
    raw = bytearray(good)
    raw[pos % len(raw)] ^= value or 1
    fd, path = tempfile.mkstemp(suffix=".gz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(raw))
        try:
            arr = load_idx(path)
            assert arr.shape == (7, 9)         # a flip the format does not notice
        except ValueError:
            pass
    finally:
        os.unlink(path)


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, ">i2"),
                                        (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")])
def test_every_dtype_round_trips(code, dtype):
    arr = _load(_valid((2, 3), code, dtype))
    np.testing.assert_array_equal(arr, np.arange(6).reshape(2, 3))
    assert arr.dtype == np.dtype(dtype).newbyteorder("=")


def _real_header():
    """The first 16 bytes of Fashion-MNIST's test images (dims 10000 x 28 x 28), or the
    same header written out when the data set is not installed."""
    from nnfast.datasets import DEFAULT_DIRS
    for d in DEFAULT_DIRS:
        path = os.path.join(d, "t10k-images-idx3-ubyte.gz")
        if os.path.isfile(path):
            with gzip.open(path, "rb") as f:
                return f.read(16)
    return bytes([0, 0, 8, 3]) + struct.pack(">III", 10000, 28, 28)


REAL = _real_header()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 4096), st.booleans())
def test_mutated_real_headers(edits, n_data, gz):
    raw = bytearray(REAL)
    for pos, value in edits:
        raw[pos] = value
    _check(bytes(raw) + bytes(n_data), gz)
