"""Caller-owned outputs of 48 MB and more are written with non-temporal stores
(fn_norm_args.stream), and those of 16 MB and more when the normalize is a pass
of its own (inference BatchNorm, the column kernel's split walk, units of several
segments larger than L1, and on one thread every walk but the lean row groups and
the pipelined units). The stored values must be exactly those of the regular
stores: every case compares ``out=`` against the allocating call or against small
calls (regular stores) bit for bit, including outputs whose rows do not start on a
vector boundary and column counts that are not a multiple of the vector width (the
column kernel writes such rows as one flat range).
"""

import numpy as np
import pytest

import fastnorm

STREAM_BYTES = 48 * 1024 * 1024
STREAM_PASS_BYTES = 16 * 1024 * 1024


def _out_like(x, offset, min_bytes=STREAM_BYTES):
    """A C-contiguous out of x's shape whose data starts `offset` elements past a
    64-byte boundary."""
    buf = np.empty(x.size + 64, dtype=x.dtype)
    start = (-buf.ctypes.data % 64) // x.itemsize + offset
    out = buf[start:start + x.size].reshape(x.shape)
    assert out.flags.c_contiguous and out.nbytes >= min_bytes
    return out


@pytest.fixture(scope="module")
def columns():
    rng = np.random.default_rng(5)
    # 67 columns: rows of 268 bytes, so almost no row starts on a vector boundary
    return {K: (rng.standard_normal((STREAM_BYTES // (4 * K) + 257, K)) * 3 + 20).astype(np.float32)
            for K in (64, 67)}


@pytest.mark.parametrize("K", [64, 67])
@pytest.mark.parametrize("offset", [0, 1, 5])
def test_batch_norm_columns(columns, K, offset):
    x = columns[K]
    w = np.linspace(0.5, 2.0, K).astype(np.float32)
    b = np.linspace(-1.0, 1.0, K).astype(np.float32)
    ref = fastnorm.batch_norm(x, w, b, training=True, channel_axis=1)
    out = _out_like(x, offset)
    got = fastnorm.batch_norm(x, w, b, training=True, channel_axis=1, out=out)
    assert got is out
    np.testing.assert_array_equal(out, ref)
    rm = x[:1000].mean(axis=0).astype(np.float32)
    rv = x[:1000].var(axis=0).astype(np.float32)
    ref = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, channel_axis=1)
    fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, channel_axis=1, out=out)
    np.testing.assert_array_equal(out, ref)
    # and against the float64 formula on a few rows
    m, v = x.astype(np.float64).mean(axis=0), x.astype(np.float64).var(axis=0)
    rows = x[::50000].astype(np.float64)
    expected = (rows - m) / np.sqrt(v + 1e-5) * w + b
    np.testing.assert_allclose(out[::50000], (rows - rm) / np.sqrt(rv.astype(np.float64) + 1e-5) * w + b,
                               rtol=1e-5, atol=1e-5)
    assert expected.shape == out[::50000].shape


@pytest.mark.parametrize("offset", [0, 3])
def test_layer_norm_and_rms_rows(offset):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((STREAM_BYTES // (4 * 4099) + 3, 4099)) + 7).astype(np.float32)
    w = rng.standard_normal(4099).astype(np.float32)
    out = _out_like(x, offset)
    np.testing.assert_array_equal(fastnorm.layer_norm(x, w, w, out=out), fastnorm.layer_norm(x, w, w))
    np.testing.assert_array_equal(fastnorm.rms_norm(x, w, out=out), fastnorm.rms_norm(x, w))
    x64 = x[:4].astype(np.float64)
    m, v = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
    np.testing.assert_allclose(fastnorm.layer_norm(x, w, w, out=out)[:4], (x64 - m) / np.sqrt(v + 1e-5) * w + w,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("shape", [(24, 16, 115, 115), (128, 680, 7, 7)], ids=str)
def test_inference_batch_norm_planes(shape, offset):
    # over 16 MB of float32 NCHW planes: the statistics-given walk streams planes of
    # 115 x 115 values (almost none starts on a vector boundary) and writes 7 x 7
    # planes with regular stores (FN_STREAM_SEGMENT_BYTES)
    rng = np.random.default_rng(7)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 5).astype(np.float32)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    rm = rng.standard_normal(C).astype(np.float32) + 5
    rv = (rng.random(C) + 0.5).astype(np.float32)
    kw = dict(running_mean=rm, running_var=rv, training=False)
    out = _out_like(x, offset, STREAM_PASS_BYTES)
    assert fastnorm.batch_norm(x, w, b, out=out, **kw) is out
    np.testing.assert_array_equal(out, fastnorm.batch_norm(x, w, b, **kw))
    shape = (1, C, 1, 1)
    expected = ((x[::5].astype(np.float64) - rm.reshape(shape)) / np.sqrt(rv.reshape(shape).astype(np.float64) + 1e-5)
                * w.reshape(shape) + b.reshape(shape))
    np.testing.assert_allclose(out[::5], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 3])
def test_layer_norm_short_rows(dtype, offset):
    # rows of one block, streamed as one run from the output's first vector
    # boundary: the vectors that span two rows are joined from both rows' values
    D = 777
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((STREAM_BYTES // (np.dtype(dtype).itemsize * D) + 5, D)) + 7).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    out = _out_like(x, offset)
    fastnorm.layer_norm(x, w, w, out=out)
    # each row's values depend on that row alone: small calls are the reference
    for rows in (slice(0, 40), slice(20000, 20040), slice(-40, None)):
        np.testing.assert_array_equal(out[rows], fastnorm.layer_norm(x[rows], w, w))
    x64 = x[:4].astype(np.float64)
    m, v = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
    np.testing.assert_allclose(out[:4], (x64 - m) / np.sqrt(v + 1e-5) * w + w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("offset", [0, 1, 5])
@pytest.mark.parametrize("op", ["batch", "instance"])
def test_backward_planes(op, offset):
    # dx of 16 MB and more from the unit walk (BatchNorm NCHW, InstanceNorm) is
    # streamed from its first vector boundary; planes of 57 x 61 values, so most
    # planes start off a boundary. Each unit's gradients depend on its own data
    # alone, and a small call (regular stores) over some of them is the reference.
    rng = np.random.default_rng(9)
    shape = (STREAM_PASS_BYTES // (4 * 64 * 57 * 61) + 2, 64, 57, 61)
    x = (rng.standard_normal(shape) * 2 + 5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(64).astype(np.float32)
    out = _out_like(x, offset, STREAM_PASS_BYTES)
    if op == "batch":
        _, mean, invstd = fastnorm.batch_norm(x, w, None, training=True, return_stats=True)
        dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, out=out)
        # channels 5 and 6 over every sample, in a call of their own
        part = np.ascontiguousarray(x[:, 5:7]), np.ascontiguousarray(dy[:, 5:7])
        want = fastnorm.batch_norm_backward(part[1], part[0], mean[5:7], invstd[5:7], w[5:7])
        np.testing.assert_array_equal(dx[:, 5:7], want[0])
        np.testing.assert_array_equal(dw[5:7], want[1])
        m64 = x[:, 5].astype(np.float64).mean()
        v64 = x[:, 5].astype(np.float64).var()
        xh = (x[:, 5].astype(np.float64) - m64) / np.sqrt(v64 + 1e-5)
        g = dy[:, 5].astype(np.float64)
        ref = w[5] / np.sqrt(v64 + 1e-5) * (g - g.mean() - xh * (g * xh).mean())
    else:
        _, mean, invstd = fastnorm.instance_norm(x, w, None, return_stats=True)
        dx, dw, db = fastnorm.instance_norm_backward(dy, x, mean, invstd, w, out=out)
        # the last two samples, in a call of their own
        want = fastnorm.instance_norm_backward(dy[-2:], x[-2:], mean[-2:], invstd[-2:], w)
        np.testing.assert_array_equal(dx[-2:], want[0])
        x64 = x[-1, 5].astype(np.float64)
        xh = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-5)
        g = dy[-1, 5].astype(np.float64)
        ref = w[5] / np.sqrt(x64.var() + 1e-5) * (g - g.mean() - xh * (g * xh).mean())
        dx = dx[-1:]
    np.testing.assert_allclose(dx[:, 5] if op == "batch" else dx[0, 5], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 3])
def test_layer_norm_backward_rows(dtype, offset):
    # rows of one block: dx of 16 MB and more is streamed from each row's first
    # vector boundary on, while the next row's sums are taken in the same loop;
    # a row's dx depends on that row alone, and small calls are the reference
    D = 777
    rng = np.random.default_rng(10)
    rows = STREAM_PASS_BYTES // (np.dtype(dtype).itemsize * D) + 5
    x = (rng.standard_normal((rows, D)) + 3).astype(dtype)
    dy = rng.standard_normal((rows, D)).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    _, mean, rstd = fastnorm.layer_norm(x, w, None, return_stats=True)
    out = _out_like(x, offset, STREAM_PASS_BYTES)
    dx = fastnorm.layer_norm_backward(dy, x, mean, rstd, w, out=out)[0]
    assert dx is out
    for r in (slice(0, 70), slice(rows // 2, rows // 2 + 70), slice(-70, None)):
        want = fastnorm.layer_norm_backward(dy[r], x[r], mean[r], rstd[r], w)[0]
        np.testing.assert_array_equal(dx[r], want)
    x64, g = x[:3].astype(np.float64), dy[:3].astype(np.float64) * w
    m, v = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
    xh = (x64 - m) / np.sqrt(v + 1e-5)
    ref = (g - g.mean(axis=1, keepdims=True) - xh * (g * xh).mean(axis=1, keepdims=True)) / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(dx[:3], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["batch", "group"])
@pytest.mark.parametrize("K", [64, 67])
@pytest.mark.parametrize("big", [False, True], ids=["small", "16MB"])
def test_backward_columns_same_bits_at_any_offset(op, K, big):
    # channels-last dx is written as one flat range from its first vector boundary
    # on (streamed from 16 MB on): an out= placed 0, 1 or 5 elements past a line
    # moves every value between the masked head, the full vectors and the masked
    # tail, and none of them may change a bit
    rng = np.random.default_rng(11)
    rows = (STREAM_PASS_BYTES // (4 * K) + 99) if big else 517
    x = (rng.standard_normal((rows, K)) * 2 + 5).astype(np.float32)
    dy = rng.standard_normal((rows, K)).astype(np.float32)
    w = rng.standard_normal(K).astype(np.float32)
    if op == "batch":
        _, mean, rstd = fastnorm.batch_norm(x, w, None, training=True, channel_axis=1, return_stats=True)
        run = lambda out: fastnorm.batch_norm_backward(dy, x, mean, rstd, w, channel_axis=1, out=out)[0]
    else:
        groups = K if K == 67 else 16
        x3, dy3 = x.reshape(1, rows, K), dy.reshape(1, rows, K)
        _, mean, rstd = fastnorm.group_norm(x3, groups, w, None, channel_axis=-1, return_stats=True)
        run = lambda out: fastnorm.group_norm_backward(dy3, x3, groups, mean, rstd, w, channel_axis=-1,
                                                       out=out.reshape(1, rows, K))[0].reshape(rows, K)
    results = [run(_out_like(x, off, 0)).copy() for off in (0, 1, 5)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    if op == "batch":
        # a column against the float64 closed form
        x64, g = x[:, 3].astype(np.float64), dy[:, 3].astype(np.float64)
        m, v = x64.mean(), x64.var()
        xh = (x64 - m) / np.sqrt(v + 1e-5)
        ref = w[3] / np.sqrt(v + 1e-5) * (g - g.mean() - xh * (g * xh).mean())
        np.testing.assert_allclose(results[0][:, 3], ref, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("offset", [0, 1, 5])
@pytest.mark.parametrize("op", ["batch", "instance", "group", "group-general", "layer"])
def test_units_normalized_from_cache(op, offset, threads):
    # 16 MB and more of units larger than L1, each read whole for its statistics
    # and then normalized from cache: streamed when they are made of several
    # segments (training BatchNorm's planes, GroupNorm's channels), and on one
    # thread also InstanceNorm's planes and LayerNorm's long rows. Planes of
    # 91 x 91 or 181 x 181 values and rows of 8195, so most segments start off a
    # vector boundary. A unit's values depend on its own data alone: a small call
    # over a few units (regular stores) is the reference, bit for bit.
    # "group-general": parameters given as lists take the Python-level path.
    rng = np.random.default_rng(12)
    shape = {"batch": (8, 66, 91, 91), "instance": (4, 33, 181, 181), "group": (4, 64, 129, 129),
             "group-general": (4, 64, 129, 129), "layer": (520, 8195)}[op]
    x = (rng.standard_normal(shape) * 2 + 5).astype(np.float32)
    C = shape[-1] if op == "layer" else shape[1]
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    out = _out_like(x, offset, STREAM_PASS_BYTES)
    if op == "batch":
        assert fastnorm.batch_norm(x, w, b, training=True, out=out, num_threads=threads) is out
        part = slice(5, 7)
        want = fastnorm.batch_norm(np.ascontiguousarray(x[:, part]), w[part], b[part], training=True)
        np.testing.assert_array_equal(out[:, part], want)
        x64 = x[:, 5].astype(np.float64)
        ref = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-5) * w[5] + b[5]
        np.testing.assert_allclose(out[:, 5], ref, rtol=1e-4, atol=1e-4)
        return
    if op == "layer":
        assert fastnorm.layer_norm(x, w, b, out=out, num_threads=threads) is out
        for rows in (slice(0, 3), slice(300, 303), slice(-3, None)):
            np.testing.assert_array_equal(out[rows], fastnorm.layer_norm(x[rows], w, b))
        x64 = x[:2].astype(np.float64)
        m, v = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
        np.testing.assert_allclose(out[:2], (x64 - m) / np.sqrt(v + 1e-5) * w + b, rtol=1e-4, atol=1e-4)
        return
    if op == "instance":
        assert fastnorm.instance_norm(x, w, b, out=out, num_threads=threads) is out
        want = fastnorm.instance_norm(x[-1:], w, b)
        group = x[-1, 5:6].astype(np.float64)
    else:
        wg, bg = (w.tolist(), b.tolist()) if op == "group-general" else (w, b)
        assert fastnorm.group_norm(x, 32, wg, bg, out=out, num_threads=threads) is out
        want = fastnorm.group_norm(x[-1:], 32, w, b)
        group = x[-1, 4:6].astype(np.float64)
    np.testing.assert_array_equal(out[-1:], want)
    ref = (group[-1] - group.mean()) / np.sqrt(group.var() + 1e-5) * w[5] + b[5]
    np.testing.assert_allclose(out[-1, 5], ref, rtol=1e-4, atol=1e-4)
