"""Means of long units with |mean| >> std in float64, every kernel's fold.

A unit of millions of values is folded from blocks (rows of FN_BLOCK values, the
segment rows of the row-wise walk, the column kernels' superblocks, the batches of
RunningMoments). Each Chan merge moves the running mean by a fraction of a block's
deviation; rounded to the mean's ulp every time, the error grew with the number of
merges (7 to 32 ulp below, for mean 1e4 and std 1e-3, where NumPy's pairwise mean
is within an ulp), and the normalized values inherit it divided by the std. The
merges carry their rounding error (fn_acc's compensation, TwoSum), so the mean
stays within about an ulp whatever the unit's length. A channels-last GroupNorm
group's mean is the mean of its columns' means, summed around the first of them
(a plain sum of the means rounds at their scale). The variances of units of
several blocks depend on the deviations between block means, which are taken
between means held relative to the unit's first shift (fn_acc's ref). Every test
here fails on the build before these changes.
"""
import numpy as np
import pytest

import fastnorm

SHIFT, SPREAD = 1e4, 1e-3


def _data(shape, seed):
    rng = np.random.default_rng(seed)
    return SHIFT + SPREAD * rng.standard_normal(shape)


def _exact_mean(values):
    """The mean to well within an ulp: x - SHIFT is exact (Sterbenz), and the
    sum of those small deviations loses nothing visible at the mean's scale."""
    d = values.astype(np.float64) - SHIFT
    return SHIFT + d.sum(dtype=np.float64) / d.size


def _ulps(got, exact):
    return abs(got - exact) / np.spacing(exact)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_one_long_row(num_threads):
    # one unit of 4 Mi values: blocks of FN_BLOCK merged in order (seg_units /
    # seg_split)
    x = _data((1, 1 << 22), 1)
    mean, _ = fastnorm.moments(x, axis=1, num_threads=num_threads)
    assert _ulps(float(mean[0]), _exact_mean(x)) <= 1.5


@pytest.mark.parametrize("num_threads", [1, 2])
def test_long_columns(num_threads):
    # 16 columns of 256 Ki rows: the column kernels' superblocks (col_slab_stats
    # on one thread, col_split's fold on two)
    x = _data((1 << 18, 16), 2)
    mean, _ = fastnorm.moments(x, axis=0, num_threads=num_threads)
    errors = [_ulps(float(mean[k]), _exact_mean(x[:, k])) for k in range(x.shape[1])]
    assert max(errors) <= 1.5


@pytest.mark.parametrize("num_threads", [1, 2])
def test_long_channels_of_short_planes(num_threads):
    # BatchNorm NCHW statistics over 20000 planes of 7 x 7 per channel: the
    # row-wise walk merges one segment row of its units at a time (col_fold)
    x = _data((20000, 4, 49), 3)
    mean, _ = fastnorm.moments(x, axis=(0, 2), num_threads=num_threads)
    errors = [_ulps(float(mean[k]), _exact_mean(x[:, k, :])) for k in range(x.shape[1])]
    assert max(errors) <= 1.5


def test_layer_norm_output_keeps_the_digits():
    # the normalized values of such a unit against a float64 formula around the
    # exact mean: their error is the mean's, divided by the std
    x = _data((1, 1 << 22), 4)
    eps = 1e-9
    y = fastnorm.layer_norm(x, eps=eps)
    d = x - _exact_mean(x)
    ref = d / np.sqrt((d * d).mean() + eps)
    assert np.max(np.abs(y - ref)) < 2e-9


def test_running_moments_over_many_batches():
    # 4000 batches of 1000 rows: the same merges, one per batch, in Python
    # (10 ulp off before they carried their rounding error)
    data = _data((4000 * 1000, 3), 6)
    exact = np.array([_exact_mean(data[:, k]) for k in range(3)])
    halves = [fastnorm.RunningMoments(axis=0), fastnorm.RunningMoments(axis=0)]
    whole = fastnorm.RunningMoments(axis=0)
    for i in range(4000):
        batch = data[i * 1000:(i + 1) * 1000]
        whole.update(batch)
        halves[i % 2].update(batch)
    merged = halves[0].merge(halves[1])
    for acc in (whole, merged):
        assert np.max(_ulps(acc.mean, exact)) <= 1.5
        np.testing.assert_allclose(acc.var(), data.var(axis=0), rtol=1e-11)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_channels_last_group_means(num_threads):
    # a group of 23 channels-last columns: its mean is the mean of theirs (3 ulp
    # off when the means were summed plainly)
    rng = np.random.default_rng(1)
    x = 1e5 + 1e-2 * rng.standard_normal((32, 14, 7, 23))
    exact = 1e5 + (x.reshape(32, -1) - 1e5).sum(axis=1) / x[0].size
    _, mean, _ = fastnorm.group_norm(x, 1, channel_axis=-1, return_stats=True, num_threads=num_threads)
    assert np.max(_ulps(np.asarray(mean).ravel(), exact)) <= 1.5


def _exact_var(x, axis):
    """Variance with the deviations from the exact mean (x - SHIFT is exact, and
    the mean of those deviations is taken in float64 around their own mean)."""
    d = x.astype(np.float64) - SHIFT
    return ((d - d.mean(axis=axis, keepdims=True)) ** 2).mean(axis=axis)


# Variances of units of several blocks: a Chan merge's deviation between block
# means rounded to double (at the mean's ulp) lost most of its digits; block means
# are held relative to the unit's first shift. Before: 4.6e-10 (a row), 2.1e-11
# (columns), 4.9e-11 (planes); mean 1e6 and std 1e-3 in columns: 1.2e-8.
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("shape,axis", [((1, 5000), 1), ((20000, 16), 0), ((200, 64), 0),
                                        ((64, 16, 7, 7), (0, 2, 3))], ids=str)
def test_variances_of_many_blocks(shape, axis, num_threads):
    x = _data(shape, seed=sum(shape))
    _, var = fastnorm.moments(x, axis=axis, num_threads=num_threads)
    ref = _exact_var(x, axis)
    assert np.max(np.abs(var / ref - 1)) < 1e-12


def test_column_variances_at_mean_1e6():
    x = 1e6 + SPREAD * np.random.default_rng(0).standard_normal((200, 64))
    _, var = fastnorm.moments(x, axis=0)
    d = x - 1e6                                   # exact
    ref = ((d - d.mean(axis=0)) ** 2).mean(axis=0)
    assert np.max(np.abs(var / ref - 1)) < 1e-12


# Units merged from several memory columns (channels-last GroupNorm groups; short
# planes walked as columns, a channel's L columns): the columns' means merged in
# the frame of the group's first column's reference. Merged as absolute values,
# variances came out 3.5e-10 (GroupNorm) and 7.6e-10 (moments over planes of 3
# values) off (relatively) for data N(3e5, 1e-2).
@pytest.mark.parametrize("num_threads", [1, 2])
def test_variances_of_units_merged_from_columns(num_threads):
    rng = np.random.default_rng(0)
    xg = 3e5 + 1e-2 * rng.standard_normal((4, 8, 8, 64))
    _, _, rstd = fastnorm.group_norm(xg, 8, channel_axis=-1, eps=0.0, return_stats=True, num_threads=num_threads)
    d = np.moveaxis(xg, -1, 1).reshape(4, 8, -1) - 3e5            # exact
    ref = ((d - d.mean(axis=2, keepdims=True)) ** 2).mean(axis=2)
    assert np.max(np.abs(1 / np.asarray(rstd) ** 2 / ref - 1)) < 1e-12
    xs = 3e5 + 1e-2 * rng.standard_normal((32, 16, 1, 3))
    _, var = fastnorm.moments(xs, axis=(0, 2, 3), num_threads=num_threads)
    d = xs - 3e5
    ref = ((d - d.mean(axis=(0, 2, 3), keepdims=True)) ** 2).mean(axis=(0, 2, 3))
    assert np.max(np.abs(var / ref - 1)) < 1e-12


# Tables of few columns (a whole number of vectors only every m rows) take their
# statistics as m rows at a time, columns k, K + k, ... of one wide row merged;
# LayerNorm over a Fortran-ordered array is such a table too (its rows are memory
# columns). Merged as absolute means, variances of data N(3e5, 1e-2) came out
# 1.6e-11 ((16384, 6)) and 1.8e-10 (LayerNorm (7, 128), Fortran order) off.
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("rows", [16384, 16387])
@pytest.mark.parametrize("cols", [3, 6, 7, 13])
def test_variances_of_narrow_tables(cols, rows, num_threads):
    x = 3e5 + 1e-2 * np.random.default_rng(cols).standard_normal((rows, cols))
    d = x - 3e5                                   # exact
    ref = ((d - d.mean(axis=0)) ** 2).mean(axis=0)
    _, var = fastnorm.moments(x, axis=0, num_threads=num_threads)
    assert np.max(np.abs(var / ref - 1)) < 1e-12
    _, _, rstd = fastnorm.batch_norm(x, eps=0.0, return_stats=True, num_threads=num_threads)
    assert np.max(np.abs(1 / np.asarray(rstd) ** 2 / ref - 1)) < 1e-12
    xt = np.asfortranarray(x.T[:, :128])
    dt = xt - 3e5
    ref_t = ((dt - dt.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    _, _, rstd_t = fastnorm.layer_norm(xt, eps=0.0, return_stats=True, num_threads=num_threads)
    assert np.max(np.abs(1 / np.asarray(rstd_t) ** 2 / ref_t - 1)) < 1e-12
