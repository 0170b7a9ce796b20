"""Map an array layout onto one of the engine's canonical shapes (src_c/fastnorm.h).

Axes of size 1 are dropped, the rest are sorted by memory order (decreasing
|stride|) and neighbours of the same kind (reduced or kept) are merged into
"runs" when they are collapsible. The innermost run must be contiguous:

- innermost run reduced -> SEG: x[a, r1, k, r2] (rows, NCHW planes)
- innermost run kept    -> COL: x[a, r, k]       (columns, channels-last)

Outer axes may have any strides, negative included: the kernels take signed
element strides from the first element. A layout with more runs than the shape
has slots, an inner axis with a negative or zero stride, or an output whose
strides do not follow x's runs, has no plan; the caller then copies.
"""
from dataclasses import dataclass, field

SEG = "seg"
COL = "col"


@dataclass
class Run:
    reduced: bool
    size: int
    xstride: int
    ystride: int
    axes: list = field(default_factory=list)


@dataclass
class Plan:
    kind: str                 # SEG or COL
    shape: tuple              # kernel shape tuple (see _ext.seg_norm / _ext.col_norm)
    red_axes: list            # reduced axes in the order the kernel walks them (outer first)
    unit_axes: list           # kept axes in unit order (outer first): u = a*K + k
    A: int = 1
    K: int = 1


_EMPTY = Run(True, 1, 0, 0)


def _runs(x, y, reduced):
    isz = x.itemsize
    axes = [i for i in range(x.ndim) if x.shape[i] != 1]
    xs = [s // isz for s in x.strides]
    ys = [s // isz for s in y.strides] if y is not None else xs
    axes.sort(key=lambda i: -abs(xs[i]))
    runs = []
    for i in axes:
        n = x.shape[i]
        last = runs[-1] if runs else None
        if (last is not None and last.reduced == reduced[i]
                and last.xstride == xs[i] * n and last.ystride == ys[i] * n):
            last.size *= n
            last.xstride, last.ystride = xs[i], ys[i]
            last.axes.append(i)
        else:
            runs.append(Run(reduced[i], n, xs[i], ys[i], [i]))
    return runs


def plan(x, y, reduced):
    """Return a Plan for reducing `x` over the axes flagged in `reduced` and writing
    `y` (same shape as x, or None for statistics only), or None when no canonical
    shape fits without a copy."""
    if not x.flags.aligned or (y is not None and not y.flags.aligned):
        return None
    runs = _runs(x, y, reduced)
    if not runs:
        runs = [Run(True, 1, 1, 1, [])]
    inner = runs[-1]
    if inner.xstride != 1 or inner.ystride != 1:
        if inner.size != 1:
            return None
    outer_r = [r for r in runs[:-1] if r.reduced]
    outer_k = [r for r in runs[:-1] if not r.reduced]
    if inner.reduced:
        if len(outer_r) > 1 or len(outer_k) > 2:
            return None
        r1 = outer_r[0] if outer_r else _EMPTY
        k = outer_k[-1] if outer_k else _EMPTY
        a = outer_k[0] if len(outer_k) == 2 else _EMPTY
        shape = (a.size, r1.size, k.size, inner.size,
                 a.xstride, r1.xstride, k.xstride, a.ystride, r1.ystride, k.ystride)
        return Plan(SEG, shape, r1.axes + inner.axes, a.axes + k.axes, A=a.size, K=k.size)
    if len(outer_r) > 1 or len(outer_k) > 1:
        return None
    r = outer_r[0] if outer_r else _EMPTY
    a = outer_k[0] if outer_k else _EMPTY
    shape = (a.size, r.size, inner.size, a.xstride, r.xstride, a.ystride, r.ystride)
    return Plan(COL, shape, r.axes, a.axes + inner.axes, A=a.size, K=inner.size)
