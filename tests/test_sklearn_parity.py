"""NNClassifier / NNRegressor as drop-ins for MLPClassifier / MLPRegressor: sample and
class weights, warm_start, MLP's fitted attribute and activation names, and clear errors
for MLP parameters whose meaning nnfast does not have."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.class_weight import compute_sample_weight  # noqa: E402

from nnfast.sklearn import NNClassifier, NNRegressor  # noqa: E402


def _blobs(n=240, centers=3, seed=0):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=4, cluster_std=1.5,
                      random_state=seed)
    return StandardScaler().fit_transform(X), y


def _fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


def test_mlp_attributes():
    X, y = _blobs()
    clf = _fit(NNClassifier(hidden_layer_sizes=(16, 8), epochs=5, random_state=0), X, y)
    assert [w.shape for w in clf.coefs_] == [(4, 16), (16, 8), (8, 3)]
    assert [b.shape for b in clf.intercepts_] == [(16,), (8,), (3,)]
    assert all(np.shares_memory(w, clf.network_._flat_params) for w in clf.coefs_)
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert clf.n_iter_ == 5 and clf.t_ == 5 * len(X)
    assert clf.loss_ == clf.loss_curve_[-1] and clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    reg = _fit(NNRegressor(epochs=3, random_state=0), X, y.astype(float))
    assert reg.out_activation_ == "identity" and reg.n_outputs_ == 1
    multi = _fit(NNClassifier(epochs=2, random_state=0), X, np.eye(3)[y])
    assert multi.out_activation_ == "logistic"


@pytest.mark.parametrize("Estimator", [NNClassifier, NNRegressor])
def test_early_stopping_attributes(Estimator):
    X, y = _blobs()
    est = _fit(Estimator(epochs=8, early_stopping=True, n_iter_no_change=50,
                         random_state=0), X, y)
    assert len(est.validation_scores_) == est.n_iter_ == 8
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.best_loss_ is None
    assert len(est.validation_loss_curve_) == 8
    # the scores are the estimator's own score on the held-out samples of the last epoch
    # only when the last epoch is the best one; in any case they are accuracies / R^2
    assert all(-np.inf < s <= 1 for s in est.validation_scores_)


def test_validation_scores_are_the_estimators_score():
    X, y = _blobs(n=300)
    clf = _fit(NNClassifier(epochs=1, early_stopping=True, random_state=0), X, y)
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    rng = check_random_state(0)
    rng.randint(np.iinfo(np.int32).max)                # the network's seed comes first
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.1, random_state=rng,
                                          stratify=y)
    assert clf.validation_scores_[0] == pytest.approx(clf.score(X_val, y_val))


def test_warm_start_continues_the_fit():
    X, y = _blobs()
    kw = dict(epochs=3, n_iter_no_change=100, random_state=0)
    warm = NNClassifier(warm_start=True, **kw)
    _fit(warm, X, y)
    first = warm.network_
    _fit(warm, X, y)
    assert warm.network_ is first and warm.n_iter_ == 6 and len(warm.loss_curve_) == 6
    assert warm.t_ == 6 * len(X)
    once = _fit(NNClassifier(epochs=6, n_iter_no_change=100, random_state=0), X, y)
    np.testing.assert_array_equal(warm.network_._flat_params, once.network_._flat_params)
    np.testing.assert_array_equal(warm.loss_curve_, once.loss_curve_)
    cold = NNClassifier(**kw)
    a = _fit(cold, X, y).network_._flat_params.copy()
    b = _fit(cold, X, y).network_._flat_params.copy()
    np.testing.assert_array_equal(a, b)                 # without warm_start: anew
    with pytest.raises(ValueError, match="not in classes"):
        _fit(warm, X, y + 5)
    with pytest.raises(ValueError, match="features"):
        _fit(warm, X[:, :3], y)


def test_mlp_activation_names():
    X, y = _blobs()
    for mlp, ours in (("identity", "linear"), ("logistic", "sigmoid"), ("tanh", "tanh"),
                      ("relu", "relu")):
        clf = _fit(NNClassifier(activation=mlp, epochs=1, random_state=0), X, y)
        assert clf.network_.hidden == [ours] or tuple(clf.network_.hidden) == (ours,)
    clf = _fit(NNClassifier(hidden_layer_sizes=(4, 4), activation=["logistic", "identity"],
                            epochs=1, random_state=0), X, y)
    assert list(clf.network_.hidden) == ["sigmoid", "linear"]


@pytest.mark.parametrize("value", ["adaptive", "constant", "invscaling"])
def test_mlp_learning_rate_schedules_get_a_clear_error(value):
    X, y = _blobs()
    with pytest.raises(ValueError, match="learning_rate is the step size.*nnfast.schedules"):
        NNClassifier(learning_rate=value).fit(X, y)


def test_sample_weight_is_the_networks():
    X, y = _blobs()
    w = np.random.default_rng(0).uniform(0, 3, len(X))
    clf = _fit(NNClassifier(epochs=4, random_state=0), X, y, sample_weight=w)
    ref = _fit(NNClassifier(epochs=4, random_state=0), X, y)
    assert not np.array_equal(ref.network_._flat_params, clf.network_._flat_params)
    ones = _fit(NNClassifier(epochs=4, random_state=0), X, y, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(ref.network_._flat_params, ones.network_._flat_params)
    assert clf.score(X, y, sample_weight=w) == pytest.approx(
        np.sum(w * (clf.predict(X) == y)) / w.sum())


@pytest.mark.parametrize("class_weight", ["balanced", {0: 1.0, 1: 3.0, 2: 0.5}])
def test_class_weight_is_a_sample_weight_per_class(class_weight):
    X, y = _blobs()
    y = y[:200]
    X = X[:200]
    y[:20] = 0
    w = np.random.default_rng(1).uniform(0.5, 2, len(X))
    a = _fit(NNClassifier(epochs=3, random_state=0, class_weight=class_weight), X, y,
             sample_weight=w)
    b = _fit(NNClassifier(epochs=3, random_state=0), X, y,
             sample_weight=w * compute_sample_weight(class_weight, y))
    np.testing.assert_allclose(a.network_._flat_params, b.network_._flat_params,
                               rtol=1e-10, atol=1e-13)


def test_class_weight_with_string_labels_and_partial_fit():
    X, y = _blobs()
    labels = np.array(["a", "b", "c"])[y]
    clf = NNClassifier(class_weight={"a": 2.0}, random_state=0)
    clf.partial_fit(X, labels, classes=["a", "b", "c"])
    clf.partial_fit(X, labels)
    assert clf.n_iter_ == 2


@pytest.mark.parametrize("class_weight,error,match", [
    ({5: 1.0}, ValueError, r"labels \[5\] that are not classes"),
    ({0: -1.0}, ValueError, r"class_weight\[0\] must be in"),
    ({0: np.nan}, ValueError, r"class_weight\[0\]"),
    ("heavy", ValueError, "'balanced' or a dict"),
    ([1, 2, 3], TypeError, "'balanced' or a dict"),
])
def test_bad_class_weight(class_weight, error, match):
    X, y = _blobs()
    with pytest.raises(error, match=match):
        NNClassifier(epochs=1, class_weight=class_weight).fit(X, y)


def test_class_weight_refused_where_it_has_no_meaning():
    X, y = _blobs()
    with pytest.raises(ValueError, match="single-label"):
        NNClassifier(epochs=1, class_weight="balanced").fit(X, np.eye(3)[y])
    clf = NNClassifier(class_weight="balanced")
    with pytest.raises(ValueError, match="not available in partial_fit"):
        clf.partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("Estimator", [NNClassifier, NNRegressor])
@pytest.mark.parametrize("weights,match", [
    (lambda n: np.r_[np.nan, np.ones(n - 1)], "NaN or inf"),
    (lambda n: -np.ones(n), ">= 0"),
    (lambda n: np.zeros(n), "zero for every sample"),
    (lambda n: np.ones(n + 1), "one weight per sample"),
])
def test_bad_sample_weight(Estimator, weights, match):
    X, y = _blobs()
    with pytest.raises(ValueError, match=match):
        Estimator(epochs=1).fit(X, y, sample_weight=weights(len(X)))


def test_early_stopping_split_keeps_weights_with_their_rows():
    X, y = _blobs()
    w = np.ones(len(X))
    w[y == 2] = 0                       # class 2 never trains: it is hardly predicted
    clf = _fit(NNClassifier(epochs=30, early_stopping=True, random_state=0), X, y,
               sample_weight=w)
    assert np.mean(clf.predict(X) == 2) < 0.05 < np.mean(y == 2)
