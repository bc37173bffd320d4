"""The catalogue of hostile input: every case must raise ValueError or TypeError whose
message names the argument, what was expected and what was given, and leave the network
bit-identical. Each case runs once in this process and once in a subprocess of its own,
so that a crash (the compiled core runs without bounds checks) cannot pass unseen."""
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

SETUP = textwrap.dedent("""
    import contextlib, gzip, io, os, struct, tempfile
    import numpy as np
    import nnfast as nf
    from nnfast import cli, datasets

    rng = np.random.default_rng(0)
    net = nf.Network([4, 3, 2], seed=0)
    lin = nf.Network([4, 3, 2], output="linear", seed=0)
    sig = nf.Network([4, 3, 2], output="sigmoid", seed=0)
    X = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])
    tmp = tempfile.mkdtemp()

    def write(name, data):
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def bad(a, i, v):
        a = np.array(a, dtype=float)
        a.flat[i] = v
        return a

    def cli_run(args):
        # the command line's contract, as an exception: exit 2 and one line on stderr
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                rc = cli.main(args)
            except SystemExit as exc:
                rc = exc.code
        if rc == 2 and "Traceback" not in err.getvalue():
            raise ValueError(err.getvalue().strip().splitlines()[-1])
        raise AssertionError(f"exit {rc}: {err.getvalue()}")

    model = os.path.join(tmp, "m.npz")
    net.save(model)
    idx = struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 5) + bytes(5)
""")

# (name, code, exception, message pattern): the pattern names the argument and the
# expectation; most also show the value that was given.
CASES = [
    # Network(...)
    ("sizes_one_entry", "nf.Network([784])", ValueError, r"sizes needs at least 2"),
    ("sizes_zero_layer", "nf.Network([4, 0, 2])", ValueError, r"sizes\[1\] must be >= 1, got 0"),
    ("sizes_absurd", "nf.Network([10**12, 10])", ValueError, r"10000000000010 parameters"),
    ("sizes_string", "nf.Network('784,10')", TypeError, r"sizes must be a sequence of ints"),
    ("sizes_float", "nf.Network([4.5, 2])", TypeError, r"sizes\[0\] must be an int, got float"),
    ("sizes_bool", "nf.Network([True, 2])", TypeError, r"sizes\[0\] must be an int, got bool"),
    ("hidden_unknown", "nf.Network([4, 3, 2], hidden='sigmoidal')", ValueError,
     r"unknown hidden activation 'sigmoidal'; expected one of"),
    ("hidden_count", "nf.Network([4, 3, 3, 2], hidden=['relu'])", ValueError,
     r"hidden must be one name or 2 names .*got 1"),
    ("hidden_type", "nf.Network([4, 3, 2], hidden=3)", TypeError, r"hidden must be a name"),
    ("output_unknown", "nf.Network([4, 2], output='softplus')", ValueError,
     r"unknown output 'softplus'"),
    ("softmax_one_unit", "nf.Network([4, 1])", ValueError, r"softmax output needs at least 2"),
    ("dtype_int", "nf.Network([4, 2], dtype=np.int32)", ValueError,
     r"dtype must be np.float32 or np.float64, got int32"),
    ("dtype_half", "nf.Network([4, 2], dtype='float16')", ValueError, r"got float16"),
    ("seed_negative", "nf.Network([4, 2], seed=-1)", TypeError, r"seed must be .*got -1"),
    ("dropout_one", "nf.Network([4, 3, 2], dropout=1.0)", ValueError,
     r"dropout rates must be in \[0, 1\), got 1.0"),
    ("dropout_nan", "nf.Network([4, 3, 2], dropout=float('nan'))", ValueError,
     r"dropout rates must be in \[0, 1\), got nan"),
    ("dropout_string", "nf.Network([4, 3, 2], dropout='0.5')", TypeError,
     r"dropout must be a number in \[0, 1\).*got '0.5'"),
    ("dropout_count", "nf.Network([4, 3, 3, 2], dropout=[0.1])", ValueError,
     r"dropout must be one rate or 2 rates .*got 1"),
    ("dropout_seed_negative", "net.loss_and_grads(X, y, dropout_seed=-1)", ValueError,
     r"dropout_seed must be >= 0, got -1"),
    # fit: X
    ("X_1d", "net.fit(X[0], y[:1], verbose=False)", ValueError, r"X must be 2-D .*shape \(4,\)"),
    ("X_features", "net.fit(X[:, :3], y, verbose=False)", ValueError,
     r"X has 3 features, the network expects 4"),
    ("X_empty", "net.fit(X[:0], y[:0], verbose=False)", ValueError, r"X is empty"),
    ("X_nan", "net.fit(bad(X, 5, np.nan), y, verbose=False)", ValueError, r"X contains NaN"),
    ("X_inf", "net.fit(bad(X, 0, -np.inf), y, verbose=False)", ValueError, r"X contains NaN or inf"),
    ("X_overflows_float32", "net.fit(bad(X, 0, 1e300), y, verbose=False)", ValueError,
     r"X contains .*too large for float32"),
    ("X_object", "net.fit(X.astype(object), y, verbose=False)", TypeError,
     r"X must hold numbers .*got dtype object"),
    ("X_str", "net.fit(X.astype(str), y, verbose=False)", TypeError, r"X must hold numbers .*<U"),
    ("X_bytes", "net.fit(X.astype('S8'), y, verbose=False)", TypeError, r"X must hold numbers .*S8"),
    ("X_complex", "net.fit(X + 1j, y, verbose=False)", TypeError, r"X must hold numbers .*complex"),
    ("X_datetime", "net.fit(np.zeros((6, 4), 'datetime64[s]'), y, verbose=False)", TypeError,
     r"X must hold numbers .*datetime64"),
    ("X_ragged", "net.fit([[1, 2, 3, 4], [1, 2]], [0, 1], verbose=False)", ValueError,
     r"X could not be read as a rectangular array"),
    ("X_none", "net.fit(None, y, verbose=False)", TypeError, r"X must be an array of numbers"),
    # fit: y
    ("y_length", "net.fit(X, y[:5], verbose=False)", ValueError, r"y has 5 rows but X has 6"),
    ("y_label_high", "net.fit(X, y * 10, verbose=False)", ValueError,
     r"class labels must be in \[0, 2\) .*got values in \[0, 10\]"),
    ("y_label_negative", "net.fit(X, y - 1, verbose=False)", ValueError,
     r"class labels must be in \[0, 2\) .*\[-1, 0\]"),
    ("y_label_fraction", "net.fit(X, y + 0.5, verbose=False)", ValueError,
     r"class labels must be integers"),
    ("y_nan", "net.fit(X, bad(y, 2, np.nan), verbose=False)", ValueError, r"y contains NaN"),
    ("y_onehot_sum", "net.fit(X, np.full((6, 2), 0.7), verbose=False)", ValueError,
     r"one-hot rows must sum to 1, row 0 sums to 1.4"),
    ("y_3d", "net.fit(X, np.zeros((6, 2, 1)), verbose=False)", ValueError,
     r"y must be 1-D or 2-D, got shape \(6, 2, 1\)"),
    ("y_object", "net.fit(X, y.astype(object), verbose=False)", TypeError,
     r"y must hold numbers .*object"),
    ("y_sigmoid_range", "sig.fit(X, np.full((6, 2), 2.0), verbose=False)", ValueError,
     r"targets of a sigmoid output must lie in \[0, 1\], got values in \[2, 2\]"),
    ("y_linear_shape", "lin.fit(X, np.zeros((6, 3)), verbose=False)", ValueError,
     r"y for a linear output must have shape \(6, 2\), got shape \(6, 3\)"),
    # fit: options
    ("batch_zero", "net.fit(X, y, batch_size=0, verbose=False)", ValueError,
     r"batch_size must be >= 1, got 0"),
    ("batch_float", "net.fit(X, y, batch_size=2.5, verbose=False)", TypeError,
     r"batch_size must be an int, got float"),
    ("epochs_zero", "net.fit(X, y, epochs=0, verbose=False)", ValueError,
     r"epochs must be >= 1, got 0"),
    ("optimizer_name", "net.fit(X, y, optimizer='rmsprop', verbose=False)", ValueError,
     r"optimizer must be one of \['adam', 'sgd'\].*'rmsprop'"),
    ("optimizer_type", "net.fit(X, y, optimizer=3, verbose=False)", TypeError,
     r"optimizer must be a name .*got int"),
    ("adam_lr_negative", "nf.Adam(lr=-1)", ValueError, r"Adam: lr must be in \(0, inf\], got -1.0"),
    ("adam_lr_nan", "nf.Adam(lr=float('nan'))", ValueError, r"Adam: lr must be .*got nan"),
    ("adam_beta_one", "nf.Adam(beta1=1.0)", ValueError, r"beta1 must be in \[0, 1\), got 1.0"),
    ("sgd_momentum", "nf.SGD(momentum=1.5)", ValueError, r"momentum must be in \[0, 1\), got 1.5"),
    ("sgd_nesterov", "nf.SGD(nesterov=True)", ValueError, r"nesterov=True needs momentum > 0"),
    ("validation_single", "net.fit(X, y, validation_data=(X,), verbose=False)", ValueError,
     r"validation_data must be a pair \(X_val, y_val\)"),
    ("validation_nan", "net.fit(X, y, validation_data=(bad(X, 1, np.nan), y), verbose=False)",
     ValueError, r"X_val contains NaN"),
    ("shuffle_string", "net.fit(X, y, shuffle='yes', verbose=False)", TypeError,
     r"shuffle must be a bool, got str"),
    # predict / evaluate / loss_and_grads / gradcheck
    ("predict_features", "net.predict(np.zeros((2, 5)))", ValueError,
     r"X has 5 features, the network expects 4"),
    ("predict_proba_linear", "lin.predict_proba(X)", ValueError,
     r"predict_proba needs a softmax or sigmoid output"),
    ("evaluate_labels", "net.evaluate(X, y + 2)", ValueError, r"class labels must be in \[0, 2\)"),
    ("sample_weight_length", "net.fit(X, y, sample_weight=np.ones(5))", ValueError,
     r"sample_weight must be 1-D with one weight per sample, shape \(6,\), got shape \(5,\)"),
    ("sample_weight_negative", "net.fit(X, y, sample_weight=bad(np.ones(6), 2, -0.5))",
     ValueError, r"sample_weight must be >= 0, got -0.5 for sample 2"),
    ("sample_weight_nan", "net.evaluate(X, y, sample_weight=bad(np.ones(6), 0, np.nan))",
     ValueError, r"sample_weight contains NaN or inf"),
    ("sample_weight_zero", "net.fit(X, y, sample_weight=np.zeros(6))", ValueError,
     r"sample_weight is zero for every sample"),
    ("sample_weight_str", "net.fit(X, y, sample_weight=['a'] * 6)", TypeError,
     r"sample_weight must hold numbers"),
    ("class_weight_label", "from nnfast.sklearn import NNClassifier; "
     "NNClassifier(class_weight={7: 2.0}).fit(X, y)", ValueError,
     r"class_weight has labels \[7\] that are not classes"),
    ("class_weight_negative", "from nnfast.sklearn import NNClassifier; "
     "NNClassifier(class_weight={0: -2.0}).fit(X, y)", ValueError,
     r"class_weight\[0\] must be in \[0, inf\], got -2.0"),
    ("class_weight_name", "from nnfast.sklearn import NNClassifier; "
     "NNClassifier(class_weight='even').fit(X, y)", ValueError,
     r"class_weight must be None, 'balanced' or a dict"),
    ("loss_and_grads_inf", "net.loss_and_grads(bad(X, 3, np.inf), y)", ValueError,
     r"X contains NaN or inf"),
    ("gradcheck_eps", "nf.gradcheck(net, X, y, eps=-1e-6)", ValueError,
     r"eps must be a positive finite number, got -1e-06"),
    ("threads_zero", "nf.set_num_threads(0)", ValueError, r"n must be in \[1, 4096\], got 0"),
    ("threads_string", "nf.set_num_threads('2')", TypeError, r"n must be an int >= 1, got str"),
    # load
    ("load_missing", "nf.load(os.path.join(tmp, 'nothing.npz'))", FileNotFoundError,
     r"nothing.npz does not exist"),
    ("load_npy", "np.save(os.path.join(tmp, 'a.npy'), np.zeros(3)); "
     "nf.load(os.path.join(tmp, 'a.npy'))", ValueError, r"a single array, not an nnfast model"),
    ("load_garbage", "nf.load(write('g.npz', b'PK' + bytes(100)))", ValueError,
     r"g.npz is not an nnfast model file"),
    ("load_truncated", "nf.load(write('t.npz', open(model, 'rb').read()[:300]))", ValueError,
     r"t.npz is not an nnfast model file"),
    ("load_pickle", "np.savez(os.path.join(tmp, 'p.npz'), params=np.array([print], object)); "
     "nf.load(os.path.join(tmp, 'p.npz'))", ValueError,
     r"p.npz is not an nnfast model file \(.*pickled data(?!.*allow_pickle)"),
    ("load_text", "nf.load(write('text.npz', b'hello, not a model'))", ValueError,
     r"text.npz is not an nnfast model file \(not a readable .npz archive[^=]*\)$"),
    # load_idx
    ("idx_magic", "datasets.load_idx(write('m.idx', b'\\x01\\x00\\x08\\x01' + bytes(8)))",
     ValueError, r"is not an IDX file \(bad magic number"),
    ("idx_dtype", "datasets.load_idx(write('d.idx', b'\\x00\\x00\\x07\\x01' + bytes(8)))",
     ValueError, r"unknown IDX dtype code 0x07"),
    ("idx_truncated", "datasets.load_idx(write('t.idx', idx[:-2]))", ValueError,
     r"header declares shape \(5,\) \(5 bytes of data\) but the file holds only 3"),
    ("idx_huge", "datasets.load_idx(write('h.idx', b'\\x00\\x00\\x08\\x02' + "
     "struct.pack('>II', 2**31, 2**31)))", ValueError, r"header declares shape"),
    # command line
    ("cli_data_missing", "cli_run(['train', '--data', os.path.join(tmp, 'none'), "
     "'--epochs', '1'])", ValueError, r"nnfast train: error: .*not found; looked in"),
    ("cli_epochs", "cli_run(['train', '--epochs', '0'])", ValueError,
     r"argument --epochs: expected a positive integer, got '0'"),
    ("cli_hidden", "cli_run(['train', '--hidden', 'a,b'])", ValueError,
     r"argument --hidden: expected comma-separated integers"),
]
IDS = [c[0] for c in CASES]


def test_catalogue_is_large_and_distinct():
    assert len(CASES) >= 40
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("name,code,exc,match", CASES, ids=IDS)
def test_hostile_case(name, code, exc, match):
    ns = {}
    exec(SETUP, ns)
    before = {k: ns[k]._flat_params.copy() for k in ("net", "lin", "sig")}
    with pytest.raises(exc, match=match):
        exec(code, ns)
    for k, params in before.items():                 # nothing changed the networks
        np.testing.assert_array_equal(ns[k]._flat_params, params)


RUNNER = SETUP + textwrap.dedent("""
    import sys
    before = net._flat_params.copy()
    try:
        exec(sys.argv[1])
    except (ValueError, TypeError, FileNotFoundError):    # the last: a missing file
        sys.exit(0 if np.array_equal(before, net._flat_params) else 4)
    sys.exit(3)
""")


def test_every_case_in_a_subprocess_of_its_own():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    procs = {}
    results = {}
    pending = list(CASES)
    while pending or procs:                         # two at a time: this machine's cores
        while pending and len(procs) < 2:
            name, code, _, _ = pending.pop()
            procs[name] = subprocess.Popen([sys.executable, "-c", RUNNER, code], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           cwd=tempfile.gettempdir())   # not the source tree
        time.sleep(0.01)
        for name, proc in list(procs.items()):
            if proc.poll() is not None:
                results[name] = (proc.returncode, proc.stderr.read().decode()[-300:])
                del procs[name]
    failed = {k: v for k, v in results.items() if v[0] != 0}
    shown = dict(list(failed.items())[:5])
    assert not failed, (f"{len(failed)} cases crashed or did not raise; the first (exit code, "
                        f"stderr): {shown}")
