"""Self-check of the installed fastnorm against independent float64 NumPy formulas.

``python -m fastnorm`` runs :func:`run_selfcheck`: every public operation is
compared, on a few small shapes, float32 and float64, several layouts, with
``out=``, ``return_stats=`` and 1 vs 2 threads, with a reference written
here directly from the textbook formula in float64.  It depends on NumPy
only and never imports the test suite.

Operations that are public but have no reference here are reported as
``NOT CHECKED`` (they do not fail the self-check, but they should get a
reference: add a ``_check_<name>`` function and list it in ``_CHECKS``).
"""

from __future__ import annotations

import time
import traceback

import numpy as np

__all__ = ["run_selfcheck", "check_op"]

#: Public names that are utilities or classes, not operations.
_NOT_OPS = {"set_num_threads", "get_num_threads", "show_config"}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

class _Checker:
    """Collects comparisons of one operation."""

    def __init__(self):
        self.n = 0
        self.failures = []

    def close(self, what, got, ref, dtype, scale=1.0):
        """Compare ``got`` with the float64 reference ``ref``."""
        self.n += 1
        got = np.asarray(got)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            self.failures.append(f"{what}: shape {got.shape} != {ref.shape}")
            return
        if dtype is not None and got.dtype != np.dtype(dtype):
            self.failures.append(f"{what}: dtype {got.dtype} != {np.dtype(dtype)}")
            return
        tol = (2e-4 if np.dtype(dtype or np.float64) == np.float32 else 1e-9) * scale
        g = got.astype(np.float64)
        if not np.all(np.isfinite(g) == np.isfinite(ref)):
            self.failures.append(f"{what}: non-finite values differ")
            return
        fin = np.isfinite(ref)
        err = np.abs(g[fin] - ref[fin])
        lim = tol * (1.0 + np.abs(ref[fin]))
        if err.size and np.any(err > lim):
            i = int(np.argmax(err - lim))
            self.failures.append(f"{what}: max abs error {err.max():.3g} "
                                 f"(allowed {lim[i]:.3g})")

    def true(self, what, cond):
        """Record a boolean condition."""
        self.n += 1
        if not cond:
            self.failures.append(what)


def _data(shape, dtype, rng, loc=0.5, scale=2.0):
    return (loc + scale * rng.standard_normal(shape)).astype(dtype)


def _layouts(x):
    """The same values in C order, Fortran order, strided and reversed views."""
    yield "C", np.ascontiguousarray(x)
    if x.ndim >= 2:
        yield "F", np.asfortranarray(x)
    big = np.zeros(tuple(2 * s for s in x.shape), x.dtype)
    sl = tuple(slice(None, None, 2) for _ in x.shape)
    big[sl] = x
    yield "strided", big[sl]
    rev = np.ascontiguousarray(x[(slice(None, None, -1),) * x.ndim])
    yield "negative-strides", rev[(slice(None, None, -1),) * x.ndim]


def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def _bshape(x, axes):
    """Shape of a weight over ``axes``, broadcast against x."""
    return tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))


# --------------------------------------------------------------------------
# Float64 references (independent textbook formulas)
# --------------------------------------------------------------------------

def _ref_layer_norm(x, w, b, axes, eps):
    x = x.astype(np.float64)
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    r = 1.0 / np.sqrt(v + eps)
    y = (x - m) * r
    if w is not None:
        y = y * w.astype(np.float64).reshape(_bshape(x, axes))
    if b is not None:
        y = y + b.astype(np.float64).reshape(_bshape(x, axes))
    return y, m, r


def _ref_rms_norm(x, w, axes, eps):
    x = x.astype(np.float64)
    r = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    y = x * r
    if w is not None:
        y = y * w.astype(np.float64).reshape(_bshape(x, axes))
    return y, r


def _ref_bn_train(x, w, b, ca, eps):
    ca = ca % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != ca)
    y, m, r = _ref_layer_norm(x, None, None, axes, eps)
    bs = _bshape(x, (ca,))
    if w is not None:
        y = y * w.astype(np.float64).reshape(bs)
    if b is not None:
        y = y + b.astype(np.float64).reshape(bs)
    return y, m, r, axes


# --------------------------------------------------------------------------
# Checks, one per public op
# --------------------------------------------------------------------------

def _check_moments(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape, axis in (((7, 5, 3), None), ((7, 5, 3), 0), ((7, 5, 3), (0, 2)),
                            ((7, 5, 3), -1), ((33,), 0), ((4, 1000), 1)):
            x0 = _data(shape, dt, rng)
            for lay, x in _layouts(x0):
                for ddof in (0, 1):
                    m, v = fn.moments(x, axis=axis, ddof=ddof)
                    x64 = x0.astype(np.float64)
                    ck.close(f"moments {dt.__name__} {shape} axis={axis} {lay} ddof={ddof} mean",
                             m, x64.mean(axis=axis), dt)
                    ck.close(f"moments {dt.__name__} {shape} axis={axis} {lay} ddof={ddof} var",
                             v, x64.var(axis=axis, ddof=ddof), dt)
            m, v = fn.moments(x0, axis=axis, keepdims=True, num_threads=2)
            ck.close(f"moments keepdims {shape} axis={axis}", m,
                     x0.astype(np.float64).mean(axis=axis, keepdims=True), dt)
    # stability: mean 1e4, std 1, float32 (E[x^2]-E[x]^2 would fail)
    x = _data((64, 4096), np.float32, rng, loc=1e4, scale=1.0)
    m, v = fn.moments(x, axis=1)
    ck.close("moments large mean var (1e4, float32)", v, x.astype(np.float64).var(axis=1),
             np.float32, scale=10.0)


def _check_layer_norm(fn, ck, rng):
    cases = (((6, 33), -1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), (1, 3)),
             ((3, 4, 17), (-2, -1)), ((17,), -1), ((5, 1), -1))
    for dt in (np.float32, np.float64):
        for shape, axis in cases:
            axes = _norm_axes(axis, len(shape))
            wshape = tuple(shape[a] for a in axes)
            x0 = _data(shape, dt, rng)
            w, b = _data(wshape, dt, rng, 1.0, 0.3), _data(wshape, dt, rng, 0.0, 0.3)
            ref, m, r = _ref_layer_norm(x0, w, b, axes, 1e-5)
            tag = f"layer_norm {dt.__name__} {shape} axis={axis}"
            for lay, x in _layouts(x0):
                ck.close(f"{tag} {lay}", fn.layer_norm(x, w, b, axis=axis), ref, dt)
            ck.close(f"{tag} no affine", fn.layer_norm(x0, axis=axis),
                     _ref_layer_norm(x0, None, None, axes, 1e-5)[0], dt)
            out = np.empty_like(x0)
            y = fn.layer_norm(x0, w, b, axis=axis, out=out, num_threads=2)
            ck.true(f"{tag} out= returns out", y is out)
            ck.close(f"{tag} out=", out, ref, dt)
            y, mm, rr = fn.layer_norm(x0, w, b, axis=axis, return_stats=True, num_threads=1)
            ck.close(f"{tag} return_stats y", y, ref, dt)
            ck.close(f"{tag} return_stats mean", mm, m.squeeze(axis=axes), dt)
            ck.close(f"{tag} return_stats rstd", rr, r.squeeze(axis=axes), dt)
            xi = x0.copy()
            fn.layer_norm(xi, w, b, axis=axis, out=xi)
            ck.close(f"{tag} in place", xi, ref, dt)
    x = _data((16, 2048), np.float32, rng, loc=1e4, scale=1.0)
    ck.close("layer_norm large mean (1e4, float32)", fn.layer_norm(x),
             _ref_layer_norm(x, None, None, (1,), 1e-5)[0], np.float32, scale=15.0)


def _check_rms_norm(fn, ck, rng):
    cases = (((6, 33), -1), ((2, 3, 4, 5), (1, 2)), ((2, 3, 4, 5), 1), ((17,), -1))
    for dt in (np.float32, np.float64):
        eps_default = float(np.finfo(dt).eps)
        for shape, axis in cases:
            axes = _norm_axes(axis, len(shape))
            wshape = tuple(shape[a] for a in axes)
            x0 = _data(shape, dt, rng)
            w = _data(wshape, dt, rng, 1.0, 0.3)
            ref, r = _ref_rms_norm(x0, w, axes, eps_default)
            tag = f"rms_norm {dt.__name__} {shape} axis={axis}"
            for lay, x in _layouts(x0):
                ck.close(f"{tag} {lay}", fn.rms_norm(x, w, axis=axis), ref, dt)
            ck.close(f"{tag} eps=1e-3 no weight", fn.rms_norm(x0, axis=axis, eps=1e-3),
                     _ref_rms_norm(x0, None, axes, 1e-3)[0], dt)
            out = np.empty_like(x0)
            y = fn.rms_norm(x0, w, axis=axis, out=out, num_threads=2)
            ck.true(f"{tag} out= returns out", y is out)
            ck.close(f"{tag} out=", out, ref, dt)
            y, rr = fn.rms_norm(x0, w, axis=axis, return_stats=True, num_threads=1)
            ck.close(f"{tag} return_stats rstd", rr, r.squeeze(axis=axes), dt)


def _check_batch_norm(fn, ck, rng):
    cases = (((16, 5), 1), ((4, 3, 6, 7), 1), ((4, 6, 7, 3), -1), ((2, 3, 4, 5, 2), 1),
             ((3, 4, 5, 6), 2))
    for dt in (np.float32, np.float64):
        for shape, ca in cases:
            c = shape[ca]
            x0 = _data(shape, dt, rng)
            w, b = _data((c,), dt, rng, 1.0, 0.3), _data((c,), dt, rng, 0.0, 0.3)
            ref, m, r, axes = _ref_bn_train(x0, w, b, ca, 1e-5)
            n = x0.size // c
            tag = f"batch_norm {dt.__name__} {shape} channel_axis={ca}"
            for lay, x in _layouts(x0):
                ck.close(f"{tag} train {lay}", fn.batch_norm(x, w, b, channel_axis=ca), ref, dt)
            # running statistics, PyTorch's update with the unbiased variance
            rm0, rv0 = _data((c,), dt, rng, 0.0, 0.1), 1.0 + rng.random(c).astype(dt)
            rm, rv = rm0.copy(), rv0.copy()
            y, mm, ri = fn.batch_norm(x0, w, b, running_mean=rm, running_var=rv,
                                      training=True, momentum=0.2, channel_axis=ca,
                                      return_stats=True, num_threads=2)
            ck.close(f"{tag} train+running y", y, ref, dt)
            ck.close(f"{tag} batch mean", mm, m.reshape(-1), dt)
            ck.close(f"{tag} batch invstd", ri, r.reshape(-1), dt)
            var_unb = ((x0.astype(np.float64) - m) ** 2).sum(axis=axes) / (n - 1)
            ck.close(f"{tag} running_mean", rm, 0.8 * rm0 + 0.2 * m.reshape(-1), dt)
            ck.close(f"{tag} running_var", rv, 0.8 * rv0 + 0.2 * var_unb, dt)
            # inference with running statistics
            bs = _bshape(x0, (ca % x0.ndim,))
            ref_e = ((x0.astype(np.float64) - rm0.reshape(bs)) / np.sqrt(rv0.reshape(bs) + 1e-5)
                     * w.reshape(bs) + b.reshape(bs))
            for lay, x in _layouts(x0):
                ck.close(f"{tag} eval {lay}",
                         fn.batch_norm(x, w, b, running_mean=rm0, running_var=rv0,
                                       channel_axis=ca), ref_e, dt)
            out = np.empty_like(x0)
            y = fn.batch_norm(x0, w, b, running_mean=rm0, running_var=rv0, training=False,
                              channel_axis=ca, out=out, num_threads=2)
            ck.true(f"{tag} eval out= returns out", y is out)
            ck.close(f"{tag} eval out=", out, ref_e, dt)
            y1 = fn.batch_norm(x0, w, b, channel_axis=ca, num_threads=1)
            y2 = fn.batch_norm(x0, w, b, channel_axis=ca, num_threads=2)
            ck.close(f"{tag} 1 vs 2 threads", y2, y1.astype(np.float64), dt)
    x = _data((32, 4, 256), np.float32, rng, loc=1e4, scale=1.0)
    ck.close("batch_norm large mean (1e4, float32)", fn.batch_norm(x),
             _ref_bn_train(x, None, None, 1, 1e-5)[0], np.float32, scale=15.0)


def _check_group_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape, g, ca in (((2, 6, 5, 4), 3, 1), ((2, 5, 4, 6), 2, -1), ((3, 8, 7), 8, 1)):
            x0 = _data(shape, dt, rng)
            c = shape[ca]
            w, b = _data((c,), dt, rng, 1.0, 0.3), _data((c,), dt, rng, 0.0, 0.3)
            xc = np.moveaxis(x0.astype(np.float64), ca, 1)
            xg = xc.reshape(shape[0], g, -1)
            m = xg.mean(-1, keepdims=True)
            v = xg.var(-1, keepdims=True)
            bs = (1, c) + (1,) * (xc.ndim - 2)
            ref = ((xg - m) / np.sqrt(v + 1e-5)).reshape(xc.shape) * w.reshape(bs) + b.reshape(bs)
            ref = np.moveaxis(ref, 1, ca)
            ck.close(f"group_norm {dt.__name__} {shape} G={g} channel_axis={ca}",
                     fn.group_norm(x0, g, w, b, channel_axis=ca), ref, dt)


def _check_instance_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape in ((2, 3, 5, 4), (3, 4, 9)):
            x0 = _data(shape, dt, rng)
            c = shape[1]
            w, b = _data((c,), dt, rng, 1.0, 0.3), _data((c,), dt, rng, 0.0, 0.3)
            axes = tuple(range(2, x0.ndim))
            ref = _ref_layer_norm(x0, None, None, axes, 1e-5)[0]
            bs = (1, c) + (1,) * (x0.ndim - 2)
            ref = ref * w.reshape(bs) + b.reshape(bs)
            ck.close(f"instance_norm {dt.__name__} {shape}", fn.instance_norm(x0, w, b), ref, dt)


def _check_add_layer_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        x0, r0 = _data((6, 33), dt, rng), _data((6, 33), dt, rng)
        w, b = _data((33,), dt, rng, 1.0, 0.3), _data((33,), dt, rng, 0.0, 0.3)
        s = x0.astype(np.float64) + r0
        y, s_out = fn.add_layer_norm(x0, r0, w, b)
        ck.close(f"add_layer_norm {dt.__name__} y", y, _ref_layer_norm(s, w, b, (1,), 1e-5)[0], dt)
        ck.close(f"add_layer_norm {dt.__name__} sum", s_out, s, dt)


def _check_add_rms_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        x0, r0 = _data((6, 33), dt, rng), _data((6, 33), dt, rng)
        w = _data((33,), dt, rng, 1.0, 0.3)
        s = x0.astype(np.float64) + r0
        y, s_out = fn.add_rms_norm(x0, r0, w, eps=1e-5)
        ck.close(f"add_rms_norm {dt.__name__} y", y, _ref_rms_norm(s, w, (1,), 1e-5)[0], dt)
        ck.close(f"add_rms_norm {dt.__name__} sum", s_out, s, dt)


def _ref_norm_backward(dy, x, m, r, w, axes, subtract_mean=True):
    """Closed-form float64 backward of (x - m) * r * w over ``axes``."""
    dy = dy.astype(np.float64)
    xh = (x.astype(np.float64) - m) * r
    g = dy * (1.0 if w is None else w)
    proj = (g * xh).mean(axis=axes, keepdims=True)
    dx = r * (g - (g.mean(axis=axes, keepdims=True) if subtract_mean else 0.0) - xh * proj)
    return dx, xh


def _check_layer_norm_backward(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape, axis in (((6, 33), -1), ((2, 3, 4, 5), 1)):
            axes = _norm_axes(axis, len(shape))
            other = tuple(a for a in range(len(shape)) if a not in axes)
            x, dy = _data(shape, dt, rng), _data(shape, dt, rng)
            w = _data(tuple(shape[a] for a in axes), dt, rng, 1.0, 0.3)
            _, m, r = _ref_layer_norm(x, None, None, axes, 1e-5)
            wb = w.astype(np.float64).reshape(_bshape(x, axes))
            dx, xh = _ref_norm_backward(dy, x, m, r, wb, axes)
            _, mm, rr = fn.layer_norm(x, w, axis=axis, return_stats=True)
            gdx, gdw, gdb = fn.layer_norm_backward(dy, x, mm, rr, w, axis=axis)
            tag = f"layer_norm_backward {dt.__name__} {shape} axis={axis}"
            ck.close(f"{tag} dx", gdx, dx, dt, scale=5.0)
            ck.close(f"{tag} dweight", gdw, (dy * xh).sum(axis=other), dt, scale=20.0)
            if gdb is not None:  # layer_norm_backward has no bias argument
                ck.close(f"{tag} dbias", gdb, dy.astype(np.float64).sum(axis=other), dt,
                         scale=20.0)


def _check_rms_norm_backward(fn, ck, rng):
    for dt in (np.float32, np.float64):
        x, dy = _data((6, 33), dt, rng), _data((6, 33), dt, rng)
        w = _data((33,), dt, rng, 1.0, 0.3)
        _, r = _ref_rms_norm(x, None, (1,), 1e-5)
        dx, xh = _ref_norm_backward(dy, x, 0.0, r, w.astype(np.float64), (1,), False)
        _, rr = fn.rms_norm(x, w, eps=1e-5, return_stats=True)
        gdx, gdw = fn.rms_norm_backward(dy, x, rr, w)
        ck.close(f"rms_norm_backward {dt.__name__} dx", gdx, dx, dt, scale=5.0)
        ck.close(f"rms_norm_backward {dt.__name__} dweight", gdw, (dy * xh).sum(axis=0), dt,
                 scale=20.0)


def _check_batch_norm_backward(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape, ca in (((4, 3, 6, 7), 1), ((4, 6, 7, 3), -1)):
            c = shape[ca]
            x, dy = _data(shape, dt, rng), _data(shape, dt, rng)
            w = _data((c,), dt, rng, 1.0, 0.3)
            _, m, r, axes = _ref_bn_train(x, None, None, ca, 1e-5)
            wb = w.astype(np.float64).reshape(_bshape(x, (ca % x.ndim,)))
            dx, xh = _ref_norm_backward(dy, x, m, r, wb, axes)
            _, mm, ri = fn.batch_norm(x, w, channel_axis=ca, return_stats=True)
            gdx, gdw, gdb = fn.batch_norm_backward(dy, x, mm, ri, w, channel_axis=ca)
            tag = f"batch_norm_backward {dt.__name__} {shape} channel_axis={ca}"
            ck.close(f"{tag} dx", gdx, dx, dt, scale=5.0)
            ck.close(f"{tag} dweight", gdw, (dy * xh).sum(axis=axes), dt, scale=50.0)
            ck.close(f"{tag} dbias", gdb, dy.astype(np.float64).sum(axis=axes), dt, scale=50.0)


def _fd_grad(fun, x, h=1e-6):
    """Central finite-difference gradient of the scalar ``fun`` at float64 ``x``."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = fun(x)
        flat[i] = old - h
        fm = fun(x)
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def _ref_group_stats(x, g, ca):
    xc = np.moveaxis(x.astype(np.float64), ca, 1)
    xg = xc.reshape(xc.shape[0], g, -1)
    m = xg.mean(-1, keepdims=True)
    r = 1.0 / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)
    return np.moveaxis(((xg - m) * r).reshape(xc.shape), 1, ca)


def _check_group_norm_backward(fn, ck, rng):
    for shape, g, ca in (((2, 6, 5), 3, 1), ((2, 4, 3, 4), 2, -1)):
        x, dy = _data(shape, np.float64, rng), _data(shape, np.float64, rng)
        c = shape[ca]
        w = _data((c,), np.float64, rng, 1.0, 0.3)
        b = np.zeros(c)
        _, m, r = fn.group_norm(x, g, w, b, channel_axis=ca, return_stats=True)
        dx, dw, db = fn.group_norm_backward(dy, x, g, m, r, w, channel_axis=ca)
        ref = _fd_grad(lambda z: float(np.sum(fn.group_norm(z, g, w, b, channel_axis=ca) * dy)), x)
        other = tuple(a for a in range(x.ndim) if a != ca % x.ndim)
        tag = f"group_norm_backward {shape} G={g} channel_axis={ca}"
        ck.close(f"{tag} dx (finite differences)", dx, ref, None, scale=1e4)
        ck.close(f"{tag} dweight", dw, (dy * _ref_group_stats(x, g, ca)).sum(axis=other), None)
        ck.close(f"{tag} dbias", db, dy.sum(axis=other), None)


def _check_instance_norm_backward(fn, ck, rng):
    for shape in ((2, 3, 5), (2, 3, 2, 3)):
        x, dy = _data(shape, np.float64, rng), _data(shape, np.float64, rng)
        c = shape[1]
        w, b = _data((c,), np.float64, rng, 1.0, 0.3), np.zeros(c)
        _, m, r = fn.instance_norm(x, w, b, return_stats=True)
        dx, dw, db = fn.instance_norm_backward(dy, x, m, r, w)
        ref = _fd_grad(lambda z: float(np.sum(fn.instance_norm(z, w, b) * dy)), x)
        axes = tuple(range(2, x.ndim))
        xh = _ref_layer_norm(x, None, None, axes, 1e-5)[0]
        other = (0,) + axes
        ck.close(f"instance_norm_backward {shape} dx (finite differences)", dx, ref, None,
                 scale=1e4)
        ck.close(f"instance_norm_backward {shape} dweight", dw, (dy * xh).sum(axis=other), None)
        ck.close(f"instance_norm_backward {shape} dbias", db, dy.sum(axis=other), None)


def _ref_lrn(x, size, alpha, beta, k, ca):
    """PyTorch's F.local_response_norm: zero-padded window average over channels."""
    xc = np.moveaxis(x.astype(np.float64), ca, 1)
    sq = xc * xc
    c = xc.shape[1]
    lo, hi = size // 2, (size - 1) // 2
    acc = np.zeros_like(sq)
    for j in range(c):
        acc[:, j] = sq[:, max(0, j - lo):min(c, j + hi + 1)].sum(axis=1)
    y = xc / (k + alpha * acc / size) ** beta
    return np.moveaxis(y, 1, ca)


def _check_local_response_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape, size, ca in (((2, 7, 3, 4), 3, 1), ((2, 3, 4, 6), 4, -1), ((3, 5), 5, 1)):
            x = _data(shape, dt, rng)
            ck.close(f"local_response_norm {dt.__name__} {shape} size={size} channel_axis={ca}",
                     fn.local_response_norm(x, size, alpha=0.1, beta=0.75, k=2.0, channel_axis=ca),
                     _ref_lrn(x, size, 0.1, 0.75, 2.0, ca), dt)


def _check_local_response_norm_backward(fn, ck, rng):
    for shape, size, ca in (((2, 5, 3), 3, 1), ((2, 3, 4), 2, -1)):
        x, dy = _data(shape, np.float64, rng), _data(shape, np.float64, rng)
        dx = fn.local_response_norm_backward(dy, x, size, alpha=0.1, beta=0.75, k=2.0,
                                             channel_axis=ca)
        ref = _fd_grad(lambda z: float(np.sum(_ref_lrn(z, size, 0.1, 0.75, 2.0, ca) * dy)), x)
        ck.close(f"local_response_norm_backward {shape} size={size} dx (finite differences)",
                 dx, ref, None, scale=1e4)


def _ref_weight_norm(v, g, axis):
    v = v.astype(np.float64)
    if axis is None:
        return np.asarray(g, np.float64) * v / np.sqrt((v * v).sum())
    axis = axis % v.ndim
    other = tuple(a for a in range(v.ndim) if a != axis)
    gs = np.asarray(g, np.float64).reshape(_bshape(v, (axis,)))
    return gs * v / np.sqrt((v * v).sum(axis=other, keepdims=True))


def _check_weight_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        for shape, axis in (((4, 3, 5), 0), ((4, 3, 5), -1), ((6, 7), None)):
            v = _data(shape, dt, rng)
            gshape = () if axis is None else _bshape(v, (axis % v.ndim,))
            g = _data(gshape, dt, rng, 1.0, 0.3)
            ck.close(f"weight_norm {dt.__name__} {shape} axis={axis}",
                     fn.weight_norm(v, g, axis=axis), _ref_weight_norm(v, g, axis), dt)


def _check_weight_norm_backward(fn, ck, rng):
    for shape, axis in (((4, 3, 2), 0), ((3, 4), None)):
        v, dw = _data(shape, np.float64, rng), _data(shape, np.float64, rng)
        gshape = () if axis is None else _bshape(v, (axis,))
        g = _data(gshape, np.float64, rng, 1.0, 0.3)
        dv, dg = fn.weight_norm_backward(dw, v, g, axis=axis)
        ck.close(f"weight_norm_backward {shape} axis={axis} dv (finite differences)", dv,
                 _fd_grad(lambda z: float(np.sum(_ref_weight_norm(z, g, axis) * dw)), v), None,
                 scale=1e4)
        ck.close(f"weight_norm_backward {shape} axis={axis} dg (finite differences)", dg,
                 _fd_grad(lambda z: float(np.sum(_ref_weight_norm(v, z, axis) * dw)), g), None,
                 scale=1e4)


def _check_fold_batch_norm(fn, ck, rng):
    for dt in (np.float32, np.float64):
        cout, cin = 6, 4
        W = _data((cout, cin, 3, 3), dt, rng)
        b = _data((cout,), dt, rng)
        rm, rv = _data((cout,), dt, rng, 0.0, 0.3), (1.0 + rng.random(cout)).astype(dt)
        bw, bb = _data((cout,), dt, rng, 1.0, 0.3), _data((cout,), dt, rng, 0.0, 0.3)
        fw, fb = fn.fold_batch_norm(W, b, rm, rv, bw, bb, eps=1e-5, channel_axis=0)
        s = bw.astype(np.float64) / np.sqrt(rv.astype(np.float64) + 1e-5)
        ck.close(f"fold_batch_norm {dt.__name__} weight", fw,
                 W.astype(np.float64) * s[:, None, None, None], dt)
        ck.close(f"fold_batch_norm {dt.__name__} bias", fb, (b - rm.astype(np.float64)) * s + bb,
                 dt)


#: Public operation -> check.  Add new operations here.
_CHECKS = {
    "moments": _check_moments,
    "layer_norm": _check_layer_norm,
    "rms_norm": _check_rms_norm,
    "batch_norm": _check_batch_norm,
    "group_norm": _check_group_norm,
    "instance_norm": _check_instance_norm,
    "add_layer_norm": _check_add_layer_norm,
    "add_rms_norm": _check_add_rms_norm,
    "layer_norm_backward": _check_layer_norm_backward,
    "rms_norm_backward": _check_rms_norm_backward,
    "batch_norm_backward": _check_batch_norm_backward,
    "group_norm_backward": _check_group_norm_backward,
    "instance_norm_backward": _check_instance_norm_backward,
    "local_response_norm": _check_local_response_norm,
    "local_response_norm_backward": _check_local_response_norm_backward,
    "weight_norm": _check_weight_norm,
    "weight_norm_backward": _check_weight_norm_backward,
    "fold_batch_norm": _check_fold_batch_norm,
}


def _public_ops(fn):
    names = getattr(fn, "__all__", None) or [n for n in dir(fn) if not n.startswith("_")]
    ops = []
    for n in names:
        obj = getattr(fn, n, None)
        if n in _NOT_OPS or obj is None or isinstance(obj, type) or not callable(obj):
            continue
        ops.append(n)
    return ops


def check_op(name, seed=0):
    """Check one public operation against its float64 reference.

    Parameters
    ----------
    name : str
        Name of a public fastnorm function, e.g. ``"layer_norm"``.
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    status : {"PASS", "FAIL", "NOT CHECKED"}
    n_checks : int
        Number of comparisons made.
    failures : list of str
        One line per failed comparison (or the exception raised).

    Examples
    --------
    >>> from fastnorm._selfcheck import check_op
    >>> check_op("layer_norm")[0]
    'PASS'
    """
    import fastnorm
    check = _CHECKS.get(name)
    if check is None:
        return "NOT CHECKED", 0, []
    ck = _Checker()
    try:
        check(fastnorm, ck, np.random.default_rng(seed))
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {tb[-1].name}:{tb[-1].lineno})" if tb else ""
        ck.failures.append(f"raised {type(exc).__name__}: {exc}{where}")
    return ("FAIL" if ck.failures else "PASS"), ck.n, ck.failures


def run_selfcheck(verbose=False, file=None):
    """Check every public fastnorm operation and print PASS/FAIL per op.

    Parameters
    ----------
    verbose : bool, optional
        Print every failure line (default: the first three per op).
    file : file-like, optional
        Where to print (default ``sys.stdout``).

    Returns
    -------
    bool
        True when no operation failed.

    Examples
    --------
    >>> from fastnorm._selfcheck import run_selfcheck
    >>> run_selfcheck()  # doctest: +SKIP
    True
    """
    import sys
    import fastnorm
    out = file or sys.stdout
    ops = _public_ops(fastnorm)
    print(f"fastnorm {getattr(fastnorm, '__version__', '?')} self-check "
          f"(float32/float64, several layouts, out=, return_stats, 1 and 2 threads; "
          f"reference: float64 NumPy formulas)", file=out)
    ok = True
    width = max((len(n) for n in ops), default=10)
    for name in ops:
        t0 = time.perf_counter()
        status, n, failures = check_op(name)
        dt = time.perf_counter() - t0
        ok &= status != "FAIL"
        extra = f"{n:4d} checks, {dt:5.2f} s" if status != "NOT CHECKED" else \
            "no reference in fastnorm/_selfcheck.py"
        print(f"  {name:<{width}}  {status:<11} {extra}", file=out)
        for line in failures if verbose else failures[:3]:
            print(f"      {line}", file=out)
        if not verbose and len(failures) > 3:
            print(f"      ... and {len(failures) - 3} more", file=out)
    print("self-check: " + ("PASS" if ok else "FAIL"), file=out)
    return ok
