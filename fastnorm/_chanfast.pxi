# The common case of batch_norm, group_norm and instance_norm, compiled. Their
# Python-level validation and layout planning take 8-17 us a call, more than
# the kernel needs for a (1, 64, 14, 14) input. Included by _ext.pyx.


cdef int _chan_layout(cnp.ndarray xa, Py_ssize_t cax, Py_ssize_t G, fn_seg_shape *s, fn_col_shape *c,
                      bint nhwc=False):
    """The kernel shape the general path plans for a C-contiguous x with channel
    axis cax (nhwc: an x of NCHW shape in channels-last memory, see _nhwc_memory;
    cax must then be 1): 1 (SEG, in s), 2 (COL, in c) or 0 (a case left to the
    general path: a channel axis that is neither 1 nor the last, or a layout whose
    size-1 axes make the general planner merge axes differently).

    G == 0: BatchNorm, statistics per channel (fastnorm._layout.plan); G >= 1:
    statistics per sample and group of C / G channels (fastnorm.grouped._shape).
    """
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, cax)
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0)
    cdef Py_ssize_t S = size // (N * C), Cg
    # BatchNorm over (N, C, 1, ..., 1) is BatchNorm over the (N, C) table (the
    # general planner drops the size-1 axes)
    cdef bint table = G == 0 and cax == 1 and S == 1
    if nhwc and cax != 1:
        return 0
    if cax == 1 and (nd >= 3 or G > 0) and not table and not nhwc:
        if G == 0:
            # NCHW BatchNorm: units are channels, each N planes of S values
            if C < 2:
                return 0
            s.A = 1; s.R1 = N; s.K = C; s.R2 = S
            s.xa = 0; s.xr1 = C * S if N > 1 else 0; s.xk = S
            s.wk = 1; s.wr1 = 0; s.wr2 = 0
        else:
            # units (n, g): Cg planes of S values, the affine constant per plane
            Cg = C // G
            s.A = N; s.R1 = Cg; s.K = G; s.R2 = S
            s.xa = C * S; s.xr1 = S; s.xk = Cg * S
            s.wk = Cg; s.wr1 = 1; s.wr2 = 0
        s.ya = s.xa; s.yr1 = s.xr1; s.yk = s.xk
        return 1
    if (cax == nd - 1 or table or nhwc) and C >= 2:
        c.K = C
        c.w_along_r = 0
        if G == 0:
            # channels-last BatchNorm: one column per channel over every row (a
            # single row for inference; training needs two, checked by the callers)
            c.A = 1; c.R = size // C; c.xa = 0; c.Kg = 1
        else:
            # per-sample columns, statistics shared by groups of C / G columns
            if S < 2:
                return 0
            c.A = N; c.R = S; c.xa = S * C; c.Kg = C // G
        c.xr = C; c.ya = c.xa; c.yr = C
        return 2
    return 0


cdef bint _nhwc_memory(object x):
    """x an aligned float32/float64 ndarray of NCHW shape (3 or more axes, not
    empty) whose memory is channels-last: axes (0, 2, ..., 1) C-contiguous, as
    NumPy sees a PyTorch channels_last tensor. The strides of axes of length one
    do not count."""
    if type(x) is not np.ndarray:
        return False
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    if ((t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or nd < 3 or cnp.PyArray_SIZE(xa) == 0
            or not cnp.PyArray_ISALIGNED(xa)):
        return False
    cdef Py_ssize_t expected = cnp.PyArray_ITEMSIZE(xa)
    cdef int i, d
    for i in range(nd):
        # axes from the innermost: 1 (channels), nd - 1, ..., 2, then 0
        d = 1 if i == 0 else (nd - i if i < nd - 1 else 0)
        if cnp.PyArray_DIM(xa, d) > 1 and cnp.PyArray_STRIDE(xa, d) != expected:
            return False
        expected *= cnp.PyArray_DIM(xa, d)
    return True


cdef inline bint _running_ok(object r, Py_ssize_t C, bint writable):
    """A running statistic the fast path reads (and with writable, updates):
    a C-contiguous 1-D float32/float64 ndarray of length C."""
    if type(r) is not np.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>r
    cdef int t = cnp.PyArray_TYPE(a)
    return ((t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64) and cnp.PyArray_NDIM(a) == 1
            and cnp.PyArray_DIM(a, 0) == C and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and (not writable or cnp.PyArray_ISWRITEABLE(a)))


cdef void _running_update(cnp.ndarray r, const double *batch, double scale, double m, Py_ssize_t C) noexcept:
    """r = (1 - m) * r + m * (batch * scale), rounded as batch_norm's NumPy
    expression rounds it: for float32 r, (1 - m) * r is a float32 product (NumPy
    treats the Python float as weak), the sum is float64, stored as float32."""
    cdef Py_ssize_t i
    cdef float *f
    cdef double *d
    cdef float keep32
    cdef double v
    if cnp.PyArray_TYPE(r) == cnp.NPY_FLOAT32:
        f = <float *>cnp.PyArray_DATA(r)
        keep32 = <float>(1.0 - m)
        for i in range(C):
            v = batch[i] * scale if scale != 1.0 else batch[i]
            f[i] = <float>(<double>(keep32 * f[i]) + m * v)
    else:
        d = <double *>cnp.PyArray_DATA(r)
        for i in range(C):
            v = batch[i] * scale if scale != 1.0 else batch[i]
            d[i] = (1.0 - m) * d[i] + m * v


def chan_fast(object x, object weight, object bias, object eps, object out, object groups,
              object channel_axis, object running_mean, object running_var, object training,
              object momentum, object num_threads, object default_threads, bint return_stats=False):
    """The common case of batch_norm (groups=0), instance_norm with instance
    statistics (groups=-1) and group_norm (groups >= 1), with no Python-level
    work: x a C-contiguous float32/float64 ndarray with its channels on axis 1 or
    on the last axis, weight and bias absent or 1-D of x's dtype (bias only with
    weight), eps and momentum Python floats, out absent or x or a separate
    C-contiguous array; for BatchNorm, running statistics absent or C-contiguous
    float32/float64 vectors. Returns y (with return_stats, (y, mean, rstd) as the
    public functions return them), or None when the call is not that case (the
    general path then validates and raises as documented). The kernel call and
    its results are those of the general path."""
    # NCHW arrays in channels-last memory: the channels-last kernels, as the
    # general path plans them (its validation and planning cost 10 us a call)
    cdef bint nhwc = not _input_ok(x, 2) and _nhwc_memory(x)
    if (not (nhwc or _input_ok(x, 2)) or type(eps) is not float or type(groups) is not int
            or type(channel_axis) is not int or type(momentum) is not float):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef double e = <double>eps
    cdef double m = <double>momentum
    if not e >= 0 or not 0.0 <= m <= 1.0 or not -nd <= channel_axis < nd:
        return None
    cdef Py_ssize_t cax = channel_axis % nd
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, cax)
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0)
    cdef Py_ssize_t G = groups
    if cax == 0 or G < -1 or (G > 0 and C % G != 0):
        return None
    if G == -1:
        # InstanceNorm: one group per channel, and more than one value in each
        if nd < 3 or size // (N * C) < 2:
            return None
        G = C
    if weight is not None and not _param_ok(weight, typenum, C):
        return None
    if bias is not None and (weight is None or not _param_ok(bias, typenum, C)):
        return None
    # BatchNorm only: training defaults to "no running statistics"
    cdef bint has_running = running_mean is not None or running_var is not None
    cdef bint train = not has_running if training is None else training is True
    if G > 0:
        if has_running or training is not True:
            return None
    else:
        if training is not None and type(training) is not bool:
            return None
        if has_running and not (_running_ok(running_mean, C, train) and _running_ok(running_var, C, train)):
            return None
        if (not train and not has_running) or (train and size // C < 2):
            return None
    cdef fn_seg_shape s
    cdef fn_col_shape c
    cdef int kind = _chan_layout(xa, cax, G, &s, &c, nhwc)
    if kind == 0:
        return None
    cdef bint stream = False
    yo = _fast_out(xa, out, &stream, (weight, bias, running_mean, running_var))
    if yo is None:
        return None
    cdef cnp.ndarray ya = <cnp.ndarray>yo
    # fn_work(units, unit length) for SEG, A * R * K for COL (src_c/fn_internal.h)
    cdef double work = <double>size + (<double>(s.A * s.K) * 256 if kind == 1 else 0.0)
    cdef int nt = _fast_threads(num_threads, default_threads, work)
    if nt == 0:
        return None
    cdef fn_norm_args p = _args(weight, bias, e, MODE_MEANVAR, has_running and not train, None, None, nt, stream)
    # the statistics of every unit: read from the running statistics (inference
    # BatchNorm), or kept for their update or for return_stats; else the
    # kernel's own
    cdef Py_ssize_t U = s.A * s.K if kind == 1 else c.A * c.K
    cdef double *stats = NULL
    if has_running or return_stats:
        stats = _stats_buffer(&p, U)
        if has_running and not train:
            _read_doubles(<cnp.ndarray>running_mean, p.mean, C)
            _read_doubles(<cnp.ndarray>running_var, p.var, C)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *yp = cnp.PyArray_DATA(ya)
    cdef int status
    cdef bint is32 = typenum == cnp.NPY_FLOAT32
    with nogil:
        if kind == 1 and is32:
            status = fn_seg_norm_f32(&s, <const float *>xp, <float *>yp, &p)
        elif kind == 1:
            status = fn_seg_norm_f64(&s, <const double *>xp, <double *>yp, &p)
        elif is32:
            status = fn_col_norm_f32(&c, <const float *>xp, <float *>yp, &p)
        else:
            status = fn_col_norm_f64(&c, <const double *>xp, <double *>yp, &p)
    if status == FN_OK and has_running and train:
        n = size // C
        _running_update(<cnp.ndarray>running_mean, p.mean, 1.0, m, C)
        _running_update(<cnp.ndarray>running_var, p.var, n / (n - 1.0), m, C)
    if status != FN_OK or not return_stats:
        fn_scratch_free(stats)
        _check(status)
        return ya
    # grouped channels-last statistics come per channel: one of each group
    cdef Py_ssize_t step = C // G if kind == 2 and G > 0 else 1
    try:
        mean, rstd = _stats_out(stats, stats + U, U // step, step, e, typenum)
    finally:
        fn_scratch_free(stats)
    if G > 0:
        mean.shape = rstd.shape = (N, G)
    return ya, mean, rstd


@cython.cdivision(True)
cdef tuple _stats_out(const double *mean, const double *var, Py_ssize_t n, Py_ssize_t step, double eps,
                      int typenum):
    """(mean, 1 / sqrt(var + eps)) of every step-th unit, in x's dtype, rounded as
    the general path's NumPy expressions round them (IEEE division: a constant
    unit with eps = 0 has rstd inf, as there, and does not raise after the
    outputs and running statistics are written)."""
    cdef double *rstd = <double *>malloc(<size_t>n * sizeof(double))
    if rstd == NULL:
        raise MemoryError("fastnorm: statistics allocation failed")
    cdef Py_ssize_t i
    for i in range(n):
        rstd[i] = 1.0 / sqrt(var[i * step] + eps)
    try:
        return _doubles_out(mean, n, step, typenum), _doubles_out(rstd, n, 1, typenum)
    finally:
        free(rstd)
