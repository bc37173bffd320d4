"""Bad input is refused cleanly; accepted conversions give the clean array's results.

Every refusal must be a ValueError or TypeError whose message says what was expected,
and must leave the network bit-identical (parameters, shuffling generator, optimizer).
"""
import datetime
import tracemalloc

import numpy as np
import pytest

import nnfast as nf

# float64 -> float32 overflow (refused afterwards) makes NumPy warn; that is expected here
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

D, K, N = 4, 3, 6
RNG = np.random.default_rng(0)
X0 = RNG.standard_normal((N, D)).astype(np.float32)
Y0 = np.array([0, 1, 2, 0, 1, 2])
SIG2 = RNG.integers(0, 2, (N, 2)).astype(np.float32)
LIN2 = RNG.standard_normal((N, 2)).astype(np.float32)


def _with(a, index, value):
    a = np.array(a, dtype=np.result_type(a, type(value)))
    a[index] = value
    return a


def make_net(output="softmax", k=K, dtype=np.float32):
    return nf.Network([D, 5, k], hidden="tanh", output=output, dtype=dtype, seed=0)


def snapshot(net):
    return net._flat_params.tobytes()


def assert_refused(net, call, match, exc=(ValueError, TypeError)):
    before = snapshot(net)
    with pytest.raises(exc, match=match) as info:
        call()
    assert snapshot(net) == before, "a refused call changed the network"
    assert len(str(info.value)) > 15, f"uninformative message: {info.value!r}"
    return info.value


def assert_fit_refused(net, match, *args, **kw):
    """A refused fit changes nothing: not the weights, not the shuffling generator, not
    the optimizer's state."""
    opt = kw.pop("optimizer", None) or nf.SGD(lr=0.1, momentum=0.5)
    kw.setdefault("verbose", False)
    assert_refused(net, lambda: net.fit(*args, optimizer=opt, **kw), match)
    if isinstance(opt, nf.Optimizer):
        assert opt.t == 0
    # training afterwards is exactly like training a fresh net
    fresh = nf.Network(list(net.sizes), hidden=list(net.hidden), output=net.output,
                       dtype=net.dtype, seed=0)
    good_y = {"softmax": Y0, "sigmoid": SIG2, "linear": LIN2}[net.output]
    if net.output != "softmax" and net.sizes[-1] == 1:
        good_y = good_y[:, 0]
    for m in (net, fresh):
        m.fit(X0, good_y, epochs=1, batch_size=4, optimizer=nf.SGD(lr=0.1), verbose=False)
    assert snapshot(net) == snapshot(fresh), "a refused fit left state behind"


# ------------------------------------------------------------------ bad X

BAD_X = [
    ("1d", X0[0], r"2-D"),
    ("3d", X0[None], r"2-D"),
    ("scalar", 1.0, r"2-D"),
    ("too_few_features", X0[:, :3], r"4"),
    ("too_many_features", np.hstack([X0, X0]), r"4"),
    ("transposed", X0.T.copy(), r"4"),
    ("empty_rows", np.zeros((0, D), np.float32), r"empty|at least one"),
    ("empty_list", [], r"2-D|empty"),
    ("empty_2d_list", [[]], r"4|empty"),
    ("nan", _with(X0, (2, 1), np.nan), r"NaN"),
    ("inf", _with(X0, (0, 0), np.inf), r"inf"),
    ("minus_inf", _with(X0, (5, 3), -np.inf), r"inf"),
    ("nan_float16", _with(X0.astype(np.float16), (1, 1), np.nan), r"NaN"),
    ("overflows_float32", _with(X0.astype(np.float64), (1, 2), 1e39), r"inf|too large"),
    ("object", X0.astype(object), r"numbers"),
    ("str", X0.astype(str), r"numbers"),
    ("bytes", X0.astype(bytes), r"numbers"),
    ("complex", X0.astype(np.complex64), r"numbers"),
    ("datetime64", np.zeros((N, D), "datetime64[s]"), r"numbers"),
    ("timedelta64", np.zeros((N, D), "timedelta64[s]"), r"numbers"),
    ("datetime_objects", [[datetime.datetime(2020, 1, 1)] * D] * N, r"numbers"),
    ("none", None, r"numbers|array"),
    ("ragged", [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]] + [[0.0] * D] * (N - 2), r"rectangular"),
    ("dict", {"a": 1}, r"numbers|2-D"),
]


@pytest.mark.parametrize("method", ["fit", "evaluate", "loss_and_grads", "forward",
                                    "predict", "predict_proba", "gradcheck"])
@pytest.mark.parametrize("X,match", [c[1:] for c in BAD_X], ids=[c[0] for c in BAD_X])
def test_bad_X_refused(X, match, method):
    if method in PREDICTING and isinstance(X, np.ndarray) and X.shape == (0, D):
        return          # no samples: prediction returns an empty result (tested below)
    net = make_net()
    if method == "fit":
        assert_fit_refused(net, match, X, Y0, epochs=1, batch_size=4)
    elif method in ("evaluate", "loss_and_grads"):
        assert_refused(net, lambda: getattr(net, method)(X, Y0), match)
    elif method == "gradcheck":
        assert_refused(net, lambda: nf.gradcheck(net, X, Y0), match)
    else:
        assert_refused(net, lambda: getattr(net, method)(X), match)


PREDICTING = ("forward", "predict", "predict_proba")


@pytest.mark.parametrize("output, k, proba_shape, predict_shape, predict_dtype", [
    ("softmax", K, (0, K), (0,), np.int64), ("sigmoid", 1, (0, 1), (0,), np.int64),
    ("sigmoid", 2, (0, 2), (0, 2), np.int64), ("linear", 1, None, (0,), np.float32),
    ("linear", 2, None, (0, 2), np.float32)])
def test_no_samples_predict_an_empty_result(tmp_path, output, k, proba_shape,
                                            predict_shape, predict_dtype):
    net = make_net(output, k)
    np.save(tmp_path / "empty.npy", np.zeros((0, D), np.float32))
    for X in (np.zeros((0, D), np.float32), np.zeros((0, D), np.uint8),
              np.zeros((0, 2, 2)), tmp_path / "empty.npy"):
        out = net.forward(X)
        assert out.shape == (0, k) and out.dtype == np.float32
        pred = net.predict(X)
        assert pred.shape == predict_shape and pred.dtype == predict_dtype
        if proba_shape is not None:
            proba = net.predict_proba(X)
            assert proba.shape == proba_shape and proba.dtype == np.float32
    assert make_net(dtype=np.float64).forward(np.zeros((0, D))).dtype == np.float64
    with pytest.raises(ValueError, match="empty"):
        net.evaluate(np.zeros((0, D), np.float32), np.zeros((0, k) if k > 1 else 0))
    with pytest.raises(ValueError, match="features"):
        net.predict(np.zeros((0, D + 1), np.float32))        # the shape is still checked


def test_feature_count_message_names_both_counts():
    net = make_net()
    err = assert_refused(net, lambda: net.forward(X0[:, :3]), r"3")
    assert "4" in str(err)


# ------------------------------------------------------------------ bad y

BAD_Y = [
    # (id, output, n_out, y, match)
    ("label_too_big", "softmax", K, Y0 + 1, r"\[0, 3\)"),
    ("label_negative", "softmax", K, Y0 - 1, r"\[0, 3\)"),
    ("label_huge_uint64", "softmax", K, np.full(N, 2**63, np.uint64), r"\[0, 3\)"),
    ("label_non_integer", "softmax", K, Y0 + 0.5, r"integer"),
    ("label_non_integer_small", "softmax", K, _with(Y0.astype(float), 0, 1e-3), r"integer"),
    ("label_nan", "softmax", K, _with(Y0.astype(float), 3, np.nan), r"NaN"),
    ("label_inf", "softmax", K, _with(Y0.astype(float), 3, np.inf), r"inf"),
    ("labels_too_few", "softmax", K, Y0[:5], r"5.*6|6.*5"),
    ("labels_too_many", "softmax", K, np.r_[Y0, 0], r"7.*6|6.*7"),
    ("labels_column", "softmax", K, Y0[:, None], r"shape"),
    ("onehot_too_wide", "softmax", K, np.eye(4)[Y0], r"shape"),
    ("onehot_not_summing_to_1", "softmax", K, np.ones((N, K)), r"sum"),
    ("onehot_negative", "softmax", K, -np.eye(K)[Y0], r"\[0, 1\]"),
    ("onehot_nan", "softmax", K, _with(np.eye(K)[Y0], (0, 0), np.nan), r"NaN"),
    ("labels_3d", "softmax", K, np.eye(K)[Y0][:, :, None], r"1-D or 2-D"),
    ("labels_scalar", "softmax", K, 1, r"1-D or 2-D"),
    ("labels_str", "softmax", K, np.array(list("abcabc")), r"numbers"),
    ("labels_object", "softmax", K, Y0.astype(object), r"numbers"),
    ("labels_complex", "softmax", K, Y0.astype(complex), r"numbers"),
    ("labels_datetime", "softmax", K, np.zeros(N, "datetime64[D]"), r"numbers"),
    ("labels_none", "softmax", K, None, r"numbers|array"),
    ("labels_empty", "softmax", K, np.zeros(0, int), r"0.*6|6.*0"),
    ("sigmoid_1d_for_2_units", "sigmoid", 2, SIG2[:, 0], r"\(6, 2\)"),
    ("sigmoid_3_columns", "sigmoid", 2, np.hstack([SIG2, SIG2[:, :1]]), r"\(6, 2\)"),
    ("sigmoid_value_2", "sigmoid", 2, _with(SIG2, (1, 1), 2.0), r"\[0, 1\]"),
    ("sigmoid_negative", "sigmoid", 2, _with(SIG2, (1, 1), -0.5), r"\[0, 1\]"),
    ("sigmoid_nan", "sigmoid", 2, _with(SIG2, (4, 0), np.nan), r"NaN"),
    ("sigmoid1_2_columns", "sigmoid", 1, SIG2, r"\(6, 1\)|\(6,\)"),
    ("sigmoid1_label_2", "sigmoid", 1, _with(SIG2[:, 0], 2, 2.0), r"\[0, 1\]"),
    ("linear_1d_for_2_units", "linear", 2, LIN2[:, 0], r"\(6, 2\)"),
    ("linear_3_columns", "linear", 2, np.hstack([LIN2, LIN2[:, :1]]), r"\(6, 2\)"),
    ("linear_nan", "linear", 2, _with(LIN2, (0, 1), np.nan), r"NaN"),
    ("linear_inf", "linear", 2, _with(LIN2, (0, 1), -np.inf), r"inf"),
    ("linear_overflows_float32", "linear", 2, _with(LIN2.astype(np.float64), (2, 0), 1e40),
     r"inf|too large"),
    ("linear_rows", "linear", 2, LIN2[:4], r"4.*6|6.*4"),
    ("linear1_2_columns", "linear", 1, LIN2, r"\(6, 1\)|\(6,\)"),
    ("linear_str", "linear", 2, LIN2.astype(str), r"numbers"),
]


@pytest.mark.parametrize("method", ["fit", "evaluate", "loss_and_grads", "gradcheck"])
@pytest.mark.parametrize("output,k,y,match", [c[1:] for c in BAD_Y], ids=[c[0] for c in BAD_Y])
def test_bad_y_refused(output, k, y, match, method):
    net = make_net(output, k)
    if method == "fit":
        assert_fit_refused(net, match, X0, y, epochs=1, batch_size=4)
    elif method == "gradcheck":
        assert_refused(net, lambda: nf.gradcheck(net, X0, y), match)
    else:
        assert_refused(net, lambda: getattr(net, method)(X0, y), match)


# ------------------------------------------------------------------ bad validation data

BAD_VAL = [
    ("X_nan", (_with(X0, (0, 0), np.nan), Y0), r"NaN"),
    ("X_inf", (_with(X0, (3, 3), np.inf), Y0), r"inf"),
    ("y_nan", (X0, _with(Y0.astype(float), 1, np.nan)), r"NaN"),
    ("y_out_of_range", (X0, Y0 + 3), r"\[0, 3\)"),
    ("X_features", (X0[:, :2], Y0), r"4"),
    ("X_empty", (np.zeros((0, D)), np.zeros(0, int)), r"empty"),
    ("rows_mismatch", (X0, Y0[:3]), r"3.*6|6.*3"),
    ("X_str", (X0.astype(str), Y0), r"numbers"),
    ("single", (X0,), r"pair"),
    ("triple_bad_weights", (X0, Y0, -np.ones(len(X0))), r"sample_weight_val must be >= 0"),
    ("quadruple", (X0, Y0, np.ones(len(X0)), None), r"pair"),
    ("array", np.zeros((2, N)), r"pair"),
    ("dict", {"X": X0, "y": Y0}, r"pair"),
]


@pytest.mark.parametrize("val,match", [c[1:] for c in BAD_VAL], ids=[c[0] for c in BAD_VAL])
def test_bad_validation_data_refused(val, match):
    net = make_net()
    assert_fit_refused(net, match, X0, Y0, epochs=2, batch_size=4, validation_data=val)


# ------------------------------------------------------------------ bad fit arguments

BAD_FIT_ARGS = [
    ("batch_size_0", {"batch_size": 0}, r"batch_size.*>= 1"),
    ("batch_size_negative", {"batch_size": -3}, r"batch_size.*>= 1"),
    ("batch_size_float", {"batch_size": 4.0}, r"batch_size.*int"),
    ("batch_size_str", {"batch_size": "4"}, r"batch_size.*int"),
    ("batch_size_none", {"batch_size": None}, r"batch_size.*int"),
    ("batch_size_bool", {"batch_size": True}, r"batch_size.*int"),
    ("epochs_0", {"epochs": 0}, r"epochs.*>= 1"),
    ("epochs_negative", {"epochs": -1}, r"epochs.*>= 1"),
    ("epochs_float", {"epochs": 1.5}, r"epochs.*int"),
    ("epochs_none", {"epochs": None}, r"epochs.*int"),
    ("optimizer_unknown", {"optimizer": "rmsprop"}, r"adam.*sgd|sgd.*adam"),
    ("optimizer_empty", {"optimizer": ""}, r"adam.*sgd|sgd.*adam"),
    ("optimizer_int", {"optimizer": 3}, r"Optimizer|adam"),
    ("optimizer_class", {"optimizer": nf.Adam}, r"Optimizer|adam"),
    ("shuffle_str", {"shuffle": "yes"}, r"shuffle"),
]


@pytest.mark.parametrize("kw,match", [c[1:] for c in BAD_FIT_ARGS],
                         ids=[c[0] for c in BAD_FIT_ARGS])
def test_bad_fit_arguments_refused(kw, match):
    net = make_net()
    kw = dict({"epochs": 1, "batch_size": 4}, **kw)
    opt = kw.pop("optimizer", None)
    before = snapshot(net)
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X0, Y0, verbose=False, **kw, **({} if opt is None else {"optimizer": opt}))
    assert snapshot(net) == before
    if opt is None:
        assert_fit_refused(net, match, X0, Y0, **kw)


@pytest.mark.parametrize("kw", [{"lr": 0}, {"lr": -1.0}, {"lr": float("nan")},
                                {"momentum": 1.0}, {"momentum": -0.1},
                                {"nesterov": True}, {"weight_decay": -1e-3}, {"lr": "0.1"}])
def test_bad_sgd_hyperparameters(kw):
    with pytest.raises((ValueError, TypeError), match="SGD"):
        nf.SGD(**kw)


@pytest.mark.parametrize("kw", [{"lr": 0.0}, {"beta1": 1.0}, {"beta2": -0.1}, {"eps": 0.0},
                                {"weight_decay": float("inf")}, {"beta1": None}])
def test_bad_adam_hyperparameters(kw):
    with pytest.raises((ValueError, TypeError), match="Adam"):
        nf.Adam(**kw)


# ------------------------------------------------------------------ bad construction

BAD_NETWORK = [
    ("one_size", dict(sizes=[784]), r"at least 2"),
    ("no_sizes", dict(sizes=[]), r"at least 2"),
    ("zero_width", dict(sizes=[784, 0, 10]), r"sizes\[1\].*>= 1"),
    ("negative_width", dict(sizes=[-5, 3]), r"sizes\[0\].*>= 1"),
    ("float_size", dict(sizes=[5.0, 3]), r"sizes\[0\].*int"),
    ("str_size", dict(sizes=["5", 3]), r"sizes\[0\].*int"),
    ("bool_size", dict(sizes=[True, 3]), r"sizes\[0\].*int"),
    ("sizes_str", dict(sizes="784,10"), r"sizes"),
    ("sizes_int", dict(sizes=784), r"sizes"),
    ("sizes_none", dict(sizes=None), r"sizes"),
    ("huge", dict(sizes=[10**12, 10]), r"parameters|at most"),
    ("huge_hidden", dict(sizes=[10, 10**6, 10**6, 10]), r"parameters|at most"),
    ("huge_input_int32", dict(sizes=[2**31, 1]), r"parameters|at most"),
    ("unknown_hidden", dict(sizes=[5, 4, 3], hidden="relu6"), r"hidden.*relu"),
    ("hidden_capitalised", dict(sizes=[5, 4, 3], hidden="ReLU"), r"hidden.*relu"),
    ("hidden_softmax", dict(sizes=[5, 4, 3], hidden="softmax"), r"hidden.*relu"),
    ("hidden_list_too_short", dict(sizes=[5, 4, 6, 3], hidden=["relu"]), r"2"),
    ("hidden_list_too_long", dict(sizes=[5, 4, 3], hidden=["relu", "tanh"]), r"1"),
    ("hidden_list_bad_name", dict(sizes=[5, 4, 6, 3], hidden=["relu", "gelu"]),
     r"hidden.*relu"),
    ("hidden_list_non_str", dict(sizes=[5, 4, 6, 3], hidden=["relu", 1]), r"hidden|name"),
    ("hidden_none", dict(sizes=[5, 4, 3], hidden=None), r"hidden"),
    ("hidden_int", dict(sizes=[5, 4, 3], hidden=3), r"hidden"),
    ("unknown_output", dict(sizes=[5, 3], output="tanh"), r"output.*softmax"),
    ("output_capitalised", dict(sizes=[5, 3], output="Softmax"), r"output.*softmax"),
    ("output_none", dict(sizes=[5, 3], output=None), r"output"),
    ("softmax_one_unit", dict(sizes=[5, 1], output="softmax"), r"softmax.*2"),
    ("dtype_float16", dict(sizes=[5, 3], dtype=np.float16), r"float32.*float64"),
    ("dtype_int32", dict(sizes=[5, 3], dtype=np.int32), r"float32.*float64"),
    ("dtype_str_float16", dict(sizes=[5, 3], dtype="float16"), r"float32.*float64"),
    ("dtype_complex", dict(sizes=[5, 3], dtype=complex), r"float32.*float64"),
    ("dtype_longdouble", dict(sizes=[5, 3], dtype=np.longdouble), r"float32.*float64"),
    ("dtype_object", dict(sizes=[5, 3], dtype=object), r"float32.*float64"),
    ("dtype_garbage", dict(sizes=[5, 3], dtype="foo"), r"float32.*float64"),
    ("dtype_none", dict(sizes=[5, 3], dtype=None), r"float32.*float64"),
    ("seed_negative", dict(sizes=[5, 3], seed=-1), r"seed"),
    ("seed_float", dict(sizes=[5, 3], seed=1.5), r"seed"),
    ("seed_str", dict(sizes=[5, 3], seed="0"), r"seed"),
]


@pytest.mark.parametrize("kw,match", [c[1:] for c in BAD_NETWORK],
                         ids=[c[0] for c in BAD_NETWORK])
def test_bad_network_refused(kw, match):
    tracemalloc.start()
    try:
        with pytest.raises((ValueError, TypeError), match=match):
            nf.Network(**kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"allocated {peak} bytes before refusing"


@pytest.mark.parametrize("sizes", [[np.int64(5), np.int32(3)], (5, 4, 3), np.array([5, 4, 3])])
def test_network_sizes_accept_numpy_ints_and_tuples(sizes):
    net = nf.Network(sizes)
    assert [int(s) for s in net.sizes] == [int(s) for s in sizes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", "float64",
                                   np.dtype("f4"), "f8"])
def test_network_dtype_spellings(dtype):
    assert nf.Network([3, 2], dtype=dtype).dtype == np.dtype(dtype)


# ------------------------------------------------------------------ accepted conversions

def _strided(a, axis):
    """A non-contiguous view with the values of `a`."""
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.zeros(shape, a.dtype)
    sl = [slice(None)] * a.ndim
    sl[axis] = slice(None, None, 2)
    big[tuple(sl)] = a
    return big[tuple(sl)]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


XF = RNG.standard_normal((13, D)).astype(np.float32)
XI = RNG.integers(-4, 5, (13, D))
XB = RNG.random((13, D)) > 0.5
X16 = RNG.standard_normal((13, D)).astype(np.float16)
X64 = RNG.standard_normal((13, D))
LABELS = RNG.integers(0, K, 13)

# (id, variant, clean float32 equivalent)
X_VARIANTS = [
    ("fortran", np.asfortranarray(XF), XF),
    ("rows_strided", _strided(XF, 0), XF),
    ("cols_strided", _strided(XF, 1), XF),
    ("reversed", XF[::-1].copy()[::-1], XF),
    ("readonly", _readonly(XF), XF),
    ("int64", XI, XI.astype(np.float32)),
    ("int32", XI.astype(np.int32), XI.astype(np.float32)),
    ("uint8", (XI + 4).astype(np.uint8), (XI + 4).astype(np.float32)),
    ("bool", XB, XB.astype(np.float32)),
    ("float16", X16, X16.astype(np.float32)),
    ("float64", X64, X64.astype(np.float32)),
    ("float64_fortran_strided", _strided(np.asfortranarray(X64), 1), X64.astype(np.float32)),
    ("list", XF.tolist(), XF),
    ("tuple", tuple(map(tuple, XF.tolist())), XF),
    ("list_of_int", XI.tolist(), XI.astype(np.float32)),
]


@pytest.mark.parametrize("variant,clean", [c[1:] for c in X_VARIANTS],
                         ids=[c[0] for c in X_VARIANTS])
def test_X_conversions_match_clean_array(variant, clean):
    keep = np.array(variant, copy=True)
    net = make_net()
    np.testing.assert_array_equal(net.forward(variant), net.forward(clean))
    np.testing.assert_array_equal(net.predict(variant), net.predict(clean))
    assert net.evaluate(variant, LABELS) == net.evaluate(clean, LABELS)
    l1, g1 = net.loss_and_grads(variant, LABELS)
    l2, g2 = net.loss_and_grads(clean, LABELS)
    assert l1 == l2
    for (a, b), (c, d) in zip(g1, g2):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    other = make_net()
    h1 = net.fit(variant, LABELS, epochs=2, batch_size=5, verbose=False,
                 validation_data=(variant, LABELS))
    h2 = other.fit(clean, LABELS, epochs=2, batch_size=5, verbose=False,
                   validation_data=(clean, LABELS))
    assert snapshot(net) == snapshot(other)
    assert h1.batch_loss == h2.batch_loss and h1.val_loss == h2.val_loss
    np.testing.assert_array_equal(np.asarray(variant), keep)     # caller's data untouched


def test_float32_input_to_float64_net_matches_clean():
    net = make_net(dtype=np.float64)
    np.testing.assert_array_equal(net.forward(XF), net.forward(XF.astype(np.float64)))
    assert nf.gradcheck(net, XF, LABELS) < 1e-6


LABEL_VARIANTS = [
    ("int32", LABELS.astype(np.int32)),
    ("uint8", LABELS.astype(np.uint8)),
    ("int8", LABELS.astype(np.int8)),
    ("float64_integral", LABELS.astype(np.float64)),
    ("float32_integral", LABELS.astype(np.float32)),
    ("list", LABELS.tolist()),
    ("strided", _strided(LABELS, 0)),
    ("readonly", _readonly(LABELS)),
    ("onehot_float32", np.eye(K, dtype=np.float32)[LABELS]),
    ("onehot_int", np.eye(K, dtype=int)[LABELS]),
    ("onehot_bool", np.eye(K, dtype=bool)[LABELS]),
    ("onehot_fortran", np.asfortranarray(np.eye(K)[LABELS])),
    ("onehot_list", np.eye(K)[LABELS].tolist()),
]


@pytest.mark.parametrize("y", [c[1] for c in LABEL_VARIANTS],
                         ids=[c[0] for c in LABEL_VARIANTS])
def test_softmax_target_forms_match_int_labels(y):
    keep = np.array(y, copy=True)
    a, b = make_net(), make_net()
    assert a.evaluate(XF, y) == a.evaluate(XF, LABELS)
    assert a.loss_and_grads(XF, y)[0] == a.loss_and_grads(XF, LABELS)[0]
    ha = a.fit(XF, y, epochs=2, batch_size=5, verbose=False)
    hb = b.fit(XF, LABELS, epochs=2, batch_size=5, verbose=False)
    assert snapshot(a) == snapshot(b) and ha.batch_loss == hb.batch_loss
    np.testing.assert_array_equal(np.asarray(y), keep)


def test_bool_labels_for_two_classes():
    lab = LABELS % 2
    a, b = make_net(k=2), make_net(k=2)
    a.fit(XF, lab.astype(bool), epochs=1, batch_size=5, verbose=False)
    b.fit(XF, lab, epochs=1, batch_size=5, verbose=False)
    assert snapshot(a) == snapshot(b)


SIG = (RNG.random((13, 2)) > 0.5)
LIN = RNG.standard_normal((13, 2))
TARGET_VARIANTS = [
    ("sigmoid", 2, SIG.astype(np.float32), SIG),
    ("sigmoid", 2, SIG.astype(np.float32), SIG.astype(np.int64)),
    ("sigmoid", 2, SIG.astype(np.float32), SIG.astype(np.float64).tolist()),
    ("sigmoid", 2, SIG.astype(np.float32), np.asfortranarray(SIG.astype(np.float64))),
    ("sigmoid", 2, SIG.astype(np.float32), _strided(SIG.astype(np.uint8), 1)),
    ("sigmoid", 1, SIG[:, :1].astype(np.float32), SIG[:, 0]),
    ("sigmoid", 1, SIG[:, :1].astype(np.float32), SIG[:, 0].astype(int).tolist()),
    ("sigmoid", 1, SIG[:, :1].astype(np.float32), SIG[:, :1].astype(np.float64)),
    ("linear", 2, LIN.astype(np.float32), LIN),
    ("linear", 2, LIN.astype(np.float32), np.asfortranarray(LIN)),
    ("linear", 2, LIN.astype(np.float32), _strided(LIN, 0)),
    ("linear", 2, LIN.astype(np.float32), LIN.astype(np.float32).tolist()),
    ("linear", 1, LIN[:, :1].astype(np.float32), LIN[:, 0]),
    ("linear", 1, LIN[:, :1].astype(np.float16).astype(np.float32),
     _readonly(LIN[:, 0].astype(np.float16))),
    ("linear", 1, (LIN[:, :1] * 3).round().astype(np.float32),
     (LIN[:, 0] * 3).round().astype(int)),
]


@pytest.mark.parametrize("output,k,clean,y", TARGET_VARIANTS,
                         ids=[f"{c[0]}{c[1]}-{i}" for i, c in enumerate(TARGET_VARIANTS)])
def test_sigmoid_linear_target_forms(output, k, clean, y):
    keep = np.array(y, copy=True)
    a, b = make_net(output, k), make_net(output, k)
    assert a.evaluate(XF, y) == a.evaluate(XF, clean)
    ha = a.fit(XF, y, epochs=2, batch_size=5, verbose=False)
    hb = b.fit(XF, clean, epochs=2, batch_size=5, verbose=False)
    assert snapshot(a) == snapshot(b) and ha.batch_loss == hb.batch_loss
    np.testing.assert_array_equal(np.asarray(y), keep)


def test_clean_arrays_are_not_modified_anywhere():
    """Already-clean float32 C-contiguous arrays are used in place: make sure nothing
    writes to them (read-only flags would raise; values compared too)."""
    X = XF.copy()
    Y = np.eye(K, dtype=np.float32)[LABELS]
    Xk, Yk = X.copy(), Y.copy()
    net = make_net()
    net.fit(X, Y, epochs=3, batch_size=4, validation_data=(X, Y), verbose=False)
    net.evaluate(X, Y)
    net.loss_and_grads(X, Y)
    net.predict(X)
    np.testing.assert_array_equal(X, Xk)
    np.testing.assert_array_equal(Y, Yk)
    X64 = XF.astype(np.float64)
    X64k = X64.copy()
    net64 = make_net(dtype=np.float64)
    nf.gradcheck(net64, X64, LABELS)
    np.testing.assert_array_equal(X64, X64k)
    net64.fit(_readonly(X64), _readonly(LABELS), epochs=1, batch_size=4, verbose=False)


def test_predicting_does_not_change_network():
    net = make_net()
    before = snapshot(net)
    net.forward(XF)
    net.predict(XF)
    net.predict_proba(XF)
    net.evaluate(XF, LABELS)
    net.loss_and_grads(XF, LABELS)
    assert snapshot(net) == before


def test_fractional_label_is_named():
    """The first non-integer label and its position are in the message."""
    y = Y0.astype(np.float64)
    y[3] = 2.5
    with pytest.raises(ValueError, match=r"got 2\.5 \(label 3\)"):
        make_net().fit(X0, y, epochs=1, verbose=False)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("order", ["C", "F"])
def test_samples_of_more_dimensions_are_flattened_for_every_dtype(dtype, order):
    """(n, 2, 2) samples of a 4-feature network are its rows flattened, whatever the
    dtype or memory order (C-contiguous uint8 was flattened, float32 refused)."""
    images = np.asarray((RNG.random((N, 2, 2)) * 3).astype(dtype), order=order)
    flat = images.reshape(N, D)
    net = make_net()
    np.testing.assert_array_equal(net.forward(images), net.forward(flat))
    np.testing.assert_array_equal(net.predict(images), net.predict(flat))
    np.testing.assert_array_equal(net.predict_proba(images), net.predict_proba(flat))
    assert net.evaluate(images, Y0) == net.evaluate(flat, Y0)
    assert net.loss_and_grads(images, Y0)[0] == net.loss_and_grads(flat, Y0)[0]
    a, b = make_net(), make_net()
    a.fit(images, Y0, epochs=2, batch_size=4, verbose=False, validation_data=(images, Y0))
    b.fit(flat, Y0, epochs=2, batch_size=4, verbose=False, validation_data=(flat, Y0))
    np.testing.assert_array_equal(a._flat_params, b._flat_params)


def test_samples_of_another_size_are_refused():
    with pytest.raises(ValueError, match=r"2-D .*\(n_samples, \.\.\.\) of 4 values.*\(6, 3, 2\)"):
        make_net().predict(np.zeros((N, 3, 2), np.float32))
