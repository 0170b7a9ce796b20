"""Drive the C engine for any layout: plan, copy only when no plan fits, run.

`run` is the one place where an op becomes a kernel call: the public functions
describe the op (which axes are reduced, where the affine parameters live, the
statistics mode) and get back y plus per-unit statistics in kept-axes shape.
"""
import numpy as np

from . import _ext
from . import _layout

MODE_MEANVAR = _ext.MODE_MEANVAR
MODE_RMS = _ext.MODE_RMS


class Op:
    """What the engine needs to know about one call."""
    __slots__ = ("reduced", "mode", "eps", "w", "b", "w_on_kept", "stats_given", "nthreads")

    def __init__(self, reduced, mode, eps=0.0, w=None, b=None, w_on_kept=False,
                 stats_given=None, nthreads=1):
        self.reduced = reduced          # tuple of bools, one per axis of x
        self.mode = mode
        self.eps = eps
        self.w = w                      # affine weight: shape of x at reduced axes (w_on_kept=False)
        self.b = b                      # or (C,) along the single kept axis (w_on_kept=True)
        self.w_on_kept = w_on_kept
        self.stats_given = stats_given  # (mean, var) float64 per unit, or None
        self.nthreads = nthreads


def _param_order(p, x_shape, red_axes, reduced):
    """Lay a reduced-axes-shaped parameter out in the kernel's walking order."""
    red_sorted = [i for i in range(len(x_shape)) if reduced[i]]
    p = p.reshape([x_shape[i] for i in red_sorted])
    keep = [j for j, i in enumerate(red_sorted) if x_shape[i] != 1]
    p = p.reshape([x_shape[red_sorted[j]] for j in keep])
    pos = {red_sorted[j]: n for n, j in enumerate(keep)}
    return np.ascontiguousarray(p.transpose([pos[i] for i in red_axes])).ravel()


def _kernel(x, y, plan, op):
    U = plan.A * plan.K
    if op.stats_given is not None:
        mean, var = op.stats_given
        stats_given = True
    else:
        mean = np.empty(U, dtype=np.float64)
        var = np.empty(U, dtype=np.float64)
        stats_given = False
    w = b = None
    if op.w is not None:
        if op.w_on_kept:
            w, b = op.w, op.b
        else:
            w = _param_order(op.w, x.shape, plan.red_axes, op.reduced)
            b = _param_order(op.b, x.shape, plan.red_axes, op.reduced)
    if plan.kind == _layout.SEG:
        if op.w is None:
            wk = wr1 = wr2 = 0
        elif op.w_on_kept:
            wk, wr1, wr2 = 1, 0, 0
        else:
            wk, wr1, wr2 = 0, plan.shape[3], 1
        _ext.seg_norm(x, y, plan.shape + (wk, wr1, wr2), w, b, op.eps, op.mode,
                      stats_given, mean, var, op.nthreads)
    else:
        _ext.col_norm(x, y, plan.shape, not op.w_on_kept, w, b, op.eps, op.mode,
                      stats_given, mean, var, op.nthreads)
    return mean, var


def _units_to_kept(arr, plan, x_shape, kept):
    ua = plan.unit_axes
    t = arr.reshape([x_shape[i] for i in ua])
    t = t.transpose(sorted(range(len(ua)), key=lambda j: ua[j]))
    return t.reshape([x_shape[i] for i in kept])


def run(x, out, op, want_y=True):
    """Normalize (or, with want_y=False, only reduce) x as `op` says.

    Returns (y, mean, var) with mean/var float64 in the shape of x's kept axes
    (var is the biased variance; the mean of squares in RMS mode). y is `out`
    when given, else a new array with x's memory layout.
    """
    kept = [i for i in range(x.ndim) if not op.reduced[i]]
    if want_y:
        y = out if out is not None else np.empty_like(x)
    else:
        y = None
    plan = _layout.plan(x, y, op.reduced)
    if plan is None and out is not None:
        # Perhaps only `out` does not follow x's layout: compute into a fresh array.
        tmp, mean, var = run(x, None, op, want_y)
        out[...] = tmp
        return out, mean, var
    if plan is None:
        # No canonical shape fits: one transposing copy to (kept..., reduced...).
        # Reduced-axes-shaped parameters keep their axis order under this permutation.
        red = [i for i in range(x.ndim) if op.reduced[i]]
        perm = kept + red
        xc = np.ascontiguousarray(x.transpose(perm))
        opc = Op(tuple(op.reduced[i] for i in perm), op.mode, op.eps, op.w, op.b,
                 op.w_on_kept, op.stats_given, op.nthreads)
        yc, mean, var = run(xc, None, opc, want_y)
        if want_y:
            y[...] = yc.transpose(np.argsort(perm))
        return y, mean, var
    mean, var = _kernel(x, y, plan, op)
    if op.stats_given is None:
        mean = _units_to_kept(mean, plan, x.shape, kept)
        var = _units_to_kept(var, plan, x.shape, kept)
    return y, mean, var
