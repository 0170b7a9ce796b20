# Included by _ext.pyx: the compiled fast path of fastnorm.moments.

cdef bint _reduced_range(object axis, int nd, Py_ssize_t *lo, Py_ssize_t *hi):
    """The axes moments reduces as one range [lo, hi) of x's axes: None (all),
    a Python int, or a tuple of distinct Python ints that are consecutive in some
    order. False for anything else (out of range, repeated, bool, NumPy integers,
    empty: the general path validates and raises as documented)."""
    cdef Py_ssize_t a, n, i
    cdef object ax
    if axis is None:
        lo[0] = 0
        hi[0] = nd
        return True
    if type(axis) is int:
        axis = (axis,)
    elif type(axis) is not tuple:
        return False
    n = len(<tuple>axis)
    if n == 0 or n > nd:
        return False
    lo[0] = nd
    hi[0] = 0
    for ax in <tuple>axis:
        if type(ax) is not int or not -nd <= ax < nd:
            return False
        a = ax
        if a < 0:
            a += nd
        lo[0] = min(lo[0], a)
        hi[0] = max(hi[0], a + 1)
    # n values spanning n places, each in range: distinct and consecutive
    return hi[0] - lo[0] == n and len(set(<tuple>axis)) == n


def moments_fast(object x, object axis, object ddof, object keepdims, object num_threads,
                 object default_threads):
    """The common cases of moments with no Python-level work: x a C-contiguous
    float32/float64 ndarray reduced over trailing axes (rows, as the general
    path's SEG plan; axis None included) or leading axes (columns, its COL plan;
    one row when the kept axes hold one value, as the planner drops size-1 axes),
    axis None, a Python int or a tuple of them, ddof a Python int, keepdims a bool.
    Returns (mean, var) as moments returns them, or None when the call is not
    such a case (the general path then validates and raises as documented). The
    kernel call and its results are those of the general path."""
    if (not _input_ok(x, 1) or type(ddof) is not int or type(keepdims) is not bool):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t lo = 0, hi = 0, i
    if not _reduced_range(axis, nd, &lo, &hi):
        return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa), n_red = 1
    for i in range(lo, hi):
        n_red *= cnp.PyArray_DIM(xa, i)
    cdef Py_ssize_t units = size // n_red
    cdef bint columns = hi < nd
    if columns and lo != 0:
        return None
    if columns and units == 1:
        columns = False
    # fn_work(rows, D) for rows, A * R * K for columns (src_c/fn_internal.h)
    cdef double work = <double>size + (0.0 if columns else <double>units * 256)
    cdef int nt = _fast_threads(num_threads, default_threads, work)
    if nt == 0:
        return None
    cdef fn_seg_shape s
    s.A = 1; s.R1 = 1; s.K = units; s.R2 = n_red
    s.xa = 0; s.xr1 = 0; s.xk = n_red
    s.ya = 0; s.yr1 = 0; s.yk = n_red
    s.wk = 0; s.wr1 = 0; s.wr2 = 0
    cdef fn_col_shape c
    c.A = 1; c.R = n_red; c.K = units
    c.xa = 0; c.xr = units; c.ya = 0; c.yr = units
    c.w_along_r = 0; c.Kg = 1
    cdef fn_norm_args p = _args(None, None, 0.0, MODE_MEANVAR, False, None, None, nt, False)
    cdef double *stats = _stats_buffer(&p, units)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef int status
    with nogil:
        if columns:
            if typenum == cnp.NPY_FLOAT32:
                status = fn_col_norm_f32(&c, <const float *>xp, NULL, &p)
            else:
                status = fn_col_norm_f64(&c, <const double *>xp, NULL, &p)
        elif typenum == cnp.NPY_FLOAT32:
            status = fn_seg_norm_f32(&s, <const float *>xp, NULL, &p)
        else:
            status = fn_seg_norm_f64(&s, <const double *>xp, NULL, &p)
    cdef double n = <double>n_red, den, factor
    cdef object mean, var
    try:
        _check(status)
        if ddof != 0:
            # moments' n / max(n - ddof, 0) in float64; inf when ddof >= n
            den = n - <double>ddof
            if den < 0:
                den = 0
            factor = n / den if den > 0 else float("inf")
            for i in range(units):
                p.var[i] = p.var[i] * factor
        mean = _doubles_out(stats, units, 1, typenum)
        var = _doubles_out(stats + units, units, 1, typenum)
    finally:
        free(stats)
    shape = x.shape
    if keepdims:
        shape = shape[:lo] + (1,) * (hi - lo) + shape[hi:]
    else:
        shape = shape[:lo] + shape[hi:]
    mean.shape = var.shape = shape
    return mean[()], var[()]
