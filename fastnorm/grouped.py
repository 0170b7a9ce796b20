"""GroupNorm and InstanceNorm on the engine's SEG/COL kernels.

Both normalize per sample over a group of channels and the spatial axes and apply
a per-channel affine. The channel axis is split into (groups, channels per group)
and the kernel shape is written directly, for both memory orders:

- channels-first (spatial contiguous): units (n, g), each Cg planes of H*W values
  (SEG, affine constant per plane);
- channels-last (channels contiguous): per-channel column statistics (COL),
  merged exactly into groups inside the kernel, then the normalize while each
  sample's slab is in cache.

Statistics stay exact for either layout (no E[x^2] - E[x]^2, unlike PyTorch's
channels-last GroupNorm).
"""

import numpy as np

from . import _engine, _ext
from ._config import get_num_threads, resolve_threads
from ._validate import (as_input, channel_axis_index, check_eps, check_int, check_momentum, check_out,
                        check_param, check_running, compute_dtype)
from .backward import _grad_input, _stat
from .normalization import batch_norm
from .backward import batch_norm_backward

__all__ = ["group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward"]


def _channels_second(a, cax):
    """View of `a` with axis cax moved to position 1 (np.moveaxis without its
    argument checks, which cost more than a small kernel call)."""
    if cax == 1:
        return a
    perm = [0, cax] + [i for i in range(1, a.ndim) if i != cax]
    return a.transpose(perm)


def _nchw(a):
    """(N, C, S) view of `a` (channel axis 1) with the spatial axes flattened, or
    None when they do not collapse without a copy."""
    v = a.view()
    try:
        v.shape = (a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))
    except AttributeError:
        return None
    return v


def _shape(xv, yv, G):
    """Kernel call for (N, C, S) views: ('seg', shape13) or ('col', shape7), or None."""
    N, C, S = xv.shape
    Cg = C // G
    isz = xv.itemsize
    xn, xc, xs = (st // isz for st in xv.strides)
    yn, yc, ys = (st // isz for st in yv.strides)
    if (S == 1 or xs == 1) and (S == 1 or ys == 1):
        # channels-first: units (n, g) of Cg planes of S values
        return "seg", (N, Cg, G, S, xn, xc, Cg * xc, yn, yc, Cg * yc, Cg, 1, 0)
    if (C == 1 or xc == 1) and (C == 1 or yc == 1):
        # channels-last: per-channel column statistics (merged into groups when
        # Cg > 1), then a per-(n, c) normalize; both passes read whole rows of C
        # contiguous values instead of short runs of Cg
        return ("col" if Cg == 1 else "colgroups"), (N, S, C, xn, xs, yn, ys)
    return None


def _run(x, y, G, w, b, eps, nthreads, want_y=True, stream=False):
    """Normalize x (N, C, ...) with channel axis 1 in groups; returns (mean, var) (N, G) float64.

    stream: y is memory already mapped (out=, or a recycled block), which the
    kernels may write with streaming stores (see _engine.run)."""
    xv, yv = _nchw(x), _nchw(y) if y is not None else None
    if (y is not None and not y.flags.aligned) or not x.flags.aligned:
        xv = None
    plan = _shape(xv, yv if yv is not None else xv, G) if xv is not None and (y is None or yv is not None) else None
    if plan is None:
        xc = _engine.c_order_copy(x, nthreads)
        yc = np.empty_like(xc) if want_y else None
        mean, var = _run(xc, yc, G, w, b, eps, nthreads, want_y)
        if want_y:
            _engine.copy_between(yc, y, nthreads)
        return mean, var
    N = xv.shape[0]
    mean = np.empty(N * G)
    var = np.empty(N * G)
    kind, shape = plan
    if kind == "seg":
        _ext.seg_norm(xv, yv if want_y else None, shape, w, b, eps, _engine.MODE_MEANVAR,
                      False, mean, var, nthreads, stream)
    elif kind == "col":
        _ext.col_norm(xv, yv if want_y else None, shape, False, w, b, eps, _engine.MODE_MEANVAR,
                      False, mean, var, nthreads, 1, stream)
    else:
        # per-channel column statistics merged into groups inside the kernel, then
        # the normalize while each sample's slab is still in cache
        C = xv.shape[1]
        mc, vc = np.empty(N * C), np.empty(N * C)
        _ext.col_norm(xv, yv if want_y else None, shape, False, w, b, eps, _engine.MODE_MEANVAR,
                      False, mc, vc, nthreads, C // G, stream)
        return mc.reshape(N, G, C // G)[:, :, 0].copy(), vc.reshape(N, G, C // G)[:, :, 0].copy()
    return mean.reshape(N, G), var.reshape(N, G)


def _common(x, weight, bias, channel_axis, eps, out, num_threads, func, others=(), exact_ok=()):
    x = as_input(x, func)
    if x.ndim < 2:
        raise ValueError(f"{func}: x must have at least 2 dimensions, got shape {x.shape}")
    cax = channel_axis_index(channel_axis, x.ndim, func)
    if cax == 0:
        raise ValueError(f"{func}: channel_axis must not be the batch axis 0")
    C = x.shape[cax]
    dt = compute_dtype(x)
    eps = check_eps(eps, func)
    nthreads = resolve_threads(num_threads, func)
    out = check_out(out, x, func, (("weight", weight), ("bias", bias)) + tuple(others), exact_ok=exact_ok)
    weight = check_param(weight, (C,), dt, func, "weight")
    bias = check_param(bias, (C,), dt, func, "bias")
    if bias is not None and weight is None:
        weight = np.ones(C, dtype=dt)
    return x, cax, C, dt, eps, nthreads, weight, bias, out


def _forward(x, cax, G, weight, bias, eps, out, nthreads):
    """y and (mean, var) (N, G) for channel axis cax."""
    y, stream = (out, True) if out is not None else _ext.new_output(x)
    if x.size == 0:
        N = x.shape[0]
        return y, np.full((N, G), np.nan), np.full((N, G), np.nan)
    xm, ym = _channels_second(x, cax), _channels_second(y, cax)
    if x.dtype == np.float16:
        x32 = xm.astype(np.float32)
        y32 = np.empty_like(x32)
        mean, var = _run(x32, y32, G, weight, bias, eps, nthreads)
        ym[...] = y32
    else:
        mean, var = _run(xm, ym, G, weight, bias, eps, nthreads, stream=stream)
    return y, mean, var


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, channel_axis=1, out=None,
               return_stats=False, num_threads=None):
    """Group normalization, as ``torch.nn.functional.group_norm``.

    Statistics per sample and per group of ``C / num_groups`` consecutive channels,
    over those channels and every spatial axis; then a per-channel affine. Both
    channels-first and channels-last layouts run natively with exact statistics.
    ONNX GroupNormalization (opset 21: per-channel scale and bias) maps to
    ``group_norm(x, num_groups, scale, bias, eps=epsilon)``.

    Parameters
    ----------
    x : array_like
        float32 or float64, ``x.ndim >= 2``, batch axis 0.
    num_groups : int
        Number of groups; must divide C.
    weight, bias : array_like of shape (C,), optional
        Per-channel scale and shift.
    eps : float, optional
        Added to the variance, >= 0.
    channel_axis : int, optional
        1 (default, NCHW) or -1 (channels-last), any axis but 0.
    out : ndarray, optional
        Output of x's shape and dtype; may be x.
    return_stats : bool, optional
        Also return mean and rstd, shape (N, num_groups), x's dtype.
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
        Non-float x or parameters, non-integer num_groups.
    ValueError
        num_groups < 1 or not dividing C, bad channel_axis, shapes or eps.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.arange(8.0).reshape(1, 4, 2)
    >>> fastnorm.group_norm(x, 2, eps=0.0).round(4)[0, 0].tolist()
    [-1.3416, -0.4472]
    """
    # (groups 0 and -1 would mean BatchNorm and InstanceNorm to chan_fast)
    if type(num_groups) is int and num_groups > 0:
        r = _ext.chan_fast(x, weight, bias, eps, out, num_groups, channel_axis, None, None, True, 0.0,
                           num_threads, get_num_threads, bool(return_stats))
        if r is not None:
            return r
    func = "group_norm"
    x, cax, C, dt, eps, nthreads, weight, bias, out = _common(x, weight, bias, channel_axis, eps,
                                                              out, num_threads, func)
    G = _check_groups(num_groups, C, func)
    y, mean, var = _forward(x, cax, G, weight, bias, eps, out, nthreads)
    if return_stats:
        return y, mean.astype(x.dtype), _engine.inv_std(var, eps).astype(x.dtype)
    return y


def _check_groups(num_groups, C, func):
    G = check_int(num_groups, func, "num_groups", 1)
    if C % G:
        raise ValueError(f"{func}: num_groups={G} does not divide the {C} channels")
    return G


def instance_norm(x, weight=None, bias=None, *, running_mean=None, running_var=None, training=True,
                  momentum=0.1, eps=1e-5, channel_axis=1, out=None, return_stats=False,
                  num_threads=None):
    """Instance normalization, as ``torch.nn.functional.instance_norm``.

    With ``training=True`` (PyTorch's ``use_input_stats``), statistics per sample
    and channel over the spatial axes; running statistics, when given, are updated
    with the batch average of the per-instance mean and unbiased variance
    (``r = (1 - momentum) * r + momentum * batch``). With ``training=False`` the
    running statistics normalize every instance, as in inference BatchNorm.
    ONNX InstanceNormalization is ``instance_norm(x, scale, B, eps=epsilon)``.

    Parameters
    ----------
    x : array_like
        float32 or float64 with at least one spatial axis (``x.ndim >= 3``).
    weight, bias : array_like of shape (C,), optional
        Per-channel affine.
    running_mean, running_var : ndarray of shape (C,), optional
        Running statistics (updated in place when training).
    training : bool, optional
        Use instance statistics (default True).
    momentum : float, optional
        In [0, 1].
    eps : float, optional
        >= 0.
    channel_axis : int, optional
        1 (default) or -1 (channels-last).
    out : ndarray, optional
        Output; may be x.
    return_stats : bool, optional
        Also return the mean and rstd used, shape (N, C) (training only).
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    y : ndarray
    mean, rstd : ndarray
        Only with ``return_stats=True``.

    Raises
    ------
    TypeError, ValueError
        As :func:`fastnorm.batch_norm`; also one spatial value per instance when
        training, or inference without running statistics.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[[1.0, 3.0], [2.0, 6.0]]])
    >>> fastnorm.instance_norm(x, eps=0.0).tolist()
    [[[-1.0, 1.0], [-1.0, 1.0]]]
    """
    if training is True and running_mean is None and running_var is None:
        r = _ext.chan_fast(x, weight, bias, eps, out, -1, channel_axis, None, None, True, momentum,
                           num_threads, get_num_threads, bool(return_stats))
        if r is not None:
            return r
    func = "instance_norm"
    x, cax, C, dt, eps, nthreads, weight, bias, out = _common(
        x, weight, bias, channel_axis, eps, out, num_threads, func,
        (("running_mean", running_mean), ("running_var", running_var)))
    if x.ndim < 3:
        raise ValueError(f"{func}: x needs a spatial axis (ndim >= 3), got shape {x.shape}")
    momentum = check_momentum(momentum, func)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{func}: running_mean and running_var must be given together")
    has_running = running_mean is not None
    if has_running:
        running_mean = check_running(running_mean, C, func, "running_mean", writable=bool(training))
        running_var = check_running(running_var, C, func, "running_var", writable=bool(training))
    if not training:
        if not has_running:
            raise ValueError(f"{func}: training=False needs running_mean and running_var")
        if return_stats:
            raise ValueError(f"{func}: return_stats needs training=True")
        return batch_norm(x, weight, bias, running_mean=running_mean, running_var=running_var,
                          training=False, eps=eps, channel_axis=cax, out=out, num_threads=nthreads)
    S = x.size // (x.shape[0] * C) if x.shape[0] * C else 0
    if S == 1:
        raise ValueError(f"{func}: expected more than 1 spatial element when training, got shape {x.shape}")
    y, mean, var = _forward(x, cax, C, weight, bias, eps, out, nthreads)
    if has_running and x.size:
        m = momentum
        unbiased = var * (S / (S - 1.0))
        running_mean[...] = (1.0 - m) * running_mean + m * mean.mean(axis=0)
        running_var[...] = (1.0 - m) * running_var + m * unbiased.mean(axis=0)
    if return_stats:
        return y, mean.astype(x.dtype), _engine.inv_std(var, eps).astype(x.dtype)
    return y


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, channel_axis=1, out=None,
                        num_threads=None):
    """Gradients of :func:`fastnorm.group_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient with respect to the output, x's shape.
    x : array_like
        The forward input.
    num_groups : int
        The forward's number of groups.
    mean, rstd : array_like of shape (N, num_groups)
        What ``group_norm(..., return_stats=True)`` returned.
    weight : array_like of shape (C,), optional
        The forward weight.
    channel_axis : int, optional
        The forward's channel axis.
    out : ndarray, optional
        Where to write dx.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray of shape (C,) or None
        None when weight is None.

    Raises
    ------
    TypeError, ValueError
        Mismatched shapes, non-float arrays, bad num_groups or channel_axis.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.arange(8.0).reshape(1, 4, 2)
    >>> y, m, r = fastnorm.group_norm(x, 2, return_stats=True)
    >>> dx, dw, db = fastnorm.group_norm_backward(np.ones_like(x), x, 2, m, r, np.ones(4))
    >>> float(np.abs(dx).max()) < 1e-9, db.tolist()
    (True, [2.0, 2.0, 2.0, 2.0])
    """
    # (groups -1 would mean InstanceNorm to group_bwd_fast)
    if type(num_groups) is int and num_groups > 0:
        r = _ext.group_bwd_fast(dy, x, num_groups, mean, rstd, weight, channel_axis, out, num_threads,
                                get_num_threads)
        if r is not None:
            return r
    func = "group_norm_backward"
    x, cax, C, dt, _, nthreads, weight, _, out = _common(
        x, weight, None, channel_axis, 0.0, out, num_threads, func,
        (("dy", dy), ("mean", mean), ("rstd", rstd)), exact_ok=("dy",))
    G = _check_groups(num_groups, C, func)
    return _grouped_backward(dy, x, cax, C, G, mean, rstd, weight, out, nthreads, func)


def _grouped_backward(dy, x, cax, C, G, mean, rstd, weight, out, nthreads, func):
    dy = _grad_input(dy, x, func)
    N = x.shape[0]
    mean = _stat(mean, (N, G), func, "mean")
    rstd = _stat(rstd, (N, G), func, "rstd")
    if out is not None and (np.may_share_memory(out, x) or np.may_share_memory(out, dy)):
        # a partial overlap would feed dx into later reads of x or dy
        dx, dw, db = _grouped_backward(dy, x, cax, C, G, mean, rstd, weight, None, nthreads, func)
        out[...] = dx
        return out, dw, db
    dx = out if out is not None else _ext.new_output(x)[0]
    if x.size == 0:
        z = None if weight is None else np.zeros(C, dtype=x.dtype)
        return dx, z, (None if z is None else z.copy())
    dt = compute_dtype(x)
    xm, dym, dxm = (_channels_second(a, cax) for a in (x, dy, dx))
    dw = np.empty(C) if weight is not None else None
    db = np.empty(C) if weight is not None else None
    if x.dtype != dt:
        # float16: the kernels run in float32
        d32 = np.empty(xm.shape, dtype=dt)
        _grouped_backward_kernel(xm.astype(dt), dym, d32, G, weight, mean, rstd, dw, db, nthreads)
        dxm[...] = d32
    else:
        _grouped_backward_kernel(xm, dym, dxm, G, weight, mean, rstd, dw, db, nthreads)
    if weight is None:
        return dx, None, None
    return dx, dw.astype(x.dtype), db.astype(x.dtype)


def _grouped_backward_kernel(x, dy, dx, G, w, mean, rstd, dw, db, nthreads):
    """dx (and dw, db when not None) for (N, C, ...) arrays with channel axis 1,
    written by one engine call (after copies only when no kernel shape fits)."""
    xv, dyv, dxv = _nchw(x), _nchw(dy), _nchw(dx)
    plan = None
    if xv is not None and dyv is not None and dxv is not None and dxv.flags.aligned:
        if not _engine.same_strides(dyv, dxv):
            # the kernels read dy with dx's strides (copied in tiles: a channels-first
            # dy with the channels-last dx of a channels-last x is a transpose)
            dyv = np.empty_like(dxv)
            _ext.copy_into(dy.reshape(dxv.shape), dyv, nthreads)
            if not _engine.same_strides(dyv, dxv):
                dyv = None
        if dyv is not None:
            plan = _shape(xv, dxv, G)
    if plan is None:
        xc = np.array(x, order="C")     # a copy: fresh C strides even on size-1 axes
        dxc = np.empty_like(xc)
        _grouped_backward_kernel(xc, np.array(dy, order="C"), dxc, G, w, mean, rstd, dw, db, nthreads)
        dx[...] = dxc
        return
    kind, shape = plan
    m, r = mean.reshape(-1), rstd.reshape(-1)
    if kind == "seg":
        _ext.seg_bwd(xv, dyv, dxv, shape, w, _engine.MODE_MEANVAR, True, m, r, dw, db, nthreads)
    else:
        Cg = xv.shape[1] // G
        _ext.col_bwd(xv, dyv, dxv, shape, False, w, _engine.MODE_MEANVAR, True, m, r, dw, db, nthreads, Cg)


def instance_norm_backward(dy, x, mean, rstd, weight=None, *, training=True, channel_axis=1,
                           out=None, num_threads=None):
    """Gradients of :func:`fastnorm.instance_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient with respect to the output.
    x : array_like
        The forward input.
    mean, rstd : array_like
        ``training=True``: what ``instance_norm(..., return_stats=True)`` returned,
        shape (N, C). ``training=False``: the running mean and
        ``1 / sqrt(running_var + eps)``, shape (C,).
    weight : array_like of shape (C,), optional
        The forward weight.
    training : bool, optional
        Whether the forward used instance statistics.
    channel_axis : int, optional
        The forward's channel axis.
    out : ndarray, optional
        Where to write dx.
    num_threads : int, optional
        Threads for this call.

    Returns
    -------
    dx : ndarray
    dweight, dbias : ndarray of shape (C,) or None

    Raises
    ------
    TypeError, ValueError
        Mismatched shapes or non-float arrays.

    Examples
    --------
    >>> import numpy as np, fastnorm
    >>> x = np.array([[[1.0, 3.0], [2.0, 6.0]]])
    >>> y, m, r = fastnorm.instance_norm(x, return_stats=True)
    >>> dx, dw, db = fastnorm.instance_norm_backward(np.ones_like(x), x, m, r, np.ones(2))
    >>> float(np.abs(dx).max()) < 1e-9, db.tolist()
    (True, [2.0, 2.0])
    """
    func = "instance_norm_backward"
    if not training:
        return batch_norm_backward(dy, x, mean, rstd, weight, channel_axis=channel_axis,
                                   training=False, out=out, num_threads=num_threads)
    r = _ext.group_bwd_fast(dy, x, -1, mean, rstd, weight, channel_axis, out, num_threads, get_num_threads)
    if r is not None:
        return r
    x, cax, C, dt, _, nthreads, weight, _, out = _common(
        x, weight, None, channel_axis, 0.0, out, num_threads, func,
        (("dy", dy), ("mean", mean), ("rstd", rstd)), exact_ok=("dy",))
    return _grouped_backward(dy, x, cax, C, C, mean, rstd, weight, out, nthreads, func)
