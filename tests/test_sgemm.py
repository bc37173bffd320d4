"""nnfast's own float32 matrix products (csrc/_sgemm.h): the AVX-512F path gives the bits
of the portable chain (one fused multiply-add chain over k per entry, run on every
machine), both are accurate against float64, and a float32 network trains the same on
them and on BLAS. Networks use them on a CPU with AVX-512F; BLAS is tested everywhere
by switching to it here."""
import numpy as np
import pytest

import nnfast as nf
from nnfast import _kernels as K
from nnfast import _precision, _step
from nnfast.reference import ReferenceNetwork

PATHS = K.f32_paths()
OWN = "avx512f" in PATHS
needs_avx512 = pytest.mark.skipif(not OWN, reason="this CPU lacks AVX-512F")


def product(m, n, k, trans_a, trans_b, alpha=1.0, path=None, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    K.gemm_f32(c, a, b, trans_a, trans_b, alpha, path)
    return a, b, c


@pytest.fixture
def blas_products():
    previous = _precision.set_float32_products("blas")
    yield
    _precision.set_float32_products(previous)


def test_paths():
    assert PATHS[0] == "generic" and set(PATHS) <= set(K.F32_PATHS)
    assert _precision.float32_products() == ("nnfast" if OWN else "blas")


# shapes: tile edges (M past a multiple of 8, N past 16 and 32, N <= 16 alone), K past the
# transposed panel's 256, the step's own shapes, and the degenerate ones
SHAPES = [(1, 1, 1), (7, 9, 5), (8, 16, 3), (9, 17, 33), (13, 31, 257), (16, 32, 256),
          (33, 65, 600), (32, 10, 128), (40, 48, 1), (3, 100, 513), (128, 256, 784)]


@needs_avx512
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_avx512_gives_the_bits_of_the_chain(shape, trans_a, trans_b):
    m, n, k = shape
    for alpha in (1.0, 0.3):
        _, _, fast = product(m, n, k, trans_a, trans_b, alpha, "avx512f")
        _, _, chain = product(m, n, k, trans_a, trans_b, alpha, "generic")
        np.testing.assert_array_equal(fast.view(np.uint32), chain.view(np.uint32))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", [(37, 45, 301), (8, 32, 16), (65, 10, 513), (1, 3, 2)])
def test_accuracy_against_float64(shape, trans_a, trans_b, path):
    m, n, k = shape
    a, b, c = product(m, n, k, trans_a, trans_b, 0.25, path)
    op_a = (a.T if trans_a else a).astype(np.float64)
    op_b = (b.T if trans_b else b).astype(np.float64)
    ref = 0.25 * (op_a @ op_b)
    bound = 0.25 * (k + 1) * np.finfo(np.float32).eps * (np.abs(op_a) @ np.abs(op_b))
    assert np.all(np.abs(c - ref) <= bound + 1e-30)


@pytest.mark.parametrize("path", PATHS)
def test_a_row_and_a_column_do_not_depend_on_the_rest(path):
    # the team cuts products into blocks: an entry must not depend on where they lie
    a, b, c = product(50, 70, 300, False, False, 1.0, path, seed=3)
    part = np.empty((9, 21), np.float32)
    K.gemm_f32(part, np.ascontiguousarray(a[11:20]), np.ascontiguousarray(b[:, 33:54]),
               path=path)
    np.testing.assert_array_equal(part, c[11:20, 33:54])


@pytest.mark.parametrize("path", PATHS)
def test_empty_sums_and_empty_outputs(path):
    c = np.full((3, 4), np.nan, np.float32)
    K.gemm_f32(c, np.empty((3, 0), np.float32), np.empty((0, 4), np.float32), path=path)
    assert np.array_equal(c, np.zeros((3, 4)))
    K.gemm_f32(np.empty((0, 4), np.float32), np.empty((0, 5), np.float32),
               np.empty((5, 4), np.float32), path=path)


@pytest.mark.parametrize("alpha", [-1.0, 0.5, np.nan])
def test_an_empty_sum_is_alpha_times_zero_on_every_path(alpha):
    """The chain computes alpha * 0: -0 for a negative alpha, NaN for NaN; every path
    gives those bits."""
    want = np.float32(0.0) * np.float32(alpha)
    for path in PATHS:
        c = np.full((3, 17), 7, np.float32)
        K.gemm_f32(c, np.empty((3, 0), np.float32), np.empty((0, 17), np.float32),
                   alpha=alpha, path=path)
        assert np.array_equal(c.view(np.uint32), np.full((3, 17), want).view(np.uint32))


@pytest.mark.parametrize("path", PATHS)
def test_infinities_and_nans_propagate(path):
    a = np.ones((9, 20), np.float32)
    b = np.ones((20, 40), np.float32)
    a[2, 5] = np.inf
    b[7, 33] = np.nan
    c = np.empty((9, 40), np.float32)
    K.gemm_f32(c, a, b, path=path)
    assert np.isposinf(c[2, :33]).all() and np.isposinf(c[2, 34:]).all()
    assert np.isnan(c[:, 33]).all()
    assert np.isnan(c).sum() == 9 and np.isinf(c).sum() == 39


def test_denormals_are_flushed_as_in_the_step():
    a = np.full((1, 1), 1e-20, np.float32)
    b = np.full((1, 1), 1e-20, np.float32)           # 1e-40: a float32 denormal
    for path in PATHS:
        c = np.full((1, 1), np.nan, np.float32)
        K.gemm_f32(c, a, b, path=path)
        assert c[0, 0] == 0


def test_bad_arguments_are_refused():
    c = np.empty((2, 3), np.float32)
    for args in ((None, np.ones((2, 4), np.float32), np.ones((4, 3), np.float32)),
                 (c, None, np.ones((4, 3), np.float32)), (c, np.ones((2, 4), np.float32), None)):
        for gemm in (K.gemm_f32, K.gemm_bf16):
            with pytest.raises(TypeError, match="must not be None"):
                gemm(*args)
    with pytest.raises(ValueError, match="path must be one of"):
        K.gemm_f32(c, np.ones((2, 4), np.float32), np.ones((4, 3), np.float32), path="amx")
    with pytest.raises(ValueError, match="shape mismatch"):
        K.gemm_f32(c, np.ones((2, 4), np.float32), np.ones((5, 3), np.float32))
    if not OWN:
        with pytest.raises(ValueError, match="does not run"):
            K.gemm_f32(c, np.ones((2, 4), np.float32), np.ones((4, 3), np.float32),
                       path="avx512f")


# ------------------------------------------------------------------ in networks

def test_networks_choose_the_products():
    f32 = nf.Network([5, 4, 3], dtype="float32")
    f64 = nf.Network([5, 4, 3], dtype="float64")
    bf16 = nf.Network([5, 4, 3], matmul_precision="bfloat16")
    assert f32._matmul_path() == (_step.MATMUL_F32 if OWN else _step.MATMUL_BLAS)
    assert f64._matmul_path() == _step.MATMUL_BLAS
    assert bf16._matmul_path() >= 0
    assert _precision.matmul_description("float32", "float64") == "float64 (OpenBLAS)"


def test_blas_products_can_be_chosen(blas_products):
    assert nf.Network([5, 4, 3])._matmul_path() == _step.MATMUL_BLAS
    assert _precision.matmul_description("float32") == "float32 (OpenBLAS)"


def test_set_float32_products_checks_its_argument():
    for bad in ("mkl", np.array("blas"), np.array(["blas", "blas"]), None, b"blas"):
        with pytest.raises(ValueError, match="'nnfast' or 'blas'"):
            _precision.set_float32_products(bad)
    assert type(_precision.float32_products()) is str
    if not OWN:
        with pytest.raises(ValueError, match="AVX-512F"):
            _precision.set_float32_products("nnfast")


@pytest.mark.parametrize("precision, dtype, message", [
    ("bf16", "float32", "precision must be"), ("garbage", "float32", "precision must be"),
    (None, None, "precision must be"), ("float32", "int32", "dtype must be"),
    ("float32", "nope", "dtype must be"), ("bfloat16", "float64", "for float32 networks")])
def test_the_path_helpers_refuse_what_no_network_has(precision, dtype, message):
    for helper in (_precision.matmul_path, _precision.matmul_description):
        with pytest.raises(ValueError, match=message):
            helper(precision, dtype)


def test_the_path_helpers_take_a_dtype_in_any_spelling():
    for dtype in ("float32", np.float32, np.dtype("float32")):
        assert _precision.matmul_path("float32", dtype) == nf.Network([3, 2])._matmul_path()


def test_products_refuse_an_output_that_overlaps_an_input():
    s = np.ones((8, 8), np.float32)
    w = np.ones((8, 8), np.float32)
    for gemm in (K.gemm, K.gemm_f32, K.gemm_bf16):
        with pytest.raises(ValueError, match="c overlaps a"):
            gemm(s, s, w)
        with pytest.raises(ValueError, match="c overlaps b"):
            gemm(s[:4], w[:4], s)
        gemm(s[:4], s[4:], w)                   # neighbours in memory, no overlap
        assert np.array_equal(s[:4], np.full((4, 8), 8, np.float32))


def test_a_step_refuses_own_products_it_cannot_run():
    net = nf.Network([5, 4, 3], dtype="float64")
    X = np.zeros((4, 5))
    net.fit(X, np.zeros(4, int), epochs=1, batch_size=4, verbose=False)
    with pytest.raises(ValueError, match="need float32|lacks"):
        net._workspace.step.matmul_path = _step.MATMUL_F32


def _train(X, y, threads=1, epochs=2):
    nf.set_num_threads(threads)
    net = nf.Network([X.shape[1], 96, 40, 4], dtype="float32", seed=2)
    hist = net.fit(X, y, epochs=epochs, batch_size=64, optimizer=nf.Adam(lr=1e-2),
                   verbose=False)
    return net, hist


@pytest.fixture
def data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 37)).astype(np.float32)
    y = rng.integers(0, 4, 200)
    before = nf.get_num_threads()
    yield X, y
    nf.set_num_threads(before)


@pytest.mark.parametrize("products", ["nnfast", "blas"])
def test_loss_and_gradients_match_the_reference(products, data):
    if products == "nnfast" and not OWN:
        pytest.skip("this CPU lacks AVX-512F")
    previous = _precision.set_float32_products(products)
    try:
        X, y = data
        net = nf.Network([37, 48, 20, 4], dtype="float32", seed=2)
        loss, grads = net.loss_and_grads(X[:64], y[:64])
        ref = ReferenceNetwork.from_network(net)
        ref_loss, ref_grads = ref.loss_and_grads(X[:64].astype(np.float64),
                                                 net._Y(y[:64], 64).astype(np.float64))
        flat = np.concatenate([w.ravel() for w, _ in grads] + [b.ravel() for _, b in grads])
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        np.testing.assert_allclose(flat, ref_grads, rtol=1e-3, atol=1e-5)
    finally:
        _precision.set_float32_products(previous)


@needs_avx512
def test_own_and_blas_products_train_alike(data):
    X, y = data
    own, own_hist = _train(X, y)
    previous = _precision.set_float32_products("blas")
    try:
        blas, blas_hist = _train(X, y)
    finally:
        _precision.set_float32_products(previous)
    np.testing.assert_allclose(own_hist.loss, blas_hist.loss, rtol=1e-4)
    np.testing.assert_allclose(own.flat_params, blas.flat_params, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(own.predict_proba(X), blas.predict_proba(X), atol=1e-4)


@pytest.fixture
def split_team(monkeypatch):
    """Teams of up to 4 threads really split every phase (as in test_thread_bits)."""
    import nnfast._threads as threads_mod
    previous, grain = _step._set_grid_cpus(4), _step._set_grain(1e4)   # small blocks too
    monkeypatch.setattr(threads_mod, "_available_cpus", lambda: 64)
    monkeypatch.setattr(threads_mod, "timed_team_choice", False)
    yield
    _step._set_grid_cpus(previous)
    _step._set_grain(grain)
    threads_mod.refresh_cpus()


@pytest.mark.parametrize("products", ["nnfast", "blas"])
def test_the_same_bits_for_one_to_three_threads(products, data, split_team):
    if products == "nnfast" and not OWN:
        pytest.skip("this CPU lacks AVX-512F")
    previous = _precision.set_float32_products(products)
    try:
        X, y = data
        one, one_hist = _train(X, y, threads=1)
        for threads in (2, 3):
            net, hist = _train(X, y, threads=threads)
            assert hist.batch_loss == one_hist.batch_loss, threads
            np.testing.assert_array_equal(net.flat_params, one.flat_params)
    finally:
        _precision.set_float32_products(previous)


@needs_avx512
def test_a_rows_prediction_does_not_depend_on_its_batch(data):
    # each entry of an own product is the chain over k of its row and column alone
    X, _ = data
    net = nf.Network([37, 96, 40, 4], dtype="float32", seed=2)
    whole = net.forward(X)
    for rows in (slice(0, 1), slice(5, 12), slice(17, 150)):
        np.testing.assert_array_equal(net.forward(X[rows]), whole[rows])
