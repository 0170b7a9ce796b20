"""Units of one value in training: dx is exactly zero.

A unit (a LayerNorm row, a GroupNorm group) of one value is
normalized around its own mean, so its output is beta whatever x is and the
gradient through x is 0. Computed by the general formula it is rounding noise
(rstd = 1 / sqrt(eps) times an ulp of dy), which the row kernels and the column
kernels round differently; both write 0. (BatchNorm refuses one value per
channel in training, as PyTorch does.)
"""

import numpy as np
import pytest

import fastnorm

DTYPES = [np.float32, np.float64]


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3 + 2).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 5, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_norm_rows_of_one_value(dtype, rows, threads):
    x, dy = _data((rows, 1), dtype, 1), _data((rows, 1), dtype, 2)
    w = np.array([1.7], dtype)
    _, mean, rstd = fastnorm.layer_norm(x, w, return_stats=True)
    dx, dw, db = fastnorm.layer_norm_backward(dy, x, mean, rstd, w, num_threads=threads)
    assert not dx.any()
    # xhat is 0: dweight is 0 (up to the rounding of x - mean), dbias the sum of dy
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(dw, [0.0], atol=1e-6 * np.abs(dy).sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_group_norm_groups_of_one_value(dtype, channel_axis):
    shape = (3, 8, 1, 1) if channel_axis == 1 else (3, 1, 1, 8)
    x, dy = _data(shape, dtype, 5), _data(shape, dtype, 6)
    w = np.linspace(0.5, 2.0, 8).astype(dtype)
    _, m, r = fastnorm.group_norm(x, 8, w, channel_axis=channel_axis, return_stats=True)
    dx = fastnorm.group_norm_backward(dy, x, 8, m, r, w, channel_axis=channel_axis)[0]
    assert not dx.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_row_of_one_value_is_not_zero(dtype):
    """RMSNorm is not centred: y = x / sqrt(x^2 + eps) depends on x."""
    x, dy = _data((4, 1), dtype, 7), _data((4, 1), dtype, 8)
    _, rstd = fastnorm.rms_norm(x, return_stats=True)
    dx = fastnorm.rms_norm_backward(dy, x, rstd)[0]
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    r = rstd.astype(np.float64).reshape(-1, 1)
    want = r * (dy64 - x64 * r * (dy64 * x64 * r))
    # the two terms cancel to eps / (x^2 + eps) of r * dy: compared at that scale
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(dx, want, rtol=0, atol=tol * np.abs(r * dy64).max())
    assert dx.any()
