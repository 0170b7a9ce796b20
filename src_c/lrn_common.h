/* lrn_common.h - local response normalization: the dtype-free helpers on the
 * double scratch, shared by both dtypes of lrn_template.h.
 *
 * Included by norm_isa.h, so like the rest of the engine the LRN kernels are
 * compiled once per SIMD path and reached through the function table that
 * fn_runtime.c picks at import; everything here is static for that reason.
 *
 * Window sums without cancellation: a running sum that adds the entering square
 * and subtracts the leaving one loses the small values after a large one went
 * by. Instead the padded channel axis is cut into blocks of the window length L;
 * every window spans at most two blocks, so its sum is a suffix sum of one block
 * plus a prefix sum of the next (van Herk / Gil-Werman). Both are plain sums of
 * at most L terms, in double: every window sum is as accurate as summing it
 * directly, at three additions per element whatever the window length.
 *
 * Parallelism: positions are tiled (o, block of i); each tile holds all C
 * channels of up to LRN_TILE positions in per-thread scratch allocated once per
 * call, so a tile reads x once and may write its output over it (in place).
 */
#ifndef FN_LRN_COMMON_H
#define FN_LRN_COMMON_H

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "fn_internal.h"
#include "lrn.h"
#if defined(__SSE2__)
#include <emmintrin.h>   /* baseline on x86-64; the AVX units get the VEX forms */
#define LRN_SSE2 1
#endif

/* Most positions per tile, and the scratch (doubles) a thread may use for one. */
#define LRN_TILE 64
#define LRN_SCRATCH_DOUBLES 65536

enum { LRN_POW_GENERAL = 0, LRN_POW_075, LRN_POW_05, LRN_POW_1, LRN_POW_0 };

static int lrn_pow_kind(double beta)
{
    if (beta == 0.75) return LRN_POW_075;
    if (beta == 0.5) return LRN_POW_05;
    if (beta == 1.0) return LRN_POW_1;
    if (beta == 0.0) return LRN_POW_0;
    return LRN_POW_GENERAL;
}

/* r[b] = base[b]^-beta for nb values; the common betas without pow(). sqrt()
 * may set errno, which keeps the compiler from vectorizing it: the SSE2 forms
 * (correctly rounded, like sqrt) do the bulk on x86-64. */
static void lrn_rpow(const double *base, double *r, ptrdiff_t nb, double beta, int kind)
{
    ptrdiff_t b = 0;
    switch (kind) {
    case LRN_POW_075:
#ifdef LRN_SSE2
        for (; b + 2 <= nb; b += 2) {
            __m128d q = _mm_sqrt_pd(_mm_loadu_pd(base + b));
            _mm_storeu_pd(r + b, _mm_div_pd(_mm_set1_pd(1.0), _mm_mul_pd(q, _mm_sqrt_pd(q))));
        }
#endif
        for (; b < nb; b++) {
            double q = sqrt(base[b]);
            r[b] = 1.0 / (q * sqrt(q));
        }
        break;
    case LRN_POW_05:
#ifdef LRN_SSE2
        for (; b + 2 <= nb; b += 2)
            _mm_storeu_pd(r + b, _mm_div_pd(_mm_set1_pd(1.0), _mm_sqrt_pd(_mm_loadu_pd(base + b))));
#endif
        for (; b < nb; b++) r[b] = 1.0 / sqrt(base[b]);
        break;
    case LRN_POW_1:
#pragma omp simd
        for (ptrdiff_t j = 0; j < nb; j++) r[j] = 1.0 / base[j];
        break;
    case LRN_POW_0:
        for (; b < nb; b++) r[b] = 1.0;
        break;
    default:
        for (; b < nb; b++) r[b] = pow(base[b], -beta);
    }
}

static void lrn_zero_rows(double *ext, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t nb, ptrdiff_t ld)
{
    for (ptrdiff_t j = r0; j < r1; j++) memset(ext + j * ld, 0, sizeof(double) * (size_t)nb);
}

/* ext holds E = C + L - 1 padded rows of nb values (row stride ld). Cut into
 * blocks of L rows: P gets each block's prefix sums, ext is replaced by each
 * block's suffix sums. Then the window sum of ext rows c .. c+L-1 is
 * lrn_window_base's: a window starting a block is that block's suffix sum; any
 * other one is the suffix of its block plus the prefix of the next. */
static void lrn_block_sums(double *ext, double *P, ptrdiff_t E, ptrdiff_t L, ptrdiff_t nb, ptrdiff_t ld)
{
    if (L == 1) return;
    for (ptrdiff_t j0 = 0; j0 < E; j0 += L) {
        ptrdiff_t j1 = fn_min(E, j0 + L);
        memcpy(P + j0 * ld, ext + j0 * ld, sizeof(double) * (size_t)nb);
        for (ptrdiff_t j = j0 + 1; j < j1; j++) {
            double *pj = P + j * ld;
            const double *pp = pj - ld, *ej = ext + j * ld;
#pragma omp simd
            for (ptrdiff_t b = 0; b < nb; b++) pj[b] = pp[b] + ej[b];
        }
        for (ptrdiff_t j = j1 - 2; j >= j0; j--) {
            double *ej = ext + j * ld;
            const double *en = ej + ld;
#pragma omp simd
            for (ptrdiff_t b = 0; b < nb; b++) ej[b] += en[b];
        }
    }
}

/* out[b] = k + scale * (window sum of row c), after lrn_block_sums. Reads ext
 * row c and P row c + L - 1 only, so out may be any row >= c of ext. */
static inline void lrn_window_base(const double *ext, const double *P, ptrdiff_t c, ptrdiff_t L,
                                   ptrdiff_t nb, ptrdiff_t ld, double k, double scale, double *out)
{
    const double *ec = ext + c * ld;
    if (c % L == 0) {
#pragma omp simd
        for (ptrdiff_t b = 0; b < nb; b++) out[b] = k + scale * ec[b];
    } else {
        const double *pe = P + (c + L - 1) * ld;
#pragma omp simd
        for (ptrdiff_t b = 0; b < nb; b++) out[b] = k + scale * (ec[b] + pe[b]);
    }
}

typedef struct {
    ptrdiff_t L, E, ld, per_thread, ntiles_i, items;
    int kind;
} lrn_plan;

/* Tile geometry and scratch size; nbuf double buffers of E (or C) rows. */
static void lrn_make_plan(const fn_lrn_shape *s, const fn_lrn_args *p, int nbuf, lrn_plan *pl)
{
    pl->L = p->before + p->after + 1;
    pl->E = s->C + pl->L - 1;
    ptrdiff_t ld = LRN_SCRATCH_DOUBLES / (nbuf * pl->E);
    ld = fn_max(1, fn_min(ld, LRN_TILE));
    ld = fn_min(ld, fn_max(1, s->Ni));
    if (ld > 4) ld = (ld + 3) & ~(ptrdiff_t)3;   /* rows start 32-byte apart */
    pl->ld = ld;
    pl->per_thread = (ptrdiff_t)nbuf * pl->E * ld;
    pl->ntiles_i = (s->Ni + ld - 1) / ld;
    pl->items = s->O * pl->ntiles_i;
    pl->kind = lrn_pow_kind(p->beta);
}

static int lrn_threads(const fn_lrn_shape *s, const fn_lrn_args *p, const lrn_plan *pl)
{
#ifdef _OPENMP
    double work = (double)s->O * (double)s->C * (double)s->Ni;
    if (work < FN_SERIAL_ELEMS || p->nthreads <= 1) return 1;
    /* the engine's process-wide budget (fn_runtime.c): concurrent callers share cores */
    return fn_threads_acquire((int)fn_min(p->nthreads, pl->items));
#else
    (void)s; (void)p; (void)pl;
    return 1;
#endif
}

static int lrn_check(const fn_lrn_shape *s, const fn_lrn_args *p)
{
    if (s->O < 0 || s->C < 0 || s->Ni < 0 || p->before < 0 || p->after < 0) return FN_EINVAL;
    /* A window wider than the channel axis sees only zeros beyond it. */
    return FN_OK;
}

#endif
