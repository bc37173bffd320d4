"""The compiled training step (nnfast._step.TrainStep) against the NumPy reference, and
its own checks: it trusts no index, shape or dtype it was not given through them."""
import numpy as np
import pytest

import nnfast as nf
from nnfast import _kernels as K
from nnfast import _optim as O
from nnfast._workspace import Workspace
from nnfast._step import TrainStep, UpdateRule
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


def _grads(step, idx, threads=1, dropout_step=0):
    """The batch's summed loss (the gradient arrays get its mean gradient)."""
    return step.gradients(np.asarray(idx, np.intp), 0, dropout_step, threads)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
@pytest.mark.parametrize("n", [1, 5, 8])          # short batches use the leading rows
def test_step_matches_reference(dtype, output, n):
    net, X, Y, ws = _setup(dtype, output)
    idx = np.array([19, 0, 7, 7, 3, 12, 5, 1][:n], np.intp)
    ws.step.bind(X, Y)
    loss, correct = ws.step.gradients(idx, 0, 0, 1)
    ref = ReferenceNetwork.from_network(net)
    rloss, rgrad = ref.loss_and_grads(X[idx], Y[idx])
    np.testing.assert_allclose(loss / n, rloss, rtol=RTOL[dtype])
    z = ref.forward(X[idx])                # probabilities: the argmax / side of the logits
    if output == "softmax":
        assert correct == np.sum(z.argmax(axis=1) == Y[idx].argmax(axis=1))
    elif output == "sigmoid":
        assert correct == np.sum((z > 0.5) == (Y[idx] > 0.5))
    else:
        assert correct == 0
    np.testing.assert_allclose(net._flat_grads, rgrad, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * np.abs(rgrad).max())


def test_step_refuses_bad_indices_and_sizes():
    net, X, Y, ws = _setup(np.float32)
    with pytest.raises(ValueError, match="no data bound"):
        _grads(ws.step, [0])
    ws.step.bind(X, Y)
    for bad in ([20], [-1], [0, 2**40]):
        with pytest.raises(ValueError, match="out of range"):
            _grads(ws.step, bad)
    with pytest.raises(ValueError, match="1 to 8 rows"):
        _grads(ws.step, np.arange(9))
    with pytest.raises(ValueError, match="1 to 8 rows"):
        _grads(ws.step, [])
    with pytest.raises(ValueError, match="grad_div must be >= 0"):
        ws.step.gradients(np.array([0], np.intp), -1, 0, 1)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        ws.step.gradients(np.array([0], np.intp), 0, 0, 0)
    ws.step.release()
    with pytest.raises(ValueError, match="no data bound"):
        _grads(ws.step, [0])


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
    loss = _grads(ws.step, idx)
    grads = net._flat_grads.copy()
    ws.step.bind(raw.astype(dtype) * dtype(scale), Y)
    assert _grads(ws.step, idx) == loss
    assert np.array_equal(net._flat_grads, grads)


def _step_args(net, ws):
    return [net._flat_params, net._flat_grads, net.coefs, net.intercepts, net.dcoefs,
            net.dintercepts, ws.a, ws.d, ws.y, net._hidden_codes, K.LOSS_SOFTMAX_XENT]


def test_construction_refuses_inconsistent_buffers():
    net, X, Y, ws = _setup(np.float32)
    args = _step_args(net, ws)
    step = TrainStep(*args)                                    # consistent: fine
    assert (step.n_params, step.n_decay) == (net.n_params, net._n_decay)
    assert not step.has_dropout
    bad = list(args)
    bad[2] = [w.astype(np.float64) for w in net.coefs]
    with pytest.raises(ValueError):
        TrainStep(*bad)
    bad = list(args)
    bad[6] = ws.a[:-1]
    with pytest.raises(ValueError, match="inconsistent"):
        TrainStep(*bad)
    bad = list(args)
    bad[9] = [1, 9]
    with pytest.raises(ValueError, match="activation code"):
        TrainStep(*bad)
    bad = list(args)
    bad[10] = 7
    with pytest.raises(ValueError, match="loss code"):
        TrainStep(*bad)


def test_construction_refuses_layers_that_are_not_views_of_the_flat_buffers():
    net, X, Y, ws = _setup(np.float32)
    args = _step_args(net, ws)
    p, g = net._flat_params, net._flat_grads
    for i, flat in ((0, p.copy()), (1, g.copy())):             # other buffers
        bad = list(args)
        bad[i] = flat
        with pytest.raises(ValueError, match="not views"):
            TrainStep(*bad)
    # views at the same offsets of both, but biases first: weight decay would hit them
    bad = list(args)
    nb = net.n_params - net._n_decay
    w_off = np.cumsum([0] + [w.size for w in net.coefs])
    b_off = np.cumsum([0] + [b.size for b in net.intercepts])
    for i_flat, i_w, i_b in ((0, 2, 3), (1, 4, 5)):           # params, grads
        flat = bad[i_flat] = np.empty_like(p)
        bad[i_w] = [flat[nb + o:nb + o + w.size].reshape(w.shape)
                    for o, w in zip(w_off, net.coefs)]
        bad[i_b] = [flat[o:o + b.size] for o, b in zip(b_off, net.intercepts)]
    with pytest.raises(ValueError, match="not views"):
        TrainStep(*bad)
    for flat, match in ((p[:-1], "parameters"), (p.reshape(1, -1), "1-D"),
                        (p.astype(np.float64), "float32"), (None, "1-D")):
        bad = list(args)
        bad[0] = flat
        with pytest.raises(ValueError, match=match):
            TrainStep(*bad)
    bad = list(args)
    bad[1] = g[:-1]
    with pytest.raises(ValueError, match="shape"):
        TrainStep(*bad)


def test_construction_refuses_bad_dropout():
    net, X, Y, ws = _setup(np.float32)
    args = _step_args(net, ws)
    masks = [np.empty((8, 5), np.float32), np.empty((8, 4), np.float32)]
    assert TrainStep(*args, dropout=[0.5, 0.1], masks=masks).has_dropout
    assert not TrainStep(*args, dropout=[0, 0]).has_dropout      # all 0: off, no masks
    assert TrainStep(*args, dropout=[0, 0.1], masks=[None, masks[1]]).has_dropout
    with pytest.raises(ValueError, match="expected 2 dropout rates"):
        TrainStep(*args, dropout=[0.5], masks=masks[:1])
    with pytest.raises(ValueError, match="needs 2 masks"):
        TrainStep(*args, dropout=[0.5, 0.1])
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        TrainStep(*args, dropout=[1.0, 0.1], masks=masks)
    with pytest.raises(ValueError, match=r"\(8, 4\)"):
        TrainStep(*args, dropout=[0.5, 0.1], masks=[masks[0], masks[0]])
    with pytest.raises(ValueError, match=r"\(8, 4\)"):
        TrainStep(*args, dropout=[0.5, 0.1], masks=[masks[0], None])


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


def _flat_update(opt, net, t):
    """The optimizer's update of net's flat params from its flat grads with the _optim
    kernel wrappers (one call over the whole buffer)."""
    st, p, g, k = opt._state, net._flat_params, net._flat_grads, net._n_decay
    if isinstance(opt, nf.Adam):
        O.adam_update(p, st["m"], st["v"], g, t, opt.lr, opt.beta1, opt.beta2, opt.eps,
                      opt.weight_decay, k)
    else:
        O.sgd_update(p, st["velocity"], g, opt.lr, opt.momentum, opt.nesterov,
                     opt.weight_decay, k)


MAKERS = [lambda: nf.Adam(lr=0.01, weight_decay=0.1),
          lambda: nf.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
          lambda: nf.SGD(lr=0.05)]
MAKER_IDS = ["adamw", "sgd_nesterov", "sgd"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_fused_update_equals_separate_update(dtype, make):
    # The update inside the step (layer by layer) against gradients, then the _optim
    # kernel over the flat buffer: the same elementwise kernels and scalars (Adam's bias
    # corrections from one function), so the same bits.
    net, X, Y, ws = _setup(dtype)
    twin = nf.Network([7, 5, 4, 3], hidden=["relu", "tanh"], dtype=dtype, seed=1)
    twin_ws = twin._get_workspace(8)
    fused, separate = make(), make()
    fused._prepare(net)
    separate._prepare(twin)
    ws.step.bind(X, Y)
    rule = fused._rule()
    twin_ws.step.bind(X, Y)
    rng = np.random.default_rng(0)
    for t in range(1, 6):
        idx = rng.integers(0, 20, 8).astype(np.intp)
        ws.step.step(idx, 0, 0, 1, t, rule)
        _grads(twin_ws.step, idx)
        _flat_update(separate, twin, t)
    assert np.array_equal(net._flat_params, twin._flat_params)
    assert np.array_equal(net._flat_grads, twin._flat_grads)
    for key in fused._state:
        assert np.array_equal(fused._state[key], separate._state[key])


def test_update_rule_refuses_bad_kinds_and_state():
    m, v = np.zeros(10, np.float32), np.zeros(10, np.float32)
    rule = UpdateRule("adam", (m, v), 0.1, weight_decay=0.5)
    assert (rule.kind, rule.size, rule.dtype, rule.lr, rule.weight_decay) == (
        "adam", 10, np.float32, 0.1, 0.5)
    assert rule.state[0] is m and rule.state[1] is v
    UpdateRule("sgd", [m], 0.1, momentum=0.9, nesterov=True)
    for kind in ("rmsprop", "Adam", None, 1):
        with pytest.raises(ValueError, match="unknown kind"):
            UpdateRule(kind, (m, v), 0.1)
    with pytest.raises(ValueError, match=r"adam needs 2 state arrays \(m, v\), got 1"):
        UpdateRule("adam", (m,), 0.1)
    with pytest.raises(ValueError, match=r"sgd needs 1 state array \(velocity,\), got 2"):
        UpdateRule("sgd", (m, v), 0.1)
    with pytest.raises(ValueError, match="needs 1 state array"):
        UpdateRule("sgd", m, 0.1)                                # not a tuple of arrays
    readonly = np.zeros(10, np.float32)
    readonly.flags.writeable = False
    for bad in (np.zeros((2, 5), np.float32), np.zeros(20, np.float32)[::2],
                np.zeros(10, np.int32), np.zeros(10, np.float16), np.zeros(0, np.float32),
                readonly, [0.0] * 10):
        with pytest.raises(ValueError, match="state array must be"):
            UpdateRule("sgd", (bad,), 0.1)
    with pytest.raises(ValueError, match="differ"):
        UpdateRule("adam", (m, v[:-1]), 0.1)
    with pytest.raises(ValueError, match="differ"):
        UpdateRule("adam", (m, v.astype(np.float64)), 0.1)


def test_step_and_update_refuse_bad_t_rules_and_threads():
    net, X, Y, ws = _setup(np.float32)
    ws.step.bind(X, Y)
    p = net._flat_params
    opt = nf.Adam(lr=0.1)
    opt._prepare(net)
    rule = opt._rule()
    idx = np.array([0, 1], np.intp)
    before = p.copy()
    for t in (0, -1):
        with pytest.raises(ValueError, match="t .* must be >= 1"):
            ws.step.step(idx, 0, 0, 1, t, rule)
        with pytest.raises(ValueError, match="t .* must be >= 1"):
            ws.step.update(t, rule, 1)
    n = net.n_params
    for bad in (UpdateRule("adam", (np.zeros(n - 1, np.float32),) * 2, 0.1),
                UpdateRule("adam", (np.zeros(n, np.float64),) * 2, 0.1),
                UpdateRule("sgd", (np.zeros(n + 16, np.float32),), 0.1)):
        with pytest.raises(ValueError, match="does not fit the parameters"):
            ws.step.step(idx, 0, 0, 1, 1, bad)
        with pytest.raises(ValueError, match="does not fit the parameters"):
            ws.step.update(1, bad, 1)
    for call in (lambda: ws.step.step(idx, 0, 0, 1, 1, None),
                 lambda: ws.step.update(1, None, 1),
                 lambda: ws.step.step(idx, 0, 0, 1, 1, "adam")):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        ws.step.step(idx, 0, 0, 0, 1, rule)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        ws.step.update(1, rule, 0)
    np.testing.assert_array_equal(p, before)                  # nothing ran
    assert opt.t == 0                                          # the step owns no counter
    _grads(ws.step, idx)                                       # gradients only
    np.testing.assert_array_equal(p, before)
    ws.step.step(idx, 0, 0, 1, 1, rule)
    assert not np.array_equal(p, before)
    assert opt.t == 0
    ws.step.release()
    with pytest.raises(ValueError, match="no data bound"):
        ws.step.step(idx, 0, 0, 1, 2, rule)
    ws.step.update(2, rule, 1)                                 # needs no data


def _dropout_setup(dtype, sparse=False, rows=16):
    rng = np.random.default_rng(7)
    net = nf.Network([9, 40, 6, 3], hidden=["relu", "tanh"], dtype=dtype, seed=3,
                     dropout=[0.3, 0.2])
    X = rng.standard_normal((50, 9)).astype(dtype)
    X[np.abs(X) < 0.8] = 0
    Y = net._Y(rng.integers(0, 3, 50), 50)
    ws = Workspace(net, rows, net._flat_grads, sparse=sparse)
    if sparse:
        from scipy import sparse as sp
        S = sp.csr_matrix(X)
        ws.step.bind_csr(S.data, S.indices, S.indptr, Y, 1.0, None, 1234)
    else:
        ws.step.bind(X, Y, 1.0, None, 1234)
    return net, ws, X, Y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_gradients_then_update_equals_step_bit_for_bit(dtype, make, threads, sparse):
    """step(...) == gradients(...) then update(...): the fused per-layer update and the
    flat one are the same elementwise update, whatever the team."""
    if sparse:
        pytest.importorskip("scipy")
    runs = []
    for fused in (True, False):
        net, ws, _, _ = _dropout_setup(dtype, sparse)
        opt = make()
        opt._prepare(net)
        rule = opt._rule()
        rng = np.random.default_rng(1)
        out = []
        for t in range(1, 7):
            idx = rng.integers(0, 50, 16 - t % 3).astype(np.intp)
            if fused:
                out.append(ws.step.step(idx, 0, 10 + t, threads, t, rule))
            else:
                out.append(ws.step.gradients(idx, 0, 10 + t, threads))
                ws.step.update(t, rule, threads)
        runs.append((out, net._flat_params.copy(), net._flat_grads.copy(),
                     [s.copy() for s in opt._state.values()]))
    (out0, p0, g0, s0), (out1, p1, g1, s1) = runs
    assert out0 == out1
    assert np.array_equal(p0, p1) and np.array_equal(g0, g1)
    for a, b in zip(s0, s1):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_update_gives_the_same_bits_on_any_team(dtype, make):
    # 1,004,004 parameters, not a whole number of cache lines: ranges end mid-layer; and
    # the same bits as the _optim kernel wrapper over the whole buffer
    net = nf.Network([999, 1000, 4], dtype=dtype, seed=0)
    ws = net._get_workspace(4)
    p0 = net._flat_params.copy()
    results = []
    for threads in (1, 2, 3, 4, None):
        net._flat_params[:] = p0
        opt = make()
        opt._prepare(net)
        rule = opt._rule()
        rng = np.random.default_rng(5)
        for t in range(1, 4):
            net._flat_grads[:] = rng.standard_normal(net.n_params)
            if threads is None:
                _flat_update(opt, net, t)
            else:
                ws.step.update(t, rule, threads)
        results.append((net._flat_params.copy(), [s.copy() for s in opt._state.values()]))
    assert not np.array_equal(results[0][0], p0)
    for params, state in results[1:]:
        assert np.array_equal(params, results[0][0])
        for a, b in zip(state, results[0][1]):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("make", MAKERS, ids=MAKER_IDS)
def test_update_decays_weights_only(make):
    # zero gradient: Adam moves nothing but the decay; SGD only the L2 term
    net, X, Y, ws = _setup(np.float64)
    for b in net.intercepts:
        b[...] = 0.75
    p0 = net._flat_params.copy()
    net._flat_grads[:] = 0
    opt = make()
    opt._prepare(net)
    ws.step.update(1, opt._rule(), 2)
    k = net._n_decay
    np.testing.assert_array_equal(net._flat_params[k:], p0[k:])        # biases untouched
    if opt.weight_decay:
        assert np.all(np.abs(net._flat_params[:k]) < np.abs(p0[:k]))
    else:
        np.testing.assert_array_equal(net._flat_params, p0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_masks_come_from_the_seed_and_the_given_step(dtype):
    net, ws, X, Y = _dropout_setup(dtype, rows=50)
    idx = np.arange(50, dtype=np.intp)
    loss0 = _grads(ws.step, idx, dropout_step=0)
    g0 = net._flat_grads.copy()
    ref = ReferenceNetwork.from_network(net)                   # the masks of (seed, step 0)
    rloss, rgrad = ref.loss_and_grads(X, Y, dropout_seed=1234)
    np.testing.assert_allclose(loss0 / 50, rloss, rtol=RTOL[dtype] * 10)
    np.testing.assert_allclose(g0, rgrad, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * np.abs(rgrad).max())
    assert _grads(ws.step, idx, dropout_step=3) != loss0      # other masks
    assert _grads(ws.step, idx, dropout_step=0) == loss0       # nothing advanced
    np.testing.assert_array_equal(net._flat_grads, g0)
    ws.step.bind(X, Y, 1.0, None, 99)                          # another seed
    assert _grads(ws.step, idx, dropout_step=0) != loss0


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
    ws.step.bind(X, Y)
    idx = rng.integers(0, 100, n).astype(np.intp)
    loss = _grads(ws.step, idx, threads)
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
