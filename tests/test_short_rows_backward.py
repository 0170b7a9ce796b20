"""LayerNorm and RMSNorm backward over rows of at most 128 bytes with a weight:
the rows' sums are taken 32 rows at a time (seg_bwd_rows_grouped in
src_c/bwd_template.h, FN_BWD_GROUPED_MAX_BYTES in src_c/fn_internal.h), where
longer rows take each row's sums inside the dx loop of the row before. Each
row's dx must be the bits of the same row's backward in a call of its own (one
row walks neither), the parameter gradients the same at one and two threads,
and everything the float64 formula within float rounding.
"""

import numpy as np
import pytest

import fastnorm

ROWS = 1000 + 5


def _case(dtype, D, seed=11):
    rng = np.random.default_rng(seed + D)
    x = (rng.standard_normal((ROWS, D)) * 2 + 3).astype(dtype)
    x[7] = 1.25                                   # a constant row
    dy = rng.standard_normal((ROWS, D)).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    return x, dy, w


def _ln_backward_ref(dy, x, w):
    x64, dy64, w64 = (a.astype(np.float64) for a in (x, dy, w))
    m = x64.mean(axis=1, keepdims=True)
    r = 1.0 / np.sqrt(x64.var(axis=1, keepdims=True) + 1e-5)
    xh = (x64 - m) * r
    g = dy64 * w64
    dx = r * (g - g.mean(axis=1, keepdims=True) - xh * (g * xh).mean(axis=1, keepdims=True))
    return dx, (dy64 * xh).sum(axis=0), dy64.sum(axis=0)


@pytest.mark.parametrize("D", [1, 2, 4, 7, 8, 16, 31, 32, 63])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_backward_short_rows(dtype, D):
    x, dy, w = _case(dtype, D)
    _, mean, rstd = fastnorm.layer_norm(x, w, return_stats=True, eps=1e-5)
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, mean, rstd, w, num_threads=2)
    dx1, dw1, db1 = fastnorm.layer_norm_backward(dy, x, mean, rstd, w, num_threads=1)
    np.testing.assert_array_equal(dx, dx1)
    np.testing.assert_array_equal(dw, dw1)
    np.testing.assert_array_equal(db, db1)
    for r in (0, 7, 31, 32, 500, ROWS - 1):
        alone = fastnorm.layer_norm_backward(dy[r:r + 1], x[r:r + 1], mean[r:r + 1], rstd[r:r + 1], w)[0]
        np.testing.assert_array_equal(dx[r:r + 1], alone)
    rdx, rdw, rdb = _ln_backward_ref(dy, x, w)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    # dx's rounding scales with rstd * |dy * w| (rows of one value: dx is 0 and
    # rstd = 1 / sqrt(eps) carries x - mean's rounding)
    scale = (rstd[:, None] * np.abs(dy.astype(np.float64) * w)).max()
    np.testing.assert_allclose(dx, rdx, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(dw, rdw, rtol=tol, atol=tol * np.abs(rdw).max())
    np.testing.assert_allclose(db, rdb, rtol=tol, atol=tol * np.abs(rdb).max())


@pytest.mark.parametrize("D", [4, 8, 32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rms_norm_backward_short_rows(dtype, D):
    x, dy, w = _case(dtype, D)
    x64, dy64, w64 = (a.astype(np.float64) for a in (x, dy, w))
    rstd = 1.0 / np.sqrt((x64 * x64).mean(axis=1) + 1e-5)
    dx, dw = fastnorm.rms_norm_backward(dy, x, rstd, w, num_threads=2)
    for r in (0, 7, 33, ROWS - 1):
        alone = fastnorm.rms_norm_backward(dy[r:r + 1], x[r:r + 1], rstd[r:r + 1], w)[0]
        np.testing.assert_array_equal(dx[r:r + 1], alone)
    xh = x64 * rstd[:, None]
    g = dy64 * w64
    rdx = rstd[:, None] * (g - xh * (g * xh).mean(axis=1, keepdims=True))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(dx, rdx, rtol=tol, atol=tol * np.abs(rdx).max())
    np.testing.assert_allclose(dw, (dy64 * xh).sum(axis=0), rtol=tol, atol=tol * np.abs(dw).max())
