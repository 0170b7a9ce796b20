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


cdef int _pair_layout(object x, object dy):
    """x and dy aligned float32/float64 ndarrays of one dtype and shape, at least
    1-D and not empty, both C-contiguous (1) or both NCHW arrays in channels-last
    memory (2, see _nhwc_memory: then their strides are equal too); 0 for
    anything else."""
    cdef int kind
    if _input_ok(x, 1) and _input_ok(dy, 1):
        kind = 1
    elif _nhwc_memory(x) and _nhwc_memory(dy):
        kind = 2
    else:
        return 0
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray dya = <cnp.ndarray>dy
    cdef int nd = cnp.PyArray_NDIM(xa)
    if cnp.PyArray_TYPE(dya) != cnp.PyArray_TYPE(xa) or cnp.PyArray_NDIM(dya) != nd:
        return 0
    for i in range(nd):
        if cnp.PyArray_DIM(dya, i) != cnp.PyArray_DIM(xa, i):
            return 0
    return kind


cdef object _dx_out(cnp.ndarray xa, object out, tuple inputs):
    """dx for a backward fast path: a new array, or out when it is a separate
    array that overlaps none of `inputs` (dx in place of dy or x is the general
    path's business: the parameter gradients read both after dx is written)."""
    cdef bint stream = False
    yo = _fast_out(xa, out, &stream, inputs)
    return None if yo is xa else yo


cdef tuple _bwd_run(int kind, fn_seg_shape *s, fn_col_shape *c, cnp.ndarray xa, cnp.ndarray dya,
                    cnp.ndarray dxa, fn_bwd_args *p, double *buf, Py_ssize_t nparam, bint with_db):
    """Runs the SEG (kind 1) or COL kernel with the GIL released, frees buf (which
    holds p's arrays) and returns (dx, dweight, dbias) in x's dtype; the
    gradients None without a weight, dbias also without with_db."""
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *dyp = cnp.PyArray_DATA(dya)
    cdef void *dxp = cnp.PyArray_DATA(dxa)
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef bint is32 = typenum == cnp.NPY_FLOAT32
    cdef int status
    with nogil:
        if kind == 1 and is32:
            status = fn_seg_bwd_f32(s, <const float *>xp, <const float *>dyp, <float *>dxp, p)
        elif kind == 1:
            status = fn_seg_bwd_f64(s, <const double *>xp, <const double *>dyp, <double *>dxp, p)
        elif is32:
            status = fn_col_bwd_f32(c, <const float *>xp, <const float *>dyp, <float *>dxp, p)
        else:
            status = fn_col_bwd_f64(c, <const double *>xp, <const double *>dyp, <double *>dxp, p)
    dw = db = None
    try:
        _check(status)
        if p.dw != NULL:
            dw = _doubles_out(p.dw, nparam, 1, typenum)
            if with_db:
                db = _doubles_out(p.db, nparam, 1, typenum)
    finally:
        fn_scratch_free(buf)
    return dxa, dw, db


# Tests only: when set, _bwd_buffers fills its blocks with NaN, so that a kernel
# reading a value of the block it has not written shows in its outputs
cdef bint _poison_bwd_buffers = False


def poison_bwd_buffers(bint on):
    """Tests only: fill the backward fast paths' scratch blocks with NaN (on) or
    leave them as allocated (off, the default)."""
    global _poison_bwd_buffers
    _poison_bwd_buffers = on


cdef double *_bwd_buffers(fn_bwd_args *p, Py_ssize_t nstat, Py_ssize_t units, Py_ssize_t nparam, int mode,
                          object weight, int nt) except NULL:
    """One block for p, returned for fn_scratch_free: mean and rstd (nstat each,
    as the kernel takes them: filled by the caller at the block's start; mean not
    read in RMS mode), its per-unit sums and corrected means (units each), the
    parameter gradients (nparam each, with a weight). Not zeroed: the kernels
    write the sums and gradients before reading them (zeroing the 229 KiB of 4096
    channels was 9 % of a one-thread (8, 4096) backward's profile; timed against
    the zeroing build, the difference was within noise)."""
    cdef Py_ssize_t ng = nparam if weight is not None else 0
    cdef size_t nbytes = (2 * <size_t>nstat + 3 * <size_t>units + 2 * <size_t>ng) * sizeof(double)
    cdef double *buf = <double *>fn_scratch_alloc(nbytes)
    if buf == NULL:
        raise MemoryError("fastnorm: statistics allocation failed")
    if _poison_bwd_buffers:
        memset(buf, 0xFF, nbytes)
    p.mode = mode
    p.training = 1
    p.w = _ptr(weight)
    p.mean = buf
    p.rstd = buf + nstat
    p.s1 = buf + 2 * nstat
    p.s2 = buf + 2 * nstat + units
    p.cmean = buf + 2 * nstat + 2 * units
    p.dw = buf + 2 * nstat + 3 * units if ng else NULL
    p.db = buf + 2 * nstat + 3 * units + ng if ng else NULL
    p.nparam = ng
    p.nthreads = nt
    return buf


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
    if _pair_layout(x, dy) != 1:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef Py_ssize_t D = cnp.PyArray_DIM(xa, cnp.PyArray_NDIM(xa) - 1)
    # (rows of one value are planned as columns by the general path)
    if D < 2:
        return None
    cdef Py_ssize_t rows = size // D
    if not _stat_ok(rstd, xa) or (mode != MODE_RMS and not _stat_ok(mean, xa)):
        return None
    if weight is not None and not _param_ok(weight, cnp.PyArray_TYPE(xa), D):
        return None
    dxo = _dx_out(xa, out, (dy, mean, rstd, weight))
    if dxo is None:
        return None
    cdef int nt = _fast_threads(num_threads, default_threads, <double>size + <double>rows * 256)
    if nt == 0:
        return None
    cdef fn_seg_shape s
    s.A = 1; s.R1 = 1; s.K = rows; s.R2 = D
    s.xa = 0; s.xr1 = 0; s.xk = D
    s.ya = 0; s.yr1 = 0; s.yk = D
    s.wk = 0; s.wr1 = D if weight is not None else 0; s.wr2 = 1 if weight is not None else 0
    cdef fn_bwd_args p
    cdef double *buf = _bwd_buffers(&p, rows, rows, D, mode, weight, nt)
    if mode != MODE_RMS:
        _read_doubles(<cnp.ndarray>mean, buf, rows)
    _read_doubles(<cnp.ndarray>rstd, buf + rows, rows)
    return _bwd_run(1, &s, NULL, xa, <cnp.ndarray>dy, <cnp.ndarray>dxo, &p, buf, D, mode != MODE_RMS)


def chan_bwd_fast(object dy, object x, object mean, object invstd, object weight, object channel_axis,
                  object training, object out, object num_threads, object default_threads):
    """The common case of batch_norm_backward with no Python-level work: x and dy
    C-contiguous float32/float64 ndarrays of one shape and dtype with their
    channels on axis 1 or on the last axis, or both NCHW arrays in channels-last
    memory (the layouts of chan_fast), mean and invstd C-contiguous
    float32/float64 vectors of length C, weight absent or 1-D of x's dtype,
    training a bool, out absent or a separate array of x's strides that overlaps
    none of the inputs. Returns (dx, dweight, dbias), or None when the call is
    not that case (the general path then validates and raises as documented).
    The kernel call and its results are those of the general path."""
    cdef int pair = _pair_layout(x, dy)
    if pair == 0 or type(channel_axis) is not int or type(training) is not bool:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(xa)
    if nd < 2 or not -nd <= channel_axis < nd or channel_axis % nd == 0:
        return None
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, channel_axis % nd)
    if not (_running_ok(mean, C, False) and _running_ok(invstd, C, False)):
        return None
    if weight is not None and not _param_ok(weight, cnp.PyArray_TYPE(xa), C):
        return None
    cdef fn_seg_shape s
    cdef fn_col_shape c
    cdef int kind = _chan_layout(xa, channel_axis % nd, 0, &s, &c, pair == 2)
    if kind == 0:
        return None
    if kind == 1:
        # the general path's (wk, wr1, wr2): one parameter per unit, or none
        s.wk = 1 if weight is not None else 0
        s.wr1 = 0
        s.wr2 = 0
    dxo = _dx_out(xa, out, (dy, mean, invstd, weight))
    if dxo is None:
        return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef int nt = _fast_threads(num_threads, default_threads, <double>size + (<double>C * 256 if kind == 1 else 0.0))
    if nt == 0:
        return None
    cdef fn_bwd_args p
    cdef double *buf = _bwd_buffers(&p, C, C, C, MODE_MEANVAR, weight, nt)
    p.training = training
    _read_doubles(<cnp.ndarray>mean, buf, C)
    _read_doubles(<cnp.ndarray>invstd, buf + C, C)
    return _bwd_run(kind, &s, &c, xa, <cnp.ndarray>dy, <cnp.ndarray>dxo, &p, buf, C, True)


cdef bint _group_stat_ok(object a, Py_ssize_t N, Py_ssize_t G):
    """A per-(sample, group) statistic as the forward returned it: a C-contiguous
    float32 or float64 ndarray of shape (N, G)."""
    if type(a) is not np.ndarray:
        return False
    cdef cnp.ndarray s = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(s)
    return ((t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64) and cnp.PyArray_NDIM(s) == 2
            and cnp.PyArray_DIM(s, 0) == N and cnp.PyArray_DIM(s, 1) == G
            and cnp.PyArray_IS_C_CONTIGUOUS(s) and cnp.PyArray_ISALIGNED(s))


def group_bwd_fast(object dy, object x, object groups, object mean, object rstd, object weight,
                   object channel_axis, object out, object num_threads, object default_threads):
    """The common case of group_norm_backward (groups >= 1) and of
    instance_norm_backward with instance statistics (groups=-1) with no
    Python-level work: x and dy C-contiguous float32/float64 ndarrays of one shape
    and dtype with their channels on axis 1 or on the last axis, or both NCHW
    arrays in channels-last memory (the layouts of chan_fast), mean and rstd
    C-contiguous float32/float64 arrays of shape (N, groups), weight absent or 1-D
    of x's dtype, out absent or a separate array of x's strides that overlaps none
    of the inputs. Returns (dx, dweight, dbias), or None when the call is not that
    case (the general path then validates and raises as documented). The kernel
    call and its results are those of the general path."""
    cdef int pair = _pair_layout(x, dy)
    if pair == 0 or type(channel_axis) is not int or type(groups) is not int:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(xa)
    if nd < 2 or not -nd <= channel_axis < nd or channel_axis % nd == 0:
        return None
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, channel_axis % nd)
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0)
    cdef Py_ssize_t G = C if groups == -1 else groups
    if G < 1 or C % G != 0:
        return None
    if not (_group_stat_ok(mean, N, G) and _group_stat_ok(rstd, N, G)):
        return None
    if weight is not None and not _param_ok(weight, cnp.PyArray_TYPE(xa), C):
        return None
    cdef fn_seg_shape s
    cdef fn_col_shape c
    cdef int kind = _chan_layout(xa, channel_axis % nd, G, &s, &c, pair == 2)
    if kind == 0:
        return None
    dxo = _dx_out(xa, out, (dy, mean, rstd, weight))
    if dxo is None:
        return None
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef int nt = _fast_threads(num_threads, default_threads,
                                <double>size + (<double>(N * G) * 256 if kind == 1 else 0.0))
    if nt == 0:
        return None
    # the kernel's units: (sample, group), or (sample, column) in channels-last
    cdef fn_bwd_args p
    cdef double *buf = _bwd_buffers(&p, N * G, N * G if kind == 1 else N * C, C, MODE_MEANVAR, weight, nt)
    _read_doubles(<cnp.ndarray>mean, buf, N * G)
    _read_doubles(<cnp.ndarray>rstd, buf + N * G, N * G)
    return _bwd_run(kind, &s, &c, xa, <cnp.ndarray>dy, <cnp.ndarray>dxo, &p, buf, C, True)
