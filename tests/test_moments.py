"""fastnorm.moments against the float64 reference and np.mean / np.var."""

import numpy as np
import pytest

import fastnorm
from reference import make_layout, moments as ref_moments, naive_var_f32


def _tols(dtype):
    return (1e-5, 1e-6) if np.dtype(dtype) == np.float32 else (1e-12, 1e-12)


def check_moments(x, axis=None, ddof=0, keepdims=False, num_threads=None):
    x_before = x.copy()
    mean, var = fastnorm.moments(x, axis, ddof=ddof, keepdims=keepdims,
                                 num_threads=num_threads)
    np.testing.assert_array_equal(x, x_before)  # input never modified
    rm, rv = ref_moments(x, axis, ddof=ddof, keepdims=keepdims)
    np_mean = np.mean(x, axis=axis, keepdims=keepdims)
    # same shapes as NumPy (axis=None gives a 0-d result or a scalar)
    assert np.shape(mean) == np.shape(np_mean)
    assert np.shape(var) == np.shape(np_mean)
    assert np.asarray(mean).dtype == x.dtype
    assert np.asarray(var).dtype == x.dtype
    rtol, atol = _tols(x.dtype)
    np.testing.assert_allclose(np.asarray(mean, np.float64), rm, rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(var, np.float64), rv, rtol=rtol, atol=atol)
    return mean, var


SHAPE_AXES = [
    ((1,), None),
    ((7,), 0),
    ((17,), None),
    ((33,), -1),
    ((1000,), None),
    ((17, 33), None),
    ((17, 33), 0),
    ((17, 33), 1),
    ((17, 33), -1),
    ((17, 33), (0, 1)),
    ((3, 5, 7), 1),
    ((3, 5, 7), (0, 2)),
    ((3, 5, 7), (2, 0)),
    ((3, 5, 7), (-1, -2)),
    ((2, 3, 4, 5), (0, 2, 3)),
    ((2, 3, 4, 5), 1),
    ((2, 1, 3, 2, 5), (1, 3)),
    ((2, 1, 3, 2, 5), None),
    ((1, 1), 1),
]


@pytest.mark.parametrize("shape,axis", SHAPE_AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_moments_values(shape, axis, keepdims, dtype, layout, rng):
    x = make_layout((rng.standard_normal(shape) * 3 + 1.5).astype(dtype), layout)
    check_moments(x, axis, keepdims=keepdims)


@pytest.mark.parametrize("ddof", [0, 1, 2])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2)])
def test_moments_ddof_matches_numpy(ddof, axis, dtype, rng, num_threads):
    x = rng.standard_normal((6, 9, 11)).astype(dtype)
    mean, var = check_moments(x, axis, ddof=ddof, num_threads=num_threads)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(var, np.var(x.astype(np.float64), axis=axis, ddof=ddof),
                               rtol=rtol, atol=rtol)
    np.testing.assert_allclose(mean, np.mean(x.astype(np.float64), axis=axis),
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 4099])
def test_moments_lengths(n, dtype, rng, num_threads):
    x = (rng.standard_normal(n) + 2).astype(dtype)
    check_moments(x, None, num_threads=num_threads)
    x2 = (rng.standard_normal((3, n)) + 2).astype(dtype)
    check_moments(x2, 1, num_threads=num_threads)
    check_moments(x2, 0, num_threads=num_threads)


def test_moments_array_like_list():
    mean, var = fastnorm.moments([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]], axis=1)
    np.testing.assert_allclose(mean, [2.0, 6.0], rtol=1e-12)
    np.testing.assert_allclose(var, [2.0 / 3.0, 8.0 / 3.0], rtol=1e-12)
    assert np.asarray(mean).dtype == np.float64


def test_moments_scalar_result_axis_none():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, var = fastnorm.moments(x)
    assert float(mean) == 2.5
    assert float(var) == pytest.approx(1.25, rel=1e-14)
    # NumPy scalars of x's dtype, as the docstring says and as np.mean gives
    assert type(mean) is type(np.mean(x)) is np.float64 and type(var) is np.float64
    mean32, _ = fastnorm.moments(x.astype(np.float32), axis=(0,))
    assert type(mean32) is np.float32


def test_moments_zero_size_non_reduced_axis(dtype):
    x = np.zeros((0, 5), dtype=dtype)
    mean, var = fastnorm.moments(x, axis=1)
    assert np.shape(mean) == (0,) and np.shape(var) == (0,)
    assert np.asarray(mean).dtype == dtype
    x = np.zeros((4, 0, 3), dtype=dtype)
    mean, var = fastnorm.moments(x, axis=(0, 2), keepdims=True)
    assert np.shape(mean) == (1, 0, 1)


def test_moments_constant_is_exact(dtype):
    x = np.full((5, 1001), 0.1, dtype=dtype)
    mean, var = fastnorm.moments(x, axis=1)
    np.testing.assert_allclose(mean, np.float64(dtype.type(0.1)), rtol=1e-6)
    assert np.all(np.asarray(var) >= 0)
    assert np.all(np.asarray(var) < 1e-12)


def test_moments_nan_only_in_its_row(dtype, num_threads):
    x = np.ones((4, 100), dtype=dtype)
    x[:, ::2] = 3
    x[2, 37] = np.nan
    mean, var = fastnorm.moments(x, axis=1, num_threads=num_threads)
    assert np.isnan(mean[2]) and np.isnan(var[2])
    keep = [0, 1, 3]
    np.testing.assert_allclose(mean[keep], 2.0, rtol=1e-6)
    np.testing.assert_allclose(var[keep], 1.0, rtol=1e-6)


@pytest.mark.parametrize("loc", [1e4, 1e6])
@pytest.mark.parametrize("axis", [None, 1, 0])
def test_moments_large_mean_float32(loc, axis, rng, num_threads):
    """float32 data with huge mean: var must be as good as float64 rounded.

    The naive float32 E[x^2]-E[x]^2 is computed too and asserted to fail the
    same tolerance, so this test provably detects the unstable formula.
    """
    x = (loc + rng.standard_normal((64, 1000))).astype(np.float32)
    mean, var = fastnorm.moments(x, axis, num_threads=num_threads)
    rm, rv = ref_moments(x, axis)
    rv32 = rv.astype(np.float32).astype(np.float64)
    rtol_var = 1e-5
    err = np.max(np.abs(np.asarray(var, np.float64) - rv) / rv)
    own = np.max(np.abs(rv32 - rv) / rv)
    assert err <= rtol_var, (err, own)
    with np.errstate(invalid="ignore"):
        naive = naive_var_f32(x, axis).astype(np.float64)
        naive_err = np.max(np.abs(naive - rv) / rv)
    assert not naive_err <= 100 * rtol_var  # also true when naive_err is NaN
    np.testing.assert_allclose(np.asarray(mean, np.float64), rm, rtol=2e-7)


def test_moments_threads_agree(dtype, rng):
    x = (rng.standard_normal((37, 1031)) + 5).astype(dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for axis in (None, 0, 1):
        m1, v1 = fastnorm.moments(x, axis, num_threads=1)
        m2, v2 = fastnorm.moments(x, axis, num_threads=2)
        np.testing.assert_allclose(m1, m2, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(v1, v2, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("K", [300, 1029])
def test_wide_column_moments_match_narrow_ones(K, dtype, rng):
    # rows of many column chunks (4 vectors each) are summed in sub-blocks of
    # rows that fit L1, each chunk's sums carried from one sub-block to the next;
    # a chunk column's sums are the same sequence of additions as in a narrow
    # array, so the bits too (columns past the last whole chunk take other loops)
    x = (rng.standard_normal((203, K)) * 2 + 30).astype(dtype)
    mean, var = check_moments(x, axis=0)
    for cols in (slice(0, 64), slice(64, 128), slice(192, 256)):
        m, v = fastnorm.moments(np.ascontiguousarray(x[:, cols]), axis=0)
        np.testing.assert_array_equal(mean[cols], m)
        np.testing.assert_array_equal(var[cols], v)


# The compiled path (fastnorm._ext.moments_fast): calls whose kept axes form one
# range, the reduced ones leading and trailing it (rows, columns, the channels of
# NCHW), over a C-contiguous float32/float64 array with a Python
# int ddof skip the Python-level validation and planning; a NumPy integer ddof
# takes the general path. Both must return the same types, shapes, dtypes and
# bits, ddof >= n (inf / NaN) included.
FAST_SHAPE_AXES = [
    ((7,), [-1, 0, None, (0,)]),
    ((1,), [None, 0]),
    ((3, 5), [-1, 1, 0, None, (0, 1), (1, 0)]),
    ((4, 3, 1000), [2, (1, 2), (2, 1), 0, (0, 1), (-3, -2), None]),
    ((2, 2049), [-1, 0, None]),
    ((3000, 70), [0, 1]),
    ((1, 64), [0, 1]),
    ((64, 1), [0, 1]),              # kept axes of one value: one row, as the planner does
    ((5, 1, 6), [0, (0, 1), (1, 2), 2]),
    ((2, 3, 4, 5), [(0, 1, 2), (1, 2, 3), (0, 1), 3, (0, 2, 3), (0, 3), (3, 0, 2)]),
    ((3, 5, 7), [(0, 2)]),
    ((8, 4, 1, 1), [(0, 2, 3)]),    # reduced trailing axes of one value: columns
    ((8, 1, 5, 5), [(0, 2, 3)]),    # kept axis of one value: one row
    ((1, 4, 3, 3), [(0, 2, 3)]),
    ((64, 16, 9, 9), [(0, 2, 3)]),  # BatchNorm's statistics of an NCHW batch
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axes", FAST_SHAPE_AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_compiled_path_same_results_as_general_path(shape, axes, dtype, keepdims):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3 + 100).astype(dtype)
    for axis in axes:
        assert fastnorm._ext.moments_fast(x, axis, 0, keepdims, None, fastnorm.get_num_threads) is not None
        n = x.size if axis is None else int(np.prod([shape[a] for a in np.atleast_1d(axis)]))
        for ddof in (0, 1, n, n + 2, -1):
            with np.errstate(divide="ignore", invalid="ignore"):
                fast = fastnorm.moments(x, axis=axis, ddof=ddof, keepdims=keepdims)
                general = fastnorm.moments(x, axis=axis, ddof=np.int64(ddof), keepdims=keepdims)
            for a, e in zip(fast, general):
                assert type(a) is type(e)
                assert a.dtype == e.dtype and np.shape(a) == np.shape(e)
                np.testing.assert_array_equal(a, e)


def test_compiled_path_declines_other_calls():
    x = np.ones((4, 6, 5), np.float32)
    g = fastnorm.get_num_threads
    assert fastnorm._ext.moments_fast(x, 1, 0, False, None, g) is None         # kept axes apart
    assert fastnorm._ext.moments_fast(x, (0, 0), 0, False, None, g) is None    # repeated: raises there
    assert fastnorm._ext.moments_fast(x, 3, 0, False, None, g) is None         # out of range: raises there
    assert fastnorm._ext.moments_fast(x, 2 ** 70, 0, False, None, g) is None
    assert fastnorm._ext.moments_fast(x, (), 0, False, None, g) is None
    assert fastnorm._ext.moments_fast(x, np.int64(0), 0, False, None, g) is None
    assert fastnorm._ext.moments_fast(x, [0, 1], 0, False, None, g) is None
    assert fastnorm._ext.moments_fast(x, True, 0, False, None, g) is None
    assert fastnorm._ext.moments_fast(x, -1, True, False, None, g) is None     # bool ddof: the general path raises
    assert fastnorm._ext.moments_fast(x[:, ::2], -1, 0, False, None, g) is None  # not contiguous
    assert fastnorm._ext.moments_fast(x.astype(np.float16), -1, 0, False, None, g) is None
    assert fastnorm._ext.moments_fast(x, -1, 0, False, 0, g) is None          # bad num_threads: raises there
    with pytest.raises(ValueError):
        fastnorm.moments(x, axis=3)
    with pytest.raises(ValueError):
        fastnorm.moments(x, axis=-1, num_threads=0)
