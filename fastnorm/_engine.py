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


def inv_std(var, eps):
    """1 / sqrt(var + eps) in float64; inf, without NumPy's divide warning, where
    var + eps is 0 (eps = 0 and a constant unit), as the compiled fast paths
    return it."""
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)


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


def _kernel(x, y, plan, op, stream=False):
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
            b = None if op.b is None else _param_order(op.b, x.shape, plan.red_axes, op.reduced)
    if plan.kind == _layout.SEG:
        if op.w is None:
            wk = wr1 = wr2 = 0
        elif op.w_on_kept:
            wk, wr1, wr2 = 1, 0, 0
        else:
            wk, wr1, wr2 = 0, plan.shape[3], 1
        _ext.seg_norm(x, y, plan.shape + (wk, wr1, wr2), w, b, op.eps, op.mode,
                      stats_given, mean, var, op.nthreads, stream)
    else:
        _ext.col_norm(x, y, plan.shape, not op.w_on_kept, w, b, op.eps, op.mode,
                      stats_given, mean, var, op.nthreads, 1, stream)
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
    stream = out is not None
    y = None
    if want_y:
        y = out
        if out is None:
            # large outputs come from recycled memory (_ext.new_output); a reused
            # buffer is mapped already and takes streaming stores like out=
            y, stream = _ext.new_output(x)
    plan = _layout.plan(x, y, op.reduced)
    if plan is None and out is not None:
        # Perhaps only `out` does not follow x's layout: compute into a fresh array.
        tmp, mean, var = run(x, None, op, want_y)
        copy_between(tmp, out, op.nthreads)
        return out, mean, var
    if plan is None:
        # No canonical shape fits: one transposing copy to (kept..., reduced...).
        # Reduced-axes-shaped parameters keep their axis order under this permutation.
        red = [i for i in range(x.ndim) if op.reduced[i]]
        perm = kept + red
        xc = c_order_copy(x.transpose(perm), op.nthreads)
        opc = Op(tuple(op.reduced[i] for i in perm), op.mode, op.eps, op.w, op.b,
                 op.w_on_kept, op.stats_given, op.nthreads)
        yc, mean, var = run(xc, None, opc, want_y)
        if want_y:
            y = _into_layout(_in_axis_order(yc, perm), y, op.nthreads)
        return y, mean, var
    mean, var = _kernel(x, y, plan, op, stream=stream)
    if op.stats_given is None:
        mean = _units_to_kept(mean, plan, x.shape, kept)
        var = _units_to_kept(var, plan, x.shape, kept)
    return y, mean, var


def _kept_to_units(arr, plan, x_shape, kept):
    """Inverse of _units_to_kept: kept-axes-shaped statistics in unit order."""
    arr = np.asarray(arr, dtype=np.float64).reshape([x_shape[i] for i in kept])
    nontrivial = [i for i in kept if x_shape[i] != 1]
    arr = arr.reshape([x_shape[i] for i in nontrivial])
    pos = {ax: j for j, ax in enumerate(nontrivial)}
    return np.ascontiguousarray(arr.transpose([pos[i] for i in plan.unit_axes])).ravel()


def _param_from_order(flat, x_shape, red_axes, reduced):
    """Inverse of _param_order: kernel-ordered parameter values in reduced-axes shape."""
    red_sorted = [i for i in range(len(x_shape)) if reduced[i]]
    t = flat.reshape([x_shape[i] for i in red_axes])
    t = t.transpose(sorted(range(len(red_axes)), key=lambda j: red_axes[j]))
    return t.reshape([x_shape[i] for i in red_sorted])


def _unit_axis(a):
    """The axis along which a's values lie next to each other, or None."""
    for i in range(a.ndim - 1, -1, -1):
        if a.shape[i] > 1 and a.strides[i] == a.itemsize:
            return i
    return None


def copy_between(src, dst, nthreads):
    """dst[...] = src; in tiles (_ext.copy_into) when the two run through memory
    along different axes: NumPy's element-by-element copy strides through one of
    them (with the tiles, LayerNorm over axes (0, 2) of a C-ordered (16, 64, 32,
    64) array ran 1.9x faster)."""
    ua, ub = _unit_axis(src), _unit_axis(dst)
    if ua is not None and ub is not None and ua != ub:
        _ext.copy_into(src, dst, nthreads)
    else:
        np.copyto(dst, src)


def c_order_copy(a, nthreads):
    """a in C order: a itself when it is, else a copy."""
    if a.flags.c_contiguous:
        return a
    c = np.empty(a.shape, a.dtype)
    copy_between(a, c, nthreads)
    return c


def _in_axis_order(a, perm):
    """a, computed on x.transpose(perm), with x's axis order back (a itself when
    perm keeps the order)."""
    return a if list(perm) == sorted(perm) else a.transpose(np.argsort(perm))


def _into_layout(result, y, nthreads):
    """result in the layout of y, an output this module allocated: result itself
    when it walks memory as y does (no copy), else copied into y."""
    if same_strides(result, y):
        return result
    copy_between(result, y, nthreads)
    return y


def same_strides(a, b):
    """Whether a and b (same shape) walk memory alike; size-1 axes do not count."""
    return all(n == 1 or sa == sb for n, sa, sb in zip(a.shape, a.strides, b.strides))


def _new_dx(x, dy, reduced):
    """A new dx for the backward of x and its plan (None when no kernel shape fits):
    dx in dy's memory order when dy is whole and a kernel shape takes x with it
    (the kernels read dy with dx's strides: a strided view of x then needs no
    copy), else in x's."""
    if (dy.flags.c_contiguous or dy.flags.f_contiguous) and not same_strides(dy, x):
        dx = _ext.new_output(dy)[0]
        plan = _layout.plan(x, dx, reduced)
        if plan is not None:
            return dx, plan
        del dx      # back to the buffer cache before the next allocation
    dx = _ext.new_output(x)[0]
    return dx, _layout.plan(x, dx, reduced)


def run_backward(x, dy, out, op, mean, rstd, training, want_params):
    """Backward of the normalization `op` described at x with statistics mean/rstd
    (kept-axes shape; mean ignored in RMS mode).

    Returns (dx, dw, db): dw/db float64 in the parameter's shape (reduced-axes shape,
    or (C,) when op.w_on_kept), None unless want_params.
    """
    kept = [i for i in range(x.ndim) if not op.reduced[i]]
    if out is None:
        dx, plan = _new_dx(x, dy, op.reduced)
    else:
        dx, plan = out, _layout.plan(x, out, op.reduced)
    if plan is None and out is not None:
        tmp, dw, db = run_backward(x, dy, None, op, mean, rstd, training, want_params)
        copy_between(tmp, out, op.nthreads)
        return out, dw, db
    if plan is None:
        red = [i for i in range(x.ndim) if op.reduced[i]]
        perm = kept + red
        xc = c_order_copy(x.transpose(perm), op.nthreads)
        dyc = c_order_copy(dy.transpose(perm), op.nthreads)
        opc = Op(tuple(op.reduced[i] for i in perm), op.mode, op.eps, op.w, op.b,
                 op.w_on_kept, None, op.nthreads)
        dxc, dw, db = run_backward(xc, dyc, None, opc, mean, rstd, training, want_params)
        return _into_layout(_in_axis_order(dxc, perm), dx, op.nthreads), dw, db
    if not same_strides(dy, dx):
        # The kernels read dy with dx's strides: dy copied into dx's order, in tiles
        # (NumPy's copy of a (4096, 512) float32 dy into Fortran order took 9 ms)
        dyc = _ext.new_output(dx)[0]      # dx's order, from recycled memory
        if not same_strides(dyc, dx):
            # an out= with gaps between its values: computed in fresh memory (whose
            # dx is compact), then copied
            del dyc
            tmp, dw, db = run_backward(x, dy, None, op, mean, rstd, training, want_params)
            copy_between(tmp, out, op.nthreads)
            return out, dw, db
        _ext.copy_into(dy, dyc, op.nthreads)
        dy = dyc
    mean_u = _kept_to_units(mean, plan, x.shape, kept) if mean is not None else np.zeros(plan.A * plan.K)
    rstd_u = _kept_to_units(rstd, plan, x.shape, kept)
    w = None
    nparam = 0
    if op.w is not None:
        w = op.w if op.w_on_kept else _param_order(op.w, x.shape, plan.red_axes, op.reduced)
        nparam = w.size
    dw = np.empty(nparam) if (want_params and w is not None) else None
    db = np.empty(nparam) if (dw is not None and op.mode == MODE_MEANVAR) else None
    if plan.kind == _layout.SEG:
        if w is None:
            wk = wr1 = wr2 = 0
        elif op.w_on_kept:
            wk, wr1, wr2 = 1, 0, 0
        else:
            wk, wr1, wr2 = 0, plan.shape[3], 1
        _ext.seg_bwd(x, dy, dx, plan.shape + (wk, wr1, wr2), w, op.mode, training,
                     mean_u, rstd_u, dw, db, op.nthreads)
    else:
        _ext.col_bwd(x, dy, dx, plan.shape, not op.w_on_kept, w, op.mode, training,
                     mean_u, rstd_u, dw, db, op.nthreads)
    if dw is not None and not op.w_on_kept:
        dw = _param_from_order(dw, x.shape, plan.red_axes, op.reduced)
        if db is not None:
            db = _param_from_order(db, x.shape, plan.red_axes, op.reduced)
    return dx, dw, db

