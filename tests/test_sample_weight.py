"""Sample weights in fit and evaluate: the compiled weighted loss against its NumPy twin,
training against the NumPy reference, the meaning of a weight (2 = the row twice, 0 = no
row), skipped all-zero batches, validation weights and bad weights (MPI: tests/test_mpi.py)."""
import numpy as np
import pytest

import nnfast as nf
from nnfast import _kernels as K
from nnfast import reference as R

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
OUTPUTS = {"softmax": K.LOSS_SOFTMAX_XENT, "sigmoid": K.LOSS_SIGMOID_BCE,
           "linear": K.LOSS_SQUARED_ERROR}


def _data(output, n=60, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    if output == "softmax":
        y = rng.integers(0, n_out, n)
    elif output == "sigmoid":
        y = (rng.random((n, n_out)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((n, n_out))
    return X, y


def _targets(y, output, n_out, dtype):
    if output == "softmax":
        return np.eye(n_out, dtype=dtype)[y]
    return np.asarray(y, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("n", [1, 7, 64])
def test_weighted_loss_kernel_matches_its_twin(output, dtype, n):
    rng = np.random.default_rng(n)
    z = (rng.standard_normal((n, 4)) * 3).astype(dtype)
    y = _targets(_data(output, n=n, n_out=4)[1], output, 4, dtype)
    w = rng.uniform(0, 2, n).astype(dtype)
    w[0] = 0
    dz, dz_ref = np.empty_like(z), np.empty_like(z)
    loss = K.weighted_loss_backward(dz, z, y, w, OUTPUTS[output])
    loss_ref = R.weighted_loss_backward(dz_ref, z, y, w, OUTPUTS[output])
    np.testing.assert_allclose(loss, loss_ref, rtol=RTOL[dtype])
    np.testing.assert_allclose(dz, dz_ref, rtol=RTOL[dtype], atol=RTOL[dtype])
    assert not dz[0].any()                          # weight 0: no gradient
    # unit weights give the unweighted kernel's gradient exactly
    ones = np.ones(n, dtype)
    dz_plain = np.empty_like(z)
    plain = {"softmax": K.softmax_xent_backward, "sigmoid": K.sigmoid_bce_backward,
             "linear": K.squared_error_backward}[output](dz_plain, z, y)
    np.testing.assert_allclose(K.weighted_loss_backward(dz, z, y, ones, OUTPUTS[output]),
                               plain, rtol=RTOL[dtype])
    np.testing.assert_array_equal(dz, dz_plain)


def test_weighted_loss_kernel_checks_shapes():
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match="w has 2 entries"):
        K.weighted_loss_backward(np.empty_like(z), z, z, np.ones(2), 0)
    with pytest.raises(ValueError, match="unknown loss code"):
        K.weighted_loss_backward(np.empty_like(z), z, z, np.ones(3), 7)


@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("optimizer", [lambda: nf.Adam(lr=1e-2),
                                       lambda: nf.SGD(lr=0.05, momentum=0.9)],
                         ids=["adam", "sgd"])
def test_weighted_training_matches_the_numpy_reference(output, optimizer):
    X, y = _data(output, n=70)
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 4, 70)
    w[:10] = 0                                      # the first batch in order: skipped
    net = nf.Network([5, 8, 3], hidden="tanh", output=output, dtype=np.float64, seed=2)
    ref = R.ReferenceNetwork.from_network(net)
    opt = optimizer()
    hist = net.fit(X, y, epochs=3, batch_size=10, optimizer=opt, shuffle=False,
                   verbose=False, sample_weight=w)
    ref_opt = R.reference_optimizer(opt)
    Y = _targets(y, output, 3, np.float64)
    scaled = w / w.max()                            # as nnfast scales them
    losses = [ref.train_epoch(X, Y, np.arange(70), 10, ref_opt, scaled) for _ in range(3)]
    np.testing.assert_allclose(net._flat_params, ref.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-10)
    assert opt.t == ref_opt.t == 3 * 6              # 6 of 7 batches per epoch
    assert len(hist.batch_loss) == 18


@pytest.mark.parametrize("output", list(OUTPUTS))
def test_weight_two_is_the_row_twice_and_zero_is_no_row(output):
    """One full batch: the weighted loss is the mean over the repeated rows."""
    X, y = _data(output, n=40)
    w = np.ones(40)
    w[0], w[1], w[5] = 2, 0, 3
    keep = [0, 0] + [i for i in range(40) if i not in (0, 1)] + [5, 5]
    a = nf.Network([5, 8, 3], output=output, dtype=np.float64, seed=1)
    b = nf.Network([5, 8, 3], output=output, dtype=np.float64, seed=1)
    ha = a.fit(X, y, epochs=4, batch_size=64, shuffle=False, verbose=False,
               optimizer=nf.SGD(lr=0.1), sample_weight=w)
    hb = b.fit(X[keep], y[keep], epochs=4, batch_size=64, shuffle=False, verbose=False,
               optimizer=nf.SGD(lr=0.1))
    np.testing.assert_allclose(a._flat_params, b._flat_params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)
    ea, eb = a.evaluate(X, y, sample_weight=w), a.evaluate(X[keep], y[keep])
    assert ea.keys() == eb.keys()
    for key in ea:
        np.testing.assert_allclose(ea[key], eb[key], rtol=1e-12)


def test_weights_times_a_constant_train_identically():
    X, y = _data("softmax")
    w = np.random.default_rng(0).uniform(0.1, 2, 60)
    nets = []
    for scale in (1.0, 4.0, 1e-3):
        net = nf.Network([5, 8, 3], seed=0)
        net.fit(X, y, epochs=2, batch_size=16, verbose=False, sample_weight=w * scale)
        nets.append(net._flat_params)
    np.testing.assert_array_equal(nets[0], nets[1])      # a power of 2: exactly
    np.testing.assert_allclose(nets[0], nets[2], rtol=1e-5, atol=1e-6)


def test_unit_weights_train_as_no_weights():
    X, y = _data("softmax")
    a, b = nf.Network([5, 8, 3], seed=0), nf.Network([5, 8, 3], seed=0)
    ha = a.fit(X, y, epochs=2, batch_size=16, verbose=False)
    hb = b.fit(X, y, epochs=2, batch_size=16, verbose=False, sample_weight=np.ones(60))
    np.testing.assert_array_equal(a._flat_params, b._flat_params)
    np.testing.assert_allclose(ha.batch_loss, hb.batch_loss, rtol=1e-6)


def test_an_all_zero_batch_changes_nothing():
    X, y = _data("softmax", n=20)
    w = np.ones(20)
    w[:10] = 0
    net = nf.Network([5, 8, 3], seed=0)
    opt = nf.Adam()
    before = net._flat_params.copy()
    # batch 1 of 2 has only zero weights: one step per epoch
    hist = net.fit(X, y, epochs=2, batch_size=10, shuffle=False, verbose=False,
                   optimizer=opt, sample_weight=w)
    assert opt.t == 2 and len(hist.batch_loss) == 2
    other = nf.Network([5, 8, 3], seed=0)
    other.fit(X[10:], y[10:], epochs=2, batch_size=10, shuffle=False, verbose=False)
    np.testing.assert_array_equal(net._flat_params, other._flat_params)
    assert not np.array_equal(before, net._flat_params)


def test_validation_weights():
    X, y = _data("softmax", n=100)
    w = np.random.default_rng(0).uniform(0, 2, 100)
    net = nf.Network([5, 8, 3], seed=0)
    hist = net.fit(X, y, epochs=2, verbose=False, sample_weight=w, validation_split=0.2)
    held = net.evaluate(X[80:], y[80:], sample_weight=w[80:])
    np.testing.assert_allclose(hist.val_loss[-1], held["loss"], rtol=1e-6)
    np.testing.assert_allclose(hist.val_accuracy[-1], held["accuracy"], rtol=1e-6)
    hist = net.fit(X[:80], y[:80], epochs=1, verbose=False,
                   validation_data=(X[80:], y[80:], w[80:]))
    np.testing.assert_allclose(hist.val_loss[-1],
                               net.evaluate(X[80:], y[80:], sample_weight=w[80:])["loss"],
                               rtol=1e-6)


def test_weighted_accuracy():
    X, y = _data("softmax", n=50)
    net = nf.Network([5, 8, 3], seed=0)
    right = net.predict(X) == y
    w = np.arange(50, dtype=float)
    assert net.evaluate(X, y, sample_weight=w)["accuracy"] == pytest.approx(
        w[right].sum() / w.sum())


BAD = [(lambda n: np.ones(n - 1), ValueError, "shape \\(60,\\)"),
       (lambda n: np.ones((n, 1)), ValueError, "1-D"),
       (lambda n: np.r_[-1.0, np.ones(n - 1)], ValueError, ">= 0, got -1 for sample 0"),
       (lambda n: np.r_[np.nan, np.ones(n - 1)], ValueError, "NaN or inf"),
       (lambda n: np.r_[np.inf, np.ones(n - 1)], ValueError, "NaN or inf"),
       (lambda n: np.zeros(n), ValueError, "zero for every sample"),
       (lambda n: np.array(["a"] * n), TypeError, "numbers"),
       (lambda n: [1.0] * (n - 2) + [[1.0], 2.0], ValueError, "rectangular")]


@pytest.mark.parametrize("make,error,message", BAD)
def test_bad_weights_raise_and_change_nothing(make, error, message):
    X, y = _data("softmax")
    net = nf.Network([5, 8, 3], seed=0)
    before = net._flat_params.copy()
    with pytest.raises(error, match=message):
        net.fit(X, y, epochs=1, verbose=False, sample_weight=make(60))
    with pytest.raises(error, match=message):
        net.evaluate(X, y, sample_weight=make(60))
    np.testing.assert_array_equal(net._flat_params, before)


def test_weights_zero_on_the_training_part_of_a_split_are_refused():
    X, y = _data("softmax", n=50)
    w = np.r_[np.zeros(40), np.ones(10)]
    with pytest.raises(ValueError, match="training samples left by validation_split"):
        nf.Network([5, 8, 3]).fit(X, y, verbose=False, sample_weight=w,
                                  validation_split=0.2)
