"""LayerNorm / RMSNorm backward over rows that are columns in memory.

A transposed x (Fortran order) puts each normalized row in a column of memory
and the weight along the memory rows: the column kernels take the weight
gradients per memory row inside their dx pass (or, for few features, in a pass
of their own). Checked against the float64 reference of
tests/backward_reference.py, for equal bits at every thread count and whatever
dy's order, and for sums that a float32 running sum would get wrong.
"""

import numpy as np
import pytest

import fastnorm
import backward_reference as ref

#: (rows, features): more than 128 features take the dx pass's sums; at most
#: 128, the pass of their own, whether the one walk of few memory rows serves the
#: call ((5000, 64)) or, at some thread counts only, the separate passes ((1000,
#: 100): one thread walks, two do not); odd sizes leave partial vectors at the
#: rows' ends
SHAPES = [(300, 200), (1000, 513), (70, 1030), (1000, 129), (5000, 64), (1000, 100)]


def _case(rng, shape, dtype, loc=0.5):
    x = np.asfortranarray((rng.standard_normal(shape) * 1.5 + loc).astype(dtype))
    dy = np.asfortranarray(rng.standard_normal(shape).astype(dtype))
    w = (rng.standard_normal(shape[1]) * 0.5 + 1.0).astype(dtype)
    return x, dy, w


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_against_float64_every_thread_count(rng, dtype, shape, op):
    x, dy, w = _case(rng, shape, dtype)
    x64, dy64, w64 = (a.astype(np.float64) for a in (x, dy, w))
    if op == "layer_norm":
        _, m, r = fastnorm.layer_norm(x, w, return_stats=True)
        run = lambda d, nt: fastnorm.layer_norm_backward(d, x, m, r, w, num_threads=nt)
        want = ref.layer_norm_backward(dy64, x64, m.astype(np.float64), r.astype(np.float64), w64)
    else:
        _, r = fastnorm.rms_norm(x, w, return_stats=True)
        run = lambda d, nt: fastnorm.rms_norm_backward(d, x, r, w, num_threads=nt)
        want = ref.rms_norm_backward(dy64, x64, r.astype(np.float64), w64)
    first = run(dy, 1)
    for got, exp in zip(first, want):
        if exp is not None:
            np.testing.assert_allclose(got, exp, **_tol(dtype))
    # dy C-ordered (copied into x's order first) and any thread count: same bits
    for d, nt in ((dy, 2), (dy, 3), (np.ascontiguousarray(dy), 2)):
        for got, exp in zip(run(d, nt), first):
            if exp is not None:
                np.testing.assert_array_equal(got, exp)


def test_weight_gradients_of_long_columns_are_accurate():
    """2**15 rows of 130 features: each weight gradient sums 2**15 terms. dy is
    0.1 and xhat +-1 (two values per row), so db is 2**15 * 0.1 and dw 0; a
    float32 running sum is off by about 1e-3 of db."""
    n, d = 1 << 15, 130
    x = np.zeros((n, d), np.float32, order="F")
    x[:, ::2] = 1.0
    dy = np.full((n, d), 0.1, np.float32, order="F")
    mean = np.full(n, 0.5, np.float32)
    rstd = np.full(n, 2.0, np.float32)
    _, dw, db = fastnorm.layer_norm_backward(dy, x, mean, rstd, np.ones(d, np.float32))
    np.testing.assert_allclose(db, n * np.float64(np.float32(0.1)), rtol=1e-6)
    expected_dw = np.where(np.arange(d) % 2 == 0, 1.0, -1.0) * n * np.float64(np.float32(0.1))
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-6)


def test_coefficients_beyond_float32(rng):
    """A given rstd of 1e39 (float64 statistics) for a row whose dy is 0: the
    float32 coefficients of dx are not finite, so the memory rows are taken in
    float64 (col_dx_rows_exact), weight gradients included; every output against
    float64 (that row's dx exactly 0), the same bits at 1-3 threads."""
    n, d = 400, 160
    x, dy, w = _case(rng, (n, d), np.float32)
    _, m, r = fastnorm.layer_norm(x, w, return_stats=True)
    m, r = m.astype(np.float64), r.astype(np.float64)
    r[5] = 1e39
    dy[5] = 0.0
    want = ref.layer_norm_backward(dy.astype(np.float64), x.astype(np.float64), m, r, w.astype(np.float64))
    first = None
    for nt in (1, 2, 3):
        got = fastnorm.layer_norm_backward(dy, x, m, r, w, num_threads=nt)
        assert np.all(got[0][5] == 0)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-5)
        if first is None:
            first = got
        for g, f in zip(got, first):
            np.testing.assert_array_equal(g, f)
