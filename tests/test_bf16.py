"""The bfloat16 matrix product (csrc/_bf16.h): rounding, accuracy against a float64
reference of the rounded inputs, and the same bits on every path this CPU runs (the
portable C path runs everywhere, so every machine compares its fastest path with it)."""
import numpy as np
import pytest

from nnfast import _kernels as K

PATHS = K.bf16_paths()


def bf16(x):
    """x rounded to bfloat16 (as float32), by the library's rounding."""
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.size, np.float32)
    K.bf16_round(out, x.ravel())
    return out.reshape(x.shape)


def reference_bf16(x):
    """Round to nearest even on the top 16 bits, written independently with NumPy."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    return rounded.view(np.float32)


def product(m, n, k, trans_a, trans_b, alpha=1.0, path=None, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((k, m) if trans_a else (m, k)) * scale).astype(np.float32)
    b = (rng.standard_normal((n, k) if trans_b else (k, n)) * scale).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    K.gemm_bf16(c, a, b, trans_a, trans_b, alpha, path)
    return a, b, c


def test_paths_include_the_portable_one_and_the_best():
    assert PATHS[0] == "generic"
    assert set(PATHS) <= set(K.BF16_PATHS)
    assert K.bf16_best_path() == PATHS[-1]


def test_rounding_is_nearest_even():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(20000) * 10.0 ** rng.uniform(-30, 30, 20000)).astype(np.float32)
    np.testing.assert_array_equal(bf16(x).view(np.uint32), reference_bf16(x).view(np.uint32))
    one = np.float32(1.0)
    step = np.float32(2.0 ** -7)                 # bfloat16's spacing at 1
    ties = np.array([one + step / 2, one + 3 * step / 2, -(one + step / 2)], np.float32)
    np.testing.assert_array_equal(bf16(ties), [1.0, 1.0 + 2 * step, -1.0])   # to even
    assert bf16(np.array([one + step / 2 + 2.0 ** -20], np.float32))[0] == one + step


def test_rounding_of_special_values():
    big = np.finfo(np.float32).max
    x = np.array([np.inf, -np.inf, big, -big, 0.0, -0.0, np.nan], np.float32)
    out = bf16(x)
    assert out[0] == np.inf and out[1] == -np.inf
    assert out[2] == np.inf and out[3] == -np.inf     # past bfloat16's largest: overflow
    assert out[4] == 0 and not np.signbit(out[4]) and np.signbit(out[5])
    assert np.isnan(out[6])
    nans = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7FFFFFFF], np.uint32).view(np.float32)
    assert np.isnan(bf16(nans)).all()                # a NaN never rounds to infinity


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", [(128, 256, 784), (37, 45, 301), (1, 1, 1), (9, 40, 2),
                                   (65, 33, 513), (8, 32, 16)])
def test_accuracy_against_float64_of_the_rounded_inputs(shape, trans_a, trans_b):
    m, n, k = shape
    a, b, c = product(m, n, k, trans_a, trans_b, alpha=0.25)
    op_a = bf16(a).astype(np.float64)
    op_b = bf16(b).astype(np.float64)
    ref = 0.25 * ((op_a.T if trans_a else op_a) @ (op_b.T if trans_b else op_b))
    # float32 sums of k exact products: |error| <= k * eps32 * sum |terms|
    bound = 0.25 * k * np.finfo(np.float32).eps * (
        np.abs(op_a.T if trans_a else op_a) @ np.abs(op_b.T if trans_b else op_b))
    assert np.all(np.abs(c - ref) <= bound + 1e-30)
    # and far from what float32 inputs give: the inputs really are rounded
    if k >= 300:
        exact = 0.25 * ((a.T if trans_a else a).astype(np.float64)
                        @ (b.T if trans_b else b).astype(np.float64))
        assert np.max(np.abs(c - exact)) > 100 * np.max(np.abs(c - ref))


@pytest.mark.parametrize("shape", [(128, 256, 784), (37, 45, 301), (70, 33, 513),
                                   (3, 100, 1), (200, 10, 128)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_every_path_gives_the_same_bits(shape, trans_a, trans_b):
    m, n, k = shape
    results = {p: product(m, n, k, trans_a, trans_b, 0.5, p, seed=3)[2] for p in PATHS}
    for path, c in results.items():
        np.testing.assert_array_equal(c.view(np.uint32), results["generic"].view(np.uint32),
                                      err_msg=f"path {path}")


@pytest.mark.parametrize("trans_a", [False, True])
def test_the_stack_path_gives_the_same_bits(trans_a):
    """Without scratch memory the product is computed in pieces of k on the stack."""
    previous = K._bf16_pieces_only(True)
    try:
        pieces = {p: product(150, 70, 700, trans_a, False, 0.5, p, seed=4)[2] for p in PATHS}
    finally:
        K._bf16_pieces_only(previous)
    whole = product(150, 70, 700, trans_a, False, 0.5, PATHS[-1], seed=4)[2]
    for path, c in pieces.items():
        np.testing.assert_array_equal(c.view(np.uint32), whole.view(np.uint32),
                                      err_msg=f"path {path}")


def test_tiny_values_flush_to_zero_on_every_path():
    """Products below float32's smallest normal are flushed (as VDPBF16PS always does);
    every path agrees."""
    results = {p: product(16, 32, 64, False, False, 1.0, p, seed=5, scale=1e-20)[2]
               for p in PATHS}
    assert np.all(results["generic"] == 0)
    for path, c in results.items():
        np.testing.assert_array_equal(c.view(np.uint32), results["generic"].view(np.uint32))


def test_a_row_does_not_depend_on_the_rows_beside_it():
    a, b, c = product(100, 50, 300, False, False, seed=6)
    for rows in (slice(0, 1), slice(3, 11), slice(64, 100)):
        part = np.empty((rows.stop - rows.start, 50), np.float32)
        K.gemm_bf16(part, np.ascontiguousarray(a[rows]), b)
        np.testing.assert_array_equal(part, c[rows])


def test_empty_inner_dimension_gives_zeros():
    c = np.full((3, 4), np.nan, np.float32)
    K.gemm_bf16(c, np.empty((3, 0), np.float32), np.empty((0, 4), np.float32))
    np.testing.assert_array_equal(c, 0)


def test_bad_arguments():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.gemm_bf16(np.empty((3, 4), np.float32), a, b)
    with pytest.raises(ValueError, match="path must be one of"):
        K.gemm_bf16(np.empty((3, 5), np.float32), a, b, path="amx-fast")
    with pytest.raises(ValueError, match="entries"):
        K.bf16_round(np.empty(2, np.float32), np.ones(3, np.float32))
    missing = [p for p in K.BF16_PATHS if p not in PATHS]
    if missing:
        with pytest.raises(ValueError, match="does not run"):
            K.gemm_bf16(np.empty((3, 5), np.float32), a, b, path=missing[0])


def reference_pack(x):
    """What a product reads of x: a float32 denormal as zero of its sign, then
    reference_bf16 (VCVTNE2PS2BF16's result, measured on all 2^32 floats on Zen 4)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    u = np.where(u & 0x7F800000 == 0, u & 0x80000000, u).astype(np.uint32)
    return reference_bf16(u.view(np.float32))


def hard_values(n, seed):
    """Float32 values that test a rounding: every exponent (denormals too), exact ties,
    values just past a tie, and the largest that stay finite in bfloat16 (an infinity
    times the identity's zeros would be NaN)."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    bits[: n // 4] = (bits[: n // 4] & 0xFFFF0000) | 0x8000               # ties
    bits[n // 4: n // 2] = (bits[n // 4: n // 2] & 0xFFFF0000) | 0x8001   # past a tie
    bits[n // 2: n // 2 + 64] &= 0x807FFFFF                               # denormals
    bits[n // 2: n // 2 + 4] = [0x007FFFFF, 0x807F8000, 0x007F8001, 0x00000001]  # round up
    big = slice(n // 2 + 64, n // 2 + 80)                                 # near the largest
    bits[big] = (bits[big] & 0x80007FFF) | 0x7F7F0000
    too_big = bits & 0x7FFFFFFF >= 0x7F7F8000                             # would round to inf
    bits = np.where(too_big, bits & 0x807FFFFF, bits)
    return bits.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("side", ["a", "b"])
@pytest.mark.parametrize("trans", [False, True])
def test_each_packing_reads_what_the_rounding_says(path, side, trans):
    """c = op(a) @ op(b) with one operand the identity on k reads back each entry of the
    other as the product packed it, for each operand in each layout (the AVX512-BF16
    path packs with VCVTNE2PS2BF16 / VCVTNEPS2BF16, the others in integers)."""
    m, k = 40, 8                      # k = 8: pairs of k in full and a panel of 8 rows
    x = hard_values(m * k, seed=7).reshape(m, k)
    eye = np.eye(k, dtype=np.float32)
    c = np.empty((m, k), np.float32) if side == "a" else np.empty((k, m), np.float32)
    if side == "a":                   # c = op(a) @ I, op(a) = x
        K.gemm_bf16(c, np.ascontiguousarray(x.T) if trans else x, eye, trans, False, 1, path)
        want = reference_pack(x)
    else:                             # c = I @ op(b), op(b) = x.T
        K.gemm_bf16(c, eye, x if trans else np.ascontiguousarray(x.T), False, trans, 1, path)
        want = reference_pack(x).T
    np.testing.assert_array_equal(c, want)


def test_denormal_inputs_are_zero_on_every_path():
    """0x007fffff would round up to bfloat16's smallest normal; it is a denormal, so every
    product takes it as zero: times 2^100 it gives 0, not 1.18e-38 * 2^100."""
    tiny = np.array([0x007FFFFF, 0x807FFFFF, 0x00400000, 0x00000001], np.uint32).view(np.float32)
    a = np.resize(tiny, (9, 40)).astype(np.float32)
    b = np.full((40, 33), 2.0 ** 100, np.float32)
    for path in PATHS:
        for trans_a in (False, True):
            c = np.full((9, 33), np.nan, np.float32)
            K.gemm_bf16(c, np.ascontiguousarray(a.T) if trans_a else a, b, trans_a, False,
                        1, path)
            np.testing.assert_array_equal(c, 0, err_msg=f"path {path}, trans_a {trans_a}")
