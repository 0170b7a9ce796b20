"""Fused residual add + normalization: add_layer_norm, add_rms_norm.

The pre-norm transformer step ``s = x + residual; y = norm(s)`` in one pass over
memory (ONNX Runtime's SkipLayerNormalization): each row's sum is written once
and normalized while it is in cache.
"""
import numpy as np

from . import _engine, _ext
from ._config import resolve_threads
from ._validate import as_input, check_eps, check_out, compute_dtype, normalize_axes, same_memory
from .normalization import _layer_params, _rowwise

__all__ = ["add_layer_norm", "add_rms_norm"]


def _rows(a, D):
    """A (M, D) view of `a` with contiguous rows, or None when that needs a copy."""
    if not a.flags.aligned:
        return None
    v = a.view()
    try:
        v.shape = (a.size // D if D else 0, D)
    except AttributeError:
        return None
    if D > 1 and v.strides[1] != a.itemsize:
        return None
    return v


def _check_sum_out(residual_out, x, residual, out, func):
    if residual_out is None:
        return None
    if not isinstance(residual_out, np.ndarray):
        raise TypeError(f"{func}: residual_out must be a numpy.ndarray, got {type(residual_out).__name__}")
    if residual_out.shape != x.shape:
        raise ValueError(f"{func}: residual_out has shape {residual_out.shape}, expected {x.shape}")
    if residual_out.dtype != x.dtype:
        raise TypeError(f"{func}: residual_out has dtype {residual_out.dtype}, expected {x.dtype}")
    if not residual_out.flags.writeable:
        raise ValueError(f"{func}: residual_out is read-only")
    for name, other in (("x", x), ("residual", residual)):
        if np.may_share_memory(residual_out, other) and not same_memory(residual_out, other):
            raise ValueError(f"{func}: residual_out partially overlaps {name}")
    if out is not None and np.may_share_memory(residual_out, out):
        raise ValueError(f"{func}: out and residual_out must not share memory")
    return residual_out


def _add_norm(x, residual, weight, bias, axis, eps, out, residual_out, num_threads, func, mode):
    x = as_input(x, func)
    residual = np.asarray(residual)
    if residual.dtype.kind != "f":
        raise TypeError(f"{func}: residual must be a float array, got dtype {residual.dtype}")
    if residual.shape != x.shape:
        raise ValueError(f"{func}: residual has shape {residual.shape}, expected x's shape {x.shape}")
    residual = residual.astype(x.dtype, copy=False)
    axes = normalize_axes(axis, x.ndim, func)
    dt = compute_dtype(x)
    if eps is None and mode == _engine.MODE_RMS:
        eps = float(np.finfo(x.dtype).eps)
    eps = check_eps(eps, func)
    nthreads = resolve_threads(num_threads, func)
    out = check_out(out, x, func, (("weight", weight), ("bias", bias)))
    residual_out = _check_sum_out(residual_out, x, residual, out, func)
    for name, p in (("weight", weight), ("bias", bias)):
        if residual_out is not None and isinstance(p, np.ndarray) and np.may_share_memory(residual_out, p):
            raise ValueError(f"{func}: residual_out must not share memory with {name}")
    weight, bias = _layer_params(x, weight, bias, axes, dt, func, need_bias=(mode == _engine.MODE_MEANVAR))
    if out is not None and np.may_share_memory(out, residual) and not same_memory(out, residual):
        raise ValueError(f"{func}: out partially overlaps residual")

    s = residual_out if residual_out is not None else _ext.new_output(x)[0]
    stream = out is not None
    y = out
    if out is None:
        y, stream = _ext.new_output(x)
    D = x.shape[-1] if x.ndim else 1
    fused = axes == (x.ndim - 1,) and x.dtype != np.float16 and x.size > 0
    views = [_rows(a, D) for a in (x, residual, s, y)] if fused else [None]
    if all(v is not None for v in views):
        xv, rv, sv, yv = views
        isz = x.itemsize
        _ext.add_rows(xv, rv, sv, yv, tuple(v.strides[0] // isz for v in views), xv.shape[0], D,
                      weight, bias, eps, mode, None, None, nthreads, stream)
        return y, s
    # General layouts and axes: the sum, then the normalization (two passes).
    np.add(x, residual, out=s)
    _rowwise(s, weight, bias, axes, eps, y, False, nthreads, func, mode)
    return y, s


def add_layer_norm(x, residual, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None,
                   residual_out=None, num_threads=None):
    """Residual add and layer normalization in one pass: ``s = x + residual``, ``y = layer_norm(s)``.

    ONNX Runtime's SkipLayerNormalization (input, skip, gamma, beta, epsilon)
    is ``add_layer_norm(input, skip, gamma, beta, eps=epsilon)`` and returns the
    same two outputs (its output and input_skip_bias_sum).

    Parameters
    ----------
    x, residual : array_like
        Same shape; float32 or float64 (residual is cast to x's dtype).
    weight, bias : array_like, optional
        Shape of x at `axis`.
    axis : int or tuple of ints, optional
        Normalized axes (default -1; other choices run as two passes).
    eps : float, optional
        Added to the variance, >= 0.
    out : ndarray, optional
        Where to write y; may be x or residual.
    residual_out : ndarray, optional
        Where to write s; may be residual itself (or x), not out.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    y, s : ndarray
        The normalized sum and the sum.

    Raises
    ------
    TypeError, ValueError
        As :func:`fastnorm.layer_norm`, plus mismatched residual / residual_out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> y, s = fastnorm.add_layer_norm(np.array([[1.0, 2.0]]), np.array([[0.0, 2.0]]), eps=0.0)
    >>> y.tolist(), s.tolist()
    ([[-1.0, 1.0]], [[1.0, 4.0]])
    """
    return _add_norm(x, residual, weight, bias, axis, eps, out, residual_out, num_threads,
                     "add_layer_norm", _engine.MODE_MEANVAR)


def add_rms_norm(x, residual, weight=None, *, axis=-1, eps=None, out=None, residual_out=None,
                 num_threads=None):
    """Residual add and RMS normalization in one pass: ``s = x + residual``, ``y = rms_norm(s)``.

    Parameters
    ----------
    x, residual : array_like
        Same shape; float32 or float64.
    weight : array_like, optional
        Shape of x at `axis`.
    axis : int or tuple of ints, optional
        Normalized axes (default -1).
    eps : float, optional
        None (default) is ``np.finfo(x.dtype).eps``.
    out, residual_out : ndarray, optional
        Where to write y and s (residual_out may be residual itself).
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    y, s : ndarray

    Raises
    ------
    TypeError, ValueError
        As :func:`fastnorm.rms_norm`, plus mismatched residual / residual_out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> y, s = fastnorm.add_rms_norm(np.array([[1.0, 2.0]]), np.array([[2.0, 2.0]]), eps=0.0)
    >>> y.round(6).tolist(), s.tolist()
    ([[0.848528, 1.131371]], [[3.0, 4.0]])
    """
    return _add_norm(x, residual, weight, None, axis, eps, out, residual_out, num_threads,
                     "add_rms_norm", _engine.MODE_RMS)
