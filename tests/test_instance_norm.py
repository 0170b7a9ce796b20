"""instance_norm / instance_norm_backward against an independent float64 reference.

Reference (PyTorch ``F.instance_norm`` semantics): with ``training=True``
(``use_input_stats``) each (sample, channel) is normalized over its spatial
axes with its mean and biased variance; running statistics, when given, become
``(1 - m) * r + m * batch_mean_over_N(instance statistic)`` with the UNBIASED
instance variance.  With ``training=False`` the running statistics normalize.
"""

import numpy as np
import pytest

import fastnorm
from reference import OUT_MODES, assert_close, make_layout, make_out, snapshot

SHAPES = {3: (3, 4, 7), 4: (2, 4, 3, 5), 5: (2, 4, 3, 2, 3)}


def ref_instance_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
                      training=True, momentum=0.1, eps=1e-5, channel_axis=1):
    """Returns (y, mean, rstd, new_rm, new_rv) in float64; mean/rstd (N, C) or (C,)."""
    x = np.moveaxis(np.asarray(x, np.float64), channel_axis, 1)
    N, C = x.shape[:2]
    xs = x.reshape(N, C, -1)
    S = xs.shape[2]
    new_rm = None if running_mean is None else np.array(running_mean, np.float64)
    new_rv = None if running_var is None else np.array(running_var, np.float64)
    if training:
        mean = xs.mean(axis=2)
        var = ((xs - mean[:, :, None]) ** 2).mean(axis=2)
        rstd = 1.0 / np.sqrt(var + eps)
        y = (xs - mean[:, :, None]) * rstd[:, :, None]
        if new_rm is not None:
            new_rm = (1 - momentum) * new_rm + momentum * mean.mean(axis=0)
            new_rv = (1 - momentum) * new_rv + momentum * (var * S / (S - 1)).mean(axis=0)
    else:
        mean = new_rm
        rstd = 1.0 / np.sqrt(new_rv + eps)
        y = (xs - mean[None, :, None]) * rstd[None, :, None]
    if weight is not None:
        y = y * np.asarray(weight, np.float64)[None, :, None]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[None, :, None]
    return np.moveaxis(y.reshape(x.shape), 1, channel_axis), mean, rstd, new_rm, new_rv


def _data(rng, shape, dtype, channel_axis):
    C = shape[1]
    if channel_axis == -1:
        shape = (shape[0],) + shape[2:] + (C,)
    x = (rng.normal(size=shape) * 1.5 - 0.7).astype(dtype)
    return x, rng.normal(size=C).astype(dtype), rng.normal(size=C).astype(dtype)


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("ndim", [3, 4, 5])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_forward_layouts(rng, dtype, layout, ndim, channel_axis):
    x, w, b = _data(rng, SHAPES[ndim], dtype, channel_axis)
    xl = make_layout(x, layout)
    before = snapshot(xl)
    y = fastnorm.instance_norm(xl, w, b, channel_axis=channel_axis)
    assert y.dtype == dtype and y.shape == x.shape
    assert snapshot(xl) == before
    assert_close(y, ref_instance_norm(x, w, b, channel_axis=channel_axis)[0], dtype)


def test_no_affine_and_return_stats(rng, dtype):
    for cax in (1, -1):
        x, _, _ = _data(rng, (3, 5, 4, 4), dtype, cax)
        y, mean, rstd = fastnorm.instance_norm(x, channel_axis=cax, eps=1e-3, return_stats=True)
        ry, rmean, rrstd, _, _ = ref_instance_norm(x, eps=1e-3, channel_axis=cax)
        assert mean.shape == (3, 5) and rstd.shape == (3, 5)
        assert mean.dtype == dtype and rstd.dtype == dtype
        assert_close(y, ry, dtype)
        assert_close(mean, rmean, dtype, scale=2)
        np.testing.assert_allclose(rstd, rrstd, rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("mode", OUT_MODES)
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_out(rng, dtype, mode, channel_axis):
    x, w, b = _data(rng, (2, 4, 3, 5), dtype, channel_axis)
    expected = ref_instance_norm(x, w, b, channel_axis=channel_axis)[0]
    xin = x.copy()
    out, check = make_out(xin, mode)
    y = fastnorm.instance_norm(xin, w, b, channel_axis=channel_axis, out=out)
    if out is not None:
        assert y is out
    assert_close(y, expected, dtype)
    check()


# ---------------------------------------------------------------------------
# running statistics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
def test_running_stats_update(rng, dtype, channel_axis, momentum):
    x, w, b = _data(rng, (4, 3, 5, 6), dtype, channel_axis)
    rm = rng.normal(size=3).astype(dtype)
    rv = rng.uniform(0.5, 2.0, size=3).astype(dtype)
    ry, _, _, rrm, rrv = ref_instance_norm(x, w, b, rm, rv, True, momentum, 1e-5, channel_axis)
    y = fastnorm.instance_norm(x, w, b, running_mean=rm, running_var=rv, momentum=momentum,
                               channel_axis=channel_axis)
    assert_close(y, ry, dtype)
    assert_close(rm, rrm, dtype)
    assert_close(rv, rrv, dtype)


def test_eval_uses_running_stats(rng, dtype, layout):
    x, w, b = _data(rng, (3, 4, 5, 2), dtype, 1)
    rm = rng.normal(size=4).astype(dtype)
    rv = rng.uniform(0.5, 2.0, size=4).astype(dtype)
    snap = snapshot(rm, rv)
    y = fastnorm.instance_norm(make_layout(x, layout), w, b, running_mean=rm, running_var=rv,
                               training=False)
    assert snapshot(rm, rv) == snap, "inference changed the running statistics"
    assert_close(y, ref_instance_norm(x, w, b, rm, rv, training=False)[0], dtype)


def test_eval_read_only_running_stats_ok(rng):
    x, _, _ = _data(rng, (2, 3, 4), np.float64, 1)
    rm, rv = np.zeros(3), np.ones(3)
    rm.flags.writeable = rv.flags.writeable = False
    y = fastnorm.instance_norm(x, running_mean=rm, running_var=rv, training=False, eps=0.0)
    np.testing.assert_allclose(y, x)


@pytest.mark.parametrize("ndim", [3, 4, 5])
@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_torch_running_stats(rng, ndim, momentum):
    torch = pytest.importorskip("torch")
    x, w, b = _data(rng, SHAPES[ndim], np.float64, 1)
    rm = rng.normal(size=4)
    rv = rng.uniform(0.5, 2.0, size=4)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.instance_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                           torch.tensor(b), use_input_stats=True,
                                           momentum=momentum, eps=1e-5)
    y = fastnorm.instance_norm(x, w, b, running_mean=rm, running_var=rv, momentum=momentum)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-12, atol=1e-12)
    # inference with those statistics
    ty = torch.nn.functional.instance_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                           torch.tensor(b), use_input_stats=False, eps=1e-5)
    y = fastnorm.instance_norm(x, w, b, running_mean=rm, running_var=rv, training=False)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_errors_nothing_changed():
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    out = np.full_like(x, -7.0)
    cases = [
        (dict(x=np.ones((2, 3), np.float32)), ValueError),                 # no spatial axis
        (dict(x=np.ones((2, 3, 1), np.float32), running_mean=rm, running_var=rv), ValueError),
        (dict(x=np.ones((2, 3, 4), np.int64)), TypeError),
        (dict(training=False), ValueError),                                # no running stats
        (dict(running_mean=rm), ValueError),                               # only one of them
        (dict(running_mean=np.zeros(4, np.float32), running_var=np.ones(4, np.float32)),
         ValueError),
        (dict(running_mean=rm, running_var=rv, momentum=1.5), ValueError),
        (dict(weight=np.ones(4, np.float32)), ValueError),
        (dict(channel_axis=0), ValueError),
        (dict(eps=-1.0), ValueError),
        (dict(running_mean=rm, running_var=rv, training=False, return_stats=True), ValueError),
    ]
    for kwargs, exc in cases:
        xx = kwargs.pop("x", x)
        o = out if xx.shape == x.shape and xx.dtype == x.dtype else None
        with pytest.raises(exc):
            fastnorm.instance_norm(xx, out=o, **kwargs)
        assert np.all(out == -7.0), f"out written on failure: {kwargs}"
        assert np.all(rm == 0) and np.all(rv == 1), f"running stats changed on failure: {kwargs}"


def test_read_only_running_stats_rejected_in_training():
    x = np.ones((2, 3, 4))
    rm, rv = np.zeros(3), np.ones(3)
    rv.flags.writeable = False
    with pytest.raises(ValueError):
        fastnorm.instance_norm(x, running_mean=rm, running_var=rv)
    assert np.all(rm == 0)


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------
def _fd(x, w, b, dy, eps, cax, h=1e-6):
    def loss(xx, ww, bb):
        return float(np.sum(dy * ref_instance_norm(xx, ww, bb, eps=eps, channel_axis=cax)[0]))

    dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        dx[i] = (loss(xp, w, b) - loss(xm, w, b)) / (2 * h)
    dw, db = np.zeros_like(w), np.zeros_like(b)
    for c in range(w.size):
        e = np.zeros_like(w)
        e[c] = h
        dw[c] = (loss(x, w + e, b) - loss(x, w - e, b)) / (2 * h)
        db[c] = (loss(x, w, b + e) - loss(x, w, b - e)) / (2 * h)
    return dx, dw, db


@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 2, 2, 3)])
def test_backward_finite_differences(rng, channel_axis, shape):
    x, w, b = _data(rng, shape, np.float64, channel_axis)
    dy = rng.normal(size=x.shape)
    _, m, r = fastnorm.instance_norm(x, w, b, eps=1e-3, channel_axis=channel_axis,
                                     return_stats=True)
    dx, dw, db = fastnorm.instance_norm_backward(dy, x, m, r, w, channel_axis=channel_axis)
    rdx, rdw, rdb = _fd(x, w, b, dy, 1e-3, channel_axis)
    np.testing.assert_allclose(dx, rdx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, rdw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, rdb, rtol=1e-6, atol=1e-7)


def test_backward_eval(rng, dtype):
    x, w, b = _data(rng, (2, 3, 4, 2), dtype, 1)
    dy = rng.normal(size=x.shape).astype(dtype)
    rm = rng.normal(size=3).astype(dtype)
    rv = rng.uniform(0.5, 2, size=3).astype(dtype)
    invstd = (1 / np.sqrt(rv.astype(np.float64) + 1e-5)).astype(dtype)
    dx, dw, db = fastnorm.instance_norm_backward(dy, x, rm, invstd, w, training=False)
    c = (slice(None), slice(None), None, None)
    d64 = dy.astype(np.float64)
    assert_close(dx, d64 * (w.astype(np.float64) * invstd)[c[1:]], dtype)
    xh = (x.astype(np.float64) - rm[:, None, None]) * invstd[:, None, None]
    assert_close(dw, (d64 * xh).sum(axis=(0, 2, 3)), dtype, scale=10)
    assert_close(db, d64.sum(axis=(0, 2, 3)), dtype, scale=10)


def test_backward_no_weight_layouts(rng, dtype, layout):
    x, _, _ = _data(rng, (2, 3, 4, 5), dtype, 1)
    dy = rng.normal(size=x.shape).astype(dtype)
    _, m, r = fastnorm.instance_norm(x, return_stats=True)
    dx, dw, db = fastnorm.instance_norm_backward(make_layout(dy, layout), make_layout(x, layout),
                                                 m, r)
    assert dw is None and db is None
    _, rm_, rr, _, _ = ref_instance_norm(x)
    xs = x.astype(np.float64).reshape(2, 3, -1)
    xh = (xs - rm_[:, :, None]) * rr[:, :, None]
    g = dy.astype(np.float64).reshape(2, 3, -1)
    ref = rr[:, :, None] * (g - g.mean(2, keepdims=True) - xh * (g * xh).mean(2, keepdims=True))
    assert_close(dx, ref.reshape(x.shape), dtype, scale=10)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_torch_autograd(rng, dtype, channel_axis):
    torch = pytest.importorskip("torch")
    x, w, b = _data(rng, (3, 4, 5, 6), dtype, channel_axis)
    dy = rng.normal(size=x.shape).astype(dtype)
    tx = torch.tensor(np.moveaxis(x, channel_axis, 1).copy(), requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.instance_norm(tx, weight=tw, bias=tb, eps=1e-5)
    ty.backward(torch.tensor(np.moveaxis(dy, channel_axis, 1).copy()))
    y, m, r = fastnorm.instance_norm(x, w, b, channel_axis=channel_axis, return_stats=True)
    dx, dw, db = fastnorm.instance_norm_backward(dy, x, m, r, w, channel_axis=channel_axis)
    assert_close(y, np.moveaxis(ty.detach().numpy(), 1, channel_axis).astype(np.float64), dtype, 5)
    assert_close(dx, np.moveaxis(tx.grad.numpy(), 1, channel_axis).astype(np.float64), dtype, 5)
    assert_close(dw, tw.grad.numpy().astype(np.float64), dtype, scale=50)
    assert_close(db, tb.grad.numpy().astype(np.float64), dtype, scale=50)


def test_backward_out_is_dy(rng):
    x, w, _ = _data(rng, (2, 3, 5), np.float64, 1)
    dy = rng.normal(size=x.shape)
    _, m, r = fastnorm.instance_norm(x, w, return_stats=True)
    ref = fastnorm.instance_norm_backward(dy, x, m, r, w)
    d = dy.copy()
    got = fastnorm.instance_norm_backward(d, x, m, r, w, out=d)
    for a, e in zip(got, ref):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
