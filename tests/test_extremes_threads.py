"""Extreme values where the math is finite, and predictions from several threads."""
import threading

import numpy as np
import pytest

import nnfast as nf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_huge_logits_give_finite_loss_and_gradient(dtype, output):
    net = nf.Network([3, 4], output=output, dtype=dtype, seed=0)
    net.coefs[0][...] = np.array([[1e4, -1e4, 0, 1], [0, 0, 1e4, -1e4], [1, 1, 1, 1]])
    X = np.array([[1, 0, 0], [0, 1, 0], [-1, -1, 0]], dtype)
    y = np.array([1, 2, 0]) if output == "softmax" else np.eye(4)[[1, 2, 0]]
    loss, grads = net.loss_and_grads(X, y)
    assert np.isfinite(loss) and loss > 1e3              # confidently wrong: a big loss
    assert all(np.isfinite(g).all() for pair in grads for g in pair)
    assert np.isfinite(net.predict_proba(X)).all()


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_inputs_of_1e30_in_float32(hidden):
    # bounded hidden activations: the math stays finite however large the input
    net = nf.Network([4, 8, 3], hidden=hidden, seed=0)
    X = np.full((5, 4), 1e30, np.float32)
    X[::2] *= -1
    loss, grads = net.loss_and_grads(X, [0, 1, 2, 0, 1])
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() for pair in grads for g in pair)
    hist = net.fit(X, [0, 1, 2, 0, 1], epochs=3, batch_size=2, verbose=False)
    assert np.isfinite(hist.batch_loss).all() and np.isfinite(net._flat_params).all()


def test_one_sample_batches_and_a_single_class():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 4)).astype(np.float32)
    net = nf.Network([4, 5, 3], seed=0)
    hist = net.fit(X, np.zeros(7, int), epochs=5, batch_size=1, optimizer=nf.Adam(lr=0.05),
                   verbose=False)
    assert len(hist.batch_loss) == 35 and np.isfinite(hist.batch_loss).all()
    assert hist.loss[-1] < hist.loss[0]                  # learns the only class
    assert (net.predict(X) == 0).all()
    sig = nf.Network([4, 2], output="sigmoid", seed=0)   # every target 1 in every unit
    sig.fit(X, np.ones((7, 2)), epochs=20, batch_size=1, optimizer=nf.Adam(lr=0.05),
            verbose=False)
    assert (sig.predict(X) == 1).all()


def test_predict_from_many_threads_equals_serial():
    rng = np.random.default_rng(0)
    net = nf.Network([20, 64, 32, 5], seed=0)
    inputs = [rng.standard_normal((rng.integers(1, 3000), 20)).astype(np.float32)
              for _ in range(16)]
    serial = [net.predict_proba(x) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(3):
            results[i] = net.predict_proba(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_predict_while_another_thread_fits():
    # Allowed and crash-free: predictions read weights that training is changing, so
    # they come from some recent step; afterwards they match the trained network.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4000, 20)).astype(np.float32)
    y = rng.integers(0, 5, 4000)
    net = nf.Network([20, 64, 5], seed=0)
    done = threading.Event()
    seen = []

    def predict_loop():
        while not done.is_set():
            p = net.predict_proba(X[:100])
            seen.append(np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1, atol=1e-5))

    t = threading.Thread(target=predict_loop)
    t.start()
    try:
        net.fit(X, y, epochs=3, batch_size=64, verbose=False)
    finally:
        done.set()
        t.join()
    assert seen and all(seen)
    np.testing.assert_array_equal(net.predict_proba(X[:100]), net.predict_proba(X[:100]))
