# Included by _ext.pyx: the compiled fast path of fastnorm.moments.

cdef bint _kept_range(object axis, int nd, Py_ssize_t *m0, Py_ssize_t *m1):
    """The axes moments keeps, when they form one range [m0, m1) of x's axes (the
    reduced ones lead and trail it; m0 == m1 == 0 when every axis is reduced):
    axis None, a Python int, or a tuple of distinct Python ints. False for
    anything else (out of range, repeated, bool, NumPy integers, empty, kept axes
    apart: the general path validates, raises and plans those)."""
    cdef Py_ssize_t a, i, first = -1, last = -1
    cdef object ax
    cdef char reduced[64]
    if nd > 64:
        return False
    for i in range(nd):
        reduced[i] = axis is None
    if axis is not None:
        if type(axis) is int:
            axis = (axis,)
        elif type(axis) is not tuple or len(<tuple>axis) == 0:
            return False
        for ax in <tuple>axis:
            if type(ax) is not int or not -nd <= ax < nd:
                return False
            a = ax
            if a < 0:
                a += nd
            if reduced[a]:
                return False
            reduced[a] = 1
    for i in range(nd):
        if not reduced[i]:
            if first < 0:
                first = i
            elif i != last + 1:
                return False
            last = i
    m0[0] = first if first >= 0 else 0
    m1[0] = last + 1 if first >= 0 else 0
    return True


def moments_fast(object x, object axis, object ddof, object keepdims, object num_threads,
                 object default_threads):
    """The common cases of moments with no Python-level work: x a C-contiguous
    float32/float64 ndarray whose kept axes form one range, the reduced ones
    leading and trailing it (rows: trailing axes; columns: leading axes; NCHW
    channels: both), mapped onto the shape the general path plans for them (the
    planner drops size-1 axes: kept axes of one value make one row, reduced
    trailing axes of one value make columns); axis None, a Python int or a tuple
    of them, ddof a Python int, keepdims a bool. Returns (mean, var) as moments
    returns them, or None when the call is not such a case (the general path then
    validates and raises as documented). The kernel call and its results are
    those of the general path."""
    if (not _input_ok(x, 1) or type(ddof) is not int or type(keepdims) is not bool):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t m0 = 0, m1 = 0, i
    if not _kept_range(axis, nd, &m0, &m1):
        return None
    # x as [R1, K, R2]: reduced, kept, reduced
    cdef Py_ssize_t R1 = 1, K = 1, R2 = 1
    for i in range(nd):
        if i < m0:
            R1 *= cnp.PyArray_DIM(xa, i)
        elif i < m1:
            K *= cnp.PyArray_DIM(xa, i)
        else:
            R2 *= cnp.PyArray_DIM(xa, i)
    cdef Py_ssize_t size = R1 * K * R2, n_red = R1 * R2, units = K
    cdef bint columns = R2 == 1 and K > 1
    if K == 1:
        R2 = n_red
        R1 = 1
    # fn_work(units, unit length) for rows, A * R * K for columns (src_c/fn_internal.h)
    cdef double work = <double>size + (0.0 if columns else <double>units * 256)
    cdef int nt = _fast_threads(num_threads, default_threads, work)
    if nt == 0:
        return None
    cdef fn_seg_shape s
    s.A = 1; s.R1 = R1; s.K = K; s.R2 = R2
    s.xa = 0; s.xr1 = K * R2; s.xk = R2
    s.ya = 0; s.yr1 = K * R2; s.yk = R2
    s.wk = 0; s.wr1 = 0; s.wr2 = 0
    cdef fn_col_shape c
    c.A = 1; c.R = R1; c.K = K
    c.xa = 0; c.xr = K; c.ya = 0; c.yr = K
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
        fn_scratch_free(stats)
    shape = x.shape
    if keepdims:
        shape = (1,) * m0 + shape[m0:m1] + (1,) * (nd - m1)
    else:
        shape = shape[m0:m1]
    mean.shape = var.shape = shape
    return mean[()], var[()]
