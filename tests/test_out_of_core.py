"""Data larger than memory: fit / predict read np.memmap arrays and .npy paths in place,
converting (and scaling) one mini-batch or chunk at a time."""
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import nnfast as nf


def _images(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    y = (X.reshape(n, -1)[:, :32].mean(axis=1) > X.reshape(n, -1)[:, 32:].mean(axis=1))
    return X, y.astype(np.int64)


def _fit(net, X, y, **kw):
    kw = dict(epochs=2, batch_size=32, optimizer=nf.Adam(lr=1e-2), verbose=False) | kw
    return net.fit(X, y, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint8_file_trains_like_the_scaled_array_in_memory(tmp_path, dtype):
    X, y = _images()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    in_memory = X.reshape(len(X), -1).astype(dtype) * dtype(1 / 255)
    a = nf.Network([64, 16, 2], dtype=dtype, seed=1)
    ha = _fit(a, in_memory, y, validation_data=(in_memory[:100], y[:100]))
    b = nf.Network([64, 16, 2], dtype=dtype, seed=1, input_scale=1 / 255)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    hb = _fit(b, Xm, tmp_path / "y.npy", validation_data=(Xm[:100], y[:100]))
    assert np.array_equal(a._flat_params, b._flat_params)
    assert ha.batch_loss == hb.batch_loss and ha.val_loss == hb.val_loss
    assert np.array_equal(a.predict_proba(in_memory), b.predict_proba(Xm))
    assert a.evaluate(in_memory, y) == b.evaluate(str(tmp_path / "X.npy"), y)
    with pytest.raises(ValueError):               # the file is only ever read
        Xm[0, 0, 0] = 1


def test_npy_paths_and_other_float_types(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 5))                         # float64 file
    y = (X[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    a = nf.Network([5, 8, 2], seed=0)                         # float32 network
    _fit(a, X, y)
    b = nf.Network([5, 8, 2], seed=0)
    _fit(b, str(tmp_path / "X.npy"), str(tmp_path / "y.npy"))
    assert np.array_equal(a._flat_params, b._flat_params)
    c = nf.Network([5, 8, 2], seed=0)
    _fit(c, tmp_path / "X.npy", y, validation_split=0.2)      # a memmap slice validates
    assert np.isfinite(c._flat_params).all()


def test_training_never_holds_the_file_in_memory(tmp_path):
    n, m = 100_000, 784                          # 78 MB of uint8, 314 MB as float32
    path = tmp_path / "X.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, m))
    X[:] = np.random.default_rng(3).integers(0, 256, (n, m), dtype=np.uint8)
    X.flush()
    del X
    y = np.random.default_rng(4).integers(0, 10, n)
    size = os.path.getsize(path)
    net = nf.Network([m, 32, 10], input_scale=1 / 255)
    _fit(net, str(path), y, epochs=1, batch_size=256)          # warm up
    peaks = []
    for run in (lambda: _fit(net, str(path), y, epochs=1, batch_size=256),
                lambda: net.evaluate(str(path), y)):
        tracemalloc.start()
        try:
            run()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # targets (n x 10), the shuffled order and prediction chunks: never the data itself
    assert max(peaks) < size / 4, (peaks, size)


def test_nan_in_a_file_is_found_and_named(tmp_path):
    X = np.zeros((5000, 4))
    X[4321, 2] = np.nan
    np.save(tmp_path / "X.npy", X)
    net = nf.Network([4, 3, 2])
    with pytest.raises(ValueError, match=r"X contains NaN or inf .*rows 0\.\.4999"):
        net.fit(tmp_path / "X.npy", np.zeros(5000, int), verbose=False)
    X[4321, 2] = 1e300                                    # finite, but not in float32
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(ValueError, match="too large for float32"):
        net.predict(tmp_path / "X.npy")


@pytest.mark.parametrize("make, match", [
    (lambda p: np.save(p, np.zeros((4, 4), np.int16)), "uint8, float32, float64"),
    (lambda p: np.save(p, np.asfortranarray(np.zeros((4, 4), np.float32))), "non-C-contiguous"),
    (lambda p: np.save(p, np.zeros((4, 5), np.float32)), "5 features"),
    (lambda p: np.save(p, np.zeros((0, 4), np.float32)), "empty"),
    (lambda p: np.save(p, np.zeros(4, np.float32)), "must be 2-D"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "not a readable .npy"),
    (lambda p: open(p, "wb").write(b"\x93NUMPY garbage"), "not a readable .npy"),
])
def test_bad_files_are_refused_clearly(tmp_path, make, match):
    path = tmp_path / "X.npy"
    make(path)
    net = nf.Network([4, 3, 2])
    before = net._flat_params.copy()
    with pytest.raises(ValueError, match=match):
        net.fit(path, np.zeros(4, int), verbose=False)
    assert np.array_equal(net._flat_params, before)


@pytest.mark.parametrize("call", ["fit", "predict", "evaluate", "fit_y"])
def test_a_missing_npy_path_is_file_not_found(tmp_path, call):
    """A path that does not exist: FileNotFoundError naming it (not a ValueError)."""
    net = nf.Network([4, 3, 2])
    missing = tmp_path / "absent.npy"
    np.save(tmp_path / "X.npy", np.zeros((4, 4), np.float32))
    calls = {"fit": lambda: net.fit(missing, np.zeros(4, int), verbose=False),
             "predict": lambda: net.predict(missing),
             "evaluate": lambda: net.evaluate(missing, np.zeros(4, int)),
             "fit_y": lambda: net.fit(tmp_path / "X.npy", missing, verbose=False)}
    with pytest.raises(FileNotFoundError, match="absent.npy does not exist"):
        calls[call]()


def test_pickled_npy_message_has_no_allow_pickle_hint(tmp_path):
    np.save(tmp_path / "X.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled data") as info:
        nf.Network([4, 3, 2]).predict(tmp_path / "X.npy")
    assert "allow_pickle" not in str(info.value)


def test_npz_path_is_refused(tmp_path):
    np.savez(tmp_path / "X.npz", X=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="npz archive"):
        nf.Network([4, 3, 2]).predict(tmp_path / "X.npz")


@pytest.mark.parametrize("scale, exc", [(0, ValueError), (-1.0, ValueError),
                                        (float("inf"), ValueError), ("1", TypeError),
                                        (None, TypeError)])
def test_bad_input_scale_is_refused(scale, exc):
    with pytest.raises(exc, match="input_scale must be a finite number > 0"):
        nf.Network([4, 3, 2], input_scale=scale)


def test_input_scale_is_saved_and_used_by_predict(tmp_path):
    X, y = _images(200)
    net = nf.Network([64, 8, 2], input_scale=1 / 255, seed=0)
    _fit(net, X, y)
    net.save(tmp_path / "m.npz")
    back = nf.load(tmp_path / "m.npz")
    assert back.input_scale == net.input_scale
    assert np.array_equal(back.predict_proba(X), net.predict_proba(X))
    plain = nf.Network([64, 8, 2], seed=0)
    plain._flat_params[...] = net._flat_params
    assert np.allclose(plain.predict_proba(X.reshape(200, -1) / 255), net.predict_proba(X),
                       atol=1e-6)


LIMITED = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import nnfast as nf

    path, labels, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:                                 # the limit bites: the file does not fit in memory
        np.load(path)
        in_memory = "loaded"
    except MemoryError:
        in_memory = "MemoryError"
    net = nf.Network([784, 16, 10], input_scale=1 / 255, seed=0)
    hist = net.fit(path, labels, epochs=1, batch_size=1024, verbose=False)
    acc = net.evaluate(path, labels)["accuracy"]
    status = dict(l.split(":", 1) for l in open("/proc/self/status"))
    kb = lambda k: int(status[k].split()[0]) * 1024
    print(json.dumps(dict(in_memory=in_memory, loss=hist.loss[0], accuracy=acc,
                          peak_rss=kb("VmHWM"), rss_anon=kb("RssAnon"),
                          rss_file=kb("RssFile"))))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA semantics")
def test_trains_on_a_file_larger_than_its_memory_limit(tmp_path):
    n = 700_000                                      # 549 MB of uint8 images
    limit = 400 * 2**20                              # data segment limit of the process
    path = tmp_path / "X.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 784))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    for start in range(0, n, 50_000):               # class k: bright pixels in band k
        stop = min(start + 50_000, n)
        block = rng.integers(0, 64, (stop - start, 784), dtype=np.uint8)
        for k in range(10):
            rows = np.flatnonzero(y[start:stop] == k)
            block[rows[:, None], np.arange(k * 78, k * 78 + 78)] += 150
        X[start:stop] = block
    X.flush()
    del X
    np.save(tmp_path / "y.npy", y)
    size = os.path.getsize(path)
    assert size > limit
    out = subprocess.run([sys.executable, "-c", LIMITED, str(path), str(tmp_path / "y.npy"),
                          str(limit)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    print(f"\nfile {size / 2**20:.0f} MiB, RLIMIT_DATA {limit / 2**20:.0f} MiB: peak RSS "
          f"{result['peak_rss'] / 2**20:.0f} MiB (anonymous {result['rss_anon'] / 2**20:.0f} "
          f"MiB, file pages {result['rss_file'] / 2**20:.0f} MiB), accuracy "
          f"{result['accuracy']:.3f}")
    assert result["in_memory"] == "MemoryError"
    assert result["accuracy"] > 0.9
    assert result["rss_anon"] < limit
