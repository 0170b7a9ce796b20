# Included by _ext.pyx: the compiled fast path of fastnorm.moments.

def moments_fast(object x, object axis, object ddof, object keepdims, object num_threads,
                 object default_threads):
    """The common case of moments with no Python-level work: x a C-contiguous
    float32/float64 ndarray reduced over its last axis (axis -1 or ndim - 1, a
    Python int, or None for a 1-D x), ddof a Python int, keepdims a bool. Returns (mean, var) as
    moments returns them, or None when the call is not that case (the general
    path then validates and raises as documented). The kernel call and its
    results are those of the general path."""
    if (not _input_ok(x, 1) or (axis is not None and type(axis) is not int)
            or type(ddof) is not int or type(keepdims) is not bool):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    if axis is None:
        if nd != 1:
            return None
    elif axis != -1 and axis != nd - 1:
        return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef Py_ssize_t D = cnp.PyArray_DIM(xa, nd - 1)
    cdef Py_ssize_t rows = size // D
    # fn_work(rows, D) (src_c/fn_internal.h)
    cdef int nt = _fast_threads(num_threads, default_threads, <double>size + <double>rows * 256)
    if nt == 0:
        return None
    cdef fn_seg_shape s
    s.A = 1; s.R1 = 1; s.K = rows; s.R2 = D
    s.xa = 0; s.xr1 = 0; s.xk = D
    s.ya = 0; s.yr1 = 0; s.yk = D
    s.wk = 0; s.wr1 = 0; s.wr2 = 0
    cdef fn_norm_args p = _args(None, None, 0.0, MODE_MEANVAR, False, None, None, nt, False)
    cdef double *stats = <double *>malloc(2 * <size_t>rows * sizeof(double))
    if stats == NULL:
        raise MemoryError("fastnorm: statistics allocation failed")
    p.mean = stats
    p.var = stats + rows
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef int status
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            status = fn_seg_norm_f32(&s, <const float *>xp, NULL, &p)
        else:
            status = fn_seg_norm_f64(&s, <const double *>xp, NULL, &p)
    cdef double n = <double>D, den, factor
    cdef Py_ssize_t i
    cdef object mean, var
    try:
        _check(status)
        if ddof != 0:
            # moments' n / max(n - ddof, 0) in float64; inf when ddof >= n
            den = n - <double>ddof
            if den < 0:
                den = 0
            factor = n / den if den > 0 else float("inf")
            for i in range(rows):
                p.var[i] = p.var[i] * factor
        mean = _doubles_out(stats, rows, 1, typenum)
        var = _doubles_out(stats + rows, rows, 1, typenum)
    finally:
        free(stats)
    shape = x.shape[:nd - 1] + ((1,) if keepdims else ())
    mean.shape = var.shape = shape
    return mean[()], var[()]
