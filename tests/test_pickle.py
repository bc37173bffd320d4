"""Networks and optimizers survive pickle (copy, joblib, multiprocessing): a pickled
(network, optimizer) pair continues training exactly where the original does."""
import copy
import pickle

import numpy as np
import pytest

import nnfast as nf


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((120, 6)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


@pytest.mark.parametrize("make", [lambda: nf.Adam(lr=1e-2), lambda: nf.SGD(lr=0.05, momentum=0.9)])
def test_pickled_network_and_optimizer_continue_identically(make):
    X, y = _data()
    net = nf.Network([6, 10, 8, 2], hidden=["tanh", "relu"], dropout=[0.2, 0.0], seed=3,
                     input_scale=0.5)
    opt = make()
    net.fit(X, y, epochs=1, batch_size=16, optimizer=opt, verbose=False)
    net2, opt2 = pickle.loads(pickle.dumps((net, opt)))
    assert repr(net2) == repr(net) and opt2.t == opt.t
    assert np.array_equal(net2.predict_proba(X), net.predict_proba(X))
    net.fit(X, y, epochs=2, batch_size=16, optimizer=opt, verbose=False)
    net2.fit(X, y, epochs=2, batch_size=16, optimizer=opt2, verbose=False)
    assert np.array_equal(net._flat_params, net2._flat_params)   # shuffles, masks, moments


def test_copies_are_independent():
    X, y = _data()
    net = nf.Network([6, 4, 2], seed=0)
    clone = copy.deepcopy(net)
    clone.fit(X, y, epochs=1, verbose=False)
    assert not np.array_equal(clone._flat_params, net._flat_params)
    assert clone.params[0][0].base is not None               # views of its own buffer


def test_unpickled_optimizer_starts_fresh_on_another_network():
    X, y = _data()
    opt = nf.Adam(lr=1e-2)
    nf.Network([6, 4, 2]).fit(X, y, epochs=1, optimizer=opt, verbose=False)
    opt2 = pickle.loads(pickle.dumps(opt))
    other = nf.Network([6, 5, 2])                            # another shape: fresh state
    other.fit(X, y, epochs=1, optimizer=opt2, verbose=False)
    assert opt2.t == -(-120 // 128)
