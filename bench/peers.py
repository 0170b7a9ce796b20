"""Benchmark cases, inputs and peer implementations for the fastnorm bench suite.

A *case* (:class:`Case`) names one operation on one input: the op, the shape,
the dtype and the memory layout.  :func:`make_inputs` builds reproducible
inputs for it.  A *peer* (:class:`Peer` subclasses) turns a case into a
zero-argument callable that runs the operation once, for a given thread
count and variant:

``"alloc"``
    the implementation allocates its output (``y = f(x)``);
``"out"``
    the implementation writes into a preallocated output buffer
    (only peers that can do that: fastnorm, numba, ONNX Runtime via
    IO binding, and the copy reference).

Each peer implements one ``op_<name>(case, inp, threads, out)`` method per
operation it supports; a missing method means "unsupported" and the
benchmark is skipped.  Adding an operation (group_norm, instance_norm,
add_layer_norm, backward passes...) means adding a :class:`Case` with a new
``op`` string, the inputs it needs in :func:`make_inputs`, and an
``op_<name>`` method on each peer that can run it.

Peers are imported lazily and only when importable; :func:`available_peers`
lists them, :func:`peer_status` says why one is missing.

This module is part of the benchmark suite only: nothing in the ``fastnorm``
package imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Case",
    "make_inputs",
    "Peer",
    "PEERS",
    "get_peer",
    "available_peers",
    "peer_status",
    "usable_cores",
    "reference_head",
    "head_error",
    "tolerance",
]


def usable_cores():
    """Return the number of CPU cores this process may run on.

    Returns
    -------
    int
        ``len(os.sched_getaffinity(0))`` where available, else ``os.cpu_count()``.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------
# Cases and inputs
# --------------------------------------------------------------------------

#: Arrays of x's size an ideal kernel reads + writes, per op (default 2).
IO_FACTOR = {"add_layer_norm": 4, "layer_norm_backward": 3, "batch_norm_backward": 3,
             "group_norm_backward": 3}


@dataclass(frozen=True)
class Case:
    """One benchmark case: an operation applied to one input.

    Parameters
    ----------
    name : str
        Human-readable name, used as the pytest-benchmark group.
    op : str
        Operation: ``"layer_norm"``, ``"rms_norm"``, ``"batch_norm_train"``,
        ``"batch_norm_eval"``, ``"group_norm"``.
    shape : tuple of int
        Shape of ``x`` as stored in memory (NHWC cases are stored
        ``(N, H, W, C)``).
    dtype : str, optional
        ``"float32"`` (default) or ``"float64"``.
    layout : str, optional
        ``"rows"`` (normalize the last axis), ``"NCHW"``, ``"NHWC"`` or
        ``"NC"`` (2-D table, one channel per column).
    groups : int, optional
        Number of groups (group_norm only).
    eps : float, optional
        Epsilon added to the variance.
    id : str, optional
        Short identifier used in pytest ids; derived from the other fields
        when empty.

    Examples
    --------
    >>> c = Case("LayerNorm (8, 16)", "layer_norm", (8, 16))
    >>> c.io_bytes
    1024
    """

    name: str
    op: str
    shape: tuple
    dtype: str = "float32"
    layout: str = "rows"
    groups: int = 0
    eps: float = 1e-5
    id: str = field(default="")

    def __post_init__(self):
        if not self.id:
            short = {"layer_norm": "ln", "rms_norm": "rms",
                     "batch_norm_train": "bntrain", "batch_norm_eval": "bneval",
                     "group_norm": "gn", "instance_norm": "in", "add_layer_norm": "addln",
                     "layer_norm_backward": "lnbwd",
                     "batch_norm_backward": "bnbwd", "group_norm_backward": "gnbwd"}.get(self.op, self.op)
            dims = "x".join(str(s) for s in self.shape)
            dt = "f32" if self.dtype == "float32" else "f64"
            lay = "" if self.layout == "rows" else "_" + self.layout.lower()
            object.__setattr__(self, "id", f"{short}{lay}_{dims}_{dt}")

    @property
    def itemsize(self):
        """int: bytes per element."""
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self):
        """int: size of ``x`` in bytes."""
        return int(np.prod(self.shape)) * self.itemsize

    @property
    def io_bytes(self):
        """int: bytes moved by an ideal kernel: read each input once, write each output once.

        ``2 * x.nbytes`` (read x, write y) for forward ops; add+norm reads x and
        the residual and writes y and the sum; a backward reads dy and x and
        writes dx.
        """
        return IO_FACTOR.get(self.op, 2) * self.nbytes

    @property
    def channel_axis(self):
        """int: the channel axis for BatchNorm/GroupNorm cases."""
        return -1 if self.layout == "NHWC" else 1

    @property
    def channels(self):
        """int: number of channels (BatchNorm/GroupNorm) or the row length."""
        if self.layout == "rows":
            return self.shape[-1]
        return self.shape[self.channel_axis]

    def as_dict(self):
        """Return the case as a JSON-serialisable dict (for ``extra_info``).

        Returns
        -------
        dict
        """
        return {"case": self.name, "case_id": self.id, "op": self.op,
                "shape": list(self.shape), "dtype": self.dtype,
                "layout": self.layout, "groups": self.groups,
                "nbytes": self.nbytes, "io_bytes": self.io_bytes}


def make_inputs(case, seed=0):
    """Build reproducible inputs for a case.

    Parameters
    ----------
    case : Case
        The case.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    dict
        ``x`` (C-contiguous, ``case.dtype``), ``weight`` and ``bias`` (shape
        of the normalized slice for row ops, ``(C,)`` otherwise) and, for
        BatchNorm, ``running_mean`` and ``running_var`` of shape ``(C,)``.

    Examples
    --------
    >>> inp = make_inputs(Case("t", "layer_norm", (4, 8)))
    >>> inp["x"].shape, inp["weight"].shape
    ((4, 8), (8,))
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(case.dtype)
    x = rng.standard_normal(case.shape, dtype=np.float32 if dt == np.float32 else np.float64)
    x *= 2.0
    x += 0.5
    x = np.ascontiguousarray(x, dtype=dt)
    c = case.channels
    inp = {"x": x,
           "weight": (1.0 + 0.1 * rng.standard_normal(c)).astype(dt),
           "bias": (0.1 * rng.standard_normal(c)).astype(dt)}
    if case.op in ("add_layer_norm",) or case.op.endswith("_backward"):
        other = rng.standard_normal(case.shape, dtype=np.float32 if dt == np.float32
                                    else np.float64).astype(dt)
        inp["residual" if case.op == "add_layer_norm" else "dy"] = other
    if case.op.startswith("batch_norm"):
        inp["running_mean"] = (0.5 + 0.1 * rng.standard_normal(c)).astype(dt)
        inp["running_var"] = (4.0 + rng.random(c)).astype(dt)
    return inp


def _bn_axes(case):
    """Axes reduced over by BatchNorm for this case (all but the channel axis)."""
    nd = len(case.shape)
    ca = case.channel_axis % nd
    return tuple(a for a in range(nd) if a != ca)


def _bcast(v, case):
    """Reshape a per-channel vector so it broadcasts against ``x``."""
    nd = len(case.shape)
    shape = [1] * nd
    shape[case.channel_axis % nd] = -1
    return v.reshape(shape)


# --------------------------------------------------------------------------
# Peer base class
# --------------------------------------------------------------------------

class Peer:
    """Base class of a benchmark peer.

    Subclasses set :attr:`name`, :attr:`variants` and :attr:`threads`, override
    :meth:`_import` and implement ``op_<op>(case, inp, threads, out)``
    returning a zero-argument callable (or ``None`` when the case is not
    supported).  ``out`` is a preallocated output for the ``"out"`` variant
    and ``None`` for ``"alloc"``.
    """

    #: Name used in pytest ids and report columns.
    name = "peer"
    #: Human-readable label for reports.
    label = "peer"
    #: Variants this peer can run.
    variants = ("alloc",)
    #: Thread counts this peer is meaningful at (None: every requested count).
    threads = None

    def __init__(self):
        self._checked = False
        self._ok = False
        self._why = ""

    def available(self):
        """Return True when the peer's library is importable.

        Returns
        -------
        bool
        """
        if not self._checked:
            self._checked = True
            try:
                self._import()
                self._ok = True
            except Exception as exc:  # ImportError, broken installs, ...
                self._ok = False
                self._why = f"{type(exc).__name__}: {exc}"
        return self._ok

    def why_unavailable(self):
        """Return the reason the peer is unavailable ('' when available).

        Returns
        -------
        str
        """
        self.available()
        return self._why

    def _import(self):
        """Import the peer's library; raise when it is not usable."""

    def version(self):
        """Return the version string of the peer's library.

        Returns
        -------
        str
        """
        return ""

    def supports(self, case, variant):
        """Return True when the peer implements ``case.op`` for ``variant``.

        Parameters
        ----------
        case : Case
        variant : str

        Returns
        -------
        bool
        """
        return variant in self.variants and hasattr(self, "op_" + case.op)

    def make(self, case, inp, threads, variant):
        """Return a zero-argument callable running the case once.

        Parameters
        ----------
        case : Case
            The case.
        inp : dict
            Inputs from :func:`make_inputs`.
        threads : int
            Thread count to run with.
        variant : {"alloc", "out"}
            Whether the callable allocates its output or writes to a buffer.

        Returns
        -------
        callable or None
            ``None`` when the peer cannot run this case.
        """
        if not self.available() or not self.supports(case, variant):
            return None
        out = np.empty_like(inp["x"]) if variant == "out" else None
        if out is not None:
            out.fill(0)  # first-touch outside the timed region
        fn = getattr(self, "op_" + case.op)(case, inp, threads, out)
        if out is not None and fn is not None:
            # the copy reference of the same rounds writes here too (see CopyPeer)
            try:
                fn.out_buffer = out
            except AttributeError:  # a callable without attributes: the copy takes its own
                pass
        return fn

    def release(self):
        """Drop cached per-case state (sessions, buffers)."""


# --------------------------------------------------------------------------
# fastnorm itself
# --------------------------------------------------------------------------

class FastnormPeer(Peer):
    """fastnorm, the library under test (``num_threads=`` per call)."""

    name = "fastnorm"
    label = "fastnorm"
    variants = ("alloc", "out")

    def _import(self):
        import fastnorm
        self.fn = fastnorm

    def version(self):
        return getattr(self.fn, "__version__", "")

    def supports(self, case, variant):
        if not super().supports(case, variant):
            return False
        needed = {"batch_norm_train": "batch_norm", "batch_norm_eval": "batch_norm"}
        if case.op.endswith("_backward") and not hasattr(self.fn, case.op.replace(
                "_backward", "")):
            return False
        return hasattr(self.fn, needed.get(case.op, case.op))

    def op_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``layer_norm`` on ``case`` (``out``: buffer or None)."""
        f, x, w, b, eps = self.fn.layer_norm, inp["x"], inp["weight"], inp["bias"], case.eps
        if out is None:
            return lambda: f(x, w, b, eps=eps, num_threads=threads)
        return lambda: f(x, w, b, eps=eps, out=out, num_threads=threads)

    def op_rms_norm(self, case, inp, threads, out):
        """Return a callable running ``rms_norm`` on ``case`` (``out``: buffer or None)."""
        f, x, w, eps = self.fn.rms_norm, inp["x"], inp["weight"], case.eps
        if out is None:
            return lambda: f(x, w, eps=eps, num_threads=threads)
        return lambda: f(x, w, eps=eps, out=out, num_threads=threads)

    def _bn(self, case, inp, threads, out, training):
        f, x, w, b = self.fn.batch_norm, inp["x"], inp["weight"], inp["bias"]
        rm, rv, eps, ca = inp["running_mean"], inp["running_var"], case.eps, case.channel_axis
        if training:
            # work on copies so eval cases keep sensible running statistics
            rm, rv = rm.copy(), rv.copy()
        kw = dict(running_mean=rm, running_var=rv, training=training, momentum=0.1,
                  eps=eps, channel_axis=ca, num_threads=threads)
        if out is not None:
            kw["out"] = out
        return lambda: f(x, w, b, **kw)

    def op_batch_norm_train(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_train`` on ``case`` (``out``: buffer or None)."""
        return self._bn(case, inp, threads, out, True)

    def op_batch_norm_eval(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_eval`` on ``case`` (``out``: buffer or None)."""
        return self._bn(case, inp, threads, out, False)

    def _kw_out(self, f, kw, out):
        import inspect
        if out is not None:
            if "out" not in inspect.signature(f).parameters:
                return None
            kw["out"] = out
        return kw

    def op_instance_norm(self, case, inp, threads, out):
        """Return a callable running ``instance_norm`` on ``case`` (``out``: buffer or None)."""
        f, x = self.fn.instance_norm, inp["x"]
        kw = self._kw_out(f, dict(eps=case.eps, channel_axis=case.channel_axis,
                                  num_threads=threads), out)
        w, b = inp["weight"], inp["bias"]
        return None if kw is None else (lambda: f(x, w, b, **kw))

    def op_add_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``add_layer_norm`` on ``case`` (``out``: buffer or None)."""
        f, x, r, w, b = self.fn.add_layer_norm, inp["x"], inp["residual"], inp["weight"], inp["bias"]
        kw = dict(eps=case.eps, num_threads=threads)
        if out is not None:
            kw.update(out=out, residual_out=np.zeros_like(x))
        return lambda: f(x, r, w, b, **kw)

    def op_layer_norm_backward(self, case, inp, threads, out):
        """Return a callable running ``layer_norm_backward`` (``out``: dx buffer or None)."""
        x, w, b, dy = inp["x"], inp["weight"], inp["bias"], inp["dy"]
        _, m, r = self.fn.layer_norm(x, w, b, eps=case.eps, return_stats=True)
        f = self.fn.layer_norm_backward
        kw = self._kw_out(f, dict(num_threads=threads), out)
        return None if kw is None else (lambda: f(dy, x, m, r, w, **kw))

    def op_batch_norm_backward(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_backward`` (``out``: dx buffer or None)."""
        x, w, b, dy, ca = inp["x"], inp["weight"], inp["bias"], inp["dy"], case.channel_axis
        _, m, r = self.fn.batch_norm(x, w, b, eps=case.eps, channel_axis=ca, return_stats=True)
        f = self.fn.batch_norm_backward
        kw = self._kw_out(f, dict(channel_axis=ca, num_threads=threads), out)
        return None if kw is None else (lambda: f(dy, x, m, r, w, **kw))

    def op_group_norm_backward(self, case, inp, threads, out):
        """Return a callable running ``group_norm_backward`` (``out``: dx buffer or None)."""
        x, w, b, dy, ca, g = inp["x"], inp["weight"], inp["bias"], inp["dy"], case.channel_axis, case.groups
        if not hasattr(self.fn, "group_norm_backward"):
            return None
        _, m, r = self.fn.group_norm(x, g, w, b, eps=case.eps, channel_axis=ca, return_stats=True)
        f = self.fn.group_norm_backward
        kw = self._kw_out(f, dict(channel_axis=ca, num_threads=threads), out)
        return None if kw is None else (lambda: f(dy, x, g, m, r, w, **kw))

    def op_group_norm(self, case, inp, threads, out):  # API from a later issue
        """Return a callable running ``group_norm`` on ``case`` (``out``: buffer or None)."""
        import inspect
        f = self.fn.group_norm
        params = inspect.signature(f).parameters
        gname = next((n for n in ("num_groups", "groups") if n in params), None)
        if gname is None:
            return None
        kw = {gname: case.groups, "weight": inp["weight"], "bias": inp["bias"],
              "eps": case.eps, "num_threads": threads}
        if "channel_axis" in params:
            kw["channel_axis"] = case.channel_axis
        if out is not None:
            kw["out"] = out
        x = inp["x"]
        return lambda: f(x, **kw)


# --------------------------------------------------------------------------
# Copy-bandwidth reference
# --------------------------------------------------------------------------

class CopyPeer(Peer):
    """Copy of the same bytes: the physical limit of an op that reads x once.

    ``"out"``: ``fastnorm._ext.omp_copy`` into a preallocated array (the
    reference for ``out=``).  ``"alloc"``: ``np.empty`` + ``omp_copy`` (the
    reference for allocating variants, first-touch page faults included).

    ``make(..., out=buffer)`` copies into ``buffer``: the op's own ``out=``
    array, for the ratio taken in the same rounds. On the 2-core KVM guests
    the same copy ran up to 11 % faster or slower from one pair of 32 MiB
    arrays to another (a pair's speed also changed with the thread count), so
    a copy into an array of its own measured that array's pages as much as
    the op.
    """

    name = "copy"
    label = "copy"
    variants = ("alloc", "out")

    def _import(self):
        from fastnorm import _ext
        self.omp_copy = _ext.omp_copy

    def supports(self, case, variant):
        return variant in self.variants and self.available()

    def make(self, case, inp, threads, variant, out=None):
        if not self.available():
            return None
        x, cp = inp["x"], self.omp_copy
        if variant == "out":
            if out is None:
                out = np.empty_like(x)
                out.fill(0)

            def out_copy():
                cp(x, out, threads)
                return out
            return out_copy

        def alloc_copy():
            y = np.empty_like(x)
            cp(x, y, threads)
            return y
        return alloc_copy


# --------------------------------------------------------------------------
# NumPy float formula
# --------------------------------------------------------------------------

class NumpyPeer(Peer):
    """The textbook NumPy formula in x's dtype (single-threaded)."""

    name = "numpy"
    label = "NumPy"
    threads = (1,)

    def _import(self):
        import numpy
        self.np = numpy

    def version(self):
        return np.__version__

    def op_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``layer_norm`` on ``case`` (``out``: buffer or None)."""
        x, w, b = inp["x"], inp["weight"], inp["bias"]
        eps = x.dtype.type(case.eps)

        def f():
            m = x.mean(-1, keepdims=True)
            v = x.var(-1, keepdims=True)
            return (x - m) / np.sqrt(v + eps) * w + b
        return f

    def op_rms_norm(self, case, inp, threads, out):
        """Return a callable running ``rms_norm`` on ``case`` (``out``: buffer or None)."""
        x, w = inp["x"], inp["weight"]
        eps = x.dtype.type(case.eps)

        def f():
            return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w
        return f

    def op_batch_norm_train(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_train`` on ``case`` (``out``: buffer or None)."""
        x = inp["x"]
        w, b = _bcast(inp["weight"], case), _bcast(inp["bias"], case)
        rm, rv = inp["running_mean"].copy(), inp["running_var"].copy()
        axes = _bn_axes(case)
        n = x.size // case.channels
        eps = x.dtype.type(case.eps)

        def f():
            m = x.mean(axes, keepdims=True)
            v = x.var(axes, keepdims=True)
            y = (x - m) / np.sqrt(v + eps) * w + b
            rm[...] = 0.9 * rm + 0.1 * m.reshape(-1)
            rv[...] = 0.9 * rv + 0.1 * v.reshape(-1) * (n / (n - 1))
            return y
        return f

    def op_batch_norm_eval(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_eval`` on ``case`` (``out``: buffer or None)."""
        x = inp["x"]
        w, b = _bcast(inp["weight"], case), _bcast(inp["bias"], case)
        rm, rv = _bcast(inp["running_mean"], case), _bcast(inp["running_var"], case)
        eps = x.dtype.type(case.eps)

        def f():
            return (x - rm) / np.sqrt(rv + eps) * w + b
        return f

    def op_instance_norm(self, case, inp, threads, out):
        """Return a callable running ``instance_norm`` on ``case`` (``out``: buffer or None)."""
        x = inp["x"]
        w, b = _bcast(inp["weight"], case), _bcast(inp["bias"], case)
        ca = case.channel_axis % x.ndim
        axes = tuple(a for a in range(1, x.ndim) if a != ca)
        eps = x.dtype.type(case.eps)
        return lambda: ((x - x.mean(axes, keepdims=True))
                        / np.sqrt(x.var(axes, keepdims=True) + eps) * w + b)

    def op_add_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``add_layer_norm`` on ``case`` (``out``: buffer or None)."""
        x, r, w, b = inp["x"], inp["residual"], inp["weight"], inp["bias"]
        eps = x.dtype.type(case.eps)

        def f():
            s = x + r
            return (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + eps) \
                * w + b, s
        return f

    def op_layer_norm_backward(self, case, inp, threads, out):
        """Return a callable running ``layer_norm_backward`` (``out``: dx buffer or None)."""
        x, w, dy = inp["x"], inp["weight"], inp["dy"]
        m = x.mean(-1, keepdims=True)
        r = 1 / np.sqrt(x.var(-1, keepdims=True) + x.dtype.type(case.eps))

        def f():
            xh = (x - m) * r
            g = dy * w
            dx = r * (g - g.mean(-1, keepdims=True) - xh * (g * xh).mean(-1, keepdims=True))
            return dx, (dy * xh).sum(0), dy.sum(0)
        return f

    def op_batch_norm_backward(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_backward`` (``out``: dx buffer or None)."""
        x, dy = inp["x"], inp["dy"]
        w = _bcast(inp["weight"], case)
        axes = _bn_axes(case)
        m = x.mean(axes, keepdims=True)
        r = 1 / np.sqrt(x.var(axes, keepdims=True) + x.dtype.type(case.eps))

        def f():
            xh = (x - m) * r
            g = dy * w
            dx = r * (g - g.mean(axes, keepdims=True)
                      - xh * (g * xh).mean(axes, keepdims=True))
            return dx, (dy * xh).sum(axes), dy.sum(axes)
        return f

    def op_group_norm(self, case, inp, threads, out):
        """Return a callable running ``group_norm`` on ``case`` (``out``: buffer or None)."""
        x, g = inp["x"], case.groups
        w, b = _bcast(inp["weight"], case), _bcast(inp["bias"], case)
        eps = x.dtype.type(case.eps)
        n = x.shape[0]

        if case.layout == "NHWC":
            c = x.shape[-1]

            def f():
                xg = x.reshape(n, -1, g, c // g)
                m = xg.mean((1, 3), keepdims=True)
                v = xg.var((1, 3), keepdims=True)
                return ((xg - m) / np.sqrt(v + eps)).reshape(x.shape) * w + b
            return f

        def f():
            xg = x.reshape(n, g, -1)
            m = xg.mean(-1, keepdims=True)
            v = xg.var(-1, keepdims=True)
            return ((xg - m) / np.sqrt(v + eps)).reshape(x.shape) * w + b
        return f


# --------------------------------------------------------------------------
# PyTorch CPU
# --------------------------------------------------------------------------

class TorchPeer(Peer):
    """PyTorch CPU ``torch.nn.functional`` (zero-copy ``torch.from_numpy``)."""

    name = "torch"
    label = "PyTorch"

    def _import(self):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F

    def version(self):
        return self.torch.__version__

    def _t(self, a):
        return self.torch.from_numpy(a)

    def _x(self, case, inp):
        t = self._t(inp["x"])
        if case.layout == "NHWC":  # channels_last NCHW view, as PyTorch users hold it
            t = t.permute(0, 3, 1, 2)
        return t

    def make(self, case, inp, threads, variant):
        if not self.available() or not self.supports(case, variant):
            return None
        self.torch.set_num_threads(threads)
        return getattr(self, "op_" + case.op)(case, inp, threads, None)

    def op_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``layer_norm`` on ``case`` (``out``: buffer or None)."""
        F, x, w, b = self.F, self._t(inp["x"]), self._t(inp["weight"]), self._t(inp["bias"])
        shape, eps = (case.shape[-1],), case.eps
        return lambda: F.layer_norm(x, shape, w, b, eps)

    def op_rms_norm(self, case, inp, threads, out):
        """Return a callable running ``rms_norm`` on ``case`` (``out``: buffer or None)."""
        if not hasattr(self.F, "rms_norm"):
            return None
        F, x, w = self.F, self._t(inp["x"]), self._t(inp["weight"])
        shape, eps = (case.shape[-1],), case.eps
        return lambda: F.rms_norm(x, shape, w, eps)

    def _bn(self, case, inp, training):
        F, x = self.F, self._x(case, inp)
        w, b = self._t(inp["weight"]), self._t(inp["bias"])
        rm = self._t(inp["running_mean"].copy() if training else inp["running_mean"])
        rv = self._t(inp["running_var"].copy() if training else inp["running_var"])
        eps = case.eps
        return lambda: F.batch_norm(x, rm, rv, w, b, training, 0.1, eps)

    def op_batch_norm_train(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_train`` on ``case`` (``out``: buffer or None)."""
        return self._bn(case, inp, True)

    def op_batch_norm_eval(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_eval`` on ``case`` (``out``: buffer or None)."""
        return self._bn(case, inp, False)

    def op_instance_norm(self, case, inp, threads, out):
        """Return a callable running ``instance_norm`` on ``case`` (``out``: buffer or None)."""
        F, x = self.F, self._x(case, inp)
        w, b, eps = self._t(inp["weight"]), self._t(inp["bias"]), case.eps
        return lambda: F.instance_norm(x, weight=w, bias=b, eps=eps)

    def op_add_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``add_layer_norm`` on ``case`` (``out``: buffer or None)."""
        F, x, r = self.F, self._t(inp["x"]), self._t(inp["residual"])
        w, b, shape, eps = self._t(inp["weight"]), self._t(inp["bias"]), (case.shape[-1],), case.eps

        def f():
            s = x + r
            return F.layer_norm(s, shape, w, b, eps), s
        return f

    def _grad(self, fwd, case, inp):
        torch = self.torch
        x = self._x(case, inp).detach().requires_grad_(True)
        w = self._t(inp["weight"].copy()).requires_grad_(True)
        b = self._t(inp["bias"].copy()).requires_grad_(True)
        dy = self._t(inp["dy"])
        if case.layout == "NHWC":
            dy = dy.permute(0, 3, 1, 2)
        y = fwd(x, w, b)
        return lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)

    def op_layer_norm_backward(self, case, inp, threads, out):
        """Return a callable running autograd of ``layer_norm`` (backward only)."""
        F, shape, eps = self.F, (case.shape[-1],), case.eps
        return self._grad(lambda x, w, b: F.layer_norm(x, shape, w, b, eps), case, inp)

    def op_batch_norm_backward(self, case, inp, threads, out):
        """Return a callable running autograd of training ``batch_norm`` (backward only)."""
        F, eps = self.F, case.eps
        return self._grad(lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, eps),
                          case, inp)

    def op_group_norm_backward(self, case, inp, threads, out):
        """Return a callable running autograd of ``group_norm`` (backward only)."""
        F, g, eps = self.F, case.groups, case.eps
        return self._grad(lambda x, w, b: F.group_norm(x, g, w, b, eps), case, inp)

    def op_group_norm(self, case, inp, threads, out):
        """Return a callable running ``group_norm`` on ``case`` (``out``: buffer or None)."""
        F, x = self.F, self._x(case, inp)
        w, b, g, eps = self._t(inp["weight"]), self._t(inp["bias"]), case.groups, case.eps
        return lambda: F.group_norm(x, g, w, b, eps)


# --------------------------------------------------------------------------
# ONNX Runtime (single-node models)
# --------------------------------------------------------------------------

class OrtPeer(Peer):
    """ONNX Runtime CPU: single-node models built with ``onnx.helper``.

    ``"alloc"`` is ``session.run`` (ORT allocates the output); ``"out"`` binds
    a preallocated NumPy buffer as the output with IO binding.  NHWC
    BatchNorm has no single-node form in ONNX, so it is
    Transpose -> BatchNormalization -> Transpose, as users would export it.
    RMSNorm uses ``RMSNormalization`` (opset 23) when the runtime knows it,
    else ORT's contrib ``SimplifiedLayerNormalization``.
    """

    name = "ort"
    label = "ONNX Runtime"
    variants = ("alloc", "out")

    def __init__(self):
        super().__init__()
        self._sessions = {}

    def _import(self):
        import onnx
        import onnxruntime
        from onnx import helper, numpy_helper, TensorProto
        self.onnx, self.ort = onnx, onnxruntime
        self.helper, self.numpy_helper, self.TP = helper, numpy_helper, TensorProto

    def version(self):
        return self.ort.__version__

    def release(self):
        self._sessions.clear()

    # -- model building -------------------------------------------------
    def _elem(self, dtype):
        return self.TP.DOUBLE if np.dtype(dtype) == np.float64 else self.TP.FLOAT

    def _session(self, key, nodes, inits, case, threads, extra_outputs=(), opset=17,
                 extra_opsets=()):
        skey = (key, threads)
        if skey in self._sessions:
            return self._sessions[skey]
        h = self.helper
        et = self._elem(case.dtype)
        X = h.make_tensor_value_info("X", et, list(case.shape))
        outs = [h.make_tensor_value_info("Y", et, list(case.shape))]
        outs += [h.make_tensor_value_info(n, et, None) for n in extra_outputs]
        graph = h.make_graph(nodes, key, [X], outs,
                             [self.numpy_helper.from_array(a, n) for n, a in inits])
        opsets = [h.make_opsetid("", opset)] + [h.make_opsetid(d, v) for d, v in extra_opsets]
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        last = None
        for ir in (11, 10, 9, 8):
            model = h.make_model(graph, opset_imports=opsets, ir_version=ir)
            try:
                sess = self.ort.InferenceSession(model.SerializeToString(), so,
                                                 providers=["CPUExecutionProvider"])
                break
            except Exception as exc:
                last = exc
        else:
            raise RuntimeError(f"ONNX Runtime rejected the {key} model: {last}")
        self._sessions[skey] = sess
        return sess

    def _runner(self, sess, case, inp, out):
        x = inp["x"]
        if out is None:
            feed = {"X": x}
            return lambda: sess.run(["Y"], feed)[0]
        io = sess.io_binding()
        io.bind_cpu_input("X", x)
        io.bind_output("Y", "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
        for o in sess.get_outputs()[1:]:
            io.bind_output(o.name, "cpu")
        return lambda: (sess.run_with_iobinding(io), out)[1]

    def _node(self, *args, **kw):
        return self.helper.make_node(*args, **kw)

    # -- ops -------------------------------------------------------------
    def op_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``layer_norm`` on ``case`` (``out``: buffer or None)."""
        node = self._node("LayerNormalization", ["X", "W", "B"], ["Y"], axis=-1,
                          epsilon=case.eps)
        sess = self._session(case.id, [node], [("W", inp["weight"]), ("B", inp["bias"])],
                             case, threads, opset=17)
        return self._runner(sess, case, inp, out)

    def op_rms_norm(self, case, inp, threads, out):
        """Return a callable running ``rms_norm`` on ``case`` (``out``: buffer or None)."""
        w = [("W", inp["weight"])]
        try:
            node = self._node("RMSNormalization", ["X", "W"], ["Y"], axis=-1, epsilon=case.eps)
            sess = self._session(case.id, [node], w, case, threads, opset=23)
        except Exception:
            node = self._node("SimplifiedLayerNormalization", ["X", "W"], ["Y"], axis=-1,
                              epsilon=case.eps)
            sess = self._session(case.id, [node], w, case, threads, opset=17)
        return self._runner(sess, case, inp, out)

    def _bn(self, case, inp, threads, out, training):
        inits = [("W", inp["weight"]), ("B", inp["bias"]),
                 ("M", inp["running_mean"]), ("V", inp["running_var"])]
        attrs = dict(epsilon=case.eps, momentum=0.9)  # ONNX momentum = 1 - PyTorch's
        outs = ["Ybn"] if case.layout == "NHWC" else ["Y"]
        extra = ()
        if training:
            attrs["training_mode"] = 1
            outs += ["RM", "RV"]
            extra = ("RM", "RV")
        nodes = []
        src = "X"
        if case.layout == "NHWC":
            nodes.append(self._node("Transpose", ["X"], ["Xt"], perm=[0, 3, 1, 2]))
            src = "Xt"
        nodes.append(self._node("BatchNormalization", [src, "W", "B", "M", "V"], outs, **attrs))
        if case.layout == "NHWC":
            nodes.append(self._node("Transpose", ["Ybn"], ["Y"], perm=[0, 2, 3, 1]))
        sess = self._session(case.id, nodes, inits, case, threads, extra_outputs=extra,
                             opset=15)
        return self._runner(sess, case, inp, out)

    def op_batch_norm_train(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_train`` on ``case`` (``out``: buffer or None)."""
        return self._bn(case, inp, threads, out, True)

    def op_batch_norm_eval(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_eval`` on ``case`` (``out``: buffer or None)."""
        return self._bn(case, inp, threads, out, False)

    def op_instance_norm(self, case, inp, threads, out):
        """Return a callable running ``instance_norm`` on ``case`` (``out``: buffer or None)."""
        if case.layout == "NHWC":
            return None
        node = self._node("InstanceNormalization", ["X", "W", "B"], ["Y"], epsilon=case.eps)
        sess = self._session(case.id, [node], [("W", inp["weight"]), ("B", inp["bias"])],
                             case, threads, opset=17)
        return self._runner(sess, case, inp, out)

    def op_group_norm(self, case, inp, threads, out):
        """Return a callable running ``group_norm`` on ``case`` (``out``: buffer or None)."""
        if case.layout == "NHWC":
            return None
        node = self._node("GroupNormalization", ["X", "W", "B"], ["Y"],
                          num_groups=case.groups, epsilon=case.eps)
        sess = self._session(case.id, [node], [("W", inp["weight"]), ("B", inp["bias"])],
                             case, threads, opset=21)
        return self._runner(sess, case, inp, out)


# --------------------------------------------------------------------------
# Hand-written numba kernels
# --------------------------------------------------------------------------

_NB = {}


def _numba_kernels():
    """Compile (lazily, cached on disk) the hand-written numba kernels."""
    if _NB:
        return _NB
    import numba
    from numba import njit, prange

    opts = dict(parallel=True, fastmath=True, cache=True, nogil=True)

    @njit(**opts)
    def layer_norm_rows(x, w, b, eps, y):
        n, d = x.shape
        for i in prange(n):
            s = 0.0
            for j in range(d):
                s += x[i, j]
            m = s / d
            v = 0.0
            for j in range(d):
                t = x[i, j] - m
                v += t * t
            r = 1.0 / np.sqrt(v / d + eps)
            for j in range(d):
                y[i, j] = (x[i, j] - m) * r * w[j] + b[j]
        return y

    @njit(**opts)
    def rms_norm_rows(x, w, eps, y):
        n, d = x.shape
        for i in prange(n):
            s = 0.0
            for j in range(d):
                s += x[i, j] * x[i, j]
            r = 1.0 / np.sqrt(s / d + eps)
            for j in range(d):
                y[i, j] = x[i, j] * r * w[j]
        return y

    @njit(**opts)
    def bn_train_planes(x, w, b, rm, rv, mom, eps, y):
        # x: (N, C, HW); one channel per task, shifted sums in one pass, then normalize
        n, c, hw = x.shape
        cnt = n * hw
        for k in prange(c):
            sh = x[0, k, 0]
            s = 0.0
            q = 0.0
            for i in range(n):
                for j in range(hw):
                    t = x[i, k, j] - sh
                    s += t
                    q += t * t
            m = s / cnt
            var = max(q / cnt - m * m, 0.0)
            mean = sh + m
            scale = w[k] / np.sqrt(var + eps)
            shift = b[k] - mean * scale
            for i in range(n):
                for j in range(hw):
                    y[i, k, j] = x[i, k, j] * scale + shift
            rm[k] = (1.0 - mom) * rm[k] + mom * mean
            rv[k] = (1.0 - mom) * rv[k] + mom * var * cnt / (cnt - 1)
        return y

    @njit(**opts)
    def bn_train_cols(x, w, b, rm, rv, mom, eps, y):
        # x: (M, C); per-chunk column partials (shifted sums), then normalize rows
        mrows, c = x.shape
        nch = numba.get_num_threads()
        step = (mrows + nch - 1) // nch
        sh = x[0].astype(np.float64)
        s = np.zeros((nch, c))
        q = np.zeros((nch, c))
        for t in prange(nch):
            for i in range(t * step, min(mrows, (t + 1) * step)):
                for k in range(c):
                    d = x[i, k] - sh[k]
                    s[t, k] += d
                    q[t, k] += d * d
        scale = np.empty(c, x.dtype)
        shift = np.empty(c, x.dtype)
        for k in range(c):
            m = s[:, k].sum() / mrows
            var = max(q[:, k].sum() / mrows - m * m, 0.0)
            mean = sh[k] + m
            sc = w[k] / np.sqrt(var + eps)
            scale[k] = sc
            shift[k] = b[k] - mean * sc
            rm[k] = (1.0 - mom) * rm[k] + mom * mean
            rv[k] = (1.0 - mom) * rv[k] + mom * var * mrows / (mrows - 1)
        for i in prange(mrows):
            for k in range(c):
                y[i, k] = x[i, k] * scale[k] + shift[k]
        return y

    @njit(**opts)
    def bn_eval_planes(x, scale, shift, y):
        n, c, hw = x.shape
        for p in prange(n * c):
            i = p // c
            k = p - i * c
            sc = scale[k]
            sf = shift[k]
            for j in range(hw):
                y[i, k, j] = x[i, k, j] * sc + sf
        return y

    @njit(**opts)
    def bn_eval_cols(x, scale, shift, y):
        mrows, c = x.shape
        for i in prange(mrows):
            for k in range(c):
                y[i, k] = x[i, k] * scale[k] + shift[k]
        return y

    @njit(**opts)
    def group_norm_planes(x, w, b, g, eps, y):
        # x: (N, C, HW); one (sample, group) per task
        n, c, hw = x.shape
        cg = c // g
        cnt = cg * hw
        for p in prange(n * g):
            i = p // g
            k0 = (p - i * g) * cg
            s = 0.0
            for k in range(k0, k0 + cg):
                for j in range(hw):
                    s += x[i, k, j]
            m = s / cnt
            v = 0.0
            for k in range(k0, k0 + cg):
                for j in range(hw):
                    t = x[i, k, j] - m
                    v += t * t
            r = 1.0 / np.sqrt(v / cnt + eps)
            for k in range(k0, k0 + cg):
                sc = r * w[k]
                sf = b[k] - m * sc
                for j in range(hw):
                    y[i, k, j] = x[i, k, j] * sc + sf
        return y

    _NB.update(numba=numba, layer_norm_rows=layer_norm_rows, rms_norm_rows=rms_norm_rows,
               bn_train_planes=bn_train_planes, bn_train_cols=bn_train_cols,
               bn_eval_planes=bn_eval_planes, bn_eval_cols=bn_eval_cols,
               group_norm_planes=group_norm_planes)
    return _NB


class NumbaPeer(Peer):
    """Hand-written ``@njit(parallel=True)`` kernels (what a user would write)."""

    name = "numba"
    label = "numba"
    variants = ("alloc", "out")

    def _import(self):
        import numba
        self.numba = numba

    def version(self):
        return self.numba.__version__

    def make(self, case, inp, threads, variant):
        if not self.available() or not self.supports(case, variant):
            return None
        k = _numba_kernels()
        k["numba"].set_num_threads(min(threads, k["numba"].config.NUMBA_NUM_THREADS))
        return super().make(case, inp, threads, variant)

    @staticmethod
    def _wrap(kernel, args, x, out):
        if out is None:
            return lambda: kernel(*args, np.empty_like(x))
        return lambda: kernel(*args, out)

    @staticmethod
    def _views(case, x, out):
        """(N, C, HW) or (M, C) views of x and out, without copies."""
        if case.layout == "NCHW":
            shp = (x.shape[0], x.shape[1], -1)
        else:  # NHWC or NC: channels innermost
            shp = (-1, x.shape[-1])
        xv = x.reshape(shp)
        return xv, (None if out is None else out.reshape(shp)), shp

    def op_layer_norm(self, case, inp, threads, out):
        """Return a callable running ``layer_norm`` on ``case`` (``out``: buffer or None)."""
        k = _numba_kernels()["layer_norm_rows"]
        x = inp["x"].reshape(-1, case.shape[-1])
        o = None if out is None else out.reshape(x.shape)
        return self._wrap(k, (x, inp["weight"], inp["bias"], case.eps), x, o)

    def op_rms_norm(self, case, inp, threads, out):
        """Return a callable running ``rms_norm`` on ``case`` (``out``: buffer or None)."""
        k = _numba_kernels()["rms_norm_rows"]
        x = inp["x"].reshape(-1, case.shape[-1])
        o = None if out is None else out.reshape(x.shape)
        return self._wrap(k, (x, inp["weight"], case.eps), x, o)

    def op_batch_norm_train(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_train`` on ``case`` (``out``: buffer or None)."""
        kn = _numba_kernels()
        xv, ov, _ = self._views(case, inp["x"], out)
        k = kn["bn_train_planes"] if case.layout == "NCHW" else kn["bn_train_cols"]
        rm, rv = inp["running_mean"].copy(), inp["running_var"].copy()
        return self._wrap(k, (xv, inp["weight"], inp["bias"], rm, rv, 0.1, case.eps), xv, ov)

    def op_batch_norm_eval(self, case, inp, threads, out):
        """Return a callable running ``batch_norm_eval`` on ``case`` (``out``: buffer or None)."""
        kn = _numba_kernels()
        xv, ov, _ = self._views(case, inp["x"], out)
        k = kn["bn_eval_planes"] if case.layout == "NCHW" else kn["bn_eval_cols"]
        inv = 1.0 / np.sqrt(inp["running_var"].astype(np.float64) + case.eps)
        scale = (inp["weight"] * inv).astype(xv.dtype)
        shift = (inp["bias"] - inp["running_mean"] * inv * inp["weight"]).astype(xv.dtype)
        return self._wrap(k, (xv, scale, shift), xv, ov)

    def op_instance_norm(self, case, inp, threads, out):
        """Return a callable running ``instance_norm`` (group_norm kernel with G = C)."""
        if case.layout != "NCHW":
            return None
        k = _numba_kernels()["group_norm_planes"]
        xv, ov, _ = self._views(case, inp["x"], out)
        return self._wrap(k, (xv, inp["weight"], inp["bias"], case.channels, case.eps), xv, ov)

    def op_group_norm(self, case, inp, threads, out):
        """Return a callable running ``group_norm`` on ``case`` (``out``: buffer or None)."""
        if case.layout != "NCHW":
            return None
        k = _numba_kernels()["group_norm_planes"]
        xv, ov, _ = self._views(case, inp["x"], out)
        return self._wrap(k, (xv, inp["weight"], inp["bias"], case.groups, case.eps), xv, ov)


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

#: Every peer, in report order.  fastnorm first, the copy reference last.
PEERS = [FastnormPeer(), NumpyPeer(), NumbaPeer(), TorchPeer(), OrtPeer(), CopyPeer()]


def get_peer(name):
    """Return the peer called ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    Peer
    """
    for p in PEERS:
        if p.name == name:
            return p
    raise KeyError(name)


def available_peers():
    """Return the names of the importable peers.

    Returns
    -------
    list of str
    """
    return [p.name for p in PEERS if p.available()]


def peer_status():
    """Return ``{name: version or 'unavailable: reason'}`` for every peer.

    Returns
    -------
    dict
    """
    return {p.name: (p.version() or "available") if p.available()
            else "unavailable: " + p.why_unavailable() for p in PEERS}


def reference_head(case, inp, k=2):
    """Float64 NumPy reference for the first ``k`` entries along axis 0.

    Statistics that span the whole batch (BatchNorm training) are computed
    from all of ``x``; only the compared slice is limited, so checking a
    peer's output stays cheap on large inputs.

    Parameters
    ----------
    case : Case
    inp : dict
        Inputs from :func:`make_inputs`.
    k : int, optional
        Number of leading entries along axis 0 to return.

    Returns
    -------
    numpy.ndarray
        Expected ``y[:k]`` in float64.
    """
    x = inp["x"][:k].astype(np.float64)
    w, b = inp["weight"].astype(np.float64), inp["bias"].astype(np.float64)
    if case.op == "layer_norm":
        m, v = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - m) / np.sqrt(v + case.eps) * w + b
    if case.op == "rms_norm":
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + case.eps) * w
    wb, bb = _bcast(w, case), _bcast(b, case)
    if case.op == "batch_norm_train":
        ax = _bn_axes(case)
        full = inp["x"]
        m = full.mean(ax, dtype=np.float64, keepdims=True)
        v = np.zeros_like(m)
        for i in range(full.shape[0]):  # chunked: no float64 copy of all of x
            v += np.sum((full[i:i + 1].astype(np.float64) - m) ** 2,
                        axis=ax, keepdims=True)
        v /= full.size // case.channels
        return (x - m) / np.sqrt(v + case.eps) * wb + bb
    if case.op == "batch_norm_eval":
        rm = _bcast(inp["running_mean"].astype(np.float64), case)
        rv = _bcast(inp["running_var"].astype(np.float64), case)
        return (x - rm) / np.sqrt(rv + case.eps) * wb + bb
    if case.op in ("group_norm", "instance_norm"):
        g = case.groups if case.op == "group_norm" else case.channels
        xc = np.moveaxis(x, case.channel_axis, 1)
        xg = xc.reshape(xc.shape[0], g, -1)
        m, v = xg.mean(-1, keepdims=True), xg.var(-1, keepdims=True)
        yn = np.moveaxis(((xg - m) / np.sqrt(v + case.eps)).reshape(xc.shape), 1,
                         case.channel_axis)
        return yn * wb + bb
    if case.op == "add_layer_norm":
        s = x + inp["residual"][:k].astype(np.float64)
        m, v = s.mean(-1, keepdims=True), s.var(-1, keepdims=True)
        return (s - m) / np.sqrt(v + case.eps) * w + b
    if case.op in ("layer_norm_backward", "batch_norm_backward"):
        dy = inp["dy"][:k].astype(np.float64)
        if case.op == "layer_norm_backward":
            axes, wv = (-1,), w
            m, v = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        else:
            axes, wv, full = _bn_axes(case), wb, inp["x"]
            m = full.mean(axes, dtype=np.float64, keepdims=True)
            v = np.zeros_like(m)
            gm = np.zeros_like(m)
            gx = np.zeros_like(m)
            r0 = None
            for i in range(full.shape[0]):
                xi = full[i:i + 1].astype(np.float64)
                v += np.sum((xi - m) ** 2, axis=axes, keepdims=True)
            cnt = full.size // case.channels
            v /= cnt
            r0 = 1.0 / np.sqrt(v + case.eps)
            for i in range(full.shape[0]):
                xi = full[i:i + 1].astype(np.float64)
                gi = inp["dy"][i:i + 1].astype(np.float64) * wb
                gm += gi.sum(axis=axes, keepdims=True)
                gx += (gi * (xi - m) * r0).sum(axis=axes, keepdims=True)
            xh = (x - m) * r0
            return r0 * (dy * wb - gm / cnt - xh * gx / cnt)
        r = 1.0 / np.sqrt(v + case.eps)
        xh = (x - m) * r
        g = dy * wv
        return r * (g - g.mean(axes, keepdims=True) - xh * (g * xh).mean(axes, keepdims=True))
    if case.op == "group_norm_backward":
        # per (sample, group) statistics: the first k samples need nothing else
        ca, G = case.channel_axis, case.groups
        xc = np.moveaxis(x, ca, 1)
        gc = np.moveaxis(inp["dy"][:k].astype(np.float64) * wb, ca, 1)
        xg, gg = xc.reshape(xc.shape[0], G, -1), gc.reshape(xc.shape[0], G, -1)
        m, v = xg.mean(-1, keepdims=True), xg.var(-1, keepdims=True)
        r = 1.0 / np.sqrt(v + case.eps)
        xh = (xg - m) * r
        dx = r * (gg - gg.mean(-1, keepdims=True) - xh * (gg * xh).mean(-1, keepdims=True))
        return np.moveaxis(dx.reshape(xc.shape), 1, ca)
    raise ValueError(case.op)


def head_error(case, y, ref):
    """Largest absolute difference between ``y[:k]`` and a :func:`reference_head`.

    Parameters
    ----------
    case : Case
    y : array_like
        Full output of a peer (NumPy array or torch tensor; torch
        channels_last results come back as NCHW-shaped views).
    ref : numpy.ndarray
        Output of :func:`reference_head`.

    Returns
    -------
    float
    """
    if isinstance(y, (tuple, list)):
        y = y[0]
    if hasattr(y, "detach") and not isinstance(y, np.ndarray):
        y = y.detach().numpy()
    y = np.asarray(y)
    if case.layout == "NHWC" and y.ndim == 4 and y.shape[1] == case.channels \
            and y.shape != tuple(case.shape):
        y = np.moveaxis(y, 1, -1)
    if y.shape != tuple(case.shape) and y.size == int(np.prod(case.shape)):
        y = y.reshape(case.shape)  # e.g. numba's (M, C) view of an NHWC output
    y = np.asarray(y[:ref.shape[0]], dtype=np.float64)
    return float(np.max(np.abs(y - ref))) if ref.size else 0.0


def tolerance(case):
    """Absolute tolerance for :func:`head_error` (outputs are O(1)).

    Parameters
    ----------
    case : Case

    Returns
    -------
    float
    """
    return 2e-3 if case.dtype == "float32" else 1e-8
