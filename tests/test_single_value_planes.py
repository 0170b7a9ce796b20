"""Planes of one value: GroupNorm and BatchNorm over (N, C, 1, 1), BatchNorm on one row.

After a global pooling a batch is (N, C, 1, 1). GroupNorm's units are then Cg
channels of one value each, laid end to end; the kernels take them as one
segment of Cg values whose weight changes along it (src_c fn_seg_joined), and the
backward sums its parameter gradients per channel of each group. BatchNorm over
(N, C, 1, 1) is BatchNorm over the (N, C) table, and inference on a single row
(an (1, C) serving batch) takes the compiled fast path. These tests hold those
calls to float64 references, to the general path's bits and to the same bits at
every thread count.
"""

import numpy as np
import pytest

import fastnorm
from reference import assert_close, assert_same_results
from test_backward import bn_backward64, bn_forward64, close, close_grads
from test_group_norm import _ref_backward as gn_backward64
from test_group_norm import ref_group_norm

# (N, C, G): few units; enough units (N * G >= 128) for the backward's grouped
# parameter partials; groups of one channel (InstanceNorm-like) and one group
GROUPED = [(3, 8, 2), (300, 64, 4), (40, 2048, 32), (5, 12, 12), (200, 6, 1)]
TRAILING = [(1, 1), (1,), ()]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)


def _params(C, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(C) * 0.5 + 1).astype(dtype), rng.standard_normal(C).astype(dtype))


@pytest.mark.parametrize("N, C, G", GROUPED, ids=str)
@pytest.mark.parametrize("trailing", TRAILING, ids=str)
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
def test_group_norm_matches_reference(N, C, G, trailing, affine, dtype):
    x = _data((N, C) + trailing, dtype)
    w, b = _params(C, dtype) if affine else (None, None)
    y, mean, rstd = fastnorm.group_norm(x, G, w, b, return_stats=True)
    ry, rmean, rrstd = ref_group_norm(x, G, w, b)
    assert_close(y, ry, dtype, scale=4)
    assert_close(mean, rmean, dtype)
    assert_close(rstd, rrstd, dtype)


@pytest.mark.parametrize("N, C, G", GROUPED, ids=str)
@pytest.mark.parametrize("trailing", TRAILING, ids=str)
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
def test_group_norm_backward_matches_reference(N, C, G, trailing, affine, dtype):
    x = _data((N, C) + trailing, dtype)
    dy = _data(x.shape, dtype, seed=2)
    w = _params(C, dtype)[0] if affine else None
    _, mean, rstd = fastnorm.group_norm(x, G, w, return_stats=True)
    got = fastnorm.group_norm_backward(dy, x, G, mean, rstd, w)
    want = gn_backward64(x, G, np.ones(C) if w is None else w, dy, 1e-5, 1)
    close_grads(got, want, dtype, affine)


@pytest.mark.parametrize("N, C, G", GROUPED, ids=str)
def test_group_norm_same_bits_at_every_thread_count(N, C, G, dtype):
    x = _data((N, C, 1, 1), dtype)
    dy = _data(x.shape, dtype, seed=2)
    w, b = _params(C, dtype)
    y, mean, rstd = fastnorm.group_norm(x, G, w, b, return_stats=True, num_threads=1)
    grads = fastnorm.group_norm_backward(dy, x, G, mean, rstd, w, num_threads=1)
    for nt in (2, 3, 4):
        assert_same_results(fastnorm.group_norm(x, G, w, b, return_stats=True, num_threads=nt), (y, mean, rstd))
        assert_same_results(fastnorm.group_norm_backward(dy, x, G, mean, rstd, w, num_threads=nt), grads)
    # (N, C, 1, 1) and (N, C) are one memory layout: the same bits
    flat = (x.reshape(N, C), dy.reshape(N, C))
    assert_same_results(fastnorm.group_norm(flat[0], G, w, b, return_stats=True),
                        (y.reshape(N, C), mean, rstd))
    g2 = fastnorm.group_norm_backward(flat[1], flat[0], G, mean, rstd, w)
    assert_same_results(g2, (grads[0].reshape(N, C),) + grads[1:])


@pytest.mark.parametrize("N, C", [(3, 8), (300, 64), (64, 2048)], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batch_norm_over_pooled_batch(N, C, training, dtype, num_threads):
    x = _data((N, C, 1, 1), dtype)
    dy = _data(x.shape, dtype, seed=2)
    w, b = _params(C, dtype)
    rm, rv = _data(C, dtype, seed=3), (np.abs(_data(C, dtype, seed=4)) + 0.5).astype(dtype)
    running = dict(running_mean=rm, running_var=rv) if not training else {}
    y, mean, invstd = fastnorm.batch_norm(x, w, b, training=training, return_stats=True,
                                          num_threads=num_threads, **running)
    ry = bn_forward64(x, w, b, 1, training, running=None if training else (rm, rv), eps=1e-5)
    assert_close(y, ry, dtype, scale=4)
    # the (N, C) table gives the same bits, forward and backward
    flat = fastnorm.batch_norm(x.reshape(N, C), w, b, training=training, return_stats=True,
                               num_threads=num_threads, **running)
    assert_same_results(flat, (y.reshape(N, C), mean, invstd))
    dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, training=training,
                                              num_threads=num_threads)
    rdx, rdw, rdb = bn_backward64(dy, x, w, 1, training, running=None if training else (rm, rv), eps=1e-5)
    close(dx, rdx, dtype, "dx")
    close(dw, rdw, dtype, "dweight")
    close(db, rdb, dtype, "dbias")
    g2 = fastnorm.batch_norm_backward(dy.reshape(N, C), x.reshape(N, C), mean, invstd, w,
                                      training=training, num_threads=num_threads)
    assert_same_results(g2, (dx.reshape(N, C), dw, db))


@pytest.mark.parametrize("shape", [(1, 5), (1, 64), (1, 2048), (1, 300, 1, 1)], ids=str)
def test_batch_norm_inference_on_one_row(shape, dtype):
    x = _data(shape, dtype)
    C = shape[1]
    w, b = _params(C, dtype)
    rm, rv = _data(C, dtype, seed=3), (np.abs(_data(C, dtype, seed=4)) + 0.5).astype(dtype)
    y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False)
    assert_close(y, bn_forward64(x, w, b, 1, False, running=(rm, rv), eps=1e-5), dtype, scale=4)
    # running statistics as lists take the general path: the same bits
    general = fastnorm.batch_norm(x, w, b, running_mean=rm.tolist(), running_var=rv.tolist(), training=False)
    np.testing.assert_array_equal(y, general)
    out = np.full_like(x, np.nan)
    assert fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, out=out) is out
    np.testing.assert_array_equal(out, y)
    # training needs two values per channel, whatever the path
    with pytest.raises(ValueError, match="batch_norm"):
        fastnorm.batch_norm(x, w, b, training=True)
