/* lrn.h - the C interface of the local response normalization kernels.
 *
 * LRN normalizes each element by a window of its neighbours along the channel
 * axis:  y[c] = x[c] * (k + scale * sum_{j=c-before}^{c+after} x[j]^2)^(-beta),
 * channels outside [0, C) counting as zero (PyTorch pads size//2 before and
 * (size-1)//2 after, scale = alpha/size).
 *
 * Any layout is described as x[o, c, i]: O * Ni positions, each with C channels,
 * strides in elements (ptrdiff_t, signed, so reversed axes need no copy). The
 * kernels tile the i axis (Ni), so the smaller position stride belongs there. They
 * never allocate per element, touch no Python object and return an FN_* status
 * (FN_OK, FN_ENOMEM, FN_EINVAL from fastnorm.h).
 */
#ifndef FASTNORM_LRN_H
#define FASTNORM_LRN_H

#include <stddef.h>
#include "fastnorm.h"

typedef struct {
    ptrdiff_t O, C, Ni;
    ptrdiff_t xo, xc, xi;    /* strides of x */
    ptrdiff_t yo, yc, yi;    /* strides of y (dx in the backward) */
    ptrdiff_t go, gc, gi;    /* strides of dy (backward only) */
} fn_lrn_shape;

typedef struct {
    ptrdiff_t before, after; /* window: channels c-before .. c+after, both >= 0 */
    double scale;            /* alpha / size */
    double beta, k;
    int nthreads;            /* upper bound on the OpenMP team */
} fn_lrn_args;

/* y may equal x (same strides: in place). */
int fn_lrn_f32(const fn_lrn_shape *s, const float *x, float *y, const fn_lrn_args *p);
int fn_lrn_f64(const fn_lrn_shape *s, const double *x, double *y, const fn_lrn_args *p);

/* dx = dy * D^-beta - 2*scale*beta * x * sum_{c: j in window(c)} dy[c] * x[c] * D[c]^(-beta-1),
 * D the forward divisor base. dx may equal dy or x (same strides). */
int fn_lrn_bwd_f32(const fn_lrn_shape *s, const float *x, const float *dy, float *dx, const fn_lrn_args *p);
int fn_lrn_bwd_f64(const fn_lrn_shape *s, const double *x, const double *dy, double *dx, const fn_lrn_args *p);

int fn_lrn_openmp_enabled(void);

#endif
