"""Independent float64 NumPy reference implementations for the fastnorm tests.

Every function here is a direct transcription of the textbook formula, computed
in float64 with NumPy only.  Nothing in this module imports or calls fastnorm,
so a bug in fastnorm cannot hide in its own oracle.

All functions return float64 arrays; the tests cast or compare as needed.
"""

import numpy as np


def _norm_axes(axis, ndim):
    """Return a sorted tuple of non-negative axes (None -> all axes)."""
    if axis is None:
        return tuple(range(ndim))
    if np.ndim(axis) == 0:
        axis = (int(axis),)
    out = []
    for a in axis:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError("axis out of range")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError("duplicate axis")
    return tuple(sorted(out))


def moments(x, axis=None, ddof=0, keepdims=False):
    """mean and variance (two-pass, float64) over ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    axes = _norm_axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum(x, axis=axes, keepdims=True) / n
        d = x - mean
        var = np.sum(d * d, axis=axes, keepdims=True) / (n - ddof)
    if not keepdims:
        mean = np.squeeze(mean, axis=axes)
        var = np.squeeze(var, axis=axes)
    return mean, var


def _param_shape_for_axes(shape, axes):
    return tuple(shape[a] for a in axes)


def _broadcast_param(p, shape, axes):
    """Reshape a parameter of shape ``shape[axes]`` so it broadcasts against x."""
    bshape = [1] * len(shape)
    for a in axes:
        bshape[a] = shape[a]
    return np.asarray(p, dtype=np.float64).reshape(bshape)


def layer_norm(x, weight=None, bias=None, axis=-1, eps=1e-5):
    """LayerNorm over ``axis`` (int or tuple); returns (y, mean, rstd).

    ``mean``/``rstd`` have the shape of x without the normalized axes.
    ``weight``/``bias`` have the shape of x at the normalized axes in
    increasing axis order.
    """
    x = np.asarray(x, dtype=np.float64)
    axes = _norm_axes(axis, x.ndim)
    mean, var = moments(x, axes, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rstd = 1.0 / np.sqrt(var + eps)
        y = (x - mean) * rstd
    if weight is not None:
        y = y * _broadcast_param(weight, x.shape, axes)
    if bias is not None:
        y = y + _broadcast_param(bias, x.shape, axes)
    return y, np.squeeze(mean, axis=axes), np.squeeze(rstd, axis=axes)


def rms_norm(x, weight=None, axis=-1, eps=None, dtype=None):
    """RMSNorm over ``axis``; returns (y, rstd).

    ``eps=None`` means ``np.finfo(dtype).eps`` where ``dtype`` defaults to
    x's dtype (PyTorch's default).
    """
    if eps is None:
        eps = float(np.finfo(dtype if dtype is not None else np.asarray(x).dtype).eps)
    x = np.asarray(x, dtype=np.float64)
    axes = _norm_axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        ms = np.sum(x * x, axis=axes, keepdims=True) / n
        rstd = 1.0 / np.sqrt(ms + eps)
        y = x * rstd
    if weight is not None:
        y = y * _broadcast_param(weight, x.shape, axes)
    return y, np.squeeze(rstd, axis=axes)


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None,
               training=None, momentum=0.1, eps=1e-5, channel_axis=1):
    """BatchNorm with PyTorch semantics.

    Returns ``(y, mean, invstd, new_running_mean, new_running_var)``.  In
    training mode ``mean``/``invstd`` are the batch statistics (biased variance)
    and the new running statistics are
    ``(1-momentum)*r + momentum*batch`` with the UNBIASED batch variance (or
    None when no running statistics were given).  In eval mode ``mean`` /
    ``invstd`` are the running mean and ``1/sqrt(running_var+eps)`` and the
    running statistics are returned unchanged.
    """
    x = np.asarray(x, dtype=np.float64)
    if training is None:
        training = running_mean is None
    ca = channel_axis % x.ndim
    C = x.shape[ca]
    red = tuple(a for a in range(x.ndim) if a != ca)
    bshape = [1] * x.ndim
    bshape[ca] = C
    new_rm = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    new_rv = None if running_var is None else np.array(running_var, dtype=np.float64)
    if training:
        n = x.size // C if C else 0
        mean, var = moments(x, red)
        with np.errstate(invalid="ignore", divide="ignore"):
            invstd = 1.0 / np.sqrt(var + eps)
        if n > 0 and new_rm is not None:
            unbiased = var * n / (n - 1)
            new_rm = (1.0 - momentum) * new_rm + momentum * mean
            new_rv = (1.0 - momentum) * new_rv + momentum * unbiased
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        invstd = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    with np.errstate(invalid="ignore"):
        y = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    if weight is not None:
        y = y * np.asarray(weight, dtype=np.float64).reshape(bshape)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape(bshape)
    return y, mean, invstd, new_rm, new_rv


def naive_layer_norm_f32(x, axis=-1, eps=1e-5):
    """The numerically UNSTABLE E[x^2]-E[x]^2 LayerNorm, all in float32.

    Used only to prove that the large-mean accuracy tests can fail.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.mean(x, axis=axis, keepdims=True, dtype=np.float32)
        m2 = np.mean(x * x, axis=axis, keepdims=True, dtype=np.float32)
        var = m2 - m * m
        return ((x - m) / np.sqrt(var + np.float32(eps))).astype(np.float32)


def naive_batch_norm_f32(x, channel_axis=1, eps=1e-5):
    """Unstable single-pass E[x^2]-E[x]^2 BatchNorm in float32 (training)."""
    x = np.asarray(x, dtype=np.float32)
    ca = channel_axis % x.ndim
    red = tuple(a for a in range(x.ndim) if a != ca)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.mean(x, axis=red, keepdims=True, dtype=np.float32)
        m2 = np.mean(x * x, axis=red, keepdims=True, dtype=np.float32)
        var = m2 - m * m
        return ((x - m) / np.sqrt(var + np.float32(eps))).astype(np.float32)


def naive_var_f32(x, axis=None):
    x = np.asarray(x, dtype=np.float32)
    m = np.mean(x, axis=axis, dtype=np.float32)
    m2 = np.mean(x * x, axis=axis, dtype=np.float32)
    return m2 - m * m


# ---------------------------------------------------------------------------
# Test utilities (no formulas): memory layouts, tolerances, snapshots.
# ---------------------------------------------------------------------------

DTYPES = (np.float32, np.float64)

#: Memory layouts every op is tested on.  All produce arrays with values equal
#: to the C-ordered source.
#: - "C": C-contiguous copy
#: - "F": Fortran-contiguous copy
#: - "strided": every axis stepped by 2 inside a NaN-filled buffer
#: - "negative": every axis reversed (negative strides), contiguous buffer
#: - "mixed": axis 0 stepped by -2, last axis by 3, others reversed/transposed
#: - "permuted": a transposed view of a contiguous buffer (e.g. NHWC memory
#:   seen as NCHW)
LAYOUTS = ("C", "F", "strided", "negative", "mixed", "permuted")


def make_layout(a, layout):
    """Return an array equal to ``a`` (same shape, dtype, values) in ``layout``.

    Buffer elements outside the view are NaN, so a kernel that reads outside
    the view produces NaN and fails the comparison.
    """
    a = np.asarray(a)
    nd = a.ndim
    if layout == "C":
        return np.ascontiguousarray(a).copy()
    if layout == "F":
        return np.array(a, order="F", copy=True)
    fill = np.nan if a.dtype.kind == "f" else 0
    if layout == "strided":
        buf = np.full(tuple(2 * s + 1 for s in a.shape), fill, dtype=a.dtype)
        v = buf[tuple(slice(1, None, 2) for _ in range(nd))]
    elif layout == "negative":
        buf = np.full(a.shape, fill, dtype=a.dtype)
        v = buf[tuple(slice(None, None, -1) for _ in range(nd))]
    elif layout == "mixed":
        steps = [-1] * nd
        if nd >= 1:
            steps[0] = -2
        if nd >= 2:
            steps[-1] = 3
        buf = np.full(tuple(abs(st) * s + 1 for st, s in zip(steps, a.shape)),
                      fill, dtype=a.dtype)
        v = buf[tuple(slice(None, None, st) for st in steps)]
        v = v[tuple(slice(0, s) for s in a.shape)]
    elif layout == "permuted":
        # buffer axes in the order (last, 0, 1, ..., last-1): the last axis of
        # the view is the outermost in memory.
        perm = (nd - 1,) + tuple(range(nd - 1)) if nd else ()
        buf = np.full(tuple(a.shape[p] for p in perm), fill, dtype=a.dtype)
        v = np.transpose(buf, np.argsort(perm))
    else:
        raise ValueError(layout)
    assert v.shape == a.shape
    v[...] = a
    assert np.array_equal(v, a, equal_nan=True)
    return v


def tol(dtype):
    """(rtol, atol) for normalized outputs of the given dtype."""
    if np.dtype(dtype) == np.float32:
        return 2e-5, 2e-5
    return 1e-10, 1e-10


def assert_close(actual, expected, dtype, scale=1.0, err_msg=""):
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=rtol, atol=atol * scale, err_msg=err_msg)


def assert_same_results(got, *expected):
    """Each tuple in `expected` holds what `got` holds, element by element: None
    where it has None, else arrays of the same dtype, shape and bits."""
    for exp in expected:
        assert len(got) == len(exp)
        for a, e in zip(got, exp):
            if e is None:
                assert a is None
                continue
            assert a.dtype == e.dtype and a.shape == e.shape
            np.testing.assert_array_equal(a, e)


def snapshot(*arrays):
    """Byte copies (plus the underlying buffer when a view) for 'unchanged' checks."""
    return [None if a is None else bytes(np.ascontiguousarray(a).tobytes()) for a in arrays]


SENTINEL = -777.0


def guarded_out(shape, dtype):
    """A writable strided ``out`` view inside a sentinel-filled buffer.

    Returns ``(view, check)``; ``check()`` asserts that no element of the
    buffer outside the view was written.
    """
    nd = len(shape)
    buf = np.full(tuple(2 * s + 1 for s in shape), SENTINEL, dtype=dtype)
    sl = tuple(slice(1, None, 2) for _ in range(nd))
    view = buf[sl]
    mask = np.zeros(buf.shape, dtype=bool)
    mask[sl] = True

    def check():
        outside = buf[~mask]
        assert np.all(outside == SENTINEL), "fastnorm wrote outside the out= view"

    return view, check


def make_out(x, mode):
    """An ``out`` argument for ``x`` per ``mode``.

    mode: None (no out), "C", "F", "guarded" (strided in a sentinel buffer),
    "inplace" (out is x itself).  Returns ``(out, check)`` where check() verifies
    the guard (no-op for other modes).
    """
    if mode is None:
        return None, lambda: None
    if mode == "C":
        return np.full(x.shape, SENTINEL, dtype=x.dtype), lambda: None
    if mode == "F":
        return np.full(x.shape, SENTINEL, dtype=x.dtype, order="F"), lambda: None
    if mode == "guarded":
        return guarded_out(x.shape, x.dtype)
    if mode == "inplace":
        return x, lambda: None
    raise ValueError(mode)


OUT_MODES = (None, "C", "F", "guarded", "inplace")


def unaligned_copy(a):
    """A copy of ``a`` whose data pointer is not aligned to its itemsize."""
    a = np.ascontiguousarray(a)
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    u = np.ndarray(a.shape, dtype=a.dtype, buffer=buf, offset=1)
    u[...] = a
    assert not u.flags.aligned or a.size == 0
    return u
