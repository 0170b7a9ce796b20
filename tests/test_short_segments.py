"""Units of short segments lying end to end across units, walked as columns.

BatchNorm over (N, C, L) with a small L, or NCHW with 2 x 2 planes, reduces
each channel over N runs of L values that sit next to the other channels' runs.
The kernel reads such inputs row by row, each row of C * L values as C * L
columns whose statistics are merged per group of L columns (src_c
seg_as_columns). These tests hold that walk to the float64 references: values,
running statistics, returned statistics, every affine variant, inference,
moments, nonfinite data and thread counts, on both sides of the shape rule that
selects it (segments of at most 4 values always; of at most 16 values from
128 rows on; of at most 32 values from 2048 rows on).
"""

import numpy as np
import pytest

import fastnorm
from reference import batch_norm as ref_batch_norm
from reference import moments as ref_moments
from reference import tol

# (shape, selected by the shape rule)
SHAPES = [
    ((300, 7, 2), True),
    ((64, 33, 3), True),
    ((5, 40, 4), True),
    ((17, 6, 2, 2), True),
    ((2100, 5, 8), True),
    ((2048, 3, 32), True),
    ((2047, 3, 20), False),
    ((128, 5, 16), True),
    ((127, 4, 3, 3), False),
    ((64, 9, 33), False),
    ((40, 6, 4, 4), False),
]


def _rule_selects(shape):
    seg = int(np.prod(shape[2:]))
    return seg <= 4 or (seg <= 16 and shape[0] >= 128) or (seg <= 32 and shape[0] >= 2048)


def test_shapes_cover_both_sides_of_the_rule():
    for shape, selected in SHAPES:
        assert _rule_selects(shape) == selected, shape


@pytest.mark.parametrize("shape", [s for s, _ in SHAPES], ids=str)
@pytest.mark.parametrize("affine", ["none", "weight", "both"])
def test_training_matches_reference(shape, affine, dtype, rng, num_threads):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = (rng.standard_normal(C) * 0.5 + 1).astype(dtype) if affine != "none" else None
    b = rng.standard_normal(C).astype(dtype) if affine == "both" else None
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    y, mean, invstd = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                          training=True, return_stats=True,
                                          num_threads=num_threads)
    ry, rmean, rinv, erm, erv = ref_batch_norm(x, w, b, np.zeros(C), np.ones(C),
                                               training=True)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=rtol, atol=atol)
    np.testing.assert_allclose(mean.astype(np.float64), rmean, rtol=rtol, atol=atol)
    np.testing.assert_allclose(invstd.astype(np.float64), rinv, rtol=rtol, atol=atol)
    np.testing.assert_allclose(rm.astype(np.float64), erm, rtol=rtol, atol=atol)
    np.testing.assert_allclose(rv.astype(np.float64), erv, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", [s for s, _ in SHAPES], ids=str)
def test_inference_matches_reference(shape, dtype, rng, num_threads):
    C = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal(C) * 0.5 + 1).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    out = np.empty_like(x)
    y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False,
                            out=out, num_threads=num_threads)
    assert y is out
    ry = ref_batch_norm(x, w, b, rm.copy(), rv.copy(), training=False)[0]
    np.testing.assert_allclose(y.astype(np.float64), ry, *tol(dtype))


@pytest.mark.parametrize("shape", [s for s, _ in SHAPES], ids=str)
def test_moments_over_channels_match_reference(shape, dtype, rng, num_threads):
    axes = (0,) + tuple(range(2, len(shape)))
    x = (rng.standard_normal(shape) + 1e3).astype(dtype)
    mean, var = fastnorm.moments(x, axis=axes, num_threads=num_threads)
    rmean, rvar = ref_moments(x, axes)
    np.testing.assert_allclose(mean.astype(np.float64), rmean, rtol=tol(dtype)[0])
    np.testing.assert_allclose(var.astype(np.float64), rvar, rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("shape", [s for s, sel in SHAPES if sel], ids=str)
def test_thread_counts_give_the_same_bits(shape, dtype, rng):
    C = shape[1]
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    w = (rng.standard_normal(C) + 1).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    runs = [fastnorm.batch_norm(x, w, b, training=True, return_stats=True, num_threads=nt)
            for nt in (1, 2, 3)]
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("shape", [(300, 5, 2), (2100, 5, 8)], ids=str)
def test_nonfinite_stays_in_its_channel(bad, shape, dtype, rng, num_threads):
    x = rng.standard_normal(shape).astype(dtype)
    x[7, 3, 1] = bad
    y = fastnorm.batch_norm(x, training=True, num_threads=num_threads)
    good = [0, 1, 2, 4]
    assert np.all(np.isfinite(y[:, good]))
    assert not np.all(np.isfinite(y[:, 3]))
    ry = ref_batch_norm(x[:, good], None, None, None, None, training=True)[0]
    np.testing.assert_allclose(y[:, good].astype(np.float64), ry, *tol(dtype))


def test_large_mean_float32_keeps_its_digits(rng, num_threads):
    x = (1e4 + rng.standard_normal((3000, 6, 4))).astype(np.float32)
    y = fastnorm.batch_norm(x, training=True, num_threads=num_threads)
    ry = ref_batch_norm(x, None, None, None, None, training=True)[0]
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=0, atol=2e-5)


def test_strided_rows_and_out(dtype, rng, num_threads):
    """Rows further apart than C * L values (a slice along N of a wider array)."""
    base = rng.standard_normal((600, 10, 3)).astype(dtype)
    x = base[:, 2:9]            # rows 30 values apart, 21 used
    assert not x.flags.c_contiguous
    out_base = np.full((600, 10, 3), 7, dtype)
    out = out_base[:, 1:8]
    y = fastnorm.batch_norm(x, training=True, out=out, num_threads=num_threads)
    assert y is out
    ry = ref_batch_norm(np.ascontiguousarray(x), None, None, None, None, training=True)[0]
    np.testing.assert_allclose(y.astype(np.float64), ry, *tol(dtype))
    assert np.all(out_base[:, [0, 8, 9]] == 7)
