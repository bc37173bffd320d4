"""Sparse (scipy.sparse) input: the CSR kernels against their twins, the compiled step on
CSR data, training and prediction against the same data dense, the checks, and that
nothing is densified (memory)."""
import gc
import tracemalloc

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import nnfast as nf                                     # noqa: E402
from nnfast import _kernels as K                        # noqa: E402
from nnfast import reference as R                       # noqa: E402
from nnfast._sparse import CSRInput                     # noqa: E402
from nnfast._step import TrainStep                      # noqa: E402
from nnfast._workspace import Workspace                   # noqa: E402

DTYPES = [np.float32, np.float64]
INDEX_DTYPES = [np.int32, np.int64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ACTS = [K.ACT_LINEAR, K.ACT_RELU, K.ACT_LEAKY_RELU, K.ACT_TANH, K.ACT_SIGMOID, K.ACT_SOFTMAX]
# (rows of X, n_in, n_out): one unit, primes, one wider than a cache line of float32
SHAPES = [(1, 1, 1), (7, 13, 1), (13, 7, 5), (31, 17, 11), (23, 101, 67)]


def random_csr(rng, n, m, density=0.2, dtype=np.float64, index=np.int32, messy=False):
    """A CSR matrix with empty rows; `messy`: unsorted and duplicate column indices."""
    X = sp.random(n, m, density=density, format="csr", random_state=rng, dtype=np.float64)
    X = X.astype(dtype)
    X.indices, X.indptr = X.indices.astype(index), X.indptr.astype(index)
    if messy:
        counts = np.diff(X.indptr)
        data, indices = [], []
        for r in range(n):
            lo, hi = X.indptr[r], X.indptr[r + 1]
            cols, vals = X.indices[lo:hi][::-1], X.data[lo:hi][::-1]   # unsorted
            if hi > lo:                                  # one duplicate in each row
                cols = np.append(cols, cols[0])
                vals = np.append(vals, dtype(0.5))
                counts[r] += 1
            indices.append(cols)
            data.append(vals)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(index)
        X = sp.csr_matrix((np.concatenate(data).astype(dtype),
                           np.concatenate(indices).astype(index), indptr), shape=(n, m))
        assert X.nnz == 0 or not X.has_canonical_format
    return X


def assert_close(actual, expected, dtype):
    scale = float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype] * 10,
                               atol=RTOL[dtype] * scale)


# ------------------------------------------------------------------ kernels vs twins

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", INDEX_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("messy", [False, True], ids=["canonical", "unsorted_duplicates"])
def test_sparse_dense_forward_matches_twin(dtype, index, shape, act, messy):
    n_rows, n_in, n_out = shape
    rng = np.random.default_rng(n_in * n_out + act)
    X = random_csr(rng, n_rows, n_in, 0.3, dtype, index, messy)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    rows = rng.integers(0, n_rows, 2 * n_rows + 1).astype(np.intp)   # repeats too
    a, expected = (np.full((rows.size, n_out), np.nan, dtype) for _ in range(2))
    K.sparse_dense_forward(a, X.data, X.indices, X.indptr, rows, w, b, act, 0.5)
    R.sparse_dense_forward(expected, X.data, X.indices, X.indptr, rows, w, b, act, 0.5)
    assert_close(a, expected, dtype)
    dense = np.empty_like(a)                             # the same as the dense kernel
    K.dense_forward(dense, np.ascontiguousarray(X.toarray()[rows] * dtype(0.5)), w, b, act)
    assert_close(a, dense, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", INDEX_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("messy", [False, True], ids=["canonical", "unsorted_duplicates"])
def test_sparse_linear_backward_params_matches_twin(dtype, index, shape, messy):
    n_rows, n_in, n_out = shape
    rng = np.random.default_rng(n_in + n_out)
    X = random_csr(rng, n_rows, n_in, 0.3, dtype, index, messy)
    rows = rng.integers(0, n_rows, 2 * n_rows + 1).astype(np.intp)
    dz = rng.standard_normal((rows.size, n_out)).astype(dtype)
    dw, edw = (np.full((n_in, n_out), np.nan, dtype) for _ in range(2))   # overwritten
    db, edb = (np.full(n_out, np.nan, dtype) for _ in range(2))
    K.sparse_linear_backward_params(dw, db, dz, X.data, X.indices, X.indptr, rows, 2.0,
                                    dtype(0.25))
    R.sparse_linear_backward_params(edw, edb, dz, X.data, X.indices, X.indptr, rows, 2.0,
                                    0.25)
    assert_close(dw, edw, dtype)
    assert_close(db, edb, dtype)
    ddw, ddb = np.empty_like(dw), np.empty_like(db)      # the same as the dense kernel
    K.linear_backward_params(ddw, ddb, dz, np.ascontiguousarray(X.toarray()[rows] * 2.0,
                                                                dtype=dtype), dtype(0.25))
    assert_close(dw, ddw, dtype)


def test_sparse_kernels_refuse_what_they_cannot_read():
    rng = np.random.default_rng(0)
    X = random_csr(rng, 6, 5, 0.5)
    w, b = rng.standard_normal((5, 3)), np.zeros(3)
    a, dz = np.empty((2, 3)), np.ones((2, 3))
    dw, db = np.empty((5, 3)), np.empty(3)
    ok = np.array([0, 5], np.intp)
    K.sparse_dense_forward(a, X.data, X.indices, X.indptr, ok, w, b, K.ACT_RELU)
    for rows in ([0, 6], [-1, 0]):
        with pytest.raises(ValueError, match="out of range"):
            K.sparse_dense_forward(a, X.data, X.indices, X.indptr, np.array(rows, np.intp),
                                   w, b, K.ACT_RELU)
        with pytest.raises(ValueError, match="out of range"):
            K.sparse_linear_backward_params(dw, db, dz, X.data, X.indices, X.indptr,
                                            np.array(rows, np.intp), 1.0, 1.0)
    bad = X.indices.copy()
    bad[X.indptr[5]] = 5                                # a column index past n_in
    with pytest.raises(ValueError, match=r"row 5 .*column indices in \[0, 5\)"):
        K.sparse_dense_forward(a, X.data, bad, X.indptr, ok, w, b, K.ACT_RELU)
    with pytest.raises(ValueError, match="row 5"):
        K.sparse_linear_backward_params(dw, db, dz, X.data, bad, X.indptr, ok, 1.0, 1.0)
    ptr = X.indptr.copy()
    ptr[-1] = X.nnz + 4                                  # past the end of data
    with pytest.raises(ValueError, match="row 5 .*indptr range"):
        K.sparse_dense_forward(a, X.data, X.indices, ptr, ok, w, b, K.ACT_RELU)
    with pytest.raises(ValueError, match="row 5 .*indptr range"):   # data shorter
        K.sparse_dense_forward(a, X.data[:-1], X.indices, X.indptr, ok, w, b, K.ACT_RELU)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.sparse_dense_forward(np.empty((3, 3)), X.data, X.indices, X.indptr, ok, w, b, 0)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.sparse_linear_backward_params(np.empty((5, 2)), db, dz, X.data, X.indices,
                                        X.indptr, ok, 1.0, 1.0)
    with pytest.raises(ValueError, match="empty operand"):
        K.sparse_linear_backward_params(dw, db, dz[:0], X.data, X.indices, X.indptr,
                                        ok[:0], 1.0, 1.0)
    with pytest.raises(ValueError, match="activation code"):
        K.sparse_dense_forward(a, X.data, X.indices, X.indptr, ok, w, b, 9)
    with pytest.raises((TypeError, ValueError)):         # mixed float dtypes
        K.sparse_dense_forward(a, X.data.astype(np.float32), X.indices, X.indptr, ok, w,
                               b, 0)
    with pytest.raises((TypeError, ValueError)):         # mixed index dtypes
        K.sparse_dense_forward(a, X.data, X.indices, X.indptr.astype(np.int64), ok, w,
                               b, 0)
    K.sparse_dense_forward(a[:0], X.data, X.indices, X.indptr, ok[:0], w, b, 0)   # no-op


# ------------------------------------------------------------------ the compiled step

def _step_setup(dtype, sizes=(11, 41, 7, 3), output="softmax", rows=16, index=np.int32):
    rng = np.random.default_rng(4)
    net = nf.Network(list(sizes), hidden=["relu", "tanh"][:len(sizes) - 2], output=output,
                     dtype=dtype, seed=1)
    X = random_csr(rng, 40, sizes[0], 0.3, dtype, index)
    y = rng.integers(0, sizes[-1], 40) if output == "softmax" else (
        rng.random((40, sizes[-1])) > 0.5)
    return net, X, net._Y(y, 40)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", INDEX_DTYPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_step_on_csr_matches_dense_step(dtype, index, threads):
    net, X, Y = _step_setup(dtype, index=index)
    idx = np.array([39, 0, 7, 7, 3, 12, 5, 1, 22, 30, 11], np.intp)
    dense = net._get_workspace(16)
    dense.step.bind(np.ascontiguousarray(X.toarray() * dtype(0.5)), Y)
    loss, correct = dense.step.gradients(idx, 0, 0, threads)
    grads = net._flat_grads.copy()
    net._flat_grads[:] = np.nan                          # every gradient is rewritten
    ws = net._get_workspace(16, sparse=True)
    assert ws is dense                                   # a dense workspace serves both
    sparse = Workspace(net, 16, net._flat_grads, sparse=True)
    assert sparse.a[0] is None
    sparse.step.bind_csr(X.data, X.indices, X.indptr, Y, 0.5)
    sloss, scorrect = sparse.step.gradients(idx, 0, 0, threads)
    np.testing.assert_allclose(sloss, loss, rtol=RTOL[dtype])
    assert scorrect == correct
    assert_close(net._flat_grads, grads, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_step_gives_the_same_bits_on_any_team(dtype):
    """One layer (the sparse one only, 41 outputs: split into column blocks differently
    by teams of 1, 2, 3): forward by rows, dW0 by columns in batch order, so the gradient
    and the updated weights are bit-identical whatever the team."""
    results = []
    for threads in (1, 2, 3):
        net, X, Y = _step_setup(dtype, sizes=(11, 41), output="sigmoid")
        ws = Workspace(net, 16, net._flat_grads, sparse=True)
        opt = nf.Adam(lr=0.01, weight_decay=0.1)
        opt._prepare(net)
        ws.step.bind_csr(X.data, X.indices, X.indptr, Y)
        rule = opt._rule()
        for t, start in enumerate(range(0, 40, 16)):
            ws.step.step(np.arange(start, min(start + 16, 40), dtype=np.intp), 0, 0, threads,
                         t + 1, rule)
        results.append((net._flat_grads.copy(), net._flat_params.copy()))
    for grads, params in results[1:]:
        np.testing.assert_array_equal(grads, results[0][0])
        np.testing.assert_array_equal(params, results[0][1])


def test_bind_csr_refuses_bad_structures():
    net, X, Y = _step_setup(np.float64)
    ws = Workspace(net, 16, net._flat_grads, sparse=True)
    step = ws.step
    with pytest.raises(ValueError, match="no input buffer"):
        step.bind(np.zeros((40, 11)), Y)
    with pytest.raises(ValueError, match="data must be float64"):
        step.bind_csr(X.data.astype(np.float32), X.indices, X.indptr, Y)
    with pytest.raises(ValueError, match="int32 or both int64"):
        step.bind_csr(X.data, X.indices, X.indptr.astype(np.int64), Y)
    with pytest.raises(ValueError, match="int32 or both int64"):
        step.bind_csr(X.data, X.indices.astype(np.int16), X.indptr.astype(np.int16), Y)
    with pytest.raises(ValueError, match="C-contiguous 1-D"):
        step.bind_csr(X.data[::2], X.indices, X.indptr, Y)
    with pytest.raises(ValueError, match="at least one row"):
        step.bind_csr(X.data, X.indices, X.indptr[:1], Y)
    bad = X.indices.copy()
    bad[-1] = 11
    with pytest.raises(ValueError, match="row 39 is invalid"):
        step.bind_csr(X.data, bad, X.indptr, Y)
    bad[-1] = -1
    with pytest.raises(ValueError, match="row 39 is invalid"):
        step.bind_csr(X.data, bad, X.indptr, Y)
    ptr = X.indptr.copy()
    ptr[5] = ptr[6] + 1                                  # decreasing
    with pytest.raises(ValueError, match="row 5 is invalid"):
        step.bind_csr(X.data, X.indices, ptr, Y)
    with pytest.raises(ValueError, match=r"\(40, 3\)"):
        step.bind_csr(X.data, X.indices, X.indptr, Y[:20])
    step.bind_csr(X.data, X.indices, X.indptr, Y)
    with pytest.raises(ValueError, match="out of range"):
        step.gradients(np.array([40], np.intp), 0, 0, 1)
    step.release()
    with pytest.raises(ValueError, match="no data bound"):
        step.gradients(np.array([0], np.intp), 0, 0, 1)
    args = [net._flat_params, net._flat_grads, net.coefs, net.intercepts, net.dcoefs,
            net.dintercepts, ws.a, ws.d, ws.y, net._hidden_codes, K.LOSS_SOFTMAX_XENT]
    TrainStep(*args)                                     # a[0] None: allowed


# ------------------------------------------------------------------ Network: sparse == dense

def _data(rng, n=150, m=60, density=0.1, output="softmax", k=3):
    X = random_csr(rng, n, m, density)
    if output == "softmax":
        y = rng.integers(0, k, n)
    elif output == "sigmoid":
        y = (rng.random((n, k)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((n, k))
    return X, y


def _twins(**kw):
    kw = dict(dict(sizes=[60, 17, 9, 3], hidden=["relu", "tanh"], dtype=np.float64,
                   seed=3), **kw)
    return nf.Network(**kw), nf.Network(**kw)


@pytest.mark.parametrize("optimizer", [lambda: nf.Adam(lr=0.01, weight_decay=0.01),
                                       lambda: nf.SGD(lr=0.1, momentum=0.9, nesterov=True)],
                         ids=["adam", "sgd"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
def test_fit_on_sparse_equals_fit_on_dense(optimizer, weighted, dropout, output):
    rng = np.random.default_rng(7)
    X, y = _data(rng, output=output)
    w = rng.uniform(0, 2, X.shape[0]) if weighted else None
    a, b = _twins(dropout=dropout, output=output, input_scale=0.5)
    ha = a.fit(X, y, epochs=4, batch_size=32, optimizer=optimizer(), sample_weight=w,
               verbose=False)
    hb = b.fit(X.toarray(), y, epochs=4, batch_size=32, optimizer=optimizer(),
               sample_weight=w, verbose=False)
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ha.batch_loss, hb.batch_loss, rtol=1e-10)
    assert not np.array_equal(a._flat_params, nf.Network(**dict(
        sizes=[60, 17, 9, 3], hidden=["relu", "tanh"], dtype=np.float64, seed=3,
        dropout=dropout, output=output, input_scale=0.5))._flat_params)   # it trained


@pytest.mark.parametrize("fmt", ["csr_matrix", "csr_array", "csc_matrix", "csc_array",
                                 "coo_matrix", "lil_matrix", "csr_int64", "messy"])
def test_predict_evaluate_loss_and_grads_on_sparse_equal_dense(fmt):
    rng = np.random.default_rng(1)
    X, y = _data(rng)
    dense = X.toarray()
    if fmt == "csr_int64":
        X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    elif fmt == "messy":
        X = random_csr(np.random.default_rng(1), 150, 60, 0.1, messy=True)
        dense = X.toarray()                              # duplicates summed by scipy
    else:
        X = getattr(sp, fmt)(X)
    net, _ = _twins()
    net.fit(dense, y, epochs=2, verbose=False)
    np.testing.assert_allclose(net.forward(X), net.forward(dense), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.predict_proba(X), net.predict_proba(dense), rtol=1e-12)
    np.testing.assert_array_equal(net.predict(X), net.predict(dense))
    ea, eb = net.evaluate(X, y), net.evaluate(dense, y)
    assert ea.keys() == eb.keys()
    for key in ea:
        assert ea[key] == pytest.approx(eb[key], rel=1e-12)
    la, ga = net.loss_and_grads(X, y)
    lb, gb = net.loss_and_grads(dense, y)
    assert la == pytest.approx(lb, rel=1e-12)
    for (wa, ba), (wb, bb) in zip(ga, gb):
        np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(ba, bb, rtol=1e-10, atol=1e-15)


def test_one_layer_network_and_float32_and_predict_chunks(monkeypatch):
    from nnfast import network
    monkeypatch.setattr(network, "PREDICT_CHUNK", 16)    # several chunks of rows
    rng = np.random.default_rng(2)
    X, y = _data(rng, output="sigmoid")
    for sizes, dtype in (([60, 3], np.float64), ([60, 8, 3], np.float32)):
        net = nf.Network(sizes, output="sigmoid", dtype=dtype, seed=0)
        net.fit(X, y, epochs=2, batch_size=16, verbose=False)
        ref = nf.Network(sizes, output="sigmoid", dtype=dtype, seed=0)
        ref.fit(X.toarray(), y, epochs=2, batch_size=16, verbose=False)
        rtol = 1e-10 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(net._flat_params, ref._flat_params, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(net.forward(X), net.forward(X.toarray()), rtol=rtol,
                                   atol=rtol)
        assert net.evaluate(X, y)["loss"] == pytest.approx(
            net.evaluate(X.toarray(), y)["loss"], rel=rtol)


def test_validation_split_and_validation_data_sparse():
    rng = np.random.default_rng(3)
    X, y = _data(rng)
    Xv, yv = _data(np.random.default_rng(4), n=40)
    a, b = _twins()
    ha = a.fit(X, y, epochs=3, validation_split=0.2, verbose=False)
    hb = b.fit(X.toarray(), y, epochs=3, validation_split=0.2, verbose=False)
    np.testing.assert_allclose(ha.val_loss, hb.val_loss, rtol=1e-10)
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-10, atol=1e-12)
    ha = a.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=False)
    hb = b.fit(X.toarray(), y, epochs=2, validation_data=(Xv.toarray(), yv), verbose=False)
    np.testing.assert_allclose(ha.val_loss, hb.val_loss, rtol=1e-10)
    np.testing.assert_allclose(ha.val_accuracy, hb.val_accuracy, rtol=1e-10)


def test_sparse_and_dense_fits_alternate_on_one_network():
    rng = np.random.default_rng(5)
    X, y = _data(rng)
    a, b = _twins()
    for data_a in (X, X.toarray(), X):                  # workspaces swap as needed
        a.fit(data_a, y, epochs=1, batch_size=20, verbose=False)
        b.fit(X.toarray(), y, epochs=1, batch_size=20, verbose=False)
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("data_dtype", [np.int64, np.uint8, bool, np.float32])
def test_integer_bool_and_other_float_data_converted_once(data_dtype):
    rng = np.random.default_rng(6)
    X, y = _data(rng)
    X.data = (X.data * 4).astype(data_dtype)
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    a, b = _twins()
    a.fit(X, y, epochs=2, verbose=False)
    b.fit(X.toarray().astype(np.float64), y, epochs=2, verbose=False)
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-10, atol=1e-12)
    for orig, now in zip(before, (X.data, X.indices, X.indptr)):
        np.testing.assert_array_equal(orig, now)          # the caller's arrays untouched
    assert X.data.dtype == np.dtype(data_dtype)


def test_checked_csr_shares_the_callers_arrays():
    rng = np.random.default_rng(7)
    X, _ = _data(rng)
    net = nf.Network([60, 4, 3], dtype=np.float64)
    checked = net._inputs(X)
    assert isinstance(checked, CSRInput)
    assert checked.data is X.data or np.shares_memory(checked.data, X.data)
    assert np.shares_memory(checked.indices, X.indices)
    part = checked[10:20]                                  # a row slice: views again
    assert part.shape == (10, 60) and np.shares_memory(part.data, X.data)
    np.testing.assert_array_equal(
        sp.csr_matrix((part.data, part.indices, part.indptr), shape=part.shape).toarray(),
        X.toarray()[10:20])
    assert checked[150:150].shape == (0, 60)
    with pytest.raises(TypeError, match="slices"):
        checked[[1, 2]]


def test_csr_of_memmapped_arrays_is_read_in_place(tmp_path):
    rng = np.random.default_rng(14)
    X, y = _data(rng)
    X = X.astype(np.float32)
    for name in ("data", "indices", "indptr"):
        np.save(tmp_path / f"{name}.npy", getattr(X, name))
    arrays = [np.load(tmp_path / f"{name}.npy", mmap_mode="r")
              for name in ("data", "indices", "indptr")]
    M = sp.csr_matrix(tuple(arrays), shape=X.shape)
    net = nf.Network([60, 4, 3], seed=0)
    checked = net._inputs(M)
    for disk, used in zip(arrays, (checked.data, checked.indices, checked.indptr)):
        assert np.shares_memory(disk, used)              # no copy in memory
    net.fit(M, y, epochs=1, verbose=False)
    ref = nf.Network([60, 4, 3], seed=0)
    ref.fit(X.toarray(), y, epochs=1, verbose=False)
    np.testing.assert_allclose(net._flat_params, ref._flat_params, rtol=1e-4, atol=1e-6)


def test_sparse_fit_trains_and_releases_the_data():
    import weakref
    rng = np.random.default_rng(8)
    X, y = _data(rng, n=300)
    net = nf.Network([60, 16, 3], seed=0)
    h = net.fit(X, y, epochs=15, batch_size=32, optimizer=nf.Adam(lr=0.01), verbose=False)
    assert h.loss[-1] < h.loss[0]
    ref = weakref.ref(X.data)
    del X
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------ checks

def test_sparse_input_checks():
    rng = np.random.default_rng(9)
    X, y = _data(rng)
    net = nf.Network([60, 4, 3], seed=0)
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb.data[3] = bad
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            net.fit(Xb, y, verbose=False)
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            net.predict(Xb)
        with pytest.raises(ValueError, match="X_val contains NaN or inf"):
            net.fit(X, y, validation_data=(Xb, y), verbose=False)
    Xb = X.copy()
    Xb.data[3] = 1e300                                   # overflows float32
    with pytest.raises(ValueError, match="too large for float32"):
        net.predict(Xb)
    big = nf.Network([60, 4, 3], input_scale=1e30, seed=0)
    Xb.data[3] = 1e10
    with pytest.raises(ValueError, match="input_scale"):
        big.predict(Xb)
    with pytest.raises(ValueError, match="61 features, the network expects 60"):
        net.predict(sp.random(5, 61, format="csr"))
    with pytest.raises(ValueError, match="X is empty"):
        net.predict(sp.csr_matrix((0, 60)))
    with pytest.raises(ValueError, match="X is empty"):
        net.fit(sp.csr_matrix((0, 60)), np.zeros(0, int), verbose=False)
    with pytest.raises(ValueError, match="y has 149 rows but X has 150"):
        net.fit(X, y[:-1], verbose=False)
    with pytest.raises(TypeError, match="must hold numbers"):
        net.predict(X.astype(np.complex128))


def test_sparse_targets_and_weights_are_refused():
    rng = np.random.default_rng(10)
    X, y = _data(rng, output="sigmoid")
    net = nf.Network([60, 4, 3], output="sigmoid", seed=0)
    with pytest.raises(TypeError, match=r"y must be a dense array .*scipy.sparse csr"):
        net.fit(X, sp.csr_matrix(y), verbose=False)
    with pytest.raises(TypeError, match="y must be a dense array"):
        net.evaluate(X.toarray(), sp.csr_array(y))
    with pytest.raises(TypeError, match="sample_weight must be a dense array"):
        net.fit(X, y, sample_weight=sp.csr_matrix(np.ones((1, 150))), verbose=False)


def _corrupt(X, what):
    """X with an invalid structure that scipy's constructor would not let through."""
    X = X.copy()
    if what == "index_high":                       # past the rows (CSC) or columns (CSR)
        X.indices[-1] = X.shape[1] if X.format == "csr" else X.shape[0]
    elif what == "index_negative":
        X.indices[0] = -1
    elif what == "indptr_decreasing":
        X.indptr[4] = X.indptr[5] + 1
    elif what == "indptr_start":
        X.indptr[0] = 1
    elif what == "indptr_past_end":
        X.indptr[-1] = X.indices.shape[0] + 1
    return X


@pytest.mark.parametrize("what", ["index_high", "index_negative", "indptr_decreasing",
                                  "indptr_start", "indptr_past_end"])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_invalid_structures_are_refused_before_any_read(what, fmt):
    rng = np.random.default_rng(11)
    X, y = _data(rng)
    X = _corrupt(X if fmt == "csr" else X.tocsc(), what)
    net = nf.Network([60, 4, 3], seed=0)
    before = net._flat_params.copy()
    with pytest.raises(ValueError, match=r"^X: the sparse matrix"):
        net.fit(X, y, verbose=False)
    with pytest.raises(ValueError, match=r"^X: the sparse matrix"):
        net.predict(X)
    np.testing.assert_array_equal(net._flat_params, before)


def test_invalid_coo_coordinates_are_refused():
    X = sp.coo_matrix(np.eye(4, 60))
    X.col[0] = 60
    with pytest.raises(ValueError, match=r"column indices in \[.*60\], expected \[0, 60\)"):
        nf.Network([60, 4, 3]).predict(X)


# ------------------------------------------------------------------ memory

def test_training_on_wide_sparse_input_is_never_densified():
    """2,000,000 features (TF-IDF-like: 20 non-zeros a row), 2,000 rows, 16 hidden units:
    the weights are 32M float32 (122 MiB), a dense batch of 256 rows would be 1953 MiB.
    fit's peak allocation is Adam's two moment buffers (244 MiB) and little more."""
    F, N, NNZ, H, BATCH = 2_000_000, 2_000, 20, 16, 256
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random(N * NNZ, dtype=np.float32),
                       rng.integers(0, F, N * NNZ).astype(np.int32),
                       np.arange(0, N * NNZ + 1, NNZ, dtype=np.int32)), shape=(N, F))
    y = rng.integers(0, 2, N)
    net = nf.Network([F, H, 2], seed=0)
    weights = net.coefs[0].nbytes
    data = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    dense_batch = BATCH * F * 4
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        hist = net.fit(X, y, epochs=1, batch_size=BATCH, verbose=False)
        net.predict(X)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert np.isfinite(hist.loss[0])
    adam_state = 2 * net._flat_params.nbytes
    print(f"peak {peak / 2**20:.1f} MiB: Adam state {adam_state / 2**20:.1f} MiB, data "
          f"{data / 2**20:.1f} MiB; a dense batch {dense_batch / 2**20:.0f} MiB")
    assert peak < adam_state + data + 16 * 2**20         # only the optimizer's state
    assert peak < dense_batch / 6
    assert weights == F * H * 4


# ------------------------------------------------------------------ scikit-learn estimators

@pytest.mark.filterwarnings("ignore:.*has not converged")
@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_array", "coo_matrix"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_estimators_on_sparse_equal_dense(fmt, early_stopping):
    pytest.importorskip("sklearn", minversion="1.6")
    from nnfast.sklearn import NNClassifier, NNRegressor
    rng = np.random.default_rng(12)
    X, y = _data(rng, n=120)
    Xs = getattr(sp, fmt)(X)
    labels = np.array(["a", "b", "c"])[y]
    kw = dict(hidden_layer_sizes=(8,), epochs=5, random_state=0, dtype="float64",
              early_stopping=early_stopping)
    clf_s = NNClassifier(**kw).fit(Xs, labels)
    clf_d = NNClassifier(**kw).fit(X.toarray(), labels)
    np.testing.assert_allclose(clf_s.predict_proba(Xs), clf_d.predict_proba(X.toarray()),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(clf_s.predict(Xs), clf_d.predict(X.toarray()))
    assert clf_s.score(Xs, labels) == clf_d.score(X.toarray(), labels)
    target = X.toarray()[:, :2].sum(axis=1)
    reg_s = NNRegressor(**kw).fit(Xs, target)
    reg_d = NNRegressor(**kw).fit(X.toarray(), target)
    np.testing.assert_allclose(reg_s.predict(Xs), reg_d.predict(X.toarray()), rtol=1e-10,
                               atol=1e-12)
    part = NNClassifier(hidden_layer_sizes=(8,), random_state=0)
    part.partial_fit(Xs, labels, classes=["a", "b", "c"]).partial_fit(Xs, labels)
    assert part.n_iter_ == 2


@pytest.mark.filterwarnings("ignore:.*has not converged")
def test_estimators_refuse_sparse_targets():
    pytest.importorskip("sklearn", minversion="1.6")
    from nnfast.sklearn import NNClassifier, NNRegressor
    rng = np.random.default_rng(13)
    X, y = _data(rng, output="sigmoid")
    with pytest.raises(TypeError, match="y must be a dense array"):
        NNClassifier(epochs=2).fit(X, sp.csr_matrix(y.astype(int)))
    with pytest.raises(TypeError, match="y must be a dense array"):
        NNRegressor(epochs=2).fit(X, sp.csr_matrix(y))
    with pytest.raises(ValueError, match="NaN"):
        Xb = X.copy()
        Xb.data[0] = np.nan
        NNRegressor(epochs=2).fit(Xb, y)
