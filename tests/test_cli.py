"""The command line, end to end on a tiny MNIST-format data set written by the test."""
import gzip
import inspect
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


def write_idx_data_set(folder, n_train, n_test, side):
    """A tiny MNIST-format data set in `folder`: random side x side uint8 images, labels
    0, 1, 2 in turn."""
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{part}-images-idx3-ubyte.gz",
                   rng.integers(0, 255, (n, side, side)).astype(np.uint8))
        _write_idx(folder / f"{part}-labels-idx1-ubyte.gz", (np.arange(n) % 3).astype(np.uint8))


# `python -c SIGNAL_AFTER_STEP SIGNAL N nnfast-args...`: the CLI, with SIGNAL (INT, KILL,
# ...) sent to itself right after training step N.
SIGNAL_AFTER_STEP = """
import os, signal, sys
import nnfast._group as group
from nnfast.cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)
real_step, calls = group.LocalGroup.step, [0]
sig, after = getattr(signal, "SIG" + sys.argv[1]), int(sys.argv[2])

def step(self, *args):
    out = real_step(self, *args)
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), sig)
    return out

group.LocalGroup.step = step
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(autouse=True)
def _restore_threads():
    """--threads sets nnfast's thread count for the whole process: put it back."""
    n = nf.get_num_threads()
    yield
    nf.set_num_threads(n)


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
    assert net.input_scale == pytest.approx(1 / 255)         # trained on the uint8 pixels
    (X, y), (Xt, yt) = nf.datasets.load_mnist_format([tiny_data], raw=True)
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
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]


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


# ------------------------------------------------------------------ helpers

def _one_line_error(capsys, rc, *words):
    """The command failed with exit 2 and exactly one line on stderr containing `words`."""
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "Traceback" not in err[0]
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def _assert_png(path):
    """A real picture: PNG signature, more than 100 x 100 pixels, > 5 KB, several colours."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert len(data) > 5000
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.05


def _run(args, cwd, **env):
    """`python -m nnfast args` in a fresh process, from `cwd` (outside the source tree,
    which has no compiled modules on a clean clone and would shadow the installed ones)."""
    return subprocess.run([sys.executable, "-m", "nnfast", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1", **env))


@pytest.fixture
def trained(tiny_data, tmp_path_factory):
    """A model trained on tiny_data by `nnfast train --save`."""
    model = tmp_path_factory.mktemp("model") / "m.npz"
    rc = main(["train", "--data", str(tiny_data), "--hidden", "8", "--epochs", "3",
               "--batch-size", "16", "--lr", "0.01", "--save", str(model), "--quiet"])
    assert rc == 0
    return model


def _confusion_rows(out, k):
    """The k rows of counts printed under the header row of `nnfast evaluate`."""
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("true\\pred"))
    assert lines[top].split()[1:] == [str(j) for j in range(k)] + ["accuracy"]
    rows = [line.split() for line in lines[top + 1:top + 1 + k]]
    assert [r[0] for r in rows] == [str(i) for i in range(k)]
    return np.array([[int(c) for c in r[1:k + 1]] for r in rows]), [r[-1] for r in rows]


# ------------------------------------------------------------------ evaluate

def test_evaluate_prints_loss_accuracy_and_the_confusion_matrix(tiny_data, trained, capsys):
    rc = main(["evaluate", "--model", str(trained), "--data", str(tiny_data)])
    out = capsys.readouterr().out
    assert rc == 0
    net = nf.load(trained)
    _, (Xt, yt) = nf.datasets.load_mnist_format([tiny_data], raw=True)
    pred = net.predict(Xt)
    expected = np.zeros((3, 3), np.int64)
    np.add.at(expected, (yt, pred), 1)
    counts, per_class = _confusion_rows(out, 3)
    np.testing.assert_array_equal(counts, expected)
    assert [float(a) for a in per_class] == pytest.approx(
        [np.mean(pred[yt == k] == k) for k in range(3)], abs=1e-4)
    scores = net.evaluate(Xt, yt)
    line = next(line for line in out.splitlines() if line.startswith("test loss"))
    assert float(line.split()[2]) == pytest.approx(scores["loss"], abs=1e-4)
    assert float(line.split()[5]) == pytest.approx(scores["accuracy"], abs=1e-4)


def test_confusion_matrix_text_is_aligned():
    from nnfast.cli import format_confusion
    counts = np.array([[1234, 5, 0], [7, 89, 0], [0, 0, 0]])
    lines = format_confusion(counts)
    assert len({len(line) for line in lines}) == 1              # every row as wide
    assert lines[1].split() == ["0", "1234", "5", "0", "0.9960"]     # 1234 / 1239
    assert lines[3].split() == ["2", "0", "0", "0", "-"]        # no samples of class 2
    big = format_confusion(np.eye(12, dtype=np.int64))
    assert len({len(line) for line in big}) == 1 and big[0].split()[-2] == "11"


def test_evaluate_plot_writes_a_png(tiny_data, trained, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "confusion.png"
    rc = main(["evaluate", "--model", str(trained), "--data", str(tiny_data),
               "--plot", str(png)])
    assert rc == 0 and f"plotted to {png}" in capsys.readouterr().out
    _assert_png(png)


def test_evaluate_feature_count_mismatch(tiny_data, tmp_path, capsys):
    model = tmp_path / "five.npz"
    nf.Network([5, 4, 3]).save(model)                  # the data has 16 features
    rc = main(["evaluate", "--model", str(model), "--data", str(tiny_data)])
    _one_line_error(capsys, rc, "5 features", "16")


def test_evaluate_too_few_classes(tiny_data, tmp_path, capsys):
    model = tmp_path / "two.npz"
    nf.Network([16, 4, 2]).save(model)                 # the data has 3 classes
    rc = main(["evaluate", "--model", str(model), "--data", str(tiny_data)])
    _one_line_error(capsys, rc, "2 classes")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_model_file(tiny_data, tmp_path, capsys, command):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.float32))
    args = {"evaluate": ["--data", str(tiny_data)],
            "predict": ["--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.npy")]}
    rc = main([command, "--model", str(bad), *args[command]])
    _one_line_error(capsys, rc, "bad.npz")
    rc = main([command, "--model", str(tmp_path / "absent.npz"), *args[command]])
    _one_line_error(capsys, rc, "absent.npz")


def test_regression_model_is_refused(tiny_data, tmp_path, capsys):
    model = tmp_path / "linear.npz"
    nf.Network([16, 4, 3], output="linear").save(model)
    rc = main(["evaluate", "--model", str(model), "--data", str(tiny_data)])
    _one_line_error(capsys, rc, "softmax")


# ------------------------------------------------------------------ data directories

def test_missing_data_dir_for_evaluate(trained, tmp_path, capsys):
    rc = main(["evaluate", "--model", str(trained), "--data", str(tmp_path / "nowhere")])
    _one_line_error(capsys, rc, "not found", "nowhere")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "count"])
def test_malformed_idx_files(tiny_data, trained, capsys, damage):
    labels = tiny_data / "t10k-labels-idx1-ubyte.gz"
    if damage == "garbage":
        labels.write_bytes(b"this is not an IDX file at all")
    elif damage == "truncated":
        labels.write_bytes(gzip.decompress(labels.read_bytes())[:-5])
    else:                                                 # 89 labels for 90 images
        _write_idx(labels, (np.arange(89) % 3).astype(np.uint8))
    for args in (["train", "--epochs", "1"], ["evaluate", "--model", str(trained)]):
        rc = main([*args, "--data", str(tiny_data)])
        _one_line_error(capsys, rc, "t10k-")


def test_any_mnist_format_directory(tmp_path, capsys):
    """Raw (uncompressed) IDX files of another shape and class count (KMNIST-like)."""
    rng = np.random.default_rng(1)
    for part, n in (("train", 200), ("t10k", 50)):
        y = (np.arange(n) % 5).astype(np.uint8)
        X = rng.integers(0, 255, (n, 3, 5)).astype(np.uint8)
        for name, arr in (("images-idx3", X), ("labels-idx1", y)):
            raw = tmp_path / f"{part}-{name}-ubyte"
            _write_idx(raw, arr)
            raw.write_bytes(gzip.decompress(raw.read_bytes()))
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(tmp_path), "--hidden", "4", "--epochs", "1",
                 "--quiet", "--save", str(model)]) == 0
    assert nf.load(model).sizes == (15, 4, 5)
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path)]) == 0
    assert len(_confusion_rows(capsys.readouterr().out, 5)[0]) == 5


# ------------------------------------------------------------------ train --plot, --dropout

def test_train_plot_writes_a_png(tiny_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    rc = main(["train", "--data", str(tiny_data), "--hidden", "8", "--epochs", "4",
               "--batch-size", "16", "--validation-split", "0.2", "--plot", str(png),
               "--quiet"])
    assert rc == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1    # --quiet still quiet
    _assert_png(png)


def test_plot_path_is_checked_before_training(tiny_data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for path, words in ((tmp_path / "no" / "c.png", ["does not exist"]),
                        (tmp_path / "c.xyz", ["unknown picture format", "xyz"])):
        rc = main(["train", "--data", str(tiny_data), "--epochs", "1", "--plot", str(path)])
        _one_line_error(capsys, rc, *words)
        assert capsys.readouterr().out == ""


def test_save_folder_is_checked_before_training(tiny_data, tmp_path, capsys):
    rc = main(["train", "--data", str(tiny_data), "--epochs", "1",
               "--save", str(tmp_path / "no" / "m.npz")])
    _one_line_error(capsys, rc, "does not exist")
    assert capsys.readouterr().out == ""


NO_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; "
                 "from nnfast.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_plot_without_matplotlib(tiny_data, trained, tmp_path, command):
    args = {"train": ["--epochs", "1"], "evaluate": ["--model", str(trained)]}[command]
    proc = subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, command, *args,
                           "--data", str(tiny_data), "--plot", str(tmp_path / "p.png")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"nnfast {command}: error: --plot needs matplotlib: "
                                   "pip install nnfast[plot]")
    assert proc.stdout == ""                              # checked before any work
    assert not (tmp_path / "p.png").exists()


@pytest.mark.skipif("dropout" not in inspect.signature(nf.Network).parameters,
                    reason="Network has no dropout yet")
def test_train_dropout(tiny_data, tmp_path, capsys):
    model = tmp_path / "m.npz"
    rc = main(["train", "--data", str(tiny_data), "--hidden", "8,8", "--epochs", "4",
               "--batch-size", "16", "--lr", "0.01", "--dropout", "0.25",
               "--save", str(model)])
    out = capsys.readouterr().out
    assert rc == 0 and "dropout" in out.splitlines()[0]
    assert float(out.split("test accuracy")[1].split()[0]) > 0.8
    assert nf.load(model).dropout == (0.25, 0.25)


@pytest.mark.parametrize("value", ["1", "-0.1", "x"])
def test_bad_dropout(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dropout", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dropout" in err[0]


def test_diverging_training_is_one_line(tiny_data, capsys):
    rc = main(["train", "--data", str(tiny_data), "--epochs", "3", "--optimizer", "sgd",
               "--lr", "1e30", "--quiet"])
    _one_line_error(capsys, rc, "diverged")


# ------------------------------------------------------------------ predict

def _images(tiny_data):
    """The test images of tiny_data as the (n, 4, 4) uint8 array of the IDX file."""
    return nf.datasets.load_idx(tiny_data / "t10k-images-idx3-ubyte.gz")


def test_predict_classes_and_probabilities(tiny_data, trained, tmp_path, capsys):
    net = nf.load(trained)
    images = _images(tiny_data)
    X = images.reshape(len(images), -1).astype(np.float32)     # the same values as floats
    np.save(tmp_path / "images.npy", images)                    # 3-D uint8
    np.save(tmp_path / "X.npy", X)                              # 2-D float32
    for name in ("images.npy", "X.npy"):
        out = tmp_path / "classes"                              # written as named
        rc = main(["predict", "--model", str(trained), "--input", str(tmp_path / name),
                   "--output", str(out)])
        lines = capsys.readouterr().out.strip().splitlines()
        assert rc == 0 and len(lines) == 1 and "90 samples" in lines[0]
        pred = np.load(out)
        assert pred.dtype == np.int64
        np.testing.assert_array_equal(pred, net.predict(X))
    rc = main(["predict", "--model", str(trained), "--input", str(tmp_path / "images.npy"),
               "--output", str(tmp_path / "p.npy"), "--proba"])
    assert rc == 0
    proba = np.load(tmp_path / "p.npy")
    assert proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(proba, net.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("case, words", [
    ("1-D", ["shape (16,)"]), ("features", ["shape (5, 7)", "16"]),
    ("4-D", ["shape (2, 1, 4, 5)"]),
    ("objects", ["not a readable .npy"]), ("text", ["not a readable .npy"]),
    ("npz", [".npz archive"]), ("missing", ["absent.npy"]),
    ("strings", ["dtype"]), ("nan", ["NaN"])])
def test_predict_bad_input(trained, tmp_path, capsys, case, words):
    path = tmp_path / ("absent.npy" if case == "missing" else "x.npy")
    arrays = {"1-D": np.zeros(16), "features": np.zeros((5, 7)),
              "4-D": np.zeros((2, 1, 4, 5), np.uint8),
              "strings": np.array([["a"] * 16]), "nan": np.full((2, 16), np.nan)}
    if case in arrays:
        np.save(path, arrays[case])
    elif case == "objects":
        np.save(path, np.array([[object()] * 16], dtype=object), allow_pickle=True)
    elif case == "text":
        path.write_text("1,2,3\n")
    elif case == "npz":
        with open(path, "wb") as f:
            np.savez(f, x=np.zeros((2, 16)))
    rc = main(["predict", "--model", str(trained), "--input", str(path),
               "--output", str(tmp_path / "p.npy")])
    _one_line_error(capsys, rc, *words)
    assert not (tmp_path / "p.npy").exists()


def test_predict_entry_point(tiny_data, trained, tmp_path):
    np.save(tmp_path / "images.npy", _images(tiny_data))
    proc = _run(["predict", "--model", str(trained), "--input", "images.npy",
                 "--output", "p.npy"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("predicted 90 samples")
    assert np.load(tmp_path / "p.npy").shape == (90,)


# ------------------------------------------------------------------ bench

def test_bench_prints_a_table(tmp_path):
    proc = _run(["bench", "--batch", "64", "--samples", "256", "--repeat", "1"], cwd=tmp_path,
                OPENBLAS_CORETYPE="Haswell")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "unset for this benchmark: OPENBLAS_CORETYPE=Haswell" in out   # rerun cleanly
    assert "nnfast BLAS threads: 1" in out
    assert ("kernel=" in out) or ("BLAS kernel: unknown" in out)
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.split()[:2] == ["batch", "dtype"])
    row = lines[top + 2].split()
    assert row[:3] == ["64", "float32", "4"] and len(row) == 8
    assert all(float(c) > 0 for c in row[3:])


def test_bench_in_process_without_forcing_variables(monkeypatch, capsys):
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        monkeypatch.delenv(var, raising=False)
    rc = main(["bench", "--batch", "32", "--dtype", "float64", "--samples", "64",
               "--repeat", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert any(line.split()[:3] == ["32", "float64", "2"] for line in out.splitlines())
    assert "python -m bench" in out


def test_bench_stops_when_nnfast_differs_from_numpy(monkeypatch, capsys):
    from nnfast import _bench
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    monkeypatch.setitem(_bench.TOLERANCE, "float32", -1.0)       # nothing passes
    rc = main(["bench", "--batch", "32", "--samples", "64", "--repeat", "1"])
    captured = capsys.readouterr()
    assert rc == 1 and "differs from NumPy" in captured.err
    assert "x floor" not in captured.out


# ------------------------------------------------------------------ help

COMMANDS = ["train", "evaluate", "predict", "bench"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert all(c in out for c in COMMANDS) and "examples:" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_mentions_every_option_with_its_default(command, capsys):
    from nnfast.cli import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert sub.description and "examples:" in out and f"nnfast {command}" in out
    options = [a for a in sub._actions if a.option_strings != ["-h", "--help"]]
    assert options
    for action in options:
        assert action.option_strings[-1] in out
        assert "default" in action.help or "required" in action.help, action.option_strings


@pytest.mark.parametrize("args", [["evaluate"], ["predict", "--model", "m.npz"],
                                  ["bench", "--dtype", "float16"], ["bench", "--batch", "x"]])
def test_usage_errors_are_one_line(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "--help" in err[0]


# ------------------------------------------------------------------ .npy data, MPI

@pytest.fixture
def npy_data(tiny_data, tmp_path):
    """The tiny data set as x_train.npy ... y_test.npy (uint8 images, 3-D)."""
    (X, y), (Xt, yt) = nf.datasets.load_mnist_format([tiny_data], raw=True)
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, arr in (("x_train", X.reshape(-1, 4, 4)), ("y_train", y),
                      ("x_test", Xt.reshape(-1, 4, 4)), ("y_test", yt)):
        np.save(folder / f"{name}.npy", arr)
    return folder


def test_train_and_evaluate_on_npy_files(npy_data, tiny_data, tmp_path, capsys):
    model = tmp_path / "npy.npz"
    rc = main(["train", "--data", str(npy_data), "--hidden", "8", "--epochs", "3",
               "--batch-size", "16", "--lr", "0.01", "--save", str(model), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    acc = float(out.split()[2])
    assert acc > 0.9
    net = nf.load(model)
    assert net.input_scale == pytest.approx(1 / 255)      # takes the uint8 pixels as they are
    for data in (npy_data, tiny_data):                     # either format evaluates it alike
        assert main(["evaluate", "--model", str(model), "--data", str(data)]) == 0
        text = capsys.readouterr().out
        assert f"test accuracy {acc:.4f}" in text


def test_npy_data_dir_with_a_missing_file(npy_data, capsys):
    os.remove(npy_data / "y_test.npy")
    assert main(["train", "--data", str(npy_data), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing y_test.npy" in err[0]


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    import shutil
    return here if os.path.exists(here) else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_train_under_mpiexec_prints_and_saves_on_rank_0_only(tiny_data, tmp_path):
    pytest.importorskip("mpi4py")
    model = tmp_path / "mpi.npz"
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-m", "nnfast", "train",
                           "--data", str(tiny_data), "--hidden", "8", "--epochs", "3",
                           "--batch-size", "16", "--lr", "0.01", "--save", str(model)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert sum("2 MPI ranks" in line for line in lines) == 1
    assert sum(line.startswith("test accuracy") for line in lines) == 1
    assert sum("test_accuracy" in line for line in lines) == 3        # one line per epoch
    assert float([l for l in lines if l.startswith("test accuracy")][0].split()[2]) > 0.9
    assert nf.load(model).sizes == (16, 8, 3)


# ------------------------------------------------------------------ version

def test_version_option_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"nnfast {nf.__version__}\n"


def test_version_has_one_source():
    """pyproject.toml reads the version from nnfast/__init__.py; the installed metadata
    agrees with nf.__version__."""
    from importlib.metadata import version
    tomllib = pytest.importorskip("tomllib")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nnfast.__version__"}
    assert version("nnfast") == nf.__version__
    assert nf.__version__.count(".") >= 1 and "__version__" in nf.__all__


# ------------------------------------------------------------------ output paths

def _bad_target(tmp_path, kind, name):
    """A path where no file `name` can be written, of the given kind."""
    if kind == "directory":
        (tmp_path / "adir").mkdir()
        return tmp_path / "adir"
    if kind == "missing folder":
        return tmp_path / "nowhere" / name
    if kind == "under a file":                       # the folder is a regular file
        (tmp_path / "somefile").write_text("x")
        return tmp_path / "somefile" / name
    folder = tmp_path / "locked"                     # "unwritable folder"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / name


TARGET_KINDS = ["directory", "missing folder", "under a file", "unwritable folder"]
TARGET_WORDS = {"directory": "is a directory", "missing folder": "does not exist",
                "under a file": "is a file, not a folder",
                "unwritable folder": "cannot create files"}


def _skip_if_root(kind):
    if kind == "unwritable folder" and os.geteuid() == 0:
        pytest.skip("root writes into a folder of mode 0500; 'under a file' covers a "
                    "folder that cannot take the file")


@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_train_output_targets_are_checked_before_training(tiny_data, tmp_path, capsys,
                                                           option, kind):
    _skip_if_root(kind)
    if option == "--plot":
        pytest.importorskip("matplotlib")
    target = _bad_target(tmp_path, kind, "out.png" if option == "--plot" else "m.npz")
    rc = main(["train", "--data", str(tiny_data), "--epochs", "1", option, str(target)])
    line = _one_line_error(capsys, rc, option, TARGET_WORDS[kind])
    assert str(target) in line
    assert capsys.readouterr().out == ""                       # nothing trained


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_evaluate_and_predict_targets_are_checked_first(tiny_data, trained, tmp_path, capsys,
                                                         kind):
    _skip_if_root(kind)
    pytest.importorskip("matplotlib")
    target = _bad_target(tmp_path, kind, "p.png")
    rc = main(["evaluate", "--model", str(trained), "--data", str(tiny_data),
               "--plot", str(target)])
    _one_line_error(capsys, rc, "--plot", TARGET_WORDS[kind])
    assert capsys.readouterr().out == ""
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.float32))
    rc = main(["predict", "--model", str(trained), "--input", str(tmp_path / "x.npy"),
               "--output", str(target)])
    _one_line_error(capsys, rc, "--output", TARGET_WORDS[kind])


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_plot_is_written_at_exactly_the_printed_name(tiny_data, trained, tmp_path, capsys,
                                                     command):
    """matplotlib alone would write "curves.png" for "curves"; the picture is written at
    the name given, as PNG, and that name is printed."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "curves"
    args = {"train": ["--epochs", "1", "--hidden", "4"],
            "evaluate": ["--model", str(trained)]}[command]
    rc = main([command, *args, "--data", str(tiny_data), "--plot", str(target)])
    assert rc == 0
    assert f"plotted to {target}\n" in capsys.readouterr().out
    assert not (tmp_path / "curves.png").exists()
    _assert_png(target)


# ------------------------------------------------------------------ input scaling

@pytest.fixture
def digits_npy(tmp_path):
    """uint8 .npy data of intensities 0..16 (like scikit-learn's digits): 3 classes."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "digits"
    folder.mkdir()
    for part, n in (("train", 300), ("test", 90)):
        y = np.arange(n) % 3
        X = rng.integers(0, 4, (n, 16)).astype(np.uint8)
        for k in range(3):
            X[y == k, 4 * k:4 * k + 4] = 16
        np.save(folder / f"x_{part}.npy", X)
        np.save(folder / f"y_{part}.npy", y)
    return folder


@pytest.mark.parametrize("given, expected", [(None, 1 / 255), ("1/16", 1 / 16),
                                             ("0.0625", 0.0625), ("1", 1.0)])
def test_train_input_scale_is_recorded_in_the_model(digits_npy, tmp_path, capsys, given,
                                                    expected):
    model = tmp_path / "m.npz"
    scale = [] if given is None else ["--input-scale", given]
    rc = main(["train", "--data", str(digits_npy), "--hidden", "8", "--epochs", "1",
               "--save", str(model), *scale])
    out = capsys.readouterr().out
    assert rc == 0
    assert nf.load(model).input_scale == pytest.approx(expected)
    # the default 1/255 on data that go up to 16 only: a note saying how to fix it
    assert ("--input-scale 1/16" in out) == (given is None)


def test_train_float_data_default_input_scale_is_1(npy_data, tmp_path, capsys):
    for name in ("x_train", "x_test"):
        X = np.load(npy_data / f"{name}.npy")
        np.save(npy_data / f"{name}.npy", X.astype(np.float32) / 255)
    model = tmp_path / "f.npz"
    assert main(["train", "--data", str(npy_data), "--hidden", "8", "--epochs", "1",
                 "--quiet", "--save", str(model)]) == 0
    assert nf.load(model).input_scale == 1.0


def _unit_scale_model(tiny_data, tmp_path):
    """A model trained through the API on [0, 1] floats (input_scale 1), and the data."""
    (X, y), (Xt, yt) = nf.datasets.load_mnist_format([tiny_data])
    net = nf.Network([16, 8, 3], seed=0)
    net.fit(X, y, epochs=5, batch_size=16, optimizer=nf.Adam(lr=0.01), verbose=False)
    net.save(tmp_path / "unit.npz")
    return tmp_path / "unit.npz", net


def test_predict_scales_uint8_only_as_the_api_does(tiny_data, tmp_path, capsys):
    """One rule: the model multiplies by its input_scale, nothing else; --input-scale S
    multiplies by S first. uint8 meeting input_scale 1 without S: a note."""
    model, net = _unit_scale_model(tiny_data, tmp_path)
    images = _images(tiny_data)
    np.save(tmp_path / "images.npy", images)
    flat = images.reshape(len(images), -1)
    args = ["predict", "--model", str(model), "--input", str(tmp_path / "images.npy"),
            "--output", str(tmp_path / "p.npy"), "--proba"]
    assert main(args) == 0
    captured = capsys.readouterr()
    note = [line for line in captured.err.splitlines() if "note" in line]
    assert len(note) == 1 and "--input-scale 0.00392156862745098" in note[0]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"),
                                  nf.load(model).predict_proba(images))    # unscaled
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), net.predict_proba(flat),
                               rtol=1e-6)
    assert main(args + ["--input-scale", "0.00392156862745098"]) == 0
    assert capsys.readouterr().err == ""
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"),
                               net.predict_proba(flat.astype(np.float32) / 255), rtol=1e-5)


def test_evaluate_input_scale(tiny_data, tmp_path, capsys):
    model, net = _unit_scale_model(tiny_data, tmp_path)
    (_, _), (Xt, yt) = nf.datasets.load_mnist_format([tiny_data])
    want = net.evaluate(Xt, yt)
    assert main(["evaluate", "--model", str(model), "--data", str(tiny_data),
                 "--input-scale", "1/255"]) == 0
    captured = capsys.readouterr()
    assert "note" not in captured.err
    assert f"test loss {want['loss']:.4f}  test accuracy {want['accuracy']:.4f}" in captured.out
    assert main(["evaluate", "--model", str(model), "--data", str(tiny_data)]) == 0
    assert "--input-scale 0.00392156862745098" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1/0", "x", "1/x"])
def test_bad_input_scale(value, capsys):
    for command in (["train"], ["predict", "--model", "m", "--input", "x", "--output", "y"]):
        with pytest.raises(SystemExit) as exc:
            main([*command, "--input-scale", value])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--input-scale" in err[0] and value in err[0]


# ------------------------------------------------------------------ labels and dtypes

def test_train_refuses_labels_that_are_not_0_to_k_minus_1(npy_data, capsys):
    """Labels {3, 7, 42} would make a 43-class model: refused, naming what was found."""
    for part in ("train", "test"):
        y = np.load(npy_data / f"y_{part}.npy")
        np.save(npy_data / f"y_{part}.npy", np.array([3, 7, 42])[y])
    rc = main(["train", "--data", str(npy_data), "--epochs", "1"])
    line = _one_line_error(capsys, rc, "0..K-1", "3 distinct values (3, 7, 42)",
                           "classes 0, 1, 2, 4,", "np.unique")
    assert "0..42" in line
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("labels, words", [
    (lambda y: y.astype(np.float64) + 0.5 * (np.arange(len(y)) == 5), ["2.5", "label 5"]),
    (lambda y: y - (np.arange(len(y)) == 6), ["-1", "label 6"]),         # y[6] is 0
    (lambda y: np.where(np.arange(len(y)) == 1, np.nan, y), ["nan", "label 1"])])
def test_bad_labels_are_refused_alike_in_train_and_evaluate(npy_data, trained, capsys,
                                                            labels, words):
    good = {p: np.load(npy_data / f"y_{p}.npy") for p in ("train", "test")}
    for part, command in (("train", ["train", "--epochs", "1"]),
                          ("test", ["evaluate", "--model", str(trained)])):
        np.save(npy_data / f"y_{part}.npy", labels(good[part]))
        rc = main([*command, "--data", str(npy_data)])
        _one_line_error(capsys, rc, f"y_{part}.npy", "class labels must be integers >= 0",
                        *words)
        np.save(npy_data / f"y_{part}.npy", good[part])


def test_integral_float_labels_are_labels(npy_data, tmp_path, capsys):
    for part in ("train", "test"):
        y = np.load(npy_data / f"y_{part}.npy")
        np.save(npy_data / f"y_{part}.npy", y.astype(np.float32))
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(npy_data), "--hidden", "8", "--epochs", "1",
                 "--quiet", "--save", str(model)]) == 0
    assert nf.load(model).sizes[-1] == 3
    assert main(["evaluate", "--model", str(model), "--data", str(npy_data)]) == 0


def test_int64_features_work_in_train_evaluate_and_predict(npy_data, tmp_path, capsys):
    """Features of a dtype not read in place (int64) are converted once, in every
    command, as the API converts them."""
    for part in ("train", "test"):
        X = np.load(npy_data / f"x_{part}.npy")
        np.save(npy_data / f"x_{part}.npy", X.astype(np.int64))
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(npy_data), "--hidden", "8", "--epochs", "3",
                 "--batch-size", "16", "--lr", "0.01", "--input-scale", "1/255", "--quiet",
                 "--save", str(model)]) == 0
    acc = float(capsys.readouterr().out.split()[2])
    assert acc > 0.9
    assert main(["evaluate", "--model", str(model), "--data", str(npy_data)]) == 0
    assert f"test accuracy {acc:.4f}" in capsys.readouterr().out
    assert main(["predict", "--model", str(model), "--input", str(npy_data / "x_test.npy"),
                 "--output", str(tmp_path / "p.npy")]) == 0
    X = np.load(npy_data / "x_test.npy").reshape(90, -1)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), nf.load(model).predict(X))


def test_class_labels_helper():
    from nnfast.datasets import class_labels
    np.testing.assert_array_equal(class_labels(np.array([0.0, 2.0, 1.0])), [0, 2, 1])
    assert class_labels(np.array([1, 0], np.uint8)).dtype == np.int64
    for bad, value in (([0, 2.5], "2.5"), ([0, -3], "-3"), ([np.inf, 1], "inf")):
        with pytest.raises(ValueError, match=f"got {value}"):
            class_labels(np.array(bad), "labels")
    with pytest.raises(TypeError, match="dtype"):
        class_labels(np.array(["a"]))


# ------------------------------------------------------------------ argument checks

def _usage_error(capsys, args, *words):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("value", ["64,,32", ",64", "64,", ","])
def test_empty_entries_in_a_size_list_are_refused(value, capsys):
    _usage_error(capsys, ["train", "--hidden", value], "--hidden", "empty entries",
                 repr(value))
    _usage_error(capsys, ["bench", "--batch", value], "--batch", "empty entries")


def test_momentum_with_adam_is_refused(tiny_data, capsys):
    rc = main(["train", "--data", str(tiny_data), "--epochs", "1", "--momentum", "0.5"])
    _one_line_error(capsys, rc, "--momentum applies to --optimizer sgd")
    assert capsys.readouterr().out == ""
    rc = main(["train", "--data", str(tiny_data), "--epochs", "1", "--quiet",
               "--optimizer", "sgd", "--momentum", "0.5"])
    assert rc == 0


def test_threads_beyond_the_cpus_of_this_process_are_refused(capsys):
    cpus = len(os.sched_getaffinity(0))
    for command in ("train", "evaluate", "predict", "bench"):
        _usage_error(capsys, [command, "--threads", str(cpus + 1)], "--threads",
                     f"at most {cpus}", "sched_getaffinity")
    _usage_error(capsys, ["train", "--threads", "999"], "at most")


@pytest.mark.parametrize("args, words", [
    (["train", "--epochs", "x"], ["expected a positive integer, got 'x'"]),
    (["train", "--epochs", "0"], ["expected a positive integer, got '0'"]),
    (["train", "--lr", "fast"], ["expected a positive number, got 'fast'"]),
    (["train", "--lr", "inf"], ["expected a positive number"]),
    (["train", "--seed", "-1"], ["expected a non-negative integer"]),
    (["train", "--weight-decay", "-0.1"], ["expected a non-negative number"]),
    (["train", "--momentum", "1.5"], ["expected a number in [0, 1)"]),
    (["train", "--threads", "two"], ["expected a positive integer"])])
def test_number_messages_say_integer_or_number(args, words, capsys):
    line = _usage_error(capsys, args, *words)
    assert "a int" not in line and "a float" not in line


def test_validation_split_0_trains_without_validation(tiny_data, capsys):
    rc = main(["train", "--data", str(tiny_data), "--hidden", "4", "--epochs", "1",
               "--validation-split", "0"])
    out = capsys.readouterr().out
    assert rc == 0 and "val_loss" not in out and "test_accuracy" in out


@pytest.mark.parametrize("shape", [(0, 16), (0, 4, 4), (3, 1, 4, 4)])
def test_predict_empty_and_4d_samples_follow_the_api(trained, tmp_path, capsys, shape):
    """No samples write an empty result; (n, 1, 4, 4) images are flattened like (n, 4, 4)."""
    X = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.save(tmp_path / "x.npy", X)
    for proba, out_shape in ((False, shape[:1]), (True, (shape[0], 3))):
        rc = main(["predict", "--model", str(trained), "--input", str(tmp_path / "x.npy"),
                   "--output", str(tmp_path / "p.npy")] + (["--proba"] if proba else []))
        assert rc == 0
        assert f"predicted {shape[0]} samples" in capsys.readouterr().out
        got = np.load(tmp_path / "p.npy")
        want = (nf.load(trained).predict_proba if proba else nf.load(trained).predict)(X)
        assert got.shape == out_shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
