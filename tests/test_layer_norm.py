"""fastnorm.layer_norm against the float64 reference."""

import numpy as np
import pytest

import fastnorm
from reference import (
    OUT_MODES,
    _norm_axes,
    layer_norm as ref_layer_norm,
    make_layout,
    make_out,
    naive_layer_norm_f32,
    tol,
)


def param_shape(shape, axis):
    return tuple(shape[a] for a in _norm_axes(axis, len(shape)))


def stat_shape(shape, axis):
    axes = _norm_axes(axis, len(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def make_params(rng, shape, axis, affine, dtype):
    ps = param_shape(shape, axis)
    w = b = None
    if affine in ("weight", "both"):
        w = (rng.standard_normal(ps) * 0.5 + 1).astype(dtype)
    if affine in ("bias", "both"):
        b = rng.standard_normal(ps).astype(dtype)
    return w, b


def run_and_check(x, w, b, axis, eps=1e-5, out_mode=None, return_stats=False,
                  num_threads=None, scale=1.0):
    dtype = x.dtype
    x_orig = x.copy()
    w_orig = None if w is None else w.copy()
    b_orig = None if b is None else b.copy()
    ry, rmean, rrstd = ref_layer_norm(x_orig, w, b, axis=axis, eps=eps)
    out, check_guard = make_out(x, out_mode)
    kw = {}
    if out is not None:
        kw["out"] = out
    res = fastnorm.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=return_stats,
                              num_threads=num_threads, **kw)
    if return_stats:
        assert isinstance(res, tuple) and len(res) == 3
        y, mean, rstd = res
    else:
        y = res
    assert isinstance(y, np.ndarray)
    assert y.shape == x.shape
    assert y.dtype == dtype
    if out is not None:
        assert y is out
    check_guard()
    if out_mode != "inplace":
        np.testing.assert_array_equal(x, x_orig)  # input never modified
    if w is not None:
        np.testing.assert_array_equal(w, w_orig)
    if b is not None:
        np.testing.assert_array_equal(b, b_orig)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=rtol, atol=atol * scale)
    if return_stats:
        ss = stat_shape(x.shape, axis)
        assert np.shape(mean) == ss and np.shape(rstd) == ss
        assert np.asarray(mean).dtype == dtype and np.asarray(rstd).dtype == dtype
        np.testing.assert_allclose(np.asarray(mean, np.float64), rmean, rtol=rtol,
                                   atol=atol)
        np.testing.assert_allclose(np.asarray(rstd, np.float64), rrstd, rtol=rtol,
                                   atol=atol)
    return res


SHAPE_AXES = [
    ((1,), -1),
    ((7,), 0),
    ((1000,), -1),
    ((17, 33), -1),
    ((17, 33), 0),
    ((5, 1), -1),
    ((4, 6, 17), (1, 2)),
    ((4, 6, 17), 1),
    ((2, 6, 4, 5), 1),          # ConvNeXt channels-first LayerNorm on NCHW
    ((2, 6, 4, 5), (1, 2)),
    ((2, 6, 4, 5), (0, 2)),
    ((2, 6, 4, 5), (-1, -2, -3)),
    ((2, 6, 4, 5), (3, 1)),     # unsorted tuple: params in increasing axis order
    ((2, 3, 2, 3, 7), (1, 3)),
    ((2, 3, 2, 3, 7), -1),
    ((2, 3, 2, 3, 7), (0, 1, 2, 3, 4)),
]


@pytest.mark.parametrize("shape,axis", SHAPE_AXES, ids=str)
@pytest.mark.parametrize("affine", ["none", "weight", "both"])
def test_layer_norm_values(shape, axis, affine, dtype, layout, rng):
    x = make_layout((rng.standard_normal(shape) * 2 + 0.5).astype(dtype), layout)
    w, b = make_params(rng, shape, axis, affine, dtype)
    run_and_check(x, w, b, axis)


@pytest.mark.parametrize("shape,axis", [((17, 33), -1), ((2, 6, 4, 5), 1),
                                        ((2, 6, 4, 5), (0, 2)), ((9,), 0)], ids=str)
@pytest.mark.parametrize("out_mode", OUT_MODES)
@pytest.mark.parametrize("return_stats", [False, True])
@pytest.mark.parametrize("layout", ["C", "F", "negative", "permuted"])
def test_layer_norm_out_and_stats(shape, axis, out_mode, return_stats, layout, dtype,
                                  rng, num_threads):
    x = make_layout((rng.standard_normal(shape) * 2 - 1).astype(dtype), layout)
    w, b = make_params(rng, shape, axis, "both", dtype)
    run_and_check(x, w, b, axis, out_mode=out_mode, return_stats=return_stats,
                  num_threads=num_threads)


def test_layer_norm_bias_only(dtype, rng):
    x = rng.standard_normal((5, 9)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    run_and_check(x, None, b, -1)


@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 4099])
def test_layer_norm_row_lengths(n, dtype, rng, num_threads):
    x = (rng.standard_normal((5, n)) + 3).astype(dtype)
    w, b = make_params(rng, x.shape, -1, "both", dtype)
    run_and_check(x, w, b, -1, return_stats=True, num_threads=num_threads)
    # and the same length on a non-trailing axis
    xt = np.ascontiguousarray(np.swapaxes(x, 0, 1))
    run_and_check(xt, w, b, 0, return_stats=True, num_threads=num_threads)


@pytest.mark.parametrize("eps", [0.0, 1e-3, 0.5, 3.0])
def test_layer_norm_eps_is_used(eps, dtype, rng):
    x = rng.standard_normal((6, 40)).astype(dtype)
    y = run_and_check(x, None, None, -1, eps=eps)
    if eps >= 0.5:
        # the reference with the default eps must differ: eps really is applied
        other, _, _ = ref_layer_norm(x, eps=1e-5)
        assert np.max(np.abs(y - other)) > 0.05


def test_layer_norm_default_eps_is_1e_5(rng):
    x = (rng.standard_normal((4, 64)) * 1e-3).astype(np.float64)  # var ~1e-6
    y = fastnorm.layer_norm(x)
    np.testing.assert_allclose(y, ref_layer_norm(x, eps=1e-5)[0], rtol=1e-10, atol=1e-12)
    assert not np.allclose(y, ref_layer_norm(x, eps=0.0)[0], rtol=1e-3)


def test_layer_norm_array_like_inputs():
    x = [[1.0, 2.0, 3.0], [2.0, 2.0, 5.0]]
    y = fastnorm.layer_norm(x, [1.0, 1.0, 2.0], [0.0, 1.0, 0.0])
    ry, _, _ = ref_layer_norm(np.array(x), [1.0, 1.0, 2.0], [0.0, 1.0, 0.0])
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("value", [0.0, 2.5, 0.1, -3.7])
def test_layer_norm_constant_rows_give_bias(value, dtype, rng, num_threads):
    x = rng.standard_normal((6, 37)).astype(dtype)
    x[2] = value
    x[4] = value
    w = rng.standard_normal(37).astype(dtype)
    b = rng.standard_normal(37).astype(dtype)
    y = fastnorm.layer_norm(x, w, b, num_threads=num_threads)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[2], b, atol=1e-4)
    np.testing.assert_allclose(y[4], b, atol=1e-4)
    run_and_check(x, w, b, -1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_layer_norm_nonfinite_stays_in_its_row(bad, dtype, rng, num_threads):
    x = rng.standard_normal((8, 70)).astype(dtype)
    x[3, 17] = bad
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True, num_threads=num_threads)
    good = [i for i in range(8) if i != 3]
    assert np.all(np.isfinite(y[good]))
    ry, _, _ = ref_layer_norm(x[good])
    np.testing.assert_allclose(y[good].astype(np.float64), ry, *tol(dtype))
    assert not np.all(np.isfinite(y[3]))
    if bad != bad:  # NaN poisons its whole row
        assert np.all(np.isnan(y[3]))
        assert np.isnan(mean[3])


def test_layer_norm_nan_non_trailing_axis(dtype, rng):
    # NCHW, normalize over C (axis=1): a NaN at pixel (n=1, h=2, w=3) only
    # reaches that pixel's outputs.
    x = rng.standard_normal((2, 5, 4, 6)).astype(dtype)
    x[1, 2, 2, 3] = np.nan
    y = fastnorm.layer_norm(x, axis=1)
    bad = np.zeros(x.shape, bool)
    bad[1, :, 2, 3] = True
    assert np.all(np.isnan(y[bad]))
    assert np.all(np.isfinite(y[~bad]))


@pytest.mark.parametrize("shape,axis", [((0, 8), -1), ((0, 3, 4), (1, 2)),
                                        ((3, 0, 4), -1), ((2, 0), 0)], ids=str)
def test_layer_norm_zero_size_batch(shape, axis, dtype):
    x = np.zeros(shape, dtype=dtype)
    ps = param_shape(shape, axis)
    y = fastnorm.layer_norm(x, np.ones(ps, dtype), np.zeros(ps, dtype), axis=axis)
    assert y.shape == shape and y.dtype == dtype
    out = np.empty(shape, dtype)
    assert fastnorm.layer_norm(x, axis=axis, out=out) is out
    y, mean, rstd = fastnorm.layer_norm(x, axis=axis, return_stats=True)
    assert np.shape(mean) == stat_shape(shape, axis)


@pytest.mark.parametrize("loc", [1e4, 1e6])
@pytest.mark.parametrize("shape,axis", [((64, 1024), -1), ((8, 333, 6), 1),
                                        ((4, 64, 5, 7), (1, 3))], ids=str)
def test_layer_norm_large_mean_float32(loc, shape, axis, rng, num_threads):
    """mean 1e4 / 1e6, std 1, float32: error ~ the reference's own rounding.

    Tolerance: 16 float32 ulps-of-1 relative to (1 + |y|).  The reference
    rounded to float32 is within 0.5 ulp; a float32 E[x^2]-E[x]^2 kernel is
    computed alongside and shown to exceed the tolerance by > 100x.
    """
    x = (loc + rng.standard_normal(shape)).astype(np.float32)
    y = fastnorm.layer_norm(x, axis=axis, num_threads=num_threads)
    ry, _, _ = ref_layer_norm(x, axis=axis)
    limit = 16 * np.finfo(np.float32).eps * (1 + np.abs(ry))
    own = np.abs(ry.astype(np.float32).astype(np.float64) - ry)
    assert np.all(own <= limit)
    err = np.abs(y.astype(np.float64) - ry)
    assert np.all(err <= limit), f"max err {err.max():.3g}, reference rounding {own.max():.3g}"
    naive = naive_layer_norm_f32(x, axis=axis).astype(np.float64)
    with np.errstate(invalid="ignore"):
        naive_ratio = np.nanmax(np.abs(naive - ry) / limit) if np.any(np.isfinite(naive)) else np.inf
    assert (not np.all(np.isfinite(naive))) or naive_ratio > 100


def test_layer_norm_threads_agree(dtype, rng):
    x = (rng.standard_normal((129, 517)) + 2).astype(dtype)
    w, b = make_params(rng, x.shape, -1, "both", dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for axis in (-1, 0, (0, 1)):
        ww, bb = make_params(rng, x.shape, axis, "both", dtype)
        y1 = fastnorm.layer_norm(x, ww, bb, axis=axis, num_threads=1)
        y2 = fastnorm.layer_norm(x, ww, bb, axis=axis, num_threads=2)
        np.testing.assert_allclose(y1, y2, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("layout", ["C", "strided"])
def test_layer_norm_wide_rows_in_tiles(layout, dtype, rng):
    # rows longer than L1 (up to that, the piped walk) with weight and bias are
    # normalized in tiles of rows, slice of columns by slice (seg_units_tiled):
    # many tiles, a length that is no multiple of a slice, rows split between
    # threads
    x = (rng.standard_normal((70, 9001)) * 3 + 40).astype(dtype)
    if layout == "strided":
        x = np.concatenate([x, x], axis=1)[:, ::2]
    w, b = make_params(rng, x.shape, -1, "both", dtype)
    y1, mean1, rstd1 = run_and_check(x, w, b, -1, return_stats=True, num_threads=1)
    y2, mean2, rstd2 = fastnorm.layer_norm(x, w, b, return_stats=True, num_threads=2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(mean1, mean2)
    np.testing.assert_array_equal(rstd1, rstd2)


# ------------------------------------------------------------- unusual inputs
def test_layer_norm_unaligned_input(dtype, rng):
    from reference import unaligned_copy
    x = rng.standard_normal((7, 67)).astype(dtype)
    xu = unaligned_copy(x)
    np.testing.assert_allclose(fastnorm.layer_norm(xu), ref_layer_norm(x)[0], *tol(dtype))
    np.testing.assert_allclose(fastnorm.layer_norm(xu, axis=0), ref_layer_norm(x, axis=0)[0],
                               *tol(dtype))


def test_layer_norm_zero_stride_readonly_input(dtype, rng):
    row = rng.standard_normal(33).astype(dtype)
    x = np.broadcast_to(row, (5, 33))        # stride 0, read-only
    y = fastnorm.layer_norm(x)
    assert y.flags.writeable
    np.testing.assert_allclose(y, ref_layer_norm(x)[0], *tol(dtype))
    # normalizing over the broadcast axis: every column is constant -> bias
    b = rng.standard_normal(5).astype(dtype)
    np.testing.assert_allclose(fastnorm.layer_norm(x, None, b, axis=0), np.repeat(b[:, None], 33, 1),
                               atol=1e-5)


def test_layer_norm_huge_finite_float32_stays_finite(rng):
    x = (rng.standard_normal((4, 50)) * 1e37).astype(np.float32)
    x[0, 0], x[0, 1] = 3e38, -3e38
    y = fastnorm.layer_norm(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref_layer_norm(x)[0], *tol(np.float32))


@pytest.mark.parametrize("shape", [(6, 40), (2, 70001)], ids=str)
def test_layer_norm_partially_overlapping_out(shape, rng):
    """out overlapping x without being x: either a ValueError naming out, or the
    result of computing from the original x (never silently corrupted)."""
    x = rng.standard_normal(shape).astype(np.float32)
    view = x[:, ::-1]
    expected = ref_layer_norm(view.copy())[0]
    try:
        y = fastnorm.layer_norm(view, out=x)
    except ValueError as e:
        assert "out" in str(e)
        return
    np.testing.assert_allclose(y, expected, *tol(np.float32))
