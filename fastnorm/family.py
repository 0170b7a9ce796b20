"""More of the normalization family: local response normalization, weight
normalization and folding an inference BatchNorm into the layer before it.

- ``local_response_norm`` and its backward run C kernels (src_c/lrn_template.h)
  through ``fastnorm._ext``: OpenMP-parallel, GIL released, any layout described
  by strides, window sums in float64 without cancellation.
- ``weight_norm`` and its backward take their per-slice sums from the engine
  (``fastnorm._engine``, RMS statistics and the RMS backward), with NumPy only
  for the broadcast product and slices beyond float64's safe range.
- ``fold_batch_norm`` acts on weight tensors, which are small: it is computed in
  float64 with NumPy and returned in the weight's dtype.
"""
import math
import operator

import numpy as np

from . import _engine, _ext
from ._config import get_num_threads, resolve_threads
from ._validate import (as_input, channel_axis_index, check_eps, check_int, check_out, compute_dtype,
                        normalize_axes, same_memory)

__all__ = ["local_response_norm", "local_response_norm_backward", "weight_norm",
           "weight_norm_backward", "fold_batch_norm"]


# ------------------------------------------------------------------ LRN ----

def _check_size(size, func):
    return check_int(size, func, "size", 1)


def _check_real(v, func, name):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be a real number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{func}: {name} must be a real number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{func}: {name} must be finite, got {v!r}")
    return f


def _lrn_layout(arrays, cax):
    """Describe same-shaped arrays as [o, c, i] with element strides, or None.

    Every axis but the channel axis is a position axis; their order does not
    matter to LRN, so they are sorted by |stride| of the first array and merged
    where every array allows it. Two runs at most (o outer, i the smaller
    stride, which the kernel tiles); otherwise the caller copies.
    """
    a0 = arrays[0]
    isz = a0.itemsize
    for a in arrays:
        if not a.flags.aligned or any(s % isz for s in a.strides):
            return None
    st = [[s // isz for s in a.strides] for a in arrays]
    shape = a0.shape
    axes = [i for i in range(a0.ndim) if i != cax and shape[i] != 1]
    axes.sort(key=lambda i: -abs(st[0][i]))
    runs = []   # [size, [stride per array]]
    for i in axes:
        n = shape[i]
        if runs and all(runs[-1][1][j] == st[j][i] * n for j in range(len(arrays))):
            runs[-1][0] *= n
            runs[-1][1] = [st[j][i] for j in range(len(arrays))]
        else:
            runs.append([n, [st[j][i] for j in range(len(arrays))]])
    if len(runs) > 2:
        return None
    while len(runs) < 2:
        runs.insert(0, [1, [0] * len(arrays)])
    (O, so), (Ni, si) = runs
    sc = [st[j][cax] for j in range(len(arrays))]
    return O, shape[cax], Ni, [(so[j], sc[j], si[j]) for j in range(len(arrays))]


def _lrn_window(size, C):
    """PyTorch's window: size // 2 channels before, (size - 1) // 2 after (a
    window reaching past every channel sees only zeros there: clamped to C)."""
    return min(size // 2, C), min((size - 1) // 2, C)


def _lrn_prepare(x, size, alpha, beta, k, channel_axis, num_threads, func):
    x = as_input(x, func)
    if x.ndim < 2:
        raise ValueError(f"{func}: x must have at least 2 dimensions, got shape {x.shape}")
    cax = channel_axis_index(channel_axis, x.ndim, func)
    size = _check_size(size, func)
    alpha = _check_real(alpha, func, "alpha")
    beta = _check_real(beta, func, "beta")
    k = _check_real(k, func, "k")
    nthreads = resolve_threads(num_threads, func)
    return x, cax, size, alpha, beta, k, nthreads


def _plan_or_copy(inputs, dest, cax):
    """Arrays to run the kernel on: (inputs', y, layout). Inputs that no layout
    fits are copied to C order; y is `dest` when a layout fits it, else new."""
    if dest is not None:
        lay = _lrn_layout(inputs + [dest], cax)
        if lay is not None:
            return inputs, dest, lay
    if _lrn_layout(inputs, cax) is None:
        inputs = [np.ascontiguousarray(a) for a in inputs]
    y = np.empty_like(inputs[0])
    lay = _lrn_layout(inputs + [y], cax)
    if lay is None:
        inputs = [np.ascontiguousarray(a) for a in inputs]
        y = np.empty_like(inputs[0])
        lay = _lrn_layout(inputs + [y], cax)
    return inputs, y, lay


def _deliver(y, out, dtype):
    if out is not None:
        if y is not out:
            out[...] = y
        return out
    return y if y.dtype == dtype else y.astype(dtype)


def local_response_norm(x, size, *, alpha=1e-4, beta=0.75, k=1.0, channel_axis=1, out=None,
                        num_threads=None):
    """Local response normalization across channels (AlexNet's LRN).

    ``y[c] = x[c] / (k + alpha / size * sum(x[j]**2 for j in window(c)))**beta``
    where ``window(c)`` is the channels ``c - size//2 .. c + (size-1)//2`` and
    channels outside the array count as zero, exactly as
    ``torch.nn.functional.local_response_norm(x, size, alpha, beta, k)``.

    ONNX ``LRN(size, alpha, beta, bias)`` is the same formula with ``k = bias``.
    For odd ``size`` (the usual case) the windows coincide. For even ``size``
    ONNX puts the extra channel after ``c`` and PyTorch before; the ONNX result
    is then ``local_response_norm(x[:, ::-1], ...)[:, ::-1]`` (the reversal is a
    view; the kernel takes negative strides without copying).

    Window sums are accumulated in float64 as suffix + prefix sums of blocks of
    ``size`` channels, never by subtracting from a running sum, so small values
    after large ones keep their accuracy.

    Parameters
    ----------
    x : array_like
        float32 or float64 data with ``x.ndim >= 2`` (PyTorch requires 3); any
        memory layout. float16 is computed in float32.
    size : int
        Number of channels in the window, >= 1 (may exceed the channel count).
    alpha : float, optional
        Scale of the sum of squares (divided by ``size``), finite.
    beta : float, optional
        Exponent, finite.
    k : float, optional
        Additive constant (ONNX ``bias``), finite.
    channel_axis : int, optional
        Axis of the channels: 1 for NCHW (default), -1 for channels-last.
    out : ndarray, optional
        Output of x's shape and dtype; may be x itself.
    num_threads : int, optional
        Threads for this call; default :func:`fastnorm.get_num_threads`.

    Returns
    -------
    y : ndarray
        In x's dtype (``out`` when given).

    Raises
    ------
    TypeError
        Non-float x, non-integer size, non-real alpha/beta/k, out of another dtype.
    ValueError
        ``x.ndim < 2``, bad channel_axis, ``size < 1``, non-finite alpha/beta/k,
        out of the wrong shape, read-only or partially overlapping x.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.family import local_response_norm
    >>> x = np.array([[1.0, 2.0, 3.0]])          # one sample, three channels
    >>> local_response_norm(x, 3, alpha=3.0, beta=1.0, k=1.0)
    array([[0.16666667, 0.13333333, 0.21428571]])
    """
    func = "local_response_norm"
    x, cax, size, alpha, beta, k, nthreads = _lrn_prepare(x, size, alpha, beta, k, channel_axis,
                                                          num_threads, func)
    out = check_out(out, x, func)
    if x.size == 0:
        return out if out is not None else np.empty_like(x)
    dt = compute_dtype(x)
    xc = x if x.dtype == dt else x.astype(dt)
    dest = out if (out is not None and out.dtype == dt) else None
    (xc,), y, (O, C, Ni, ((xo, xcs, xi), (yo, yc, yi))) = _plan_or_copy([xc], dest, cax)
    before, after = _lrn_window(size, C)
    _ext.lrn(xc, y, (O, C, Ni, xo, xcs, xi, yo, yc, yi), before, after, alpha / size, beta, k,
             nthreads)
    return _deliver(y, out, x.dtype)


def local_response_norm_backward(dy, x, size, *, alpha=1e-4, beta=0.75, k=1.0, channel_axis=1,
                                 out=None, num_threads=None):
    """Gradient of :func:`local_response_norm` with respect to x.

    With ``D[c] = k + alpha/size * sum(x[j]**2 for j in window(c))``::

        dx[j] = dy[j] * D[j]**-beta
                - 2*alpha*beta/size * x[j] * sum(dy[c] * x[c] * D[c]**(-beta-1)
                                                 for c whose window holds j)

    computed in float64 per element (one pass over x and dy, the window sums
    recomputed, nothing stored by the forward).

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to the output, x's shape, float.
    x : array_like
        The forward input.
    size, alpha, beta, k, channel_axis
        As given to the forward call.
    out : ndarray, optional
        Where to write dx (x's shape and dtype); may be x or dy itself.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    dx : ndarray
        In x's dtype (``out`` when given).

    Raises
    ------
    TypeError
        Non-float x or dy, bad size/alpha/beta/k types, out of another dtype.
    ValueError
        dy of another shape, bad channel_axis, size, alpha/beta/k or out.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.family import local_response_norm_backward
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> local_response_norm_backward(np.ones_like(x), x, 1, alpha=1.0, beta=1.0, k=1.0)
    array([[ 0.  , -0.12, -0.08]])
    """
    func = "local_response_norm_backward"
    x, cax, size, alpha, beta, k, nthreads = _lrn_prepare(x, size, alpha, beta, k, channel_axis,
                                                          num_threads, func)
    dy = np.asarray(dy)
    if dy.dtype.kind != "f":
        raise TypeError(f"{func}: dy must be a float array, got dtype {dy.dtype}")
    if dy.shape != x.shape:
        raise ValueError(f"{func}: dy has shape {dy.shape}, expected x's shape {x.shape}")
    out = check_out(out, x, func)
    if (out is not None and out is not dy and np.may_share_memory(out, dy)
            and not same_memory(out, dy)):
        raise ValueError(f"{func}: out overlaps dy without being dy itself")
    if x.size == 0:
        return out if out is not None else np.empty_like(x)
    dt = compute_dtype(x)
    xc = x if x.dtype == dt else x.astype(dt)
    dyc = dy if dy.dtype == dt else dy.astype(dt)
    dest = out if (out is not None and out.dtype == dt) else None
    (xc, dyc), dx, lay = _plan_or_copy([xc, dyc], dest, cax)
    O, C, Ni, ((xo, xcs, xi), (go, gc, gi), (yo, yc, yi)) = lay
    before, after = _lrn_window(size, C)
    _ext.lrn_backward(xc, dyc, dx, (O, C, Ni, xo, xcs, xi, yo, yc, yi, go, gc, gi), before, after,
                      alpha / size, beta, k, nthreads)
    return _deliver(dx, out, x.dtype)


# ---------------------------------------------------------- weight norm ----
#
# The per-slice sums come from the engine (src_c), as for the other norms: its
# RMS statistics give the mean of squares ms of each slice, so ||v|| =
# sqrt(n * ms) with n the slice length, and the backward is the engine's RMS
# backward (see weight_norm_backward). The engine sums squares and products of
# the raw values, so float64 data beyond about 1e+-145 could overflow there or
# lose squares to underflow. Slices outside the safe range (all-zero, inf and
# NaN slices too) are recomputed by the NumPy formulas below, which scale by
# max|v| first; float32 and float16 data never leave it.
_WN_TINY = 1e-290    # a mean square below this may have lost squares to underflow
_WN_HUGE = 1e290     # ||v|| * ||dw|| above this may overflow the sums of products


def _float_array(a, func, name):
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError(f"{func}: {name} must be a float array, got dtype {a.dtype}")
    return a


def _wn_setup(v, g, axis, func):
    """Validate; return v, g, the engine's view ve of v (exactly one kept axis,
    kax: a leading axis of length 1 when axis is None), kax and g per slice
    (float64, 1-D)."""
    v = as_input(v, func, "v")
    g = _float_array(g, func, "g")
    if axis is None:
        shapes = [()]
        ve, kax = v.reshape((1,) + v.shape if v.ndim else (1, 1)), 0
    else:
        if isinstance(axis, (bool, np.bool_)):
            raise TypeError(f"{func}: axis must be an int or None, got {axis!r}")
        try:
            operator.index(axis)
        except TypeError:
            raise TypeError(f"{func}: axis must be an int or None, got {axis!r}") from None
        (ax,) = normalize_axes(axis, v.ndim, func)
        shapes = [tuple(v.shape[i] if i == ax else 1 for i in range(v.ndim)), (v.shape[ax],)]
        ve, kax = v, ax
    if g.shape not in shapes:
        want = " or ".join(str(s) for s in dict.fromkeys(shapes))
        raise ValueError(f"{func}: g has shape {g.shape}, expected {want}")
    return v, g, ve, kax, g.astype(np.float64).reshape(-1)


def _wn_slice_shape(ve, kax, c):
    """Shape that broadcasts c values per slice against ve."""
    return tuple(c if i == kax else 1 for i in range(ve.ndim))


def _wn_mean_squares(a, kax, nthreads):
    """Mean of squares of every slice of a along kax (float64, 1-D), from the engine."""
    reduced = tuple(i != kax for i in range(a.ndim))
    ac = a.astype(np.float32) if a.dtype == np.float16 else a
    op = _engine.Op(reduced, _engine.MODE_RMS, nthreads=nthreads)
    return _engine.run(ac, None, op, want_y=False)[2].reshape(-1)


def _wn_numpy_norm(a64, red):
    """||a|| over red (keepdims) in NumPy, scaled by max|a| so that float64
    weights near 1e200 do not overflow (nor those near 1e-200 underflow)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(np.abs(a64), axis=red, keepdims=True)
        ms = np.where(m > 0, m, 1.0)
        return m * np.sqrt(np.sum(np.square(a64 / ms), axis=red, keepdims=True))


def weight_norm(v, g, *, axis=0):
    """Weight normalization: ``w = g * v / ||v||``.

    The norm is the Euclidean norm over every axis of v except `axis` (one norm
    per slice along `axis`, e.g. per output channel of a convolution weight), as
    ``torch.nn.utils.weight_norm`` (``weight_g``, ``weight_v``). The sums of
    squares run in fastnorm's engine, as rms_norm's statistics (float16 is read
    as float32; threads as set by :func:`fastnorm.set_num_threads`);
    ``v * (g / ||v||)`` is formed in float64 and rounded once to v's dtype.

    Parameters
    ----------
    v : array_like
        The direction, float32 or float64, any shape.
    g : array_like
        The magnitude: PyTorch's shape (v's shape with ones everywhere except at
        `axis`), or 1-D of length ``v.shape[axis]``; 0-d when ``axis`` is None.
    axis : int or None, optional
        Axis that keeps one norm per index (default 0). Negative values count
        from the end as in NumPy (PyTorch's ``dim=-1`` means None instead).
        None: one norm over all of v.

    Returns
    -------
    w : ndarray
        v's shape and dtype. A slice of v that is all zero gives NaN (0/0), as
        in PyTorch.

    Raises
    ------
    TypeError
        Non-float v or g, non-integer axis.
    ValueError
        Axis out of range, g of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.family import weight_norm
    >>> weight_norm(np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([10.0, 1.0]))
    array([[6., 8.],
           [0., 1.]])
    """
    func = "weight_norm"
    v, g, ve, kax, g64 = _wn_setup(v, g, axis, func)
    w = np.empty_like(v)
    if v.size == 0:
        return w
    C = ve.shape[kax]
    n = v.size // C
    ms = _wn_mean_squares(ve, kax, get_num_threads())
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        norm = np.sqrt(n * ms)
        bad = np.flatnonzero(~((ms >= _WN_TINY) & np.isfinite(norm)))
    if bad.size:
        red = tuple(i for i in range(ve.ndim) if i != kax)
        sub = np.take(ve, bad, axis=kax).astype(np.float64)
        norm[bad] = _wn_numpy_norm(sub, red).reshape(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (g64 / norm).reshape(_wn_slice_shape(ve, kax, C))
        # float64 products written to w: one rounding, no float64 copy of v
        np.multiply(ve, scale, out=w.reshape(ve.shape), dtype=np.float64)
    return w


def weight_norm_backward(dw, v, g, *, axis=0):
    """Gradients of :func:`weight_norm` with respect to v and g.

    With ``u = v / ||v||`` per slice: ``dg = sum(dw * u)`` over the normalized
    axes and ``dv = g / ||v|| * (dw - u * dg)``.

    This is the RMS-norm backward of fastnorm's engine: with the slice
    statistics ``rstd = 1 / sqrt(mean(v**2))``, ``xhat = v * rstd = sqrt(n) * u``
    (n values per slice) and the per-slice weight ``g / sqrt(n)``, the engine's
    ``dx`` is dv and its weight gradient ``sum(dw * xhat)`` is ``sqrt(n) * dg``.
    Computed in float64 whatever the input dtypes, so float32 weights and
    gradients of any magnitude stay in range; results are rounded once.

    Parameters
    ----------
    dw : array_like
        Gradient of the loss with respect to w, v's shape, float.
    v, g, axis
        As given to :func:`weight_norm`.

    Returns
    -------
    dv : ndarray
        v's shape and dtype.
    dg : ndarray
        g's shape (as given) and dtype.

    Raises
    ------
    TypeError
        Non-float dw, v or g; non-integer axis.
    ValueError
        dw of another shape than v, axis out of range, g of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.family import weight_norm_backward
    >>> dv, dg = weight_norm_backward(np.array([[1.0, 0.0]]), np.array([[3.0, 4.0]]), np.array([5.0]))
    >>> dv, dg
    (array([[ 0.64, -0.48]]), array([0.6]))
    """
    func = "weight_norm_backward"
    dw = _float_array(dw, func, "dw")
    v, g, ve, kax, g64 = _wn_setup(v, g, axis, func)
    if dw.shape != v.shape:
        raise ValueError(f"{func}: dw has shape {dw.shape}, expected v's shape {v.shape}")
    if v.size == 0:
        # empty slices: dg is an empty sum
        return np.empty_like(v), np.zeros(g.shape, dtype=g.dtype)
    C = ve.shape[kax]
    n = v.size // C
    nthreads = get_num_threads()
    v64 = ve.astype(np.float64, copy=False)
    dw64 = dw.astype(np.float64, copy=False).reshape(ve.shape)
    if not dw64.flags.aligned:
        dw64 = dw64.copy()
    ms = _wn_mean_squares(v64, kax, nthreads)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        norm = np.sqrt(n * ms)
        ok = (ms >= _WN_TINY) & np.isfinite(norm)
        if max(v.dtype.itemsize, dw.dtype.itemsize) > 4:
            # float64 data: the products dw * v must neither overflow nor
            # underflow (|dw * v| <= ||dw|| * ||v||); float32 ones cannot
            msd = _wn_mean_squares(dw64, kax, nthreads)
            ok &= (msd >= _WN_TINY) & (norm * np.sqrt(n * msd) <= _WN_HUGE)
        rstd = 1.0 / np.sqrt(ms)
    rn = math.sqrt(n)
    reduced = tuple(i != kax for i in range(ve.ndim))
    op = _engine.Op(reduced, _engine.MODE_RMS, 0.0, g64 / rn, None, w_on_kept=True,
                    nthreads=nthreads)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dv64, dgn, _ = _engine.run_backward(v64, dw64, None, op, None, rstd, True, True)
        dg = dgn / rn
    # a non-finite dg (inf or NaN in dw) also takes the NumPy formulas: the engine's
    # RMS sums would turn some of their infs into NaNs
    bad = np.flatnonzero(~(ok & np.isfinite(dg)))
    if bad.size:
        red = tuple(i for i in range(ve.ndim) if i != kax)
        sv, sd = np.take(v64, bad, axis=kax), np.take(dw64, bad, axis=kax)
        gb = g64[bad].reshape(_wn_slice_shape(ve, kax, bad.size))
        with np.errstate(invalid="ignore", divide="ignore"):
            nb = _wn_numpy_norm(sv, red)
            u = sv / nb
            sdg = np.sum(sd * u, axis=red, keepdims=True)
            index = tuple(bad if i == kax else slice(None) for i in range(ve.ndim))
            dv64[index] = (gb / nb) * (sd - u * sdg)
            dg[bad] = sdg.reshape(-1)
    return dv64.reshape(v.shape).astype(v.dtype), dg.reshape(g.shape).astype(g.dtype)


# ------------------------------------------------------- BN folding ----

def fold_batch_norm(weight, bias, running_mean, running_var, bn_weight=None, bn_bias=None, *,
                    eps=1e-5, channel_axis=0):
    """Fold an inference BatchNorm into the linear layer or convolution before it.

    For ``z = W x + b`` followed by ``BN(z) = (z - mean) / sqrt(var + eps) * gamma + beta``
    (running statistics, per output channel), returns ``W'`` and ``b'`` with
    ``BN(W x + b) == W' x + b'``::

        s  = gamma / sqrt(var + eps)
        W' = W * s       (along the output-channel axis)
        b' = (b - mean) * s + beta

    as ``torch.nn.utils.fusion.fuse_conv_bn_weights``. Computed in float64,
    returned in the weight's dtype; the inputs are not modified.

    Parameters
    ----------
    weight : array_like
        Weight of the layer: (out, in) for a Linear layer, (C_out, C_in/groups,
        kh, kw) for a convolution (``channel_axis=0``), (C_in, C_out, kh, kw)
        for an ungrouped transposed convolution (``channel_axis=1``).
    bias : array_like of shape (C,) or None
        The layer's bias; None counts as zeros.
    running_mean, running_var : array_like of shape (C,)
        The BatchNorm's running statistics; ``running_var + eps`` must be > 0.
    bn_weight, bn_bias : array_like of shape (C,), optional
        The BatchNorm's affine parameters (gamma, beta); default ones and zeros.
    eps : float, optional
        The BatchNorm's eps, >= 0.
    channel_axis : int, optional
        Axis of `weight` holding the output channels (default 0).

    Returns
    -------
    folded_weight : ndarray
        weight's shape and dtype.
    folded_bias : ndarray of shape (C,)
        In weight's dtype.

    Raises
    ------
    TypeError
        Non-float weight, bias, statistics or BatchNorm parameters.
    ValueError
        Bad channel_axis, a parameter not of shape (C,), eps < 0,
        ``running_var + eps <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.family import fold_batch_norm
    >>> W, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, -1.0])
    >>> W2, b2 = fold_batch_norm(W, b, np.array([0.0, 1.0]), np.array([4.0, 1.0]), eps=0.0)
    >>> W2, b2
    (array([[0.5, 1. ],
           [3. , 4. ]]), array([ 0.5, -2. ]))
    """
    func = "fold_batch_norm"
    weight = np.asarray(weight)
    if weight.dtype.kind != "f":
        raise TypeError(f"{func}: weight must be a float array, got dtype {weight.dtype}")
    if weight.ndim < 1:
        raise ValueError(f"{func}: weight must have at least 1 dimension, got a 0-d array")
    cax = channel_axis_index(channel_axis, weight.ndim, func)
    C = weight.shape[cax]
    eps = check_eps(eps, func)

    def vec(a, name, default):
        if a is None:
            return np.full(C, default, dtype=np.float64)
        a = _float_array(a, func, name)
        if a.shape != (C,):
            raise ValueError(f"{func}: {name} has shape {a.shape}, expected ({C},)")
        return a.astype(np.float64)

    b = vec(bias, "bias", 0.0)
    mean = vec(running_mean, "running_mean", None) if running_mean is not None else None
    var = vec(running_var, "running_var", None) if running_var is not None else None
    if mean is None or var is None:
        raise ValueError(f"{func}: running_mean and running_var are required")
    gamma = vec(bn_weight, "bn_weight", 1.0)
    beta = vec(bn_bias, "bn_bias", 0.0)
    if np.any(var + eps <= 0):
        raise ValueError(f"{func}: running_var + eps must be > 0")
    s = gamma / np.sqrt(var + eps)
    shape = [1] * weight.ndim
    shape[cax] = C
    w2 = weight.astype(np.float64) * s.reshape(shape)
    b2 = (b - mean) * s + beta
    return w2.astype(weight.dtype), b2.astype(weight.dtype)
