"""nnfast.plots: the confusion matrix counts, the pictures, and no pyplot state."""
import struct
import subprocess
import sys

import numpy as np
import pytest

import nnfast as nf
from nnfast import plots


def test_confusion_matrix_counts_pairs():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    counts = plots.confusion_matrix(y_true, y_pred, 5)
    expected = np.zeros((5, 5), np.int64)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == np.int64 and counts[4].sum() == 0 and counts.sum() == 500


@pytest.mark.parametrize("y_true, y_pred, words", [
    ([0, 1], [0], "2 labels"), ([0, 3], [0, 1], "y_true must be in [0, 3)"),
    ([0, 1], [-1, 1], "y_pred must be in [0, 3)")])
def test_confusion_matrix_refuses_bad_labels(y_true, y_pred, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        plots.confusion_matrix(y_true, y_pred, 3)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_training_curves_without_validation(tmp_path):
    pytest.importorskip("matplotlib")
    hist = nf.History()
    hist.loss = [1.0, 0.5, 0.3]
    plots.plot_training_curves(tmp_path / "c.png", hist)          # no accuracy at all
    width, height = _png_size(tmp_path / "c.png")
    assert width > height > 100
    plots.plot_training_curves(tmp_path / "c.svg", hist, [1.1, 0.7, 0.6], [0.5, 0.7, 0.8],
                               title="t")
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("k", [1, 2, 10, 50])
def test_confusion_matrix_picture_any_size(tmp_path, k):
    pytest.importorskip("matplotlib")
    counts = np.arange(k * k).reshape(k, k)
    plots.plot_confusion_matrix(tmp_path / "m.png", counts)
    width, height = _png_size(tmp_path / "m.png")
    assert width > 100 and height > 100


def test_confusion_matrix_picture_refuses_non_square(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix(tmp_path / "m.png", np.zeros((2, 3)))


def test_check_output_path(tmp_path):
    pytest.importorskip("matplotlib")
    plots.check_output_path(tmp_path / "a.png")
    plots.check_output_path(tmp_path / "noextension")
    with pytest.raises(ValueError, match="does not exist"):
        plots.check_output_path(tmp_path / "missing" / "a.png")
    with pytest.raises(ValueError, match="unknown picture format"):
        plots.check_output_path(tmp_path / "a.docx")
    with pytest.raises(ValueError, match="is a directory"):
        plots.check_output_path(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        plots.check_output_path(tmp_path / "file" / "a.png")


def test_a_name_without_extension_is_written_as_given(tmp_path):
    pytest.importorskip("matplotlib")
    hist = nf.History()
    hist.loss = [1.0, 0.5]
    plots.plot_training_curves(tmp_path / "curves", hist)
    plots.plot_confusion_matrix(tmp_path / "matrix", [[3, 1], [0, 4]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves", "matrix"]
    assert _png_size(tmp_path / "curves")[0] > 100


def test_pictures_leave_pyplot_alone(tmp_path):
    pytest.importorskip("matplotlib")
    code = f"""
import sys
import nnfast as nf
from nnfast import plots
hist = nf.History(); hist.loss = [1.0, 0.5]
plots.plot_training_curves({str(tmp_path / 'c.png')!r}, hist, [1.0, 0.9], [0.5, 0.6])
plots.plot_confusion_matrix({str(tmp_path / 'm.png')!r}, [[3, 1], [0, 4]])
assert "matplotlib.pyplot" not in sys.modules        # (matplotlib.get_backend() imports it)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_require_matplotlib_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install nnfast\[plot\]"):
        plots.require_matplotlib()
