"""Constant parts of an input among varying ones: zero-padded rows in a batch of
sequences, channels that a ReLU zeroed in a BatchNorm batch.

A constant block's float32 sums are 0 and 0, below the underflow threshold that
sends a block's sums to the double fallback; the kernels recognize it with a
compare pass (`all_equal` for rows, `col_fails_constant` for columns, in
src_c/norm_template.h) instead of rerunning its sums in double. These tests pin
what that must keep: constant parts normalize to exactly `bias`, the varying
parts (including a column of tiny varying values in the same chunk of 64
columns, which still takes the double fallback) match float64 references, and
the results do not depend on the thread count.
"""

import numpy as np
import pytest

import fastnorm
from reference import assert_close, batch_norm as ref_batch_norm, layer_norm as ref_layer_norm, rms_norm as ref_rms_norm

# (shape, constant channels): channels-last batches large enough for several
# superblocks of 1024 rows and for the split walk at two threads, a 2-D one,
# and a batch with more than one chunk of 64 channels
CHANNEL_CASES = [((8, 14, 14, 64), [0, 1, 5, 63]), ((4, 28, 28, 96), [3, 64, 65, 95]),
                 ((20000, 16), [0, 15]), ((2, 56, 56, 24), list(range(8)))]


def _relu_batch(shape, constant, value, rng):
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32) + np.float32(2.0)
    x[..., constant] = np.float32(value)
    return x


@pytest.mark.parametrize("shape,constant", CHANNEL_CASES, ids=str)
@pytest.mark.parametrize("value", [0.0, 3.0, -1e4], ids=repr)
def test_constant_channels_among_varying(shape, constant, value, rng):
    x = _relu_batch(shape, constant, value, rng)
    C = shape[-1]
    w = np.linspace(0.5, 2, C).astype(np.float32)
    b = np.linspace(-1, 1, C).astype(np.float32)
    runs = [fastnorm.batch_norm(x, w, b, training=True, channel_axis=-1, return_stats=True, num_threads=nt)
            for nt in (1, 2)]
    for got in runs[1:]:
        for a, e in zip(got, runs[0]):
            np.testing.assert_array_equal(a, e)
    y, mean, rstd = runs[0]
    np.testing.assert_array_equal(y[..., constant], np.broadcast_to(b[constant], y[..., constant].shape))
    np.testing.assert_array_equal(mean[constant], np.float32(value))
    expected = ref_batch_norm(x, w, b, training=True, channel_axis=-1)[0]
    assert_close(y, expected, np.float32)


@pytest.mark.parametrize("shape", [(4, 28, 28, 64), (20000, 16)], ids=str)
def test_tiny_varying_channel_beside_constant_ones(shape, rng):
    # a column of values around 1e-20 fails the float32 sums for underflow too,
    # and is not constant: its chunk must still be summed in double
    x = _relu_batch(shape, [0, 1], 0.0, rng)
    x[..., 2] = (1e-20 * rng.standard_normal(shape[:-1])).astype(np.float32)
    _, mean, rstd = fastnorm.batch_norm(x, training=True, channel_axis=-1, eps=0.0, return_stats=True)
    xd = x.reshape(-1, shape[-1]).astype(np.float64)
    np.testing.assert_allclose(mean[2], xd[:, 2].mean(), rtol=1e-5)
    np.testing.assert_allclose(1.0 / np.float64(rstd[2]) ** 2, xd[:, 2].var(), rtol=1e-5)
    assert mean[0] == 0 and np.isinf(rstd[0])


@pytest.mark.parametrize("shape", [(32, 512), (4096, 96), (600, 3000)], ids=str)
@pytest.mark.parametrize("value", [0.0, 1.0, -7.5], ids=repr)
def test_constant_rows_among_varying(shape, value, rng):
    # padding rows: every other row, and a run of rows at the end
    x = rng.standard_normal(shape).astype(np.float32)
    x[::2] = np.float32(value)
    x[-shape[0] // 4:] = np.float32(value)
    D = shape[-1]
    w = np.linspace(0.5, 2, D).astype(np.float32)
    b = np.linspace(-1, 1, D).astype(np.float32)
    runs = [fastnorm.layer_norm(x, w, b, num_threads=nt) for nt in (1, 2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    y = runs[0]
    np.testing.assert_array_equal(y[::2], np.broadcast_to(b, y[::2].shape))
    assert_close(y, ref_layer_norm(x, w, b)[0], np.float32)
    yr = fastnorm.rms_norm(x, w)
    if value == 0.0:
        np.testing.assert_array_equal(yr[::2], 0)
    assert_close(yr, ref_rms_norm(x, w, dtype=np.float32)[0], np.float32)


@pytest.mark.parametrize("D", [64, 512, 3000], ids=str)
def test_tiny_varying_rows_beside_constant_ones(D, rng):
    # rows of values around 1e-20 fail the float32 sums for underflow like
    # constant rows, and must still be summed in double
    x = (1e-20 * rng.standard_normal((64, D))).astype(np.float32)
    x[::2] = 0
    _, mean, rstd = fastnorm.layer_norm(x, eps=0.0, return_stats=True)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(mean[1::2], xd[1::2].mean(-1), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(1.0 / np.float64(rstd[1::2]) ** 2, xd[1::2].var(-1), rtol=1e-5)
    assert (mean[::2] == 0).all() and np.isinf(rstd[::2]).all()
    _, rrstd = fastnorm.rms_norm(x, eps=0.0, return_stats=True)
    np.testing.assert_allclose(1.0 / np.float64(rrstd[1::2]) ** 2, (xd[1::2] ** 2).mean(-1), rtol=1e-5)
