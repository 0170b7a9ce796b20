"""Backward passes against central finite differences and closed-form references.

Every backward implementation available is tested: the pure-NumPy reference
(tests/backward_reference.py, the specification) and the public
``fastnorm.*_backward`` functions once fastnorm exports them (the C kernels).
The float64 forward functions and closed-form gradients below are written
independently of fastnorm (rows laid out as a 2-D (groups, values) matrix) so
a shared mistake cannot hide.
"""

import numpy as np
import pytest

import fastnorm
import backward_reference as _ref

F64 = np.float64
EPS = 0.1  # large on purpose: a backward that ignores the given invstd/rstd shows


def _impls(name):
    params = [pytest.param(getattr(_ref, name), id="reference")]
    public = getattr(fastnorm, name, None)
    if public is not None and public is not getattr(_ref, name):
        params.append(pytest.param(public, id="fastnorm"))
    return params


# ---------------------------------------------------------------- layouts --
LAYOUTS = ["C", "F", "strided", "negstride"]


def as_layout(a, layout):
    """The values of ``a`` in the given memory layout."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    big = np.full(tuple(2 * n + 1 for n in a.shape), np.nan, dtype=a.dtype)
    if layout == "strided":
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
    else:  # every other element, last two axes reversed
        sl = [slice(1, None, 2)] * a.ndim
        for ax in range(max(0, a.ndim - 2), a.ndim):
            sl[ax] = slice(-2, None, -2)
        view = big[tuple(sl)]
    view[...] = a
    assert not view.flags.c_contiguous and not view.flags.f_contiguous or a.size <= 1
    return view


# ---------------------------------------------------- independent references --
def _bn_groups(a, channel_axis):
    """(C, M) float64 matrix: channel c's values in row c."""
    a = np.moveaxis(np.asarray(a, F64), channel_axis, 0)
    return a.reshape(a.shape[0], -1), a.shape


def _bn_ungroup(m, moved_shape, channel_axis):
    return np.moveaxis(m.reshape(moved_shape), 0, channel_axis)


def bn_forward64(x, w, b, channel_axis, training, running=None, eps=EPS):
    X, moved = _bn_groups(x, channel_axis)
    if training:
        mu, var = X.mean(1, keepdims=True), X.var(1, keepdims=True)
    else:
        mu, var = (np.asarray(r, F64)[:, None] for r in running)
    Y = (X - mu) / np.sqrt(var + eps)
    if w is not None:
        Y = Y * np.asarray(w, F64)[:, None] + np.asarray(b, F64)[:, None]
    return _bn_ungroup(Y, moved, channel_axis)


def bn_backward64(dy, x, w, channel_axis, training, running=None, eps=EPS):
    """Closed form: dx = gamma*invstd/M * (M*g - sum g - xhat * sum(g*xhat))."""
    X, moved = _bn_groups(x, channel_axis)
    G, _ = _bn_groups(dy, channel_axis)
    C, M = X.shape
    if training:
        mu, var = X.mean(1, keepdims=True), X.var(1, keepdims=True)
    else:
        mu, var = (np.asarray(r, F64)[:, None] for r in running)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (X - mu) * invstd
    gamma = np.ones((C, 1)) if w is None else np.asarray(w, F64)[:, None]
    dbeta = G.sum(1)
    dgamma = (G * xhat).sum(1)
    if training:
        DX = gamma * invstd / M * (M * G - dbeta[:, None] - xhat * dgamma[:, None])
    else:
        DX = G * gamma * invstd
    return _bn_ungroup(DX, moved, channel_axis), dgamma, dbeta


def _rows(a, axes):
    """(R, N) float64 matrix with the normalized axes last, and how to undo it."""
    a = np.asarray(a, F64)
    other = [i for i in range(a.ndim) if i not in axes]
    perm = other + list(axes)
    t = a.transpose(perm)
    n = int(np.prod([a.shape[i] for i in axes]))
    return t.reshape(-1, n), (t.shape, np.argsort(perm))


def _unrows(m, how):
    shape, inv = how
    return m.reshape(shape).transpose(inv)


def _axes_of(axis, ndim):
    ax = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    return tuple(sorted(a % ndim for a in ax))


def ln_forward64(x, w, b, axis, eps=EPS):
    axes = _axes_of(axis, np.ndim(x))
    X, how = _rows(x, axes)
    Y = (X - X.mean(1, keepdims=True)) / np.sqrt(X.var(1, keepdims=True) + eps)
    if w is not None:
        Y = Y * np.asarray(w, F64).reshape(-1) + np.asarray(b, F64).reshape(-1)
    return _unrows(Y, how)


def ln_stats64(x, axis, eps=EPS):
    axes = _axes_of(axis, np.ndim(x))
    X, how = _rows(x, axes)
    red = tuple(n for i, n in enumerate(np.shape(x)) if i not in axes)
    return X.mean(1).reshape(red), (1 / np.sqrt(X.var(1) + eps)).reshape(red)


def ln_backward64(dy, x, w, axis, eps=EPS):
    axes = _axes_of(axis, np.ndim(x))
    X, how = _rows(x, axes)
    G, _ = _rows(dy, axes)
    N = X.shape[1]
    rstd = 1 / np.sqrt(X.var(1, keepdims=True) + eps)
    xhat = (X - X.mean(1, keepdims=True)) * rstd
    gamma = np.ones(N) if w is None else np.asarray(w, F64).reshape(-1)
    Gh = G * gamma
    DX = rstd / N * (N * Gh - Gh.sum(1, keepdims=True) - xhat * (Gh * xhat).sum(1, keepdims=True))
    wshape = tuple(np.shape(x)[a] for a in axes)
    return (_unrows(DX, how), (G * xhat).sum(0).reshape(wshape), G.sum(0).reshape(wshape))


def rms_forward64(x, w, axis, eps=EPS):
    axes = _axes_of(axis, np.ndim(x))
    X, how = _rows(x, axes)
    Y = X / np.sqrt((X * X).mean(1, keepdims=True) + eps)
    if w is not None:
        Y = Y * np.asarray(w, F64).reshape(-1)
    return _unrows(Y, how)


def rms_stats64(x, axis, eps=EPS):
    axes = _axes_of(axis, np.ndim(x))
    X, _ = _rows(x, axes)
    red = tuple(n for i, n in enumerate(np.shape(x)) if i not in axes)
    return (1 / np.sqrt((X * X).mean(1) + eps)).reshape(red)


def rms_backward64(dy, x, w, axis, eps=EPS):
    """d/dx_j: r*g_j*w_j - r^3 x_j/N * sum_i g_i w_i x_i."""
    axes = _axes_of(axis, np.ndim(x))
    X, how = _rows(x, axes)
    G, _ = _rows(dy, axes)
    N = X.shape[1]
    r = 1 / np.sqrt((X * X).mean(1, keepdims=True) + eps)
    gamma = np.ones(N) if w is None else np.asarray(w, F64).reshape(-1)
    Gh = G * gamma
    DX = r * Gh - r ** 3 * X / N * (Gh * X).sum(1, keepdims=True)
    wshape = tuple(np.shape(x)[a] for a in axes)
    return _unrows(DX, how), (G * X * r).sum(0).reshape(wshape)


def fd_grad(f, a, h=1e-6):
    """Central finite differences of the scalar function f at float64 a."""
    a = np.array(a, F64)
    g = np.empty_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + h
        fp = f(a)
        a.flat[i] = old - h
        fm = f(a)
        a.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * h)
    return g


def data(shape, seed, dtype=F64, loc=0.5, scale=1.5):
    rng = np.random.default_rng(seed)
    return rng.normal(loc, scale, size=shape).astype(dtype)


def close(got, want, dtype, what):
    got = np.asarray(got, F64)
    want = np.asarray(want, F64)
    assert got.shape == want.shape, what
    scale = max(np.abs(want).max(initial=0.0), 1.0)
    atol = (2e-5 if dtype == np.float32 else 1e-11) * scale
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=what)


def close_grads(got, want, dtype, affine):
    """(dx, dweight, dbias) against float64 ones; the gradients None without a weight."""
    close(got[0], want[0], dtype, "dx")
    if affine:
        close(got[1], want[1], dtype, "dweight")
        close(got[2], want[2], dtype, "dbias")
    else:
        assert got[1] is None and got[2] is None


# ------------------------------------------------------------ batch norm --
BN_SHAPES = [(6, 3), (4, 3, 5), (3, 2, 3, 4)]


def _bn_case(shape, channel_axis, affine, training, dtype, seed=0):
    x = data(shape, seed, dtype)
    dy = data(shape, seed + 1, dtype, loc=0.0, scale=1.0)
    C = shape[channel_axis]
    w = data((C,), seed + 2, dtype, loc=1.0, scale=0.5) if affine else None
    b = data((C,), seed + 3, dtype) if affine else None
    running = (data((C,), seed + 4, F64, loc=0.2, scale=0.3),
               np.abs(data((C,), seed + 5, F64, loc=1.0, scale=0.5)) + 0.1)
    if training:
        X, _ = _bn_groups(x, channel_axis)
        mean64, var64 = X.mean(1), X.var(1)
    else:
        mean64, var64 = running
    mean = mean64.astype(dtype)
    invstd = (1 / np.sqrt(var64 + EPS)).astype(dtype)
    return x, dy, w, b, running, mean, invstd


@pytest.mark.parametrize("bwd", _impls("batch_norm_backward"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_backward_closed_form(bwd, dtype, shape, channel_axis, layout,
                                         affine, training):
    x, dy, w, b, running, mean, invstd = _bn_case(shape, channel_axis, affine, training, dtype)
    want_dx, want_dw, want_db = bn_backward64(dy, x, w, channel_axis, training, running)
    xl, dyl = as_layout(x, layout), as_layout(dy, layout)
    x_before = xl.copy()
    dx, dw, db = bwd(dyl, xl, mean, invstd, w, channel_axis=channel_axis, training=training)
    assert dx.dtype == dtype and dx.shape == x.shape
    close(dx, want_dx, dtype, "dx")
    if affine:
        assert dw.dtype == dtype and db.dtype == dtype
        close(dw, want_dw, dtype, "dweight")
        close(db, want_db, dtype, "dbias")
    else:
        assert dw is None and db is None
    np.testing.assert_array_equal(xl, x_before)  # input untouched


# channels of short runs lying next to each other, (N, C, L) with small L: the
# backward reads them row by row as columns (src_c seg_bwd_as_columns), on
# both sides of the shape rule that selects that walk
BN_SHORT_SHAPES = [(300, 7, 2), (64, 33, 3), (5, 40, 4), (17, 6, 2, 2), (2100, 5, 8), (2047, 3, 20),
                   (128, 5, 16), (127, 4, 3, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_SHORT_SHAPES, ids=str)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_backward_short_segments(dtype, shape, affine, training):
    x, dy, w, b, running, mean, invstd = _bn_case(shape, 1, affine, training, dtype)
    want_dx, want_dw, want_db = bn_backward64(dy, x, w, 1, training, running)
    results = [fastnorm.batch_norm_backward(dy, x, mean, invstd, w, training=training, num_threads=nt)
               for nt in (1, 2, 3)]
    close_grads(results[0], (want_dx, want_dw, want_db), dtype, affine)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            if a is not None:
                np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("bwd", _impls("batch_norm_backward"))
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_backward_finite_differences(bwd, shape, channel_axis, affine, training):
    x, dy, w, b, running, mean, invstd = _bn_case(shape, channel_axis, affine, training, F64, 7)
    dx, dw, db = bwd(dy, x, mean, invstd, w, channel_axis=channel_axis, training=training)

    def loss(x_=x, w_=w, b_=b):
        return float((bn_forward64(x_, w_, b_, channel_axis, training, running) * dy).sum())

    np.testing.assert_allclose(dx, fd_grad(lambda a: loss(x_=a), x), rtol=1e-6, atol=1e-7)
    if affine:
        np.testing.assert_allclose(dw, fd_grad(lambda a: loss(w_=a), w), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(db, fd_grad(lambda a: loss(b_=a), b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bwd", _impls("batch_norm_backward"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_batch_norm_backward_with_forward_stats(bwd, dtype, channel_axis):
    """The (mean, invstd) that batch_norm(return_stats=True) returns plug straight in."""
    x = data((5, 4, 3, 2), 11, dtype)
    dy = data(x.shape, 12, dtype)
    C = x.shape[channel_axis]
    w, b = data((C,), 13, dtype), data((C,), 14, dtype)
    _, mean, invstd = fastnorm.batch_norm(x, w, b, eps=EPS, channel_axis=channel_axis,
                                          training=True, return_stats=True)
    dx, dw, db = bwd(dy, x, mean, invstd, w, channel_axis=channel_axis)
    want = bn_backward64(dy, x, w, channel_axis, True)
    for got, ref, what in zip((dx, dw, db), want, ("dx", "dweight", "dbias")):
        close(got, ref, dtype, what)

    rm = data((C,), 15, dtype)
    rv = np.abs(data((C,), 16, dtype)) + np.asarray(0.5, dtype)
    _, mean, invstd = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                          training=False, eps=EPS, channel_axis=channel_axis,
                                          return_stats=True)
    dx, dw, db = bwd(dy, x, mean, invstd, w, channel_axis=channel_axis, training=False)
    want = bn_backward64(dy, x, w, channel_axis, False, (rm, rv))
    for got, ref, what in zip((dx, dw, db), want, ("dx", "dweight", "dbias")):
        close(got, ref, dtype, what)


# ------------------------------------------------- layer norm / rms norm --
ROW_CASES = [
    ((7,), 0),
    ((4, 5), -1),
    ((4, 5), 0),
    ((4, 5), (0, 1)),
    ((3, 4, 5), -1),
    ((3, 4, 5), (1, 2)),
    ((3, 4, 5), 1),
    ((3, 4, 5), (0, 2)),
    ((2, 3, 2, 3), 1),        # ConvNeXt channels-first
    ((2, 3, 2, 3), (2, 3)),
    ((2, 3, 2, 3), (-1, 1)),  # unsorted, negative
]
ROW_IDS = [f"{len(s)}d-ax{a}".replace(" ", "") for s, a in ROW_CASES]


def _row_case(shape, axis, affine, dtype, seed=0):
    axes = _axes_of(axis, len(shape))
    wshape = tuple(shape[a] for a in axes)
    x = data(shape, seed, dtype)
    dy = data(shape, seed + 1, dtype, loc=0.0, scale=1.0)
    w = data(wshape, seed + 2, dtype, loc=1.0, scale=0.5) if affine else None
    b = data(wshape, seed + 3, dtype) if affine else None
    return x, dy, w, b


@pytest.mark.parametrize("bwd", _impls("layer_norm_backward"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", ROW_CASES, ids=ROW_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_layer_norm_backward_closed_form(bwd, dtype, shape, axis, layout, affine):
    x, dy, w, b = _row_case(shape, axis, affine, dtype)
    mean, rstd = (s.astype(dtype) for s in ln_stats64(x, axis))
    want_dx, want_dw, want_db = ln_backward64(dy, x, w, axis)
    xl, dyl = as_layout(x, layout), as_layout(dy, layout)
    dx, dw, db = bwd(dyl, xl, mean, rstd, w, axis=axis)
    assert dx.dtype == dtype and dx.shape == x.shape
    close(dx, want_dx, dtype, "dx")
    if affine:
        assert dw.shape == w.shape and db.shape == w.shape
        close(dw, want_dw, dtype, "dweight")
        close(db, want_db, dtype, "dbias")
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("bwd", _impls("layer_norm_backward"))
@pytest.mark.parametrize("shape,axis", ROW_CASES, ids=ROW_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_layer_norm_backward_finite_differences(bwd, shape, axis, affine):
    x, dy, w, b = _row_case(shape, axis, affine, F64, seed=5)
    mean, rstd = ln_stats64(x, axis)
    dx, dw, db = bwd(dy, x, mean, rstd, w, axis=axis)

    def loss(x_=x, w_=w, b_=b):
        return float((ln_forward64(x_, w_, b_, axis) * dy).sum())

    np.testing.assert_allclose(dx, fd_grad(lambda a: loss(x_=a), x), rtol=1e-6, atol=1e-7)
    if affine:
        np.testing.assert_allclose(dw, fd_grad(lambda a: loss(w_=a), w), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(db, fd_grad(lambda a: loss(b_=a), b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bwd", _impls("rms_norm_backward"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", ROW_CASES, ids=ROW_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_rms_norm_backward_closed_form(bwd, dtype, shape, axis, layout, affine):
    x, dy, w, _ = _row_case(shape, axis, affine, dtype)
    rstd = rms_stats64(x, axis).astype(dtype)
    want_dx, want_dw = rms_backward64(dy, x, w, axis)
    dx, dw = bwd(as_layout(dy, layout), as_layout(x, layout), rstd, w, axis=axis)
    assert dx.dtype == dtype and dx.shape == x.shape
    close(dx, want_dx, dtype, "dx")
    if affine:
        assert dw.shape == w.shape
        close(dw, want_dw, dtype, "dweight")
    else:
        assert dw is None


@pytest.mark.parametrize("bwd", _impls("rms_norm_backward"))
@pytest.mark.parametrize("shape,axis", ROW_CASES, ids=ROW_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_rms_norm_backward_finite_differences(bwd, shape, axis, affine):
    x, dy, w, _ = _row_case(shape, axis, affine, F64, seed=9)
    dx, dw = bwd(dy, x, rms_stats64(x, axis), w, axis=axis)

    def loss(x_=x, w_=w):
        return float((rms_forward64(x_, w_, axis) * dy).sum())

    np.testing.assert_allclose(dx, fd_grad(lambda a: loss(x_=a), x), rtol=1e-6, atol=1e-7)
    if affine:
        np.testing.assert_allclose(dw, fd_grad(lambda a: loss(w_=a), w), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((4, 5), -1), ((2, 3, 2, 3), 1), ((3, 4, 5), (0, 2))])
def test_row_backward_with_forward_stats(dtype, shape, axis):
    """The stats that layer_norm / rms_norm(return_stats=True) return plug straight in."""
    x, dy, w, b = _row_case(shape, axis, True, dtype, seed=21)
    _, mean, rstd = fastnorm.layer_norm(x, w, b, axis=axis, eps=EPS, return_stats=True)
    for impl in _impls("layer_norm_backward"):
        got = impl.values[0](dy, x, mean, rstd, w, axis=axis)
        for g, ref, what in zip(got, ln_backward64(dy, x, w, axis), ("dx", "dw", "db")):
            close(g, ref, dtype, what)
    _, rstd = fastnorm.rms_norm(x, w, axis=axis, eps=EPS, return_stats=True)
    for impl in _impls("rms_norm_backward"):
        got = impl.values[0](dy, x, rstd, w, axis=axis)
        for g, ref, what in zip(got, rms_backward64(dy, x, w, axis), ("dx", "dw")):
            close(g, ref, dtype, what)


# -------------------------------------------------------- out= and errors --
def _call_all(name, dy, x, **kw):
    """Call the backward `name` with its own statistics argument(s) for 2-D x."""
    fn = kw.pop("fn")
    if name == "batch_norm_backward":
        C = x.shape[1]
        return fn(dy, x, np.zeros(C, x.dtype), np.ones(C, x.dtype), **kw)
    if name == "layer_norm_backward":
        R = x.shape[0]
        return fn(dy, x, np.zeros(R, x.dtype), np.ones(R, x.dtype), **kw)
    return fn(dy, x, np.ones(x.shape[0], x.dtype), **kw)


BACKWARDS = [pytest.param(name, p.values[0], id=f"{name}-{p.id}")
             for name in ("batch_norm_backward", "layer_norm_backward", "rms_norm_backward")
             for p in _impls(name)]


@pytest.mark.parametrize("name,fn", BACKWARDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_receives_dx(name, fn, dtype):
    x = data((6, 4), 31, dtype)
    dy = data((6, 4), 32, dtype)
    w = data((4,), 33, dtype)
    want = _call_all(name, dy, x, fn=fn, weight=w)
    out = np.full_like(x, np.nan)
    got = _call_all(name, dy, x, fn=fn, weight=w, out=out)
    assert got[0] is out
    np.testing.assert_array_equal(out, want[0])
    for g, r in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(g, r)
    # dx may overwrite dy (the usual in-place pattern of a training loop)
    dy2 = dy.copy()
    got = _call_all(name, dy2, x, fn=fn, weight=w, out=dy2)
    assert got[0] is dy2
    np.testing.assert_allclose(dy2, want[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,fn", BACKWARDS)
def test_errors(name, fn):
    x = data((6, 4), 41)
    dy = data((6, 4), 42)
    with pytest.raises(ValueError):
        _call_all(name, dy[:5], x, fn=fn)
    with pytest.raises(TypeError):
        _call_all(name, dy.astype(np.int64), x.astype(np.int64), fn=fn)
    with pytest.raises(ValueError):
        _call_all(name, dy, x, fn=fn, weight=np.ones(3))
    out = np.full_like(x, 7.0)
    with pytest.raises(TypeError):
        _call_all(name, dy, x, fn=fn, out=out.astype(np.float32))
    with pytest.raises(ValueError):
        _call_all(name, dy, x, fn=fn, out=out[:5])
    out.flags.writeable = False
    with pytest.raises((ValueError, TypeError)):
        _call_all(name, dy, x, fn=fn, out=out)
    assert (out == 7.0).all()
    if name == "batch_norm_backward":
        with pytest.raises(ValueError):
            fn(dy, x, np.zeros(3), np.ones(3))  # stats of the wrong length
        with pytest.raises(ValueError):
            fn(dy, x, np.zeros(4), np.ones(4), channel_axis=2)
    else:
        with pytest.raises(ValueError):
            _call_all(name, dy, x, fn=fn, axis=(1, -1))  # duplicate axis
        with pytest.raises(ValueError):
            _call_all(name, dy, x, fn=fn, axis=2)


# ------------------------------------------- reductions: threads, accuracy --
@pytest.mark.parametrize("bwd", _impls("batch_norm_backward"))
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_batch_norm_backward_thread_count_invariant(bwd, channel_axis):
    shape = (16, 8, 24, 24) if channel_axis == 1 else (16, 24, 24, 8)
    x = data(shape, 51, np.float32)
    dy = data(shape, 52, np.float32)
    C = shape[channel_axis]
    w = data((C,), 53, np.float32)
    X, _ = _bn_groups(x, channel_axis)
    mean = X.mean(1).astype(np.float32)
    invstd = (1 / np.sqrt(X.var(1) + 1e-5)).astype(np.float32)
    r1 = bwd(dy, x, mean, invstd, w, channel_axis=channel_axis, num_threads=1)
    r2 = bwd(dy, x, mean, invstd, w, channel_axis=channel_axis, num_threads=2)
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a, b)


# Short planes take the row-wise walk (the channels of a chunk together, several
# planes' sums at a time) or, with few channels per thread, the walk by planes:
# the same bits at every thread count, and the float64 values.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(256, 6, 7, 7), (64, 32, 7, 7), (8, 64, 28, 28), (64, 24, 14, 14)])
def test_batch_norm_backward_short_planes(shape, dtype):
    x = data(shape, 71, dtype)
    dy = data(shape, 72, dtype)
    w = data((shape[1],), 73, dtype)
    X, _ = _bn_groups(x, 1)
    mean = X.mean(1).astype(dtype)
    invstd = (1 / np.sqrt(X.var(1) + EPS)).astype(dtype)
    expected = bn_backward64(dy, x, w, 1, True)
    first = None
    for nt in (1, 2, 3, 4):
        got = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, num_threads=nt)
        if first is None:
            first = got
            for g, e in zip(got, expected):
                np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4 * np.abs(e).max())
        for a, b in zip(first, got):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bwd", _impls("layer_norm_backward"))
def test_layer_norm_backward_thread_count_invariant(bwd):
    x = data((3000, 48), 61, np.float32)
    dy = data((3000, 48), 62, np.float32)
    w = data((48,), 63, np.float32)
    mean, rstd = (s.astype(np.float32) for s in ln_stats64(x, -1, 1e-5))
    r1 = bwd(dy, x, mean, rstd, w, num_threads=1)
    r2 = bwd(dy, x, mean, rstd, w, num_threads=2)
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bwd", _impls("batch_norm_backward"))
def test_long_float32_gradient_sums_are_accurate(bwd):
    """2**20 float32 terms per channel: a plain float32 running sum is off by ~1e-3."""
    n = 1 << 20
    x = np.zeros((n, 2), np.float32)
    x[::2] = 1.0  # xhat = +-1
    dy = np.full((n, 2), 0.1, np.float32)
    mean = np.full(2, 0.5, np.float32)
    invstd = np.full(2, 2.0, np.float32)
    _, dw, db = bwd(dy, x, mean, invstd, np.ones(2, np.float32), channel_axis=-1)
    np.testing.assert_allclose(db, [n * np.float64(np.float32(0.1))] * 2, rtol=1e-6)
    np.testing.assert_allclose(dw, [0.0, 0.0], atol=1e-6 * n * 0.1)


@pytest.mark.parametrize("mean", [1e4, 1e6])
@pytest.mark.parametrize("case", ["bn-nchw", "bn-nhwc", "ln-last", "ln-axis1"])
def test_float32_large_mean_backward_is_accurate(case, mean):
    """float32 data with |mean| >> std: the mean the forward returns is rounded to
    float32 (by ~0.03 at 1e6), so a backward that trusts it blindly gets dweight
    wrong by up to 2%; gradients must be as accurate as for centred data."""
    shape = (32, 4, 6, 6) if case != "bn-nhwc" else (32, 6, 6, 4)
    x = (data(shape, 71, F64, loc=0.0, scale=1.0) + mean).astype(np.float32)
    dy = data(shape, 72, np.float32)
    if case.startswith("bn"):
        ca = 1 if case == "bn-nchw" else -1
        w = data((4,), 73, np.float32, loc=1.0)
        _, m, inv = fastnorm.batch_norm(x, w, eps=1e-5, channel_axis=ca, return_stats=True)
        want = bn_backward64(dy, x, w, ca, True, eps=1e-5)
        impls = _impls("batch_norm_backward")
        args, kw = (m, inv, w), dict(channel_axis=ca)
    else:
        axis = -1 if case == "ln-last" else 1
        w = data((shape[axis],), 73, np.float32, loc=1.0)
        _, m, r = fastnorm.layer_norm(x, w, w, axis=axis, eps=1e-5, return_stats=True)
        want = ln_backward64(dy, x, w, axis, eps=1e-5)
        impls = _impls("layer_norm_backward")
        args, kw = (m, r, w), dict(axis=axis)
    for impl in impls:
        got = impl.values[0](dy, x, *args, **kw)
        for g, ref, what in zip(got, want, ("dx", "dweight", "dbias")):
            close(g, ref, np.float32, f"{impl.id} {what}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_inputs(dtype):
    """Zero-size batches give empty dx and zero parameter gradients."""
    for p in _impls("batch_norm_backward"):
        for shape, ca in (((0, 3), 1), ((0, 5, 3), -1), ((2, 3, 0), 1)):
            x = np.empty(shape, dtype)
            dx, dw, db = p.values[0](x, x, np.zeros(3, dtype), np.ones(3, dtype),
                                     np.ones(3, dtype), channel_axis=ca)
            assert dx.shape == shape and dx.dtype == dtype, p.id
            np.testing.assert_array_equal(dw, np.zeros(3))
            np.testing.assert_array_equal(db, np.zeros(3))
    for p in _impls("layer_norm_backward"):
        x = np.empty((0, 4), dtype)
        dx, dw, db = p.values[0](x, x, np.empty(0, dtype), np.empty(0, dtype), np.ones(4, dtype))
        assert dx.shape == (0, 4), p.id
        np.testing.assert_array_equal(dw, np.zeros(4))
        np.testing.assert_array_equal(db, np.zeros(4))
    for p in _impls("rms_norm_backward"):
        x = np.empty((3, 0, 4), dtype)
        dx, dw = p.values[0](x, x, np.empty((3, 0), dtype), np.ones(4, dtype))
        assert dx.shape == (3, 0, 4), p.id
        np.testing.assert_array_equal(dw, np.zeros(4))


@pytest.mark.parametrize("K", [300, 1029])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_channels_last_backward_matches_narrow(K, dtype):
    # with several column chunks, the sums of a block of rows are taken in
    # sub-blocks that fit L1, each chunk's lane sums carried between them: a chunk
    # column's sums, dx and parameter gradients are those of a narrow array of the
    # same columns, bit for bit (columns past the last whole chunk take other loops)
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((203, K)) * 2 + 30).astype(dtype)
    dy = rng.standard_normal((203, K)).astype(dtype)
    w = rng.standard_normal(K).astype(dtype)
    _, mean, rstd = fastnorm.batch_norm(x, w, None, training=True, channel_axis=1, eps=EPS,
                                        return_stats=True)
    dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, rstd, w, channel_axis=1)
    for cols in (slice(0, 64), slice(64, 128), slice(192, 256)):
        nx, ndy = np.ascontiguousarray(x[:, cols]), np.ascontiguousarray(dy[:, cols])
        ndx, ndw, ndb = fastnorm.batch_norm_backward(ndy, nx, mean[cols], rstd[cols], w[cols], channel_axis=1)
        np.testing.assert_array_equal(dx[:, cols], ndx)
        np.testing.assert_array_equal(dw[cols], ndw)
        np.testing.assert_array_equal(db[cols], ndb)
    want = bn_backward64(dy.astype(F64), x.astype(F64), w.astype(F64), 1, True)
    close(dx, want[0], dtype, "dx")
