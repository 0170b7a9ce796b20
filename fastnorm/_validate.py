"""Argument checks shared by the public functions.

Every check runs before any kernel or any write, so a call that raises leaves
`out` and running statistics untouched. Messages name the offending argument.
"""
import operator

import numpy as np

NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_input(x, func, name="x"):
    """`x` as an ndarray of a computable float dtype, else TypeError naming `name`."""
    x = np.asarray(x)
    if x.dtype in NATIVE_DTYPES:
        # the kernels read elements through typed pointers: C requires alignment
        return x if x.flags.aligned else x.copy()
    if x.dtype == np.float16:
        # float16 is computed in float32 (accumulation is float64 in any case).
        return x
    raise TypeError(f"{func}: {name} must be a float32 or float64 array, got dtype {x.dtype}")


def check_int(value, func, name, minimum):
    """`value` as a Python int >= minimum: TypeError for non-integers (bools
    included), ValueError below the minimum, each naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{func}: {name} must be an int, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{func}: {name} must be >= {minimum}, got {value}")
    return value


def compute_dtype(x):
    return np.dtype(np.float32) if x.dtype == np.float16 else x.dtype


def normalize_axes(axis, ndim, func, name="axis"):
    """Sorted tuple of non-negative axes; ValueError for out-of-range or duplicates."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"{func}: {name} must be an int or a tuple of ints, got {axis!r}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"{func}: {name}={axis!r} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{func}: {name}={axis!r} repeats an axis")
    return tuple(sorted(out))


def check_eps(eps, func):
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"{func}: eps must be a real number, got {eps!r}") from None
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"{func}: eps must be >= 0, got {eps!r}")
    return eps


def check_out(out, x, func, others=(), in_place=True, exact_ok=()):
    """Validate `out`: exact shape and dtype, writable, no overlap with the arrays
    in `others` ((name, array) pairs) except being exactly the one named in
    `exact_ok`, and, unless it is x itself with `in_place` allowed, none with x."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{func}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{func}: out has shape {out.shape}, expected x's shape {x.shape}")
    if out.dtype != x.dtype:
        raise TypeError(f"{func}: out has dtype {out.dtype}, expected x's dtype {x.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{func}: out is read-only")
    if np.may_share_memory(out, x) and not (in_place and same_memory(out, x)):
        if in_place:
            raise ValueError(f"{func}: out overlaps x without being x itself (in place needs out=x)")
        raise ValueError(f"{func}: out must not share memory with x")
    for name, a in others:
        if a is not None and isinstance(a, np.ndarray) and np.may_share_memory(out, a):
            if name in exact_ok and same_memory(out, a):
                continue
            raise ValueError(f"{func}: out must not share memory with {name}"
                             + (f" unless it is {name} itself" if name in exact_ok else ""))
    return out


def channel_axis_index(channel_axis, ndim, func):
    """The channel axis as a non-negative int; TypeError for anything but an int."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"{func}: channel_axis must be an int, got {channel_axis!r}")
    (cax,) = normalize_axes(int(channel_axis), ndim, func, "channel_axis")
    return cax


def same_memory(a, b):
    """True when a and b view exactly the same elements in the same order."""
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def check_param(p, shape, dtype, func, name):
    """An affine parameter: float array of exactly `shape`, returned contiguous in `dtype`."""
    if p is None:
        return None
    p = np.asarray(p)
    if p.dtype.kind != "f":
        raise TypeError(f"{func}: {name} must be a float array, got dtype {p.dtype}")
    if p.shape != tuple(shape):
        raise ValueError(f"{func}: {name} has shape {p.shape}, expected {tuple(shape)}")
    return np.ascontiguousarray(p, dtype=dtype)


def check_running(r, C, func, name, writable):
    """A running statistic: 1-D float ndarray of length C; writable and contiguous when updated."""
    if writable and not isinstance(r, np.ndarray):
        raise TypeError(f"{func}: {name} must be a numpy.ndarray to be updated in place, got {type(r).__name__}")
    r = np.asarray(r) if not isinstance(r, np.ndarray) else r
    if r.dtype.kind != "f":
        raise TypeError(f"{func}: {name} must be a float array, got dtype {r.dtype}")
    if r.shape != (C,):
        raise ValueError(f"{func}: {name} has shape {r.shape}, expected ({C},)")
    if writable:
        if not r.flags.writeable:
            raise ValueError(f"{func}: {name} is read-only but training updates it")
        if not r.flags.c_contiguous:
            raise ValueError(f"{func}: {name} must be contiguous to be updated in place")
    return r


def check_momentum(momentum, func):
    try:
        m = float(momentum)
    except (TypeError, ValueError):
        raise TypeError(f"{func}: momentum must be a real number, got {momentum!r}") from None
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"{func}: momentum must be in [0, 1], got {momentum!r}")
    return m


def last_axis_only(axis, x):
    """Whether `axis` names only x's last axis (-1, or its index as the layers
    pass it): the calls that the compiled row paths may take."""
    if axis == -1 or axis == (-1,):
        return True
    last = x.ndim - 1 if type(x) is np.ndarray else None
    return last is not None and type(axis) in (int, tuple) and (axis == last or axis == (last,))
