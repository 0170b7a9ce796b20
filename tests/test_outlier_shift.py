"""float32 statistics when a block's shift is an outlier.

Each block of float32 values is summed around a shift (its first value; the mean
of a column superblock's first eight rows) in float32 lanes, and the variance is s2 - s1**2 / n of
those sums: a shift z standard deviations from the block's mean multiplies the
rounding error by about 1 + z**2. An outlier of 100 as the first of 1024
standard normal values gave a variance 1.4e-4 off (float32's own rounding:
6e-8). Blocks whose shift lies more than 3 deviations away are summed again
around their own means (rows and planes: in float32, then moved back to the
shift in float64, or in float64 where those sums fail too); the bound here is 25
float32 ulp, which every case below exceeded before.
"""

import numpy as np
import pytest

import fastnorm
from reference import make_layout

BOUND = 1.5e-6


def _var_error(var, x64, axis):
    ref = x64.var(axis=axis)
    return np.max(np.abs(np.asarray(var, np.float64) - ref) / ref)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("outlier", [100.0, -1000.0])
@pytest.mark.parametrize("L", [64, 1000, 1024, 2048, 5000])
def test_rows_with_an_outlier_first(L, outlier, threads):
    x = np.random.default_rng(L).standard_normal((64, L)).astype(np.float32)
    x[:, 0] = outlier
    x[:, ::1024] = outlier               # the first value of every block of 1024
    mean, var = fastnorm.moments(x, axis=1, num_threads=threads)
    assert _var_error(var, x.astype(np.float64), 1) < BOUND


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1024, 64), (3000, 70), (200, 5), (5000, 130)], ids=str)
def test_columns_with_an_outlier_first(shape, threads):
    x = np.random.default_rng(shape[0]).standard_normal(shape).astype(np.float32)
    x[::1024] = 100.0                    # the first row of every superblock
    mean, var = fastnorm.moments(x, axis=0, num_threads=threads)
    assert _var_error(var, x.astype(np.float64), 0) < BOUND


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_planes_with_an_outlier_first(channels_last, threads):
    rng = np.random.default_rng(5)
    if channels_last:
        x = rng.standard_normal((16, 20, 20, 8)).astype(np.float32)
        x.reshape(-1, 8)[::1024] = 100.0     # the first row of every column superblock
    else:
        x = rng.standard_normal((16, 8, 20, 20)).astype(np.float32)
        x[:, :, 0, 0] = 100.0                # the first value of every plane
    cax = -1 if channels_last else 1
    axes = (0, 1, 2) if channels_last else (0, 2, 3)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
    y, mean, rstd = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True, momentum=1.0,
                                        eps=0.0, channel_axis=cax, return_stats=True, num_threads=threads)
    x64 = x.astype(np.float64)
    ref_rstd = 1 / np.sqrt(x64.var(axis=axes))
    assert np.max(np.abs(rstd / ref_rstd - 1)) < BOUND
    shape = [1] * 4
    shape[cax] = 8
    ref_y = (x64 - x64.mean(axis=axes).reshape(shape)) * ref_rstd.reshape(shape)
    assert np.max(np.abs(y - ref_y)) < BOUND * np.max(np.abs(ref_y))


def test_layer_norm_row_with_an_outlier_first():
    x = np.random.default_rng(0).standard_normal(1024).astype(np.float32)
    x[0] = 100.0
    y, mean, rstd = fastnorm.layer_norm(x, eps=0.0, return_stats=True)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean()) / x64.std()
    # 2.9e-5 of the largest value before
    assert np.max(np.abs(y - ref)) < 1e-6 * np.max(np.abs(ref))


# A column block's shift is the mean of its first eight rows (all of a shorter
# block's), not its first row: each float32 lane adds up to 64 rows of its
# column, and with the first row up to 3 deviations from the mean (below the
# re-sum limit) the variances of columns of 8 to 64 standard normal values were
# up to 1.4e-6 to 4.9e-6 off (BatchNorm of a batch of 8 to 64).
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [8, 16, 31, 64, 65, 128, 1024])
def test_columns_of_few_rows_without_outliers(rows, threads):
    x = np.random.default_rng(rows).standard_normal((20, rows, 64)).astype(np.float32)
    worst = 0.0
    for xi in x:
        _, var = fastnorm.moments(xi, axis=0, num_threads=threads)
        worst = max(worst, _var_error(var, xi.astype(np.float64), 0))
    assert worst < 1e-6


@pytest.mark.parametrize("L", [64, 768, 3000], ids=str)
def test_far_first_values_give_the_same_bits_in_every_row_walk(L):
    # a block whose first value lies far from its mean is summed again around
    # its mean (dev_sums_recentred in src_c/norm_template.h), whichever walk
    # read it: the row layouts and thread counts must agree bit for bit
    rng = np.random.default_rng(L)
    x = rng.standard_normal((256, L)).astype(np.float32)
    x[::3, ::1024] += 50.0
    x[1::3] = np.sort(x[1::3], axis=1)
    want = fastnorm.layer_norm(x, return_stats=True, num_threads=1)
    for layout in ("strided", "negative"):
        for threads in (1, 2):
            got = fastnorm.layer_norm(make_layout(x, layout), return_stats=True, num_threads=threads)
            for a, e in zip(got, want):
                np.testing.assert_array_equal(a, e)
    mean, var = fastnorm.moments(x, axis=1)
    assert _var_error(var, x.astype(np.float64), 1) < BOUND
