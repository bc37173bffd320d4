"""float32 against float64 training, and the memory fit needs beyond its data."""
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import nnfast as nf


@pytest.mark.parametrize("make", [lambda: nf.SGD(lr=0.05, momentum=0.9),
                                  lambda: nf.Adam(lr=1e-3)], ids=["sgd_momentum", "adam"])
def test_float32_and_float64_training_agree_over_100_steps(make):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((640, 20))
    y = rng.integers(0, 5, 640)
    n32 = nf.Network([20, 32, 16, 5], dtype=np.float32, seed=0)
    n64 = nf.Network([20, 32, 16, 5], dtype=np.float64, seed=0)
    n64._flat_params[...] = n32._flat_params               # the same starting point
    h32 = n32.fit(X, y, epochs=20, batch_size=128, optimizer=make(), verbose=False)
    h64 = n64.fit(X, y, epochs=20, batch_size=128, optimizer=make(), verbose=False)
    assert len(h32.batch_loss) == 100
    np.testing.assert_allclose(h32.batch_loss, h64.batch_loss, rtol=1e-5)
    scale = np.abs(n64._flat_params).max()
    # measured: 3-4e-7 of the largest parameter after 100 steps
    assert np.abs(n32._flat_params - n64._flat_params).max() < 1e-5 * scale
    assert np.abs(h64.batch_loss[-1] - h64.batch_loss[0]) > 0.01   # it did train


SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import nnfast as nf

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def peak_mb():      # VmHWM: this process's own peak (ru_maxrss survives exec: the
        with open("/proc/self/status") as f:          # parent's peak would show)
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60000, 784))           # float64: fit converts it to float32
    y = rng.integers(0, 10, 60000)
    net = nf.Network([784, 256, 128, 10], dtype=np.float32, seed=0)
    before = rss_mb()
    peak_before = peak_mb()
    net.fit(X, y, epochs=1, batch_size=512, verbose=False)
    peak = peak_mb()
    print(before, peak_before, peak)
""")


def test_fit_needs_at_most_the_data_in_its_dtype_plus_64_mb():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, cwd=tempfile.gettempdir())   # not the source tree
    assert proc.returncode == 0, proc.stderr
    before, peak_before, peak = map(float, proc.stdout.split())
    assert peak_before < before + 16          # no earlier peak hides fit's
    converted = 60000 * 784 * 4 / 2**20       # X in float32: 179 MiB
    assert peak - before < converted + 64, (before, peak)
