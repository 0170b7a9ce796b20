"""Units holding +-inf: the statistics NumPy's formulas give.

``np.mean`` of values holding +inf (and no -inf or NaN) is +inf, and ``np.var``
is NaN (``x - mean`` is ``inf - inf`` for the infinite value). The kernels shift
each block's sums by its first value and merge blocks by Chan's formula, whose
deviation ``mean_b - mean_a`` is NaN for two infinite means: before these cases
were handled, a unit whose first value was inf, or whose infinite values lay in
two blocks, or that was all inf, reported a NaN mean. Every layout of the
statistics (single-block and multi-block rows, many short rows, columns in
blocks and superblocks, few columns, NCHW planes, channels-last) is covered, at
one and two threads.
"""

import numpy as np
import pytest

import fastnorm

DTYPES = [np.float32, np.float64]

# (shape, reduced axes): the layouts the statistics are taken in
LAYOUTS = [
    ((6, 100), (1,)),                 # rows of one block
    ((3, 70001), (1,)),               # rows of many blocks, split across threads
    ((300, 7), (1,)),                 # many short rows
    ((3000, 70), (0,)),               # columns: blocks, superblocks, a vector chunk and single columns
    ((100000, 3), (0,)),              # few columns
    ((8, 5, 30, 30), (0, 2, 3)),      # NCHW channels (planes)
    ((4, 30, 30, 5), (0, 1, 2)),      # channels-last
    ((2, 3, 300, 300), (0, 2, 3)),    # long planes
]

# where the infinite values go in a unit, in the C order of its reduced axes
PATTERNS = {
    "first": lambda n: [(0, np.inf)],
    "middle": lambda n: [(n // 2, -np.inf)],
    "last": lambda n: [(n - 1, np.inf)],
    "two_blocks": lambda n: [(0, np.inf), (n - 1, np.inf)],
    "both_signs": lambda n: [(n // 3, np.inf), (2 * n // 3, -np.inf)],
    "all": None,                                    # every value +inf
}


def _units(x, axes):
    """x as (kept axes..., reduced axes...): a writable view."""
    kept = [a for a in range(x.ndim) if a not in axes]
    return np.moveaxis(x, kept + list(axes), range(x.ndim)), len(kept)


def _poisoned(shape, axes, pattern, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    view, nk = _units(x, axes)
    unit_shape = view.shape[nk:]
    n = int(np.prod(unit_shape))
    kept_shape = view.shape[:nk]
    last = tuple(s - 1 for s in kept_shape)
    for u in {(0,) * nk, last}:
        if pattern == "all":
            view[u] = np.inf
            continue
        for pos, value in PATTERNS[pattern](n):
            view[u + np.unravel_index(pos, unit_shape)] = value
    return x


def _assert_like_numpy(got, ref, rtol):
    got = np.asarray(got, np.float64)
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=rtol, atol=rtol)


def _rtol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("shape,axes", LAYOUTS, ids=str)
def test_moments_of_infinite_units_match_numpy(shape, axes, pattern, dtype, threads):
    x = _poisoned(shape, axes, pattern, dtype, seed=len(pattern))
    with np.errstate(all="ignore"):
        mean, var = fastnorm.moments(x, axis=axes, num_threads=threads)
        x64 = x.astype(np.float64)
        ref_mean, ref_var = x64.mean(axis=axes), x64.var(axis=axes)
    assert not np.isfinite(ref_mean).all()      # the case is what it claims to be
    _assert_like_numpy(mean, ref_mean, _rtol(dtype))
    _assert_like_numpy(var, ref_var, _rtol(dtype))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pattern", ["first", "two_blocks", "both_signs"])
def test_layer_norm_stats_of_infinite_rows(pattern, threads):
    x = _poisoned((5, 70001), (1,), pattern, np.float32, seed=1)
    with np.errstate(all="ignore"):
        y, mean, rstd = fastnorm.layer_norm(x, return_stats=True, num_threads=threads)
        ref = x.astype(np.float64).mean(axis=1)
    _assert_like_numpy(mean, ref, 1e-5)
    assert np.isfinite(y[1:4]).all() and np.isnan(y[[0, 4]]).all()


# NCHW planes; channels-last of few and of 64 channels; 2-D
BN_SHAPES = [((16, 6, 40, 40), 1), ((16, 40, 40, 6), -1), ((8, 40, 40, 64), -1), ((20000, 64), 1)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,channel_axis", BN_SHAPES, ids=str)
@pytest.mark.parametrize("pattern", ["first", "two_blocks", "both_signs", "all"])
def test_batch_norm_running_mean_of_infinite_channels(pattern, shape, channel_axis, threads):
    C = shape[channel_axis]
    axes = tuple(a for a in range(len(shape)) if a != channel_axis % len(shape))
    x = _poisoned(shape, axes, pattern, np.float64, seed=2)
    rm, rv = np.zeros(C), np.ones(C)
    with np.errstate(all="ignore"):
        fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True, momentum=1.0,
                            channel_axis=channel_axis, num_threads=threads)
        ref = x.mean(axis=axes)
    # PyTorch's batch mean is the sum's: +inf for a channel holding +inf
    _assert_like_numpy(rm, ref, 1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_group_norm_stats_of_infinite_groups(channel_axis, threads):
    shape = (4, 6, 50, 50) if channel_axis == 1 else (4, 50, 50, 6)
    x = np.random.default_rng(3).standard_normal(shape)
    if channel_axis == 1:
        x[0, 0, 0, 0] = np.inf          # the first value of group 0 of sample 0
        x[3, 5, 49, 49] = -np.inf       # the last of the last group
    else:
        x[0, 0, 0, 0] = np.inf
        x[3, 49, 49, 5] = -np.inf
    with np.errstate(all="ignore"):
        y, mean, rstd = fastnorm.group_norm(x, 2, channel_axis=channel_axis, return_stats=True,
                                            num_threads=threads)
    groups = np.moveaxis(x, channel_axis, 1).reshape(4, 2, -1)
    _assert_like_numpy(mean, groups.mean(axis=2), 1e-12)


def test_running_moments_of_infinite_batches():
    x = np.random.default_rng(4).standard_normal((4000, 6))
    x[0, 0] = np.inf                    # the first batch's first value
    x[[5, 3000], 1] = np.inf            # two batches hold +inf
    x[10, 2] = np.inf
    x[3000, 2] = -np.inf                # +inf and -inf: NaN
    x[:, 3] = np.inf                    # every value
    rm = fastnorm.RunningMoments(axis=0)
    for i in range(0, 4000, 500):
        rm.update(x[i:i + 500])
    halves = fastnorm.RunningMoments(axis=0).update(x[:1000])
    halves.merge(fastnorm.RunningMoments(axis=0).update(x[1000:]))
    with np.errstate(all="ignore"):
        ref_mean, ref_var = x.mean(axis=0), x.var(axis=0)
    for acc in (rm, halves):
        _assert_like_numpy(acc.mean, ref_mean, 1e-12)
        _assert_like_numpy(acc.var(), ref_var, 1e-12)
