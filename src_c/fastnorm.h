/* fastnorm.h - the C interface of fastnorm's kernels.
 *
 * Every normalization is "statistics over a reduced set of axes, then an affine
 * transform". The Python layer maps an op and an array layout onto one of two
 * canonical shapes, each with strides in elements (ptrdiff_t, so arrays above
 * 2^31 elements work):
 *
 *   SEG: x[a, r1, k, r2], statistics per unit (a, k) over (r1, r2), where r2 is
 *        contiguous. Rows (LayerNorm over trailing axes: A rows, R1 = K = 1),
 *        NCHW planes (BatchNorm: A = 1, R1 = N, K = C, R2 = H*W), groups.
 *   COL: x[a, r, k], statistics per unit (a, k) over r, where k is contiguous.
 *        Columns of an (N, C) table, channels-last BatchNorm (A = 1),
 *        channels-first LayerNorm (A = N, R = C, K = H*W).
 *
 * Units are numbered u = a*K + k. The kernels never allocate per element, never
 * touch Python objects and return an FN_* status.
 */
#ifndef FASTNORM_H
#define FASTNORM_H

#include <stddef.h>

enum { FN_OK = 0, FN_ENOMEM = 1, FN_EINVAL = 2 };

/* Statistics: mean and variance (LayerNorm, BatchNorm), or the mean of squares (RMSNorm). */
enum { FN_MODE_MEANVAR = 0, FN_MODE_RMS = 1 };

typedef struct {
    ptrdiff_t A, R1, K, R2;
    ptrdiff_t xa, xr1, xk;   /* strides of x; r2 has stride 1 */
    ptrdiff_t ya, yr1, yk;   /* strides of y; r2 has stride 1 */
    ptrdiff_t wk, wr1, wr2;  /* affine parameter of element (r1, k, r2): w[k*wk + r1*wr1 + r2*wr2], wr2 in {0, 1} */
} fn_seg_shape;

typedef struct {
    ptrdiff_t A, R, K;
    ptrdiff_t xa, xr;        /* strides of x; k has stride 1 */
    ptrdiff_t ya, yr;        /* strides of y; k has stride 1 */
    int w_along_r;           /* 0: affine parameter indexed by k (BatchNorm); 1: by r (LayerNorm) */
    ptrdiff_t Kg;            /* statistics shared by groups of Kg consecutive columns
                                (channels-last GroupNorm); 1: per column */
} fn_col_shape;

typedef struct {
    int mode;                /* FN_MODE_* */
    int stats_given;         /* 1: mean/var are inputs and no reduction runs (inference BatchNorm) */
    double eps;
    const void *w, *b;       /* NULL or x's dtype, contiguous; b needs w (no w: no affine) */
    double *mean, *var;      /* length A*K: outputs (NULL when not wanted), or inputs when stats_given.
                                var is the biased variance (mean of squares in FN_MODE_RMS) */
    int nthreads;            /* upper bound on the OpenMP team; the kernel may use fewer */
    int stream;              /* 1: y is memory the caller already owns (out=), so outputs too
                                large for cache may be written with non-temporal stores. 0 for
                                fresh allocations: their first-touch page zeroing leaves dirty
                                lines in cache that streaming stores would have to evict */
    ptrdiff_t mean_frame;    /* 0: absolute means. Internal, column statistics without y only:
                                column k's mean is left relative to the first row's value of
                                column k % mean_frame, for a caller that merges columns */
} fn_norm_args;

/* y == NULL computes statistics only. y may equal x (in place). */
int fn_seg_norm_f32(const fn_seg_shape *s, const float *x, float *y, const fn_norm_args *p);
int fn_seg_norm_f64(const fn_seg_shape *s, const double *x, double *y, const fn_norm_args *p);
int fn_col_norm_f32(const fn_col_shape *s, const float *x, float *y, const fn_norm_args *p);
int fn_col_norm_f64(const fn_col_shape *s, const double *x, double *y, const fn_norm_args *p);

/* Backward. With G = dy * (affine parameter along the reduced axes, else 1) and
 * xhat = (x - mean) * rstd, per unit S1 = sum(G), S2 = sum(G * xhat); then
 *   dx = wu * rstd * (G - S1/n - xhat * S2/n)      (training; S1 term dropped in RMS)
 *   dx = wu * rstd * G                              (training == 0: constant statistics)
 * where wu is the per-unit parameter (BatchNorm) or 1. Parameter gradients are
 * sum(dy * xhat) and sum(dy) over everything but the parameter's own index. dy
 * and dx have the shape's y strides (x may be laid out otherwise: a strided view
 * of x takes no copy when dy is whole). */
typedef struct {
    int mode;                /* FN_MODE_MEANVAR or FN_MODE_RMS */
    int training;
    const void *w;           /* NULL or the weight (x's dtype), indexed as in forward */
    const double *mean, *rstd;   /* per unit; mean is ignored in RMS mode */
    double *dw, *db;         /* NULL or outputs, one per affine parameter (db NULL for RMS) */
    ptrdiff_t nparam;
    double *s1, *s2;         /* scratch of one double per unit */
    double *cmean;           /* scratch of one double per unit: the mean actually used. In
                                training the given mean (often rounded to x's dtype) is
                                corrected by mean(x - mean) computed in the same pass */
    int nthreads;
} fn_bwd_args;

int fn_seg_bwd_f32(const fn_seg_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p);
int fn_seg_bwd_f64(const fn_seg_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p);
int fn_col_bwd_f32(const fn_col_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p);
int fn_col_bwd_f64(const fn_col_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p);

/* Fused residual add + row normalization (LayerNorm / RMSNorm over the last
 * axis): sum = x + r (sum may be r), y = norm(sum); M rows of D contiguous values
 * at the given row strides. p->mean/var may be NULL (per-row outputs otherwise). */
int fn_add_rows_f32(const float *x, ptrdiff_t xs, const float *r, ptrdiff_t rs, float *sum, ptrdiff_t ss,
                    float *y, ptrdiff_t ys, ptrdiff_t M, ptrdiff_t D, const fn_norm_args *p);
int fn_add_rows_f64(const double *x, ptrdiff_t xs, const double *r, ptrdiff_t rs, double *sum, ptrdiff_t ss,
                    double *y, ptrdiff_t ys, ptrdiff_t M, ptrdiff_t D, const fn_norm_args *p);

/* Per-call work arrays (fn_scratch.c): malloc and free, with the blocks a thread
 * frees kept for its next calls (the kernels' own, and the wrappers' statistics
 * and sums: a fresh block above malloc's mmap threshold costs its page faults
 * on every call). */
void *fn_scratch_alloc(size_t bytes);
void fn_scratch_free(void *p);

/* dst = src for nd-dimensional arrays of one shape whose element strides
 * (signed, in elements of 4 or 8 bytes) differ, in tiles of their two innermost
 * axes (fn_transpose.c): a layout change without striding through memory. */
int fn_copy_strided(const void *src, const ptrdiff_t *sstride, void *dst, const ptrdiff_t *dstride,
                    const ptrdiff_t *shape, int nd, size_t elsize, int nthreads);

/* An OpenMP copy of nbytes through the cache, the bandwidth reference of the
 * benchmarks (a vector loop per chunk, see copy_template.h). */
void fn_copy(const void *src, void *dst, size_t nbytes, int nthreads);

/* Runtime: SIMD path, OpenMP, threads. */
enum { FN_ISA_GENERIC = 0, FN_ISA_AVX2 = 1, FN_ISA_AVX512 = 2, FN_ISA_COUNT = 3 };
int fn_isa_supported(int isa);   /* compiled in, and the CPU and OS support it */
int fn_isa_compiled(int isa);
int fn_isa_active(void);
int fn_isa_select(int isa);      /* 0 on success, -1 when not supported */
const char *fn_isa_name(int isa);
int fn_openmp_enabled(void);
int fn_omp_max_threads(void);    /* omp_get_max_threads(), 1 without OpenMP */
void fn_omp_set_num_threads(int n);
int fn_usable_cores(void);
int fn_forked_child(void);       /* 1 in a child process created by fork() after import */
/* Bytes of one core's L2 cache as the kernels size their walks by it: detected
 * (sysconf) on first use, 2 MiB where nothing is reported; fn_set_l2_bytes(0)
 * detects again, any other value overrides (tests take both walks this way). */
size_t fn_l2_bytes(void);
void fn_set_l2_bytes(size_t bytes);

#endif
