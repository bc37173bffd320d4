"""A row's prediction and the other rows of its batch.

The guarantee (README, "Predictions and the rest of the batch"): in float64 a row's output
does not depend on which rows are predicted with it beyond float64 rounding (~1e-16
relative), on every BLAS kernel family; in float32 it may differ by float32 rounding
(~1e-7 relative), because the summation order of a matrix product depends on the BLAS
kernel the batch size selects. The scikit-learn estimators follow scikit-learn's dtype
rule (float64 unless X is float32), so `check_methods_subset_invariance` holds on any CPU.

These tests sweep batch sizes, chunkings, shapes, outputs and thread counts.
"""
import warnings

import numpy as np
import pytest

import nnfast as nf

SHAPES = [([4, 100, 1], "linear", "relu"), ([4, 100, 3], "softmax", "relu"),
          ([20, 64, 32, 5], "sigmoid", "tanh"), ([37, 128, 2], "linear", "leaky_relu"),
          ([784, 256, 128, 10], "softmax", "relu")]
CHUNKS = [1, 2, 3, 7, 16, 31, 64, 200]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-5, atol=1e-6)}


def _by_chunks(net, X, chunk):
    return np.concatenate([net.forward(X[i:i + chunk]) for i in range(0, len(X), chunk)])


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = nf.get_num_threads()
    nf.set_num_threads(request.param)
    yield request.param
    nf.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes,output,hidden", SHAPES, ids=lambda v: str(v))
def test_rows_do_not_depend_on_the_batch(sizes, output, hidden, dtype, threads):
    rng = np.random.default_rng(sum(sizes))
    net = nf.Network(sizes, hidden=hidden, output=output, dtype=dtype, seed=3)
    X = rng.standard_normal((211, sizes[0])).astype(dtype)
    full = net.forward(X)
    for chunk in CHUNKS:
        np.testing.assert_allclose(_by_chunks(net, X, chunk), full, **TOL[dtype],
                                   err_msg=f"chunks of {chunk} rows")
    # a row predicted among other rows in another order: the same values, permuted
    order = rng.permutation(len(X))
    np.testing.assert_allclose(net.forward(X[order]), full[order], **TOL[dtype])
    # a batch of the same row repeated: every copy gets the row's value
    rep = net.forward(np.repeat(X[:1], 50, axis=0))
    np.testing.assert_allclose(rep, np.repeat(full[:1], 50, axis=0), **TOL[dtype])


@pytest.mark.parametrize("sizes,output,hidden", SHAPES[:3], ids=lambda v: str(v))
def test_predict_follows_forward_row_by_row(sizes, output, hidden, threads):
    """predict's labels from the whole batch equal those of each row alone (float64)."""
    rng = np.random.default_rng(7)
    net = nf.Network(sizes, hidden=hidden, output=output, dtype=np.float64, seed=1)
    X = rng.standard_normal((97, sizes[0]))
    full = net.predict(X)
    single = np.concatenate([net.predict(X[i:i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(single.reshape(full.shape), full, rtol=1e-12, atol=1e-14)


sklearn = pytest.importorskip("sklearn", minversion="1.6")
from sklearn.utils.estimator_checks import check_methods_subset_invariance  # noqa: E402

from nnfast.sklearn import NNClassifier, NNRegressor  # noqa: E402


@pytest.mark.parametrize("Estimator", [NNClassifier, NNRegressor])
def test_estimators_subset_invariance(Estimator, threads):
    """scikit-learn's own check, at 1 and 2 threads, under the default dtype rule."""
    check_methods_subset_invariance(Estimator.__name__, Estimator(epochs=20,
                                                                  random_state=0))


@pytest.mark.parametrize("Estimator", [NNClassifier, NNRegressor])
@pytest.mark.parametrize("n_features,hidden", [(3, (100,)), (30, (64, 32)), (5, ())])
def test_estimator_outputs_over_batch_sizes(Estimator, n_features, hidden, threads):
    rng = np.random.default_rng(n_features)
    X = rng.uniform(0, 3, (120, n_features))
    y = (X[:, 0] > 1.5).astype(int) + (X[:, -1] > 1.5)
    est = Estimator(hidden_layer_sizes=hidden, epochs=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    method = est.predict_proba if Estimator is NNClassifier else est.predict
    full = method(X)
    assert full.dtype == np.float64
    for chunk in CHUNKS:
        parts = np.concatenate([method(X[i:i + chunk]) for i in range(0, len(X), chunk)])
        np.testing.assert_allclose(parts, full, rtol=1e-12, atol=1e-14)
        if Estimator is NNClassifier:                # labels: the same exactly
            np.testing.assert_array_equal(np.concatenate(
                [est.predict(X[i:i + chunk]) for i in range(0, len(X), chunk)]),
                est.predict(X))
