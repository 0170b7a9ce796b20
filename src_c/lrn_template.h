/* lrn_template.h - LRN forward and backward, written once over the element type T.
 *
 * Included by norm_isa.h with T (float or double) and TS (f32 or f64) defined,
 * after lrn_common.h, so every dtype x SIMD path gets its kernels; they are
 * static and reached through the ISA's fn_isa_table. All arithmetic after the
 * load is in double: window sums, the divisor power and the output product,
 * rounded to T once at the store.
 */
#define LF(name) FN_CAT(FN_CAT(name, _), TS)

/* ext rows [pad, pad + C) <- v^2 of the tile's values (nb positions from xt). */
static void LF(lrn_load_sq)(const T *xt, ptrdiff_t xc, ptrdiff_t xi, ptrdiff_t C, ptrdiff_t nb,
                            double *ext, ptrdiff_t pad, ptrdiff_t ld)
{
    for (ptrdiff_t c = 0; c < C; c++) {
        const T *xr = xt + c * xc;
        double *e = ext + (c + pad) * ld;
        if (xi == 1) {
#pragma omp simd
            for (ptrdiff_t b = 0; b < nb; b++) { double v = (double)xr[b]; e[b] = v * v; }
        } else {
            for (ptrdiff_t b = 0; b < nb; b++) { double v = (double)xr[b * xi]; e[b] = v * v; }
        }
    }
}

static void LF(lrn_tile)(const fn_lrn_shape *s, const T *x, T *y, const fn_lrn_args *p,
                         const lrn_plan *pl, ptrdiff_t bef, ptrdiff_t item, double *scratch)
{
    ptrdiff_t C = s->C, ld = pl->ld, L = pl->L, E = pl->E;
    ptrdiff_t o = item / pl->ntiles_i, i0 = (item % pl->ntiles_i) * ld;
    ptrdiff_t nb = fn_min(ld, s->Ni - i0);
    double *ext = scratch, *P = scratch + E * ld;
    const T *xt = x + o * s->xo + i0 * s->xi;
    T *yt = y + o * s->yo + i0 * s->yi;

    lrn_zero_rows(ext, 0, bef, nb, ld);
    lrn_zero_rows(ext, bef + C, E, nb, ld);
    LF(lrn_load_sq)(xt, s->xc, s->xi, C, nb, ext, bef, ld);
    lrn_block_sums(ext, P, E, L, nb, ld);
    double r[LRN_TILE];
    for (ptrdiff_t c = 0; c < C; c++) {
        lrn_window_base(ext, P, c, L, nb, ld, p->k, p->scale, r);
        lrn_rpow(r, r, nb, p->beta, pl->kind);
        const T *xr = xt + c * s->xc;
        T *yr = yt + c * s->yc;
        if (s->xi == 1 && s->yi == 1) {
#pragma omp simd
            for (ptrdiff_t b = 0; b < nb; b++) yr[b] = (T)((double)xr[b] * r[b]);
        } else {
            for (ptrdiff_t b = 0; b < nb; b++) yr[b * s->yi] = (T)((double)xr[b * s->xi] * r[b]);
        }
    }
}


/* Backward of one tile. With base[c] = k + scale * window_sum(x^2)[c] and
 * r[c] = base[c]^-beta:  t[c] = dy[c] * x[c] * r[c] / base[c], and
 *   dx[j] = dy[j] * r[j] - 2 * scale * beta * x[j] * sum_{c = j-after}^{j+before} t[c],
 * the reversed window (a channel j is in the windows of c = j-after .. j+before). */
static void LF(lrn_bwd_tile)(const fn_lrn_shape *s, const T *x, const T *dy, T *dx, const fn_lrn_args *p,
                             const lrn_plan *pl, ptrdiff_t item, double *scratch)
{
    ptrdiff_t C = s->C, ld = pl->ld, L = pl->L, E = pl->E, bef = p->before, aft = p->after;
    ptrdiff_t o = item / pl->ntiles_i, i0 = (item % pl->ntiles_i) * ld;
    ptrdiff_t nb = fn_min(ld, s->Ni - i0);
    double *ext = scratch, *P = scratch + E * ld, *R = P + E * ld;
    const T *xt = x + o * s->xo + i0 * s->xi;
    const T *gt = dy + o * s->go + i0 * s->gi;
    T *dt = dx + o * s->yo + i0 * s->yi;
    int unit = s->xi == 1 && s->gi == 1 && s->yi == 1;

    lrn_zero_rows(ext, 0, bef, nb, ld);
    lrn_zero_rows(ext, bef + C, E, nb, ld);
    LF(lrn_load_sq)(xt, s->xc, s->xi, C, nb, ext, bef, ld);
    lrn_block_sums(ext, P, E, L, nb, ld);
    double base[LRN_TILE];
    /* Descending c: t[c] goes to ext row c + aft (>= c), and the later (smaller)
     * c read only ext rows below c and P, so nothing they need is overwritten. */
    for (ptrdiff_t c = C - 1; c >= 0; c--) {
        double *r = R + c * ld, *t = ext + (c + aft) * ld;
        const T *xr = xt + c * s->xc, *gr = gt + c * s->gc;
        lrn_window_base(ext, P, c, L, nb, ld, p->k, p->scale, base);
        lrn_rpow(base, r, nb, p->beta, pl->kind);
        if (unit) {
#pragma omp simd
            for (ptrdiff_t b = 0; b < nb; b++) t[b] = (double)gr[b] * (double)xr[b] * r[b] / base[b];
        } else {
            for (ptrdiff_t b = 0; b < nb; b++)
                t[b] = (double)gr[b * s->gi] * (double)xr[b * s->xi] * r[b] / base[b];
        }
    }
    lrn_zero_rows(ext, 0, aft, nb, ld);
    lrn_zero_rows(ext, aft + C, E, nb, ld);
    lrn_block_sums(ext, P, E, L, nb, ld);
    double coef = 2.0 * p->scale * p->beta;
    for (ptrdiff_t c = 0; c < C; c++) {
        const double *r = R + c * ld;
        const T *xr = xt + c * s->xc, *gr = gt + c * s->gc;
        T *dr = dt + c * s->yc;
        /* base <- coef * window sum of t (k = 0, scale = coef) */
        lrn_window_base(ext, P, c, L, nb, ld, 0.0, coef, base);
        if (unit) {
#pragma omp simd
            for (ptrdiff_t b = 0; b < nb; b++)
                dr[b] = (T)((double)gr[b] * r[b] - (double)xr[b] * base[b]);
        } else {
            for (ptrdiff_t b = 0; b < nb; b++)
                dr[b * s->yi] = (T)((double)gr[b * s->gi] * r[b] - (double)xr[b * s->xi] * base[b]);
        }
    }
}

/* Runs the forward (dy == NULL) or the backward over all tiles: clamps the
 * window, plans the tiles, and gives each thread its own scratch. */
static int LF(lrn_run)(const fn_lrn_shape *s, const T *x, const T *dy, T *out, const fn_lrn_args *p)
{
    int st = lrn_check(s, p);
    if (st != FN_OK) return st;
    if (s->O == 0 || s->C == 0 || s->Ni == 0) return FN_OK;
    fn_lrn_args q = *p;
    q.before = fn_min(p->before, s->C - 1);
    q.after = fn_min(p->after, s->C - 1);
    lrn_plan pl;
    lrn_make_plan(s, &q, dy ? 3 : 2, &pl);
    int nt = lrn_threads(s, &q, &pl);
    double *scratch = (double *)fn_scratch_alloc(sizeof(double) * (size_t)pl.per_thread * (size_t)nt);
    if (!scratch) {
        fn_threads_release(nt);
        return FN_ENOMEM;
    }
    /* tiles in shares (fn_share), each thread with its scratch */
    int ntc = fn_shares_threads(nt);
    fn_share sh[FN_MAX_SHARES];
    fn_shares_init(sh, ntc, pl.items);
    FN_PARALLEL_TEAM(ntc, tid,
        double *mine = scratch + (size_t)tid * (size_t)pl.per_thread;
        ptrdiff_t it;
        while ((it = fn_shares_claim(sh, ntc, tid)) >= 0) {
            if (dy) LF(lrn_bwd_tile)(s, x, dy, out, &q, &pl, it, mine);
            else LF(lrn_tile)(s, x, out, &q, &pl, q.before, it, mine);
        }
    );
    fn_scratch_free(scratch);
    fn_threads_release(nt);
    return FN_OK;
}

static int LF(lrn)(const fn_lrn_shape *s, const T *x, T *y, const fn_lrn_args *p)
{
    return LF(lrn_run)(s, x, NULL, y, p);
}

static int LF(lrn_bwd)(const fn_lrn_shape *s, const T *x, const T *dy, T *dx, const fn_lrn_args *p)
{
    return LF(lrn_run)(s, x, dy, dx, p);
}

#undef LF
