"""Rows longer than a block (1024 values), up to 32 KiB a row (64 KiB in the
backward, in inputs of 12 MiB and more): each row's statistics (sums) are taken
block by block inside the loop that normalizes the row before (writes its dx),
see seg_rows_piped and bwd_dx_piped, FN_PIPED_MAX_ROW_BYTES and
FN_BWD_PIPED_MAX_ROW_BYTES in src_c/fn_internal.h. The forward walks such rows
so in inputs of any size; the backward's smaller inputs take one row at a time,
and statistics alone (`moments`) the unit walk. Every walk merges the same
blocks in the same order, so small calls over a few rows are the reference, bit
for bit: LayerNorm, RMSNorm, add+norm, InstanceNorm planes and the backward with
a weight, for rows whose last block is long, short or a single value, rows whose
blocks' float32 sums are taken again in double (a constant block, a block whose
first value lies far from the rest, an inf) near both ends and in the middle of
the input, and inputs that do not start at a vector boundary. A few rows are
checked against the float64 formulas.
"""

import numpy as np
import pytest

import fastnorm
import backward_reference
import reference

PIPED_BYTES = 12 * 1024 * 1024
BLOCK = 1024


def _long_rows(dtype, D, seed=17):
    rng = np.random.default_rng(seed)
    rows = PIPED_BYTES // (np.dtype(dtype).itemsize * D) + 5
    x = (rng.standard_normal((rows, D)) * 3 + 4).astype(dtype)
    # a constant block, a block whose shift (its first value) is far from its
    # mean, an inf in a later block; near both ends and in the middle
    for r in (1, rows // 2, rows - 4):
        x[r, BLOCK:2 * BLOCK] = 2.5
        x[r + 1, BLOCK] = 300.0
        x[r + 2, D - 1] = np.inf
    return x


def _run(op, dtype, D):
    rng = np.random.default_rng(5)
    w = rng.standard_normal(D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    if op == "layer":
        return lambda a, **kw: fastnorm.layer_norm(a, w, b, **kw), w, b
    if op == "rms":
        return lambda a, **kw: fastnorm.rms_norm(a, w, eps=1e-5, **kw), w, b
    return lambda a, **kw: fastnorm.layer_norm(a, **kw), w, b


def _ref64(op, x, w, b):
    """The float64 formula of `op` over the rows of x (reference.py)."""
    if op == "rms":
        return reference.rms_norm(x, w, eps=1e-5)[0]
    return reference.layer_norm(x, w, b)[0] if op == "layer" else reference.layer_norm(x)[0]


def _parts(rows):
    return (slice(0, 6), slice(rows // 2 - 2, rows // 2 + 5), slice(-6, None))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, D", [(np.float32, 1500), (np.float32, 2049), (np.float32, 4096),
                                      (np.float32, 8192), (np.float64, 1100), (np.float64, 4096)])
@pytest.mark.parametrize("op", ["layer", "rms", "plain"])
def test_rows_match_small_calls(op, dtype, D, threads):
    x = _long_rows(dtype, D)
    run, w, b = _run(op, dtype, D)
    out = np.empty_like(x)
    assert run(x, out=out, num_threads=threads) is out
    for part in _parts(x.shape[0]):
        np.testing.assert_array_equal(out[part], run(np.ascontiguousarray(x[part])))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[-8:-5], _ref64(op, x[-8:-5], w, b), rtol=tol, atol=tol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("offset", [1, 3])
def test_rows_off_vector_boundary(offset, threads):
    """x and y a few values past a vector boundary: the next row is read from
    aligned vectors shifted into place, block after block."""
    D = 3000
    x = _long_rows(np.float32, D, seed=4)
    buf = np.empty(x.size + 16, np.float32)
    base = (-(buf.ctypes.data // 4)) % 16
    xs = buf[base + offset:base + offset + x.size].reshape(x.shape)
    xs[...] = x
    run, _, _ = _run("layer", np.float32, D)
    ref = run(x, num_threads=threads)
    ybuf = np.empty(x.size + 16, np.float32)
    ybase = (-(ybuf.ctypes.data // 4)) % 16
    ys = ybuf[ybase + offset:ybase + offset + x.size].reshape(x.shape)
    run(xs, out=ys, num_threads=threads)
    assert ys.tobytes() == ref.tobytes()
    for part in _parts(x.shape[0]):
        np.testing.assert_array_equal(ref[part], run(np.ascontiguousarray(x[part])))


@pytest.mark.parametrize("threads", [1, 2])
def test_statistics_match_small_calls(threads):
    D = 2500
    x = _long_rows(np.float32, D, seed=8)
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True, num_threads=threads)
    for part in _parts(x.shape[0]):
        y_ref, m_ref, r_ref = fastnorm.layer_norm(np.ascontiguousarray(x[part]), return_stats=True)
        np.testing.assert_array_equal(y[part], y_ref)
        np.testing.assert_array_equal(mean[part], m_ref)
        np.testing.assert_array_equal(rstd[part], r_ref)
        # the unit walk of statistics alone, not piped: the same means
        np.testing.assert_array_equal(mean[part], fastnorm.moments(np.ascontiguousarray(x[part]), axis=-1)[0])
    _, m64, r64 = reference.layer_norm(x[5:8])
    np.testing.assert_allclose(mean[5:8], m64, rtol=1e-6)
    np.testing.assert_allclose(rstd[5:8], r64, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, D", [(np.float32, 2049), (np.float32, 4096), (np.float64, 1500)])
@pytest.mark.parametrize("op", ["layer", "rms"])
def test_add_norm_rows_match_small_calls(op, dtype, D, threads):
    """add+norm: the next row's sum is written and its statistics taken block by
    block inside the current row's normalize loop."""
    x = _long_rows(dtype, D, seed=21)
    rng = np.random.default_rng(2)
    res = rng.standard_normal(x.shape).astype(dtype)
    rows = x.shape[0]
    for r in (1, rows // 2, rows - 4):
        res[r:r + 3] = 0   # the sums keep x's constant block, far shift and inf
    w = rng.standard_normal(D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    if op == "layer":
        run = lambda a, c, **kw: fastnorm.add_layer_norm(a, c, w, b, **kw)
    else:
        run = lambda a, c, **kw: fastnorm.add_rms_norm(a, c, w, eps=1e-5, **kw)
    out, total = np.empty_like(x), np.empty_like(x)
    run(x, res, out=out, residual_out=total, num_threads=threads)
    np.testing.assert_array_equal(total, x + res)
    for part in _parts(rows):
        y_ref, s_ref = run(np.ascontiguousarray(x[part]), np.ascontiguousarray(res[part]))
        np.testing.assert_array_equal(out[part], y_ref)
        np.testing.assert_array_equal(total[part], s_ref)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[-8:-5], _ref64(op, x[-8:-5] + res[-8:-5], w, b), rtol=tol, atol=tol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, D", [(np.float32, 2049), (np.float32, 4096), (np.float32, 16384),
                                      (np.float64, 1100)])
@pytest.mark.parametrize("op", ["layer", "rms"])
def test_backward_rows_match_small_calls(op, dtype, D, threads):
    """Backward with a weight: each row's sums are taken block by block inside
    the dx loop of the row before (FN_BWD_PIPED_MAX_ROW_BYTES); a row's dx is
    that of the row in a small call, bit for bit; the weight (and bias)
    gradients, summed per fixed group of rows, match the float64 sums."""
    rng = np.random.default_rng(31)
    rows = PIPED_BYTES // (np.dtype(dtype).itemsize * D) + 5
    x = (rng.standard_normal((rows, D)) * 2 + 3).astype(dtype)
    dy = rng.standard_normal((rows, D)).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    if op == "layer":
        _, mean, rstd = fastnorm.layer_norm(x, w, w, return_stats=True)
        grads = lambda a, g, i, **kw: fastnorm.layer_norm_backward(g, a, mean[i], rstd[i], w, **kw)
    else:
        _, rstd = fastnorm.rms_norm(x, w, return_stats=True)
        grads = lambda a, g, i, **kw: fastnorm.rms_norm_backward(g, a, rstd[i], w, **kw)
    every = slice(None)
    got = grads(x, dy, every, num_threads=threads)
    for part in _parts(rows):
        small = grads(np.ascontiguousarray(x[part]), np.ascontiguousarray(dy[part]), part)
        np.testing.assert_array_equal(got[0][part], small[0])
    if op == "layer":
        want = backward_reference.layer_norm_backward(dy, x, mean, rstd, w)
    else:
        want = backward_reference.rms_norm_backward(dy, x, rstd, w)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got[0][-3:], want[0][-3:], rtol=tol, atol=tol)
    for g_got, g_want in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g_got, g_want, rtol=tol, atol=tol * rows ** 0.5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_planes_match_small_calls(affine, threads):
    """InstanceNorm's planes are rows too (one per sample and channel, with the
    channel's scalar weight and bias): planes of 1-32 KiB in large inputs take
    the same walk."""
    rng = np.random.default_rng(41)
    x = (rng.standard_normal((17, 64, 48, 64)) * 2 + 1).astype(np.float32)   # 13 MiB
    x[8, 5, 16:32] = 0.75          # a constant block
    x[16, 63, 0, 0] = np.inf
    w = rng.standard_normal(64).astype(np.float32) if affine else None
    b = rng.standard_normal(64).astype(np.float32) if affine else None
    out = fastnorm.instance_norm(x, w, b, num_threads=threads)
    for n in (0, 8, 16):
        np.testing.assert_array_equal(out[n:n + 1], fastnorm.instance_norm(x[n:n + 1], w, b))
    ref = reference.layer_norm(x[3].reshape(64, -1))[0]
    if affine:
        ref = ref * w[:, None] + b[:, None]
    np.testing.assert_allclose(out[3].reshape(64, -1), ref, rtol=2e-5, atol=2e-5)
