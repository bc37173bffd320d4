"""The compiled training step (nnfast._step.TrainStep) against the NumPy reference, and
its own checks: it trusts no index, shape or dtype it was not given through them."""
import numpy as np
import pytest

import nnfast as nf
from nnfast import _kernels as K
from nnfast._step import TrainStep
from nnfast.reference import ReferenceNetwork

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _setup(dtype, output="softmax", rows=8, hidden=("relu", "tanh")):
    rng = np.random.default_rng(3)
    net = nf.Network([7, 5, 4, 3], hidden=list(hidden), output=output, dtype=dtype, seed=1)
    X = rng.standard_normal((20, 7)).astype(dtype)
    y = rng.integers(0, 3, 20) if output == "softmax" else rng.random((20, 3)).astype(dtype)
    Y = net._Y(y, 20)
    ws = net._get_workspace(rows)
    return net, X, Y, ws


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
@pytest.mark.parametrize("n", [1, 5, 8])          # short batches use the leading rows
def test_step_matches_reference(dtype, output, n):
    net, X, Y, ws = _setup(dtype, output)
    idx = np.array([19, 0, 7, 7, 3, 12, 5, 1][:n], np.intp)
    ws.step.bind(X, Y)
    loss = ws.step.step(idx)
    ref = ReferenceNetwork.from_network(net)
    rloss, rgrad = ref.loss_and_grads(X[idx], Y[idx])
    np.testing.assert_allclose(loss / n, rloss, rtol=RTOL[dtype])
    np.testing.assert_allclose(net._flat_grads, rgrad, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * np.abs(rgrad).max())


def test_step_refuses_bad_indices_and_sizes():
    net, X, Y, ws = _setup(np.float32)
    with pytest.raises(ValueError, match="no data bound"):
        ws.step.step(np.array([0], np.intp))
    ws.step.bind(X, Y)
    for bad in ([20], [-1], [0, 2**40]):
        with pytest.raises(ValueError, match="out of range"):
            ws.step.step(np.array(bad, np.intp))
    with pytest.raises(ValueError, match="1 to 8 rows"):
        ws.step.step(np.arange(9, dtype=np.intp))
    with pytest.raises(ValueError, match="1 to 8 rows"):
        ws.step.step(np.array([], np.intp))
    ws.step.release()
    with pytest.raises(ValueError, match="no data bound"):
        ws.step.step(np.array([0], np.intp))


def test_bind_refuses_wrong_data():
    net, X, Y, ws = _setup(np.float32)
    with pytest.raises(ValueError, match="uint8, float32 or float64, got int16"):
        ws.step.bind(X.astype(np.int16), Y)
    with pytest.raises(ValueError, match="float32"):
        ws.step.bind(X, Y.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ws.step.bind(np.asfortranarray(X), Y)
    with pytest.raises(ValueError, match=r"\(20, 3\)"):
        ws.step.bind(X, Y[:, :2].copy())
    with pytest.raises(ValueError, match=r"\(20, 3\)"):
        ws.step.bind(X, Y[:10])
    with pytest.raises(ValueError, match="2-D"):
        ws.step.bind(X[0], Y)


@pytest.mark.parametrize("source", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_data_is_converted_and_scaled_per_batch(source, dtype):
    """A step on uint8 / other-dtype data with a scale equals one on the data converted
    and scaled up front (the same rounding: convert, then multiply in the step's dtype)."""
    net, X, Y, ws = _setup(dtype)
    raw = (np.random.default_rng(1).random(X.shape) * 255).astype(source)
    scale = 1 / 255
    ws.step.bind(raw, Y, scale)
    idx = np.array([3, 0, 7, 7, 19], np.intp)
    loss = ws.step.step(idx)
    grads = net._flat_grads.copy()
    ws.step.bind(raw.astype(dtype) * dtype(scale), Y)
    assert ws.step.step(idx) == loss
    assert np.array_equal(net._flat_grads, grads)


def test_construction_refuses_inconsistent_buffers():
    net, X, Y, ws = _setup(np.float32)
    args = [net.coefs, net.intercepts, net.dcoefs, net.dintercepts, ws.a, ws.d, ws.y,
            net._hidden_codes, K.LOSS_SOFTMAX_XENT]
    TrainStep(*args)                                           # consistent: fine
    bad = list(args)
    bad[0] = [w.astype(np.float64) for w in net.coefs]
    with pytest.raises(ValueError):
        TrainStep(*bad)
    bad = list(args)
    bad[4] = ws.a[:-1]
    with pytest.raises(ValueError, match="inconsistent"):
        TrainStep(*bad)
    bad = list(args)
    bad[7] = [1, 9]
    with pytest.raises(ValueError, match="activation code"):
        TrainStep(*bad)
    bad = list(args)
    bad[8] = 7
    with pytest.raises(ValueError, match="loss code"):
        TrainStep(*bad)


def test_fit_releases_the_training_data():
    import gc
    import weakref
    net = nf.Network([4, 3, 2], seed=0)
    X = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    ref = weakref.ref(X)
    net.fit(X, np.arange(30) % 2, epochs=1, batch_size=8, verbose=False)
    del X
    gc.collect()
    assert ref() is None            # the network does not keep the data alive after fit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [lambda: nf.Adam(lr=0.01, weight_decay=0.1),
                                  lambda: nf.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=0.01),
                                  lambda: nf.SGD(lr=0.05)],
                         ids=["adamw", "sgd_nesterov", "sgd"])
def test_fused_update_equals_separate_update(dtype, make):
    # The update inside the step (layer by layer) against step-then-flat-update.
    net, X, Y, ws = _setup(dtype)
    twin = nf.Network([7, 5, 4, 3], hidden=["relu", "tanh"], dtype=dtype, seed=1)
    twin_ws = twin._get_workspace(8)
    fused, separate = make(), make()
    fused._prepare(net)
    separate._prepare(twin)
    ws.step.bind(X, Y)
    fused._configure(ws.step, net)
    twin_ws.step.bind(X, Y)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.integers(0, 20, 8).astype(np.intp)
        fused.t += 1
        ws.step.step(idx, fused.t)
        twin_ws.step.step(idx)
        separate._step(twin._flat_params, twin._flat_grads, twin._n_decay)
    np.testing.assert_allclose(net._flat_params, twin._flat_params, rtol=RTOL[dtype],
                               atol=RTOL[dtype])
    np.testing.assert_allclose(net._flat_grads, twin._flat_grads, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype])
    for key in fused._state:
        np.testing.assert_allclose(fused._state[key], separate._state[key],
                                   rtol=RTOL[dtype], atol=RTOL[dtype])


def test_set_optimizer_refuses_mismatched_buffers():
    net, X, Y, ws = _setup(np.float32)
    ws.step.bind(X, Y)
    p, g = net._flat_params, net._flat_grads
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(ValueError, match="t must be 0"):
        ws.step.step(np.array([0], np.intp), 1)                 # no optimizer set
    with pytest.raises(ValueError, match="unknown kind"):
        ws.step.set_optimizer("rmsprop", p, g, (m, v), lr=0.1)
    with pytest.raises(ValueError, match="needs 2 state"):
        ws.step.set_optimizer("adam", p, g, (m,), lr=0.1)
    with pytest.raises(ValueError, match="not views"):
        ws.step.set_optimizer("adam", p.copy(), g, (m, v), lr=0.1)
    with pytest.raises(ValueError, match="not views"):
        ws.step.set_optimizer("sgd", p, g.copy(), (m,), lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        ws.step.set_optimizer("adam", p, g, (m[:-1].copy(), v), lr=0.1)
    with pytest.raises(ValueError, match="float32"):
        ws.step.set_optimizer("adam", p, g, (m.astype(np.float64), v), lr=0.1)
    ws.step.set_optimizer("adam", p, g, (m, v), lr=0.1)
    with pytest.raises(ValueError, match="t must be 0"):
        ws.step.step(np.array([0], np.intp), -1)
    before = p.copy()
    ws.step.step(np.array([0, 1], np.intp))                    # t = 0: gradients only
    np.testing.assert_array_equal(p, before)
    ws.step.step(np.array([0, 1], np.intp), 1)
    assert not np.array_equal(p, before)
    ws.step.release()                                          # drops the optimizer too
    ws.step.bind(X, Y)
    with pytest.raises(ValueError, match="t must be 0"):
        ws.step.step(np.array([0], np.intp), 2)


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_team_step_matches_reference(threads, n, dtype):
    # Teams larger than the batch or than a layer (some threads get no rows / no units),
    # layers narrower and wider than a cache line, every forward split (rows, columns).
    rng = np.random.default_rng(n)
    net = nf.Network([37, 41, 3, 19, 5], hidden=["relu", "tanh", "leaky_relu"],
                     dtype=dtype, seed=2)
    X = rng.standard_normal((100, 37)).astype(dtype)
    Y = net._Y(rng.integers(0, 5, 100), 100)
    ws = net._get_workspace(64)
    ws.step.threads = threads
    ws.step.bind(X, Y)
    idx = rng.integers(0, 100, n).astype(np.intp)
    loss = ws.step.step(idx)
    ref = ReferenceNetwork.from_network(net)
    rloss, rgrad = ref.loss_and_grads(X[idx], Y[idx])
    np.testing.assert_allclose(loss / n, rloss, rtol=RTOL[dtype] * 10)
    np.testing.assert_allclose(net._flat_grads, rgrad, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * np.abs(rgrad).max())


@pytest.mark.parametrize("make", [lambda: nf.Adam(lr=0.01, weight_decay=0.1),
                                  lambda: nf.SGD(lr=0.05, momentum=0.9)], ids=["adamw", "sgd"])
def test_fit_with_one_or_two_threads_agrees(make):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 30)).astype(np.float32)
    y = rng.integers(0, 4, 500)
    results = []
    old = nf.get_num_threads()
    try:
        for threads in (1, 2, 2):
            nf.set_num_threads(threads)
            net = nf.Network([30, 40, 20, 4], seed=0)
            hist = net.fit(X, y, epochs=3, batch_size=64, optimizer=make(), verbose=False)
            results.append((net._flat_params.copy(), hist.batch_loss))
    finally:
        nf.set_num_threads(old)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4)
    # same threads, same seed, same data: the same weights, bit for bit
    np.testing.assert_array_equal(results[1][0], results[2][0])
    assert nf.get_num_threads() == old            # fit restores BLAS's thread count


def test_forked_child_trains():
    import os
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    net = nf.Network([6, 8, 2], seed=0)
    X = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    y = np.arange(64) % 2
    net.fit(X, y, epochs=1, batch_size=16, verbose=False)     # team started in the parent
    pid = os.fork()
    if pid == 0:                                              # child: workers gone
        code = 1
        try:
            net.fit(X, y, epochs=2, batch_size=16, verbose=False)
            code = 0 if np.isfinite(net._flat_params).all() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
