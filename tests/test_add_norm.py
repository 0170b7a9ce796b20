"""add_layer_norm / add_rms_norm: s = x + residual and y = norm(s) in one pass.

Checked against float64 NumPy references of the two formulas (layer norm:
``(s - mean) / sqrt(var + eps) * w + b``; RMS norm: ``s / sqrt(mean(s**2) + eps) * w``
over the normalized axes), for the fused path (last axis, contiguous rows) and
the fallback path (other axes / layouts).
"""

import numpy as np
import pytest

import fastnorm
from reference import assert_close, make_layout, snapshot


def ref_add_norm(x, r, w=None, b=None, axis=-1, eps=1e-5, rms=False, eps_dtype=None):
    s = np.asarray(x, np.float64) + np.asarray(r, np.float64)
    axes = tuple(sorted(a % s.ndim for a in ((axis,) if np.ndim(axis) == 0 else axis)))
    if rms:
        if eps is None:
            eps = float(np.finfo(eps_dtype).eps)
        y = s / np.sqrt((s * s).mean(axis=axes, keepdims=True) + eps)
    else:
        m = s.mean(axis=axes, keepdims=True)
        v = ((s - m) ** 2).mean(axis=axes, keepdims=True)
        y = (s - m) / np.sqrt(v + eps)
    bshape = [s.shape[a] if a in axes else 1 for a in range(s.ndim)]
    if w is not None:
        y = y * np.asarray(w, np.float64).reshape(bshape)
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(bshape)
    return y, s


def _data(rng, shape, dtype, axes=(-1,)):
    x = (rng.normal(size=shape) * 2 + 1).astype(dtype)
    r = rng.normal(size=shape).astype(dtype)
    pshape = tuple(shape[a] for a in sorted(a % len(shape) for a in axes))
    return x, r, rng.normal(size=pshape).astype(dtype), rng.normal(size=pshape).astype(dtype)


def _call(rms, x, r, w, b, **kw):
    kw.setdefault("eps", 1e-5)
    if rms:
        return fastnorm.add_rms_norm(x, r, w, **kw)
    return fastnorm.add_layer_norm(x, r, w, b, **kw)


@pytest.fixture(params=[False, True], ids=["layer", "rms"])
def rms(request):
    return request.param


@pytest.mark.parametrize("shape", [(7, 33), (2, 3, 16), (1, 1), (5, 1)])
def test_fused_values(rng, dtype, rms, shape):
    x, r, w, b = _data(rng, shape, dtype)
    snap = snapshot(x, r)
    y, s = _call(rms, x, r, w, b, eps=1e-5)
    ry, rs = ref_add_norm(x, r, w, None if rms else b, rms=rms, eps=1e-5)
    assert y.dtype == dtype and s.dtype == dtype and y.shape == shape
    assert snapshot(x, r) == snap
    np.testing.assert_array_equal(s, x + r)   # the sum is the plain float sum, rounded once
    assert_close(y, ry, dtype, scale=2)


def test_rms_default_eps(rng, dtype):
    x, r, w, _ = _data(rng, (4, 8), dtype)
    x[0] = 0
    r[0] = 1e-4
    y, _ = fastnorm.add_rms_norm(x, r, w)
    assert_close(y, ref_add_norm(x, r, w, rms=True, eps=None, eps_dtype=dtype)[0], dtype)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "negative", "mixed", "permuted"])
def test_layouts(rng, dtype, rms, layout):
    x, r, w, b = _data(rng, (3, 4, 10), dtype)
    y, s = _call(rms, make_layout(x, layout), make_layout(r, "C" if layout == "F" else "F"), w, b)
    ry, rs = ref_add_norm(x, r, w, None if rms else b, rms=rms)
    np.testing.assert_array_equal(s, x + r)
    assert_close(y, ry, dtype, scale=2)


@pytest.mark.parametrize("axis", [0, 1, (1, 2), (0, 2), -2])
def test_non_last_axes(rng, dtype, rms, axis):
    axes = (axis,) if np.ndim(axis) == 0 else axis
    x, r, w, b = _data(rng, (4, 5, 6), dtype, axes)
    y, s = _call(rms, x, r, w, b, axis=axis)
    ry, rs = ref_add_norm(x, r, w, None if rms else b, axis=axis, rms=rms)
    np.testing.assert_array_equal(s, x + r)
    assert_close(y, ry, dtype, scale=2)


def test_residual_out_is_residual(rng, dtype, rms):
    x, r, w, b = _data(rng, (6, 20), dtype)
    ry, rs = ref_add_norm(x, r, w, None if rms else b, rms=rms)
    expected_s = x + r
    rr = r.copy()
    y, s = _call(rms, x, rr, w, b, residual_out=rr)
    assert s is rr
    np.testing.assert_array_equal(rr, expected_s)
    assert_close(y, ry, dtype, scale=2)


def test_residual_out_is_x_and_separate(rng, dtype, rms):
    x, r, w, b = _data(rng, (6, 20), dtype)
    ry, _ = ref_add_norm(x, r, w, None if rms else b, rms=rms)
    expected_s = x + r
    xx = x.copy()
    y, s = _call(rms, xx, r, w, b, residual_out=xx)
    assert s is xx
    np.testing.assert_array_equal(xx, expected_s)
    assert_close(y, ry, dtype, scale=2)
    so = np.empty((6, 20), dtype, order="F")
    yo = np.empty((12, 40), dtype)[::2, ::2]
    y2, s2 = _call(rms, x, r, w, b, residual_out=so, out=yo)
    assert s2 is so and y2 is yo
    np.testing.assert_array_equal(so, expected_s)
    assert_close(yo, ry, dtype, scale=2)


@pytest.mark.parametrize("target", ["x", "residual"])
def test_out_in_place(rng, dtype, rms, target):
    x, r, w, b = _data(rng, (5, 16), dtype)
    ry, _ = ref_add_norm(x, r, w, None if rms else b, rms=rms)
    expected_s = x + r
    xx, rr = x.copy(), r.copy()
    out = xx if target == "x" else rr
    y, s = _call(rms, xx, rr, w, b, out=out)
    assert y is out
    np.testing.assert_array_equal(s, expected_s)
    assert_close(y, ry, dtype, scale=2)


def test_out_x_residual_out_residual(rng, dtype, rms):
    # the transformer in-place pattern: x <- norm(x + r), r <- x + r
    x, r, w, b = _data(rng, (5, 16), dtype)
    ry, _ = ref_add_norm(x, r, w, None if rms else b, rms=rms)
    expected_s = x + r
    xx, rr = x.copy(), r.copy()
    y, s = _call(rms, xx, rr, w, b, out=xx, residual_out=rr)
    assert y is xx and s is rr
    np.testing.assert_array_equal(rr, expected_s)
    assert_close(xx, ry, dtype, scale=2)


def test_non_last_axis_in_place(rng, rms):
    x, r, w, b = _data(rng, (4, 5, 6), np.float64, (1,))
    ry, _ = ref_add_norm(x, r, w, None if rms else b, axis=1, rms=rms)
    xx, rr = x.copy(), r.copy()
    y, s = _call(rms, xx, rr, w, b, axis=1, out=xx, residual_out=rr)
    np.testing.assert_array_equal(rr, x + r)
    assert_close(xx, ry, np.float64, scale=2)


def test_residual_dtype_cast(rng, rms):
    x, r, w, b = _data(rng, (3, 8), np.float32)
    r64 = r.astype(np.float64) + 1e-9
    y, s = _call(rms, x, r64, w, b)
    assert y.dtype == np.float32 and s.dtype == np.float32
    np.testing.assert_array_equal(s, x + r64.astype(np.float32))


def test_threads_identical(rng, rms):
    x, r, w, b = _data(rng, (512, 96), np.float32)
    y1, s1 = _call(rms, x, r, w, b, num_threads=1)
    y2, s2 = _call(rms, x, r, w, b, num_threads=2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(s1, s2)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_partial_overlap_rejected(rms):
    buf = np.arange(6 * 17, dtype=np.float64).reshape(6, 17)
    x = buf[:, :16]
    r = np.ones((6, 16))
    snap = snapshot(buf)
    for kw in (dict(out=buf[:, 1:]), dict(residual_out=buf[:, 1:])):
        with pytest.raises(ValueError):
            _call(rms, x, r, None, None, **kw)
        assert snapshot(buf) == snap
    rbuf = np.ones((6, 17))
    for kw in (dict(out=rbuf[:, 1:]), dict(residual_out=rbuf[:, 1:])):
        with pytest.raises(ValueError):
            _call(rms, np.ones((6, 16)), rbuf[:, :16], None, None, **kw)
    # out and residual_out may not share memory
    o = np.empty((6, 16))
    with pytest.raises(ValueError):
        _call(rms, np.ones((6, 16)), r, None, None, out=o, residual_out=o)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(residual=np.ones((4, 9))), ValueError),
    (dict(residual=np.ones((4, 8), np.int32)), TypeError),
    (dict(x=np.ones((4, 8), np.int32)), TypeError),
    (dict(weight=np.ones(9)), ValueError),
    (dict(axis=2), ValueError),
    (dict(eps=-1.0), ValueError),
    (dict(out=np.empty((4, 9))), ValueError),
    (dict(out=np.empty((4, 8), np.float32)), TypeError),
    (dict(residual_out=np.empty((4, 9))), ValueError),
    (dict(residual_out=np.empty((4, 8), np.float32)), TypeError),
    (dict(residual_out=[[0.0] * 8] * 4), TypeError),
])
def test_errors_nothing_written(rms, kwargs, exc):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", np.ones((4, 8)))
    r = kwargs.pop("residual", np.full((4, 8), 2.0))
    w = kwargs.pop("weight", None)
    guard_o = np.full((4, 8), -7.0)
    guard_s = np.full((4, 8), -9.0)
    kwargs.setdefault("out", guard_o)
    kwargs.setdefault("residual_out", guard_s)
    with pytest.raises(exc):
        _call(rms, x, r, w, None, **kwargs)
    assert np.all(guard_o == -7.0) and np.all(guard_s == -9.0), "written on failure"


def test_read_only_residual_out(rms):
    s = np.zeros((2, 4))
    s.flags.writeable = False
    with pytest.raises(ValueError):
        _call(rms, np.ones((2, 4)), np.ones((2, 4)), None, None, residual_out=s)


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------
def test_torch(rng, dtype, rms):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, r, w, b = _data(rng, (4, 6, 24), dtype)
    t = torch.tensor(x) + torch.tensor(r)
    if rms:
        ty = F.rms_norm(t, (24,), torch.tensor(w), eps=1e-6)
        y, s = fastnorm.add_rms_norm(x, r, w, eps=1e-6)
    else:
        ty = F.layer_norm(t, (24,), torch.tensor(w), torch.tensor(b), eps=1e-5)
        y, s = fastnorm.add_layer_norm(x, r, w, b)
    np.testing.assert_array_equal(s, t.numpy())
    assert_close(y, ty.numpy().astype(np.float64), dtype, scale=5)


def test_out_residual_and_residual_out_x(rng, rms):
    # swapped roles: y into residual's memory, s into x's
    x, r, w, b = _data(rng, (5, 16), np.float64)
    ry, _ = ref_add_norm(x, r, w, None if rms else b, rms=rms)
    xx, rr = x.copy(), r.copy()
    y, s = _call(rms, xx, rr, w, b, out=rr, residual_out=xx)
    assert y is rr and s is xx
    np.testing.assert_array_equal(xx, x + r)
    assert_close(rr, ry, np.float64, scale=2)


@pytest.mark.parametrize("D", [256, 777])
def test_rows_of_a_kilobyte_and_more(rng, dtype, rms, D):
    # rows of 1 KiB and more in inputs of 12 MiB and more (FN_PIPED_MIN_BYTES): the
    # sum and statistics of each row are taken in the loop that normalizes the row
    # before; the values must be those of the norm of the plain float sum, in
    # place too
    rows = 12 * 2**20 // (D * np.dtype(dtype).itemsize) + 3
    x, r, w, b = _data(rng, (rows, D), dtype)
    norm = (lambda v: fastnorm.rms_norm(v, w, eps=1e-5)) if rms else (lambda v: fastnorm.layer_norm(v, w, b))
    expected_s = x + r
    expected_y = norm(expected_s)
    y, s = _call(rms, x, r, w, b)
    np.testing.assert_array_equal(s, expected_s)
    assert y.tobytes() == expected_y.tobytes()
    ry, _ = ref_add_norm(x[:50], r[:50], w, None if rms else b, rms=rms, eps=1e-5)
    assert_close(y[:50], ry, dtype, scale=2)
    # each row's values are those of the row alone (a few rows: walked in groups)
    np.testing.assert_array_equal(_call(rms, x[-30:], r[-30:], w, b)[0], y[-30:])
    y1, s1 = _call(rms, x, r, w, b, num_threads=1)
    assert y1.tobytes() == expected_y.tobytes() and s1.tobytes() == expected_s.tobytes()
    # x <- norm(x + r), r <- x + r
    xx, rr = x.copy(), r.copy()
    y2, s2 = _call(rms, xx, rr, w, b, out=xx, residual_out=rr)
    assert y2 is xx and s2 is rr
    assert xx.tobytes() == expected_y.tobytes() and rr.tobytes() == expected_s.tobytes()
