"""Property tests (hypothesis): random shapes (incl. 0 and 1), axes, layouts,
dtypes, affine parameters and thread counts against the float64 references."""

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastnorm  # noqa: E402
from reference import (  # noqa: E402
    LAYOUTS,
    _norm_axes,
    batch_norm as ref_bn,
    layer_norm as ref_ln,
    make_layout,
    make_out,
    moments as ref_moments,
    rms_norm as ref_rms,
    tol,
)

# FASTNORM_HYPOTHESIS_EXAMPLES=1000 runs a deeper search locally.
SETTINGS = settings(max_examples=int(os.environ.get("FASTNORM_HYPOTHESIS_EXAMPLES", "40")),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

dtypes = st.sampled_from([np.float32, np.float64])
layouts = st.sampled_from(LAYOUTS)
threads = st.sampled_from([None, 1, 2])
out_modes = st.sampled_from([None, "C", "F", "guarded", "inplace"])


@st.composite
def arrays(draw, min_ndim=1, max_ndim=4):
    ndim = draw(st.integers(min_ndim, max_ndim))
    sides = {1: [0, 1, 2, 7, 16, 17, 33, 100], 2: [0, 1, 1, 2, 3, 7, 17, 33],
             3: [0, 1, 1, 2, 3, 5, 9]}.get(ndim, [0, 1, 1, 2, 3, 4])
    shape = tuple(draw(st.lists(st.sampled_from(sides), min_size=ndim, max_size=ndim)))
    dt = np.dtype(draw(dtypes))
    seed = draw(st.integers(0, 2**32 - 1))
    loc = draw(st.sampled_from([0.0, 1.0, -30.0, 100.0]))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    rng = np.random.default_rng(seed)
    x = (loc + scale * rng.standard_normal(shape)).astype(dt)
    return make_layout(x, draw(layouts)), rng


@st.composite
def axes_for(draw, ndim):
    k = draw(st.integers(1, ndim))
    axes = draw(st.permutations(range(ndim)))[:k]
    axes = [a - ndim if draw(st.booleans()) else a for a in axes]
    if k == 1 and draw(st.booleans()):
        return axes[0]
    return tuple(axes)


def _close(actual, expected, dtype, scale=1.0):
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=atol * scale)


@SETTINGS
@given(data=st.data())
def test_layer_norm_property(data):
    x, rng = data.draw(arrays())
    axis = data.draw(axes_for(x.ndim))
    axes = _norm_axes(axis, x.ndim)
    pshape = tuple(x.shape[a] for a in axes)
    w = rng.standard_normal(pshape).astype(x.dtype) if data.draw(st.booleans()) else None
    b = rng.standard_normal(pshape).astype(x.dtype) if data.draw(st.booleans()) else None
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    x0 = x.copy()
    out, check = make_out(x, data.draw(out_modes))
    kw = {} if out is None else {"out": out}
    y, mean, rstd = fastnorm.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True,
                                        num_threads=data.draw(threads), **kw)
    check()
    if out is not None:
        assert y is out
    assert y.shape == x0.shape and y.dtype == x0.dtype
    sshape = tuple(s for i, s in enumerate(x0.shape) if i not in axes)
    assert np.shape(mean) == sshape and np.shape(rstd) == sshape
    if x0.size:
        ry, rm, rr = ref_ln(x0, w, b, axis=axis, eps=eps)
        _close(y, ry, x0.dtype)
        _close(mean, rm, x0.dtype, scale=100)  # |mean| up to 100
        _close(rstd, rr, x0.dtype, scale=10)   # rstd up to 10 (std 0.1)
    if out is not x:
        np.testing.assert_array_equal(x, x0)


@SETTINGS
@given(data=st.data())
def test_rms_norm_property(data):
    x, rng = data.draw(arrays())
    axis = data.draw(axes_for(x.ndim))
    axes = _norm_axes(axis, x.ndim)
    pshape = tuple(x.shape[a] for a in axes)
    w = rng.standard_normal(pshape).astype(x.dtype) if data.draw(st.booleans()) else None
    eps = data.draw(st.sampled_from([None, 1e-6, 0.1]))
    x0 = x.copy()
    out, check = make_out(x, data.draw(out_modes))
    kw = {} if out is None else {"out": out}
    y, rstd = fastnorm.rms_norm(x, w, axis=axis, eps=eps, return_stats=True,
                                num_threads=data.draw(threads), **kw)
    check()
    assert y.shape == x0.shape and y.dtype == x0.dtype
    sshape = tuple(s for i, s in enumerate(x0.shape) if i not in axes)
    assert np.shape(rstd) == sshape
    if x0.size:
        ry, rr = ref_rms(x0, w, axis=axis, eps=eps)
        _close(y, ry, x0.dtype)
        _close(rstd, rr, x0.dtype, scale=10)


@SETTINGS
@given(data=st.data())
def test_moments_property(data):
    x, _ = data.draw(arrays())
    axis = data.draw(st.one_of(st.none(), axes_for(x.ndim)))
    ddof = data.draw(st.sampled_from([0, 1]))
    keepdims = data.draw(st.booleans())
    x0 = x.copy()
    mean, var = fastnorm.moments(x, axis, ddof=ddof, keepdims=keepdims,
                                 num_threads=data.draw(threads))
    np.testing.assert_array_equal(x, x0)
    expect_shape = np.shape(np.zeros(x.shape).sum(axis=axis, keepdims=keepdims))
    assert np.shape(mean) == expect_shape and np.shape(var) == expect_shape
    assert np.asarray(mean).dtype == x.dtype and np.asarray(var).dtype == x.dtype
    axes = _norm_axes(axis, x.ndim)
    n = int(np.prod([x.shape[a] for a in axes]))
    if n > ddof and np.size(mean):
        rm, rv = ref_moments(x0, axis, ddof=ddof, keepdims=keepdims)
        _close(mean, rm, x.dtype, scale=100)
        _close(var, rv, x.dtype, scale=100)


@SETTINGS
@given(data=st.data())
def test_batch_norm_property(data):
    x, rng = data.draw(arrays(min_ndim=2, max_ndim=5))
    ca = data.draw(st.integers(-x.ndim, x.ndim - 1))
    C = x.shape[ca]
    dt = x.dtype
    count = x.size // C if C else 0
    affine = data.draw(st.booleans())
    w = rng.standard_normal(C).astype(dt) if affine else None
    b = rng.standard_normal(C).astype(dt) if affine else None
    mode = data.draw(st.sampled_from(["train", "train_rs", "eval"]))
    rm = rv = None
    training = None
    if mode != "train":
        rm = rng.standard_normal(C).astype(dt)
        rv = (rng.random(C) + 0.5).astype(dt)
        training = True if mode == "train_rs" else None
    rm0 = None if rm is None else rm.copy()
    rv0 = None if rv is None else rv.copy()
    momentum = data.draw(st.sampled_from([0.1, 0.5]))
    x0 = x.copy()
    out, check = make_out(x, data.draw(out_modes))
    kw = {} if out is None else {"out": out}
    out0 = None if out is None else out.copy()
    is_training = mode != "eval"
    if is_training and count == 1:
        with pytest.raises(ValueError):
            fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=training,
                                momentum=momentum, channel_axis=ca, **kw)
        if rm is not None:
            assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
        if out is not None:
            np.testing.assert_array_equal(out, out0)
        return
    y, mean, invstd = fastnorm.batch_norm(
        x, w, b, running_mean=rm, running_var=rv, training=training, momentum=momentum,
        channel_axis=ca, return_stats=True, num_threads=data.draw(threads), **kw)
    check()
    assert y.shape == x0.shape and y.dtype == dt
    assert np.shape(mean) == (C,) and np.shape(invstd) == (C,)
    if count == 0:
        if rm is not None:
            assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
        return
    ry, em, ei, erm, erv = ref_bn(x0, w, b, rm0, rv0, training=training, momentum=momentum,
                                  channel_axis=ca)
    _close(y, ry, dt)
    _close(mean, em, dt, scale=100)
    _close(invstd, ei, dt, scale=10)
    if rm is not None:
        _close(rm, erm, dt, scale=100)
        _close(rv, erv, dt, scale=100)
