"""Model files: round trip, atomic save, and every kind of bad file refused with a clear
ValueError, without executing anything."""
import os
import pickle

import numpy as np
import pytest

import nnfast as nf
from nnfast import io as nf_io


@pytest.fixture
def saved(tmp_path):
    net = nf.Network([5, 4, 3], hidden="tanh", seed=1)
    path = tmp_path / "m.npz"
    net.save(path)
    return net, path


def _rewrite(path, **changes):
    """The file's arrays with some replaced (None: removed), saved again as is."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def test_round_trip_predicts_identically(saved):
    net, path = saved
    back = nf.load(path)
    X = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    assert back.hidden == net.hidden and back.dtype == net.dtype


@pytest.mark.parametrize("keep", [0, 10, 100, 400, -200, -30, -1])
def test_truncated_files_are_refused(saved, keep):
    net, path = saved
    raw = path.read_bytes()
    path.write_bytes(raw[:keep] if keep >= 0 else raw[:len(raw) + keep])
    with pytest.raises(ValueError, match="m.npz"):
        nf.load(path)


def test_a_changed_parameter_byte_is_refused(saved):
    net, path = saved
    raw = bytearray(path.read_bytes())
    needle = net._flat_params[7:11].tobytes()             # bytes of the stored params
    pos = bytes(raw).find(needle)
    assert pos > 0
    raw[pos] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="m.npz"):        # zip CRC or our checksum
        nf.load(path)


@pytest.mark.parametrize("field,value", [
    ("sizes", np.array([5, 6, 3])),                        # hand-edited layer size
    ("hidden", np.array(["relu"])),
    ("output", np.array("sigmoid")),
    ("params", None),
])
def test_hand_edited_files_are_refused(saved, field, value):
    net, path = saved
    if value is None:                                     # same shape, other values
        with np.load(path) as f:
            value = f["params"] * 2
    _rewrite(path, **{field: value})
    with pytest.raises(ValueError, match="checksum mismatch"):
        nf.load(path)


def test_wrong_version_and_format_are_refused(saved):
    net, path = saved
    _rewrite(path, version=np.array(99))
    with pytest.raises(ValueError, match="format version 99; this nnfast reads version 2"):
        nf.load(path)
    _rewrite(path, format=np.array("something-else"))
    with pytest.raises(ValueError, match="not an nnfast model file"):
        nf.load(path)


def test_wrong_shape_is_refused_even_with_a_matching_checksum(saved):
    net, path = saved
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["params"] = arrays["params"][:-1]
    arrays["checksum"] = np.array(nf_io._checksum(arrays))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"params have shape \(\d+,\)"):
        nf.load(path)


class _Payload:
    """Unpickling this would create a marker file: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_never_executed(saved, tmp_path):
    net, path = saved
    marker = tmp_path / "executed"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["params"] = np.array([_Payload(str(marker))], dtype=object)
    np.savez(path, **arrays)                      # numpy pickles object arrays on save
    assert b"executed" in path.read_bytes()       # the payload is in the file
    with pytest.raises(ValueError, match="m.npz"):
        nf.load(path)
    assert not marker.exists()
    # and a raw pickle file
    bad = tmp_path / "raw.npz"
    bad.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match="raw.npz"):
        nf.load(bad)
    assert not marker.exists()


def test_interrupted_save_leaves_the_old_file_and_no_temporary(saved, monkeypatch):
    net, path = saved
    before = path.read_bytes()

    def crash(f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", crash)
    net2 = nf.Network([5, 4, 3], seed=7)
    with pytest.raises(OSError, match="No space left"):
        net2.save(path)
    assert path.read_bytes() == before                    # the old model, untouched
    assert os.listdir(path.parent) == [path.name]          # no temporary left behind


def test_save_to_a_directory_or_a_missing_folder_is_refused(tmp_path):
    net = nf.Network([5, 4, 3])
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(ValueError, match="d.npz is a directory"):
        net.save(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="folder .*nowhere does not exist"):
        net.save(tmp_path / "nowhere" / "m.npz")
    assert os.listdir(tmp_path) == ["d.npz"] and os.listdir(tmp_path / "d.npz") == []
