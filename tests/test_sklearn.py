"""nnfast.sklearn: NNClassifier / NNRegressor under scikit-learn's estimator checks, and
their own contract (labels, partial_fit, pickle, Pipeline, GridSearchCV, early stopping)."""
import copy
import inspect
import os
import pickle
import subprocess
import sys
import unittest
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")    # the extra: nnfast[sklearn]

from sklearn.base import clone
from sklearn.datasets import make_blobs, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import nnfast as nf
from nnfast.sklearn import NNClassifier, NNRegressor

HAS_DROPOUT = "dropout" in inspect.signature(nf.Network).parameters

# ------------------------------------------------------------ scikit-learn's checks

# Skips that scikit-learn's checks raise themselves, each for a reason that is not ours;
# any other skip fails the test.
ALLOWED_SKIPS = {
    # check_array_api_input needs SCIPY_ARRAY_API=1 before scipy is imported: it runs in
    # a subprocess of its own in test_array_api_check_with_numpy below.
    "SCIPY_ARRAY_API is not set",
    # check_{classifier,regressor}_data_not_an_array with pandas objects (the NotAnArray
    # half runs first, and test_dataframe_* below cover DataFrames when pandas is there).
    "pandas is not installed",
    # check_classifiers_multilabel_output_format_decision_function: like MLPClassifier,
    # NNClassifier has predict_proba and no decision_function.
    "does not have a decision_function method",
}


# Defaults except the random state: the checks must pass with the default epochs
# (check_classifiers_train asks for > 0.83 accuracy); a full run takes ~5-15 s.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([NNClassifier(random_state=0), NNRegressor(random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    try:
        check(estimator)
    except unittest.SkipTest as exc:
        if not any(reason in str(exc) for reason in ALLOWED_SKIPS):
            raise AssertionError(f"check skipped for a reason not allowed here: {exc}")
        pytest.skip(str(exc))


def _run_python(code, tmp_path, **env):
    """Run `code` in a fresh interpreter in tmp_path (the repository root would shadow
    the installed package with its source tree)."""
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_array_api_check_with_numpy(tmp_path):
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from nnfast.sklearn import NNClassifier, NNRegressor\n"
        "for est in (NNClassifier(random_state=0), NNRegressor(random_state=0)):\n"
        "    check_array_api_input(type(est).__name__, est, array_namespace='numpy',\n"
        "                          expect_only_array_outputs=False)\n"
        "print('ok')\n")
    res = _run_python(code, tmp_path, SCIPY_ARRAY_API="1")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_dataframe_column_names():
    pd = pytest.importorskip("pandas")
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_dataframe_column_names_consistency("NNClassifier", NNClassifier(epochs=5))
        check_dataframe_column_names_consistency("NNRegressor", NNRegressor(epochs=5))
    X, y = _blobs()
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = _quiet_fit(NNClassifier(epochs=30, random_state=0), df, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    pred_df = clf.predict(df)
    with pytest.warns(UserWarning, match="feature names"):
        pred_X = clf.predict(X)             # fitted with names, given none
    np.testing.assert_array_equal(pred_df, pred_X)
    assert not hasattr(_quiet_fit(NNClassifier(epochs=3), X, y), "feature_names_in_")


# ------------------------------------------------------------ imports

def test_import_nnfast_does_not_import_sklearn(tmp_path):
    res = _run_python("import nnfast, sys; assert 'sklearn' not in sys.modules, "
                      "'sklearn imported'", tmp_path)
    assert res.returncode == 0, res.stderr


def test_import_error_without_sklearn(tmp_path):
    res = _run_python("import sys; sys.modules['sklearn'] = None\n"   # as if not installed
                      "import nnfast.sklearn", tmp_path)
    assert res.returncode != 0
    assert "ImportError" in res.stderr and "pip install nnfast[sklearn]" in res.stderr


# ------------------------------------------------------------ data

def _blobs(n=240, centers=3, seed=0):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=4, cluster_std=1.5,
                      random_state=seed)
    return StandardScaler().fit_transform(X), y


def _quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


# ------------------------------------------------------------ classifier

@pytest.mark.parametrize("labels", [["cat", "dog", "emu"], [10, -3, 7], ["no", "yes"]])
def test_labels_of_any_values(labels):
    X, y = _blobs(centers=len(labels))
    y_named = np.asarray(labels)[y]
    clf = _quiet_fit(NNClassifier(epochs=60, random_state=0), X, y_named)
    np.testing.assert_array_equal(clf.classes_, np.unique(y_named))
    pred = clf.predict(X)
    assert set(pred) <= set(labels)
    assert np.mean(pred == y_named) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (X.shape[0], len(labels)) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    assert clf.score(X, y_named) == np.mean(pred == y_named)
    assert clf.network_.output == "softmax" and clf.network_.sizes[-1] == len(labels)


def test_fitted_attributes_and_defaults():
    X, y = _blobs()
    clf = NNClassifier()
    assert clf.hidden_layer_sizes == (100,) and clf.batch_size == "auto"
    with pytest.raises(NotFittedError):
        clf.predict(X)
    _quiet_fit(clf, X, y)
    assert clf.n_features_in_ == 4
    assert clf.network_.sizes == (4, 100, 3) and clf.network_.dtype == np.float64
    assert len(clf.loss_curve_) == clf.n_iter_ and 1 <= clf.n_iter_ <= 200
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.validation_loss_curve_ is None
    assert isinstance(clf._optimizer, nf.Adam) and clf._optimizer.lr == 1e-3


def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=200, n_features=6, n_classes=3,
                                          random_state=0)
    X = StandardScaler().fit_transform(X)
    clf = _quiet_fit(NNClassifier(epochs=100, learning_rate=1e-2, random_state=0), X, Y)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.network_.output == "sigmoid"
    pred, proba = clf.predict(X), clf.predict_proba(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    assert proba.shape == Y.shape and ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert np.mean(pred == Y) > 0.85


def test_multilabel_partial_fit():
    X, Y = make_multilabel_classification(n_samples=100, n_features=5, n_classes=4,
                                          random_state=1)
    clf = NNClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="has the classes"):
        clf.partial_fit(X, Y, classes=[0, 1, 2])
    clf.partial_fit(X, Y, classes=[0, 1, 2, 3]).partial_fit(X, Y)
    assert clf.n_iter_ == 2 and clf.predict(X).shape == Y.shape
    with pytest.raises(ValueError, match="multi-label"):
        clf.partial_fit(X, Y[:, 0])


def test_random_state():
    X, y = _blobs()
    a = _quiet_fit(NNClassifier(epochs=20, random_state=3), X, y).predict_proba(X)
    b = _quiet_fit(NNClassifier(epochs=20, random_state=3), X, y).predict_proba(X)
    c = _quiet_fit(NNClassifier(epochs=20, random_state=4), X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = _quiet_fit(NNClassifier(epochs=20), X, y).predict_proba(X)
    e = _quiet_fit(NNClassifier(epochs=20), X, y).predict_proba(X)
    assert not np.array_equal(d, e)                 # None: fresh randomness every fit


def test_set_params_then_fit():
    X, y = _blobs()
    clf = _quiet_fit(NNClassifier(hidden_layer_sizes=(8,), epochs=5, random_state=0), X, y)
    assert clf.network_.sizes == (4, 8, 3) and clf.n_iter_ == 5
    clf.set_params(hidden_layer_sizes=(6, 5), activation="tanh", epochs=7, optimizer="sgd",
                   learning_rate=0.05, momentum=0.5, dtype="float64")
    _quiet_fit(clf, X, y)
    net = clf.network_
    assert net.sizes == (4, 6, 5, 3) and net.hidden == ("tanh", "tanh")
    assert net.dtype == np.float64 and clf.n_iter_ == 7
    opt = clf._optimizer
    assert isinstance(opt, nf.SGD) and (opt.lr, opt.momentum) == (0.05, 0.5)
    assert clf.predict_proba(X).dtype == np.float64


def test_tol_stops_and_convergence_warning():
    X, y = _blobs()
    with pytest.warns(ConvergenceWarning, match="last of 3 epochs.*not converged"):
        NNClassifier(epochs=3, random_state=0).fit(X, y)
    clf = NNClassifier(epochs=500, tol=1.0, n_iter_no_change=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)                        # no loss improves by 1.0: stops after 3 epochs
    assert clf.n_iter_ == 3


def test_early_stopping_stops_before_epochs():
    X, y = _blobs(n=300)
    rng = np.random.default_rng(0)
    y = np.where(rng.random(y.shape) < 0.3, rng.integers(0, 3, y.shape), y)  # label noise
    clf = NNClassifier(hidden_layer_sizes=(64,), learning_rate=1e-2, epochs=1000,
                       early_stopping=True, n_iter_no_change=5, tol=0.0,
                       random_state=0).fit(X, y)
    assert clf.n_iter_ < 1000
    assert len(clf.validation_loss_curve_) == len(clf.loss_curve_) == clf.n_iter_
    best = int(np.argmin(clf.validation_loss_curve_))
    assert clf.n_iter_ == best + 1 + 5          # n_iter_no_change epochs after the best


def test_bad_hyperparameters_raise_before_fitting():
    X, y = _blobs(n=60)
    bad = [dict(optimizer="rmsprop"), dict(batch_size=0), dict(batch_size="big"),
           dict(epochs=0), dict(epochs=2.5), dict(tol=-1.0), dict(n_iter_no_change=0),
           dict(validation_fraction=1.0), dict(dtype="int32"), dict(dtype="float16"),
           dict(dtype=object()),
           dict(hidden_layer_sizes=(0,)), dict(hidden_layer_sizes="10"),
           dict(activation="swish"), dict(learning_rate=0.0), dict(weight_decay=-1.0),
           dict(optimizer="sgd", momentum=1.0), dict(shuffle="yes")]
    for params in bad:
        with pytest.raises((ValueError, TypeError)):
            NNClassifier(epochs=2, **params).fit(X, y)


def test_input_validation_messages():
    X, y = _blobs(n=60)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        NNClassifier(epochs=2).fit(X_nan, y)
    with pytest.raises(ValueError, match="Expected 2D array"):
        NNClassifier(epochs=2).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="Unknown label type"):
        NNClassifier(epochs=2).fit(X, y + 0.5)
    with pytest.raises(ValueError, match="1 class"):
        NNClassifier(epochs=2).fit(X, np.zeros(len(X)))
    clf = _quiet_fit(NNClassifier(epochs=2), X, y)
    with pytest.raises(ValueError, match="X has 3 features, but NNClassifier is expecting 4"):
        clf.predict(X[:, :3])


def test_float64_input_converted_once_and_not_modified():
    X, y = _blobs(n=60)
    X_copy = X.copy()
    clf = _quiet_fit(NNClassifier(epochs=3, random_state=0, dtype="float32"), X, y)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(clf.predict_proba(X),
                                  clf.predict_proba(X.astype(np.float32)))
    np.testing.assert_array_equal(clf.predict(X.tolist()), clf.predict(X))


@pytest.mark.parametrize("Estimator", [NNClassifier, NNRegressor])
def test_dtype_follows_scikit_learns_rule(Estimator):
    """dtype=None: float32 X trains and predicts in float32, any other X in float64;
    an explicit dtype wins over X's."""
    X, y = _blobs(n=60)
    cases = [(X.astype(np.float32), None, np.float32), (X, None, np.float64),
             (X.astype(np.int64), None, np.float64), (X.tolist(), None, np.float64),
             (X.astype(np.float16), None, np.float64),
             (X, "float32", np.float32), (X.astype(np.float32), "float64", np.float64)]
    for X_in, dtype, expected in cases:
        est = _quiet_fit(Estimator(epochs=2, random_state=0, dtype=dtype), X_in, y)
        assert est.network_.dtype == expected, (type(X_in), dtype)
        out = est.predict_proba(X_in) if Estimator is NNClassifier else est.predict(X_in)
        assert out.dtype == expected
    # partial_fit keeps the dtype of its first call
    est = Estimator(random_state=0)
    kwargs = {"classes": np.unique(y)} if Estimator is NNClassifier else {}
    est.partial_fit(X.astype(np.float32), y, **kwargs)
    est.partial_fit(X, y)
    assert est.network_.dtype == np.float32


def test_verbose_prints_epochs(capsys):
    X, y = _blobs(n=60)
    _quiet_fit(NNClassifier(epochs=3, verbose=True), X, y)
    assert capsys.readouterr().out.count("epoch ") == 3


@pytest.mark.skipif(not HAS_DROPOUT, reason="nnfast.Network has no dropout parameter yet")
def test_dropout():
    X, y = _blobs()
    clf = _quiet_fit(NNClassifier(hidden_layer_sizes=(32, 16), dropout=0.3, epochs=50,
                                  random_state=0), X, y)
    assert tuple(clf.network_.dropout) == (0.3, 0.3)
    assert clf.score(X, y) > 0.9
    again = _quiet_fit(clone(clf), X, y)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    restored = pickle.loads(pickle.dumps(clf))
    assert tuple(restored.network_.dropout) == (0.3, 0.3)
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


# ------------------------------------------------------------ partial_fit

def test_partial_fit_classes_and_loss():
    X, y = _blobs()
    labels = np.array(["a", "b", "c"])[y]
    clf = NNClassifier(hidden_layer_sizes=(16,), batch_size=32, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, labels)
    assert not hasattr(clf, "network_")
    clf.partial_fit(X[:80], labels[:80], classes=["c", "b", "a", "d"])   # d: not seen yet
    np.testing.assert_array_equal(clf.classes_, ["a", "b", "c", "d"])
    opt = clf._optimizer
    for _ in range(20):
        clf.partial_fit(X, labels)
    assert clf._optimizer is opt and opt.t == 3 + 20 * 8          # Adam's state went on
    assert clf.n_iter_ == 21 and len(clf.loss_curve_) == 21
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[1]
    assert clf.predict_proba(X).shape == (len(X), 4)
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X[:5], ["a", "b", "zebra", "a", "c"])
    with pytest.raises(ValueError, match="differ from the classes"):
        clf.partial_fit(X, labels, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="X has 3 features"):
        clf.partial_fit(X[:, :3], labels)
    assert clf.n_iter_ == 21                         # the refused calls trained nothing


def test_partial_fit_equals_fit():
    X, y = _blobs()
    fitted = _quiet_fit(NNClassifier(hidden_layer_sizes=(16,), batch_size=50, epochs=4,
                                     random_state=1), X, y)
    stepped = NNClassifier(hidden_layer_sizes=(16,), batch_size=50, random_state=1)
    for _ in range(4):
        stepped.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(stepped.loss_curve_, fitted.loss_curve_)
    np.testing.assert_array_equal(stepped.predict_proba(X), fitted.predict_proba(X))


def test_partial_fit_after_fit_continues():
    X, y = _blobs()
    clf = _quiet_fit(NNClassifier(epochs=5, random_state=0), X, y)
    clf.partial_fit(X, y)                           # classes optional after fit
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6


def test_regressor_partial_fit():
    X, y = _sine()
    reg = NNRegressor(hidden_layer_sizes=(32,), learning_rate=1e-2, batch_size=32,
                      random_state=0)
    for _ in range(30):
        reg.partial_fit(X, y)
    assert reg.loss_curve_[-1] < 0.2 * reg.loss_curve_[0]
    with pytest.raises(ValueError, match="outputs"):
        reg.partial_fit(X, np.c_[y, y])


# ------------------------------------------------------------ pickle, clone, meta-estimators

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pickle_round_trip(dtype, optimizer):
    X, y = _blobs()
    clf = NNClassifier(hidden_layer_sizes=(16, 8), optimizer=optimizer, learning_rate=1e-2,
                       shuffle=False, dtype=dtype, random_state=0)
    for _ in range(3):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.network_ is not clf.network_
    assert restored.network_.sizes == clf.network_.sizes
    assert restored.network_.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(restored.predict(X), clf.predict(X))
    np.testing.assert_array_equal(copy.deepcopy(clf).predict_proba(X), clf.predict_proba(X))
    assert restored.loss_curve_ == clf.loss_curve_ and restored.get_params() == clf.get_params()
    # training goes on from the same weights and optimizer state (no shuffling: no rng)
    clf.partial_fit(X, y)
    restored.partial_fit(X, y)
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_pickle_unfitted_and_regressor():
    assert pickle.loads(pickle.dumps(NNClassifier(epochs=3))).get_params()["epochs"] == 3
    X, y = _sine()
    reg = _quiet_fit(NNRegressor(epochs=5, random_state=0), X, y)
    state_before = dict(reg.__dict__)
    restored = pickle.loads(pickle.dumps(reg))
    assert reg.__dict__ == state_before                  # pickling changed nothing
    np.testing.assert_array_equal(restored.predict(X), reg.predict(X))


def test_clone():
    X, y = _blobs()
    clf = _quiet_fit(NNClassifier(hidden_layer_sizes=(7,), epochs=3, random_state=2), X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "network_") and not hasattr(copy, "classes_")
    _quiet_fit(copy, X, y)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_pipeline():
    X, y = make_blobs(n_samples=200, centers=3, n_features=5, random_state=1)
    X = X * [1, 10, 100, 1000, 0.1] + 50                       # badly scaled
    pipe = make_pipeline(StandardScaler(), NNClassifier(epochs=50, random_state=0))
    _quiet_fit(pipe, X, y)
    assert pipe.score(X, y) > 0.95
    assert pipe.predict_proba(X).shape == (200, 3)


def test_grid_search():
    X, y = _blobs(n=120)
    search = GridSearchCV(NNClassifier(epochs=15, random_state=0),
                          {"hidden_layer_sizes": [(4,), (16,)],
                           "learning_rate": [1e-3, 1e-2]}, cv=2)
    _quiet_fit(search, X, y)
    assert set(search.best_params_) == {"hidden_layer_sizes", "learning_rate"}
    assert search.best_estimator_.network_.sizes[1] == search.best_params_[
        "hidden_layer_sizes"][0]
    assert search.score(X, y) > 0.8


# ------------------------------------------------------------ regressor

def _sine(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n, 1))
    return X, np.sin(X[:, 0]) + 0.05 * rng.standard_normal(n)


def test_regressor_fits_a_function():
    X, y = _sine()
    reg = _quiet_fit(NNRegressor(hidden_layer_sizes=(32, 32), learning_rate=1e-2,
                                 epochs=300, random_state=0), X, y)
    assert reg.score(X, y) > 0.9
    X_test, y_test = _sine(seed=1)
    assert reg.score(X_test, y_test) > 0.9
    pred = reg.predict(X_test)
    assert pred.shape == (len(X_test),) and pred.dtype == np.float64
    assert reg.network_.output == "linear" and reg.n_outputs_ == 1


def test_regressor_output_shapes():
    X, y = _sine(n=100)
    Y2 = np.c_[y, -2 * y, y ** 2]
    reg = _quiet_fit(NNRegressor(epochs=5, random_state=0), X, Y2)
    assert reg.predict(X).shape == (100, 3) and reg.n_outputs_ == 3
    reg = _quiet_fit(NNRegressor(epochs=5, random_state=0), X, y[:, None])
    assert reg.predict(X).shape == (100, 1)              # a column y gives a column back
    reg = _quiet_fit(NNRegressor(epochs=5, random_state=0), X, y)
    assert reg.predict(X).shape == (100,)
