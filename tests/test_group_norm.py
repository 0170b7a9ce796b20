"""group_norm / group_norm_backward against an independent float64 NumPy reference.

The reference implements the documented formula directly: per sample, the C
channels are split into num_groups groups of C/num_groups consecutive channels;
mean and biased variance over each group's channels and all spatial axes;
``y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]``.
"""

import numpy as np
import pytest

import fastnorm
from reference import OUT_MODES, assert_close, make_layout, make_out, naive_var_f32, snapshot

SHAPES = {3: (3, 6, 7), 4: (2, 6, 3, 5), 5: (2, 6, 3, 2, 3)}


# ---------------------------------------------------------------------------
# float64 reference
# ---------------------------------------------------------------------------
def ref_group_norm(x, G, weight=None, bias=None, eps=1e-5, channel_axis=1):
    """Returns (y, mean, rstd) in float64; mean/rstd have shape (N, G)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), channel_axis, 1)
    N, C = x.shape[:2]
    xg = x.reshape(N, G, -1)
    mean = xg.mean(axis=2)
    var = ((xg - mean[:, :, None]) ** 2).mean(axis=2)
    rstd = 1.0 / np.sqrt(var + eps)
    y = ((xg - mean[:, :, None]) * rstd[:, :, None]).reshape(x.shape)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(bshape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(bshape)
    return np.moveaxis(y, 1, channel_axis), mean, rstd


def ref_loss_grads(x, G, weight, bias, dy, eps, channel_axis, h=1e-6):
    """Central finite differences of L = sum(dy * group_norm(x)) in float64."""
    x = np.array(x, dtype=np.float64)

    def loss(xx, ww, bb):
        return float(np.sum(dy * ref_group_norm(xx, G, ww, bb, eps, channel_axis)[0]))

    dx = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        dx[i] = (loss(xp, weight, bias) - loss(xm, weight, bias)) / (2 * h)
    dw = np.zeros_like(weight)
    db = np.zeros_like(bias)
    for c in range(weight.size):
        e = np.zeros_like(weight)
        e[c] = h
        dw[c] = (loss(x, weight + e, bias) - loss(x, weight - e, bias)) / (2 * h)
        db[c] = (loss(x, weight, bias + e) - loss(x, weight, bias - e)) / (2 * h)
    return dx, dw, db


def _data(rng, shape, dtype, channel_axis):
    C = shape[1]
    if channel_axis == -1:
        shape = (shape[0],) + shape[2:] + (C,)
    x = (rng.normal(size=shape) * 2.0 + 0.5).astype(dtype)
    w = rng.normal(size=C).astype(dtype)
    b = rng.normal(size=C).astype(dtype)
    return x, w, b


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ndim", [3, 4, 5])
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("G", [1, 3, 6])
def test_forward_layouts(rng, dtype, layout, ndim, channel_axis, G):
    x, w, b = _data(rng, SHAPES[ndim], dtype, channel_axis)
    xl = make_layout(x, layout)
    before = snapshot(xl)
    y = fastnorm.group_norm(xl, G, w, b, channel_axis=channel_axis)
    assert y.dtype == dtype and y.shape == x.shape
    assert snapshot(xl) == before, "input modified"
    assert_close(y, ref_group_norm(x, G, w, b, 1e-5, channel_axis)[0], dtype)


@pytest.mark.parametrize("affine", ["none", "weight", "both"])
def test_affine_variants(rng, dtype, affine):
    x, w, b = _data(rng, (3, 8, 4, 4), dtype, 1)
    w = None if affine == "none" else w
    b = b if affine == "both" else None
    y = fastnorm.group_norm(x, 4, w, b, eps=1e-3)
    assert_close(y, ref_group_norm(x, 4, w, b, 1e-3)[0], dtype)


def test_bias_without_weight(rng):
    x, _, b = _data(rng, (2, 4, 5), np.float64, 1)
    y = fastnorm.group_norm(x, 2, None, b)
    assert_close(y, ref_group_norm(x, 2, None, b)[0], np.float64)


def test_channel_axis_middle(rng, dtype):
    # channel axis 2 of a 4-D array (neither first nor last)
    x = rng.normal(size=(2, 3, 6, 4)).astype(dtype)
    w = rng.normal(size=6).astype(dtype)
    y = fastnorm.group_norm(x, 3, w, channel_axis=2)
    assert_close(y, ref_group_norm(x, 3, w, None, 1e-5, 2)[0], dtype)


def test_return_stats(rng, dtype):
    for cax in (1, -1):
        x, w, b = _data(rng, (3, 6, 4, 5), dtype, cax)
        y, mean, rstd = fastnorm.group_norm(x, 3, w, b, channel_axis=cax, return_stats=True)
        ry, rmean, rrstd = ref_group_norm(x, 3, w, b, 1e-5, cax)
        assert mean.shape == (3, 3) and rstd.shape == (3, 3)
        assert mean.dtype == dtype and rstd.dtype == dtype
        assert_close(y, ry, dtype)
        assert_close(mean, rmean, dtype, scale=4)
        np.testing.assert_allclose(rstd, rrstd, rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("mode", OUT_MODES)
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_out(rng, dtype, mode, channel_axis):
    x, w, b = _data(rng, (2, 4, 3, 5), dtype, channel_axis)
    expected = ref_group_norm(x, 2, w, b, 1e-5, channel_axis)[0]
    xin = x.copy()
    out, check = make_out(xin, mode)
    y = fastnorm.group_norm(xin, 2, w, b, channel_axis=channel_axis, out=out)
    if out is not None:
        assert y is out
    assert_close(y, expected, dtype)
    check()


def test_threads_identical(rng):
    x, w, b = _data(rng, (4, 8, 16, 16), np.float32, 1)
    for cax in (1, -1):
        xx = np.moveaxis(x, 1, -1).copy() if cax == -1 else x
        y1 = fastnorm.group_norm(xx, 4, w, b, channel_axis=cax, num_threads=1)
        y2 = fastnorm.group_norm(xx, 4, w, b, channel_axis=cax, num_threads=2)
        np.testing.assert_array_equal(y1, y2)


# Shapes that take each NCHW walk: groups of small planes (row-wise chunks, with a
# group of one block and of several), few groups of many planes (split across
# threads), units of a third of L1 (pipelined) and larger ones.
PLANE_WALKS = [((1, 256, 7, 7), 32), ((64, 256, 7, 7), 32), ((2, 64, 14, 14), 4),
               ((1, 256, 28, 28), 4), ((3, 12, 33, 31), 3), ((8, 40, 32, 32), 8), ((2, 6, 100, 100), 2)]


@pytest.mark.parametrize("shape, G", PLANE_WALKS)
def test_groups_are_layer_norm_rows(rng, dtype, shape, G):
    # a group's channel planes lie end to end: whichever walk and thread count,
    # its statistics and (without affine) its output are those of layer_norm over
    # the same values, bit for bit
    x = (rng.normal(size=shape) * 2.0 + 30.0).astype(dtype)
    rows = x.reshape(shape[0] * G, -1)
    yl, ml, rl = fastnorm.layer_norm(rows, return_stats=True)
    for nt in (1, 2, 3):
        y, m, r = fastnorm.group_norm(x, G, return_stats=True, num_threads=nt)
        np.testing.assert_array_equal(m.ravel(), ml.ravel())
        np.testing.assert_array_equal(r.ravel(), rl.ravel())
        np.testing.assert_array_equal(y.reshape(rows.shape), yl)


@pytest.mark.parametrize("shape, G", PLANE_WALKS)
def test_plane_walks_with_affine(rng, dtype, shape, G):
    x, w, b = _data(rng, shape, dtype, 1)
    expected = ref_group_norm(x, G, w, b)[0]
    first = None
    for nt in (1, 2, 3):
        y = fastnorm.group_norm(x, G, w, b, num_threads=nt)
        assert_close(y, expected, dtype)
        if first is None:
            first = y
        np.testing.assert_array_equal(y, first)


def test_empty_batch(dtype):
    x = np.zeros((0, 4, 3), dtype)
    y = fastnorm.group_norm(x, 2)
    assert y.shape == x.shape and y.dtype == dtype


# ---------------------------------------------------------------------------
# accuracy: large mean, float32
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_large_mean_float32(rng, channel_axis):
    shape = (2, 8, 32, 32) if channel_axis == 1 else (2, 32, 32, 8)
    x = (1e4 + rng.normal(size=shape)).astype(np.float32)
    expected = ref_group_norm(x, 4, channel_axis=channel_axis)[0]
    y = fastnorm.group_norm(x, 4, channel_axis=channel_axis)
    err = np.max(np.abs(y - expected))
    assert err < 1e-3, err
    # The test can fail: the one-pass E[x^2] - E[x]^2 variance (PyTorch's
    # channels-last GroupNorm) in float32 is far off for this data.
    xg = np.moveaxis(x, channel_axis, 1).reshape(2, 4, -1)
    naive = naive_var_f32(xg, axis=2)
    exact = ref_group_norm(x, 4, channel_axis=channel_axis)[2] ** -2
    assert np.max(np.abs(naive - exact)) > 1e-2


@pytest.mark.parametrize("shape", [(6, 64, 7, 7), (5, 32, 3, 5)])
def test_scale_beyond_float32_amid_joined_units(rng, shape, active_isa):
    """Short planes of consecutive groups are normalized as one joined run; a
    channel whose float32 scale rstd * weight overflows (weight 1e37 in a
    group with std 0.01) must be computed in float64 as the reference is, and
    the units of the run before it still written: every group against float64,
    the same bits at 1-3 threads (the walk's cuts move with the thread count),
    on every SIMD path (3 x 5 planes join on AVX2, whose vectors are shorter)."""
    N, C = shape[:2]
    G = C // 8
    x = rng.normal(size=shape).astype(np.float32)
    hot = (N // 2, 3)                                  # (sample, group) with a tiny std
    x[hot[0], 8 * hot[1]:8 * hot[1] + 8] = (0.01 * rng.normal(size=(8,) + shape[2:]) + 2.0).astype(np.float32)
    w = rng.normal(size=C).astype(np.float32)
    b = rng.normal(size=C).astype(np.float32)
    w[8 * hot[1] + 5] = 1e37
    expected = ref_group_norm(x, G, w, b)[0]
    assert np.all(np.abs(expected) < 3e38)             # finite in float32
    with np.errstate(over="ignore"):
        assert np.float32(1e37) * np.float32(ref_group_norm(x, G)[2][hot]) == np.inf
    first = None
    for nt in (1, 2, 3):
        y = fastnorm.group_norm(x, G, w, b, num_threads=nt)
        assert np.all(np.isfinite(y))
        assert_close(y, expected, np.float32)
        if first is None:
            first = y
        np.testing.assert_array_equal(y, first)


# ---------------------------------------------------------------------------
# error contract
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("G", [0, -1, 4, 5, 7])
def test_bad_num_groups_value(G):
    x = np.ones((2, 6, 3), np.float32)
    out = np.full_like(x, -7.0)
    with pytest.raises(ValueError):
        fastnorm.group_norm(x, G, out=out)
    assert np.all(out == -7.0), "out written on failure"


@pytest.mark.parametrize("G", [2.0, "2", None, True])
def test_bad_num_groups_type(G):
    with pytest.raises(TypeError):
        fastnorm.group_norm(np.ones((2, 6, 3), np.float32), G)


def test_numpy_int_num_groups():
    x = np.random.default_rng(0).normal(size=(2, 6, 3))
    np.testing.assert_allclose(fastnorm.group_norm(x, np.int64(3)), ref_group_norm(x, 3)[0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(x=np.ones((2, 6, 3), np.int32)), TypeError),
    (dict(x=np.ones(6, np.float32)), ValueError),
    (dict(weight=np.ones(5, np.float32)), ValueError),
    (dict(bias=np.ones((6, 1), np.float32)), ValueError),
    (dict(weight=np.ones(6, np.int64)), TypeError),
    (dict(channel_axis=0), ValueError),
    (dict(channel_axis=3), ValueError),
    (dict(eps=-1.0), ValueError),
    (dict(out=np.empty((2, 6, 4), np.float32)), ValueError),
    (dict(out=np.empty((2, 6, 3), np.float64)), TypeError),
])
def test_errors_nothing_written(kwargs, exc):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", np.ones((2, 6, 3), np.float32))
    out = kwargs.pop("out", None)
    guard = np.full((2, 6, 3), -7.0, np.float32)
    with pytest.raises(exc):
        fastnorm.group_norm(x, 3, out=out if out is not None else guard, **kwargs)
    assert np.all(guard == -7.0), "out written on failure"


def test_readonly_out_rejected():
    x = np.ones((2, 6, 3), np.float32)
    out = np.zeros_like(x)
    out.flags.writeable = False
    with pytest.raises(ValueError):
        fastnorm.group_norm(x, 3, out=out)


def test_partial_overlap_out_rejected():
    buf = np.arange(2 * 6 * 4, dtype=np.float64).reshape(2, 6, 4)
    x = buf[:, :, :3]
    with pytest.raises(ValueError):
        fastnorm.group_norm(x, 3, out=buf[:, :, 1:])


def test_backward_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3))
    y, m, r = fastnorm.group_norm(x, 3, return_stats=True)
    with pytest.raises(ValueError):
        fastnorm.group_norm_backward(np.ones_like(x), x, 4, m, r)
    with pytest.raises(ValueError):
        fastnorm.group_norm_backward(np.ones_like(x), x, 2, m, r)   # stats shape (2, 3)
    with pytest.raises(ValueError):
        fastnorm.group_norm_backward(np.ones((2, 6, 4)), x, 3, m, r)


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("ndim", [3, 4])
def test_backward_finite_differences(rng, channel_axis, ndim):
    shape = {3: (2, 4, 3), 4: (2, 4, 2, 3)}[ndim]
    x, w, b = _data(rng, shape, np.float64, channel_axis)
    dy = rng.normal(size=x.shape)
    _, mean, rstd = fastnorm.group_norm(x, 2, w, b, channel_axis=channel_axis, eps=1e-3,
                                        return_stats=True)
    dx, dw, db = fastnorm.group_norm_backward(dy, x, 2, mean, rstd, w, channel_axis=channel_axis)
    rdx, rdw, rdb = ref_loss_grads(x, 2, w, b, dy, 1e-3, channel_axis)
    np.testing.assert_allclose(dx, rdx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, rdw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, rdb, rtol=1e-6, atol=1e-7)


def test_backward_no_weight(rng, dtype, layout):
    x = rng.normal(size=(2, 6, 3, 4)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    _, mean, rstd = fastnorm.group_norm(x, 3, return_stats=True)
    dx, dw, db = fastnorm.group_norm_backward(make_layout(dy, layout), make_layout(x, layout),
                                              3, mean, rstd)
    assert dw is None and db is None and dx.dtype == dtype
    # closed-form group backward: rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) per group
    xg = x.astype(np.float64).reshape(2, 3, -1)
    _, m, r = ref_group_norm(x, 3)
    xh = (xg - m[:, :, None]) * r[:, :, None]
    g = dy.astype(np.float64).reshape(2, 3, -1)
    ref = r[:, :, None] * (g - g.mean(2, keepdims=True) - xh * (g * xh).mean(2, keepdims=True))
    assert_close(dx, ref.reshape(x.shape), dtype, scale=10)


@pytest.mark.parametrize("mode", ["C", "F", "guarded"])
def test_backward_out(rng, mode):
    x, w, _ = _data(rng, (2, 4, 5), np.float64, 1)
    dy = rng.normal(size=x.shape)
    _, m, r = fastnorm.group_norm(x, 2, w, return_stats=True)
    ref_dx, ref_dw, ref_db = fastnorm.group_norm_backward(dy, x, 2, m, r, w)
    out, check = make_out(x, mode)
    dx, dw, db = fastnorm.group_norm_backward(dy, x, 2, m, r, w, out=out)
    assert dx is out
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-12)
    np.testing.assert_allclose(db, ref_db, rtol=1e-12)
    check()


def test_backward_out_is_dy(rng):
    x, w, _ = _data(rng, (2, 4, 5), np.float64, 1)
    dy = rng.normal(size=x.shape)
    _, m, r = fastnorm.group_norm(x, 2, w, return_stats=True)
    ref_dx, ref_dw, ref_db = fastnorm.group_norm_backward(dy, x, 2, m, r, w)
    d = dy.copy()
    dx, dw, db = fastnorm.group_norm_backward(d, x, 2, m, r, w, out=d)
    assert dx is d
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-12)
    np.testing.assert_allclose(db, ref_db, rtol=1e-12)


def _ref_backward(x, G, w, dy, eps, channel_axis):
    """Closed-form float64 GroupNorm backward: (dx, dweight, dbias)."""
    xm = np.moveaxis(np.asarray(x, np.float64), channel_axis, 1)
    N, C = xm.shape[:2]
    _, m, r = ref_group_norm(x, G, eps=eps, channel_axis=channel_axis)
    xh = (xm.reshape(N, G, -1) - m[:, :, None]) * r[:, :, None]
    dyc = np.moveaxis(np.asarray(dy, np.float64), channel_axis, 1)
    g = (dyc * w.astype(np.float64).reshape((1, C) + (1,) * (xm.ndim - 2))).reshape(N, G, -1)
    dx = r[:, :, None] * (g - g.mean(2, keepdims=True) - xh * (g * xh).mean(2, keepdims=True))
    dw = (dyc.reshape(N, C, -1) * xh.reshape(N, C, -1)).sum(axis=(0, 2))
    db = dyc.reshape(N, C, -1).sum(axis=(0, 2))
    return np.moveaxis(dx.reshape(xm.shape), 1, channel_axis), dw, db


# Large enough for the parallel kernels: few units (work split by rows), many
# units (one unit per work item; planes of up to a block summed several at a
# time), channels-last groups of columns.
@pytest.mark.parametrize("shape, G, channel_axis", [
    ((2, 8, 64, 64), 2, 1), ((8, 16, 32, 32), 4, 1), ((1, 4, 128, 128), 1, 1),
    ((2, 64, 28, 28), 2, 1), ((4, 512, 7, 7), 2, 1),
    ((2, 64, 64, 8), 2, -1), ((4, 32, 32, 16), 4, -1), ((4, 32, 32, 16), 16, -1)])
def test_backward_large_every_thread_count(rng, dtype, shape, G, channel_axis):
    x = (rng.normal(size=shape) * 3.0 + 5.0).astype(dtype)
    C = x.shape[channel_axis]
    w = rng.normal(size=C).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    _, mean, rstd = fastnorm.group_norm(x, G, w, channel_axis=channel_axis, return_stats=True)
    rdx, rdw, rdb = _ref_backward(x, G, w, dy, 1e-5, channel_axis)
    first = None
    for nt in (1, 2, 3, 4):
        dx, dw, db = fastnorm.group_norm_backward(dy, x, G, mean, rstd, w, channel_axis=channel_axis,
                                                  num_threads=nt)
        if first is None:
            first = (dx, dw, db)
            mag = np.abs(rdx).max()
            assert_close(dx / mag, rdx / mag, dtype, scale=10)
            n = x.size / C
            assert_close(dw / n, rdw / n, dtype, scale=10)
            assert_close(db / n, rdb / n, dtype, scale=10)
        else:
            for a, b in zip(first, (dx, dw, db)):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_backward_large_mean_float32(rng, channel_axis):
    # |mean| >> std: the float32 sums run around the rounded mean, so nothing cancels
    shape = (4, 16, 32, 32) if channel_axis == 1 else (4, 32, 32, 16)
    x = (1e4 + rng.normal(size=shape)).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=16).astype(np.float32)
    _, mean, rstd = fastnorm.group_norm(x, 4, w, channel_axis=channel_axis, return_stats=True)
    dx, dw, db = fastnorm.group_norm_backward(dy, x, 4, mean, rstd, w, channel_axis=channel_axis)
    rdx, rdw, rdb = _ref_backward(x, 4, w, dy, 1e-5, channel_axis)
    assert np.abs(dx - rdx).max() <= 1e-5 * np.abs(rdx).max()
    assert np.abs(dw - rdw).max() <= 1e-5 * np.abs(rdw).max()
    assert np.abs(db - rdb).max() <= 1e-5 * np.abs(rdb).max()


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("ndim", [3, 4, 5])
def test_torch_forward_backward(rng, dtype, channel_axis, ndim):
    torch = pytest.importorskip("torch")
    x, w, b = _data(rng, SHAPES[ndim], dtype, channel_axis)
    dy = rng.normal(size=x.shape).astype(dtype)
    tx = torch.tensor(np.moveaxis(x, channel_axis, 1).copy(), requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.group_norm(tx, 3, tw, tb, eps=1e-5)
    ty.backward(torch.tensor(np.moveaxis(dy, channel_axis, 1).copy()))
    y, m, r = fastnorm.group_norm(x, 3, w, b, channel_axis=channel_axis, return_stats=True)
    dx, dw, db = fastnorm.group_norm_backward(dy, x, 3, m, r, w, channel_axis=channel_axis)
    s = 5.0
    assert_close(y, np.moveaxis(ty.detach().numpy(), 1, channel_axis).astype(np.float64), dtype, s)
    assert_close(dx, np.moveaxis(tx.grad.numpy(), 1, channel_axis).astype(np.float64), dtype, s)
    assert_close(dw, tw.grad.numpy().astype(np.float64), dtype, scale=50)
    assert_close(db, tb.grad.numpy().astype(np.float64), dtype, scale=50)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_in_place_any_layout(rng, layout, channel_axis):
    # out=x on layouts the kernel cannot take directly (copy-in / copy-back path)
    x, w, b = _data(rng, (2, 6, 3, 4), np.float64, channel_axis)
    xl = make_layout(x, layout)
    y = fastnorm.group_norm(xl, 3, w, b, channel_axis=channel_axis, out=xl)
    assert y is xl
    assert_close(xl, ref_group_norm(x, 3, w, b, 1e-5, channel_axis)[0], np.float64)
