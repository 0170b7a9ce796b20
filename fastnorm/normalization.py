"""The public forward functions: moments, batch_norm, layer_norm, rms_norm.

Each validates its arguments completely (nothing is written when one is bad),
describes the op to the engine (fastnorm._engine) and shapes the results.
"""
import numpy as np

from . import _engine, _ext
from ._config import get_num_threads, resolve_threads
from ._validate import (as_input, channel_axis_index, check_eps, check_momentum, check_out,
                        check_param, check_running, compute_dtype, last_axis_only, normalize_axes)

# bound once: module attribute lookups cost a small call (LayerNorm (32, 512) takes
# about 4 us) some 2 % each
_rows_fast = _ext.rows_fast
_MODE_MEANVAR, _MODE_RMS = _engine.MODE_MEANVAR, _engine.MODE_RMS

__all__ = ["moments", "batch_norm", "layer_norm", "rms_norm"]

# PyTorch's default RMSNorm eps, by dtype number, for the fast path.
_RMS_DEFAULT_EPS = {np.dtype(t).num: float(np.finfo(t).eps) for t in (np.float32, np.float64)}


def _upcast(x, out):
    """float16 runs in float32; returns (x_compute, out_compute)."""
    if x.dtype != np.float16:
        return x, out
    return x.astype(np.float32), None


def _finish(y, out, x):
    if x.dtype == np.float16:
        if out is not None:
            out[...] = y
            return out
        return y.astype(np.float16)
    return y


def moments(x, axis=None, *, ddof=0, keepdims=False, num_threads=None):
    """Mean and variance of `x` over `axis`, in one parallel pass.

    The same values as ``np.mean(x, axis)`` and ``np.var(x, axis, ddof=ddof)``,
    computed with float64 accumulation from shifted block sums merged by Chan's
    formula, so they stay accurate when ``|mean| >> std``.

    Parameters
    ----------
    x : array_like
        float32 or float64 data (float16 is computed in float32).
    axis : int, tuple of ints or None, optional
        Axes reduced; None (default) reduces all of them.
    ddof : int, optional
        Delta degrees of freedom of the variance (divisor ``n - ddof``).
    keepdims : bool, optional
        Keep the reduced axes with size one.
    num_threads : int, optional
        Threads for this call; default :func:`fastnorm.get_num_threads`.

    Returns
    -------
    mean, var : ndarray or NumPy scalar
        In x's dtype; NumPy scalars (as ``np.mean`` returns) when every axis is
        reduced and ``keepdims`` is False.

    Raises
    ------
    TypeError
        If x is not a float array.
    ValueError
        If an axis is out of range or repeated, or ``num_threads`` < 1.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> m, v = fastnorm.moments(np.array([[1.0, 2.0], [3.0, 5.0]]), axis=0)
    >>> m.tolist(), v.tolist()
    ([2.0, 3.5], [1.0, 2.25])
    """
    r = _ext.moments_fast(x, axis, ddof, keepdims, num_threads, get_num_threads)
    if r is not None:
        return r
    x, axes, mean, var = moments_float64(x, axis, ddof, num_threads)
    if keepdims:
        shape = tuple(1 if i in axes else x.shape[i] for i in range(x.ndim))
        mean, var = mean.reshape(shape), var.reshape(shape)
    return mean.astype(x.dtype)[()], var.astype(x.dtype)[()]


def moments_float64(x, axis=None, ddof=0, num_threads=None):
    """The general path of :func:`moments`, its statistics kept in float64.

    For callers that go on accumulating them (``RunningMoments``): rounding a
    float32 batch's mean to float32 loses what ``|mean| >> std`` leaves of its
    spread.

    Parameters
    ----------
    x, axis, ddof, num_threads
        As for :func:`moments`.

    Returns
    -------
    x : ndarray
        The input as validated.
    axes : tuple of int
        The reduced axes, non-negative and sorted.
    mean, var : ndarray
        float64, in the shape of x's kept axes.

    Raises
    ------
    TypeError, ValueError
        As :func:`moments`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.normalization import moments_float64
    >>> _, axes, m, v = moments_float64(np.array([[1, 2], [3, 5]], np.float32), axis=0)
    >>> axes, m.dtype, m.tolist(), v.tolist()
    ((0,), dtype('float64'), [2.0, 3.5], [1.0, 2.25])
    """
    func = "moments"
    x = as_input(x, func)
    axes = normalize_axes(axis, x.ndim, func)
    nthreads = resolve_threads(num_threads, func)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, float, np.integer, np.floating)):
        raise TypeError(f"{func}: ddof must be a real number, got {ddof!r}")
    xc, _ = _upcast(x, None)
    reduced = tuple(i in axes for i in range(x.ndim))
    n = 1
    for i in axes:
        n *= x.shape[i]
    if x.size == 0:
        kept_shape = [x.shape[i] for i in range(x.ndim) if i not in axes]
        mean = np.full(kept_shape, np.nan)
        var = np.full(kept_shape, np.nan)
    else:
        _, mean, var = _engine.run(xc, None, _engine.Op(reduced, _engine.MODE_MEANVAR, nthreads=nthreads),
                                   want_y=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = var * (n / np.float64(max(n - ddof, 0))) if ddof else var
    return x, tuple(axes), np.asarray(mean, np.float64), np.asarray(var, np.float64)


def batch_norm(x, weight=None, bias=None, *, running_mean=None, running_var=None, training=None,
               momentum=0.1, eps=1e-5, channel_axis=1, out=None, return_stats=False,
               num_threads=None):
    """Batch normalization: statistics per channel over every other axis.

    ``y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]`` with the batch
    statistics (training) or the running statistics (inference), as
    ``torch.nn.functional.batch_norm``. ONNX BatchNormalization maps to
    ``training=False`` with ``running_mean=input_mean, running_var=input_var``
    (``epsilon`` is eps); its training-mode ``momentum`` weights the *old* running
    value, i.e. ONNX momentum m is fastnorm momentum ``1 - m`` — exactly for the
    running mean; for the running variance ONNX feeds the population (biased)
    batch variance where fastnorm, like PyTorch, feeds the unbiased one.

    Parameters
    ----------
    x : array_like
        float32 or float64 data, ``x.ndim >= 2``; any memory layout.
    weight, bias : array_like of shape (C,), optional
        Per-channel scale and shift (either may be given alone).
    running_mean, running_var : ndarray of shape (C,), optional
        Running statistics. Training updates them in place as PyTorch does:
        ``r = (1 - momentum) * r + momentum * batch`` with the unbiased batch
        variance; they must then be writable and contiguous. Inference reads them.
    training : bool, optional
        Use batch statistics. Default: ``running_mean is None``.
    momentum : float, optional
        Weight of the new batch statistics, in [0, 1].
    eps : float, optional
        Added to the variance, >= 0.
    channel_axis : int, optional
        Axis of the channels: 1 for NCHW (default), -1 for channels-last / (N, C).
    out : ndarray, optional
        Output of x's shape and dtype; may be x itself.
    return_stats : bool, optional
        Also return the mean and invstd = 1 / sqrt(var + eps) that were used.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    y : ndarray
        The normalized array (``out`` when given).
    mean, invstd : ndarray of shape (C,)
        Only with ``return_stats=True``, in x's dtype.

    Raises
    ------
    TypeError
        Non-float x, weight, bias or running statistics; out of another dtype.
    ValueError
        Bad channel_axis, parameter shapes, eps < 0, momentum outside [0, 1],
        training with one value per channel, inference without running statistics,
        read-only or non-contiguous running statistics that training would update.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> fastnorm.batch_norm(x, eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    r = _ext.chan_fast(x, weight, bias, eps, out, 0, channel_axis, running_mean, running_var,
                       training, momentum, num_threads, get_num_threads, bool(return_stats))
    if r is not None:
        return r
    func = "batch_norm"
    x = as_input(x, func)
    if x.ndim < 2:
        raise ValueError(f"{func}: x must have at least 2 dimensions, got shape {x.shape}")
    cax = channel_axis_index(channel_axis, x.ndim, func)
    C = x.shape[cax]
    dt = compute_dtype(x)
    eps = check_eps(eps, func)
    momentum = check_momentum(momentum, func)
    nthreads = resolve_threads(num_threads, func)
    if training is None:
        training = running_mean is None
    training = bool(training)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{func}: running_mean and running_var must be given together")
    has_running = running_mean is not None
    if not training and not has_running:
        raise ValueError(f"{func}: inference (training=False) needs running_mean and running_var")
    if has_running:
        running_mean = check_running(running_mean, C, func, "running_mean", writable=training)
        running_var = check_running(running_var, C, func, "running_var", writable=training)
    out = check_out(out, x, func, (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                                   ("running_var", running_var)))
    weight = check_param(weight, (C,), dt, func, "weight")
    bias = check_param(bias, (C,), dt, func, "bias")
    if bias is not None and weight is None:
        weight = np.ones(C, dtype=dt)   # the kernels take a bias only with a weight
    n = x.size // C if C else 0
    if training and n == 1:
        raise ValueError(f"{func}: expected more than 1 value per channel when training, got x of shape {x.shape}")
    reduced = tuple(i != cax for i in range(x.ndim))

    if training:
        stats_given = None
    else:
        stats_given = (np.ascontiguousarray(running_mean, dtype=np.float64),
                       np.ascontiguousarray(running_var, dtype=np.float64))
    if x.size == 0:
        y = out if out is not None else np.empty_like(x)
        if training:
            mean = np.full(C, np.nan)
            var = np.full(C, np.nan)
        else:
            mean, var = stats_given
    else:
        xc, oc = _upcast(x, out)
        op = _engine.Op(reduced, _engine.MODE_MEANVAR, eps, weight, bias, w_on_kept=True,
                        stats_given=stats_given, nthreads=nthreads)
        y, mean, var = _engine.run(xc, oc, op)
        y = _finish(y, out, x)
        if training and has_running:
            m = momentum
            unbiased = var * (n / (n - 1.0))
            running_mean[...] = (1.0 - m) * running_mean + m * mean
            running_var[...] = (1.0 - m) * running_var + m * unbiased
    if return_stats:
        invstd = _engine.inv_std(var, eps)
        return y, np.asarray(mean).astype(x.dtype), invstd.astype(x.dtype)
    return y


def _layer_params(x, weight, bias, axes, dt, func, need_bias=True):
    shape = tuple(x.shape[i] for i in axes)
    weight = check_param(weight, shape, dt, func, "weight")
    bias = check_param(bias, shape, dt, func, "bias") if need_bias else None
    if weight is None and bias is not None:
        weight = np.ones(shape, dtype=dt)   # the kernels take a bias only with a weight
    return weight, bias


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None, return_stats=False,
               num_threads=None):
    """Layer normalization: statistics per sample over the axes in `axis`.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` where mean and the biased
    var are taken over `axis`. Any axes may be normalized, not only trailing ones:
    ``axis=1`` on NCHW is the channels-first LayerNorm of ConvNeXt, computed
    natively without transposes. ``torch.nn.functional.layer_norm(x, shape)``
    is ``axis=tuple(range(-len(shape), 0))``; ONNX LayerNormalization with
    ``axis=k`` is ``axis=tuple(range(k, x.ndim))`` (``epsilon`` is eps).

    Parameters
    ----------
    x : array_like
        float32 or float64 data, any layout; 1-D allowed.
    weight, bias : array_like, optional
        Shape of x at the normalized axes (in increasing axis order).
    axis : int or tuple of ints, optional
        Normalized axes (default -1).
    eps : float, optional
        Added to the variance, >= 0.
    out : ndarray, optional
        Output of x's shape and dtype; may be x itself.
    return_stats : bool, optional
        Also return mean and rstd = 1 / sqrt(var + eps), shaped like x without the
        normalized axes, in x's dtype.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        Only with ``return_stats=True``.

    Raises
    ------
    TypeError
        Non-float x or parameters; out of another dtype.
    ValueError
        Out-of-range or repeated axes, parameter shapes, eps < 0, bad out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.layer_norm(np.array([[1.0, 3.0], [2.0, 6.0]]), eps=0.0)
    array([[-1.,  1.],
           [-1.,  1.]])
    """
    if axis == -1 or last_axis_only(axis, x):
        r = _rows_fast(x, weight, bias, eps, out, _MODE_MEANVAR, num_threads, get_num_threads,
                           bool(return_stats))
        if r is not None:
            return r
    return _rowwise(x, weight, bias, axis, eps, out, return_stats, num_threads,
                    "layer_norm", _engine.MODE_MEANVAR)


def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None, return_stats=False, num_threads=None):
    """Root-mean-square normalization over the axes in `axis`.

    ``y = x / sqrt(mean(x**2) + eps) * weight``, as ``torch.nn.functional.rms_norm``
    (ONNX RMSNormalization with ``axis=k`` is ``axis=tuple(range(k, x.ndim))``).

    Parameters
    ----------
    x : array_like
        float32 or float64 data, any layout.
    weight : array_like, optional
        Shape of x at the normalized axes.
    axis : int or tuple of ints, optional
        Normalized axes (default -1).
    eps : float, optional
        Added to the mean square, >= 0; None (default) is ``np.finfo(x.dtype).eps``
        as in PyTorch.
    out : ndarray, optional
        Output of x's shape and dtype; may be x itself.
    return_stats : bool, optional
        Also return rstd = 1 / sqrt(mean(x**2) + eps).
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    y : ndarray
    rstd : ndarray
        Only with ``return_stats=True``.

    Raises
    ------
    TypeError
        Non-float x or weight; out of another dtype.
    ValueError
        Bad axes, weight shape, eps < 0, bad out.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> fastnorm.rms_norm(np.array([[3.0, 4.0]]) * np.sqrt(2) / 5, eps=0.0).round(6)
    array([[0.848528, 1.131371]])
    """
    if type(x) is np.ndarray and (axis == -1 or last_axis_only(axis, x)):
        e = _RMS_DEFAULT_EPS.get(x.dtype.num) if eps is None else eps
        r = _rows_fast(x, weight, None, e, out, _MODE_RMS, num_threads, get_num_threads,
                           bool(return_stats))
        if r is not None:
            return r
    x = as_input(x, "rms_norm")
    if eps is None:
        eps = float(np.finfo(x.dtype).eps)
    return _rowwise(x, weight, None, axis, eps, out, return_stats, num_threads,
                    "rms_norm", _engine.MODE_RMS)


def _rowwise(x, weight, bias, axis, eps, out, return_stats, num_threads, func, mode):
    x = as_input(x, func)
    axes = normalize_axes(axis, x.ndim, func)
    dt = compute_dtype(x)
    eps = check_eps(eps, func)
    nthreads = resolve_threads(num_threads, func)
    out = check_out(out, x, func, (("weight", weight), ("bias", bias)))
    weight, bias = _layer_params(x, weight, bias, axes, dt, func, need_bias=(mode == _engine.MODE_MEANVAR))
    reduced = tuple(i in axes for i in range(x.ndim))
    kept_shape = tuple(x.shape[i] for i in range(x.ndim) if i not in axes)
    if x.size == 0:
        y = out if out is not None else np.empty_like(x)
        mean = np.full(kept_shape, np.nan)
        var = np.full(kept_shape, np.nan)
    else:
        xc, oc = _upcast(x, out)
        op = _engine.Op(reduced, mode, eps, weight, bias, nthreads=nthreads)
        y, mean, var = _engine.run(xc, oc, op)
        y = _finish(y, out, x)
    if not return_stats:
        return y
    rstd = _engine.inv_std(var, eps).astype(x.dtype)
    if mode == _engine.MODE_RMS:
        return y, rstd
    return y, mean.astype(x.dtype), rstd
