"""Backward passes of batch_norm, layer_norm and rms_norm (C kernels, GIL released).

Gradients flow through the batch statistics in training mode. Parameter
gradients are accumulated in float64 from per-block sums folded in a fixed order,
so they do not depend on the thread count and never sum millions of float32
terms in one float32 accumulator.
"""
import numpy as np

from . import _engine, _ext
from ._config import get_num_threads, resolve_threads
from ._validate import (as_input, channel_axis_index, check_out, check_param, compute_dtype, last_axis_only,
                        normalize_axes)

__all__ = ["batch_norm_backward", "layer_norm_backward", "rms_norm_backward"]


def _grad_input(dy, x, func):
    dy = np.asarray(dy)
    if dy.dtype.kind != "f":
        raise TypeError(f"{func}: dy must be a float array, got dtype {dy.dtype}")
    if dy.shape != x.shape:
        raise ValueError(f"{func}: dy has shape {dy.shape}, expected x's shape {x.shape}")
    dy = dy.astype(compute_dtype(x), copy=False)
    return dy if dy.flags.aligned else dy.copy()


def _stat(a, shape, func, name):
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{func}: {name} must be a float array, got dtype {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{func}: {name} has shape {a.shape}, expected {tuple(shape)}")
    return a.astype(np.float64)


def _run(x, dy, out, op, mean, rstd, training, dtype):
    if out is not None and (np.may_share_memory(out, x) or np.may_share_memory(out, dy)):
        # dx in place of dy or x: the parameter gradients still read both after
        # dx is written, so compute into scratch first
        dx, dw, db = _run(x, dy, None, op, mean, rstd, training, dtype)
        out[...] = dx
        return out, dw, db
    xc = x.astype(np.float32) if x.dtype == np.float16 else x
    oc = None if x.dtype == np.float16 else out
    dx, dw, db = _engine.run_backward(xc, dy, oc, op, mean, rstd, training, op.w is not None)
    if x.dtype == np.float16:
        dx = dx.astype(np.float16) if out is None else np.copyto(out, dx) or out
    cast = (lambda g: None if g is None else g.astype(dtype))
    return dx, cast(dw), cast(db)


def batch_norm_backward(dy, x, mean, invstd, weight=None, *, channel_axis=1, training=True,
                        out=None, num_threads=None):
    """Gradients of :func:`fastnorm.batch_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output, x's shape.
    x : array_like
        The forward input.
    mean, invstd : array_like of shape (C,)
        What ``batch_norm(..., return_stats=True)`` returned: the batch statistics
        (training) or the running mean and 1/sqrt(running_var + eps) (inference).
    weight : array_like of shape (C,), optional
        The forward weight; None when the forward had none (a bias alone does not
        change the gradient of x).
    channel_axis : int, optional
        Channel axis of the forward call.
    training : bool, optional
        True: the statistics were batch statistics and the gradient flows through
        them. False: they were constants, ``dx = dy * weight * invstd``.
    out : ndarray, optional
        Where to write dx (x's shape and dtype); may be dy or x itself, must not
        overlap any input otherwise.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray of shape (C,) or None
        ``sum(dy * xhat)`` and ``sum(dy)`` per channel; None when weight is None.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays, mismatched shapes, bad channel_axis or out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> y, m, s = fastnorm.batch_norm(x, eps=0.0, return_stats=True)
    >>> dx, dw, db = fastnorm.batch_norm_backward(np.ones_like(x), x, m, s, np.ones(2))
    >>> bool(np.abs(dx).max() < 1e-12), db.tolist()
    (True, [2.0, 2.0])
    """
    r = _ext.chan_bwd_fast(dy, x, mean, invstd, weight, channel_axis, training, out, num_threads,
                           get_num_threads)
    if r is not None:
        return r
    func = "batch_norm_backward"
    x = as_input(x, func)
    if x.ndim < 2:
        raise ValueError(f"{func}: x must have at least 2 dimensions, got shape {x.shape}")
    cax = channel_axis_index(channel_axis, x.ndim, func)
    C = x.shape[cax]
    dt = compute_dtype(x)
    out = check_out(out, x, func, (("dy", dy), ("mean", mean), ("invstd", invstd), ("weight", weight)),
                    exact_ok=("dy",))
    dy = _grad_input(dy, x, func)
    mean = _stat(mean, (C,), func, "mean")
    invstd = _stat(invstd, (C,), func, "invstd")
    weight = check_param(weight, (C,), dt, func, "weight")
    nthreads = resolve_threads(num_threads, func)
    reduced = tuple(i != cax for i in range(x.ndim))
    if x.size == 0:
        dx = out if out is not None else np.empty_like(x)
        z = None if weight is None else np.zeros(C, dtype=x.dtype)
        return dx, z, None if z is None else z.copy()
    op = _engine.Op(reduced, _engine.MODE_MEANVAR, 0.0, weight, None, w_on_kept=True, nthreads=nthreads)
    return _run(x, dy, out, op, mean, invstd, bool(training), x.dtype)


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None, num_threads=None):
    """Gradients of :func:`fastnorm.layer_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient with respect to the output, x's shape.
    x : array_like
        The forward input.
    mean, rstd : array_like
        What ``layer_norm(..., return_stats=True)`` returned (x's shape without the
        normalized axes).
    weight : array_like, optional
        The forward weight (shape of x at `axis`), or None.
    axis : int or tuple of ints, optional
        The forward's normalized axes.
    out : ndarray, optional
        Where to write dx.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray or None
        Shape of x at `axis`; None when weight is None.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays, mismatched shapes, bad axes or out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 2.0, 4.0]])
    >>> y, m, r = fastnorm.layer_norm(x, return_stats=True)
    >>> dx, dw, db = fastnorm.layer_norm_backward(np.ones_like(x), x, m, r, np.ones(3))
    >>> bool(np.abs(dx).max() < 1e-12), db.tolist()
    (True, [1.0, 1.0, 1.0])
    """
    if last_axis_only(axis, x):
        r = _ext.rows_bwd_fast(dy, x, mean, rstd, weight, out, _engine.MODE_MEANVAR, num_threads,
                               get_num_threads)
        if r is not None:
            return r
    return _rowwise_backward(dy, x, mean, rstd, weight, axis, out, num_threads,
                             "layer_norm_backward", _engine.MODE_MEANVAR)


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None, num_threads=None):
    """Gradients of :func:`fastnorm.rms_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient with respect to the output, x's shape.
    x : array_like
        The forward input.
    rstd : array_like
        What ``rms_norm(..., return_stats=True)`` returned.
    weight : array_like, optional
        The forward weight, or None.
    axis : int or tuple of ints, optional
        The forward's normalized axes.
    out : ndarray, optional
        Where to write dx.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    dx : ndarray
    dweight : ndarray or None
        ``sum(dy * x * rstd)`` over the other axes; None when weight is None.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays, mismatched shapes, bad axes or out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[3.0, 4.0]])
    >>> y, r = fastnorm.rms_norm(x, return_stats=True)
    >>> dx, dw = fastnorm.rms_norm_backward(y, x, r, np.ones(2))
    >>> bool(np.abs(dx).max() < 1e-6)
    True
    """
    r = None
    if last_axis_only(axis, x):
        r = _ext.rows_bwd_fast(dy, x, None, rstd, weight, out, _engine.MODE_RMS, num_threads, get_num_threads)
    if r is None:
        r = _rowwise_backward(dy, x, None, rstd, weight, axis, out, num_threads, "rms_norm_backward",
                              _engine.MODE_RMS)
    dx, dw, _ = r
    return dx, dw


def _rowwise_backward(dy, x, mean, rstd, weight, axis, out, num_threads, func, mode):
    x = as_input(x, func)
    axes = normalize_axes(axis, x.ndim, func)
    dt = compute_dtype(x)
    out = check_out(out, x, func, (("dy", dy), ("mean", mean), ("rstd", rstd), ("weight", weight)),
                    exact_ok=("dy",))
    dy = _grad_input(dy, x, func)
    kept_shape = tuple(x.shape[i] for i in range(x.ndim) if i not in axes)
    if mean is not None:
        mean = _stat(mean, kept_shape, func, "mean")
    rstd = _stat(rstd, kept_shape, func, "rstd")
    weight = check_param(weight, tuple(x.shape[i] for i in axes), dt, func, "weight")
    nthreads = resolve_threads(num_threads, func)
    reduced = tuple(i in axes for i in range(x.ndim))
    if x.size == 0:
        dx = out if out is not None else np.empty_like(x)
        z = None if weight is None else np.zeros(weight.shape, dtype=x.dtype)
        return dx, z, (None if z is None or mode == _engine.MODE_RMS else z.copy())
    op = _engine.Op(reduced, mode, 0.0, weight, None, nthreads=nthreads)
    return _run(x, dy, out, op, mean, rstd, True, x.dtype)
