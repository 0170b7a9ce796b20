"""Extreme values: NaN/inf containment, constant data, values near float32 max,
denormals, reductions longer than 2**24 elements and zero-size batches.

Policy tested here (issue 6):
- NaN and +-inf propagate only to the outputs whose statistics they enter: a
  NaN in one LayerNorm/RMSNorm row leaves every other row finite, a NaN in one
  BatchNorm channel leaves the other channels finite (forward and backward).
- A constant row/channel with eps > 0 gives exactly ``bias``.
- float32 data up to 3e38 gives finite statistics and outputs wherever the true
  (float64) result is finite, forward and backward (backward tested at 5e37).
- Denormal inputs give the float64 results (their speed is measured by
  bench/test_bench_denormals.py, not asserted here).
"""

import warnings

import numpy as np
import pytest

import fastnorm

DTYPES = [np.float32, np.float64]
BADS = [np.nan, np.inf, -np.inf]


def _ids(v):
    return repr(v)


# ---------------------------------------------------------- NaN / inf containment
ROW_SHAPES = [(6, 100), (5, 70001), (300, 7)]   # a few rows, few huge rows, many rows


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("bad", BADS, ids=_ids)
def test_layer_norm_nonfinite_stays_in_its_row(dtype, shape, bad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    x[2, 3] = bad
    L = shape[1]
    w = rng.uniform(0.5, 2, L).astype(dtype)
    b = rng.uniform(-1, 1, L).astype(dtype)
    with np.errstate(all="ignore"):
        y, mean, rstd = fastnorm.layer_norm(x, w, b, return_stats=True, num_threads=2)
    others = np.delete(np.arange(shape[0]), 2)
    assert np.isfinite(y[others]).all()
    assert np.isfinite(mean[others]).all() and np.isfinite(rstd[others]).all()
    assert not np.isfinite(y[2]).all()          # the bad row itself is not silently "fixed"
    # backward: dx of other rows finite; db (sum of dy) finite; dw NaN where row 2 enters
    dy = rng.standard_normal(shape).astype(dtype)
    with np.errstate(all="ignore"):
        dx, dw, db = fastnorm.layer_norm_backward(dy, x, mean, rstd, w, num_threads=2)
    assert np.isfinite(dx[others]).all()
    assert np.isfinite(db).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("bad", BADS, ids=_ids)
def test_rms_norm_nonfinite_stays_in_its_row(dtype, shape, bad):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    x[2, 3] = bad
    w = rng.uniform(0.5, 2, shape[1]).astype(dtype)
    with np.errstate(all="ignore"):
        y, rstd = fastnorm.rms_norm(x, w, return_stats=True, num_threads=2)
    others = np.delete(np.arange(shape[0]), 2)
    assert np.isfinite(y[others]).all() and np.isfinite(rstd[others]).all()
    assert not np.isfinite(y[2, 3])
    dy = rng.standard_normal(shape).astype(dtype)
    with np.errstate(all="ignore"):
        dx, dw = fastnorm.rms_norm_backward(dy, x, rstd, w, num_threads=2)
    assert np.isfinite(dx[others]).all()


BN_CASES = [((8, 3, 50), 1), ((500, 3), -1), ((4, 3, 130, 130), 1), ((30000, 3), -1),
            ((2, 3, 40, 40), 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,cax", BN_CASES, ids=str)
@pytest.mark.parametrize("bad", BADS, ids=_ids)
def test_batch_norm_nonfinite_stays_in_its_channel(dtype, shape, cax, bad):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    idx = [1] * len(shape)
    idx[cax] = 1
    x[tuple(idx)] = bad
    w = np.array([1.5, 0.5, 2.0], dtype)
    b = np.array([0.1, -0.2, 0.3], dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    with np.errstate(all="ignore"):
        y, mean, invstd = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                              training=True, channel_axis=cax,
                                              return_stats=True, num_threads=2)
    per_c = np.moveaxis(y, cax, 0).reshape(3, -1)
    ok = [0, 2]
    assert np.isfinite(per_c[ok]).all()
    assert np.isfinite(mean[ok]).all() and np.isfinite(invstd[ok]).all()
    assert np.isfinite(rm[ok]).all() and np.isfinite(rv[ok]).all()
    assert not np.isfinite(per_c[1]).all()
    dy = rng.standard_normal(shape).astype(dtype)
    with np.errstate(all="ignore"):
        dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, channel_axis=cax,
                                                  num_threads=2)
    dpc = np.moveaxis(dx, cax, 0).reshape(3, -1)
    assert np.isfinite(dpc[ok]).all()
    assert np.isfinite(dw[ok]).all() and np.isfinite(db).all()


@pytest.mark.parametrize("bad", BADS, ids=_ids)
def test_moments_nonfinite_stays_in_its_column(bad):
    x = np.random.default_rng(3).standard_normal((1000, 5))
    x[7, 2] = bad
    with np.errstate(all="ignore"):
        m, v = fastnorm.moments(x, axis=0)
    assert np.isfinite(m[[0, 1, 3, 4]]).all() and np.isfinite(v[[0, 1, 3, 4]]).all()
    assert not np.isfinite(v[2])


# Column statistics are summed in blocks of 64 rows, and each superblock of 1024
# rows sums its blocks after the first in double, shifted by the first block's
# means: rows 0, 63 (block 0), 64, 1023 (the rest of superblock 0), 1024, 2999.
COLUMN_ROWS = [0, 63, 64, 700, 1023, 1024, 2999]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("row", COLUMN_ROWS, ids=str)
@pytest.mark.parametrize("bad", BADS, ids=_ids)
def test_column_nonfinite_at_any_row_stays_in_its_column(bad, row, dtype):
    # 70 columns: a chunk of 64 summed in vectors, then single columns
    x = np.random.default_rng(row).standard_normal((3000, 70)).astype(dtype)
    x[row, [5, 66]] = bad
    with np.errstate(all="ignore"):
        m, v = fastnorm.moments(x, axis=0)
    good = np.setdiff1d(np.arange(70), [5, 66])
    x64 = x[:, good].astype(np.float64)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m[good], x64.mean(axis=0), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(v[good], x64.var(axis=0), rtol=rtol)
    assert not np.isfinite(v[[5, 66]]).any()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rest_scale", [1e19, 1e-22, 1e3], ids=_ids)
@pytest.mark.parametrize("first_scale", [1e19, 1e-22, 1.0], ids=_ids)
def test_column_blocks_of_different_scales(first_scale, rest_scale, dtype):
    """A superblock whose first block and other blocks differ in scale: float32
    squares that overflow (1e19) or lose their precision below the normal range
    (1e-22) in either part are taken again in double, and a first block far from
    the rest still shifts the rest well enough. Against float64, in every column
    walk: moments, BatchNorm channels-last, RMSNorm over axis 0."""
    rng = np.random.default_rng(11)
    x64 = rng.standard_normal((2500, 67)) + 0.5
    x64[:64] *= first_scale
    x64[64:] *= rest_scale
    x = x64.astype(dtype)
    xr = x.astype(np.float64)
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    mean, var = xr.mean(axis=0), xr.var(axis=0)
    if var.min() > np.finfo(dtype).tiny:    # else moments' float32 variance is denormal
        m, v = fastnorm.moments(x, axis=0)
        np.testing.assert_allclose(m, mean, rtol=rtol)
        np.testing.assert_allclose(v, var, rtol=rtol)
    y = fastnorm.batch_norm(x[None], channel_axis=-1, eps=0.0)[0]
    np.testing.assert_allclose(y, (xr - mean) / np.sqrt(var), rtol=4 * rtol, atol=4 * rtol)
    y = fastnorm.rms_norm(x, axis=0, eps=0.0)
    np.testing.assert_allclose(y, xr / np.sqrt((xr * xr).mean(axis=0)), rtol=4 * rtol,
                               atol=4 * rtol)


# ------------------------------------------------------------- constant data
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("value", [0.0, 3.7, -1e4, 1e30], ids=_ids)
@pytest.mark.parametrize("L", [1, 5, 1000, 70001], ids=str)
def test_constant_rows_give_bias(dtype, value, L):
    value = dtype(value)
    x = np.full((3, L), value, dtype)
    w = np.linspace(0.5, 2, L).astype(dtype)
    b = np.linspace(-1, 1, L).astype(dtype)
    y, mean, rstd = fastnorm.layer_norm(x, w, b, eps=1e-5, return_stats=True)
    np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape))
    assert np.isfinite(rstd).all()
    yr = fastnorm.rms_norm(np.zeros((3, L), dtype), w, eps=1e-6)
    np.testing.assert_array_equal(yr, 0)
    # backward through a constant row is finite
    dx, dw, db = fastnorm.layer_norm_backward(np.ones_like(x), x, mean, rstd, w)
    assert np.isfinite(dx).all() and np.isfinite(dw).all() and np.isfinite(db).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,cax", [((4, 3, 10, 10), 1), ((50, 3), -1), ((2, 3, 300, 120), 1)],
                         ids=str)
def test_constant_channels_give_bias(dtype, shape, cax):
    x = np.full(shape, dtype(12.5), dtype)
    b = np.array([1.0, -2.0, 3.0], dtype)
    w = np.array([2.0, 3.0, 4.0], dtype)
    y, mean, invstd = fastnorm.batch_norm(x, w, b, channel_axis=cax, eps=1e-5, return_stats=True)
    bshape = [1] * len(shape)
    bshape[cax] = 3
    np.testing.assert_array_equal(y, np.broadcast_to(b.reshape(bshape), shape))
    dx, dw, db = fastnorm.batch_norm_backward(np.ones_like(x), x, mean, invstd, w,
                                              channel_axis=cax)
    assert np.isfinite(dx).all() and np.isfinite(dw).all() and np.isfinite(db).all()


# eps = 0 is allowed (eps >= 0): a constant unit then has rstd inf and NaN outputs,
# as PyTorch's. The compiled fast paths (C-ordered x) raised ZeroDivisionError after
# writing `out` and the running statistics; the general path (strided x) warned.
EPS0_CALLS = {
    "layer_norm": lambda x: fastnorm.layer_norm(x, eps=0.0, return_stats=True)[2][0],
    "rms_norm": lambda x: fastnorm.rms_norm(x - x, eps=0.0, return_stats=True)[1][0],
    "batch_norm": lambda x: fastnorm.batch_norm(x.T.copy() if x.flags.c_contiguous else x.T, training=True,
                                                eps=0.0, return_stats=True)[2][0],
    "group_norm": lambda x: fastnorm.group_norm(x[:, :, None], 1, eps=0.0, return_stats=True)[2][0],
    "instance_norm": lambda x: fastnorm.instance_norm(x[None], eps=0.0, return_stats=True)[2][0, 0],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("strided", [False, True], ids=["c_order", "strided"])
@pytest.mark.parametrize("op", list(EPS0_CALLS))
def test_eps_zero_constant_unit_gives_inf_rstd(op, strided, dtype):
    x = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 5.0]], dtype)
    if strided:
        x = np.repeat(x, 2, axis=1)[:, ::2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rstd = EPS0_CALLS[op](x)
    assert np.isposinf(rstd)


def test_eps_zero_fast_path_writes_consistent_results():
    x = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    out = np.full_like(x, -7.0)
    y, mean, rstd = fastnorm.layer_norm(x, eps=0.0, return_stats=True, out=out)
    assert y is out and np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], [-1.5 ** 0.5, 0.0, 1.5 ** 0.5], rtol=1e-15)
    np.testing.assert_array_equal(rstd, [np.inf, 1.5 ** 0.5])
    rm, rv = np.zeros(3), np.ones(3)
    fastnorm.batch_norm(np.ones((4, 3)), running_mean=rm, running_var=rv, training=True, eps=0.0,
                        return_stats=True)
    np.testing.assert_array_equal(rm, 0.1)
    np.testing.assert_array_equal(rv, 0.9)


# In place over more channels than one cut of the few-rows column walk (1024): a
# channel whose coefficient is not finite (running variance + eps 0, or a
# constant channel with eps 0) stays in its channel. The walk had written the
# other cuts of the slab and then normalized the whole slab again from x, which
# in place held outputs already: half the other channels came out normalized
# twice.
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", ["inference", "training", "instance_norm"])
@pytest.mark.parametrize("bad", [0, 1500], ids=lambda c: f"channel{c}")
def test_in_place_nonfinite_coefficient_stays_in_its_channel(case, bad, threads, dtype):
    rng = np.random.default_rng(bad)
    N, C = (64, 2048) if case == "training" else (2, 2048)
    x = rng.standard_normal((N, C)).astype(dtype)
    rm, rv = np.full(C, 0.5, dtype), np.full(C, 4.0, dtype)
    if case == "training":
        x[:, bad] = 3.0
        call = lambda a, **kw: fastnorm.batch_norm(a, training=True, eps=0.0, num_threads=threads, **kw)
    elif case == "inference":
        rv[bad] = 0.0
        call = lambda a, **kw: fastnorm.batch_norm(a, running_mean=rm, running_var=rv, training=False, eps=0.0,
                                                   num_threads=threads, **kw)
    else:
        x = x[:, None, :]
        rv[bad] = 0.0
        call = lambda a, **kw: fastnorm.instance_norm(a, running_mean=rm, running_var=rv, training=False,
                                                      eps=0.0, channel_axis=-1, num_threads=threads, **kw)
    with np.errstate(all="ignore"):
        expected = call(x)
        inplace = x.copy()
        got = call(inplace, out=inplace)
        x64 = x.astype(np.float64)
        ref = (x64 - x64.mean(0)) / x64.std(0) if case == "training" else (x64 - 0.5) / 2.0
    assert got is inplace
    keep = np.arange(C) != bad
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[..., keep], ref[..., keep], rtol=tol, atol=tol)
    np.testing.assert_array_equal(got, expected)
    assert not np.isfinite(got[..., bad]).any()


# ------------------------------------------------------------ near float32 max
def _ref_ln(x):
    x = x.astype(np.float64)
    m = x.mean(-1, keepdims=True)
    return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("scale", [1e30, 1e34, 1e36, 1e37], ids=_ids)
@pytest.mark.parametrize("L", [8, 256, 4096], ids=str)
def test_huge_float32_layer_norm_finite(scale, L):
    """Values up to ~3e38 (|x| <= 3.4e38): true y is finite and O(1), so must be ours."""
    rng = np.random.default_rng(4)
    x = np.clip(rng.standard_normal((4, L)) * scale, -3.4e38, 3.4e38).astype(np.float32)
    with np.errstate(all="ignore"):
        y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    assert np.isfinite(mean).all(), mean
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(-1), rtol=1e-5,
                               atol=1e-6 * scale)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, _ref_ln(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("L", [128, 4096], ids=str)
def test_moments_of_plus_minus_3e38_is_finite(L):
    x = np.tile(np.float32([3e38, -3e38]), L // 2)[None]
    with np.errstate(all="ignore"):
        m, v = fastnorm.moments(x, axis=1)
    assert m[0] == 0.0                    # exact: float64 accumulation of +-3e38
    # (the variance 9e76 overflows float32 legitimately)


@pytest.mark.parametrize("scale", [3e37, 1e38], ids=_ids)
def test_layer_norm_near_float32_max_mixed_signs(scale):
    rng = np.random.default_rng(5)
    x = np.clip(rng.standard_normal((4, 1000)) * scale, -3.4e38, 3.4e38).astype(np.float32)
    with np.errstate(all="ignore"):
        y = fastnorm.layer_norm(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, _ref_ln(x), rtol=1e-4, atol=1e-4)


def test_layer_norm_x_minus_mean_does_not_overflow():
    x = np.float32([[3e38, -3e38, 3e38, 3e38, 3e38, 3e38, 3e38, 3e38]])
    with np.errstate(all="ignore"):
        y = fastnorm.layer_norm(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, _ref_ln(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1e30, 1e36, 1e37], ids=_ids)
def test_huge_float32_rms_and_batch_norm_finite(scale):
    rng = np.random.default_rng(6)
    x = np.clip(rng.standard_normal((2000, 3)) * scale, -3.4e38, 3.4e38).astype(np.float32)
    with np.errstate(all="ignore"):
        y, rstd = fastnorm.rms_norm(x.T.copy(), return_stats=True)
    assert np.isfinite(y).all() and np.isfinite(rstd).all() and (rstd > 0).all()
    x64 = x.T.astype(np.float64)
    np.testing.assert_allclose(y, x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True)), rtol=1e-4,
                               atol=1e-5)
    with np.errstate(all="ignore"):
        yb, mean, invstd = fastnorm.batch_norm(x, channel_axis=-1, return_stats=True)
    assert np.isfinite(yb).all() and np.isfinite(mean).all() and (invstd > 0).all()


def test_rms_norm_near_float32_max():
    rng = np.random.default_rng(6)
    x = np.clip(rng.standard_normal((3, 2000)) * 1e38, -3.4e38, 3.4e38).astype(np.float32)
    with np.errstate(all="ignore"):
        y, rstd = fastnorm.rms_norm(x, return_stats=True)
    x64 = x.astype(np.float64)
    assert np.isfinite(y).all() and np.isfinite(rstd).all()
    np.testing.assert_allclose(y, x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True)), rtol=1e-4,
                               atol=1e-5)


def test_batch_norm_near_float32_max_mixed_signs():
    rng = np.random.default_rng(6)
    x = np.clip(rng.standard_normal((2000, 3)) * 1e38, -3.4e38, 3.4e38).astype(np.float32)
    with np.errstate(all="ignore"):
        y, mean, invstd = fastnorm.batch_norm(x, channel_axis=-1, return_stats=True)
    x64 = x.astype(np.float64)
    assert np.isfinite(mean).all()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, (x64 - x64.mean(0)) / x64.std(0), rtol=1e-4, atol=1e-4)


def test_constant_near_float32_max():
    x = np.full((2, 64), 3.4e38, np.float32)
    with np.errstate(all="ignore"):
        y, mean, rstd = fastnorm.layer_norm(x, return_stats=True)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_array_equal(mean, np.float32(3.4e38))


# Backward passes of float32 data of scale 5e37: the float32 lane sums of x - mean
# and dy * (x - mean) leave float32's range, and until 2026-12-01 dx, dw and db
# came out inf or NaN (in every case below) where the exact values are finite
# (dx near 1e-38). The float32 results must match the same call in float64.
BIG_BACKWARD = {
    "layer_norm rows": ((64, 256), "ln"), "layer_norm long rows": ((3, 4096), "ln"),
    "rms_norm rows": ((64, 256), "rms"), "rms_norm one row": ((1, 64), "rms"),
    "batch_norm NCHW": ((8, 4, 32, 32), "bn1"), "batch_norm 7x7 planes": ((4, 6, 7, 7), "bn1"),
    "batch_norm short segments": ((300, 7, 2), "bn1"), "batch_norm 2-D": ((4096, 6), "bn-1"),
    "batch_norm NHWC": ((4, 7, 7, 16), "bn-1"), "group_norm NCHW": ((2, 8, 9, 9), "gn1"),
    "group_norm NHWC": ((2, 9, 9, 8), "gn-1"), "instance_norm": ((2, 3, 4096), "in1"),
}


def _big_backward(kind, x, dy):
    """(dx, dw[, db]) of `kind` on x, dy (either dtype), statistics from the forward."""
    C = x.shape[-1] if kind in ("ln", "rms") or kind.endswith("-1") else x.shape[1]
    w = np.linspace(0.5, 2.0, C).astype(x.dtype)
    with np.errstate(all="ignore"):
        if kind == "ln":
            _, m, r = fastnorm.layer_norm(x, w, return_stats=True)
            return fastnorm.layer_norm_backward(dy, x, m, r, w)
        if kind == "rms":
            _, r = fastnorm.rms_norm(x, w, return_stats=True)
            return fastnorm.rms_norm_backward(dy, x, r, w)
        ax = -1 if kind.endswith("-1") else 1
        if kind.startswith("bn"):
            _, m, r = fastnorm.batch_norm(x, w, training=True, channel_axis=ax, return_stats=True)
            return fastnorm.batch_norm_backward(dy, x, m, r, w, channel_axis=ax)
        if kind.startswith("gn"):
            _, m, r = fastnorm.group_norm(x, 4, w, channel_axis=ax, return_stats=True)
            return fastnorm.group_norm_backward(dy, x, 4, m, r, w, channel_axis=ax)
        _, m, r = fastnorm.instance_norm(x, w, channel_axis=ax, return_stats=True)
        return fastnorm.instance_norm_backward(dy, x, m, r, w, channel_axis=ax)


@pytest.mark.parametrize("case", list(BIG_BACKWARD))
def test_backward_of_large_float32_is_finite(case):
    shape, kind = BIG_BACKWARD[case]
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 5e37).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    got = _big_backward(kind, x, dy)
    want = _big_backward(kind, x.astype(np.float64), dy.astype(np.float64))
    for g, r in zip(got, want):
        if r is None:
            continue
        assert np.isfinite(g).all()
        scale = np.abs(r).max()
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * scale)


# ---------------------------------------------------------------- denormals
# How much slower denormal inputs run is measured in bench/test_bench_denormals.py
# (speed is never asserted here); this checks what they compute.
def _denormal_rows(dtype, tiny):
    rng = np.random.default_rng(7)
    normal = rng.standard_normal((16, 1024)).astype(dtype)
    den = (normal * tiny).astype(dtype)
    assert (np.abs(den[den != 0]) < np.finfo(dtype).tiny).all()
    return den


@pytest.mark.parametrize("dtype,tiny", [(np.float32, 1e-40), (np.float64, 1e-310)],
                         ids=["float32", "float64"])
def test_denormal_inputs_give_the_float64_results(dtype, tiny):
    x = _denormal_rows(dtype, tiny)
    x64 = x.astype(np.float64)
    fin = np.finfo(dtype)
    # float32 denormal rows are normalized in float64: with eps=0 y is O(1) and
    # right (the scale of x does not matter to y). float64 denormal data has a
    # variance below float64's range, so eps sets the scale there.
    eps = 0.0 if dtype == np.float32 else 1e-5
    with np.errstate(all="ignore"):
        y = fastnorm.layer_norm(x, eps=eps)
        yr = fastnorm.rms_norm(x, eps=eps)
        yb = fastnorm.batch_norm(x.reshape(16, 64, 16), eps=eps)
        mean, var = fastnorm.moments(x, axis=-1)
        dx = fastnorm.layer_norm_backward(x, x, np.zeros(16), np.ones(16))[0]
    for a in (y, yr, yb, mean, var, dx):
        assert np.isfinite(a).all()
    if dtype == np.float32:
        scaled = x64 / tiny   # the same rows at a normal scale, exactly
        ref = (scaled - scaled.mean(-1, keepdims=True)) / scaled.std(-1, keepdims=True)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(yr, scaled / np.sqrt((scaled ** 2).mean(-1, keepdims=True)),
                                   rtol=1e-4, atol=1e-4)
    else:
        ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(eps)
        np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-318)
    # statistics and the backward against float64 NumPy, to the dtype's
    # denormal spacing (a denormal holds fewer digits than a normal number)
    np.testing.assert_allclose(mean, x64.mean(-1), rtol=1e-6, atol=16 * fin.smallest_subnormal)
    # dy = x, rstd = 1 given, the mean corrected to x's own (training)
    xh = x64 - x64.mean(-1, keepdims=True)
    ref_dx = x64 - x64.mean(-1, keepdims=True) - xh * (x64 * xh).mean(-1, keepdims=True)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-3, atol=64 * fin.smallest_subnormal)


def test_tiny_float32_rows_normalize_correctly_with_eps0():
    """float32 data of magnitude ~1e-36: the variance (~1e-72) fits the float64
    accumulators and rstd (~1e36) fits float32, so y is finite and O(1).
    (In float64 the analogous variance ~1e-612 is not representable at all.)"""
    dtype = np.float32
    tiny = np.finfo(dtype).tiny
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((4, 512)) * tiny * 64).astype(dtype)
    y = fastnorm.layer_norm(x, eps=0.0)
    ref = _ref_ln(x.astype(np.float64) / tiny)  # scale-free: same normalized values
    np.testing.assert_allclose(y, ref, rtol=1e-3 if dtype == np.float64 else 5e-2,
                               atol=1e-3 if dtype == np.float64 else 5e-2)


# ------------------------------------------------- reductions longer than 2**24
BIG = 2 ** 24 + 1001


@pytest.fixture(scope="module")
def long_row():
    rng = np.random.default_rng(9)
    return (rng.standard_normal(BIG, dtype=np.float32) * 2 + 1000).astype(np.float32)


def test_moments_longer_than_2_24(long_row):
    x64 = long_row.astype(np.float64)
    m, v = fastnorm.moments(long_row, num_threads=2)
    np.testing.assert_allclose(m, x64.mean(), rtol=1e-6)
    np.testing.assert_allclose(v, x64.var(), rtol=1e-5)


def test_layer_norm_row_longer_than_2_24(long_row):
    x = long_row[None]
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True, num_threads=2)
    x64 = long_row.astype(np.float64)
    np.testing.assert_allclose(mean[0], x64.mean(), rtol=1e-6)
    np.testing.assert_allclose(rstd[0], 1 / np.sqrt(x64.var() + 1e-5), rtol=1e-5)
    sl = slice(0, None, 4099)
    np.testing.assert_allclose(y[0, sl], (x64[sl] - x64.mean()) / np.sqrt(x64.var() + 1e-5),
                               rtol=1e-4, atol=1e-4)
    yr, r = fastnorm.rms_norm(x, return_stats=True, num_threads=2)
    np.testing.assert_allclose(r[0], 1 / np.sqrt((x64 ** 2).mean() + np.finfo(np.float32).eps),
                               rtol=1e-5)


def test_batch_norm_channel_longer_than_2_24(long_row):
    x = long_row[: (BIG // 2) * 2].reshape(-1, 2)    # channels-last, 2**23+ per channel
    x = np.concatenate([x, x[:2 ** 23 + 10]])        # > 2**24 per channel
    y, mean, invstd = fastnorm.batch_norm(x, channel_axis=-1, return_stats=True, num_threads=2)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x64.var(0) + 1e-5), rtol=1e-5)
    dx, dw, db = fastnorm.batch_norm_backward(np.ones_like(x), x, mean, invstd, np.ones(2, np.float32),
                                              channel_axis=-1, num_threads=2)
    # db = sum(dy) = count exactly representable only with a wide accumulator
    np.testing.assert_array_equal(db, np.float32(x.shape[0]))
    del y, dx


# -------------------------------------------------------------- zero-size
ZERO_ROW = [((0, 5), -1), ((0, 3, 4), -1), ((2, 0, 4), -1), ((0, 3, 4), (1, 2)), ((0, 4), 0)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", ZERO_ROW, ids=str)
def test_zero_size_rowwise(dtype, shape, axis):
    x = np.zeros(shape, dtype)
    y, mean, rstd = fastnorm.layer_norm(x, axis=axis, return_stats=True)
    assert y.shape == shape and y.dtype == dtype
    out = np.zeros(shape, dtype)
    assert fastnorm.layer_norm(x, axis=axis, out=out) is out
    yr, r = fastnorm.rms_norm(x, axis=axis, return_stats=True)
    assert yr.shape == shape and yr.dtype == dtype
    dx, dw, db = fastnorm.layer_norm_backward(x, x, mean, rstd, axis=axis)
    assert dx.shape == shape
    dx, dw = fastnorm.rms_norm_backward(x, x, r, axis=axis)
    assert dx.shape == shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_size_batch_norm(dtype):
    x = np.zeros((0, 3, 4), dtype)
    rm = np.full(3, 0.5, dtype)
    rv = np.full(3, 2.0, dtype)
    y = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True)
    assert y.shape == x.shape and y.dtype == dtype
    # an empty batch carries no statistics: the running statistics are left alone
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)
    y = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=False)
    assert y.shape == x.shape
    dx, dw, db = fastnorm.batch_norm_backward(x, x, np.zeros(3), np.ones(3), np.ones(3, dtype))
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)
    m, v = fastnorm.moments(x, axis=(0, 2))
    assert m.shape == (3,)
    # layers
    bn = fastnorm.BatchNorm(3, dtype=dtype)
    assert bn(x).shape == x.shape and bn.num_batches_tracked == 0
    assert fastnorm.LayerNorm(4, dtype=dtype)(x).shape == x.shape
    assert fastnorm.RMSNorm(4, dtype=dtype)(x).shape == x.shape
