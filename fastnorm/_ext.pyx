# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""Thin wrappers around the C kernels of src_c/.

Callers (fastnorm.normalization and the modules beside it) have already
validated every argument and laid the arrays out in one of the engine's
canonical shapes (see src_c/fastnorm.h); these functions only take the data
pointers, release the GIL, run the kernel and turn its status into an exception.

The fast paths (rows_fast here, chan_fast in _chanfast.pxi, the backward ones in
_bwdfast.pxi, moments_fast in _momentsfast.pxi) are the exception: they check the common calls themselves, in
compiled code, and return None for anything else, which the general path then
validates.
"""
cimport cython
cimport numpy as cnp
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
import numpy as np

cnp.import_array()

cdef extern from "fastnorm.h" nogil:
    ctypedef struct fn_seg_shape:
        Py_ssize_t A, R1, K, R2
        Py_ssize_t xa, xr1, xk
        Py_ssize_t ya, yr1, yk
        Py_ssize_t wk, wr1, wr2
    ctypedef struct fn_col_shape:
        Py_ssize_t A, R, K
        Py_ssize_t xa, xr
        Py_ssize_t ya, yr
        int w_along_r
        Py_ssize_t Kg
    ctypedef struct fn_norm_args:
        int mode
        int stats_given
        double eps
        const void *w
        const void *b
        double *mean
        double *var
        int nthreads
        int stream
        Py_ssize_t mean_frame
    ctypedef struct fn_bwd_args:
        int mode
        int training
        const void *w
        const double *mean
        const double *rstd
        double *dw
        double *db
        Py_ssize_t nparam
        double *s1
        double *s2
        double *cmean
        int nthreads
    int FN_OK, FN_ENOMEM
    int FN_ISA_COUNT
    int fn_seg_norm_f32(const fn_seg_shape *s, const float *x, float *y, const fn_norm_args *p)
    int fn_seg_norm_f64(const fn_seg_shape *s, const double *x, double *y, const fn_norm_args *p)
    int fn_col_norm_f32(const fn_col_shape *s, const float *x, float *y, const fn_norm_args *p)
    int fn_col_norm_f64(const fn_col_shape *s, const double *x, double *y, const fn_norm_args *p)
    int fn_seg_bwd_f32(const fn_seg_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p)
    int fn_seg_bwd_f64(const fn_seg_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p)
    int fn_col_bwd_f32(const fn_col_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p)
    int fn_col_bwd_f64(const fn_col_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p)
    int fn_add_rows_f32(const float *x, Py_ssize_t xs, const float *r, Py_ssize_t rs, float *sum, Py_ssize_t ss,
                        float *y, Py_ssize_t ys, Py_ssize_t M, Py_ssize_t D, const fn_norm_args *p)
    int fn_add_rows_f64(const double *x, Py_ssize_t xs, const double *r, Py_ssize_t rs, double *sum, Py_ssize_t ss,
                        double *y, Py_ssize_t ys, Py_ssize_t M, Py_ssize_t D, const fn_norm_args *p)
    void *fn_scratch_alloc(size_t nbytes)
    void fn_scratch_free(void *ptr)
    int fn_copy_strided(const void *src, const Py_ssize_t *sstride, void *dst, const Py_ssize_t *dstride,
                        const Py_ssize_t *shape, int nd, size_t elsize, int nthreads)
    void fn_copy(const void *src, void *dst, size_t nbytes, int nthreads)
    int fn_isa_supported(int isa)
    int fn_isa_compiled(int isa)
    int fn_isa_active()
    int fn_isa_select(int isa)
    const char *fn_isa_name(int isa)
    int fn_openmp_enabled()
    int fn_omp_max_threads()
    void fn_omp_set_num_threads(int n)
    int fn_usable_cores()
    int fn_forked_child()
    size_t fn_l2_bytes()
    void fn_set_l2_bytes(size_t nbytes)

MODE_MEANVAR = 0
MODE_RMS = 1

include "_bufcache.pxi"


cdef inline void *_ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline void _check(int status) except *:
    if status == FN_ENOMEM:
        raise MemoryError("fastnorm: kernel scratch allocation failed")
    if status != FN_OK:
        raise RuntimeError(f"fastnorm: kernel failed with status {status}")


cdef inline fn_norm_args _args(object w, object b, double eps, int mode, bint stats_given,
                               object mean, object var, int nthreads, bint stream=False):
    cdef fn_norm_args p
    p.mode = mode
    p.stats_given = stats_given
    p.eps = eps
    p.w = _ptr(w)
    p.b = _ptr(b)
    p.mean = <double *>_ptr(mean)
    p.var = <double *>_ptr(var)
    p.nthreads = nthreads
    p.stream = stream
    p.mean_frame = 0
    return p


def seg_norm(cnp.ndarray x, object y, tuple shape, object w, object b, double eps, int mode,
             bint stats_given, cnp.ndarray mean, cnp.ndarray var, int nthreads, bint stream=False):
    """Run the SEG kernel. shape = (A, R1, K, R2, xa, xr1, xk, ya, yr1, yk, wk, wr1, wr2),
    strides in elements relative to the data pointers of x and y. stream: y is
    caller-owned memory (out=) that may take non-temporal stores."""
    cdef fn_seg_shape s
    (s.A, s.R1, s.K, s.R2, s.xa, s.xr1, s.xk, s.ya, s.yr1, s.yk, s.wk, s.wr1, s.wr2) = shape
    cdef fn_norm_args p = _args(w, b, eps, mode, stats_given, mean, var, nthreads, stream)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = _ptr(y)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_seg_norm_f32(&s, <const float *>xp, <float *>yp, &p)
        else:
            status = fn_seg_norm_f64(&s, <const double *>xp, <double *>yp, &p)
    _check(status)


def col_norm(cnp.ndarray x, object y, tuple shape, bint w_along_r, object w, object b, double eps,
             int mode, bint stats_given, cnp.ndarray mean, cnp.ndarray var, int nthreads,
             Py_ssize_t group=1, bint stream=False):
    """Run the COL kernel. shape = (A, R, K, xa, xr, ya, yr), strides in elements;
    group > 1 shares statistics across groups of that many consecutive columns.
    stream: as in seg_norm."""
    cdef fn_col_shape s
    (s.A, s.R, s.K, s.xa, s.xr, s.ya, s.yr) = shape
    s.w_along_r = w_along_r
    s.Kg = group
    cdef fn_norm_args p = _args(w, b, eps, mode, stats_given, mean, var, nthreads, stream)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = _ptr(y)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_col_norm_f32(&s, <const float *>xp, <float *>yp, &p)
        else:
            status = fn_col_norm_f64(&s, <const double *>xp, <double *>yp, &p)
    _check(status)


cdef inline fn_bwd_args _bwd_args(object w, int mode, bint training, cnp.ndarray mean, cnp.ndarray rstd,
                                 object dw, object db, cnp.ndarray scratch, int nthreads):
    """scratch: (3, units) float64, the kernel's per-unit sums and corrected means."""
    cdef fn_bwd_args p
    p.mode = mode
    p.training = training
    p.w = _ptr(w)
    p.mean = <const double *>_ptr(mean)
    p.rstd = <const double *>_ptr(rstd)
    p.dw = <double *>_ptr(dw)
    p.db = <double *>_ptr(db)
    p.nparam = 0 if dw is None else (<cnp.ndarray>dw).shape[0]
    cdef double *sp = <double *>cnp.PyArray_DATA(scratch)
    cdef Py_ssize_t units = scratch.shape[1]
    p.s1 = sp
    p.s2 = sp + units
    p.cmean = sp + 2 * units
    p.nthreads = nthreads
    return p


def seg_bwd(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx, tuple shape, object w, int mode, bint training,
            cnp.ndarray mean, cnp.ndarray rstd, object dw, object db, int nthreads):
    """Backward through the SEG kernel; dy and dx have the shape's y strides.
    dw, db (float64, one per affine parameter) receive the parameter gradients."""
    cdef fn_seg_shape s
    (s.A, s.R1, s.K, s.R2, s.xa, s.xr1, s.xk, s.ya, s.yr1, s.yk, s.wk, s.wr1, s.wr2) = shape
    cdef cnp.ndarray scratch = np.empty((3, s.A * s.K), dtype=np.float64)
    cdef fn_bwd_args p = _bwd_args(w, mode, training, mean, rstd, dw, db, scratch, nthreads)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *dyp = cnp.PyArray_DATA(dy)
    cdef void *dxp = cnp.PyArray_DATA(dx)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_seg_bwd_f32(&s, <const float *>xp, <const float *>dyp, <float *>dxp, &p)
        else:
            status = fn_seg_bwd_f64(&s, <const double *>xp, <const double *>dyp, <double *>dxp, &p)
    _check(status)


def col_bwd(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx, tuple shape, bint w_along_r, object w, int mode,
            bint training, cnp.ndarray mean, cnp.ndarray rstd, object dw, object db, int nthreads,
            Py_ssize_t Kg=1):
    """Backward through the COL kernel; dy and dx have the shape's y strides.
    Kg > 1: units are groups of Kg columns (mean/rstd per group), w one per column."""
    cdef fn_col_shape s
    (s.A, s.R, s.K, s.xa, s.xr, s.ya, s.yr) = shape
    s.w_along_r = w_along_r
    s.Kg = Kg
    cdef cnp.ndarray scratch = np.empty((3, s.A * s.K), dtype=np.float64)
    cdef fn_bwd_args p = _bwd_args(w, mode, training, mean, rstd, dw, db, scratch, nthreads)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *dyp = cnp.PyArray_DATA(dy)
    cdef void *dxp = cnp.PyArray_DATA(dx)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_col_bwd_f32(&s, <const float *>xp, <const float *>dyp, <float *>dxp, &p)
        else:
            status = fn_col_bwd_f64(&s, <const double *>xp, <const double *>dyp, <double *>dxp, &p)
    _check(status)


cdef inline bint _param_ok(object a, int typenum, Py_ssize_t D):
    """A C-contiguous 1-D ndarray of x's dtype and length D."""
    if type(a) is not np.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == 1
            and cnp.PyArray_DIM(arr, 0) == D and cnp.PyArray_IS_C_CONTIGUOUS(arr))


cdef bint _input_ok(object x, int min_nd):
    """x for a fast path: a C-contiguous, aligned float32/float64 ndarray of at
    least min_nd dimensions, not empty."""
    if type(x) is not np.ndarray:
        return False
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int t = cnp.PyArray_TYPE(xa)
    return ((t == cnp.NPY_FLOAT32 or t == cnp.NPY_FLOAT64) and cnp.PyArray_NDIM(xa) >= min_nd
            and cnp.PyArray_SIZE(xa) > 0 and cnp.PyArray_IS_C_CONTIGUOUS(xa) and cnp.PyArray_ISALIGNED(xa))


cdef object _fast_out(cnp.ndarray xa, object out, bint *stream, tuple inputs):
    """The output of a fast path: a new array when out is None (stream set when
    its memory is mapped already), xa when out is x and writable, else out when it
    is a writable, aligned ndarray of x's dtype, shape and strides (C-contiguous for
    a C-contiguous x) that does not overlap x (stream set). None for anything
    else, and for an out that overlaps one of `inputs` (ndarrays or None): the
    general path then validates and raises as documented."""
    cdef cnp.ndarray ya
    cdef int nd = cnp.PyArray_NDIM(xa)
    stream[0] = out is not None
    if out is None:
        return _new_output(xa, stream)
    if out is xa:
        if not cnp.PyArray_ISWRITEABLE(xa):
            return None
        ya = xa
    else:
        if type(out) is not np.ndarray:
            return None
        ya = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(ya) != cnp.PyArray_TYPE(xa) or cnp.PyArray_NDIM(ya) != nd
                or not cnp.PyArray_ISWRITEABLE(ya) or not cnp.PyArray_ISALIGNED(ya)):
            return None
        for i in range(nd):
            # the strides of axes longer than one (as NumPy's contiguity flags)
            if cnp.PyArray_DIM(ya, i) != cnp.PyArray_DIM(xa, i) or (
                    cnp.PyArray_DIM(xa, i) > 1 and cnp.PyArray_STRIDE(ya, i) != cnp.PyArray_STRIDE(xa, i)):
                return None
        # any overlap with x other than x itself is the general path's error
        if _overlaps(xa, ya):
            return None
    for other in inputs:
        if other is not None and _overlaps(<cnp.ndarray>other, ya):
            return None
    return ya


cdef void _read_doubles(cnp.ndarray a, double *dst, Py_ssize_t n) noexcept:
    """The first n values of a C-contiguous float32/float64 array, as doubles."""
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


cdef double *_stats_buffer(fn_norm_args *p, Py_ssize_t units) except NULL:
    """The kernel's statistics in a new block of 2 * units doubles: p.mean at its
    start, p.var after units values. Returns the block, for fn_scratch_free()
    (the calling thread keeps it for its next call: a fresh block of 128 KiB or
    more came with its page faults every call)."""
    cdef double *stats = <double *>fn_scratch_alloc(2 * <size_t>units * sizeof(double))
    if stats == NULL:
        raise MemoryError("fastnorm: statistics allocation failed")
    p.mean = stats
    p.var = stats + units
    return stats


cdef cnp.ndarray _doubles_out(const double *src, Py_ssize_t n, Py_ssize_t step, int typenum):
    """A new 1-D array of x's dtype holding src[0], src[step], ... (n values),
    rounded as NumPy's astype rounds them."""
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray o = cnp.PyArray_EMPTY(1, &dim, typenum, 0)
    cdef Py_ssize_t i
    cdef float *f
    cdef double *d
    if typenum == cnp.NPY_FLOAT32:
        f = <float *>cnp.PyArray_DATA(o)
        for i in range(n):
            f[i] = <float>src[i * step]
    else:
        d = <double *>cnp.PyArray_DATA(o)
        for i in range(n):
            d[i] = src[i * step]
    return o


cdef int _fast_threads(object num_threads, object default_threads, double work) except -1:
    """Threads of a fast-path call: num_threads when it is a valid int, else the
    default when the kernel would use more than one thread for `work` elements
    (FN_SERIAL_ELEMS, src_c/fn_internal.h), else 1. 0: not a fast-path call."""
    if num_threads is not None:
        if type(num_threads) is not int or not 1 <= num_threads <= 1 << 20:
            return 0
        return num_threads
    return default_threads() if work >= 65536 else 1


def rows_fast(object x, object weight, object bias, object eps, object out, int mode,
              object num_threads, object default_threads, bint return_stats=False):
    """The common case of layer_norm / rms_norm with no Python-level work: x a
    C-contiguous float32/float64 ndarray normalized over its last axis, weight and
    bias absent or 1-D of x's dtype, eps a non-negative float, out absent or x or a
    separate C-contiguous array. Returns y (with return_stats, (y, mean, rstd), or
    (y, rstd) for RMS, as the public functions return them), or None when the call
    is not that case (the general path then validates and raises as documented)."""
    if not _input_ok(x, 1) or type(eps) is not float:
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int typenum = cnp.PyArray_TYPE(xa)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(xa)
    cdef Py_ssize_t D = cnp.PyArray_DIM(xa, nd - 1)
    cdef double e = <double>eps
    if not e >= 0:
        return None
    if weight is not None and not _param_ok(weight, typenum, D):
        return None
    if bias is not None and (weight is None or not _param_ok(bias, typenum, D)):
        return None
    cdef bint stream = False
    yo = _fast_out(xa, out, &stream, (weight, bias))
    if yo is None:
        return None
    cdef cnp.ndarray ya = <cnp.ndarray>yo
    # fn_work(rows, D) (src_c/fn_internal.h)
    cdef int nt = _fast_threads(num_threads, default_threads, <double>size + <double>(size // D) * 256)
    if nt == 0:
        return None
    cdef fn_seg_shape s
    s.A = 1; s.R1 = 1; s.K = size // D; s.R2 = D
    s.xa = 0; s.xr1 = 0; s.xk = D
    s.ya = 0; s.yr1 = 0; s.yk = D
    s.wk = 0; s.wr1 = 0; s.wr2 = 1
    cdef fn_norm_args p = _args(weight, bias, e, mode, False, None, None, nt, stream)
    # the rows' statistics, for return_stats (as the layers ask); else the kernel's own
    cdef Py_ssize_t rows = size // D
    cdef double *stats = NULL
    if return_stats:
        stats = _stats_buffer(&p, rows)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *yp = cnp.PyArray_DATA(ya)
    cdef int status
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            status = fn_seg_norm_f32(&s, <const float *>xp, <float *>yp, &p)
        else:
            status = fn_seg_norm_f64(&s, <const double *>xp, <double *>yp, &p)
    if status != FN_OK or not return_stats:
        fn_scratch_free(stats)
        _check(status)
        return ya
    try:
        mean, rstd = _stats_out(stats, stats + rows, rows, 1, e, typenum)
    finally:
        fn_scratch_free(stats)
    mean.shape = rstd.shape = x.shape[:nd - 1]
    return (ya, rstd) if mode == MODE_RMS else (ya, mean, rstd)


cdef inline bint _overlaps(cnp.ndarray a, cnp.ndarray b):
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


def add_rows(cnp.ndarray x, cnp.ndarray r, cnp.ndarray s, cnp.ndarray y, tuple strides, Py_ssize_t M,
             Py_ssize_t D, object w, object b, double eps, int mode, object mean, object var, int nthreads,
             bint stream=False):
    """Fused s = x + r, y = norm(s) over M rows of D contiguous values.
    strides = row strides (x, r, s, y) in elements."""
    cdef Py_ssize_t xs, rs, ss, ys
    (xs, rs, ss, ys) = strides
    cdef fn_norm_args p = _args(w, b, eps, mode, False, mean, var, nthreads, stream)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *rp = cnp.PyArray_DATA(r)
    cdef void *sp = cnp.PyArray_DATA(s)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_add_rows_f32(<const float *>xp, xs, <const float *>rp, rs, <float *>sp, ss,
                                     <float *>yp, ys, M, D, &p)
        else:
            status = fn_add_rows_f64(<const double *>xp, xs, <const double *>rp, rs, <double *>sp, ss,
                                     <double *>yp, ys, M, D, &p)
    _check(status)


def omp_copy(cnp.ndarray src, cnp.ndarray dst, int num_threads=0):
    """Copy src into the preallocated dst with an OpenMP team of num_threads.

    The benchmarks' bandwidth reference: one read and one write of the same bytes.
    Both arrays must be C-contiguous with the same number of bytes.
    """
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("omp_copy: src and dst must be C-contiguous")
    if src.nbytes != dst.nbytes:
        raise ValueError("omp_copy: src and dst differ in size")
    if not dst.flags.writeable:
        raise ValueError("omp_copy: dst is read-only")
    cdef size_t nbytes = src.nbytes
    cdef const void *sp = cnp.PyArray_DATA(src)
    cdef void *dp = cnp.PyArray_DATA(dst)
    cdef int nt = num_threads if num_threads > 0 else fn_omp_max_threads()
    with nogil:
        fn_copy(sp, dp, nbytes, nt)


def copy_into(cnp.ndarray src, cnp.ndarray dst, int num_threads=0):
    """dst[...] = src for two aligned arrays of one shape and dtype (float32 or
    float64) whose memory orders differ (a transposed view into C order), in
    tiles of their two innermost axes (src_c/fn_transpose.c); NumPy's
    element-by-element copy strides through one of them. Other arrays: np.copyto."""
    cdef int nd = cnp.PyArray_NDIM(src)
    cdef Py_ssize_t isz = src.itemsize
    cdef Py_ssize_t sst[32]
    cdef Py_ssize_t dst_st[32]
    cdef Py_ssize_t shp[32]
    cdef int d
    # (.shape and .strides of a typed ndarray are C arrays: compared per axis)
    ok = (src.dtype == dst.dtype and src.dtype.kind == "f" and isz in (4, 8) and 1 <= nd <= 32
          and cnp.PyArray_NDIM(dst) == nd and src.flags.aligned and dst.flags.aligned
          and dst.flags.writeable and not np.may_share_memory(src, dst))
    if ok:
        for d in range(nd):
            if (cnp.PyArray_DIM(src, d) != cnp.PyArray_DIM(dst, d) or cnp.PyArray_STRIDE(src, d) % isz
                    or cnp.PyArray_STRIDE(dst, d) % isz):
                ok = False
                break
            sst[d] = cnp.PyArray_STRIDE(src, d) // isz
            dst_st[d] = cnp.PyArray_STRIDE(dst, d) // isz
            shp[d] = cnp.PyArray_DIM(src, d)
    if not ok:
        np.copyto(dst, src)
        return
    cdef const void *sp = cnp.PyArray_DATA(src)
    cdef void *dp = cnp.PyArray_DATA(dst)
    cdef int nt = num_threads if num_threads > 0 else fn_omp_max_threads()
    cdef int status
    with nogil:
        status = fn_copy_strided(sp, sst, dp, dst_st, shp, nd, <size_t>isz, nt)
    _check(status)


_ISA_IDS = {fn_isa_name(i).decode(): i for i in range(FN_ISA_COUNT)}


def isa_name():
    """Name of the active SIMD path: 'generic', 'avx2' or 'avx512'."""
    return fn_isa_name(fn_isa_active()).decode()


def compiled_isas():
    """SIMD paths compiled into this build."""
    return [n for n, i in _ISA_IDS.items() if fn_isa_compiled(i)]


def supported_isas():
    """SIMD paths compiled in and supported by this CPU and OS."""
    return [n for n, i in _ISA_IDS.items() if fn_isa_supported(i)]


def select_isa(str name):
    """Make `name` the active SIMD path; ValueError if it is unknown or unsupported."""
    if name not in _ISA_IDS:
        raise ValueError(f"unknown SIMD path {name!r}; expected one of {sorted(_ISA_IDS)}")
    if fn_isa_select(_ISA_IDS[name]) != 0:
        raise ValueError(f"SIMD path {name!r} is not supported here (supported: {supported_isas()})")


def openmp_enabled():
    """True when the extension was built with OpenMP."""
    return bool(fn_openmp_enabled())


def omp_max_threads():
    """omp_get_max_threads() of the calling thread (1 without OpenMP)."""
    return fn_omp_max_threads()


def omp_set_num_threads(int n):
    """omp_set_num_threads(n) for the calling thread (no-op without OpenMP)."""
    fn_omp_set_num_threads(n)


def usable_cores():
    """Processors OpenMP may use (the affinity mask)."""
    return fn_usable_cores()


def forked_child():
    """True in a child created by fork() after fastnorm was imported (kernels then run serially)."""
    return bool(fn_forked_child())


def l2_cache_bytes(nbytes=None):
    """Bytes of one core's L2 cache as the kernels size their walks by it.

    Detected on first use (2 MiB where the system reports nothing). With
    `nbytes`, set it for the calls that follow (0: detect again) and return the
    value before; the tests take every walk this way. Results do not depend on it.
    """
    cdef size_t before = fn_l2_bytes()
    if nbytes is not None:
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        fn_set_l2_bytes(<size_t>nbytes)
    return before


include "_lrn.pxi"
include "_chanfast.pxi"
include "_bwdfast.pxi"
include "_momentsfast.pxi"
