"""Walks chosen by the size of the L2 cache (``fastnorm._ext.l2_cache_bytes``).

Training BatchNorm over short planes is walked row-wise: each thread takes the
statistics of a group of channels (FN_ROWWISE_BYTES, 512 KiB), then normalizes
the group while it is still in L2. A core with less than 1 MiB of L2 cannot keep
a group there; such machines take the statistics of all channels in a pass of
their own and normalize as inference does (seg_norm's rowwise_apart, in
src_c/norm_template.h), on inputs of at least four times the L2 whose planes
hold a vector or more and whose parameters are per channel. Both walks merge the
same blocks in the same order, so the results must be the same bits whatever
the cache size, and match the float64 formula. The size is set per test and
restored, so both walks run on any machine.
"""

import numpy as np
import pytest

import fastnorm
import reference
from fastnorm import _ext

SMALL_L2 = 256 * 1024      # two passes from 1 MiB of input on
LARGE_L2 = 4 * 1024 * 1024  # the row-wise walk always


@pytest.fixture
def set_l2():
    before = _ext.l2_cache_bytes()
    yield _ext.l2_cache_bytes
    _ext.l2_cache_bytes(before)


def _train(x, w, b, nt, out=None):
    C = x.shape[1]
    rm = np.linspace(-1, 1, C).astype(x.dtype)
    rv = np.linspace(0.5, 2, C).astype(x.dtype)
    y, mean, invstd = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=True,
                                          out=out, return_stats=True, num_threads=nt)
    return y, mean, invstd, rm, rv


def _input(shape, dtype, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 5
    # a channel far from zero next to one of tiny spread, where the walks'
    # rounding would show first
    x[:, 1] = 1e4 + rng.standard_normal(x[:, 1].shape)
    x[:, 2] = 3.0 + 1e-3 * rng.standard_normal(x[:, 2].shape)
    return x.astype(dtype)


@pytest.mark.parametrize("shape,dtype", [
    ((64, 256, 14, 14), np.float32),   # 12 MiB: the benchmark's case
    ((128, 64, 7, 7), np.float32),     # 1.5 MiB: just above 4x the small L2
    ((48, 96, 5, 7), np.float64),      # planes of 35 values, float64
    ((256, 32, 3, 3), np.float32),     # planes of 9 values: one vector and a tail
    ((256, 512, 2, 2), np.float32),    # planes under a vector: row-wise either way
])
@pytest.mark.parametrize("params", ["affine", "weight", "none"])
def test_rowwise_training_same_bits_any_l2(set_l2, shape, dtype, params, num_threads):
    x = _input(shape, dtype)
    C = shape[1]
    rng = np.random.default_rng(9)
    w = rng.standard_normal(C).astype(dtype) if params != "none" else None
    b = rng.standard_normal(C).astype(dtype) if params == "affine" else None
    set_l2(LARGE_L2)
    fused = _train(x, w, b, num_threads)
    set_l2(SMALL_L2)
    apart = _train(x, w, b, num_threads)
    reference.assert_same_results(apart, fused)
    y64, mean64, invstd64, _, _ = reference.batch_norm(x, w, b, training=True)
    reference.assert_close(apart[0], y64, dtype, err_msg="y")
    np.testing.assert_allclose(apart[1].astype(np.float64), mean64, rtol=reference.tol(dtype)[0])
    np.testing.assert_allclose(apart[2].astype(np.float64), invstd64, rtol=reference.tol(dtype)[0])


@pytest.mark.parametrize("where", ["out", "inplace", "offset"])
def test_rowwise_training_outputs_any_l2(set_l2, where):
    """out= (16.8 MiB: streamed when normalized apart), in place, and x off a vector boundary."""
    shape = (176, 128, 14, 14)
    x = _input(shape, np.float32, seed=4)
    w = np.linspace(0.5, 1.5, shape[1]).astype(np.float32)
    b = np.linspace(-1, 1, shape[1]).astype(np.float32)
    results = []
    for l2 in (LARGE_L2, SMALL_L2):
        set_l2(l2)
        if where == "out":
            out = np.full_like(x, np.nan)
            got = _train(x, w, b, 2, out=out)
            assert got[0] is out
        elif where == "inplace":
            xi = x.copy()
            got = _train(xi, w, b, 2, out=xi)
            assert got[0] is xi
        else:
            buf = np.empty(x.size + 1, np.float32)
            xo = buf[1:].reshape(shape)
            xo[...] = x
            got = _train(xo, w, b, 2)
        results.append(got)
    reference.assert_same_results(results[1], results[0])
    reference.assert_close(results[1][0], reference.batch_norm(x, w, b, training=True)[0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_alone_same_bits_any_group(dtype, num_threads):
    """Statistics alone (moments, the first pass of the walk apart) keep nothing in
    L2 for a normalize: their row-wise groups take 64 channels, where a call that
    normalizes takes as many as fit FN_ROWWISE_BYTES. A channel's statistics are
    the same bits in a group of 64, of 10 and of 2 (one channel alone is not
    walked row-wise), and so is the mean of training."""
    x = _input((64, 256, 14, 14), dtype, seed=8)
    mean, var = fastnorm.moments(x, axis=(0, 2, 3), num_threads=num_threads)
    for k0, k1 in [(0, 10), (37, 39), (190, 256)]:
        m, v = fastnorm.moments(x[:, k0:k1].copy(), axis=(0, 2, 3), num_threads=num_threads)
        np.testing.assert_array_equal(m, mean[k0:k1])
        np.testing.assert_array_equal(v, var[k0:k1])
    _, mean_bn, _ = fastnorm.batch_norm(x, training=True, return_stats=True, num_threads=num_threads)
    np.testing.assert_array_equal(mean_bn, mean)
    mean64, var64 = reference.moments(x, (0, 2, 3))
    np.testing.assert_allclose(mean.astype(np.float64), mean64, rtol=reference.tol(dtype)[0])
    np.testing.assert_allclose(var.astype(np.float64), var64, rtol=reference.tol(dtype)[0])


def test_group_norm_short_planes_any_l2(set_l2):
    """GroupNorm's units have a weight per channel: row-wise at any L2 size."""
    x = _input((64, 256, 7, 7), np.float32, seed=6)
    w = np.linspace(0.5, 1.5, 256).astype(np.float32)
    b = np.linspace(-1, 1, 256).astype(np.float32)
    got = []
    for l2 in (LARGE_L2, SMALL_L2):
        set_l2(l2)
        got.append(fastnorm.group_norm(x, 32, w, b, num_threads=2))
    np.testing.assert_array_equal(got[1], got[0])


def test_l2_cache_bytes_set_and_detect(set_l2):
    detected = set_l2(0)
    assert set_l2() == detected > 0
    assert set_l2(12345) == detected
    assert set_l2() == 12345
    assert set_l2(0) == 12345
    assert set_l2() == detected
    with pytest.raises(ValueError, match="nbytes"):
        set_l2(-1)
    assert set_l2() == detected
