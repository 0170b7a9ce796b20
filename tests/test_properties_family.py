"""Property tests (hypothesis) for the rest of the public ops: the backward
passes, GroupNorm, InstanceNorm, the fused residual norms, LRN, weight norm
and BatchNorm folding.

Every op is driven with random shapes (sizes 0 and 1 included where the op
accepts them; the documented ValueError is checked where it does not), axes /
channel axes, memory layouts (C, Fortran, strided, negative strides, mixed,
permuted), float32/float64, values with a random offset (|mean| up to 1e3) and
scale (std down to 1e-2), ``out`` arguments and thread counts, and compared
against float64 NumPy formulas written out in this file (no fastnorm code in
the oracles).  Inputs that are not outputs must come back unchanged.

Companion of tests/test_properties.py (moments, layer_norm, rms_norm,
batch_norm); FASTNORM_HYPOTHESIS_EXAMPLES overrides the example count.
"""

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastnorm  # noqa: E402
from reference import LAYOUTS, make_layout, make_out, tol  # noqa: E402

# The float64 oracles take means over empty axes for zero-size inputs.
pytestmark = pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")

SETTINGS = settings(max_examples=int(os.environ.get("FASTNORM_HYPOTHESIS_EXAMPLES", "40")),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

dtypes = st.sampled_from([np.float32, np.float64])
layouts = st.sampled_from(LAYOUTS)
threads = st.sampled_from([None, 1, 2])
SIDES = {1: [0, 1, 2, 7, 16, 17, 33], 2: [0, 1, 1, 2, 3, 7, 17],
         3: [0, 1, 1, 2, 3, 5, 9]}
LOCS = [0.0, 1.0, -30.0, 1e3, -1e3]
SCALES = [1e-2, 0.1, 1.0, 10.0]


# ---------------------------------------------------------------------------
# strategies and helpers
# ---------------------------------------------------------------------------

def _sides(ndim):
    return SIDES.get(ndim, [0, 1, 1, 2, 3, 4])


@st.composite
def shapes(draw, ndim):
    return tuple(draw(st.lists(st.sampled_from(_sides(ndim)), min_size=ndim, max_size=ndim)))


@st.composite
def values(draw, shape, dt, rng, loc=None, scale=None):
    """An array of ``shape`` in a random layout, N(loc, scale) values."""
    loc = draw(st.sampled_from(LOCS)) if loc is None else loc
    scale = draw(st.sampled_from(SCALES)) if scale is None else scale
    a = (loc + scale * rng.standard_normal(shape)).astype(dt)
    return make_layout(a, draw(layouts))


@st.composite
def setup(draw):
    dt = np.dtype(draw(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return dt, rng


def _param(rng, shape, dt, loc=0.0, scale=1.0):
    return (loc + scale * rng.standard_normal(shape)).astype(dt)


def _close(actual, expected, dtype, scale=1.0):
    """Element-wise rtol plus an atol proportional to the magnitude ``scale``
    of the quantity (so cancellation in the exact result is not penalised)."""
    rtol, atol = tol(dtype)
    expected = np.asarray(expected, np.float64)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=atol * max(1.0, float(scale)))


def _mag(*arrays):
    """Largest magnitude among float64 arrays (0 for empty ones)."""
    m = 0.0
    for a in arrays:
        a = np.asarray(a, np.float64)
        if a.size:
            m = max(m, float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 0.0)
    return m


def _unchanged(a, a0):
    np.testing.assert_array_equal(a, a0)


def _draw_out(data, x, extra=None):
    """An out= argument for x: None, C, F, guarded (sentinel buffer) or inplace;
    ``extra`` is an additional {name: array} of allowed aliases (e.g. dy)."""
    choices = [None, "C", "F", "guarded", "inplace"] + sorted(extra or {})
    mode = data.draw(st.sampled_from(choices))
    if extra and mode in extra:
        return extra[mode], (lambda: None), mode
    out, check = make_out(x, mode)
    return out, check, mode


def _to_ncs(x, ca):
    """float64 (N, C, S) view of x with the channel axis ``ca`` and batch axis 0."""
    x = np.asarray(x, np.float64)
    xt = np.moveaxis(x, ca % x.ndim, 1)
    S = int(np.prod(xt.shape[2:], dtype=np.int64))
    return xt.reshape(xt.shape[0], xt.shape[1], S), xt.shape


def _from_ncs(y, tshape, ca, ndim):
    return np.moveaxis(y.reshape(tshape), 1, ca % ndim)


def _row_stats(x, axes, eps, rms=False):
    """float64 mean (0 for RMS), rstd and xhat over ``axes`` (keepdims)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if rms:
            mean = np.zeros_like(np.sum(x, axis=axes, keepdims=True))
            var = np.mean(x * x, axis=axes, keepdims=True)
        else:
            mean = np.mean(x, axis=axes, keepdims=True)
            var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean) * rstd
    return mean, rstd, xhat


def _row_backward(g, xhat, rstd, w, axes, rms=False):
    """dx of y = xhat * w (+ b) where xhat is normalized over ``axes``."""
    gw = g if w is None else g * w
    with np.errstate(invalid="ignore", divide="ignore"):
        proj = np.mean(gw * xhat, axis=axes, keepdims=True)
        centre = 0.0 if rms else np.mean(gw, axis=axes, keepdims=True)
        dx = rstd * (gw - centre - xhat * proj)
        mag = np.abs(rstd) * (np.abs(gw) + np.abs(centre) + np.abs(xhat * proj))
    return dx, mag


# ---------------------------------------------------------------------------
# layer_norm_backward / rms_norm_backward
# ---------------------------------------------------------------------------

@st.composite
def axes_for(draw, ndim):
    k = draw(st.integers(1, ndim))
    axes = draw(st.permutations(range(ndim)))[:k]
    axes = [a - ndim if draw(st.booleans()) else a for a in axes]
    if k == 1 and draw(st.booleans()):
        return axes[0]
    return tuple(axes)


def _sorted_axes(axis, ndim):
    axis = (axis,) if np.ndim(axis) == 0 else axis
    return tuple(sorted(a % ndim for a in axis))


@SETTINGS
@given(data=st.data(), rms=st.booleans())
def test_row_norm_backward_property(data, rms):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(1, 4))
    x = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    dy = data.draw(values(x.shape, dt, rng, loc=0.0))
    axis = data.draw(axes_for(ndim))
    axes = _sorted_axes(axis, ndim)
    other = tuple(i for i in range(ndim) if i not in axes)
    pshape = tuple(x.shape[a] for a in axes)
    w = _param(rng, pshape, dt, 1.0) if data.draw(st.booleans()) else None
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    x0, dy0 = x.copy(), dy.copy()
    if rms:
        _, stat_r = fastnorm.rms_norm(x, axis=axis, eps=eps, return_stats=True)
    else:
        _, stat_m, stat_r = fastnorm.layer_norm(x, axis=axis, eps=eps, return_stats=True)
    out, check, mode = _draw_out(data, x, {"dy": dy})
    kw = {} if out is None else {"out": out}
    nt = data.draw(threads)
    if rms:
        res = fastnorm.rms_norm_backward(dy, x, stat_r, w, axis=axis, num_threads=nt, **kw)
        dx, dw = res
        db = None
    else:
        dx, dw, db = fastnorm.layer_norm_backward(dy, x, stat_m, stat_r, w, axis=axis,
                                                  num_threads=nt, **kw)
    check()
    if out is not None:
        assert dx is out
    assert dx.shape == x0.shape and dx.dtype == dt
    if mode not in ("inplace",):
        _unchanged(x, x0)
    if mode != "dy":
        _unchanged(dy, dy0)
    x64, g = x0.astype(np.float64), dy0.astype(np.float64)
    _, rstd, xhat = _row_stats(x64, axes, eps, rms=rms)
    wb = None if w is None else w.astype(np.float64).reshape(
        [x.shape[i] if i in axes else 1 for i in range(ndim)])
    edx, mag = _row_backward(g, xhat, rstd, wb, axes, rms=rms)
    if x.size:
        _close(dx, edx, dt, scale=_mag(mag))
    if w is None:
        assert dw is None and db is None
        return
    assert dw.shape == pshape and dw.dtype == dt
    gx = g * xhat if x.size else np.zeros_like(g)
    edw = np.sum(gx, axis=other).reshape(pshape)
    _close(dw, edw, dt, scale=_mag(np.sum(np.abs(gx), axis=other)))
    if not rms:
        assert db.shape == pshape and db.dtype == dt
        _close(db, np.sum(g, axis=other).reshape(pshape), dt,
               scale=_mag(np.sum(np.abs(g), axis=other)))


# ---------------------------------------------------------------------------
# batch_norm_backward
# ---------------------------------------------------------------------------

@SETTINGS
@given(data=st.data())
def test_batch_norm_backward_property(data):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(2, 5))
    x = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    dy = data.draw(values(x.shape, dt, rng, loc=0.0))
    ca = data.draw(st.integers(-ndim, ndim - 1))
    C = x.shape[ca]
    count = x.size // C if C else 0
    red = tuple(i for i in range(ndim) if i != ca % ndim)
    bshape = [1] * ndim
    bshape[ca] = C
    w = _param(rng, C, dt, 1.0) if data.draw(st.booleans()) else None
    training = data.draw(st.booleans()) and count != 1
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    x0, dy0 = x.copy(), dy.copy()
    x64, g = x0.astype(np.float64), dy0.astype(np.float64)
    if training:
        _, mean, invstd = fastnorm.batch_norm(x, eps=eps, channel_axis=ca, return_stats=True)
        emean, einv, xhat = _row_stats(x64, red, eps)
    else:
        mean = _param(rng, C, dt, data.draw(st.sampled_from(LOCS)))
        invstd = (rng.random(C) * 10 + 0.1).astype(dt)
        emean = mean.astype(np.float64).reshape(bshape)
        einv = invstd.astype(np.float64).reshape(bshape)
        xhat = (x64 - emean) * einv
    out, check, mode = _draw_out(data, x, {"dy": dy})
    kw = {} if out is None else {"out": out}
    dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, channel_axis=ca,
                                              training=training,
                                              num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert dx is out
    assert dx.shape == x0.shape and dx.dtype == dt
    if mode != "inplace":
        _unchanged(x, x0)
    if mode != "dy":
        _unchanged(dy, dy0)
    wb = None if w is None else w.astype(np.float64).reshape(bshape)
    if training:
        edx, mag = _row_backward(g, xhat, einv, wb, red)
    else:
        edx = g * einv * (1.0 if wb is None else wb)
        mag = edx
    if x.size:
        _close(dx, edx, dt, scale=_mag(mag))
    if w is None:
        assert dw is None and db is None
        return
    assert dw.shape == (C,) and db.shape == (C,) and dw.dtype == dt and db.dtype == dt
    gx = g * xhat if x.size else np.zeros_like(g)
    _close(dw, gx.sum(axis=red), dt, scale=_mag(np.abs(gx).sum(axis=red)))
    _close(db, g.sum(axis=red), dt, scale=_mag(np.abs(g).sum(axis=red)))


# ---------------------------------------------------------------------------
# group_norm / group_norm_backward
# ---------------------------------------------------------------------------

def _divisors(C):
    return [1, 2] if C == 0 else [d for d in range(1, C + 1) if C % d == 0]


@st.composite
def grouped_input(draw, dt, rng, min_ndim=2, max_ndim=5, channels=(0, 1, 2, 3, 4, 6, 8)):
    ndim = draw(st.integers(min_ndim, max_ndim))
    shape = list(draw(shapes(ndim)))
    ca = draw(st.sampled_from([1, -1] + list(range(1, ndim))))
    shape[ca] = draw(st.sampled_from(channels))
    x = draw(values(tuple(shape), dt, rng))
    return x, ca


def _ref_group_norm(x, G, w, b, eps, ca):
    xr, tshape = _to_ncs(x, ca)
    N, C, S = xr.shape
    xg = xr.reshape(N, G, (C // G) * S)
    mean, rstd, xhat = _row_stats(xg, (2,), eps)
    y = xhat.reshape(N, C, S)
    if w is not None:
        y = y * w.astype(np.float64)[None, :, None]
    if b is not None:
        y = y + b.astype(np.float64)[None, :, None]
    return _from_ncs(y, tshape, ca, x.ndim), mean[..., 0], rstd[..., 0]


@SETTINGS
@given(data=st.data())
def test_group_norm_property(data):
    dt, rng = data.draw(setup())
    x, ca = data.draw(grouped_input(dt, rng))
    N, C = x.shape[0], x.shape[ca]
    G = data.draw(st.sampled_from(_divisors(C)))
    w = _param(rng, C, dt, 1.0) if data.draw(st.booleans()) else None
    b = _param(rng, C, dt) if data.draw(st.booleans()) else None
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    x0 = x.copy()
    out, check, mode = _draw_out(data, x)
    kw = {} if out is None else {"out": out}
    y, mean, rstd = fastnorm.group_norm(x, G, w, b, eps=eps, channel_axis=ca,
                                        return_stats=True, num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert y is out
    if mode != "inplace":
        _unchanged(x, x0)
    assert y.shape == x0.shape and y.dtype == dt
    assert mean.shape == (N, G) and rstd.shape == (N, G)
    assert mean.dtype == dt and rstd.dtype == dt
    ey, em, er = _ref_group_norm(x0, G, w, b, eps, ca)
    if x0.size:
        _close(y, ey, dt, scale=_mag(ey))
        _close(mean, em, dt, scale=1e3)
        _close(rstd, er, dt, scale=_mag(er))


@SETTINGS
@given(data=st.data())
def test_group_norm_backward_property(data):
    dt, rng = data.draw(setup())
    x, ca = data.draw(grouped_input(dt, rng))
    C = x.shape[ca]
    G = data.draw(st.sampled_from(_divisors(C)))
    dy = data.draw(values(x.shape, dt, rng, loc=0.0))
    w = _param(rng, C, dt, 1.0) if data.draw(st.booleans()) else None
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    x0, dy0 = x.copy(), dy.copy()
    _, mean, rstd = fastnorm.group_norm(x, G, eps=eps, channel_axis=ca, return_stats=True)
    out, check, mode = _draw_out(data, x, {"dy": dy})
    kw = {} if out is None else {"out": out}
    dx, dw, db = fastnorm.group_norm_backward(dy, x, G, mean, rstd, w, channel_axis=ca,
                                              num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert dx is out
    if mode != "inplace":
        _unchanged(x, x0)
    if mode != "dy":
        _unchanged(dy, dy0)
    assert dx.shape == x0.shape and dx.dtype == dt
    xr, tshape = _to_ncs(x0, ca)
    gr, _ = _to_ncs(dy0, ca)
    N, _, S = xr.shape
    shape4 = (N, G, C // G if G else 0, S)
    em, er, xhat = _row_stats(xr.reshape(shape4), (2, 3), eps)
    g4 = gr.reshape(shape4)
    w4 = None if w is None else w.astype(np.float64).reshape(1, G, C // G, 1)
    edx, mag = _row_backward(g4, xhat, er, w4, (2, 3))
    if x0.size:
        _close(dx, _from_ncs(edx.reshape(N, C, S), tshape, ca, x.ndim), dt, scale=_mag(mag))
    if w is None:
        assert dw is None and db is None
        return
    assert dw.shape == (C,) and db.shape == (C,) and dw.dtype == dt and db.dtype == dt
    gx = (g4 * xhat).reshape(N, C, S) if x0.size else np.zeros((N, C, S))
    _close(dw, gx.sum(axis=(0, 2)), dt, scale=_mag(np.abs(gx).sum(axis=(0, 2))))
    _close(db, gr.sum(axis=(0, 2)), dt, scale=_mag(np.abs(gr).sum(axis=(0, 2))))


@pytest.mark.parametrize("op,shape,groups", [
    ("group_norm", (0, 4, 3), 2), ("group_norm", (0, 4), 4), ("group_norm", (2, 0, 3), 1),
    ("group_norm", (1, 0), 1), ("instance_norm", (0, 4, 3), None),
    ("instance_norm", (2, 0, 3), None)])
def test_grouped_backward_empty_batch_with_weight(op, shape, groups):
    x = np.zeros(shape)
    C = shape[1]
    w = np.ones(C)
    if op == "group_norm":
        _, m, r = fastnorm.group_norm(x, groups, return_stats=True)
        dx, dw, db = fastnorm.group_norm_backward(x, x, groups, m, r, w)
    else:
        _, m, r = fastnorm.instance_norm(x, return_stats=True)
        dx, dw, db = fastnorm.instance_norm_backward(x, x, m, r, w)
    assert dx.shape == shape
    np.testing.assert_array_equal(dw, np.zeros(C))
    np.testing.assert_array_equal(db, np.zeros(C))


@pytest.mark.parametrize("op", ["group_norm", "instance_norm"])
def test_grouped_backward_dweight_float32_large_mean(op):
    rng = np.random.default_rng(0)
    x = (1e3 + 1e-2 * rng.standard_normal((3, 4, 4))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = np.ones(4, np.float32)
    G = 2 if op == "group_norm" else 4
    if op == "group_norm":
        _, m, r = fastnorm.group_norm(x, G, return_stats=True)
        dx, dw, db = fastnorm.group_norm_backward(dy, x, G, m, r, w)
    else:
        _, m, r = fastnorm.instance_norm(x, return_stats=True)
        dx, dw, db = fastnorm.instance_norm_backward(dy, x, m, r, w)
    xg = x.astype(np.float64).reshape(3, G, -1)
    _, rstd, xhat = _row_stats(xg, (2,), 1e-5)
    gx = dy.astype(np.float64) * xhat.reshape(x.shape)
    _close(dw, gx.sum(axis=(0, 2)), np.float32, scale=_mag(np.abs(gx).sum(axis=(0, 2))))


# ---------------------------------------------------------------------------
# instance_norm / instance_norm_backward
# ---------------------------------------------------------------------------

def _ref_instance_norm(x, w, b, rm, rv, training, momentum, eps, ca):
    """(y, mean (N, C), rstd (N, C), new running mean, new running var)."""
    xr, tshape = _to_ncs(x, ca)
    N, C, S = xr.shape
    new_rm = None if rm is None else rm.astype(np.float64)
    new_rv = None if rv is None else rv.astype(np.float64)
    if training:
        mean, rstd, xhat = _row_stats(xr, (2,), eps)
        if rm is not None and N > 0 and S > 1:
            m = mean[..., 0]
            uvar = np.sum((xr - mean) ** 2, axis=2) / (S - 1)
            new_rm = (1 - momentum) * new_rm + momentum * m.mean(axis=0)
            new_rv = (1 - momentum) * new_rv + momentum * uvar.mean(axis=0)
    else:
        mean = new_rm[None, :, None]
        rstd = 1.0 / np.sqrt(new_rv[None, :, None] + eps)
        xhat = (xr - mean) * rstd
    y = xhat
    if w is not None:
        y = y * w.astype(np.float64)[None, :, None]
    if b is not None:
        y = y + b.astype(np.float64)[None, :, None]
    return (_from_ncs(y, tshape, ca, x.ndim), np.squeeze(mean, -1), np.squeeze(rstd, -1),
            new_rm, new_rv)


@SETTINGS
@given(data=st.data())
def test_instance_norm_property(data):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(3, 5))
    x = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    ca = data.draw(st.sampled_from([1, -1]))
    N, C = x.shape[0], x.shape[ca]
    S = x.size // (N * C) if N * C else 0  # no instances: nothing to reject
    w = _param(rng, C, dt, 1.0) if data.draw(st.booleans()) else None
    b = _param(rng, C, dt) if data.draw(st.booleans()) else None
    mode = data.draw(st.sampled_from(["train", "train_rs", "eval"]))
    training = mode != "eval"
    rm = rv = None
    if mode != "train":
        rm = _param(rng, C, dt, data.draw(st.sampled_from(LOCS)))
        rv = (rng.random(C) + 0.01).astype(dt)
    rm0 = None if rm is None else rm.copy()
    rv0 = None if rv is None else rv.copy()
    momentum = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    x0 = x.copy()
    out, check, omode = _draw_out(data, x)
    kw = {} if out is None else {"out": out}
    out0 = None if out is None else out.copy()
    call = dict(running_mean=rm, running_var=rv, training=training, momentum=momentum,
                eps=eps, channel_axis=ca, num_threads=data.draw(threads), **kw)
    if training and S == 1:
        # documented: one spatial value per instance cannot be normalized
        with pytest.raises(ValueError):
            fastnorm.instance_norm(x, w, b, **call)
        _unchanged(x, x0)
        if out is not None:
            np.testing.assert_array_equal(out, out0)
        if rm is not None:
            assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
        return
    if training:
        y, mean, rstd = fastnorm.instance_norm(x, w, b, return_stats=True, **call)
        assert mean.shape == (N, C) and rstd.shape == (N, C) and mean.dtype == dt
    else:
        y = fastnorm.instance_norm(x, w, b, **call)
    check()
    if out is not None:
        assert y is out
    if omode != "inplace":
        _unchanged(x, x0)
    assert y.shape == x0.shape and y.dtype == dt
    ey, em, er, erm, erv = _ref_instance_norm(x0, w, b, rm0, rv0, training, momentum, eps, ca)
    if x0.size:
        _close(y, ey, dt, scale=_mag(ey))
        if training:
            _close(mean, em, dt, scale=1e3)
            _close(rstd, er, dt, scale=_mag(er))
    if rm is not None:
        if training and N * C * S == 0:
            # nothing seen: running statistics must not move (no NaN written)
            assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
        else:
            _close(rm, erm, dt, scale=1e3)
            _close(rv, erv, dt, scale=_mag(erv))


@SETTINGS
@given(data=st.data())
def test_instance_norm_backward_property(data):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(3, 5))
    x = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    dy = data.draw(values(x.shape, dt, rng, loc=0.0))
    ca = data.draw(st.sampled_from([1, -1]))
    C = x.shape[ca]
    xr, tshape = _to_ncs(x, ca)
    S = xr.shape[2]
    training = data.draw(st.booleans()) and S != 1
    w = _param(rng, C, dt, 1.0) if data.draw(st.booleans()) else None
    if training and x.shape[0] * C == 0:
        pass
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    x0, dy0 = x.copy(), dy.copy()
    gr, _ = _to_ncs(dy0, ca)
    if training:
        _, mean, rstd = fastnorm.instance_norm(x, eps=eps, channel_axis=ca, return_stats=True)
        em, er, xhat = _row_stats(xr, (2,), eps)
    else:
        mean = _param(rng, C, dt, data.draw(st.sampled_from(LOCS)))
        rstd = (rng.random(C) * 10 + 0.1).astype(dt)
        er = rstd.astype(np.float64)[None, :, None]
        xhat = (xr - mean.astype(np.float64)[None, :, None]) * er
    out, check, mode = _draw_out(data, x, {"dy": dy})
    kw = {} if out is None else {"out": out}
    dx, dw, db = fastnorm.instance_norm_backward(dy, x, mean, rstd, w, training=training,
                                                 channel_axis=ca,
                                                 num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert dx is out
    if mode != "inplace":
        _unchanged(x, x0)
    if mode != "dy":
        _unchanged(dy, dy0)
    assert dx.shape == x0.shape and dx.dtype == dt
    w3 = None if w is None else w.astype(np.float64)[None, :, None]
    if training:
        edx, mag = _row_backward(gr, xhat, er, w3, (2,))
    else:
        edx = gr * er * (1.0 if w3 is None else w3)
        mag = edx
    if x0.size:
        _close(dx, _from_ncs(edx, tshape, ca, ndim), dt, scale=_mag(mag))
    if w is None:
        assert dw is None and db is None
        return
    assert dw.shape == (C,) and db.shape == (C,) and dw.dtype == dt and db.dtype == dt
    gx = gr * xhat if x0.size else np.zeros_like(gr)
    _close(dw, gx.sum(axis=(0, 2)), dt, scale=_mag(np.abs(gx).sum(axis=(0, 2))))
    _close(db, gr.sum(axis=(0, 2)), dt, scale=_mag(np.abs(gr).sum(axis=(0, 2))))


# ---------------------------------------------------------------------------
# add_layer_norm / add_rms_norm
# ---------------------------------------------------------------------------

# (out, residual_out) pairs the docstrings allow.
ADD_OUTS = [(None, None), ("C", None), ("guarded", "C"), ("x", None), ("residual", None),
            (None, "residual"), ("x", "residual"), ("residual", "x"), ("F", "guarded")]


def _add_out(x, name, arrays):
    if name in arrays:
        return arrays[name], lambda: None
    return make_out(x, name)


@SETTINGS
@given(data=st.data(), rms=st.booleans())
def test_add_norm_property(data, rms):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(1, 4))
    shape = data.draw(shapes(ndim))
    x = data.draw(values(shape, dt, rng))
    r = data.draw(values(shape, dt, rng))
    axis = data.draw(axes_for(ndim))
    axes = _sorted_axes(axis, ndim)
    pshape = tuple(shape[a] for a in axes)
    bp = [shape[i] if i in axes else 1 for i in range(ndim)]
    w = _param(rng, pshape, dt, 1.0) if data.draw(st.booleans()) else None
    b = None if rms or not data.draw(st.booleans()) else _param(rng, pshape, dt)
    eps = data.draw(st.sampled_from([None, 1e-6, 0.1] if rms else [0.0, 1e-5, 0.5]))
    x0, r0 = x.copy(), r.copy()
    oname, rname = data.draw(st.sampled_from(ADD_OUTS))
    named = {"x": x, "residual": r}
    kw, checks = {}, []
    if oname is not None:
        kw["out"], c = _add_out(x, oname, named)
        checks.append(c)
    if rname is not None:
        kw["residual_out"], c = _add_out(x, rname, named)
        checks.append(c)
    nt = data.draw(threads)
    if rms:
        y, s = fastnorm.add_rms_norm(x, r, w, axis=axis, eps=eps, num_threads=nt, **kw)
    else:
        y, s = fastnorm.add_layer_norm(x, r, w, b, axis=axis, eps=eps, num_threads=nt, **kw)
    for c in checks:
        c()
    if "out" in kw:
        assert y is kw["out"]
    if "residual_out" in kw:
        assert s is kw["residual_out"]
    assert y.shape == shape and s.shape == shape and y.dtype == dt and s.dtype == dt
    if "x" not in (oname, rname):
        _unchanged(x, x0)
    if "residual" not in (oname, rname):
        _unchanged(r, r0)
    es = x0 + r0  # correctly rounded in dt, as any exact-then-round kernel gives
    np.testing.assert_array_equal(s, es)
    s64 = es.astype(np.float64)
    if rms:
        e = float(np.finfo(dt).eps) if eps is None else eps
        _, rstd, xhat = _row_stats(s64, axes, e, rms=True)
    else:
        _, rstd, xhat = _row_stats(s64, axes, eps)
    ey = xhat
    if w is not None:
        ey = ey * w.astype(np.float64).reshape(bp)
    if b is not None:
        ey = ey + b.astype(np.float64).reshape(bp)
    if x0.size:
        _close(y, ey, dt, scale=_mag(ey))


# ---------------------------------------------------------------------------
# local_response_norm / local_response_norm_backward
# ---------------------------------------------------------------------------

def _lrn_windows(C, size):
    """Boolean (C, C) matrix M[c, j]: channel j is in the window of channel c."""
    c = np.arange(C)[:, None]
    j = np.arange(C)[None, :]
    return (j >= c - size // 2) & (j <= c + (size - 1) // 2)


def _ref_lrn(x, size, alpha, beta, k, ca):
    """(y, D) with channels moved last, then y moved back; float64."""
    xc = np.moveaxis(np.asarray(x, np.float64), ca % x.ndim, -1)
    M = _lrn_windows(xc.shape[-1], size).astype(np.float64)
    D = k + alpha / size * ((xc * xc) @ M.T)
    return xc, D, M


@st.composite
def lrn_params(draw):
    return dict(size=draw(st.sampled_from([1, 2, 3, 4, 5, 9])),
                alpha=draw(st.sampled_from([1e-4, 1e-2, 1.0])),
                beta=draw(st.sampled_from([0.5, 0.75, 1.0, 2.0])),
                k=draw(st.sampled_from([1.0, 2.0])))


@SETTINGS
@given(data=st.data())
def test_local_response_norm_property(data):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(2, 5))
    x = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    ca = data.draw(st.sampled_from([1, -1]))
    p = data.draw(lrn_params())
    x0 = x.copy()
    out, check, mode = _draw_out(data, x)
    kw = {} if out is None else {"out": out}
    y = fastnorm.local_response_norm(x, p["size"], alpha=p["alpha"], beta=p["beta"],
                                     k=p["k"], channel_axis=ca,
                                     num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert y is out
    if mode != "inplace":
        _unchanged(x, x0)
    assert y.shape == x0.shape and y.dtype == dt
    xc, D, _ = _ref_lrn(x0, ca=ca, **p)
    ey = np.moveaxis(xc * D ** -p["beta"], -1, ca % ndim)
    if x0.size:
        _close(y, ey, dt, scale=_mag(ey))


@SETTINGS
@given(data=st.data())
def test_local_response_norm_backward_property(data):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(2, 5))
    x = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    dy = data.draw(values(x.shape, dt, rng, loc=0.0))
    ca = data.draw(st.sampled_from([1, -1]))
    p = data.draw(lrn_params())
    x0, dy0 = x.copy(), dy.copy()
    out, check, mode = _draw_out(data, x, {"dy": dy})
    kw = {} if out is None else {"out": out}
    dx = fastnorm.local_response_norm_backward(dy, x, p["size"], alpha=p["alpha"],
                                               beta=p["beta"], k=p["k"], channel_axis=ca,
                                               num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert dx is out
    if mode != "inplace":
        _unchanged(x, x0)
    if mode != "dy":
        _unchanged(dy, dy0)
    assert dx.shape == x0.shape and dx.dtype == dt
    xc, D, M = _ref_lrn(x0, ca=ca, **p)
    g = np.moveaxis(dy0.astype(np.float64), ca % ndim, -1)
    a, b = p["alpha"] / p["size"], p["beta"]
    # d y_c / d x_j = [c == j] D_c^-b - 2 a b x_c x_j D_c^(-b-1) [j in window(c)]
    t1 = g * D ** -b
    t2 = 2 * a * b * xc * ((g * xc * D ** (-b - 1)) @ M)
    edx = np.moveaxis(t1 - t2, -1, ca % ndim)
    if x0.size:
        _close(dx, edx, dt, scale=_mag(t1, t2))


# ---------------------------------------------------------------------------
# weight_norm / weight_norm_backward
# ---------------------------------------------------------------------------

@st.composite
def weight_norm_input(draw, dt, rng):
    ndim = draw(st.integers(1, 4))
    shape = draw(shapes(ndim))
    v = draw(values(shape, dt, rng))
    axis = draw(st.sampled_from([None] + list(range(-ndim, ndim))))
    if axis is None:
        gshape = ()
    elif draw(st.booleans()):
        gshape = (shape[axis],)
    else:
        gshape = tuple(s if i == axis % ndim else 1 for i, s in enumerate(shape))
    g = _param(rng, gshape, dt, draw(st.sampled_from([0.0, 1.0, 10.0])))
    return v, g, axis


def _ref_weight_norm_parts(v, g, axis):
    v = np.asarray(v, np.float64)
    if axis is None:
        red = tuple(range(v.ndim))
        gb = np.asarray(g, np.float64).reshape((1,) * v.ndim)
    else:
        a = axis % v.ndim
        red = tuple(i for i in range(v.ndim) if i != a)
        gb = np.asarray(g, np.float64).reshape([v.shape[i] if i == a else 1
                                                 for i in range(v.ndim)])
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.sqrt(np.sum(v * v, axis=red, keepdims=True))
        u = v / norm
    return v, gb, norm, u, red


@SETTINGS
@given(data=st.data())
def test_weight_norm_property(data):
    dt, rng = data.draw(setup())
    v, g, axis = data.draw(weight_norm_input(dt, rng))
    v0, g0 = v.copy(), g.copy()
    w = fastnorm.weight_norm(v, g, axis=axis)
    _unchanged(v, v0)
    _unchanged(g, g0)
    assert w.shape == v0.shape and w.dtype == dt
    _, gb, norm, u, _ = _ref_weight_norm_parts(v0, g0, axis)
    ew = gb * u
    # all-zero (here: empty) slices give NaN, as documented; allclose matches NaN
    _close(w, ew, dt, scale=_mag(ew))


@SETTINGS
@given(data=st.data())
def test_weight_norm_backward_property(data):
    dt, rng = data.draw(setup())
    v, g, axis = data.draw(weight_norm_input(dt, rng))
    dw = data.draw(values(v.shape, dt, rng, loc=0.0))
    v0, g0, dw0 = v.copy(), g.copy(), dw.copy()
    dv, dg = fastnorm.weight_norm_backward(dw, v, g, axis=axis)
    _unchanged(v, v0)
    _unchanged(g, g0)
    _unchanged(dw, dw0)
    assert dv.shape == v0.shape and dv.dtype == dt
    assert np.shape(dg) == g0.shape and np.asarray(dg).dtype == dt
    _, gb, norm, u, red = _ref_weight_norm_parts(v0, g0, axis)
    d = dw0.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        edg = np.sum(d * u, axis=red, keepdims=True)
        edv = gb / norm * (d - u * edg)
        mag = np.abs(gb / norm) * (np.abs(d) + np.abs(u * edg))
    _close(dv, edv, dt, scale=_mag(mag))
    _close(np.ravel(dg), np.ravel(edg), dt,
           scale=_mag(np.sum(np.abs(d * u), axis=red)))


# ---------------------------------------------------------------------------
# fold_batch_norm
# ---------------------------------------------------------------------------

@SETTINGS
@given(data=st.data())
def test_fold_batch_norm_property(data):
    dt, rng = data.draw(setup())
    ndim = data.draw(st.integers(1, 4))
    W = data.draw(values(data.draw(shapes(ndim)), dt, rng))
    ca = data.draw(st.sampled_from(sorted({0, min(1, ndim - 1), -1})))
    C = W.shape[ca]
    bias = _param(rng, C, dt, data.draw(st.sampled_from(LOCS))) if data.draw(
        st.booleans()) else None
    rm = data.draw(values((C,), dt, rng))
    eps = data.draw(st.sampled_from([0.0, 1e-5, 1e-3]))
    rv = (rng.random(C) * data.draw(st.sampled_from([1e-3, 1.0, 100.0])) + 1e-4).astype(dt)
    gamma = _param(rng, C, dt, 1.0) if data.draw(st.booleans()) else None
    beta = _param(rng, C, dt) if data.draw(st.booleans()) else None
    ins = [W, bias, rm, rv, gamma, beta]
    ins0 = [None if a is None else a.copy() for a in ins]
    W2, b2 = fastnorm.fold_batch_norm(W, bias, rm, rv, gamma, beta, eps=eps, channel_axis=ca)
    for a, a0 in zip(ins, ins0):
        if a is not None:
            _unchanged(a, a0)
    assert W2.shape == W.shape and W2.dtype == dt
    assert b2.shape == (C,) and b2.dtype == dt
    f = lambda a, d: np.full(C, d) if a is None else a.astype(np.float64)  # noqa: E731
    s = f(gamma, 1.0) / np.sqrt(rv.astype(np.float64) + eps)
    bs = [1] * ndim
    bs[ca] = C
    eW = W.astype(np.float64) * s.reshape(bs)
    eb = (f(bias, 0.0) - rm.astype(np.float64)) * s + f(beta, 0.0)
    _close(W2, eW, dt, scale=_mag(eW))
    _close(b2, eb, dt, scale=_mag(np.abs(f(bias, 0.0) - rm.astype(np.float64)) * np.abs(s),
                                   f(beta, 0.0)))
