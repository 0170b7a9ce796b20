"""Many rows of few columns: BatchNorm over (N, C) with C smaller than a vector.

Tabular features ((N, 3), (N, 12)) are normalized as one flat range whose
vectors span several rows: the coefficient arrays continue periodically past
their K values (src_c col_coeffs, col_norm_flat), so a vector starting at any
column loads its coefficients without wrapping. Their statistics are taken over
rows of m * C values, a whole number of vectors, and merged per column
(col_narrow_stats). These tests hold both to float64 references, into outputs
that start anywhere, and to the same bits at every thread count and output
offset.
"""

import numpy as np
import pytest

import fastnorm
from reference import batch_norm as ref_batch_norm
from reference import tol
from test_backward import bn_backward64, close_grads
from test_wide_columns import _data, _params, assert_inference_into_out, assert_training_matches_reference

# columns below, at and past one vector of float32 (16) and float64 (8), and not
# dividing it; rows enough for every thread to get flat cuts
COLUMNS = [2, 3, 5, 7, 8, 12, 15, 24]
ROWS = 30000


def _running(C, dtype):
    rng = np.random.default_rng(2)
    return rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype)


def _out_at(shape, dtype, offset):
    """An output starting `offset` elements into a guarded buffer, and the buffer."""
    size = int(np.prod(shape))
    buf = np.full(size + offset + 1, -777.0, dtype)
    return buf[offset:offset + size].reshape(shape), buf


@pytest.mark.parametrize("C", COLUMNS)
@pytest.mark.parametrize("offset", [0, 1, 5], ids=lambda o: f"out+{o}")
def test_inference_matches_reference(C, offset, dtype, num_threads):
    assert_inference_into_out((ROWS, C), offset, dtype, num_threads)


@pytest.mark.parametrize("C", COLUMNS)
@pytest.mark.parametrize("rows", [ROWS, ROWS + 7, 101], ids=lambda r: f"rows{r}")
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
def test_training_matches_reference(C, rows, affine, dtype, num_threads):
    """Statistics of few columns are taken over rows of m * C values (a whole
    number of vectors), merged per column with the rows left over (rows % m)."""
    x = _data((rows, C), dtype, hard=True)
    w, b = _params(C, dtype) if affine else (None, None)
    assert_training_matches_reference(x, w, b, dtype, num_threads)


@pytest.mark.parametrize("C", COLUMNS)
def test_same_bits_at_every_thread_count_and_offset(C, dtype):
    x = _data((ROWS, C), dtype, hard=True)
    w, b = _params(C, dtype)
    rm, rv = _running(C, dtype)
    first = None
    for nt in (1, 2, 3, 4):
        for offset in (0, 3):
            out, _ = _out_at(x.shape, dtype, offset)
            yi = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False,
                                     out=out, num_threads=nt).copy()
            out, _ = _out_at(x.shape, dtype, offset)
            yt = fastnorm.batch_norm(x, w, b, training=True, out=out, num_threads=nt).copy()
            if first is None:
                first = (yi, yt)
            np.testing.assert_array_equal(yi, first[0])
            np.testing.assert_array_equal(yt, first[1])


@pytest.mark.parametrize("C", [3, 12])
def test_nonfinite_column_stays_in_its_column(C, dtype):
    x = _data((ROWS, C), dtype)
    x[ROWS // 2, 1] = np.inf
    w, b = _params(C, dtype)
    rm, rv = _running(C, dtype)
    y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, num_threads=2)
    ry = ref_batch_norm(x, w, b, rm.copy(), rv.copy(), training=False)[0]
    assert np.isinf(y[ROWS // 2, 1])
    finite = np.isfinite(ry)
    np.testing.assert_allclose(y[finite].astype(np.float64), ry[finite], *tol(dtype))


@pytest.mark.parametrize("C", [3, 4096])
@pytest.mark.parametrize("var", [1e-40, 1e-33, 1e33, 1e40])
def test_inference_with_variance_outside_float_rstd_range(C, var, dtype):
    """float32 coefficients take 1 / sqrt(var + eps) in float only for variances
    in [1e-30, 1e30]; others normalize in float64 (float64 running statistics
    hold variances past float32's range): the results agree either way."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, C)) * np.sqrt(var)).astype(dtype)
    w, b = _params(C, dtype)
    rm = np.zeros(C, dtype)
    rv = np.full(C, var)
    y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, eps=0.0)
    ry = ref_batch_norm(x, w, b, rm.copy(), rv.copy(), training=False, eps=0.0)[0]
    np.testing.assert_allclose(y.astype(np.float64), ry, *tol(dtype))


@pytest.mark.parametrize("C", [3, 24, 33])
@pytest.mark.parametrize("rows", [ROWS + 5, 64])
def test_column_moments_match_reference(C, rows, dtype):
    x = _data((rows, C), dtype, hard=True)
    x[-1, 0] = 40.0   # in the rows left over by the wide walk
    mean, var = fastnorm.moments(x, axis=0)
    x64 = x.astype(np.float64)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(mean.astype(np.float64), x64.mean(0), rtol=rtol, atol=atol)
    np.testing.assert_allclose(var.astype(np.float64), x64.var(0), rtol=rtol, atol=atol * 10)


def test_nonfinite_value_in_rows_left_over(dtype):
    x = _data((ROWS + 3, 3), dtype)
    x[-1, 2] = np.nan
    y, mean, _ = fastnorm.batch_norm(x, training=True, return_stats=True, num_threads=2)
    assert np.isnan(mean[2]) and np.isnan(y[:, 2]).all()
    ry, rmean, _, _, _ = ref_batch_norm(x[:, :2], training=True)
    np.testing.assert_allclose(y[:, :2].astype(np.float64), ry, *tol(dtype))


@pytest.mark.parametrize("C", COLUMNS + [40, 63])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_closed_form(C, training, dtype):
    """dx of few columns is written as one flat range (col_dx_flat) whose vectors
    span rows, their sums taken over rows of m * C values (col_bwd_sums_narrow,
    and the rows left over), with the same bits at every thread count."""
    eps = 0.1
    x = _data((ROWS + 3, C), dtype, hard=True, big_mean=False)
    dy = _data(x.shape, dtype, seed=3)
    w, _ = _params(C, dtype)
    x64 = x.astype(np.float64)
    mean64, var64 = (x64.mean(0), x64.var(0)) if training else (np.zeros(C), np.full(C, 2.0))
    want = bn_backward64(dy, x, w, 1, training, (mean64, var64), eps)
    mean, invstd = mean64.astype(dtype), (1 / np.sqrt(var64 + eps)).astype(dtype)
    first = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, training=training, num_threads=1)
    close_grads(first, want, dtype, True)
    for nt in (2, 3):
        got = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, training=training, num_threads=nt)
        for a, b in zip(got, first):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("C, groups", [(3, 1), (12, 4), (24, 3), (40, 8)])
def test_channels_last_group_norm_backward(C, groups, dtype):
    """GroupNorm over few channels-last columns (col_bwd_groups through the
    narrow sums) against the channels-first kernel on the same data."""
    x = _data((700, 5, C), dtype, hard=True, big_mean=False)
    dy = _data(x.shape, dtype, seed=3)
    w, b = _params(C, dtype)
    _, m, r = fastnorm.group_norm(x, groups, w, b, channel_axis=-1, return_stats=True)
    got = fastnorm.group_norm_backward(dy, x, groups, m, r, w, channel_axis=-1)
    xt, dyt = (np.ascontiguousarray(np.moveaxis(a, -1, 1)) for a in (x, dy))
    want = fastnorm.group_norm_backward(dyt, xt, groups, m, r, w)
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got[0], np.moveaxis(want[0], 1, -1), rtol=rtol, atol=rtol)
    for g, w_ in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w_, rtol=rtol, atol=rtol * np.abs(w_).max())


@pytest.mark.parametrize("C", [3, 24])
def test_rms_norm_backward_over_rows(C, dtype):
    """RMSNorm over axis 0 of (N, C) without a weight is a column walk with
    squares around zero: its narrow sums against float64."""
    x = _data((5003, C), dtype, hard=False, big_mean=False)
    dy = _data(x.shape, dtype, seed=3)
    _, r = fastnorm.rms_norm(x, axis=0, eps=1e-6, return_stats=True)
    dx, _ = fastnorm.rms_norm_backward(dy, x, r, axis=0)
    x64, dy64, r64 = x.astype(np.float64), dy.astype(np.float64), np.asarray(r, np.float64)
    want = r64 * (dy64 - x64 * r64**2 * (dy64 * x64).mean(0))
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(dx, want, rtol=rtol, atol=rtol * np.abs(want).max())
