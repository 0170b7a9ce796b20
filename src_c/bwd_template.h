/* bwd_template.h - backward of the engine's normalizations, written once over T.
 *
 * Included after norm_template.h by norm_isa.h, per dtype and per SIMD path.
 * See fn_bwd_args in fastnorm.h for the formulas. Per-unit sums are folds of
 * fixed-size block sums in a fixed order and parameter gradients are partial sums
 * over fixed groups of units folded in order (or sums over units in unit order), so
 * the results do not depend on the thread count.
 */
#define TF(name) FN_CAT(FN_CAT(name, _), TS)
#define VD TF(vd)             /* vector types of norm_template.h */
#define VL TF(vl)
#define VT TF(vt)
#define TLANES (FN_VBYTES / (int)sizeof(T))
#define LANES (FN_VBYTES / 8)

/* Block sums over n values of one segment, around the given mean m:
 * s0 = sum(x - m), s1 = sum(G), s2 = sum(G * (x - m)) with G = dy * w[i] (w set:
 * parameters along the segment) or dy. T-precision vector lanes for one block
 * (n <= FN_BLOCK: each lane adds at most FN_BLOCK / (2 * TLANES) terms), two
 * accumulators per sum, lanes combined by a pairwise tree; blocks are then added
 * in double. mean is rounded to T, which only shifts the sums (s2 is taken
 * around the same value as s0). The accumulators are fed two vectors at a time
 * (bwd_acc_two), so that a row's sums can also be taken inside the dx loop of
 * the row before (bwd_dx_piped) with the same bits. */
typedef struct { VT c0, c1, a0, a1, b0, b1; } TF(bwd_acc);

static inline __attribute__((always_inline)) void TF(bwd_acc_two)(TF(bwd_acc) *s, const T *x, const T *dy,
                                                                  const T *w, VT mv)
{
    VT d0 = TF(loadt)(x) - mv, d1 = TF(loadt)(x + TLANES) - mv;
    VT g0 = TF(loadt)(dy), g1 = TF(loadt)(dy + TLANES);
    if (w) { g0 *= TF(loadt)(w); g1 *= TF(loadt)(w + TLANES); }
    s->c0 += d0; s->c1 += d1; s->a0 += g0; s->a1 += g1;
    s->b0 = TF(fmadd)(g0, d0, s->b0); s->b1 = TF(fmadd)(g1, d1, s->b1);
}

/* Feeds values [i, n) (two vectors at a time from i on, then one vector, then
 * the last few values as a vector padded with values that add nothing: x with
 * the shift m, dy with 0). (The last values one by one in double made the sums
 * of GroupNorm's 7 x 7 planes three quarters of its backward.) */
static inline __attribute__((always_inline)) void TF(bwd_acc_rest)(TF(bwd_acc) *s, const T *x, const T *dy,
                                                                   const T *w, ptrdiff_t i, ptrdiff_t n, T m)
{
    const VT z = {0};
    const VT mv = z + m;
    for (; i + 2 * TLANES <= n; i += 2 * TLANES) TF(bwd_acc_two)(s, x + i, dy + i, w ? w + i : NULL, mv);
    if (i + TLANES <= n) {
        VT d = TF(loadt)(x + i) - mv, g = TF(loadt)(dy + i);
        if (w) g *= TF(loadt)(w + i);
        s->c0 += d; s->a0 += g; s->b0 = TF(fmadd)(g, d, s->b0);
        i += TLANES;
    }
    if (i < n) {
        VT d = TF(load_part)(x + i, n - i, m) - mv, g = TF(load_part)(dy + i, n - i, (T)0);
        if (w) g *= TF(load_part)(w + i, n - i, (T)0);
        s->c1 += d; s->a1 += g; s->b1 = TF(fmadd)(g, d, s->b1);
    }
}

/* The sums from the lane sums c, a, b of values shifted by m (= mean rounded to
 * T): moved to mean. */
static inline void TF(bwd_shifted)(double c, double a, double b, ptrdiff_t n, T m, double mean,
                                   double *s0, double *s1, double *s2)
{
    double delta = (double)m - mean;
    *s0 = c + (double)n * delta;
    *s1 = a;
    *s2 = b + a * delta;
}

/* The lane sums c, a, b of bwd_shifted over a block of n values, taken in
 * double where the T-precision lanes overflowed (or met inf or NaN): float32 data
 * of 1e37 puts sums of x - m past float32's range, and a LayerNorm backward of
 * such rows gave dx of inf where the exact values are near 1e-38. Around the same
 * m as the lanes; x, dy and w (NULL: none) at strides xs, ys and ws. */
__attribute__((noinline, cold)) static void TF(bwd_sums_exact)(const T *x, ptrdiff_t xs, const T *dy, ptrdiff_t ys,
                                                               const T *w, ptrdiff_t ws, ptrdiff_t n, T m,
                                                               double *c, double *a, double *b)
{
    double sc = 0, sa = 0, sb = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double d = (double)x[i * xs] - (double)m, g = (double)dy[i * ys] * (w ? (double)w[i * ws] : 1.0);
        sc += d; sa += g; sb += g * d;
    }
    *c = sc; *a = sa; *b = sb;
}

/* 1 when the three lane sums are finite (x - x == 0 exactly then). */
static inline int TF(bwd_sums_finite)(double c, double a, double b)
{
    return (c - c == 0) & (a - a == 0) & (b - b == 0);
}

/* bwd_acc_rest, then the sums. */
static inline __attribute__((always_inline)) void TF(bwd_acc_finish)(TF(bwd_acc) *s, const T *x, const T *dy,
                                                                     const T *w, ptrdiff_t i, ptrdiff_t n,
                                                                     double mean, double *s0, double *s1,
                                                                     double *s2)
{
    const T m = (T)mean;
    TF(bwd_acc_rest)(s, x, dy, w, i, n, m);
    double c = TF(hsumt)(s->c0 + s->c1), a = TF(hsumt)(s->a0 + s->a1), b = TF(hsumt)(s->b0 + s->b1);
    if (!TF(bwd_sums_finite)(c, a, b)) TF(bwd_sums_exact)(x, 1, dy, 1, w, 1, n, m, &c, &a, &b);
    TF(bwd_shifted)(c, a, b, n, m, mean, s0, s1, s2);
}

/* The sums s0, s1, s2 of the cnt rows of bwd_sums_rows_w taken again (by
 * bwd_sums_exact, then moved as bwd_shifted moves them) where they are not
 * finite. */
__attribute__((noinline, cold)) static void TF(bwd_rows_exact)(const T *const *x, const T *const *dy,
                                                               const T *const *w, ptrdiff_t cnt, ptrdiff_t n,
                                                               const double *mean, double *s0, double *s1,
                                                               double *s2)
{
    for (ptrdiff_t r = 0; r < cnt; r++) {
        if (TF(bwd_sums_finite)(s0[r], s1[r], s2[r])) continue;
        double c, a, b;
        TF(bwd_sums_exact)(x[r], 1, dy[r], 1, w ? w[r] : NULL, 1, n, (T)mean[r], &c, &a, &b);
        TF(bwd_shifted)(c, a, b, n, (T)mean[r], mean[r], &s0[r], &s1[r], &s2[r]);
    }
}

/* bwd_sums (without parameters) of cnt <= LANES rows of n values, row j at x[j],
 * dy[j] around mean[j], its sums to s0[j], s1[j], s2[j]: the lanes of the rows
 * are reduced together (hsumt_rows), bit for bit as bwd_sums row by row, so
 * short rows (7 x 7 planes) share the cross-lane adds. */
static inline __attribute__((always_inline)) void TF(bwd_sums_rows_w)(const T *const *x, const T *const *dy,
                                                                      const T *const *w, ptrdiff_t cnt, ptrdiff_t n,
                                                                      const double *mean, double *s0, double *s1,
                                                                      double *s2)
{
    const VT z = {0};
    VD cs, as, bs;
    if (n * (ptrdiff_t)sizeof(T) > FN_FOLD_UNROLL_BYTES) {
        /* long rows in a loop, as block_sums_rows takes them */
        VT c[LANES], a[LANES], b[LANES];
        for (int r = 0; r < LANES; r++) {
            TF(bwd_acc) acc = {z, z, z, z, z, z};
            if (r < cnt) TF(bwd_acc_rest)(&acc, x[r], dy[r], w ? w[r] : NULL, 0, n, (T)mean[r]);
            c[r] = acc.c0 + acc.c1; a[r] = acc.a0 + acc.a1; b[r] = acc.b0 + acc.b1;
        }
        cs = TF(hsumt_rows)(c); as = TF(hsumt_rows)(a); bs = TF(hsumt_rows)(b);
    } else {
        /* short rows unrolled, folded as they come (see FN_FOLD_UNROLL_BYTES;
         * BatchNorm backward over 7 x 7 planes 1.03-1.05x faster at one thread,
         * 1.02-1.04x at two, AMD EPYC Zen 3) */
        TF(fold_stack) fc, fa, fb;
#pragma GCC unroll 8
        for (int r = 0; r < LANES; r++) {
            TF(bwd_acc) acc = {z, z, z, z, z, z};
            if (r < cnt) TF(bwd_acc_rest)(&acc, x[r], dy[r], w ? w[r] : NULL, 0, n, (T)mean[r]);
            TF(fold_push)(&fc, r, acc.c0 + acc.c1);
            TF(fold_push)(&fa, r, acc.a0 + acc.a1);
            TF(fold_push)(&fb, r, acc.b0 + acc.b1);
        }
        cs = TF(fold_out)(fc.v[FN_FOLD_LEVELS]); as = TF(fold_out)(fa.v[FN_FOLD_LEVELS]);
        bs = TF(fold_out)(fb.v[FN_FOLD_LEVELS]);
    }
    for (ptrdiff_t r = 0; r < cnt; r++)
        TF(bwd_shifted)(cs[r], as[r], bs[r], n, (T)mean[r], mean[r], &s0[r], &s1[r], &s2[r]);
    /* lanes of finite sums add up to 0 (x - x == 0 exactly when x is finite):
     * one test for the LANES rows (a test per row made BatchNorm backward over 7 x
     * 7 planes 7 % slower) */
    if (!(TF(hsum)((cs - cs) + (as - as) + (bs - bs)) == 0)) TF(bwd_rows_exact)(x, dy, w, cnt, n, mean, s0, s1, s2);
}

static inline __attribute__((always_inline)) void TF(bwd_sums_rows)(const T *const *x, const T *const *dy, ptrdiff_t cnt, ptrdiff_t n,
                                     const double *mean, double *s0, double *s1, double *s2)
{
    TF(bwd_sums_rows_w)(x, dy, NULL, cnt, n, mean, s0, s1, s2);
}

static inline void TF(bwd_sums)(const T *x, const T *dy, ptrdiff_t n, double mean,
                                const T *w, double *s0, double *s1, double *s2)
{
    const VT z = {0};
    TF(bwd_acc) acc = {z, z, z, z, z, z};
    TF(bwd_acc_finish)(&acc, x, dy, w, 0, n, mean, s0, s1, s2);
}

/* Adds to S the sums of the block of m values at x, dy (w) whose values before i
 * are in acc (bwd_acc_finish), as seg_bwd_unit adds a block's; clears acc. */
static inline __attribute__((always_inline)) void TF(bwd_block_add)(TF(bwd_acc) *acc, const T *x, const T *dy,
                                                                    const T *w, ptrdiff_t i, ptrdiff_t m,
                                                                    double mean, double *S)
{
    const VT z = {0};
    double b[3];
    TF(bwd_acc_finish)(acc, x, dy, w, i, m, mean, &b[0], &b[1], &b[2]);
    for (int t = 0; t < 3; t++) S[t] += b[t];
    *acc = (TF(bwd_acc)){z, z, z, z, z, z};
}

/* Adds to S the sums of a row of n values (blocks [i0, n) of FN_BLOCK, in order;
 * w may be NULL), as seg_bwd_unit adds them. */
static inline void TF(bwd_row_sums)(const T *x, const T *dy, const T *w, ptrdiff_t i0, ptrdiff_t n, double mean,
                                    double *S)
{
    const VT z = {0};
    for (; i0 < n; i0 += FN_BLOCK) {
        TF(bwd_acc) acc = {z, z, z, z, z, z};
        TF(bwd_block_add)(&acc, x + i0, dy + i0, w ? w + i0 : NULL, 0, fn_min(FN_BLOCK, n - i0), mean, S);
    }
}

/* Unit sums -> the corrected mean and S1 = sum(G), S2 = sum(G * xhat). */
static inline void TF(bwd_unit_finish)(const fn_bwd_args *p, ptrdiff_t u, double n,
                                       double s0, double s1, double s2)
{
    int rms = p->mode == FN_MODE_RMS;
    double m = rms ? 0.0 : p->mean[u];
    double c = (p->training && !rms) ? s0 / n : 0.0;
    p->cmean[u] = m + c;
    p->s1[u] = s1;
    p->s2[u] = p->rstd[u] * (s2 - c * s1);
}

/* One vector of dx at [i, i + cnt), cnt <= TLANES. */
static inline VT TF(bwd_dx_vec)(const T *x, const T *dy, const T *w, ptrdiff_t i, ptrdiff_t cnt,
                                VT mhv, VT mlv, VT rv, VT sv, VT c1v, VT c2v)
{
    /* the multiply-adds written out: contracted by the compiler, they were fused
     * in the full vectors and not in the partial ones, and the bits differed */
    VT g = TF(load_n)(dy + i, cnt, (T)0);
    VT gc = w ? TF(fmadd)(g, TF(load_n)(w + i, cnt, (T)0), -c1v) : g - c1v;
    VT xh = ((TF(load_n)(x + i, cnt, (T)0) - mhv) - mlv) * rv;
    return sv * TF(fmadd)(-xh, c2v, gc);
}

/* dx = scale * (G - c1 - xhat * c2) over n values, in T-precision vectors with
 * the mean split into mh + ml (as the forward's normalize). */
static inline void TF(bwd_dx)(const T *x, const T *dy, T *dx, ptrdiff_t n, double mean, double rstd,
                              const T *w, double scale, double c1, double c2, int stream)
{
    const VT z = {0};
    const T mh = (T)mean, ml = (T)(mean - (double)mh);
    const VT mhv = z + mh, mlv = z + ml, rv = z + (T)rstd, sv = z + (T)scale, c1v = z + (T)c1, c2v = z + (T)c2;
    /* dx stored from its first vector boundary on (see align_head); the partial
     * vectors at both ends are computed as the full ones */
    ptrdiff_t i = TF(align_head)(dx, n);
    int tail = (n - i) % TLANES != 0;
    if (FN_OVERLAP_EDGES(n) && (i || tail)) {
        /* whole vectors laid over their neighbours, as in norm_row_fast (dx may be
         * x or dy: each overlapped vector is computed before the store) */
        VT last = tail ? TF(bwd_dx_vec)(x, dy, w, n - TLANES, TLANES, mhv, mlv, rv, sv, c1v, c2v) : z;
        if (i) {
            VT head = TF(bwd_dx_vec)(x, dy, w, 0, TLANES, mhv, mlv, rv, sv, c1v, c2v);
            VT first = TF(bwd_dx_vec)(x, dy, w, i, TLANES, mhv, mlv, rv, sv, c1v, c2v);
            TF(storet)(dx, head);
            TF(storet)(dx + i, first);
            i += TLANES;
        }
        stream = stream && (uintptr_t)(dx + i) % FN_VBYTES == 0;
        for (; i + TLANES <= n; i += TLANES)
            TF(store_vec)(dx + i, TF(bwd_dx_vec)(x, dy, w, i, TLANES, mhv, mlv, rv, sv, c1v, c2v), stream);
        if (tail) TF(storet)(dx + n - TLANES, last);
        return;
    }
    if (i) TF(store_part)(dx, i, TF(bwd_dx_vec)(x, dy, w, 0, i, mhv, mlv, rv, sv, c1v, c2v));
    stream = stream && (uintptr_t)(dx + i) % FN_VBYTES == 0;
    for (; i + TLANES <= n; i += TLANES)
        TF(store_vec)(dx + i, TF(bwd_dx_vec)(x, dy, w, i, TLANES, mhv, mlv, rv, sv, c1v, c2v), stream);
    if (i < n) TF(store_part)(dx + i, n - i, TF(bwd_dx_vec)(x, dy, w, i, n - i, mhv, mlv, rv, sv, c1v, c2v));
}

#ifndef FN_DX_TC
/* Values of T per unit in bwd_dx_joined's coefficients (bwd_dx_coeffs_t). */
#define FN_DX_TC 6
#endif

/* The unit coefficients c (mean, rstd, scale, c1, c2 as bwd_dx takes them) as
 * bwd_dx rounds them to T: the mean split into mh + ml, then rstd, scale, c1,
 * c2, at tc[0 .. FN_DX_TC). */
static inline void TF(bwd_dx_coeffs_t)(const double *c, T *tc)
{
    const T mh = (T)c[0];
    tc[0] = mh; tc[1] = (T)(c[0] - (double)mh);
    tc[2] = (T)c[1]; tc[3] = (T)c[2]; tc[4] = (T)c[3]; tc[5] = (T)c[4];
}

/* dx of cnt segments of n >= TLANES values lying end to end in x, dy and dx (the
 * planes of neighbouring channels of one sample), segment j with its unit's
 * coefficients in T (bwd_dx_coeffs_t, at FN_DX_TC * j). The run is walked as one
 * row from dx's first vector boundary: the vector that spans two segments is
 * computed with each one's coefficients and the two are joined (as
 * norm_run_joined), where segment by segment a 7 x 7 plane took two partial
 * stores. Each value's arithmetic is bwd_dx's: the same bits. */
static void TF(bwd_dx_joined)(const T *x, const T *dy, T *dx, ptrdiff_t n, ptrdiff_t cnt, const T *tc,
                              int stream)
{
    const VT z = {0};
    ptrdiff_t j = 0, end = n;      /* segment j spans [end - n, end) */
    VT mhv, mlv, rv, sv, c1v, c2v;
#define FN_DX_COEFS(j) do {                                                          \
        const T *c_ = tc + FN_DX_TC * (j);                                            \
        mhv = z + c_[0]; mlv = z + c_[1]; rv = z + c_[2];                             \
        sv = z + c_[3]; c1v = z + c_[4]; c2v = z + c_[5];                             \
    } while (0)
    FN_DX_COEFS(0);
    ptrdiff_t i = TF(vec_head)(dx);    /* < TLANES <= n */
    if (i) TF(store_part)(dx, i, TF(bwd_dx_vec)(x, dy, NULL, 0, i, mhv, mlv, rv, sv, c1v, c2v));
    stream = stream && (uintptr_t)(dx + i) % FN_VBYTES == 0;
    /* a segment's whole vectors in a loop of their own, four a step, as
     * norm_run_joined (BatchNorm backward (8, 64, 7, 7) 1.06-1.07x faster,
     * (16, 64, 28, 28) 1.05-1.13x, (64, 256, 7, 7) 1.01-1.05x) */
    for (;;) {
        for (; i + 4 * TLANES <= end; i += 4 * TLANES) {
            VT v0 = TF(bwd_dx_vec)(x, dy, NULL, i, TLANES, mhv, mlv, rv, sv, c1v, c2v);
            VT v1 = TF(bwd_dx_vec)(x, dy, NULL, i + TLANES, TLANES, mhv, mlv, rv, sv, c1v, c2v);
            VT v2 = TF(bwd_dx_vec)(x, dy, NULL, i + 2 * TLANES, TLANES, mhv, mlv, rv, sv, c1v, c2v);
            VT v3 = TF(bwd_dx_vec)(x, dy, NULL, i + 3 * TLANES, TLANES, mhv, mlv, rv, sv, c1v, c2v);
            TF(store_vec)(dx + i, v0, stream);
            TF(store_vec)(dx + i + TLANES, v1, stream);
            TF(store_vec)(dx + i + 2 * TLANES, v2, stream);
            TF(store_vec)(dx + i + 3 * TLANES, v3, stream);
        }
        for (; i + TLANES <= end; i += TLANES)
            TF(store_vec)(dx + i, TF(bwd_dx_vec)(x, dy, NULL, i, TLANES, mhv, mlv, rv, sv, c1v, c2v), stream);
        if (i < end && j + 1 == cnt) {
            TF(store_part)(dx + i, end - i, TF(bwd_dx_vec)(x, dy, NULL, i, end - i, mhv, mlv, rv, sv, c1v, c2v));
            break;
        }
        if (++j == cnt) break;
        ptrdiff_t k = end - i;         /* lanes [0, k) in segment j - 1, the rest in segment j */
        end += n;
        if (k == 0) {
            FN_DX_COEFS(j);
            continue;
        }
        VT v = TF(bwd_dx_vec)(x, dy, NULL, i, TLANES, mhv, mlv, rv, sv, c1v, c2v);
        FN_DX_COEFS(j);
        v = TF(join)(v, TF(bwd_dx_vec)(x, dy, NULL, i, TLANES, mhv, mlv, rv, sv, c1v, c2v), k);
        TF(store_vec)(dx + i, v, stream);
        i += TLANES;
    }
#undef FN_DX_COEFS
}

/* bwd_dx of a row with the sums (bwd_sums) of the next row (xs, dys around
 * mean_s, parameters ws) taken in the same loop, two vectors of each per
 * step, and added to S block by block (bwd_row_sums): the next row is read from
 * memory while this one's dx is written (LayerNorm backward (8192, 768) 5 %
 * faster). The same bits as bwd_dx and bwd_row_sums. (Adding the parameter
 * partials in this loop too, from the same loads, ran 20 % slower than their own
 * pass over the row in L1.) With stream, dx is written with non-temporal stores
 * from its first vector boundary on. The next row's lines are asked for
 * FN_BWD_AHEAD_BYTES before the sums read them, past its end too when
 * next_follows (the row after it starts there in x and dy), else only within
 * it. */
static inline __attribute__((always_inline)) void TF(bwd_dx_piped_k)(
    const T *x, const T *dy, T *dx, ptrdiff_t n, double mean, double rstd, const T *w, double scale, double c1,
    double c2, const T *xs, const T *dys, const T *ws, double mean_s, double *S, int next_follows, const int has_w,
    const int streamed)
{
    const VT z = {0};
    const T mh = (T)mean, ml = (T)(mean - (double)mh);
    const VT mhv = z + mh, mlv = z + ml, rv = z + (T)rstd, sv = z + (T)scale, c1v = z + (T)c1, c2v = z + (T)c2;
    const VT msv = z + (T)mean_s;
    if (!has_w) w = ws = NULL;
    TF(bwd_acc) acc = {z, z, z, z, z, z};
    const char *xa = (const char *)xs + FN_BWD_AHEAD_BYTES, *dya = (const char *)dys + FN_BWD_AHEAD_BYTES;
    /* asked for while is < ahead_end */
    ptrdiff_t ahead_end = next_follows ? n : n - FN_BWD_AHEAD_BYTES / (ptrdiff_t)sizeof(T);
    /* the next row's values before is: those of its block [b0, b1) in acc */
    ptrdiff_t i = TF(align_head)(dx, n), is = 0, b0 = 0, b1 = fn_min(n, FN_BLOCK);
    if (i) TF(store_part)(dx, i, TF(bwd_dx_vec)(x, dy, w, 0, i, mhv, mlv, rv, sv, c1v, c2v));
    for (;;) {
        for (; i + 2 * TLANES <= n && is + 2 * TLANES <= b1; i += 2 * TLANES, is += 2 * TLANES) {
            if (is < ahead_end) {
                TF(prefetch_span)(xa + is * (ptrdiff_t)sizeof(T), 2 * FN_VBYTES, 0);
                TF(prefetch_span)(dya + is * (ptrdiff_t)sizeof(T), 2 * FN_VBYTES, 0);
            }
            TF(bwd_acc_two)(&acc, xs + is, dys + is, ws ? ws + is : NULL, msv);
            TF(store_vec)(dx + i, TF(bwd_dx_vec)(x, dy, w, i, TLANES, mhv, mlv, rv, sv, c1v, c2v), streamed);
            TF(store_vec)(dx + i + TLANES, TF(bwd_dx_vec)(x, dy, w, i + TLANES, TLANES, mhv, mlv, rv, sv, c1v, c2v),
                          streamed);
        }
        /* the last block, or this row's dx ended first (a full block ends on a step) */
        if (b1 == n || is < b1) break;
        TF(bwd_block_add)(&acc, xs + b0, dys + b0, ws ? ws + b0 : NULL, is - b0, b1 - b0, mean_s, S);
        b0 = b1;
        b1 = fn_min(n, b1 + FN_BLOCK);
    }
    for (; i + TLANES <= n; i += TLANES)
        TF(storet)(dx + i, TF(bwd_dx_vec)(x, dy, w, i, TLANES, mhv, mlv, rv, sv, c1v, c2v));
    if (i < n) TF(store_part)(dx + i, n - i, TF(bwd_dx_vec)(x, dy, w, i, n - i, mhv, mlv, rv, sv, c1v, c2v));
    TF(bwd_block_add)(&acc, xs + b0, dys + b0, ws ? ws + b0 : NULL, is - b0, b1 - b0, mean_s, S);
    TF(bwd_row_sums)(xs, dys, ws, b1, n, mean_s, S);
}

/* bwd_dx_piped_k compiled apart with and without parameters and streamed
 * stores: tested in the loop, they kept its pointers in memory. */
static void TF(bwd_dx_piped)(const T *x, const T *dy, T *dx, ptrdiff_t n, double mean, double rstd,
                             const T *w, double scale, double c1, double c2,
                             const T *xs, const T *dys, const T *ws, double mean_s, double *S, int stream,
                             int next_follows)
{
    int st = stream && (uintptr_t)(dx + TF(align_head)(dx, n)) % FN_VBYTES == 0;
#define FN_PIPED_K(has_w, streamed)                                                                      \
    TF(bwd_dx_piped_k)(x, dy, dx, n, mean, rstd, w, scale, c1, c2, xs, dys, ws, mean_s, S, next_follows, \
                       has_w, streamed)
    if (w) {
        if (st) FN_PIPED_K(1, 1); else FN_PIPED_K(1, 0);
    } else {
        if (st) FN_PIPED_K(0, 1); else FN_PIPED_K(0, 0);
    }
#undef FN_PIPED_K
}

/* bwd_dx_vec with one parameter value for the whole row (its vector wvv); the
 * last few values of a row are a partial vector computed as the full ones. */
static inline VT TF(bwd_dx_vec_sw)(const T *x, const T *dy, ptrdiff_t i, ptrdiff_t cnt, VT wvv,
                                   VT mhv, VT mlv, VT rv, VT sv, VT c1v, VT c2v)
{
    VT xh = ((TF(load_n)(x + i, cnt, (T)0) - mhv) - mlv) * rv;
    return sv * TF(fmadd)(-xh, c2v, TF(fmadd)(wvv, TF(load_n)(dy + i, cnt, (T)0), -c1v));
}

/* bwd_dx for a row whose parameter is one value wv (GroupNorm's per-channel
 * weight inside a group): dx = scale * (wv * dy - c1 - xhat * c2). Unless NULL,
 * xn and dyn, n values each (the next unit's row), are asked for into L2, a line
 * of each per line of dx (see FN_PLANE_AHEAD_L2_DIV). */
static inline void TF(bwd_dx_scalar_w)(const T *x, const T *dy, T *dx, ptrdiff_t n, double mean, double rstd,
                                       double wv, double scale, double c1, double c2, const T *xn, const T *dyn)
{
    const VT z = {0};
    const T mh = (T)mean, ml = (T)(mean - (double)mh);
    const VT mhv = z + mh, mlv = z + ml, rv = z + (T)rstd, sv = z + (T)scale, wvv = z + (T)wv,
             c1v = z + (T)c1, c2v = z + (T)c2;
    ptrdiff_t i = 0;
    if (xn) {
        const ptrdiff_t line = FN_LINE_BYTES / (ptrdiff_t)sizeof(T);
        for (; i + line <= n; i += line) {
            __builtin_prefetch(xn + i, 0, 2);
            __builtin_prefetch(dyn + i, 0, 2);
            for (ptrdiff_t j = 0; j < line; j += TLANES)
                TF(storet)(dx + i + j, TF(bwd_dx_vec_sw)(x, dy, i + j, TLANES, wvv, mhv, mlv, rv, sv, c1v, c2v));
        }
        /* the rest of the row, and its last line where xn starts inside a line */
        if (i < n) {
            __builtin_prefetch(xn + i, 0, 2);
            __builtin_prefetch(dyn + i, 0, 2);
        }
        if (n > 0) {
            __builtin_prefetch(xn + n - 1, 0, 2);
            __builtin_prefetch(dyn + n - 1, 0, 2);
        }
    }
    for (; i + TLANES <= n; i += TLANES)
        TF(storet)(dx + i, TF(bwd_dx_vec_sw)(x, dy, i, TLANES, wvv, mhv, mlv, rv, sv, c1v, c2v));
    if (i < n) TF(store_part)(dx + i, n - i, TF(bwd_dx_vec_sw)(x, dy, i, n - i, wvv, mhv, mlv, rv, sv, c1v, c2v));
}

/* Per-unit dx coefficients from the unit sums. A unit of one value centred on
 * its own mean (training, not RMS) has dx = 0 exactly: its output does not
 * depend on x. Computed, it was rounding noise (rstd = 1 / sqrt(eps) times an
 * ulp of dy), which the row and column kernels' formulas round differently. */
static inline void TF(bwd_coeffs)(const fn_bwd_args *p, double wu, double n, double s1, double s2,
                                  double rstd, double *scale, double *c1, double *c2)
{
    int rms = p->mode == FN_MODE_RMS;
    *scale = (p->training && !rms && n == 1) ? 0.0 : wu * rstd;
    *c1 = (p->training && !rms) ? s1 / n : 0.0;
    *c2 = p->training ? s2 / n : 0.0;
}

/* ---------------------------------------------------------------- SEG ---- */

typedef struct {
    const T *x, *dy;
    T *dx;
    const T *wred;       /* parameters along the reduced axes (LayerNorm; unit k's from k * wk on:
                            GroupNorm over (N, C, 1, 1), see fn_seg_joined), else NULL */
    const T *wunit;      /* one parameter per unit (BatchNorm), else NULL */
    const T *wplane;     /* one parameter per (k, r1) row (GroupNorm's channels), else NULL */
    int stream;          /* dx written with non-temporal stores from its vector boundaries on
                            (seg_bwd_unit and seg_bwd_rows_piped; see seg_bwd) */
} TF(seg_bwd_ptrs);

/* The value unit u's sums are taken around: its mean (0 in RMS mode). */
static inline double TF(sums_center)(const fn_bwd_args *p, ptrdiff_t u)
{
    return p->mode == FN_MODE_RMS ? 0.0 : p->mean[u];
}

/* Unit u's dx coefficients as bwd_dx takes them: corrected mean, rstd, scale,
 * c1, c2. */
static inline void TF(seg_dx_coeffs)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                     ptrdiff_t u, double *c)
{
    double wu = q->wunit ? (double)q->wunit[(u % s->K) * s->wk] : 1.0;
    c[0] = p->cmean[u];
    c[1] = p->rstd[u];
    TF(bwd_coeffs)(p, wu, (double)(s->R1 * s->R2), p->s1[u], p->s2[u], c[1], &c[2], &c[3], &c[4]);
}

static void TF(seg_bwd_block)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                              ptrdiff_t u, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1, int want_dx,
                              double *sums)
{
    ptrdiff_t a = u / s->K, k = u % s->K;
    ptrdiff_t xo = a * s->xa + k * s->xk + r1 * s->xr1 + i0, yo = a * s->ya + k * s->yk + r1 * s->yr1 + i0;
    const T *w = q->wred ? q->wred + k * s->wk + r1 * s->wr1 + i0 : NULL;
    if (!want_dx) {
        double mean = TF(sums_center)(p, u);
        TF(bwd_sums)(q->x + xo, q->dy + yo, i1 - i0, mean, w, &sums[0], &sums[1], &sums[2]);
        return;
    }
    double c[5];
    TF(seg_dx_coeffs)(s, p, q, u, c);
    TF(bwd_dx)(q->x + xo, q->dy + yo, q->dx + yo, i1 - i0, c[0], c[1], w, c[2], c[3], c[4], q->stream);
}

/* Adds segment r1 of unit u's sums to S, block by block (bwd_row_sums), as
 * seg_bwd_block takes each block's. */
static inline void TF(seg_bwd_segment_add)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                           ptrdiff_t u, ptrdiff_t r1, double *S)
{
    ptrdiff_t a = u / s->K, k = u % s->K;
    const T *w = q->wred ? q->wred + k * s->wk + r1 * s->wr1 : NULL;
    TF(bwd_row_sums)(q->x + a * s->xa + k * s->xk + r1 * s->xr1, q->dy + a * s->ya + k * s->yk + r1 * s->yr1, w, 0,
                     s->R2, TF(sums_center)(p, u), S);
}

/* Whether segments are single blocks summed without parameters: then
 * bwd_sums_rows takes LANES of them at a time. */
static inline int TF(bwd_short_segments)(const fn_seg_shape *s, const TF(seg_bwd_ptrs) *q)
{
    return s->R2 <= FN_BLOCK && !q->wred;
}

/* bwd_sums_rows of the cnt <= LANES segments at offsets xoff[j] + xextra of x
 * and yoff[j] + yextra of dy (which has dx's strides). */
static inline __attribute__((always_inline)) void TF(bwd_sums_at)(const TF(seg_bwd_ptrs) *q, const ptrdiff_t *xoff,
                                                                  ptrdiff_t xextra, const ptrdiff_t *yoff,
                                                                  ptrdiff_t yextra, ptrdiff_t cnt, ptrdiff_t n,
                                                                  const double *mean, double *s0, double *s1,
                                                                  double *s2)
{
    const T *xr[LANES], *dyr[LANES];
    for (ptrdiff_t j = 0; j < cnt; j++) {
        xr[j] = q->x + xoff[j] + xextra;
        dyr[j] = q->dy + yoff[j] + yextra;
    }
    TF(bwd_sums_rows)(xr, dyr, cnt, n, mean, s0, s1, s2);
}

/* The sums of segments [r0, r0 + LANES) of unit u (fewer at the end of the unit;
 * returns how many) to sums[3 * j ...], by bwd_sums_rows: bwd_short_segments
 * only. */
static inline __attribute__((always_inline)) ptrdiff_t TF(seg_bwd_segment_sums)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                          ptrdiff_t u, ptrdiff_t r0, double *sums)
{
    ptrdiff_t xu = (u / s->K) * s->xa + (u % s->K) * s->xk, yu = (u / s->K) * s->ya + (u % s->K) * s->yk;
    ptrdiff_t cnt = fn_min(LANES, s->R1 - r0), xoff[LANES], yoff[LANES];
    double mean[LANES], s0[LANES], s1[LANES], s2[LANES];
    for (ptrdiff_t j = 0; j < cnt; j++) {
        xoff[j] = (r0 + j) * s->xr1;
        yoff[j] = (r0 + j) * s->yr1;
        mean[j] = TF(sums_center)(p, u);
    }
    TF(bwd_sums_at)(q, xoff, xu, yoff, yu, cnt, s->R2, mean, s0, s1, s2);
    /* 0 + the block's sums, as a sum over the segment's blocks starts */
    for (ptrdiff_t j = 0; j < cnt; j++) {
        sums[3 * j] = 0.0 + s0[j]; sums[3 * j + 1] = 0.0 + s1[j]; sums[3 * j + 2] = 0.0 + s2[j];
    }
    return cnt;
}

static void TF(seg_bwd_unit)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q, ptrdiff_t u)
{
    double S[3] = {0, 0, 0};
    if (s->R1 > 1 && TF(bwd_short_segments)(s, q)) {
        /* BatchNorm's N planes of a channel, LANES at a time; added in order */
        for (ptrdiff_t r0 = 0; r0 < s->R1; r0 += LANES) {
            double sums[3 * LANES];
            ptrdiff_t cnt = TF(seg_bwd_segment_sums)(s, p, q, u, r0, sums);
            for (ptrdiff_t j = 0; j < cnt; j++) { S[0] += sums[3 * j]; S[1] += sums[3 * j + 1]; S[2] += sums[3 * j + 2]; }
        }
    } else {
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++) TF(seg_bwd_segment_add)(s, p, q, u, r1, S);
    }
    TF(bwd_unit_finish)(p, u, (double)(s->R1 * s->R2), S[0], S[1], S[2]);
    if (q->dx)
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++)
            TF(seg_bwd_block)(s, p, q, u, r1, 0, s->R2, 1, NULL);
}

/* Whether seg_bwd_units walks its units row-wise (seg_bwd_rowwise). */
static inline int TF(bwd_rowwise)(const fn_seg_shape *s, const TF(seg_bwd_ptrs) *q)
{
    return s->R1 > 1 && s->xr1 != s->R2 && TF(bwd_short_segments)(s, q)
           && s->R2 * (ptrdiff_t)sizeof(T) < FN_SHORT_SEGMENT_BYTES;
}

/* Units [u0, u1) of many short segments that lie a row of units apart
 * (BatchNorm over N planes of 7 x 7): as the forward's seg_units_rowwise, the
 * units of a chunk are walked together, segment row by segment row, so memory
 * is read in long runs; each segment row's sums are taken LANES units at a time
 * (bwd_sums_rows) and added to each unit's in segment order, as seg_bwd_unit
 * adds them: the same bits. Then the chunk's dx, from L2, the same way. */
static void TF(seg_bwd_rowwise)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                ptrdiff_t u0, ptrdiff_t u1)
{
    ptrdiff_t group = fn_rowwise_units(2 * s->R1 * s->R2 * (ptrdiff_t)sizeof(T), FN_MAX_CHUNK_UNITS);
    for (ptrdiff_t g0 = u0; g0 < u1; g0 += group) {
        ptrdiff_t cnt = fn_min(group, u1 - g0);
        ptrdiff_t xo[FN_MAX_CHUNK_UNITS], yo[FN_MAX_CHUNK_UNITS], wo[FN_MAX_CHUNK_UNITS];
        double mean[FN_MAX_CHUNK_UNITS + LANES], S0[FN_MAX_CHUNK_UNITS], S1[FN_MAX_CHUNK_UNITS],
            S2[FN_MAX_CHUNK_UNITS];
        fn_unit_offsets(s, g0, cnt, xo, yo, wo);
        for (ptrdiff_t j = 0; j < cnt; j++) {
            mean[j] = TF(sums_center)(p, g0 + j);
            S0[j] = 0; S1[j] = 0; S2[j] = 0;
        }
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++)
            for (ptrdiff_t j0 = 0; j0 < cnt; j0 += LANES) {
                ptrdiff_t m = fn_min(LANES, cnt - j0);
                double s0[LANES], s1[LANES], s2[LANES];
                TF(bwd_sums_at)(q, xo + j0, r1 * s->xr1, yo + j0, r1 * s->yr1, m, s->R2, mean + j0, s0, s1, s2);
                for (ptrdiff_t j = 0; j < m; j++) { S0[j0 + j] += s0[j]; S1[j0 + j] += s1[j]; S2[j0 + j] += s2[j]; }
            }
        for (ptrdiff_t j = 0; j < cnt; j++)
            TF(bwd_unit_finish)(p, g0 + j, (double)(s->R1 * s->R2), S0[j], S1[j], S2[j]);
        if (!q->dx) continue;
        /* the planes of one sample's channels lie end to end: joined runs. The
         * runs depend on the units' offsets only and the coefficients on the
         * unit only, so both are found once for all segment rows: found for
         * every plane, BatchNorm backward (64, 256, 7, 7) ran 8.6 % more
         * instructions (callgrind) and took 1.07-1.11x the time on one thread,
         * 1.08x on two */
        T tc[FN_DX_TC * FN_MAX_CHUNK_UNITS];
        ptrdiff_t runs[FN_MAX_CHUNK_UNITS], nruns = 0;
        unsigned char all[FN_MAX_CHUNK_UNITS];
        for (ptrdiff_t j = 0; j < cnt; j++) {
            double cf[5];
            TF(seg_dx_coeffs)(s, p, q, g0 + j, cf);
            TF(bwd_dx_coeffs_t)(cf, tc + FN_DX_TC * j);
            all[j] = 1;
        }
        int joined = s->R2 >= TLANES;
        for (ptrdiff_t j = 0; j < cnt; j += runs[nruns++])
            runs[nruns] = joined ? TF(joined_len)(xo, yo, all, j, cnt, s->R2) : 1;
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++)
            for (ptrdiff_t k = 0, j = 0; k < nruns; j += runs[k++]) {
                if (runs[k] > 1)
                    TF(bwd_dx_joined)(q->x + xo[j] + r1 * s->xr1, q->dy + yo[j] + r1 * s->yr1,
                                      q->dx + yo[j] + r1 * s->yr1, s->R2, runs[k], tc + FN_DX_TC * j, q->stream);
                else
                    TF(seg_bwd_block)(s, p, q, g0 + j, r1, 0, s->R2, 1, NULL);
            }
    }
}

/* Units [u0, u1) by seg_bwd_unit; single-segment units of at most
 * FN_BWD_BATCH_BYTES (InstanceNorm's 7 x 7 planes, 13 % faster) LANES at a time:
 * their sums by bwd_sums_rows, then their dx. The same bits. (Planes of 14 x 14
 * ran 7 % slower so: the unit-by-unit walk interleaves reading and writing more
 * finely.) */
static void TF(seg_bwd_units)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                              ptrdiff_t u0, ptrdiff_t u1)
{
    if (TF(bwd_rowwise)(s, q)) {
        TF(seg_bwd_rowwise)(s, p, q, u0, u1);
        return;
    }
    if (s->R1 != 1 || !TF(bwd_short_segments)(s, q) || s->R2 * (ptrdiff_t)sizeof(T) > FN_BWD_BATCH_BYTES) {
        for (ptrdiff_t u = u0; u < u1; u++) TF(seg_bwd_unit)(s, p, q, u);
        return;
    }
    for (ptrdiff_t g = u0; g < u1; g += LANES) {
        ptrdiff_t cnt = fn_min(LANES, u1 - g);
        const T *xr[LANES], *dyr[LANES];
        double mean[LANES], s0[LANES], s1[LANES], s2[LANES];
        for (ptrdiff_t j = 0; j < cnt; j++) {
            ptrdiff_t u = g + j, a = u / s->K, k = u % s->K;
            xr[j] = q->x + a * s->xa + k * s->xk;
            dyr[j] = q->dy + a * s->ya + k * s->yk;
            mean[j] = TF(sums_center)(p, u);
        }
        /* (through bwd_sums_at's offset array: 4 % slower) */
        TF(bwd_sums_rows)(xr, dyr, cnt, s->R2, mean, s0, s1, s2);
        /* (the group's dx as one joined run, as seg_bwd_rowwise writes it, ran
         * 2-5 % slower for 7 x 7 planes) */
        for (ptrdiff_t j = 0; j < cnt; j++) {
            TF(bwd_unit_finish)(p, g + j, (double)s->R2, 0.0 + s0[j], 0.0 + s1[j], 0.0 + s2[j]);
            if (q->dx) TF(seg_bwd_block)(s, p, q, g + j, 0, 0, s->R2, 1, NULL);
        }
    }
}

/* Adds unit u's contributions dy * xhat and dy to the T-precision parameter
 * partials pw, pb (parameters along the segment: index r1 * wr1 + r2). Run right
 * after seg_bwd_unit, while the unit's rows are still in cache. n: s->R2, a
 * constant in seg_bwd_rows_grouped's copies for one row length. */
static inline __attribute__((always_inline)) void TF(seg_bwd_unit_params_n)(
    const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q, ptrdiff_t u, T *pw, T *pb,
    const ptrdiff_t n)
{
    ptrdiff_t a = u / s->K, k = u % s->K;
    double mean = p->mode == FN_MODE_RMS ? 0.0 : p->cmean[u];
    const VT z = {0};
    const T mh = (T)mean, ml = (T)(mean - (double)mh), rs = (T)p->rstd[u];
    const VT mhv = z + mh, mlv = z + ml, rv = z + rs;
    for (ptrdiff_t r1 = 0; r1 < s->R1; r1++) {
        const T *x = q->x + a * s->xa + k * s->xk + r1 * s->xr1;
        const T *dy = q->dy + a * s->ya + k * s->yk + r1 * s->yr1;
        T *dw = pw + k * s->wk + r1 * s->wr1, *db = pb ? pb + k * s->wk + r1 * s->wr1 : NULL;
        ptrdiff_t i = 0;
        for (; i + TLANES <= n; i += TLANES) {
            VT g = TF(loadt)(dy + i);
            VT xh = ((TF(loadt)(x + i) - mhv) - mlv) * rv;
            TF(storet)(dw + i, TF(loadt)(dw + i) + g * xh);
            if (db) TF(storet)(db + i, TF(loadt)(db + i) + g);
        }
#if FN_VBYTES >= 32
        /* the values short of a vector in masked vectors (rows of 8 float32 values:
         * the scalar loop took a fifth of LayerNorm backward (100000, 8)); the same
         * operations per value */
        if (i < n) {
            ptrdiff_t m = n - i;
            VT g = TF(load_part)(dy + i, m, (T)0);
            VT xh = ((TF(load_part)(x + i, m, mh) - mhv) - mlv) * rv;
            TF(store_part)(dw + i, m, TF(load_part)(dw + i, m, (T)0) + g * xh);
            if (db) TF(store_part)(db + i, m, TF(load_part)(db + i, m, (T)0) + g);
        }
#else
        for (; i < n; i++) {
            dw[i] += dy[i] * (((x[i] - mh) - ml) * rs);
            if (db) db[i] += dy[i];
        }
#endif
    }
}

static void TF(seg_bwd_unit_params)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                    ptrdiff_t u, T *pw, T *pb)
{
    TF(seg_bwd_unit_params_n)(s, p, q, u, pw, pb, s->R2);
}

/* Units [u0, u1) of rows (R1 == 1), as seg_bwd_unit + seg_bwd_unit_params
 * compute them, with each row's sums taken in the dx loop of the row before
 * (bwd_dx_piped). */
static void TF(seg_bwd_rows_piped)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                   ptrdiff_t u0, ptrdiff_t u1, T *pw, T *pb)
{
    int rms = p->mode == FN_MODE_RMS;
    /* offsets of units u (o), u + 1 (n) and u + 2 (f), each found once */
    ptrdiff_t n = s->R2, U = s->A * s->K, xo, yo, wo, xn = 0, yn = 0, wn = 0, xf = 0, yf = 0, wf = 0;
    const T *w = q->wred;
    double S[3] = {0, 0, 0};
    fn_unit_offsets(s, u0, 1, &xo, &yo, &wo);
    if (u0 + 1 < u1) fn_unit_offsets(s, u0 + 1, 1, &xn, &yn, &wn);
    /* a weight row per unit from wo on (wk != 0: the joined GroupNorm), else one */
    TF(bwd_row_sums)(q->x + xo, q->dy + yo, w ? w + wo : NULL, 0, n, rms ? 0.0 : p->mean[u0], S);
    TF(bwd_unit_finish)(p, u0, (double)n, S[0], S[1], S[2]);
    for (ptrdiff_t u = u0; u < u1; u++) {
        int has_next = u + 1 < u1, next_follows = 0;
        if (has_next && u + 2 < U) {
            fn_unit_offsets(s, u + 2, 1, &xf, &yf, &wf);
            next_follows = xf == xn + n && yf == yn + n;
        }
        double mean_n = has_next && !rms ? p->mean[u + 1] : 0.0;
        S[0] = S[1] = S[2] = 0;
        if (q->dx) {
            double scale, c1, c2, rstd = p->rstd[u];
            double wu = q->wunit ? (double)q->wunit[(u % s->K) * s->wk] : 1.0;
            TF(bwd_coeffs)(p, wu, (double)n, p->s1[u], p->s2[u], rstd, &scale, &c1, &c2);
            if (has_next)
                TF(bwd_dx_piped)(q->x + xo, q->dy + yo, q->dx + yo, n, p->cmean[u], rstd, w ? w + wo : NULL, scale,
                                 c1, c2, q->x + xn, q->dy + yn, w ? w + wn : NULL, mean_n, S, q->stream,
                                 next_follows);
            else
                TF(bwd_dx)(q->x + xo, q->dy + yo, q->dx + yo, n, p->cmean[u], rstd, w ? w + wo : NULL, scale, c1,
                           c2, q->stream);
        } else if (has_next) {
            TF(bwd_row_sums)(q->x + xn, q->dy + yn, w ? w + wn : NULL, 0, n, mean_n, S);
        }
        TF(seg_bwd_unit_params)(s, p, q, u, pw, pb);
        if (!has_next) break;
        TF(bwd_unit_finish)(p, u + 1, (double)n, S[0], S[1], S[2]);
        xo = xn; yo = yn; wo = wn;
        xn = xf; yn = yf; wn = wf;
    }
}

/* seg_bwd_rows_piped's units, results and order of parameter sums, for rows
 * of at most FN_BWD_GROUPED_MAX_BYTES: there each row waited on the one before
 * (its sums, then its dx, whose loop takes the next row's sums), and LayerNorm
 * backward (100000, 8) took about 40 ns a row. Here the sums of
 * FN_BWD_ROW_GROUP rows come first, LANES rows reduced together
 * (bwd_sums_rows_w, bit for bit bwd_sums), then their coefficients, dx and
 * parameter partials row by row in unit order. n: s->R2, a constant in the
 * copies for one row length. */
static inline __attribute__((always_inline)) void TF(seg_bwd_rows_grouped_n)(
    const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q, ptrdiff_t u0, ptrdiff_t u1, T *pw, T *pb,
    const ptrdiff_t n)
{
    int rms = p->mode == FN_MODE_RMS;
    const T *w = q->wred;
    for (ptrdiff_t g = u0; g < u1; g += FN_BWD_ROW_GROUP) {
        ptrdiff_t cnt = fn_min(FN_BWD_ROW_GROUP, u1 - g);
        ptrdiff_t xo[FN_BWD_ROW_GROUP], yo[FN_BWD_ROW_GROUP], wo[FN_BWD_ROW_GROUP];
        fn_unit_offsets(s, g, cnt, xo, yo, wo);
        for (ptrdiff_t j0 = 0; j0 < cnt; j0 += LANES) {
            ptrdiff_t m = fn_min(LANES, cnt - j0);
            const T *xr[LANES], *dyr[LANES], *wr[LANES];
            double mean[LANES], s0[LANES], s1[LANES], s2[LANES];
            for (ptrdiff_t j = 0; j < m; j++) {
                xr[j] = q->x + xo[j0 + j];
                dyr[j] = q->dy + yo[j0 + j];
                wr[j] = w ? w + wo[j0 + j] : NULL;
                mean[j] = rms ? 0.0 : p->mean[g + j0 + j];
            }
            TF(bwd_sums_rows_w)(xr, dyr, w ? wr : NULL, m, n, mean, s0, s1, s2);
            /* 0 + the row's sums, as seg_bwd_rows_piped's start from 0 */
            for (ptrdiff_t j = 0; j < m; j++)
                TF(bwd_unit_finish)(p, g + j0 + j, (double)n, 0.0 + s0[j], 0.0 + s1[j], 0.0 + s2[j]);
        }
        for (ptrdiff_t j = 0; j < cnt; j++) {
            ptrdiff_t u = g + j;
            if (q->dx) {
                double scale, c1, c2, rstd = p->rstd[u];
                double wu = q->wunit ? (double)q->wunit[(u % s->K) * s->wk] : 1.0;
                TF(bwd_coeffs)(p, wu, (double)n, p->s1[u], p->s2[u], rstd, &scale, &c1, &c2);
                TF(bwd_dx)(q->x + xo[j], q->dy + yo[j], q->dx + yo[j], n, p->cmean[u], rstd, w ? w + wo[j] : NULL,
                           scale, c1, c2, q->stream);
            }
            TF(seg_bwd_unit_params_n)(s, p, q, u, pw, pb, n);
        }
    }
}

/* seg_bwd_rows_grouped_n, compiled apart for each row length fn_lean_fixed
 * names (as the forward's row groups). */
__attribute__((noinline)) static void TF(seg_bwd_rows_grouped)(const fn_seg_shape *s, const fn_bwd_args *p,
                                                               const TF(seg_bwd_ptrs) *q, ptrdiff_t u0,
                                                               ptrdiff_t u1, T *pw, T *pb)
{
#define FN_BWD_GROUPED_N(n) TF(seg_bwd_rows_grouped_n)(s, p, q, u0, u1, pw, pb, n)
    FN_FIXED_ROW_CALL(s->R2 * (ptrdiff_t)sizeof(T), FN_BWD_GROUPED_N, FN_BWD_GROUPED_N(s->R2));
#undef FN_BWD_GROUPED_N
}

/* Many units with parameters along the segment (LayerNorm rows): fixed groups of
 * units (fn_param_group_units), each with its own T-precision partial parameter
 * sums accumulated while its rows are in cache, then folded in group order in
 * double: one pass over memory, and the same bits for any thread count. */
static int TF(seg_bwd_grouped)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q, int nt)
{
    ptrdiff_t U = s->A * s->K, np_ = p->nparam, gu = fn_param_group_units(s), ng = (U + gu - 1) / gu;
    int nb = p->db ? 2 : 1;
    ptrdiff_t gs = nb * np_ + 48;   /* group stride, off 4 KiB multiples */
    T *part = (T *)fn_scratch_alloc((size_t)ng * (size_t)gs * sizeof(T));
    if (!part) return FN_ENOMEM;
    /* rows of at most a block in groups (see FN_BWD_GROUPED_MAX_BYTES), else
     * piped, as are rows longer than a block in inputs that do not stay in cache
     * (see FN_BWD_PIPED_MAX_ROW_BYTES) */
    ptrdiff_t row_bytes = s->R2 * (ptrdiff_t)sizeof(T);
    int in_cache = (double)U * (double)row_bytes < FN_PIPED_MIN_BYTES;
    int grouped_rows = s->R1 == 1 && s->R2 <= FN_BLOCK && (row_bytes <= FN_BWD_GROUPED_MAX_BYTES || in_cache);
    int piped = s->R1 == 1 && (s->R2 <= FN_BLOCK || (row_bytes <= FN_BWD_PIPED_MAX_ROW_BYTES && !in_cache));
    FN_PARALLEL_SHARES(nt, ng, g,
        T *pw = part + g * gs, *pb = p->db ? pw + np_ + 16 : NULL;
        ptrdiff_t g1 = fn_min(U, (g + 1) * gu);
        __builtin_memset(pw, 0, (size_t)gs * sizeof(T));
        if (grouped_rows) {
            TF(seg_bwd_rows_grouped)(s, p, q, g * gu, g1, pw, pb);
        } else if (piped) {
            TF(seg_bwd_rows_piped)(s, p, q, g * gu, g1, pw, pb);
        } else {
            for (ptrdiff_t u = g * gu; u < g1; u++) {
                TF(seg_bwd_unit)(s, p, q, u);
                TF(seg_bwd_unit_params)(s, p, q, u, pw, pb);
            }
        }
    );
    /* the groups' partials folded per parameter, in ranges of FN_BLOCK */
    FN_PARALLEL_SHARES(nt, (np_ + FN_BLOCK - 1) / FN_BLOCK, c,
        for (ptrdiff_t j = c * FN_BLOCK; j < fn_min(np_, (c + 1) * FN_BLOCK); j++) {
            double w = 0, b = 0;
            for (ptrdiff_t g = 0; g < ng; g++) {
                w += (double)part[g * gs + j];
                if (p->db) b += (double)part[g * gs + np_ + 16 + j];
            }
            p->dw[j] = w;
            if (p->db) p->db[j] = b;
        }
    );
    fn_scratch_free(part);
    return FN_OK;
}

/* Gradients of parameters along the reduced axes: for each (r1, block of r2),
 * and each k when the units have parameters of their own (wk != 0), sum over
 * the units in order. Each parameter is owned by one item. */
static void TF(seg_bwd_params)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q, int nt)
{
    ptrdiff_t nb = (s->R2 + FN_BLOCK - 1) / FN_BLOCK, per_k = s->R1 * nb;
    ptrdiff_t nk = s->wk ? s->K : 1, n_items = nk * per_k, uk = s->wk ? 1 : s->K;
    int rms = p->mode == FN_MODE_RMS;
    FN_PARALLEL_SHARES(nt, n_items, it,
        ptrdiff_t k0 = it / per_k, r1 = (it % per_k) / nb, i0 = (it % nb) * FN_BLOCK;
        ptrdiff_t m = fn_min(FN_BLOCK, s->R2 - i0), wo = k0 * s->wk + r1 * s->wr1 + i0;
        double *dw = p->dw + wo, *db = p->db ? p->db + wo : NULL;
        for (ptrdiff_t i = 0; i < m; i++) { dw[i] = 0; if (db) db[i] = 0; }
        /* units a * K + k0 (wk != 0), or every unit */
        for (ptrdiff_t v = 0; v < s->A * uk; v++) {
            ptrdiff_t u = s->wk ? v * s->K + k0 : v;
            ptrdiff_t a = u / s->K, k = u % s->K;
            const T *x = q->x + a * s->xa + k * s->xk + r1 * s->xr1 + i0;
            const T *dy = q->dy + a * s->ya + k * s->yk + r1 * s->yr1 + i0;
            double mean = rms ? 0.0 : p->cmean[u], rstd = p->rstd[u];
            if (db) {
                _Pragma("omp simd")
                for (ptrdiff_t i = 0; i < m; i++) {
                    double g = (double)dy[i];
                    dw[i] += g * (((double)x[i] - mean) * rstd);
                    db[i] += g;
                }
            } else {
                _Pragma("omp simd")
                for (ptrdiff_t i = 0; i < m; i++) dw[i] += (double)dy[i] * (((double)x[i] - mean) * rstd);
            }
        }
    );
}

/* Parameters per row (k, r1), constant along r2: GroupNorm's per-channel affine
 * inside groups of channels. Each row's sums are taken without the parameter
 * (sum(x - m), sum(dy), sum(dy * (x - m)) into rows[3 * r1 ...]) and kept, so the
 * unit's sums weight them by the row's parameter and the parameter gradients
 * need no second pass over dy and x. */
static void TF(seg_bwd_plane_row)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                  ptrdiff_t u, ptrdiff_t r1, double *row)
{
    double S[3] = {0, 0, 0};
    TF(seg_bwd_segment_add)(s, p, q, u, r1, S);
    row[0] = S[0]; row[1] = S[1]; row[2] = S[2];
}

/* seg_bwd_plane_row for all rows of unit u; single-block rows LANES at a time
 * (seg_bwd_segment_sums), the same bits. */
static void TF(seg_bwd_plane_rows)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                   ptrdiff_t u, double *rows)
{
    if (!TF(bwd_short_segments)(s, q)) {
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++) TF(seg_bwd_plane_row)(s, p, q, u, r1, rows + 3 * r1);
        return;
    }
    for (ptrdiff_t r0 = 0; r0 < s->R1; r0 += LANES) TF(seg_bwd_segment_sums)(s, p, q, u, r0, rows + 3 * r0);
}

static inline double TF(plane_w)(const fn_seg_shape *s, const TF(seg_bwd_ptrs) *q, ptrdiff_t u, ptrdiff_t r1)
{
    return (double)q->wplane[(u % s->K) * s->wk + r1 * s->wr1];
}

/* Unit u from its row sums: finish the statistics, then dx row by row. */
static void TF(seg_bwd_plane_unit)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                   ptrdiff_t u, const double *rows)
{
    double S0 = 0, S1 = 0, S2 = 0, n = (double)(s->R1 * s->R2);
    for (ptrdiff_t r1 = 0; r1 < s->R1; r1++) {
        double wv = TF(plane_w)(s, q, u, r1);
        S0 += rows[3 * r1]; S1 += wv * rows[3 * r1 + 1]; S2 += wv * rows[3 * r1 + 2];
    }
    TF(bwd_unit_finish)(p, u, n, S0, S1, S2);
}

static inline ptrdiff_t TF(plane_xo)(const fn_seg_shape *s, ptrdiff_t u, ptrdiff_t r1)
{
    return fn_unit_x_offset(s, u) + r1 * s->xr1;
}

static inline ptrdiff_t TF(plane_yo)(const fn_seg_shape *s, ptrdiff_t u, ptrdiff_t r1)
{
    return (u / s->K) * s->ya + (u % s->K) * s->yk + r1 * s->yr1;
}

/* dx of row r1 of unit u; ahead: row r1 of unit u + 1 is asked for meanwhile. */
static void TF(seg_bwd_plane_dx)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q,
                                 ptrdiff_t u, ptrdiff_t r1, int ahead)
{
    double scale, c1, c2, rstd = p->rstd[u];
    TF(bwd_coeffs)(p, 1.0, (double)(s->R1 * s->R2), p->s1[u], p->s2[u], rstd, &scale, &c1, &c2);
    ptrdiff_t xo = TF(plane_xo)(s, u, r1), yo = TF(plane_yo)(s, u, r1);
    const T *xn = ahead ? q->x + TF(plane_xo)(s, u + 1, r1) : NULL;
    const T *dyn = ahead ? q->dy + TF(plane_yo)(s, u + 1, r1) : NULL;
    TF(bwd_dx_scalar_w)(q->x + xo, q->dy + yo, q->dx + yo, s->R2, p->cmean[u], rstd,
                        TF(plane_w)(s, q, u, r1), scale, c1, c2, xn, dyn);
}

static int TF(seg_bwd_planes)(const fn_seg_shape *s, const fn_bwd_args *p, const TF(seg_bwd_ptrs) *q, int nt)
{
    ptrdiff_t U = s->A * s->K, R1 = s->R1, n_rows = U * R1;
    double *rows = (double *)fn_scratch_alloc(sizeof(double) * 3 * (size_t)n_rows);
    if (!rows) return FN_ENOMEM;
    if (nt <= 1 || U >= 4 * (ptrdiff_t)nt) {
        /* a unit at a time: its dx pass re-reads x and dy from cache */
        ptrdiff_t chunk = fn_chunk_items(U, R1 * s->R2, nt);
        /* rows r1 < ahead of the next unit are asked for during this unit's dx */
        ptrdiff_t row_bytes = 2 * s->R2 * (ptrdiff_t)sizeof(T), ahead = 0;
        if (FN_PLANE_AHEAD_L2_DIV > 0 && row_bytes > 0)
            ahead = fn_min(R1, (ptrdiff_t)fn_l2_bytes() / FN_PLANE_AHEAD_L2_DIV / row_bytes);
        FN_PARALLEL_SHARES(nt, (U + chunk - 1) / chunk, u_c_,
            for (ptrdiff_t u = u_c_ * chunk; u < fn_min(U, (u_c_ + 1) * chunk); u++) {
                TF(seg_bwd_plane_rows)(s, p, q, u, rows + 3 * u * R1);
                TF(seg_bwd_plane_unit)(s, p, q, u, rows + 3 * u * R1);
                if (q->dx)
                    for (ptrdiff_t r1 = 0; r1 < R1; r1++)
                        TF(seg_bwd_plane_dx)(s, p, q, u, r1, r1 < ahead && u + 1 < U);
            }
        );
    } else {
        /* few units: rows are the work items (the same sums in the same order) */
        FN_PARALLEL_SHARES(nt, n_rows, it, TF(seg_bwd_plane_row)(s, p, q, it / R1, it % R1, rows + 3 * it); );
        for (ptrdiff_t u = 0; u < U; u++) TF(seg_bwd_plane_unit)(s, p, q, u, rows + 3 * u * R1);
        if (q->dx) {
            FN_PARALLEL_SHARES(nt, n_rows, it, TF(seg_bwd_plane_dx)(s, p, q, it / R1, it % R1, 0); );
        }
    }
    if (p->dw) {
        /* parameter (k, r1) collects rstd * sum(dy * (x - corrected mean)) and sum(dy)
         * over a, in order */
        int rms = p->mode == FN_MODE_RMS;
        for (ptrdiff_t k = 0; k < s->K; k++)
            for (ptrdiff_t r1 = 0; r1 < R1; r1++) {
                double dw = 0, db = 0;
                for (ptrdiff_t a = 0; a < s->A; a++) {
                    ptrdiff_t u = a * s->K + k;
                    const double *row = rows + 3 * (u * R1 + r1);
                    double corr = rms ? 0.0 : p->cmean[u] - p->mean[u];
                    dw += p->rstd[u] * (row[2] - corr * row[1]);
                    db += row[1];
                }
                p->dw[k * s->wk + r1 * s->wr1] = dw;
                if (p->db) p->db[k * s->wk + r1 * s->wr1] = db;
            }
    }
    fn_scratch_free(rows);
    return FN_OK;
}

static int TF(col_bwd)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const fn_bwd_args *p);

/* The backward of seg_as_columns' shapes (seg_columns_ok) through the column
 * walk with groups of R2 columns (col_bwd_groups): per-unit statistics and
 * sums are the groups' own; a per-unit parameter is repeated for each of the
 * unit's columns and its gradients are summed over them. */
static int TF(seg_bwd_as_columns)(const fn_seg_shape *s, const T *x, const T *dy, T *dx, const fn_bwd_args *p)
{
    ptrdiff_t R2 = s->R2, KC = s->K * R2;
    fn_col_shape c = {s->A, s->R1, KC, s->xa, s->xr1, s->ya, s->yr1, 0, R2};
    fn_bwd_args cp = *p;
    int w_unit = p->w && s->wk == 1;
    double *grads = p->dw ? (double *)fn_scratch_alloc(sizeof(double) * 2 * (size_t)KC) : NULL;
    T *wc = w_unit ? (T *)fn_scratch_alloc(sizeof(T) * (size_t)KC) : NULL;
    if ((p->dw && !grads) || (w_unit && !wc)) {
        fn_scratch_free(grads);
        fn_scratch_free(wc);
        return FN_ENOMEM;
    }
    if (w_unit) {
        TF(repeat_per_column)((const T *)p->w, KC, R2, wc);
        cp.w = wc;
    }
    if (p->dw) {
        cp.dw = grads;
        cp.db = p->db ? grads + KC : NULL;
        cp.nparam = KC;
    }
    int status = TF(col_bwd)(&c, x, dy, dx, &cp);
    if (status == FN_OK && p->dw) {
        /* per column (w_column) or summed over each unit's columns */
        ptrdiff_t step = w_unit ? R2 : 1;
        for (ptrdiff_t i = 0; i < KC / step; i++) {
            double dw = 0, db = 0;
            for (ptrdiff_t j = i * step; j < (i + 1) * step; j++) {
                dw += grads[j];
                if (p->db) db += grads[KC + j];
            }
            p->dw[i] = dw;
            if (p->db) p->db[i] = db;
        }
    }
    fn_scratch_free(grads);
    fn_scratch_free(wc);
    return status;
}

static int TF(seg_bwd)(const fn_seg_shape *s, const T *x, const T *dy, T *dx, const fn_bwd_args *p)
{
    if (TF(seg_columns_ok)(s, dx, p->w)) return TF(seg_bwd_as_columns)(s, x, dy, dx, p);
    ptrdiff_t U = s->A * s->K, unit_len = s->R1 * s->R2;
    if (U == 0) return FN_OK;
    const T *w = (const T *)p->w;
    int plane = w && s->wk != 0 && s->wr1 != 0 && s->R1 > 1 && s->wr2 == 0;
    int wred = w && (s->wk == 0 || s->wr2 != 0) && !plane;
    /* dx of 16 MiB and more is streamed: a unit's dx pass re-reads x and dy from
     * L2, and cached stores of dx would read each of its lines for ownership and
     * evict them (BatchNorm backward (32, 64, 56, 56) 14 % faster streamed); the
     * row walk (seg_bwd_rows_piped) reads the next row while it writes dx, and
     * skipping the read for ownership leaves the core's fill buffers to those reads
     * (LayerNorm backward (8192, 768) 6 % faster, one thread 14 %). The GroupNorm
     * planes (seg_bwd_planes) gained nothing and store as before. */
    TF(seg_bwd_ptrs) q = {x, dy, dx, wred ? w : NULL, (w && !wred && !plane) ? w : NULL, plane ? w : NULL,
                          dx && fn_stream_output((double)U * (double)unit_len * sizeof(T), 1)
                              && TF(seg_lines_apart)(s, dx, 0)};
    double work = fn_work((double)U, (double)unit_len);
    int nt = work < FN_SERIAL_ELEMS ? 1 : p->nthreads;
    if (nt > 1) nt = fn_threads_acquire(nt);
    if (plane) {
        int st = TF(seg_bwd_planes)(s, p, &q, nt);
        if (nt > 1) fn_threads_release(nt);
        return st;
    }
    /* decided by the shape alone, so the parameter sums do not depend on nt */
    ptrdiff_t gu = fn_param_group_units(s);
    int grouped = p->dw && q.wred && s->wr2 == 1 && U > gu
                  && (double)((U + gu - 1) / gu) * (double)p->nparam <= FN_PARAM_SCRATCH;
    if (grouped) {
        int st = TF(seg_bwd_grouped)(s, p, &q, nt);
        if (nt > 1) fn_threads_release(nt);
        return st;
    }
    if (nt <= 1 || U >= 4 * (ptrdiff_t)nt) {
        ptrdiff_t chunk = fn_chunk_items(U, unit_len, nt);
        if (TF(bwd_rowwise)(s, &q))
            chunk = fn_rowwise_chunk(U, 2 * unit_len * (ptrdiff_t)sizeof(T), FN_MAX_CHUNK_UNITS, nt);
        FN_PARALLEL_SHARES(nt, (U + chunk - 1) / chunk, u_c_,
            TF(seg_bwd_units)(s, p, &q, u_c_ * chunk, fn_min(U, (u_c_ + 1) * chunk));
        );
    } else {
        ptrdiff_t nb = (s->R2 + FN_BLOCK - 1) / FN_BLOCK, per_unit = s->R1 * nb, n_items = U * per_unit;
        double *part = (double *)fn_scratch_alloc(sizeof(double) * 3 * (size_t)n_items);
        if (!part) { fn_threads_release(nt); return FN_ENOMEM; }
        FN_PARALLEL_SHARES(nt, (n_items + 15) / 16, c,
            for (ptrdiff_t it = c * 16; it < fn_min(n_items, (c + 1) * 16); it++) {
                ptrdiff_t u = it / per_unit, rem = it % per_unit, r1 = rem / nb, i0 = (rem % nb) * FN_BLOCK;
                TF(seg_bwd_block)(s, p, &q, u, r1, i0, fn_min(i0 + FN_BLOCK, s->R2), 0, &part[3 * it]);
            }
        );
        for (ptrdiff_t u = 0; u < U; u++) {
            double S[3] = {0, 0, 0};
            for (ptrdiff_t j = 0; j < per_unit; j++)
                for (int t = 0; t < 3; t++) S[t] += part[3 * (u * per_unit + j) + t];
            TF(bwd_unit_finish)(p, u, (double)unit_len, S[0], S[1], S[2]);
        }
        fn_scratch_free(part);
        if (dx) {
            FN_PARALLEL_SHARES(nt, (n_items + 15) / 16, c,
                for (ptrdiff_t it = c * 16; it < fn_min(n_items, (c + 1) * 16); it++) {
                    ptrdiff_t u = it / per_unit, rem = it % per_unit, r1 = rem / nb, i0 = (rem % nb) * FN_BLOCK;
                    TF(seg_bwd_block)(s, p, &q, u, r1, i0, fn_min(i0 + FN_BLOCK, s->R2), 1, NULL);
                }
            );
        }
    }
    if (p->dw) {
        if (q.wred) {
            TF(seg_bwd_params)(s, p, &q, nt);
        } else {
            for (ptrdiff_t k = 0; k < s->K; k++) {
                double dwk = 0, dbk = 0;
                for (ptrdiff_t a = 0; a < s->A; a++) { dwk += p->s2[a * s->K + k]; dbk += p->s1[a * s->K + k]; }
                p->dw[k * s->wk] = dwk;
                if (p->db) p->db[k * s->wk] = dbk;
            }
        }
    }
    if (nt > 1) fn_threads_release(nt);
    return FN_OK;
}

/* ---------------------------------------------------------------- COL ---- */

/* The sums of col_bwd_super's columns [0, kv) that are not finite, taken again
 * by bwd_sums_exact over the superblock's n rows (x, dy at row strides xr, yr;
 * wred per row or NULL) around the same shifts (the means rounded to T, 0 in
 * RMS mode): their float32 lane sums left float32's range in some block. */
__attribute__((noinline, cold)) static void TF(col_bwd_exact)(const T *x, ptrdiff_t xr, const T *dy, ptrdiff_t yr,
                                                              const T *wred, ptrdiff_t n, ptrdiff_t kv,
                                                              const double *mean, int rms, double *s0,
                                                              double *s1, double *s2)
{
    for (ptrdiff_t k = 0; k < kv; k++) {
        if (TF(bwd_sums_finite)(s0[k], s1[k], s2[k])) continue;
        TF(bwd_sums_exact)(x + k, xr, dy + k, yr, wred, 1, n, rms ? (T)0 : (T)mean[k], &s0[k], &s1[k], &s2[k]);
    }
}

/* Sums (around the given mean, see bwd_sums) of superblock sb of slab a into
 * s0[K], s1[K], s2[K]. */
static void TF(col_bwd_super)(const fn_col_shape *s, const fn_bwd_args *p, const T *x, const T *dy,
                              const T *wred, const double *mean, ptrdiff_t a, ptrdiff_t sb,
                              double *s0, double *s1, double *s2)
{
    ptrdiff_t K = s->K, rows = FN_COL_BLOCK * FN_COL_SUPER;
    ptrdiff_t r_begin = sb * rows, r_end = fn_min(r_begin + rows, s->R);
    int rms = p->mode == FN_MODE_RMS;
    const T *xs = x + a * s->xa, *dys = dy + a * s->ya;
    for (ptrdiff_t k = 0; k < K; k++) { s0[k] = 0; s1[k] = 0; s2[k] = 0; }
    /* Chunks of two vectors of columns: each block of FN_COL_BLOCK rows is summed
     * in T-precision lanes (one column per lane, at most FN_COL_BLOCK terms each)
     * around the mean rounded to T, then added to the double sums; the shift is
     * moved to the exact mean at the end, as in bwd_sums. */
    const VT z = {0};
    ptrdiff_t kv = K - K % (2 * TLANES);
    /* with several chunks, the block's rows go in sub-blocks (fn_l1_sub_rows), each
     * chunk's lane sums carried from one sub-block to the next in `carry` (the same
     * additions in the same order) */
    T carry[3 * FN_COL_CARRY_MAX];
    ptrdiff_t row_bytes = K * (ptrdiff_t)sizeof(T);
    ptrdiff_t sub = kv > 2 * TLANES && kv <= FN_COL_CARRY_MAX ? fn_equal_sub_rows(FN_COL_BLOCK, 2 * row_bytes)
                                                                : FN_COL_BLOCK;
    /* contiguous rows: the next sub-block's lines of x and dy in address order
     * (fn_ahead_cursor, as col_block_sums), where a sub-block is small (wider
     * slabs, walked a block at a time, would ask for up to 1 MiB ahead); else see
     * FN_COL_AHEAD_ROW_BYTES: the chunk's lines of the next sub-block */
    int seq = s->xr == K && s->yr == K && row_bytes < FN_COL_SEQ_AHEAD_MAX_ROW_BYTES
              && 2 * sub * row_bytes <= FN_L1_BYTES;
    int ahead = !seq && sub < FN_COL_BLOCK && row_bytes >= FN_COL_AHEAD_ROW_BYTES;
    for (ptrdiff_t r0 = r_begin; r0 < r_end; r0 += FN_COL_BLOCK) {
        ptrdiff_t r1 = fn_min(r0 + FN_COL_BLOCK, r_end);
        for (ptrdiff_t rs = r0; rs < r1; rs += sub) {
            ptrdiff_t re = fn_min(rs + sub, r1), re_next = fn_min(re + sub, s->R);
            fn_ahead_cursor next_x = {0, 0}, next_dy = {0, 0};
            if (seq) {
                next_x = fn_ahead_over(xs + re * K, xs + re_next * K);
                next_dy = fn_ahead_over(dys + re * K, dys + re_next * K);
            }
            for (ptrdiff_t k = 0; k < kv; k += 2 * TLANES) {
                T mb[2 * TLANES];
                for (int j = 0; j < 2 * TLANES; j++) mb[j] = rms ? (T)0 : (T)mean[k + j];
                const VT m0 = TF(loadt)(mb), m1 = TF(loadt)(mb + TLANES);
                T *cc = carry + k, *ca = carry + FN_COL_CARRY_MAX + k, *cb = carry + 2 * FN_COL_CARRY_MAX + k;
                VT c0 = z, c1 = z, a0 = z, a1 = z, b0 = z, b1 = z;
                if (rs > r0) {
                    c0 = TF(loadt)(cc); c1 = TF(loadt)(cc + TLANES);
                    a0 = TF(loadt)(ca); a1 = TF(loadt)(ca + TLANES);
                    b0 = TF(loadt)(cb); b1 = TF(loadt)(cb + TLANES);
                }
                for (ptrdiff_t r = rs; r < re; r++) {
                    const T *xr = xs + r * s->xr + k, *dyr = dys + r * s->yr + k;
                    if (ahead && r + sub < r_end) {
                        TF(prefetch_span)(xr + sub * s->xr, 2 * TLANES * (ptrdiff_t)sizeof(T), 0);
                        TF(prefetch_span)(dyr + sub * s->yr, 2 * TLANES * (ptrdiff_t)sizeof(T), 0);
                    }
                    fn_ahead_step(&next_x, 2 * TLANES * (ptrdiff_t)sizeof(T));
                    fn_ahead_step(&next_dy, 2 * TLANES * (ptrdiff_t)sizeof(T));
                    VT d0 = TF(loadt)(xr) - m0, d1 = TF(loadt)(xr + TLANES) - m1;
                    VT g0 = TF(loadt)(dyr), g1 = TF(loadt)(dyr + TLANES);
                    if (wred) { VT wv = z + wred[r]; g0 *= wv; g1 *= wv; }
                    c0 += d0; c1 += d1; a0 += g0; a1 += g1; b0 += g0 * d0; b1 += g1 * d1;
                }
                if (re < r1) {
                    TF(storet)(cc, c0); TF(storet)(cc + TLANES, c1);
                    TF(storet)(ca, a0); TF(storet)(ca + TLANES, a1);
                    TF(storet)(cb, b0); TF(storet)(cb + TLANES, b1);
                    continue;
                }
                T tc[2 * TLANES], ta[2 * TLANES], tb[2 * TLANES];
                TF(storet)(tc, c0); TF(storet)(tc + TLANES, c1);
                TF(storet)(ta, a0); TF(storet)(ta + TLANES, a1);
                TF(storet)(tb, b0); TF(storet)(tb + TLANES, b1);
                for (int j = 0; j < 2 * TLANES; j++) {
                    s0[k + j] += (double)tc[j]; s1[k + j] += (double)ta[j]; s2[k + j] += (double)tb[j];
                }
            }
            fn_ahead_rest(&next_x);
            fn_ahead_rest(&next_dy);
        }
        for (ptrdiff_t r = r0; r < r1; r++) {
            const T *xr = xs + r * s->xr, *dyr = dys + r * s->yr;
            double wr = wred ? (double)wred[r] : 1.0;
            for (ptrdiff_t k = kv; k < K; k++) {
                double g = (double)dyr[k] * wr, d = (double)xr[k] - (rms ? 0.0 : mean[k]);
                s0[k] += d; s1[k] += g; s2[k] += g * d;
            }
        }
    }
    /* one test per column, out of the loops */
    int finite = 1;
    for (ptrdiff_t k = 0; k < kv; k++) finite &= TF(bwd_sums_finite)(s0[k], s1[k], s2[k]);
    if (!finite)
        TF(col_bwd_exact)(xs + r_begin * s->xr, s->xr, dys + r_begin * s->yr, s->yr, wred ? wred + r_begin : NULL,
                          r_end - r_begin, kv, mean, rms, s0, s1, s2);
    double n = (double)(r_end - r_begin);
    for (ptrdiff_t k = 0; k < kv; k++) {
        double delta = rms ? 0.0 : (double)(T)mean[k] - mean[k];
        s0[k] += n * delta;
        s2[k] += s1[k] * delta;
    }
}

/* col_bwd_super of every superblock of every slab (n_blocks = A * nsb), the sums
 * of block i at part + 3K * i; the blocks are cut across their columns when
 * rows are wide or the blocks few (fn_col_cut: a column's sums do not depend on
 * the cut). mean: per column of each slab, A * K values. */
static void TF(col_bwd_sums)(const fn_col_shape *s, const fn_bwd_args *p, const T *x, const T *dy,
                             const T *wred, const double *mean, ptrdiff_t nsb, ptrdiff_t n_blocks,
                             double *part, int nt)
{
    ptrdiff_t K = s->K, cw = fn_col_cut(K, n_blocks, nt, FN_COL_CARRY_MAX), ncut = (K + cw - 1) / cw;
    FN_PARALLEL_SHARES(nt, n_blocks * ncut, it,
        ptrdiff_t blk = it / ncut, k0 = (it % ncut) * cw, a = blk / nsb;
        fn_col_shape sub = *s;
        sub.K = fn_min(cw, K - k0);
        double *q = part + 3 * K * blk + k0;
        TF(col_bwd_super)(&sub, p, x + k0, dy + k0, wred, mean + a * K + k0, a, blk % nsb, q, q + K, q + 2 * K);
    );
}

/* col_bwd_finish's loop over columns, has_w and rms constants after inlining:
 * the divisions taken whatever the mode and selected after (a division or a
 * load under a condition is not if-converted, and the loop stayed scalar). */
static inline __attribute__((always_inline)) void TF(col_bwd_finish_loop)(
    ptrdiff_t K, double n, int center, int training, int has_w, int rms, const T *restrict wunit,
    const double *restrict mean, const double *restrict rstd, const double *restrict S0,
    const double *restrict S1, const double *restrict S2, double *restrict cmean, double *restrict s1,
    double *restrict s2, double *restrict scale, double *restrict c1, double *restrict c2)
{
    for (ptrdiff_t k = 0; k < K; k++) {
        double q0 = S0[k] / n, q1 = S1[k] / n, r = rstd[k];
        double c = center ? q0 : 0.0;
        double s2k = r * (S2[k] - c * S1[k]), q2 = s2k / n;
        cmean[k] = (rms ? 0.0 : mean[k]) + c;
        s1[k] = S1[k];
        s2[k] = s2k;
        scale[k] = (center && n == 1) ? 0.0 : (has_w ? (double)wunit[k] : 1.0) * r;  /* see bwd_coeffs */
        c1[k] = center ? q1 : 0.0;
        c2[k] = training ? q2 : 0.0;
    }
}

/* Slab a's column sums (col_bwd_sums' 3K values per superblock in part) folded
 * into its first superblock's, superblock after superblock; returns them (the
 * sums of x - mean, then of g and of g * (x - mean), K apart). */
static double *TF(col_bwd_fold)(double *part, ptrdiff_t K, ptrdiff_t a, ptrdiff_t nsb)
{
    double *restrict t = part + 3 * K * (a * nsb);
    for (ptrdiff_t sb = 1; sb < nsb; sb++) {
        const double *restrict q = part + 3 * K * (a * nsb + sb);
        for (ptrdiff_t k = 0; k < 3 * K; k++) t[k] += q[k];
    }
    return t;
}

/* Whether col_bwd_sums_narrow takes the sums: fewer than two pairs of vectors of
 * columns and not a whole number of pairs (the columns past the last whole pair
 * are summed one at a time in double, and for (N, 3) that was all of them: the
 * sums of (100000, 3) float32 took 300 us, seven times its forward), rows end to
 * end in x and dy, no parameter along the rows. */
static inline int TF(col_bwd_narrow_ok)(const fn_col_shape *s, const T *wred)
{
    return s->K % (2 * TLANES) != 0 && s->K < 4 * TLANES && s->xr == s->K && s->yr == s->K && !wred
           && s->R >= 4 * TF(col_narrow_rows)(s->K, 2 * TLANES);
}

/* col_bwd_sums for col_bwd_narrow_ok: m rows at a time are one row of m K
 * columns, a whole number of vector pairs, summed by the column walk with every
 * lane busy; column k's sums are those of wide columns k, K + k, ... and of the
 * last R % m rows, in that order. Leaves each slab's column sums folded at
 * part + 3K * a (one superblock per slab, as col_bwd_fold leaves them). */
static int TF(col_bwd_sums_narrow)(const fn_col_shape *s, const fn_bwd_args *p, const T *x, const T *dy,
                                   const double *mean, double *part, int nt)
{
    ptrdiff_t K = s->K, m = TF(col_narrow_rows)(K, 2 * TLANES), Kw = m * K, Rw = s->R / m, A = s->A;
    ptrdiff_t rows = FN_COL_BLOCK * FN_COL_SUPER, nsb = (Rw + rows - 1) / rows;
    int rms = p->mode == FN_MODE_RMS;
    fn_col_shape wide = *s;
    wide.R = Rw;
    wide.K = Kw;
    wide.xr = wide.yr = Kw;
    double *wpart = (double *)fn_scratch_alloc(sizeof(double) * (size_t)(A * Kw) * (3 * (size_t)nsb + 1));
    if (!wpart) return FN_ENOMEM;
    double *wmean = wpart + 3 * Kw * A * nsb;
    for (ptrdiff_t i = 0; i < A * Kw; i++) wmean[i] = rms ? 0.0 : mean[(i / Kw) * K + i % K];
    TF(col_bwd_sums)(&wide, p, x, dy, NULL, wmean, nsb, A * nsb, wpart, nt);
    for (ptrdiff_t a = 0; a < A; a++) {
        const double *ws = TF(col_bwd_fold)(wpart, Kw, a, nsb);
        const T *xt = x + a * s->xa + m * Rw * K, *dyt = dy + a * s->ya + m * Rw * K;
        double *t = part + 3 * K * a;
        for (ptrdiff_t k = 0; k < K; k++) {
            double s0 = 0, s1 = 0, s2 = 0, c = rms ? 0.0 : mean[a * K + k];
            for (ptrdiff_t j = k; j < Kw; j += K) { s0 += ws[j]; s1 += ws[Kw + j]; s2 += ws[2 * Kw + j]; }
            for (ptrdiff_t r = 0; r < s->R - m * Rw; r++) {
                double d = (double)xt[r * K + k] - c, g = (double)dyt[r * K + k];
                s0 += d; s1 += g; s2 += g * d;
            }
            t[k] = s0; t[K + k] = s1; t[2 * K + k] = s2;
        }
    }
    fn_scratch_free(wpart);
    return FN_OK;
}

/* The column sums of col_bwd and col_bwd_groups into part: col_bwd_sums with nsb
 * superblocks per slab (returned), or col_bwd_sums_narrow (returns 1); -1 when
 * out of memory. */
static ptrdiff_t TF(col_bwd_all_sums)(const fn_col_shape *s, const fn_bwd_args *p, const T *x, const T *dy,
                                      const T *wred, const double *mean, ptrdiff_t nsb, double *part, int nt)
{
    if (TF(col_bwd_narrow_ok)(s, wred))
        return TF(col_bwd_sums_narrow)(s, p, x, dy, mean, part, nt) == FN_OK ? 1 : -1;
    TF(col_bwd_sums)(s, p, x, dy, wred, mean, nsb, s->A * nsb, part, nt);
    return nsb;
}

/* Columns [k0, k1) of slab a finished from the slab's folded column sums at S0
 * (col_bwd_fold: sums of x - mean, then of g and of g * (x - mean), K apart) as
 * bwd_unit_finish and bwd_coeffs do for a unit, the dx coefficients to coef +
 * 3aK: K scales, then K values of c1 and of c2. The same operations over arrays
 * that do not alias, so that they vectorize (one column at a time through p, a
 * BatchNorm backward over (8, 4096) spent a quarter of its time here); each
 * column's values do not depend on the range it is finished in. */
static void TF(col_bwd_finish_range)(const fn_col_shape *s, const fn_bwd_args *p, ptrdiff_t a, const double *S0,
                                     const T *wunit, double *coef, ptrdiff_t k0, ptrdiff_t k1)
{
    ptrdiff_t K = s->K, nk = k1 - k0, o = a * K + k0;
    int rms = p->mode == FN_MODE_RMS, center = p->training && !rms, training = p->training;
    double n = (double)s->R;
    const double *S1 = S0 + K, *S2 = S0 + 2 * K;
    double *sc = coef + 3 * a * K + k0;
    const T *wu = wunit ? wunit + k0 : NULL;
#define FN_FINISH(has_w, rms_) TF(col_bwd_finish_loop)(nk, n, center, training, has_w, rms_, wu, p->mean + o, \
                                                       p->rstd + o, S0 + k0, S1 + k0, S2 + k0, p->cmean + o, \
                                                       p->s1 + o, p->s2 + o, sc, sc + K, sc + 2 * K)
    if (wunit && rms) FN_FINISH(1, 1);
    else if (wunit) FN_FINISH(1, 0);
    else if (rms) FN_FINISH(0, 1);
    else FN_FINISH(0, 0);
#undef FN_FINISH
}

/* Slab a's column sums (col_bwd_sums' 3K values per superblock in part) folded
 * and finished, all its columns (col_bwd_finish_range). */
static void TF(col_bwd_finish)(const fn_col_shape *s, const fn_bwd_args *p, ptrdiff_t a, ptrdiff_t nsb,
                               double *part, const T *wunit, double *coef)
{
    TF(col_bwd_finish_range)(s, p, a, TF(col_bwd_fold)(part, s->K, a, nsb), wunit, coef, 0, s->K);
}

/* out[k] = in[k] rounded to T, k < K */
static inline void TF(round_to_t)(T *restrict out, const double *restrict in, ptrdiff_t K)
{
    for (ptrdiff_t k = 0; k < K; k++) out[k] = (T)in[k];
}

/* Per-column coefficients of one slab for the T-precision dx,
 *   dx = sc * (g - c1 - ((x - mean) * rs) * c2)  (g = dy * w)
 *      = pg * g' + (qx * (x - mh) + s0),
 * with pg = sc (times the weight wcol, g' = dy, or g' = dy * wred[r]), qx = -sc *
 * rs * c2, s0 = qx * (mh - mean) - sc * c1 (in double, then rounded) and mh the
 * mean rounded to T: three coefficient loads a vector where the expression
 * as written took six and the weight (the dx pass of a channels-last GroupNorm
 * backward, its x and dy in L3, was bound by loads). x - mh is exact near the
 * mean, where |mean| >> std would lose the deviation. Columns [k0, k1) of them
 * from double per-column mean, rstd and coefficients scale, c1, c2 (indexed by
 * column, as wcol): FN_COL_DX_ARRAYS arrays at steps of c2s = col_c2(K), mh, ml
 * = mean - mh and rs (the parameter gradients' xhat = ((x - mh) - ml) * rs, see
 * col_xhat_vec), pg, qx, s0. Returns 0 when one of the range's values is not
 * finite in T or pg or qx is not normal (the slab then takes
 * col_dx_rows_exact). The periodic tails are col_dx_tails'. */
static int TF(col_dx_coeffs_range)(ptrdiff_t c2s, ptrdiff_t k0, ptrdiff_t k1, const double *mean,
                                   const double *rstd, const double *scale, const double *c1, const double *c2,
                                   const T *wcol, T *cf)
{
    /* array by array: the arrays lie col_c2(K) values apart, for K = 4096
     * float32 in the same L1 set, and writing a column of all of them at once
     * missed in L1 at every store (BatchNorm backward (64, 4096) spent 40 % of its
     * time here) */
    int ok = 1;
    T *restrict mh = cf, *restrict ml = cf + c2s, *restrict pg = cf + 3 * c2s, *restrict qx = cf + 4 * c2s;
    T *restrict s0 = cf + 5 * c2s;
    for (ptrdiff_t k = k0; k < k1; k++) {
        mh[k] = (T)mean[k];
        ml[k] = (T)(mean[k] - (double)mh[k]);
    }
    TF(round_to_t)(cf + 2 * c2s + k0, rstd + k0, k1 - k0);
    /* pg and qx multiply the data: one below T's normal range (rstd near
     * FLT_MIN, inputs near FLT_MAX) would lose its bits, and the slab goes to
     * col_dx_rows_exact instead. s0 is only added: rounded to a subnormal, it is
     * off by no more than dx itself would be there. */
    for (ptrdiff_t k = k0; k < k1; k++) {
        double wk = wcol ? (double)wcol[k] : 1.0, g = scale[k] * wk, q = -scale[k] * rstd[k] * c2[k];
        pg[k] = (T)g;
        qx[k] = (T)q;
        ok &= fabs(g) >= (double)FN_T_MIN || scale[k] == 0 || wk == 0;
        ok &= fabs(q) >= (double)FN_T_MIN || scale[k] == 0 || rstd[k] == 0 || c2[k] == 0;
    }
    /* s0 in a loop of its own, as the comment above has it; q is formed again, the
     * same double expression, rather than kept in a further array */
    for (ptrdiff_t k = k0; k < k1; k++)
        s0[k] = (T)(-scale[k] * rstd[k] * c2[k] * ((double)mh[k] - mean[k]) - scale[k] * c1[k]);
    for (int j = 0; j < FN_COL_DX_ARRAYS; j++) {
        const T *restrict v = cf + c2s * j;
#pragma omp simd reduction(& : ok)
        for (ptrdiff_t k = k0; k < k1; k++) ok &= fabs((double)v[k]) <= (double)FN_T_MAX;
    }
    return ok;
}

/* The periodic tails (col_periodic_tail) of col_dx_coeffs' arrays, for the flat
 * walk. */
static void TF(col_dx_tails)(ptrdiff_t K, T *cf)
{
    for (int j = 0; j < FN_COL_DX_ARRAYS; j++) TF(col_periodic_tail)(cf + TF(col_c2)(K) * j, K);
}

/* col_dx_coeffs_range over all K columns of a slab, with the periodic tails. */
static int TF(col_dx_coeffs)(ptrdiff_t K, const double *mean, const double *rstd, const double *scale,
                             const double *c1, const double *c2, const T *wcol, T *cf)
{
    int ok = TF(col_dx_coeffs_range)(TF(col_c2)(K), 0, K, mean, rstd, scale, c1, c2, wcol, cf);
    TF(col_dx_tails)(K, cf);
    return ok;
}

/* T values per slab of col_dx_coeffs' arrays. */
static inline ptrdiff_t TF(col_dx_size)(ptrdiff_t K)
{
    return FN_COL_DX_ARRAYS * TF(col_c2)(K);
}

/* xhat = ((x - mh) - ml) * rstd of cnt <= TLANES columns from col_dx_coeffs'
 * arrays at c (stride K2): col_dx_vec's, and the parameter gradients' in
 * col_dx_rows. */
static inline VT TF(col_xhat_vec)(VT xv, const T *c, ptrdiff_t K2, ptrdiff_t cnt)
{
    return ((xv - TF(load_n)(c, cnt, 0)) - TF(load_n)(c + K2, cnt, 0)) * TF(load_n)(c + 2 * K2, cnt, 0);
}

/* cnt <= TLANES values of dx from the vectors of x and dy, the weight wr of
 * the row (when wred: parameters along r) and the coefficients at c (stride
 * col_c2(K), see col_dx_coeffs): dx = pg * g' + (qx * (x - mh) + s0), g' = dy *
 * wr or dy. The multiply-adds are written out (fmadd): left to the compiler,
 * they were fused in some inlined copies and not in others, and a value's bits
 * depended on its place. Partial vectors go through the same operations. */
static inline VT TF(col_dx_vec)(VT xv, VT dyv, VT wr, int wred, const T *c, ptrdiff_t K2, ptrdiff_t cnt)
{
    VT t = TF(fmadd)(TF(load_n)(c + 4 * K2, cnt, 0), xv - TF(load_n)(c, cnt, 0), TF(load_n)(c + 5 * K2, cnt, 0));
    return TF(fmadd)(TF(load_n)(c + 3 * K2, cnt, 0), wred ? dyv * wr : dyv, t);
}

/* 1 when the slab's rows lie end to end in x, dy and dx (no parameter along r). */
static inline int TF(col_dx_flat_ok)(const fn_col_shape *s, const T *wred)
{
    return !wred && s->xr == s->K && s->yr == s->K;
}

/* dx of elements [e0, e1) of slab a, its rows contiguous in x, dy and dx and
 * taken as one flat range (no parameter along r), in T precision: every store
 * but the first and last a full aligned vector, streamed when `stream`: rows of
 * 64 float32 that start 16 bytes past a line (NumPy's large arrays) otherwise
 * straddle lines with every store, and their lines must be read for ownership
 * (BatchNorm backward channels-last (32, 56, 56, 64) 11 % faster, one thread
 * 17 %). Parameters per column are in cf. */
static void TF(col_dx_flat)(const fn_col_shape *s, const T *x, const T *dy, T *dx, ptrdiff_t a, ptrdiff_t e0,
                            ptrdiff_t e1, const T *cf, int stream)
{
    ptrdiff_t K = s->K, K2 = TF(col_c2)(K), step = TLANES % K;
    const VT z = {0};
    const T *xf = x + a * s->xa + e0, *dyf = dy + a * s->ya + e0;
    T *dxf = dx + a * s->ya + e0;
    ptrdiff_t n = e1 - e0, i = fn_min(n, TF(vec_head)(dxf)), col = e0 % K;
    if (i) {
        TF(store_part)(dxf, i, TF(col_dx_vec)(TF(load_n)(xf, i, 0), TF(load_n)(dyf, i, 0), z, 0, cf + col, K2, i));
        col = (col + i) % K;
    }
    for (; i + TLANES <= n; i += TLANES) {
        VT v = TF(col_dx_vec)(TF(loadt)(xf + i), TF(loadt)(dyf + i), z, 0, cf + col, K2, TLANES);
        TF(store_vec)(dxf + i, v, stream);
        col += step;
        if (col >= K) col -= K;
    }
    if (i < n)
        TF(store_part)(dxf + i, n - i, TF(col_dx_vec)(TF(load_n)(xf + i, n - i, 0), TF(load_n)(dyf + i, n - i, 0),
                                                      z, 0, cf + col, K2, n - i));
}

/* 1 when col_dx_tiles serves a slab whose rows col_dx_flat could walk: the
 * coefficients of a row larger than FN_COL_TILE_BYTES. */
static inline int TF(col_dx_tiles_ok)(const fn_col_shape *s)
{
    return FN_COL_DX_ARRAYS * s->K * (ptrdiff_t)sizeof(T) > FN_COL_TILE_BYTES;
}

/* dx of rows [r0, r1) of slab a at columns [k0, k1), from col_dx_coeffs' arrays
 * at cf (stride K2, indexed by column), one tile of columns at a time, each
 * tile's coefficients read from L1 for all the rows (BatchNorm backward (64,
 * 4096) read 112 KiB of them from L2 for every 16 KiB row of x); each row's
 * part of a tile stored from dx's first vector boundary on, as col_norm_tiles.
 * dy is weighted by wred[r] (parameters along r); parameters per column are in
 * cf. */
static void TF(col_dx_span)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const T *wred, ptrdiff_t a,
                            ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t k0, ptrdiff_t k1, const T *cf, ptrdiff_t K2,
                            int stream)
{
    const VT z = {0};
    int rw = wred != NULL;
    ptrdiff_t kt = FN_COL_TILE_BYTES / (FN_COL_DX_ARRAYS * (ptrdiff_t)sizeof(T));
    kt = fn_max(TLANES, kt / TLANES * TLANES);
    for (ptrdiff_t t0 = k0; t0 < k1; t0 += kt) {
        ptrdiff_t t1 = fn_min(t0 + kt, k1);
        for (ptrdiff_t r = r0; r < r1; r++) {
            const T *xr = x + a * s->xa + r * s->xr, *dyr = dy + a * s->ya + r * s->yr;
            T *dxr = dx + a * s->ya + r * s->yr;
            VT wr = z + (rw ? wred[r] : (T)1);
            ptrdiff_t k = t0, h = fn_min(t1 - t0, TF(vec_head)(dxr + t0));
            if (h) {
                TF(store_part)(dxr + k, h, TF(col_dx_vec)(TF(load_n)(xr + k, h, 0), TF(load_n)(dyr + k, h, 0), wr,
                                                          rw, cf + k, K2, h));
                k += h;
            }
            for (; k + TLANES <= t1; k += TLANES)
                TF(store_vec)(dxr + k, TF(col_dx_vec)(TF(loadt)(xr + k), TF(loadt)(dyr + k), wr, rw, cf + k, K2,
                                                      TLANES), stream);
            if (k < t1)
                TF(store_part)(dxr + k, t1 - k, TF(col_dx_vec)(TF(load_n)(xr + k, t1 - k, 0),
                                                               TF(load_n)(dyr + k, t1 - k, 0), wr, rw, cf + k, K2,
                                                               t1 - k));
        }
    }
}

/* Rows [r0, r1) of slab a (col_dx_tiles_ok), all its columns (col_dx_span). */
static void TF(col_dx_tiles)(const fn_col_shape *s, const T *x, const T *dy, T *dx, ptrdiff_t a, ptrdiff_t r0,
                             ptrdiff_t r1, const T *cf, int stream)
{
    TF(col_dx_span)(s, x, dy, dx, NULL, a, r0, r1, 0, s->K, cf, TF(col_c2)(s->K), stream);
}

/* dx of rows [r0, r1) of slab a in T precision; dy weighted by wred[r]
 * (parameters along r), parameters per column in cf. Contiguous rows
 * go to col_dx_tiles or col_dx_flat. With pdw, row r's parameter gradient terms
 * are summed as its dx is formed (a pass of their own over x and dy took 17 % of
 * a LayerNorm backward over a transposed x): pdw[r - r0] = sum_k dy * xhat and
 * pdb[r - r0] = sum_k dy, in T-precision lanes over FN_PARAM_FLUSH_COLS columns
 * (four terms a lane for float32 on AVX-512), then in double, in the same order
 * whatever the thread count. */
#define FN_PARAM_FLUSH_COLS FN_COL_BLOCK
static void TF(col_dx_rows)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const T *wred,
                            ptrdiff_t a, ptrdiff_t r0, ptrdiff_t r1, const T *cf, int stream, double *pdw,
                            double *pdb)
{
    ptrdiff_t K = s->K, K2 = TF(col_c2)(K);
    const VT z = {0};
    if (TF(col_dx_flat_ok)(s, wred) && !pdw) {
        if (TF(col_dx_tiles_ok)(s)) TF(col_dx_tiles)(s, x, dy, dx, a, r0, r1, cf, stream);
        else TF(col_dx_flat)(s, x, dy, dx, a, r0 * K, r1 * K, cf, stream);
        return;
    }
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *xr = x + a * s->xa + r * s->xr, *dyr = dy + a * s->ya + r * s->yr;
        T *dxr = dx + a * s->ya + r * s->yr;
        VT wr = z + (wred ? wred[r] : (T)1), aw = z, ab = z;
        double dwr = 0, dbr = 0;
        for (ptrdiff_t k = 0; k < K; k += TLANES) {
            ptrdiff_t cnt = fn_min(TLANES, K - k);
            VT xv = TF(load_n)(xr + k, cnt, 0), dyv = TF(load_n)(dyr + k, cnt, 0);
            VT v = TF(col_dx_vec)(xv, dyv, wr, wred != NULL, cf + k, K2, cnt);
            if (cnt == TLANES) TF(storet)(dxr + k, v);
            else TF(store_part)(dxr + k, cnt, v);
            if (!pdw) continue;
            /* padding lanes have dy 0 and coefficients 0 */
            aw = TF(fmadd)(dyv, TF(col_xhat_vec)(xv, cf + k, K2, cnt), aw);
            ab += dyv;
            if ((k + TLANES) % FN_PARAM_FLUSH_COLS == 0 || k + TLANES >= K) {
                dwr += TF(hsumt)(aw);
                dbr += TF(hsumt)(ab);
                aw = z; ab = z;
            }
        }
        if (pdw) { pdw[r - r0] = dwr; pdb[r - r0] = dbr; }
    }
}

/* The same in double, from the double per-column values that col_dx_coeffs
 * rounds (mean, rstd, scale, c1, c2): for slabs whose T
 * coefficients are not finite. */
static void TF(col_dx_rows_exact)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const T *wred,
                                  const T *wcol, ptrdiff_t a, ptrdiff_t r0, ptrdiff_t r1, const double *mean,
                                  const double *rstd, const double *scale, const double *c1, const double *c2,
                                  double *pdw, double *pdb)
{
    ptrdiff_t K = s->K;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *xr = x + a * s->xa + r * s->xr, *dyr = dy + a * s->ya + r * s->yr;
        T *dxr = dx + a * s->ya + r * s->yr;
        double wr = wred ? (double)wred[r] : 1.0, sw = 0, sb = 0;
#pragma omp simd reduction(+ : sw, sb)
        for (ptrdiff_t k = 0; k < K; k++) {
            double dyk = (double)dyr[k], xh = ((double)xr[k] - mean[k]) * rstd[k];
            double g = dyk * wr * (wcol ? (double)wcol[k] : 1.0);
            dxr[k] = (T)(scale[k] * (g - c1[k] - xh * c2[k]));
            sw += dyk * xh;
            sb += dyk;
        }
        if (pdw) { pdw[r - r0] = sw; pdb[r - r0] = sb; }
    }
}

/* 1 when the dx pass over n blocks of FN_COL_BLOCK rows should walk each
 * thread's share from its end (fn_share_mirror), starting with the rows the sums
 * pass read last, still in L2: BatchNorm backward (16, 28, 28, 128) and (8, 28,
 * 28, 256) 13-20 % faster. Not when what L2 holds is under an eighth of the
 * share: (32, 56, 56, 64) ran 1-3 % slower mirrored. A fixed 1 MiB rather than
 * the detected L2 (fn_l2_bytes): with 512 KiB of L2 and 32 MiB of L3 (AMD Zen
 * 3), the detected size stopped mirroring (16, 28, 28, 128) and (8, 28, 28, 256)
 * at two threads and (16, 14, 14, 256) at one, which then ran 2.5-4.6 % slower
 * (same-process A/B, both orders, 2026-12-01): the rows read last are still in
 * L3 there. */
static int TF(col_dx_mirror)(ptrdiff_t K, ptrdiff_t n, int nt)
{
    ptrdiff_t in_l2 = FN_L2_BYTES / (2 * FN_COL_BLOCK * K * (ptrdiff_t)sizeof(T));
    return 8 * in_l2 >= n / fn_max(1, nt);
}

/* Items of the dx pass: n = A * per_slab items of `step` elements each (the last
 * of a slab shorter), whole rows unless flat (col_dx_flat on any range). */
typedef struct { ptrdiff_t step, per_slab, n; int flat, mirror; } TF(col_dx_walk);

static TF(col_dx_walk) TF(col_dx_plan)(const fn_col_shape *s, const T *dx, const T *wred, const int *cf_ok,
                                       int stream, int nt)
{
    TF(col_dx_walk) w;
    ptrdiff_t K = s->K;
    int flat = TF(col_dx_flat_ok)(s, wred);
    for (ptrdiff_t a = 0; a < s->A; a++) flat &= cf_ok[a] != 0;
    int tiles = flat && TF(col_dx_tiles_ok)(s);
    w.step = fn_col_step(s->A, s->R, K, FN_COL_BLOCK, flat, tiles, TLANES, nt);
    /* cuts inside rows go through col_dx_flat; whole rows through col_dx_rows
     * (tiles, or the flat walk) */
    w.flat = flat && w.step % K != 0;
    w.per_slab = (s->R * K + w.step - 1) / w.step;
    w.n = s->A * w.per_slab;
    w.mirror = TF(col_dx_mirror)(K, w.n * w.step / (FN_COL_BLOCK * K), nt);
    return w;
}

/* The column backward's dx pass over the items of col_dx_plan: a cut inside rows
 * by col_dx_flat, whole rows by col_dx_rows from the T coefficients (cf,
 * col_dx_size(K) per slab) or, where those are not finite (cf_ok), by
 * col_dx_rows_exact from slab a's double values: mean and rstd at a * K, scale,
 * c1 and c2 at a * cstride. With pdw (parameters along r), each row's parameter
 * gradient terms go to pdw and pdb at a * R + r (see col_dx_rows). */
static void TF(col_dx_pass)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const T *wred, const T *wcol,
                            const T *cf, const int *cf_ok, const double *mean, const double *rstd,
                            const double *scale, const double *c1, const double *c2, ptrdiff_t cstride,
                            double *pdw, double *pdb, int nt)
{
    ptrdiff_t K = s->K, R = s->R, cs = TF(col_dx_size)(K);
    int stream = fn_stream_output((double)s->A * (double)K * (double)s->R * sizeof(T), 1);
    TF(col_dx_walk) walk = TF(col_dx_plan)(s, dx, wred, cf_ok, stream, nt);
    /* whole rows only: col_dx_plan cuts inside rows for slabs without parameters along r */
    if (walk.flat) pdw = pdb = NULL;
    FN_PARALLEL_SHARES(nt, walk.n, it0,
        ptrdiff_t it = walk.mirror ? fn_share_mirror(it0, walk.n, nt) : it0;
        ptrdiff_t a = it / walk.per_slab, e0 = (it % walk.per_slab) * walk.step;
        ptrdiff_t e1 = fn_min(e0 + walk.step, s->R * K), r0 = e0 / K, r1 = (e1 + K - 1) / K;
        double *qw = pdw ? pdw + a * R + r0 : NULL, *qb = pdw ? pdb + a * R + r0 : NULL;
        if (walk.flat) TF(col_dx_flat)(s, x, dy, dx, a, e0, e1, cf + cs * a, stream);
        else if (cf_ok[a])
            TF(col_dx_rows)(s, x, dy, dx, wred, a, r0, r1, cf + cs * a, stream, qw, qb);
        else
            TF(col_dx_rows_exact)(s, x, dy, dx, wred, wcol, a, r0, r1, mean + a * K, rstd + a * K,
                                  scale + a * cstride, c1 + a * cstride, c2 + a * cstride, qw, qb);
    );
}

/* Groups [g0, g1) of slab a of col_bwd_groups from the slab's folded column sums
 * ca (K apart): each unit's corrected mean, sums and coefficients (p), and per
 * column of the slab the group's mean, rstd, c1 and c2 (cm, cr, cc1, cc2). */
static void TF(col_groups_finish)(const fn_col_shape *s, const fn_bwd_args *p, ptrdiff_t a, const double *ca,
                                  ptrdiff_t g0, ptrdiff_t g1, double *cm, double *cr, double *cc1, double *cc2)
{
    ptrdiff_t K = s->K, Kg = s->Kg, NG = K / Kg;
    const T *w = (const T *)p->w;
    double n = (double)s->R * (double)Kg;
    for (ptrdiff_t g = g0; g < g1; g++) {
        double s0 = 0, s1 = 0, s2 = 0, scale, c1, c2;
        for (ptrdiff_t k = g * Kg; k < (g + 1) * Kg; k++) {
            double wv = w ? (double)w[k] : 1.0;
            s0 += ca[k]; s1 += wv * ca[K + k]; s2 += wv * ca[2 * K + k];
        }
        ptrdiff_t u = a * NG + g;
        TF(bwd_unit_finish)(p, u, n, s0, s1, s2);
        TF(bwd_coeffs)(p, 1.0, n, p->s1[u], p->s2[u], p->rstd[u], &scale, &c1, &c2);
        for (ptrdiff_t k = g * Kg; k < (g + 1) * Kg; k++) {
            cm[a * K + k] = p->cmean[u]; cr[a * K + k] = p->rstd[u];
            cc1[a * K + k] = c1; cc2[a * K + k] = c2;
        }
    }
}

/* The column backward of slabs of one superblock in one walk (col_fused_cols):
 * each item, cw columns of a slab, is summed (col_bwd_super around sums_mean),
 * finished (col_bwd_finish_range; for groups of Kg columns col_groups_finish),
 * turned into dx coefficients (col_dx_coeffs_range) and its dx written
 * (col_dx_span) while x and dy are still in cache; before, the finish and the
 * coefficients ran serially over every column between two passes over x and dy
 * (BatchNorm backward (8, 4096) spent two fifths of its time there). dx is
 * formed from the per-column values cols = {mean, rstd, scale, c1, c2} (mean and
 * rstd of slab a at a * K, the others at a * cstride, as col_dx_pass takes them),
 * which the finish writes through p (mean), fin (col_bwd_finish_range's coef, or
 * col_groups_finish's cm, cr, c1, c2 arrays, A * K values apart). A slab with a
 * coefficient not finite in T takes col_dx_rows_exact for all its dx afterwards,
 * as col_dx_pass does: every value has the bits of the separate steps. cf and
 * cf_ok: col_dx_size(K) values and a flag per slab. */
static void TF(col_bwd_walk)(const fn_col_shape *s, const fn_bwd_args *p, const T *x, const T *dy, T *dx,
                             const T *wred, const T *wcol, const T *wunit, const double *sums_mean, double *part,
                             double *fin, const double *const *cols, ptrdiff_t cstride, T *cf, int *cf_ok,
                             ptrdiff_t cw, int nt)
{
    ptrdiff_t A = s->A, K = s->K, R = s->R, Kg = s->Kg, c2s = TF(col_c2)(K), cs = TF(col_dx_size)(K);
    ptrdiff_t ncut = (K + cw - 1) / cw, AK = A * K;
    int stream = dx && fn_stream_output((double)AK * (double)R * sizeof(T), 1);
    for (ptrdiff_t a = 0; a < A; a++) cf_ok[a] = 1;
    FN_PARALLEL_SHARES(nt, A * ncut, it,
        ptrdiff_t a = it / ncut, k0 = (it % ncut) * cw, k1 = fn_min(k0 + cw, K), ca = a * cstride;
        fn_col_shape sub = *s;
        sub.K = k1 - k0;
        double *q = part + 3 * K * a;
        TF(col_bwd_super)(&sub, p, x + k0, dy + k0, wred, sums_mean + a * K + k0, a, 0, q + k0, q + K + k0,
                          q + 2 * K + k0);
        if (Kg > 1) TF(col_groups_finish)(s, p, a, q, k0 / Kg, k1 / Kg, fin, fin + AK, fin + 2 * AK, fin + 3 * AK);
        else TF(col_bwd_finish_range)(s, p, a, q, wunit, fin, k0, k1);
        if (dx) {
            if (TF(col_dx_coeffs_range)(c2s, k0, k1, cols[0] + a * K, cols[1] + a * K, cols[2] + ca, cols[3] + ca,
                                        cols[4] + ca, wcol, cf + cs * a))
                TF(col_dx_span)(s, x, dy, dx, wred, a, 0, R, k0, k1, cf + cs * a, c2s, stream);
            else
                __atomic_store_n(&cf_ok[a], 0, __ATOMIC_RELAXED);
        }
    );
    int exact = 0;
    for (ptrdiff_t a = 0; dx && a < A; a++) exact |= !cf_ok[a];
    if (exact)
        FN_PARALLEL_SHARES(nt, A * R, it,
            ptrdiff_t a = it / R, r = it % R, ca = a * cstride;
            if (!cf_ok[a])
                TF(col_dx_rows_exact)(s, x, dy, dx, wred, wcol, a, r, r + 1, cols[0] + a * K, cols[1] + a * K,
                                      cols[2] + ca, cols[3] + ca, cols[4] + ca, NULL, NULL);
        );
}

/* Channels-last GroupNorm: units are groups of Kg consecutive columns of a slab,
 * with one parameter per column. Column sums are taken without the parameter and
 * kept (as in seg_bwd_planes), the units weight them, and dx and the parameter
 * gradients follow without another pass over the sums' inputs. Slabs of few rows
 * take one walk over items of whole groups (col_fused_cols, col_bwd_walk):
 * sums, the groups' coefficients, the dx coefficients and dx per item, a slab
 * with a coefficient not finite in T written again in double afterwards. */
static int TF(col_bwd_groups)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const fn_bwd_args *p,
                              int nt)
{
    ptrdiff_t A = s->A, K = s->K, Kg = s->Kg, NG = K / Kg, rows = FN_COL_BLOCK * FN_COL_SUPER;
    const T *w = (const T *)p->w;
    int rms = p->mode == FN_MODE_RMS;
    ptrdiff_t nsb = (s->R + rows - 1) / rows, n_items = A * nsb, AK = A * K;
    ptrdiff_t cs = TF(col_dx_size)(K);
    /* part: superblock sums (each slab's folded into its first, col_bwd_fold);
     * per column of each slab the group's mean (given, then corrected), rstd, c1
     * and c2 */
    ptrdiff_t cf_at = fn_line_doubles(3 * K * n_items + 5 * AK);
    double *part = (double *)fn_scratch_alloc(sizeof(double) * (size_t)cf_at
                                              + sizeof(T) * (size_t)(A * cs + FN_COEF_LEAD) + sizeof(int) * (size_t)A);
    if (!part) return FN_ENOMEM;
    T *cf_block = (T *)(part + cf_at), *cf = TF(col_coef_base)(cf_block, dx);
    int *cf_ok = (int *)(cf_block + A * cs + FN_COEF_LEAD);
    double *mg = part + 3 * K * n_items, *cm = mg + AK, *cr = cm + AK, *cc1 = cr + AK, *cc2 = cc1 + AK;
    for (ptrdiff_t i = 0; i < AK; i++) mg[i] = rms ? 0.0 : p->mean[(i / K) * NG + (i % K) / Kg];
    ptrdiff_t cw = TF(col_bwd_narrow_ok)(s, NULL) ? 0 : TF(col_fused_cols)(s, nt);
    if (cw) {
        /* (the scale is the rstd: the parameters are per column, in cf) */
        const double *cols[5] = {cm, cr, cr, cc1, cc2};
        TF(col_bwd_walk)(s, p, x, dy, dx, NULL, w, NULL, mg, part, cm, cols, K, cf, cf_ok, cw, nt);
        nsb = 1;
    } else {
        nsb = TF(col_bwd_all_sums)(s, p, x, dy, NULL, mg, nsb, part, nt);
        if (nsb < 0) { fn_scratch_free(part); return FN_ENOMEM; }
        for (ptrdiff_t a = 0; a < A; a++)
            TF(col_groups_finish)(s, p, a, TF(col_bwd_fold)(part, K, a, nsb), 0, NG, cm, cr, cc1, cc2);
        if (dx) {
            for (ptrdiff_t a = 0; a < A; a++)
                cf_ok[a] = TF(col_dx_coeffs)(K, cm + a * K, cr + a * K, cr + a * K, cc1 + a * K, cc2 + a * K, w,
                                             cf + cs * a);
            /* (the scale is the rstd: the parameters are per column, in cf) */
            TF(col_dx_pass)(s, x, dy, dx, NULL, w, cf, cf_ok, cm, cr, cr, cc1, cc2, K, NULL, NULL, nt);
        }
    }
    if (p->dw) {
        for (ptrdiff_t k = 0; k < K; k++) {
            double dwk = 0, dbk = 0;
            for (ptrdiff_t a = 0; a < A; a++) {
                const double *ca = part + 3 * K * (a * nsb);  /* folded above */
                double corr = cm[a * K + k] - mg[a * K + k];
                dwk += cr[a * K + k] * (ca[2 * K + k] - corr * ca[K + k]);
                dbk += ca[K + k];
            }
            p->dw[k] = dwk;
            if (p->db) p->db[k] = dbk;
        }
    }
    fn_scratch_free(part);
    return FN_OK;
}

static int TF(col_bwd)(const fn_col_shape *s, const T *x, const T *dy, T *dx, const fn_bwd_args *p)
{
    ptrdiff_t A = s->A, K = s->K, U = A * K, rows = FN_COL_BLOCK * FN_COL_SUPER;
    if (U == 0) return FN_OK;
    if (s->Kg < 1 || K % s->Kg != 0) return FN_EINVAL;
    const T *w = (const T *)p->w;
    const T *wred = (w && s->w_along_r) ? w : NULL, *wunit = (w && !s->w_along_r) ? w : NULL;
    int rms = p->mode == FN_MODE_RMS;
    double work = (double)U * (double)s->R;
    int nt = work < FN_SERIAL_ELEMS ? 1 : p->nthreads;
    if (nt > 1) nt = fn_threads_acquire(nt);
    if (s->Kg > 1) {
        int st = TF(col_bwd_groups)(s, x, dy, dx, p, nt);
        if (nt > 1) fn_threads_release(nt);
        return st;
    }
    ptrdiff_t nsb = (s->R + rows - 1) / rows, n_items = A * nsb;
    int narrow = TF(col_bwd_narrow_ok)(s, wred);
    ptrdiff_t fused = narrow ? 0 : TF(col_fused_cols)(s, nt);
    /* parameters along r: their gradient terms per (slab, row), summed in the dx
     * pass; not where the one walk may serve the call at some thread count (it
     * takes them in a pass of their own, whose bits differ): col_fused_cols at one
     * thread is 0 only where it is 0 at every count */
    int walk_possible = !narrow && TF(col_fused_cols)(s, 1) != 0;
    ptrdiff_t n_row_sums = (p->dw && wred && dx && !walk_possible) ? 2 * A * s->R : 0;
    ptrdiff_t cf_at = fn_line_doubles(3 * K * n_items + 3 * U + n_row_sums);
    double *part = (double *)fn_scratch_alloc(sizeof(double) * (size_t)cf_at
                                              + sizeof(T) * (size_t)(A * TF(col_dx_size)(K) + FN_COEF_LEAD)
                                              + sizeof(int) * (size_t)A);
    if (!part) { if (nt > 1) fn_threads_release(nt); return FN_ENOMEM; }
    double *coef = part + 3 * K * n_items;
    double *row_dw = n_row_sums ? coef + 3 * U : NULL, *row_db = n_row_sums ? row_dw + A * s->R : NULL;
    T *cf_block = (T *)(part + cf_at), *cf = TF(col_coef_base)(cf_block, dx);
    int *cf_ok = (int *)(cf_block + A * TF(col_dx_size)(K) + FN_COEF_LEAD);
    if (fused) {
        const double *cols[5] = {p->cmean, p->rstd, coef, coef + K, coef + 2 * K};
        TF(col_bwd_walk)(s, p, x, dy, dx, wred, NULL, wunit, p->mean, part, coef, cols, 3 * K, cf, cf_ok, fused,
                         nt);
    } else {
        nsb = TF(col_bwd_all_sums)(s, p, x, dy, wred, p->mean, nsb, part, nt);
        if (nsb < 0) { fn_scratch_free(part); if (nt > 1) fn_threads_release(nt); return FN_ENOMEM; }
        for (ptrdiff_t a = 0; a < A; a++) TF(col_bwd_finish)(s, p, a, nsb, part, wunit, coef);
        if (dx) {
            for (ptrdiff_t a = 0; a < A; a++)
                cf_ok[a] = TF(col_dx_coeffs)(K, p->cmean + a * K, p->rstd + a * K, coef + 3 * a * K,
                                             coef + 3 * a * K + K, coef + 3 * a * K + 2 * K, NULL,
                                             cf + TF(col_dx_size)(K) * a);
            TF(col_dx_pass)(s, x, dy, dx, wred, NULL, cf, cf_ok, p->cmean, p->rstd, coef, coef + K, coef + 2 * K,
                            3 * K, row_dw, row_db, nt);
        }
    }
    if (p->dw && wunit) {
        /* sums over the slabs, a in order, per column: slab by slab over the
         * columns, so that it vectorizes (a column at a time, the loop over
         * slabs, often of one, stayed scalar: 6 us of a BatchNorm backward over
         * (8, 4096)) */
        double *restrict dw = p->dw, *restrict db = p->db;
        const double *restrict ps1 = p->s1, *restrict ps2 = p->s2;
        for (ptrdiff_t k = 0; k < K; k++) dw[k] = 0.0;
        for (ptrdiff_t a = 0; a < A; a++)
            for (ptrdiff_t k = 0; k < K; k++) dw[k] += ps2[a * K + k];
        if (db) {
            for (ptrdiff_t k = 0; k < K; k++) db[k] = 0.0;
            for (ptrdiff_t a = 0; a < A; a++)
                for (ptrdiff_t k = 0; k < K; k++) db[k] += ps1[a * K + k];
        }
    } else if (row_dw) {
        for (ptrdiff_t r = 0; r < s->R; r++) {
            double dwr = 0, dbr = 0;
            for (ptrdiff_t a = 0; a < A; a++) { dwr += row_dw[a * s->R + r]; dbr += row_db[a * s->R + r]; }
            p->dw[r] = dwr;
            if (p->db) p->db[r] = dbr;
        }
    } else if (p->dw && wred) {
        /* (no dx pass, or few rows, which the one walk may take) sum over (a, k)
         * for each r, in a then k order: 16 rows per item */
        FN_PARALLEL_SHARES(nt, (s->R + 15) / 16, c,
            for (ptrdiff_t r = c * 16; r < fn_min(s->R, (c + 1) * 16); r++) {
                double dwr = 0, dbr = 0;
                for (ptrdiff_t a = 0; a < A; a++) {
                    const T *xr = x + a * s->xa + r * s->xr, *dyr = dy + a * s->ya + r * s->yr;
                    const double *mean = p->cmean + a * K, *rstd = p->rstd + a * K;
                    double sw = 0, sb = 0;
                    _Pragma("omp simd reduction(+ : sw, sb)")
                    for (ptrdiff_t k = 0; k < K; k++) {
                        double g = (double)dyr[k];
                        sw += g * (((double)xr[k] - (rms ? 0.0 : mean[k])) * rstd[k]);
                        sb += g;
                    }
                    dwr += sw; dbr += sb;
                }
                p->dw[r] = dwr;
                if (p->db) p->db[r] = dbr;
            }
        );
    }
    fn_scratch_free(part);
    if (nt > 1) fn_threads_release(nt);
    return FN_OK;
}

#undef TF
#undef VD
#undef LANES
#undef VL
#undef VT
#undef TLANES
