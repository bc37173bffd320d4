"""Network(..., matmul_precision="bfloat16"): matrix-product inputs rounded to bfloat16,
float32 sums, weights and optimizer state. Its losses and gradients against float32,
the same bits for any team size and on every bfloat16 path, the setting kept by model
files and pickle, and refused where it does not apply."""
import pickle
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import nnfast as nf
import nnfast._threads as threads_mod
from nnfast import _kernels as K
from nnfast import _step

SIZES = [40, 64, 32, 5]


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES[0])).astype(np.float32), rng.integers(0, 5, n)


def _pair(**kw):
    return (nf.Network(SIZES, seed=3, **kw),
            nf.Network(SIZES, seed=3, matmul_precision="bfloat16", **kw))


def test_default_is_float32_and_bfloat16_shows():
    net, bnet = _pair()
    assert net.matmul_precision == "float32"
    assert bnet.matmul_precision == "bfloat16"
    assert "matmul_precision='bfloat16'" in repr(bnet)
    assert "matmul_precision" not in repr(net)


@pytest.mark.parametrize("bad,err", [("bf16", ValueError), ("float64", ValueError),
                                     (None, TypeError), (16, TypeError)])
def test_bad_precision_is_refused(bad, err):
    with pytest.raises(err, match="matmul_precision must be one of"):
        nf.Network(SIZES, matmul_precision=bad)
    net = nf.Network(SIZES)
    with pytest.raises(err, match="matmul_precision must be one of"):
        net.matmul_precision = bad
    assert net.matmul_precision == "float32"


def test_bfloat16_needs_float32():
    with pytest.raises(ValueError, match="needs dtype float32"):
        nf.Network(SIZES, dtype=np.float64, matmul_precision="bfloat16")
    net = nf.Network(SIZES, dtype=np.float64)
    with pytest.raises(ValueError, match="needs dtype float32"):
        net.matmul_precision = "bfloat16"


def _bf16(x):
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.size, np.float32)
    K.bf16_round(out, x.ravel())
    return out.reshape(x.shape).astype(np.float64)


def _reference(net, X, y):
    """Loss and gradients of a relu/softmax network in float64, every matrix product's
    inputs rounded to bfloat16 as the bfloat16 step rounds them (the batch mean's 1/n
    applied after dW's product)."""
    n = X.shape[0]
    acts = [X.astype(np.float64)]
    for l, (W, b) in enumerate(zip(net.coefs, net.intercepts)):
        z = _bf16(acts[-1]) @ _bf16(W) + b
        acts.append(np.maximum(z, 0) if l < net.n_layers - 1 else z)
    z = acts[-1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    Y = np.eye(z.shape[1])[y]
    loss = -np.sum(Y * np.log(p)) / n
    d = p - Y
    grads = []
    for l in range(net.n_layers - 1, -1, -1):
        grads.append((_bf16(acts[l]).T @ _bf16(d) / n, d.sum(axis=0) / n))
        if l > 0:
            d = (_bf16(d) @ _bf16(net.coefs[l]).T) * (acts[l] > 0)
    return loss, grads[::-1]


def test_loss_and_gradients_are_those_of_bfloat16_inputs():
    """Against a float64 model of the same rounding: float32-level agreement."""
    X, y = _data()
    bnet = _pair()[1]
    bloss, bgrads = bnet.loss_and_grads(X, y)
    loss, grads = _reference(bnet, X, y)
    assert abs(bloss - loss) <= 1e-5 * abs(loss)
    for (dw, db), (bdw, bdb) in zip(grads, bgrads):
        for g, bg in ((dw, bdw), (db, bdb)):
            assert np.linalg.norm(bg - g) <= 1e-3 * np.linalg.norm(g)


def test_loss_and_gradients_close_to_float32():
    """Against float32: within what 8 bits of mantissa allow."""
    X, y = _data()
    net, bnet = _pair()
    loss, grads = net.loss_and_grads(X, y)
    bloss, bgrads = bnet.loss_and_grads(X, y)
    assert bloss != loss                             # really another computation
    assert abs(bloss - loss) <= 1e-2 * abs(loss)
    for (dw, db), (bdw, bdb) in zip(grads, bgrads):
        for g, bg in ((dw, bdw), (db, bdb)):
            assert np.linalg.norm(bg - g) <= 0.1 * np.linalg.norm(g)


def test_prediction_close_to_float32_and_switchable():
    X, _ = _data()
    net, bnet = _pair()
    p32, p16 = net.predict_proba(X), bnet.predict_proba(X)
    assert not np.array_equal(p32, p16)
    assert np.max(np.abs(p32 - p16)) < 2e-2
    bnet.matmul_precision = "float32"                # predict in float32: told otherwise
    np.testing.assert_array_equal(bnet.predict_proba(X), p32)


def test_a_row_does_not_depend_on_its_batch():
    X, _ = _data(300)
    bnet = _pair()[1]
    full = bnet.forward(X)
    for rows in (slice(0, 1), slice(5, 37), slice(100, 300)):
        np.testing.assert_array_equal(bnet.forward(X[rows]), full[rows])


def test_training_reaches_float32_accuracy():
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((5, SIZES[0])) * 3
    y = rng.integers(0, 5, 1000)
    X = (centers[y] + rng.standard_normal((1000, SIZES[0]))).astype(np.float32)
    accs = []
    for net in _pair():
        net.fit(X, y, epochs=5, batch_size=32, verbose=False)
        accs.append(net.evaluate(X, y)["accuracy"])
    assert accs[1] >= 0.95 and abs(accs[1] - accs[0]) < 0.03


@pytest.fixture
def grid4(monkeypatch):
    previous = _step._set_grid_cpus(4)
    monkeypatch.setattr(threads_mod, "_available_cpus", lambda: 64)
    monkeypatch.setattr(threads_mod, "timed_team_choice", False)
    before = nf.get_num_threads()
    yield
    nf.set_num_threads(before)
    _step._set_grid_cpus(previous)
    threads_mod.refresh_cpus()


@pytest.mark.parametrize("batch,dropout", [(7, 0.0), (64, 0.3), (200, 0.0)])
def test_same_bits_for_1_to_4_threads(grid4, batch, dropout):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 300)).astype(np.float32)
    y = rng.integers(0, 10, 400)
    results = []
    for t in (1, 2, 3, 4):
        nf.set_num_threads(t)
        net = nf.Network([300, 256, 128, 10], seed=0, dropout=dropout,
                         matmul_precision="bfloat16")
        hist = net.fit(X, y, epochs=2, batch_size=batch, verbose=False)
        results.append((net.flat_params.copy(), hist.batch_loss, net.predict_proba(X)))
    for params, losses, proba in results[1:]:
        np.testing.assert_array_equal(params, results[0][0])
        assert losses == results[0][1]
        np.testing.assert_array_equal(proba, results[0][2])


def test_model_file_and_pickle_keep_it(tmp_path):
    X, y = _data()
    bnet = _pair()[1]
    bnet.fit(X, y, epochs=1, verbose=False)
    bnet.save(tmp_path / "m.npz")
    back = nf.load(tmp_path / "m.npz")
    assert back.matmul_precision == "bfloat16"
    np.testing.assert_array_equal(back.predict_proba(X), bnet.predict_proba(X))
    again = pickle.loads(pickle.dumps(bnet))
    assert again.matmul_precision == "bfloat16"
    np.testing.assert_array_equal(again.predict_proba(X), bnet.predict_proba(X))
    plain = nf.Network(SIZES)
    plain.save(tmp_path / "f.npz")
    assert "matmul_precision" not in np.load(tmp_path / "f.npz").files   # float32: as before
    assert nf.load(tmp_path / "f.npz").matmul_precision == "float32"


def test_every_path_trains_the_same_bits():
    """Each bfloat16 path this CPU runs, in a process of its own (the path is chosen at
    import), trains the same weights as the portable one."""
    code = ("import sys, numpy as np, nnfast._precision as P, nnfast._kernels as K\n"
            "name = sys.argv[1]; P._BEST = name\n"
            "import nnfast as nf\n"
            "rng = np.random.default_rng(0)\n"
            "X = rng.standard_normal((150, 40)).astype(np.float32); y = rng.integers(0, 5, 150)\n"
            "net = nf.Network([40, 64, 5], seed=1, matmul_precision='bfloat16')\n"
            "net.fit(X, y, epochs=1, batch_size=16, verbose=False)\n"
            "sys.stdout.write(net.flat_params.tobytes().hex())\n")
    out = {}
    for path in K.bf16_paths():
        run = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                             text=True, timeout=300, cwd=tempfile.gettempdir())
        assert run.returncode == 0, run.stderr
        out[path] = run.stdout
    assert len(set(out.values())) == 1, sorted(out)


def test_cli_flag(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x_train.npy", rng.random((120, 12), dtype=np.float32))
    np.save(tmp_path / "y_train.npy", rng.integers(0, 3, 120))
    np.save(tmp_path / "x_test.npy", rng.random((30, 12), dtype=np.float32))
    np.save(tmp_path / "y_test.npy", rng.integers(0, 3, 30))
    cli = [sys.executable, "-m", "nnfast", "train", "--data", str(tmp_path), "--epochs", "1",
           "--hidden", "8", "--quiet"]
    run = subprocess.run(cli + ["--matmul-precision", "bfloat16", "--save",
                                str(tmp_path / "m.npz")], capture_output=True, text=True,
                         timeout=300, cwd=tempfile.gettempdir())
    assert run.returncode == 0, run.stderr
    assert nf.load(tmp_path / "m.npz").matmul_precision == "bfloat16"
    run = subprocess.run(cli + ["--matmul-precision", "bfloat16", "--dtype", "float64"],
                         capture_output=True, text=True, timeout=300,
                         cwd=tempfile.gettempdir())
    assert run.returncode == 2 and "needs --dtype float32" in run.stderr
