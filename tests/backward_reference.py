"""Pure-NumPy reference implementations of the normalization backward passes.

TEMPORARY: these functions define the semantics (signatures, shapes, dtypes,
errors) that the C backward kernels must reproduce.  Once the compiled
``batch_norm_backward`` / ``layer_norm_backward`` / ``rms_norm_backward``
exist in ``fastnorm``, :mod:`fastnorm.layers` uses those and this module only
remains as a readable specification.

Every function computes in float64 internally and returns arrays in ``x``'s
dtype.  ``num_threads`` is accepted for signature compatibility and ignored.
"""

import numpy as np

__all__ = ["batch_norm_backward", "layer_norm_backward", "rms_norm_backward"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_float_array(a, name):
    a = np.asarray(a)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got dtype {a.dtype}")
    return a


def _check_dy(dy, x):
    dy = _as_float_array(dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(
            f"dy has shape {dy.shape} but x has shape {x.shape}")
    return dy


def _check_num_threads(num_threads):
    if num_threads is not None and int(num_threads) < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")


def _normalize_axes(axis, ndim, name="axis"):
    """Return the sorted tuple of non-negative axes; ValueError if invalid."""
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise ValueError(f"{name} must be an int or a tuple of ints, got {axis!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{name}={axis!r} is out of range for an array of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axis!r} contains duplicate axes")
    if not out:
        raise ValueError(f"{name} must name at least one axis")
    return tuple(sorted(out))


def _stat_param(a, shape, name, x_shape, axes):
    """Broadcastable float64 view of per-row statistics (reduced or keepdims shape)."""
    a = _as_float_array(a, name).astype(np.float64)
    keep = tuple(1 if i in axes else n for i, n in enumerate(x_shape))
    if a.shape == shape:
        return a.reshape(keep)
    if a.shape == keep:
        return a
    raise ValueError(
        f"{name} has shape {a.shape}, expected {shape} (x without the normalized axes)")


def _prepare_out(out, x):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError("out must be a numpy.ndarray")
    if out.dtype != x.dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {x.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"out has shape {out.shape}, expected {x.shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _finish(dx, x, out):
    if out is None:
        return dx.astype(x.dtype)
    out[...] = dx
    return out


def batch_norm_backward(dy, x, mean, invstd, weight=None, *, channel_axis=1,
                        training=True, num_threads=None, out=None):
    """Gradient of ``batch_norm`` with respect to x, weight and bias.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output ``y``; x's shape.
    x : array_like
        The forward input, float32 or float64, ``ndim >= 2``.
    mean, invstd : array_like, shape (C,)
        The statistics the forward pass used: what
        ``batch_norm(..., return_stats=True)`` returned.  For
        ``training=False`` these are the running mean and
        ``1 / sqrt(running_var + eps)``.  In training mode the mean only needs
        to be the batch mean rounded to x's dtype: it is refined from x in
        float64, so float32 data with a large mean keeps full accuracy.
    weight : array_like of shape (C,), optional
        The scale the forward pass used; None means no affine transform.
    channel_axis : int, default 1
        The channel axis of x (``-1`` for channels-last).
    training : bool, default True
        True when the forward pass normalized with batch statistics (the
        gradient then flows through the mean and variance), False when it
        used running statistics (``dx = dy * weight * invstd``).
    num_threads : int, optional
        Ignored by this reference implementation.
    out : ndarray, optional
        Destination for dx, exactly x's shape and dtype.

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight, dbias : ndarray of shape (C,) or None
        None when ``weight`` is None.

    Raises
    ------
    TypeError
        Non-float inputs or an ``out`` of the wrong dtype.
    ValueError
        Mismatched shapes or a bad ``channel_axis``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(8.0).reshape(4, 2)
    >>> mean, invstd = x.mean(0), 1 / np.sqrt(x.var(0) + 1e-5)
    >>> dx, dw, db = batch_norm_backward(np.ones_like(x), x, mean, invstd,
    ...                                  np.ones(2))
    >>> np.allclose(dx, 0), db.tolist()
    (True, [4.0, 4.0])
    """
    _check_num_threads(num_threads)
    x = _as_float_array(x, "x")
    dy = _check_dy(dy, x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions, got {x.ndim}")
    (c_ax,) = _normalize_axes(channel_axis, x.ndim, "channel_axis")
    C = x.shape[c_ax]
    bshape = [1] * x.ndim
    bshape[c_ax] = C
    red = tuple(i for i in range(x.ndim) if i != c_ax)

    def chan(a, name):
        a = _as_float_array(a, name)
        if a.shape != (C,):
            raise ValueError(f"{name} has shape {a.shape}, expected ({C},)")
        return a.astype(np.float64).reshape(bshape)

    mean = chan(mean, "mean")
    invstd = chan(invstd, "invstd")
    w = None if weight is None else chan(weight, "weight")
    out = _prepare_out(out, x)

    g = dy.astype(np.float64)
    xc = x.astype(np.float64) - mean
    if training:
        # The forward returned the batch mean rounded to x's dtype; for float32
        # data with |mean| >> std that rounding is a visible fraction of the std
        # (dweight off by 3e-4 at mean 1e4), so re-centre exactly in float64.
        xc -= xc.mean(axis=red, keepdims=True) if xc.size else 0.0
    xhat = xc * invstd
    gsum = g.sum(axis=red, keepdims=True)
    gxsum = (g * xhat).sum(axis=red, keepdims=True)
    scale = invstd if w is None else invstd * w
    if training:
        m = x.size // C if C else 0
        if m == 0:
            dx = np.zeros_like(g)
        else:
            dx = scale * (g - gsum / m - xhat * (gxsum / m))
    else:
        dx = g * scale
    dx = _finish(dx, x, out)
    if w is None:
        return dx, None, None
    return dx, gxsum.reshape(C).astype(x.dtype), gsum.reshape(C).astype(x.dtype)


def _row_setup(dy, x, weight, axis):
    x = _as_float_array(x, "x")
    dy = _check_dy(dy, x)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension")
    axes = _normalize_axes(axis, x.ndim, "axis")
    norm_shape = tuple(x.shape[a] for a in axes)
    red_shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    other = tuple(i for i in range(x.ndim) if i not in axes)
    w = None
    if weight is not None:
        w = _as_float_array(weight, "weight")
        if w.shape != norm_shape:
            raise ValueError(
                f"weight has shape {w.shape}, expected {norm_shape} "
                "(x's shape at the normalized axes)")
        w = w.astype(np.float64).reshape(
            tuple(n if i in axes else 1 for i, n in enumerate(x.shape)))
    return x, dy, axes, norm_shape, red_shape, other, w


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1,
                        num_threads=None, out=None):
    """Gradient of ``layer_norm`` with respect to x, weight and bias.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output; x's shape.
    x : array_like
        The forward input, float32 or float64.
    mean, rstd : array_like
        What ``layer_norm(..., return_stats=True)`` returned: x's shape
        without the normalized axes (the keepdims shape is accepted too).
        The mean is refined from x in float64 (it was rounded to x's dtype).
    weight : array_like, optional
        The scale the forward pass used, x's shape at ``axis`` in increasing
        axis order; None means no affine transform.
    axis : int or tuple of int, default -1
        The normalized axes, any that ``layer_norm`` accepts.
    num_threads : int, optional
        Ignored by this reference implementation.
    out : ndarray, optional
        Destination for dx, exactly x's shape and dtype.

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight, dbias : ndarray of weight's shape or None
        None when ``weight`` is None.

    Raises
    ------
    TypeError
        Non-float inputs or an ``out`` of the wrong dtype.
    ValueError
        Mismatched shapes, bad or duplicate axes.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> mean, rstd = x.mean(1), 1 / np.sqrt(x.var(1) + 1e-5)
    >>> dx, dw, db = layer_norm_backward(np.ones_like(x), x, mean, rstd)
    >>> np.allclose(dx, 0), dw is None
    (True, True)
    """
    _check_num_threads(num_threads)
    x, dy, axes, norm_shape, red_shape, other, w = _row_setup(dy, x, weight, axis)
    mean = _stat_param(mean, red_shape, "mean", x.shape, axes)
    rstd = _stat_param(rstd, red_shape, "rstd", x.shape, axes)
    out = _prepare_out(out, x)

    n = int(np.prod(norm_shape))
    xc = x.astype(np.float64) - mean
    if n:
        # Re-centre exactly: the given mean is rounded to x's dtype (see
        # batch_norm_backward), which matters for float32 data with |mean| >> std.
        xc -= xc.mean(axis=axes, keepdims=True)
    xhat = xc * rstd
    g = dy.astype(np.float64)
    gw = g if w is None else g * w
    if n == 0:
        dx = np.zeros_like(gw)
    else:
        dx = rstd * (gw - gw.mean(axis=axes, keepdims=True)
                     - xhat * (gw * xhat).mean(axis=axes, keepdims=True))
    dx = _finish(dx, x, out)
    if w is None:
        return dx, None, None
    dw = (g * xhat).sum(axis=other).reshape(norm_shape).astype(x.dtype)
    db = g.sum(axis=other).reshape(norm_shape).astype(x.dtype)
    return dx, dw, db


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, num_threads=None,
                      out=None):
    """Gradient of ``rms_norm`` with respect to x and weight.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output; x's shape.
    x : array_like
        The forward input, float32 or float64.
    rstd : array_like
        What ``rms_norm(..., return_stats=True)`` returned,
        ``1 / sqrt(mean(x**2) + eps)``: x's shape without the normalized axes
        (the keepdims shape is accepted too).
    weight : array_like, optional
        The scale the forward pass used; None means no affine transform.
    axis : int or tuple of int, default -1
        The normalized axes.
    num_threads : int, optional
        Ignored by this reference implementation.
    out : ndarray, optional
        Destination for dx, exactly x's shape and dtype.

    Returns
    -------
    dx : ndarray
        x's shape and dtype.
    dweight : ndarray of weight's shape or None
        None when ``weight`` is None.

    Raises
    ------
    TypeError
        Non-float inputs or an ``out`` of the wrong dtype.
    ValueError
        Mismatched shapes, bad or duplicate axes.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[3.0, 4.0]])
    >>> rstd = 1 / np.sqrt((x ** 2).mean(1))
    >>> dx, dw = rms_norm_backward(x, x, rstd, np.ones(2))
    >>> np.allclose(dx, 0)
    True
    """
    _check_num_threads(num_threads)
    x, dy, axes, norm_shape, red_shape, other, w = _row_setup(dy, x, weight, axis)
    rstd = _stat_param(rstd, red_shape, "rstd", x.shape, axes)
    out = _prepare_out(out, x)

    n = int(np.prod(norm_shape))
    xhat = x.astype(np.float64) * rstd
    g = dy.astype(np.float64)
    gw = g if w is None else g * w
    if n == 0:
        dx = np.zeros_like(gw)
    else:
        dx = rstd * (gw - xhat * (gw * xhat).mean(axis=axes, keepdims=True))
    dx = _finish(dx, x, out)
    if w is None:
        return dx, None
    return dx, (g * xhat).sum(axis=other).reshape(norm_shape).astype(x.dtype)
