#!/usr/bin/env bash
# Memory safety of the compiled core, three ways:
#  1. AddressSanitizer + UndefinedBehaviorSanitizer: build a copy of the tree with
#     -fsanitize=address,undefined and run the kernel, step and network tests under it.
#  2. valgrind memcheck of a short training run (the normal build).
#  3. ThreadSanitizer: the thread team's stress test (tools/pool_stress.c), outside Python.
# Usage: tools/sanitize.sh [asan|valgrind|tsan|all]   (default all). Needs gcc, valgrind,
# and the build/test requirements in the active environment (pip install ".[test]").
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-all}
# the interpreter itself: `python` may be a wrapper script (pyenv), which valgrind would
# trace instead of Python
py=$(python -c 'import sys; print(sys.executable)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$what" = asan ] || [ "$what" = all ]; then
    echo "== ASan + UBSan build"
    cp -r "$here/csrc" "$here/nnfast" "$here/tests" "$here/setup.py" "$here/pyproject.toml" "$work/"
    rm -f "$work"/nnfast/*.so
    (cd "$work" && CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
        LDFLAGS="-fsanitize=address,undefined" python setup.py -q build_ext --inplace >/dev/null)
    asan=$(gcc -print-file-name=libasan.so)
    ubsan=$(gcc -print-file-name=libubsan.so)
    echo "== tests under ASan + UBSan"
    # Python's own allocations are not ours to judge: no leak checking.
    (cd "$work" && LD_PRELOAD="$asan $ubsan" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        python -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_step.py \
            tests/test_network.py tests/test_optim.py tests/test_gradcheck.py \
            tests/test_hostile.py tests/test_dropout.py tests/test_out_of_core.py \
            tests/test_progress.py tests/test_pickle.py tests/test_sample_weight.py \
            tests/test_batch_invariance.py tests/test_sparse.py tests/test_bf16.py \
            -k "not subprocess and not larger_than_its_memory_limit")
fi

if [ "$what" = tsan ] || [ "$what" = all ]; then
    echo "== ThreadSanitizer: the thread team's stress test"
    gcc -O1 -g -fsanitize=thread -pthread -I "$here/csrc" "$here/tools/pool_stress.c" \
        -o "$work/pool_stress"
    TSAN_OPTIONS=halt_on_error=1:exitcode=66 "$work/pool_stress" 1000 3
fi

if [ "$what" = valgrind ] || [ "$what" = all ]; then
    echo "== valgrind memcheck: a short training run"
    # CPython itself reports a few uninitialised reads under valgrind (at import and at
    # exit); only error blocks whose stack passes through nnfast's modules count.
    log="$work/valgrind.log"
    mkdir -p "$work/vg"        # not $work: the sanitizer build lies there; use the installed one
    (cd "$work/vg" && PYTHONMALLOC=malloc OPENBLAS_NUM_THREADS=2 \
        valgrind --tool=memcheck --errors-for-leak-kinds=none --log-file="$log" \
            "$py" - <<'PY'
import numpy as np
import nnfast as nf
rng = np.random.default_rng(0)
X = rng.standard_normal((300, 20)).astype(np.float32)
y = rng.integers(0, 4, 300)
for hidden, output, dtype in (("relu", "softmax", np.float32), ("tanh", "sigmoid", np.float64)):
    net = nf.Network([20, 16, 8, 4], hidden=hidden, output=output, dtype=dtype, seed=0)
    target = y if output == "softmax" else np.eye(4)[y]
    net.fit(X, target, epochs=2, batch_size=32, verbose=False)
    net.fit(X, target, epochs=1, batch_size=7, optimizer=nf.SGD(lr=0.1, momentum=0.9), verbose=False)
    opt = nf.Adam(weight_decay=0.01)
    net.fit(X, target, epochs=1, batch_size=32, optimizer=opt, verbose=False)
    net._workspace.step.update(opt.t + 1, opt._rule(), 2)      # data-parallel update, 2 threads
    net.fit(X, target, epochs=1, batch_size=32, sample_weight=rng.uniform(0, 2, 300), verbose=False)
    import scipy.sparse
    S = scipy.sparse.random(300, 20, density=0.2, format="csr", random_state=0, dtype=np.float64)
    net.fit(S, target, epochs=1, batch_size=32, verbose=False)          # the CSR first layer
    assert np.isfinite(net.predict_proba(S)).all()
    assert np.isfinite(net.predict_proba(X)).all()
    nf.gradcheck(nf.Network([5, 4, 3], hidden=hidden, output=output, dtype=np.float64),
                 X[:7, :5].astype(np.float64), target[:7, :3] if output == "sigmoid" else y[:7] % 3)
    drop = nf.Network([20, 16, 8, 4], hidden=hidden, output=output, dtype=dtype, dropout=0.3)
    pixels = rng.integers(0, 256, (300, 20), dtype=np.uint8)     # converted per batch
    drop.fit(pixels, target, epochs=1, batch_size=32, verbose=False)
    assert np.isfinite(drop.predict_proba(pixels)).all()
print("valgrind run finished")
PY
    )
    total=$(grep -cE '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and)' "$log" || true)
    ours=$(awk '/^==[0-9]+== $/ { if (block ~ /_kernels|_step|_optim|nnfast/) n++; block = ""; next }
                { block = block "\n" $0 }
                END { if (block ~ /_kernels|_step|_optim|nnfast/) n++; print n + 0 }' "$log")
    echo "valgrind: $total error reports in all, $ours with nnfast code on the stack"
    if [ "$ours" -ne 0 ]; then
        cat "$log"
        exit 1
    fi
fi
echo "sanitize: clean"
