"""The command line, end to end on a tiny MNIST-format data set written by the test."""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import nnfast as nf
from nnfast.cli import main


def _write_idx(path, arr):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim])
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


@pytest.fixture
def tiny_data(tmp_path):
    """Three classes of 4x4 images that a small net separates easily."""
    rng = np.random.default_rng(0)
    for part, n in (("train", 300), ("t10k", 90)):
        y = (np.arange(n) % 3).astype(np.uint8)
        X = rng.integers(0, 60, (n, 4, 4)).astype(np.uint8)
        for k in range(3):
            X[y == k, k, :] = 250                     # class k: bright row k
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", X)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", y)
    return tmp_path


def test_train_saves_a_model_that_predicts(tiny_data, tmp_path, capsys):
    model = tmp_path / "m.npz"
    rc = main(["train", "--data", str(tiny_data), "--hidden", "8", "--epochs", "3",
               "--batch-size", "16", "--lr", "0.01", "--save", str(model)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("test_accuracy") == 3                 # one line per epoch
    last = out.strip().splitlines()
    final = [line for line in last if line.startswith("test accuracy")][0]
    assert float(final.split()[2]) > 0.9
    net = nf.load(model)
    assert net.sizes == (16, 8, 3)
    (X, y), (Xt, yt) = nf.datasets.load_mnist_format([tiny_data])
    assert net.evaluate(Xt, yt)["accuracy"] == pytest.approx(float(final.split()[2]))


def test_sgd_float64_quiet(tiny_data, capsys):
    rc = main(["train", "--data", str(tiny_data), "--hidden", "6,5", "--epochs", "2",
               "--optimizer", "sgd", "--dtype", "float64", "--quiet", "--threads", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1 and out[0].startswith("test accuracy")


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "not found" in err[0] and "nowhere" in err[0]


@pytest.mark.parametrize("args", [["train", "--hidden", "0"], ["train", "--epochs", "-1"],
                                  ["train", "--lr", "nan"], ["train", "--dtype", "int8"],
                                  ["fly"], []])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_module_entry_point(tiny_data):
    proc = subprocess.run([sys.executable, "-m", "nnfast", "train", "--data", str(tiny_data),
                           "--hidden", "4", "--epochs", "1", "--quiet"],
                          capture_output=True, text=True, timeout=120, cwd=tiny_data,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    # cwd: from the repository root, `-m nnfast` would import the uncompiled source tree
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("test accuracy")


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "plateau"])
def test_training_options(tiny_data, capsys, schedule):
    rc = main(["train", "--data", str(tiny_data), "--hidden", "8", "--epochs", "6",
               "--batch-size", "16", "--validation-split", "0.2", "--early-stopping", "2",
               "--schedule", schedule, "--weight-decay", "0.01"])
    out = capsys.readouterr().out
    assert rc == 0
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert 1 <= len(epochs) <= 6 and all("val_loss" in line for line in epochs)
    lrs = [float(line.split(" lr ")[1].split()[0]) for line in epochs]
    if schedule == "cosine":
        assert lrs == sorted(lrs, reverse=True) and lrs[0] == pytest.approx(1e-3)
    if schedule == "step":
        assert lrs[:2] == [pytest.approx(1e-3)] * 2


def test_bad_validation_split_is_one_line_and_exit_2(tiny_data, capsys):
    rc = main(["train", "--data", str(tiny_data), "--epochs", "1", "--validation-split", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "validation_split" in err[0]
