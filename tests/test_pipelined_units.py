"""Units of 32-64 KiB with long segments, pipelined in inputs that stay in cache.

Inputs under FN_STREAM_PASS_BYTES (16 MiB) whose units (a GroupNorm group, a
BatchNorm channel; an InstanceNorm plane or a row only when longer than 32 KiB,
shorter ones take the piped row walk, tests/test_long_rows_piped.py) hold from
half of L1 up to FN_PIPE_UNIT_BYTES (64 KiB), in segments of at least 1 KiB,
take the pipelined walk: the statistics of the next unit are taken between the
normalize blocks of the current one (seg_units_pipelined in
src_c/norm_template.h). Larger inputs take the walk a unit at a time. Both
merge the same blocks in the same order, so the same unit must give the same
bits in a small input and in a large one, and match the float64 formula.
"""

import numpy as np
import pytest

import fastnorm
import reference

LARGE_BYTES = 16 * 1024 * 1024  # FN_STREAM_PASS_BYTES: from here on, a unit at a time


def _input(shape, dtype, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3 + 7
    # a unit far from zero and one of tiny spread, where rounding would show first
    x[:, :8] = 1e4 + rng.standard_normal(x[:, :8].shape)
    x[:, 8:16] = 2.0 + 1e-3 * rng.standard_normal(x[:, 8:16].shape)
    return x.astype(dtype)


def _mean_rtol(dtype):
    # the means come back in x's dtype: one rounding
    return 1.2e-7 if dtype == np.float32 else 1e-14


# (shape of the large input, groups): units of 32 and 64 KiB in planes of 4 or
# 8 KiB; two of the samples make the small input
GROUP_CASES = [
    ((16, 256, 32, 32), 32, np.float32),   # 8 channels x 4 KiB: 32 KiB, the benchmark's unit
    ((16, 256, 32, 32), 16, np.float32),   # 64 KiB
    ((16, 128, 32, 32), 32, np.float64),   # 4 channels x 8 KiB: 32 KiB
    ((16, 128, 32, 32), 16, np.float64),   # 64 KiB
]


@pytest.mark.parametrize("shape,G,dtype", GROUP_CASES)
def test_group_norm_same_bits_small_and_large_input(shape, G, dtype, num_threads):
    x = _input(shape, dtype)
    assert x.nbytes >= LARGE_BYTES
    C = shape[1]
    w = np.linspace(0.5, 1.5, C).astype(dtype)
    b = np.linspace(-1, 1, C).astype(dtype)
    y_l, m_l, r_l = fastnorm.group_norm(x, G, w, b, return_stats=True, num_threads=num_threads)
    small = x[:2].copy()
    y_s, m_s, r_s = fastnorm.group_norm(small, G, w, b, return_stats=True, num_threads=num_threads)
    np.testing.assert_array_equal(m_s, m_l[:2])
    np.testing.assert_array_equal(r_s, r_l[:2])
    np.testing.assert_array_equal(y_s, y_l[:2])
    # a group's values lie end to end: the float64 LayerNorm of its row
    yg, mean, rstd = reference.layer_norm(small.reshape(2 * G, -1))
    bshape = (1, C, 1, 1)
    expected = yg.reshape(small.shape) * w.reshape(bshape).astype(np.float64) + b.reshape(bshape)
    np.testing.assert_allclose(m_s.ravel(), mean, rtol=_mean_rtol(dtype))
    reference.assert_close(r_s.ravel(), rstd, dtype, scale=1e3)
    reference.assert_close(y_s, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_rows_same_bits_small_and_large_input(dtype, num_threads):
    # rows of 48 KiB without parameters (with weight and bias they are tiled;
    # rows of up to 32 KiB take the piped walk at any size, test_long_rows_piped)
    n = 49152 // np.dtype(dtype).itemsize
    rows = LARGE_BYTES // (n * np.dtype(dtype).itemsize)
    x = _input((rows, n), dtype)
    y_l, m_l, r_l = fastnorm.layer_norm(x, return_stats=True, num_threads=num_threads)
    small = x[:64].copy()
    y_s, m_s, r_s = fastnorm.layer_norm(small, return_stats=True, num_threads=num_threads)
    np.testing.assert_array_equal(m_s, m_l[:64])
    np.testing.assert_array_equal(r_s, r_l[:64])
    np.testing.assert_array_equal(y_s, y_l[:64])
    reference.assert_close(y_s, reference.layer_norm(small)[0], dtype)


@pytest.mark.parametrize("shape,dtype", [((16, 256, 32, 32), np.float32), ((8, 256, 32, 32), np.float64)])
def test_batch_norm_training_same_bits_small_and_large_input(shape, dtype, num_threads):
    # channels of 64 KiB (16 or 8 planes of 1024 values); the first 64 channels
    # make the small input
    x = _input(shape, dtype)
    assert x.nbytes >= LARGE_BYTES
    C = shape[1]
    w = np.linspace(0.5, 1.5, C).astype(dtype)
    b = np.linspace(-1, 1, C).astype(dtype)
    rm_l, rv_l = np.zeros(C, dtype), np.ones(C, dtype)
    y_l, m_l, i_l = fastnorm.batch_norm(x, w, b, running_mean=rm_l, running_var=rv_l, training=True,
                                        return_stats=True, num_threads=num_threads)
    small = x[:, :64].copy()
    rm, rv = np.zeros(64, dtype), np.ones(64, dtype)
    y, mean, invstd = fastnorm.batch_norm(small, w[:64], b[:64], running_mean=rm, running_var=rv, training=True,
                                          return_stats=True, num_threads=num_threads)
    np.testing.assert_array_equal(mean, m_l[:64])
    np.testing.assert_array_equal(invstd, i_l[:64])
    np.testing.assert_array_equal(y, y_l[:, :64])
    np.testing.assert_array_equal(rm, rm_l[:64])
    np.testing.assert_array_equal(rv, rv_l[:64])
    y_ref, m_ref, inv_ref, rm_ref, rv_ref = reference.batch_norm(
        small, w[:64], b[:64], np.zeros(64), np.ones(64), training=True)
    np.testing.assert_allclose(mean, m_ref, rtol=_mean_rtol(dtype))
    reference.assert_close(invstd, inv_ref, dtype, scale=1e3)
    reference.assert_close(y, y_ref, dtype)
    reference.assert_close(rm, rm_ref, dtype, scale=1e4)
    reference.assert_close(rv, rv_ref, dtype, scale=1e4)
