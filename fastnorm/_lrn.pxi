# Included by _ext.pyx: thin wrappers around the local response normalization
# kernels (src_c/lrn.h), in the same module so they share the engine's thread budget
# and its SIMD path (fn_lrn_* dispatch through the table fn_runtime.c selected).
"""LRN wrappers.

Callers (fastnorm.family) have already validated every argument and described
the arrays as x[o, c, i] with element strides; these functions only take the
data pointers, release the GIL, run the kernel and turn its status into an
exception.
"""

cdef extern from "lrn.h" nogil:
    ctypedef struct fn_lrn_shape:
        Py_ssize_t O, C, Ni
        Py_ssize_t xo, xc, xi
        Py_ssize_t yo, yc, yi
        Py_ssize_t go, gc, gi
    ctypedef struct fn_lrn_args:
        Py_ssize_t before, after
        double scale
        double beta, k
        int nthreads
    int fn_lrn_f32(const fn_lrn_shape *s, const float *x, float *y, const fn_lrn_args *p)
    int fn_lrn_f64(const fn_lrn_shape *s, const double *x, double *y, const fn_lrn_args *p)
    int fn_lrn_bwd_f32(const fn_lrn_shape *s, const float *x, const float *dy, float *dx, const fn_lrn_args *p)
    int fn_lrn_bwd_f64(const fn_lrn_shape *s, const double *x, const double *dy, double *dx, const fn_lrn_args *p)


cdef inline void _lrn_check(int status) except *:
    if status == FN_ENOMEM:
        raise MemoryError("fastnorm: LRN kernel scratch allocation failed")
    if status == 2:  # FN_EINVAL
        raise ValueError("fastnorm: LRN kernel rejected its shape")
    if status != FN_OK:
        raise RuntimeError(f"fastnorm: LRN kernel failed with status {status}")


cdef inline fn_lrn_args _lrn_args(Py_ssize_t before, Py_ssize_t after, double scale, double beta,
                              double k, int nthreads):
    cdef fn_lrn_args p
    p.before = before
    p.after = after
    p.scale = scale
    p.beta = beta
    p.k = k
    p.nthreads = nthreads
    return p


def lrn(cnp.ndarray x, cnp.ndarray y, tuple shape, Py_ssize_t before, Py_ssize_t after,
        double scale, double beta, double k, int nthreads):
    """Run the forward kernel. shape = (O, C, Ni, xo, xc, xi, yo, yc, yi), strides in
    elements relative to the data pointers of x and y (same dtype)."""
    cdef fn_lrn_shape s
    (s.O, s.C, s.Ni, s.xo, s.xc, s.xi, s.yo, s.yc, s.yi) = shape
    s.go = s.gc = s.gi = 0
    cdef fn_lrn_args p = _lrn_args(before, after, scale, beta, k, nthreads)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_lrn_f32(&s, <const float *>xp, <float *>yp, &p)
        else:
            status = fn_lrn_f64(&s, <const double *>xp, <double *>yp, &p)
    _lrn_check(status)


def lrn_backward(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dx, tuple shape, Py_ssize_t before,
                 Py_ssize_t after, double scale, double beta, double k, int nthreads):
    """Run the backward kernel. shape = (O, C, Ni, xo, xc, xi, dxo, dxc, dxi, dyo, dyc, dyi)."""
    cdef fn_lrn_shape s
    (s.O, s.C, s.Ni, s.xo, s.xc, s.xi, s.yo, s.yc, s.yi, s.go, s.gc, s.gi) = shape
    cdef fn_lrn_args p = _lrn_args(before, after, scale, beta, k, nthreads)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *gp = cnp.PyArray_DATA(dy)
    cdef void *dp = cnp.PyArray_DATA(dx)
    cdef int status
    cdef bint is32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    with nogil:
        if is32:
            status = fn_lrn_bwd_f32(&s, <const float *>xp, <const float *>gp, <float *>dp, &p)
        else:
            status = fn_lrn_bwd_f64(&s, <const double *>xp, <const double *>gp, <double *>dp, &p)
    _lrn_check(status)



