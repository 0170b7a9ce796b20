# The common cases of layer_norm_backward / rms_norm_backward and of
# batch_norm_backward, compiled: their Python-level validation and planning take
# 25-40 us a call, more than the kernel on a (32, 512) or (1, 64, 14, 14) input.
# Included by _ext.pyx, after _chanfast.pxi (whose layout and checks it shares).


cdef bint _stat_ok(object a, cnp.ndarray x):
    """A per-row statistic as the forward returned it: a C-contiguous float32 or
    float64 ndarray of x's shape without its last axis."""
    if type(a) is not np.ndarray:
        return False
    cdef cnp.ndarray s = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(s)
    cdef int nd = cnp.PyArray_NDIM(x)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or cnp.PyArray_NDIM(s) != nd - 1:
        return False
    if not cnp.PyArray_IS_C_CONTIGUOUS(s) or not cnp.PyArray_ISALIGNED(s):
        return False
    for i in range(nd - 1):
        if cnp.PyArray_DIM(s, i) != cnp.PyArray_DIM(x, i):
            return False
    return True


cdef void _stat_read(cnp.ndarray a, double *dst, Py_ssize_t n):
    cdef Py_ssize_t i
    cdef float *f
    cdef double *d
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        f = <float *>cnp.PyArray_DATA(a)
        for i in range(n):
            dst[i] = f[i]
    else:
        d = <double *>cnp.PyArray_DATA(a)
        for i in range(n):
            dst[i] = d[i]


cdef cnp.ndarray _grad_out(const double *g, Py_ssize_t n, int typenum):
    """A parameter gradient in x's dtype (the general path's astype)."""
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray o = cnp.PyArray_EMPTY(1, &dim, typenum, 0)
    cdef Py_ssize_t i
    cdef float *f
    cdef double *d
    if typenum == cnp.NPY_FLOAT32:
        f = <float *>cnp.PyArray_DATA(o)
        for i in range(n):
            f[i] = <float>g[i]
    else:
        d = <double *>cnp.PyArray_DATA(o)
        for i in range(n):
            d[i] = g[i]
    return o


def rows_bwd_fast(object dy, object x, object mean, object rstd, object weight, object out, int mode,
                  object num_threads, object default_threads):
    """The common case of layer_norm_backward / rms_norm_backward with no
    Python-level work: x and dy C-contiguous float32/float64 ndarrays of one
    shape and dtype, normalized over the last axis; mean (ignored for RMS) and
    rstd as the forward returned them (float32 or float64, x's shape without the
    last axis); weight absent or 1-D of x's dtype; out absent or a separate
    C-contiguous array that overlaps none of the inputs. Returns (dx, dweight,
    dbias) as layer_norm_backward does (dbias None for RMS), or None when the
    call is not that case (the general path then validates and raises as
    documented). The kernel call and its results are those of the general path."""
    if type(x) is not np.ndarray or type(dy) is not np.ndarray:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray dya = <cnp.ndarray>dy
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64) or nd < 1:
        return None
    if not cnp.PyArray_IS_C_CONTIGUOUS(xa) or not cnp.PyArray_ISALIGNED(xa):
        return None
    if (cnp.PyArray_TYPE(dya) != typenum or cnp.PyArray_NDIM(dya) != nd
            or not cnp.PyArray_IS_C_CONTIGUOUS(dya) or not cnp.PyArray_ISALIGNED(dya)):
        return None
    for i in range(nd):
        if cnp.PyArray_DIM(dya, i) != cnp.PyArray_DIM(xa, i):
            return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef Py_ssize_t D = cnp.PyArray_DIM(xa, nd - 1)
    # (rows of one value are planned as columns by the general path)
    if size == 0 or D < 2:
        return None
    cdef Py_ssize_t rows = size // D
    if not _stat_ok(rstd, xa) or (mode != MODE_RMS and not _stat_ok(mean, xa)):
        return None
    if weight is not None and not _param_ok(weight, typenum, D):
        return None
    cdef bint stream = False
    yo = _fast_out(xa, out, &stream)
    if yo is None or yo is xa:
        return None
    cdef cnp.ndarray dxa = <cnp.ndarray>yo
    if out is not None:
        # dx in place of, or overlapping, an input: the general path's business
        for other in (dy, mean, rstd, weight):
            if other is not None and _overlaps(<cnp.ndarray>other, dxa):
                return None
    cdef int nt = _fast_threads(num_threads, default_threads, <double>size + <double>rows * 256)
    if nt == 0:
        return None
    cdef fn_seg_shape s
    s.A = 1; s.R1 = 1; s.K = rows; s.R2 = D
    s.xa = 0; s.xr1 = 0; s.xk = D
    s.ya = 0; s.yr1 = 0; s.yk = D
    s.wk = 0; s.wr1 = D if weight is not None else 0; s.wr2 = 1 if weight is not None else 0
    # per row: mean, rstd (float64, as the kernel takes them), then the kernel's
    # sums and corrected means; the parameter gradients in float64
    cdef Py_ssize_t ng = D if weight is not None else 0
    cdef double *buf = <double *>calloc(5 * <size_t>rows + 2 * <size_t>ng, sizeof(double))
    if buf == NULL:
        raise MemoryError("fastnorm: statistics allocation failed")
    cdef fn_bwd_args p
    p.mode = mode
    p.training = 1
    p.w = _ptr(weight)
    p.mean = buf
    p.rstd = buf + rows
    p.s1 = buf + 2 * rows
    p.s2 = buf + 3 * rows
    p.cmean = buf + 4 * rows
    p.dw = buf + 5 * rows if weight is not None else NULL
    p.db = buf + 5 * rows + ng if weight is not None and mode != MODE_RMS else NULL
    p.nparam = ng
    p.nthreads = nt
    if mode != MODE_RMS:
        _stat_read(<cnp.ndarray>mean, buf, rows)
    _stat_read(<cnp.ndarray>rstd, buf + rows, rows)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *dyp = cnp.PyArray_DATA(dya)
    cdef void *dxp = cnp.PyArray_DATA(dxa)
    cdef int status
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            status = fn_seg_bwd_f32(&s, <const float *>xp, <const float *>dyp, <float *>dxp, &p)
        else:
            status = fn_seg_bwd_f64(&s, <const double *>xp, <const double *>dyp, <double *>dxp, &p)
    dw = db = None
    try:
        _check(status)
        if weight is not None:
            dw = _grad_out(p.dw, ng, typenum)
            if p.db != NULL:
                db = _grad_out(p.db, ng, typenum)
    finally:
        free(buf)
    return dxa, dw, db


def chan_bwd_fast(object dy, object x, object mean, object invstd, object weight, object channel_axis,
                  object training, object out, object num_threads, object default_threads):
    """The common case of batch_norm_backward with no Python-level work: x and dy
    C-contiguous float32/float64 ndarrays of one shape and dtype with their
    channels on axis 1 or on the last axis (the layouts of chan_fast), mean and
    invstd C-contiguous float32/float64 vectors of length C, weight absent or 1-D
    of x's dtype, training a bool, out absent or a separate C-contiguous array
    that overlaps none of the inputs. Returns (dx, dweight, dbias), or None when
    the call is not that case (the general path then validates and raises as
    documented). The kernel call and its results are those of the general path."""
    if (type(x) is not np.ndarray or type(dy) is not np.ndarray or type(channel_axis) is not int
            or type(training) is not bool):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray dya = <cnp.ndarray>dy
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64) or nd < 2:
        return None
    if not cnp.PyArray_IS_C_CONTIGUOUS(xa) or not cnp.PyArray_ISALIGNED(xa):
        return None
    if (cnp.PyArray_TYPE(dya) != typenum or cnp.PyArray_NDIM(dya) != nd
            or not cnp.PyArray_IS_C_CONTIGUOUS(dya) or not cnp.PyArray_ISALIGNED(dya)):
        return None
    for i in range(nd):
        if cnp.PyArray_DIM(dya, i) != cnp.PyArray_DIM(xa, i):
            return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    if size == 0 or not -nd <= channel_axis < nd:
        return None
    cdef Py_ssize_t cax = channel_axis % nd
    if cax == 0:
        return None
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, cax)
    if not (_running_ok(mean, C, False) and _running_ok(invstd, C, False)):
        return None
    if weight is not None and not _param_ok(weight, typenum, C):
        return None
    cdef fn_seg_shape s
    cdef fn_col_shape c
    cdef int kind = _chan_layout(xa, cax, 0, &s, &c)
    if kind == 0:
        return None
    if kind == 1:
        # the general path's (wk, wr1, wr2): one parameter per unit, or none
        s.wk = 1 if weight is not None else 0
        s.wr1 = 0
        s.wr2 = 0
    cdef bint stream = False
    yo = _fast_out(xa, out, &stream)
    if yo is None or yo is xa:
        return None
    cdef cnp.ndarray dxa = <cnp.ndarray>yo
    if out is not None:
        for other in (dy, mean, invstd, weight):
            if other is not None and _overlaps(<cnp.ndarray>other, dxa):
                return None
    cdef double work = <double>size + (<double>C * 256 if kind == 1 else 0.0)
    cdef int nt = _fast_threads(num_threads, default_threads, work)
    if nt == 0:
        return None
    # per channel: mean, invstd (float64, as the kernel takes them), the kernel's
    # sums and corrected means, then the parameter gradients
    cdef Py_ssize_t ng = C if weight is not None else 0
    cdef double *buf = <double *>calloc(5 * <size_t>C + 2 * <size_t>ng, sizeof(double))
    if buf == NULL:
        raise MemoryError("fastnorm: statistics allocation failed")
    cdef fn_bwd_args p
    p.mode = MODE_MEANVAR
    p.training = training
    p.w = _ptr(weight)
    p.mean = buf
    p.rstd = buf + C
    p.s1 = buf + 2 * C
    p.s2 = buf + 3 * C
    p.cmean = buf + 4 * C
    p.dw = buf + 5 * C if weight is not None else NULL
    p.db = buf + 6 * C if weight is not None else NULL
    p.nparam = ng
    p.nthreads = nt
    _running_read(<cnp.ndarray>mean, buf, C)
    _running_read(<cnp.ndarray>invstd, buf + C, C)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *dyp = cnp.PyArray_DATA(dya)
    cdef void *dxp = cnp.PyArray_DATA(dxa)
    cdef bint is32 = typenum == cnp.NPY_FLOAT32
    cdef int status
    with nogil:
        if kind == 1 and is32:
            status = fn_seg_bwd_f32(&s, <const float *>xp, <const float *>dyp, <float *>dxp, &p)
        elif kind == 1:
            status = fn_seg_bwd_f64(&s, <const double *>xp, <const double *>dyp, <double *>dxp, &p)
        elif is32:
            status = fn_col_bwd_f32(&c, <const float *>xp, <const float *>dyp, <float *>dxp, &p)
        else:
            status = fn_col_bwd_f64(&c, <const double *>xp, <const double *>dyp, <double *>dxp, &p)
    dw = db = None
    try:
        _check(status)
        if weight is not None:
            dw = _grad_out(p.dw, C, typenum)
            db = _grad_out(p.db, C, typenum)
    finally:
        free(buf)
    return dxa, dw, db
