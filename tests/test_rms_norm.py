"""fastnorm.rms_norm against the float64 reference."""

import numpy as np
import pytest

import fastnorm
from reference import (
    OUT_MODES,
    _norm_axes,
    make_layout,
    make_out,
    rms_norm as ref_rms_norm,
    tol,
)


def param_shape(shape, axis):
    return tuple(shape[a] for a in _norm_axes(axis, len(shape)))


def stat_shape(shape, axis):
    axes = _norm_axes(axis, len(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def run_and_check(x, w, axis, eps=None, out_mode=None, return_stats=False,
                  num_threads=None, pass_eps=True):
    dtype = x.dtype
    x_orig = x.copy()
    w_orig = None if w is None else w.copy()
    ry, rrstd = ref_rms_norm(x_orig, w, axis=axis, eps=eps)
    out, check_guard = make_out(x, out_mode)
    kw = {}
    if out is not None:
        kw["out"] = out
    if pass_eps:
        kw["eps"] = eps
    res = fastnorm.rms_norm(x, w, axis=axis, return_stats=return_stats,
                            num_threads=num_threads, **kw)
    if return_stats:
        assert isinstance(res, tuple) and len(res) == 2
        y, rstd = res
    else:
        y = res
    assert isinstance(y, np.ndarray)
    assert y.shape == x.shape and y.dtype == dtype
    if out is not None:
        assert y is out
    check_guard()
    if out_mode != "inplace":
        np.testing.assert_array_equal(x, x_orig)
    if w is not None:
        np.testing.assert_array_equal(w, w_orig)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=rtol, atol=atol)
    if return_stats:
        ss = stat_shape(x.shape, axis)
        assert np.shape(rstd) == ss
        assert np.asarray(rstd).dtype == dtype
        np.testing.assert_allclose(np.asarray(rstd, np.float64), rrstd, rtol=rtol, atol=atol)
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
    ((2, 6, 4, 5), 1),
    ((2, 6, 4, 5), (0, 2)),
    ((2, 6, 4, 5), (3, 1)),
    ((2, 3, 2, 3, 7), (1, 3)),
    ((2, 3, 2, 3, 7), -1),
]


@pytest.mark.parametrize("shape,axis", SHAPE_AXES, ids=str)
@pytest.mark.parametrize("affine", [False, True])
def test_rms_norm_values(shape, axis, affine, dtype, layout, rng):
    x = make_layout((rng.standard_normal(shape) * 2 + 0.5).astype(dtype), layout)
    w = (rng.standard_normal(param_shape(shape, axis)) + 1).astype(dtype) if affine else None
    run_and_check(x, w, axis, eps=1e-6)


@pytest.mark.parametrize("shape,axis", [((17, 33), -1), ((2, 6, 4, 5), 1),
                                        ((2, 6, 4, 5), (0, 2)), ((9,), 0)], ids=str)
@pytest.mark.parametrize("out_mode", OUT_MODES)
@pytest.mark.parametrize("return_stats", [False, True])
@pytest.mark.parametrize("layout", ["C", "F", "negative", "permuted"])
def test_rms_norm_out_and_stats(shape, axis, out_mode, return_stats, layout, dtype, rng,
                                num_threads):
    x = make_layout((rng.standard_normal(shape) * 2 - 1).astype(dtype), layout)
    w = (rng.standard_normal(param_shape(shape, axis)) + 1).astype(dtype)
    run_and_check(x, w, axis, eps=None, out_mode=out_mode, return_stats=return_stats,
                  num_threads=num_threads)


@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 4099])
def test_rms_norm_row_lengths(n, dtype, rng, num_threads):
    x = rng.standard_normal((5, n)).astype(dtype)
    w = rng.standard_normal(n).astype(dtype)
    run_and_check(x, w, -1, eps=1e-6, return_stats=True, num_threads=num_threads)
    run_and_check(np.ascontiguousarray(x.T), w, 0, eps=1e-6, return_stats=True,
                  num_threads=num_threads)


def test_rms_norm_eps_none_is_finfo_eps(dtype, rng):
    """eps=None (and the default) means np.finfo(x.dtype).eps.

    Rows are scaled so that mean(x^2) is comparable to finfo.eps: using any
    other eps (0 or 1e-5 or the float64 eps on float32) would be detected.
    """
    feps = float(np.finfo(dtype).eps)
    x = (rng.standard_normal((6, 50)) * np.sqrt(feps)).astype(dtype)
    for y in (fastnorm.rms_norm(x), fastnorm.rms_norm(x, eps=None)):
        ry, _ = ref_rms_norm(x, eps=feps)
        np.testing.assert_allclose(y.astype(np.float64), ry, rtol=1e-5)
        for wrong in (0.0, 1e-5, 1e-6, float(np.finfo(np.float64).eps) if dtype == np.float32
                      else float(np.finfo(np.float32).eps)):
            other, _ = ref_rms_norm(x, eps=wrong)
            assert not np.allclose(y, other, rtol=1e-2, atol=0)


@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.5])
def test_rms_norm_explicit_eps(eps, dtype, rng):
    x = rng.standard_normal((6, 33)).astype(dtype)
    run_and_check(x, None, -1, eps=eps)


def test_rms_norm_zero_rows_are_zero(dtype, num_threads):
    x = np.zeros((3, 40), dtype=dtype)
    x[1] = 1.0
    y = fastnorm.rms_norm(x, num_threads=num_threads)
    assert np.all(np.isfinite(y))
    assert np.all(y[0] == 0) and np.all(y[2] == 0)
    np.testing.assert_allclose(y[1], 1.0, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rms_norm_nonfinite_stays_in_its_row(bad, dtype, rng, num_threads):
    x = rng.standard_normal((8, 70)).astype(dtype)
    x[5, 3] = bad
    y = fastnorm.rms_norm(x, num_threads=num_threads)
    good = [i for i in range(8) if i != 5]
    assert np.all(np.isfinite(y[good]))
    np.testing.assert_allclose(y[good].astype(np.float64), ref_rms_norm(x[good])[0],
                               *tol(dtype))
    assert not np.all(np.isfinite(y[5]))


def test_rms_norm_large_values_float32(rng, num_threads):
    x = (1e4 + rng.standard_normal((32, 777))).astype(np.float32)
    y = fastnorm.rms_norm(x, num_threads=num_threads)
    ry, _ = ref_rms_norm(x)
    np.testing.assert_allclose(y.astype(np.float64), ry,
                               rtol=8 * np.finfo(np.float32).eps, atol=0)


@pytest.mark.parametrize("shape,axis", [((0, 8), -1), ((3, 0, 4), -1), ((2, 0), 0)],
                         ids=str)
def test_rms_norm_zero_size_batch(shape, axis, dtype):
    x = np.zeros(shape, dtype=dtype)
    y = fastnorm.rms_norm(x, np.ones(param_shape(shape, axis), dtype), axis=axis)
    assert y.shape == shape and y.dtype == dtype
    y, rstd = fastnorm.rms_norm(x, axis=axis, return_stats=True)
    assert np.shape(rstd) == stat_shape(shape, axis)


def test_rms_norm_threads_agree(dtype, rng):
    x = rng.standard_normal((129, 517)).astype(dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for axis in (-1, 0, (0, 1)):
        y1 = fastnorm.rms_norm(x, axis=axis, num_threads=1)
        y2 = fastnorm.rms_norm(x, axis=axis, num_threads=2)
        np.testing.assert_allclose(y1, y2, rtol=rtol, atol=rtol)


def test_rms_norm_unaligned_and_zero_stride_input(dtype, rng):
    from reference import unaligned_copy
    x = rng.standard_normal((7, 67)).astype(dtype)
    np.testing.assert_allclose(fastnorm.rms_norm(unaligned_copy(x)), ref_rms_norm(x)[0],
                               *tol(dtype))
    xb = np.broadcast_to(x[0], (5, 67))
    np.testing.assert_allclose(fastnorm.rms_norm(xb), ref_rms_norm(xb)[0], *tol(dtype))


def test_rms_norm_huge_finite_float32_stays_finite(rng):
    x = (rng.standard_normal((4, 50)) * 1e37).astype(np.float32)
    x[0, 0] = 3e38
    y = fastnorm.rms_norm(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref_rms_norm(x)[0], *tol(np.float32))
