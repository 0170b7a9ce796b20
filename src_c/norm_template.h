/* norm_template.h - the normalization engine, written once over the element type T.
 *
 * Included by norm_isa.h once per dtype with T (float or double) and TS (f32 or
 * f64) defined; norm_isa.h in turn is compiled once per SIMD path with
 * FN_VBYTES set (16 generic, 32 AVX2, 64 AVX-512), so the same source gives every
 * dtype x ISA kernel. Vector code uses GCC/Clang vector extensions (VT: T lanes,
 * VD: double lanes), so one source serves every width.
 *
 * Precision: block sums run in T-precision lanes (a few terms per lane) and are
 * merged in double; the normalize step runs in T with the mean split into a high
 * and a low part. Whenever T-precision could be wrong (overflow, underflow,
 * denormal data, inf/NaN) the block or range is recomputed in double, so float32
 * results stay within a few ulp of a float64 computation rounded once.
 *
 * Determinism: statistics are folds of fixed-size block partials in a fixed
 * order. The serial path, the per-unit parallel path and the split path all
 * compute the same partials and fold them identically, so the result does not
 * depend on the thread count.
 */
#define TF(name) FN_CAT(FN_CAT(name, _), TS)
#define VD TF(vd)
#define VL TF(vl)
#define VT TF(vt)
#define LANES (FN_VBYTES / 8)              /* doubles per vector */
#define TLANES (FN_VBYTES / (int)sizeof(T)) /* T values per vector */

typedef double VD __attribute__((vector_size(FN_VBYTES)));
typedef T VL __attribute__((vector_size(LANES * sizeof(T))));
typedef T VT __attribute__((vector_size(FN_VBYTES)));
/* lane masks of VT comparisons */
#if FN_T_BYTES == 4
typedef int32_t TF(vi) __attribute__((vector_size(FN_VBYTES)));
#else
typedef int64_t TF(vi) __attribute__((vector_size(FN_VBYTES)));
#endif

/* v widened to double in one conversion: for float32, GCC's
 * __builtin_convertvector converted each half of an AVX2 or AVX-512 vector on
 * its own, the upper one stored and loaded back. */
static inline VD TF(widen)(VL v)
{
#if FN_T_BYTES == 4 && FN_VBYTES == 64 && defined(__AVX512F__)
    return (VD)_mm512_cvtps_pd((__m256)v);
#elif FN_T_BYTES == 4 && FN_VBYTES == 32 && defined(__AVX__)
    return (VD)_mm256_cvtps_pd((__m128)v);
#else
    return __builtin_convertvector(v, VD);
#endif
}

static inline VD TF(load)(const T *p)
{
    VL v;
    __builtin_memcpy(&v, p, sizeof v);   /* an unaligned load, widened to double */
    return TF(widen)(v);
}

static inline VT TF(loadt)(const T *p)
{
    VT v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void TF(storet)(T *p, VT v) { __builtin_memcpy(p, &v, sizeof v); }

/* Horizontal sums by a pairwise tree: log2(lanes) dependent adds, not lanes. */
static inline double TF(hsum)(VD v)
{
    double t[LANES];
    __builtin_memcpy(t, &v, sizeof v);
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) t[l] += t[l + w];
    return t[0];
}

typedef T TF(v32) __attribute__((vector_size(32)));
typedef T TF(v16) __attribute__((vector_size(16)));
typedef T TF(v8) __attribute__((vector_size(8)));

/* the sum of the two halves of a vector (bytes wide), as a vector of half the bytes */
#if FN_HAVE_SHUFFLEVECTOR
#define FN_HALVE64(v, half_t) ((half_t)__builtin_shufflevector((fn_q64)(v), (fn_q64)(v), 0, 1, 2, 3) \
                               + (half_t)__builtin_shufflevector((fn_q64)(v), (fn_q64)(v), 4, 5, 6, 7))
#define FN_HALVE32(v, half_t) ((half_t)__builtin_shufflevector((fn_q32)(v), (fn_q32)(v), 0, 1) \
                               + (half_t)__builtin_shufflevector((fn_q32)(v), (fn_q32)(v), 2, 3))
#else
#define FN_HALVE_MEM(src, half_t, bytes) __extension__({ \
        half_t lo_, hi_;                                   \
        __builtin_memcpy(&lo_, &(src), bytes);             \
        __builtin_memcpy(&hi_, (const char *)&(src) + bytes, bytes); \
        lo_ + hi_; })
#define FN_HALVE64(v, half_t) FN_HALVE_MEM(v, half_t, 32)
#define FN_HALVE32(v, half_t) FN_HALVE_MEM(v, half_t, 16)
#endif

static inline double TF(hsumt)(VT v)
{
    /* halving in registers (lane shuffles of 8-byte elements, whatever T is):
     * log2(lanes) dependent adds, no trip through memory, which would stall
     * store forwarding on the wide store */
#if FN_VBYTES == 64
    TF(v32) h32 = FN_HALVE64(v, TF(v32));
#elif FN_VBYTES == 32
    TF(v32) h32 = v;
#endif
#if FN_VBYTES >= 32
    TF(v16) h16 = FN_HALVE32(h32, TF(v16));
#else
    TF(v16) h16 = v;
#endif
    fn_q16 q16 = (fn_q16)h16;
    TF(v8) h8 = (TF(v8))(fn_q8){q16[0]} + (TF(v8))(fn_q8){q16[1]};
    T t[8 / sizeof(T)];
    __builtin_memcpy(t, &h8, 8);
    double s = 0;
    for (int l = 0; l < (int)(8 / sizeof(T)); l++) s += (double)t[l];
    return s;
}

/* hsumt of LANES vectors at once, bit for bit: out[r] = hsumt(v[r]). The rows
 * are folded into each other by the same halvings as hsumt (each level pairs two
 * vectors and keeps the lower halves of both in one vector and the upper halves
 * in another), so one add serves several rows and there is no dependency chain
 * per row. */
#if FN_VBYTES == 64
#define FN_QV fn_q64
#define FN_FOLD_LEVELS 3
#elif FN_VBYTES == 32
#define FN_QV fn_q32
#define FN_FOLD_LEVELS 2
#else
#define FN_QV fn_q16
#define FN_FOLD_LEVELS 1
#endif
#if FN_HAVE_SHUFFLEVECTOR
#define FN_FOLD(a, b, idx) ((VT)__builtin_shufflevector((FN_QV)(a), (FN_QV)(b), FN_UNPAREN idx))
#else
#define FN_FOLD(a, b, idx) ((VT)__builtin_shuffle((FN_QV)(a), (FN_QV)(b), (FN_QV){FN_UNPAREN idx}))
#endif
#define FN_FOLD_PAIR(a, b, lo, hi) (FN_FOLD(a, b, lo) + FN_FOLD(a, b, hi))

/* Level `level` of hsumt_rows' folds: a, the earlier of two neighbours, with b. */
static inline __attribute__((always_inline)) VT TF(fold_level)(VT a, VT b, int level)
{
#if FN_VBYTES == 64
    if (level == 0) return FN_FOLD_PAIR(a, b, (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15));
    if (level == 1) return FN_FOLD_PAIR(a, b, (0, 1, 4, 5, 8, 9, 12, 13), (2, 3, 6, 7, 10, 11, 14, 15));
    return FN_FOLD_PAIR(a, b, (0, 2, 4, 6, 8, 10, 12, 14), (1, 3, 5, 7, 9, 11, 13, 15));
#elif FN_VBYTES == 32
    if (level == 0) return FN_FOLD_PAIR(a, b, (0, 1, 4, 5), (2, 3, 6, 7));
    return FN_FOLD_PAIR(a, b, (0, 2, 4, 6), (1, 3, 5, 7));
#else
    (void)level;
    return FN_FOLD_PAIR(a, b, (0, 2), (1, 3));
#endif
}

/* A running hsumt_rows: row r's vector (r = 0, 1, ... LANES - 1, in order) is
 * folded with its neighbour as soon as both are in (a binary counter), so that
 * log2(LANES) + 1 vectors are live instead of LANES: with the rows' loops
 * unrolled, the LANES vectors of three sums (the backward's) no longer spill
 * to the stack. fold_out(s->v[FN_FOLD_LEVELS]) then gives hsumt_rows. */
typedef struct { VT v[FN_FOLD_LEVELS + 1]; } TF(fold_stack);

static inline __attribute__((always_inline)) void TF(fold_push)(TF(fold_stack) *s, int r, VT v)
{
    int level = 0;
    for (int k = r; k & 1; k >>= 1, level++) v = TF(fold_level)(s->v[level], v, level);
    s->v[level] = v;
}

/* The folded vector's 8 bytes per row, as doubles: two floats added in double
 * as hsumt adds them. */
static inline __attribute__((always_inline)) VD TF(fold_out)(VT v0)
{
    const VD zero = {0};
#if FN_T_BYTES == 4 && !FN_HAVE_SHUFFLEVECTOR
    VL ev, od;
    for (int l = 0; l < LANES; l++) { ev[l] = v0[2 * l]; od[l] = v0[2 * l + 1]; }
    return (zero + TF(widen)(ev)) + TF(widen)(od);
#elif FN_T_BYTES == 4
#if FN_VBYTES == 64
    VL ev = __builtin_shufflevector(v0, v0, 0, 2, 4, 6, 8, 10, 12, 14);
    VL od = __builtin_shufflevector(v0, v0, 1, 3, 5, 7, 9, 11, 13, 15);
#elif FN_VBYTES == 32
    VL ev = __builtin_shufflevector(v0, v0, 0, 2, 4, 6);
    VL od = __builtin_shufflevector(v0, v0, 1, 3, 5, 7);
#else
    VL ev = __builtin_shufflevector(v0, v0, 0, 2);
    VL od = __builtin_shufflevector(v0, v0, 1, 3);
#endif
    return (zero + TF(widen)(ev)) + TF(widen)(od);
#else
    return zero + (VD)v0;
#endif
}

/* Level by level over the array (rows_reduce's rows of more than
 * FN_FOLD_UNROLL_BYTES, their lane sums in memory): through fold_push,
 * LayerNorm (32, 512) ran up to 3 % slower in some same-process runs. */
static inline __attribute__((always_inline)) VD TF(hsumt_rows)(const VT *rows)
{
    VT v[LANES];
    for (int r = 0; r < LANES; r++) v[r] = rows[r];
    for (int level = 0, n = LANES / 2; n >= 1; level++, n /= 2)
        for (int r = 0; r < n; r++) v[r] = TF(fold_level)(v[2 * r], v[2 * r + 1], level);
    return TF(fold_out)(v[0]);
}
#undef FN_QV
#undef FN_FOLD
#undef FN_FOLD_PAIR
#undef FN_HALVE64
#undef FN_HALVE32
#undef FN_HALVE_MEM

/* Lanes [lo, hi) of the vector at p (0 <= lo < hi <= TLANES), the other lanes
 * `pad`; load_part is lanes [0, n). AVX-512 and AVX2 use masked loads (masked-off
 * lanes are never touched, so no fault past either end of an array: p may point
 * before an array when lo > 0); a buffer round trip would stall store forwarding
 * on every short row. */
static inline VT TF(load_lanes)(const T *p, ptrdiff_t lo, ptrdiff_t hi, T pad)
{
    const VT tz = {0};
    VT padv = tz + pad;
#if FN_VBYTES == 64 && defined(__AVX512F__)
    unsigned m = ((1u << hi) - 1) & ~((1u << lo) - 1);
    if (sizeof(T) == 4) return (VT)_mm512_mask_loadu_ps((__m512)padv, (__mmask16)m, (const float *)p);
    return (VT)_mm512_mask_loadu_pd((__m512d)padv, (__mmask8)m, (const double *)p);
#elif FN_VBYTES == 32 && defined(__AVX2__)
    if (sizeof(T) == 4) {
        __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i m = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)lo), idx),
                                        _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), idx));
        return (VT)_mm256_blendv_ps((__m256)padv, _mm256_maskload_ps((const float *)p, m), _mm256_castsi256_ps(m));
    }
    __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
    __m256i m = _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)lo), idx),
                                    _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)hi), idx));
    return (VT)_mm256_blendv_pd((__m256d)padv, _mm256_maskload_pd((const double *)p, m), _mm256_castsi256_pd(m));
#else
    T buf[TLANES];
    for (int j = 0; j < TLANES; j++) buf[j] = j >= lo && j < hi ? p[j] : pad;
    (void)padv;
    return TF(loadt)(buf);
#endif
}

static inline VT TF(load_part)(const T *p, ptrdiff_t n, T pad)
{
    return TF(load_lanes)(p, 0, n, pad);
}

/* Lanes [0, k) of a and lanes [k, TLANES) of b. */
static inline VT TF(join)(VT a, VT b, ptrdiff_t k)
{
#if FN_VBYTES == 64 && defined(__AVX512F__)
    if (sizeof(T) == 4) return (VT)_mm512_mask_blend_ps((__mmask16)((1u << k) - 1), (__m512)b, (__m512)a);
    return (VT)_mm512_mask_blend_pd((__mmask8)((1u << k) - 1), (__m512d)b, (__m512d)a);
#elif FN_VBYTES == 32 && defined(__AVX2__)
    if (sizeof(T) == 4) {
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        return (VT)_mm256_blendv_ps((__m256)b, (__m256)a, _mm256_castsi256_ps(m));
    }
    __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)k), _mm256_setr_epi64x(0, 1, 2, 3));
    return (VT)_mm256_blendv_pd((__m256d)b, (__m256d)a, _mm256_castsi256_pd(m));
#else
    T ba[TLANES], bb[TLANES];
    TF(storet)(ba, a);
    TF(storet)(bb, b);
    for (ptrdiff_t j = k; j < TLANES; j++) ba[j] = bb[j];
    return TF(loadt)(ba);
#endif
}

static inline void TF(store_part)(T *p, ptrdiff_t n, VT v)
{
#if FN_VBYTES == 64 && defined(__AVX512F__)
    if (sizeof(T) == 4) _mm512_mask_storeu_ps((float *)p, (__mmask16)((1u << n) - 1), (__m512)v);
    else _mm512_mask_storeu_pd((double *)p, (__mmask8)((1u << n) - 1), (__m512d)v);
#elif FN_VBYTES == 32 && defined(__AVX2__)
    if (sizeof(T) == 4)
        _mm256_maskstore_ps((float *)p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (__m256)v);
    else
        _mm256_maskstore_pd((double *)p, _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)n),
                                                           _mm256_setr_epi64x(0, 1, 2, 3)), (__m256d)v);
#else
    T buf[TLANES];
    TF(storet)(buf, v);
    for (ptrdiff_t j = 0; j < n; j++) p[j] = buf[j];
#endif
}

/* The shift of a block's sums: its first value, or 0 where that is inf or NaN,
 * whose x - c would be NaN for every value: then c + s1 / n is the mean of a
 * plain sum, as NumPy's (+-inf where the values hold one sign of inf). */
static inline T TF(shift_of)(T first) { return (T)fn_finite_or_zero((double)first); }

/* 1 when each of the n values at x equals c: a constant block (padding rows, a
 * channel that a ReLU zeroed), whose sums in double are exactly +0 and +0 (each
 * x - c is +-0). Its T-precision sums fail sums_ok only because s2 is below
 * FN_TINY_SQ; a compare pass is cheaper than the double rerun, which took
 * LayerNorm (32, 512) over constant rows from 3.8 to 7.4 us. */
static inline int TF(all_equal)(const T *x, ptrdiff_t n, double c)
{
    T ct = (T)c;
    if ((double)ct != c) return 0;
    /* explicit vectors: the callers are cold, compiled for size, unvectorized */
    const VT cv = (VT){0} + ct;
    TF(vi) ne = {0}, ne1 = {0};
    ptrdiff_t i = 0;
    for (; i + 4 * TLANES <= n; i += 4 * TLANES) {
        ne |= (TF(vi))(TF(loadt)(x + i) != cv) | (TF(vi))(TF(loadt)(x + i + TLANES) != cv);
        ne1 |= (TF(vi))(TF(loadt)(x + i + 2 * TLANES) != cv) | (TF(vi))(TF(loadt)(x + i + 3 * TLANES) != cv);
    }
    for (; i + TLANES <= n; i += TLANES) ne |= (TF(vi))(TF(loadt)(x + i) != cv);
    ne |= ne1;
    int any = 0;
    for (int l = 0; l < TLANES; l++) any |= ne[l] != 0;
    for (; i < n; i++) any |= x[i] != ct;
    return !any;
}

/* s1 = sum(x - c), s2 = sum((x - c)^2) over n contiguous values, entirely in
 * double: the reference the fast version falls back to. */
__attribute__((noinline, cold)) static void TF(dev_sums_exact)(const T *x, ptrdiff_t n, double c, double *s1o, double *s2o)
{
    if (TF(all_equal)(x, n, c)) {
        *s1o = 0.0;
        *s2o = 0.0;
        return;
    }
    const VD zero = {0};
    const VD cv = zero + c;
    VD a0 = zero, q0 = zero, a1 = zero, q1 = zero;
    ptrdiff_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        VD d0 = TF(load)(x + i) - cv, d1 = TF(load)(x + i + LANES) - cv;
        a0 += d0; q0 += d0 * d0; a1 += d1; q1 += d1 * d1;
    }
    double s1 = TF(hsum)(a0 + a1), s2 = TF(hsum)(q0 + q1);
    for (; i < n; i++) {
        double d = (double)x[i] - c;
        s1 += d; s2 += d * d;
    }
    *s1o = s1; *s2o = s2;
}

/* The same sums for one block (n <= FN_BLOCK) in T-precision vector lanes:
 * each float32 lane adds at most FN_BLOCK / (4 * TLANES) terms and the lanes are
 * combined by a pairwise tree, which keeps float64-like accuracy for the block;
 * blocks are merged in double. Four independent accumulators (row_acc) hide the
 * add latency: four vectors at a time, then single vectors into a0, then the
 * tail as a padded vector into a1 (padding with c adds nothing). A float32 sum
 * that overflows (|x - c| > 1.8e19 squared, or huge values summed) or whose
 * squares may have underflowed (mean square below FN_TINY_SQ; constant blocks
 * are found by a compare pass, all_equal) reruns the block in double; so do
 * blocks holding inf or NaN. Blocks whose first value (their shift) lies far
 * from their mean (fn_shift_near: the cancellation in s2 - s1^2 / n would
 * multiply the float32 rounding) are summed again around that mean
 * (dev_sums_recentred). In RMS
 * mode (sq_sum) c is 0: x - 0 is x. Every reader of a row (plain loads,
 * realigned loads, the piped walk that feeds a row's vectors from inside
 * another row's loop) sends the same vectors to the same accumulators in the
 * same order, so the sums are the same bits. */
typedef struct { VT a0, a1, a2, a3, q0, q1, q2, q3; } TF(row_acc);

/* Four consecutive vectors, less the shift, into the four accumulators. */
static inline __attribute__((always_inline)) void TF(acc_dev4)(TF(row_acc) *s, VT d0, VT d1, VT d2, VT d3)
{
    s->a0 += d0; s->q0 += d0 * d0; s->a1 += d1; s->q1 += d1 * d1;
    s->a2 += d2; s->q2 += d2 * d2; s->a3 += d3; s->q3 += d3 * d3;
}

static inline __attribute__((always_inline)) void TF(acc_four)(TF(row_acc) *s, const T *x, VT cv)
{
    TF(acc_dev4)(s, TF(loadt)(x) - cv, TF(loadt)(x + TLANES) - cv, TF(loadt)(x + 2 * TLANES) - cv,
                 TF(loadt)(x + 3 * TLANES) - cv);
}

/* Feeds x[i .. n) into the accumulators, i a multiple of 4 * TLANES or past the
 * four-vector steps. */
static inline __attribute__((always_inline)) void TF(acc_rest)(TF(row_acc) *s, const T *x, ptrdiff_t i, ptrdiff_t n,
                                                               T c)
{
    const VT tz = {0};
    const VT cv = tz + c;
    for (; i + 4 * TLANES <= n; i += 4 * TLANES) TF(acc_four)(s, x + i, cv);
    for (; i + TLANES <= n; i += TLANES) {
        VT d = TF(loadt)(x + i) - cv;
        s->a0 += d; s->q0 += d * d;
    }
    if (i < n) {
        VT d = TF(load_part)(x + i, n - i, c) - cv;
        s->a1 += d; s->q1 += d * d;
    }
}

#if FN_VBYTES == 64 && defined(__AVX512F__)
/* Vector j of the aligned vectors that hold a row ending at base + end, lanes
 * past the end masked off. */
static inline VT TF(ra_block)(const T *base, ptrdiff_t j, ptrdiff_t end)
{
    ptrdiff_t hi = end - j * TLANES;
    return hi >= TLANES ? TF(loadt)(base + j * TLANES) : TF(load_lanes)(base + j * TLANES, 0, hi, (T)0);
}

/* Lanes [off, off + TLANES) of the two vectors a, b taken end to end (idx holds off + lane). */
static inline VT TF(ra_shift)(VT a, VT b, __m512i idx)
{
    if (sizeof(T) == 4) return (VT)_mm512_permutex2var_ps((__m512)a, idx, (__m512)b);
    return (VT)_mm512_permutex2var_pd((__m512d)a, idx, (__m512d)b);
}

/* off + lane, the ra_shift index of a row starting off values past a vector boundary. */
static inline __m512i TF(ra_index)(ptrdiff_t off)
{
    if (sizeof(T) == 4)
        return _mm512_add_epi32(_mm512_set1_epi32((int)off),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    return _mm512_add_epi64(_mm512_set1_epi64((long long)off), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The four vectors x[i .. i + 4 * TLANES) of a row that does not start at a vector
 * boundary, i = j * TLANES, assembled from aligned vectors j .. j + 4 of base
 * into the accumulators; *prev holds vector j and takes vector j + 4. end: where
 * the row ends past base, for loads masked to it, or 0 when vector j + 4 lies
 * inside the row. */
static inline __attribute__((always_inline)) void TF(acc_four_ra)(TF(row_acc) *s, const T *base, ptrdiff_t j,
                                                                  ptrdiff_t end, __m512i idx, VT *prev, VT cv)
{
    VT b[5];
    b[0] = *prev;
    for (int k = 1; k < 5; k++) b[k] = end ? TF(ra_block)(base, j + k, end) : TF(loadt)(base + (j + k) * TLANES);
    TF(acc_dev4)(s, TF(ra_shift)(b[0], b[1], idx) - cv, TF(ra_shift)(b[1], b[2], idx) - cv,
                 TF(ra_shift)(b[2], b[3], idx) - cv, TF(ra_shift)(b[3], b[4], idx) - cv);
    *prev = b[4];
}

/* dev_sums_vec (sq_sum_vec when rms, c = 0) for a row that does not start at a
 * vector boundary: each vector x[i .. i + TLANES) is assembled from the two
 * aligned vectors it straddles (one permute) instead of loaded across two cache
 * lines, which every load of such a row would be (LayerNorm over rows of a
 * NumPy array, 16 bytes into a page, ran 6 % slower than over aligned rows).
 * The vectors, and the accumulators they go to, are those of the plain loop, so
 * the sums are the same bits. n >= 2 * TLANES (FN_REALIGN_BYTES). */
static inline __attribute__((always_inline)) void TF(sums_vec_realigned)(const T *x, ptrdiff_t n, T c,
                                                                         VT *s1v, VT *s2v)
{
    const VT tz = {0};
    const VT cv = tz + c;
    ptrdiff_t off = (ptrdiff_t)((uintptr_t)x % FN_VBYTES) / (ptrdiff_t)sizeof(T), end = off + n;
    const T *base = x - off;
    __m512i idx = TF(ra_index)(off);
    TF(row_acc) s = {tz, tz, tz, tz, tz, tz, tz, tz};
    VT prev = TF(load_lanes)(base, off, TLANES, (T)0);
    ptrdiff_t i = 0;
    /* every vector read whole while the one after the fourth ends inside the row */
    for (; i + 5 * TLANES <= end; i += 4 * TLANES) TF(acc_four_ra)(&s, base, i / TLANES, 0, idx, &prev, cv);
    for (; i + 4 * TLANES <= n; i += 4 * TLANES) TF(acc_four_ra)(&s, base, i / TLANES, end, idx, &prev, cv);
    /* at most three vectors and the tail: plain loads */
    TF(acc_rest)(&s, x, i, n, c);
    *s1v = (s.a0 + s.a1) + (s.a2 + s.a3);
    *s2v = (s.q0 + s.q1) + (s.q2 + s.q3);
}
#define FN_REALIGNED(x, n) ((uintptr_t)(x) % FN_VBYTES != 0 && (uintptr_t)(x) % sizeof(T) == 0 && (n) * (ptrdiff_t)sizeof(T) >= FN_REALIGN_BYTES)
#endif

static inline __attribute__((always_inline)) void TF(dev_sums_vec)(const T *x, ptrdiff_t n, T c, VT *s1v, VT *s2v)
{
#ifdef FN_REALIGNED
    if (FN_REALIGNED(x, n)) {
        TF(sums_vec_realigned)(x, n, c, s1v, s2v);
        return;
    }
#endif
    const VT tz = {0};
    TF(row_acc) s = {tz, tz, tz, tz, tz, tz, tz, tz};
    TF(acc_rest)(&s, x, 0, n, c);
    *s1v = (s.a0 + s.a1) + (s.a2 + s.a3);
    *s2v = (s.q0 + s.q1) + (s.q2 + s.q3);
}

/* 1 when T-precision sums of a block of n values can be trusted (see dev_sums) */
static inline int TF(sums_ok)(double s1, double s2, ptrdiff_t n)
{
    /* branch-free (x - x == 0 exactly when x is finite), so loops over rows vectorize */
    return (sizeof(T) == sizeof(double)) | ((s1 - s1 == 0) & (s2 - s2 == 0) & (s2 >= (double)n * FN_TINY_SQ));
}

/* 1 unless T-precision sums of a block have its shift far from its mean
 * (fn_shift_near; double sums: 1 + z^2 on double's rounding is harmless) */
static inline int TF(shift_ok)(double s1, double s2, ptrdiff_t n)
{
    return sizeof(T) == sizeof(double) || !fn_far_possible((double)n) || fn_shift_near(s1, s2, (double)n);
}

/* Whether a block's T-precision sums stand, or the block is summed again */
static inline int TF(sums_stand)(double s1, double s2, ptrdiff_t n, int rms)
{
    return TF(sums_ok)(s1, s2, n) && (rms || TF(shift_ok)(s1, s2, n));
}


__attribute__((noinline, cold)) static void TF(sq_sum_exact)(const T *x, ptrdiff_t n, double *s2o)
{
    if (TF(all_equal)(x, n, 0.0)) {
        *s2o = 0.0;
        return;
    }
    const VD zero = {0};
    VD q0 = zero, q1 = zero;
    ptrdiff_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        VD v0 = TF(load)(x + i), v1 = TF(load)(x + i + LANES);
        q0 += v0 * v0; q1 += v1 * v1;
    }
    double s2 = TF(hsum)(q0 + q1);
    for (; i < n; i++) s2 += (double)x[i] * (double)x[i];
    *s2o = s2;
}

static inline __attribute__((always_inline)) VT TF(sq_sum_vec)(const T *x, ptrdiff_t n)
{
    VT a, q;
    TF(dev_sums_vec)(x, n, (T)0, &a, &q);
    return q;
}

/* The sums around c of a block whose T-precision sums around c (s1 and the
 * s2 that came with it) are finite and not tiny, but whose shift c lies far
 * from its mean (shift_ok): summed again in T around that mean, m, and moved
 * to c in double (s1 + n d, s2 + d (2 s1 + n d), d = m - c; the first value
 * of a block lies at most sqrt(n - 1) deviations from its mean, so double's
 * rounding of n d^2 stays near 1e-13 of the variance). In double
 * (dev_sums_exact) when the new sums cannot be trusted either. LayerNorm
 * (8192, 768) whose rows' first values lay 50 away took 1.5x the time with
 * every such row summed again in double. */
__attribute__((noinline, cold)) static void TF(dev_sums_recentred)(const T *x, ptrdiff_t n, double c, double s1,
                                                                   double *s1o, double *s2o)
{
    T m = (T)(c + s1 / (double)n);
    VT a, q;
    TF(dev_sums_vec)(x, n, m, &a, &q);
    double t1 = TF(hsumt)(a), t2 = TF(hsumt)(q);
    if (!(m - m == 0) || !TF(sums_stand)(t1, t2, n, 0)) {
        TF(dev_sums_exact)(x, n, c, s1o, s2o);
        return;
    }
    double d = (double)m - c;
    *s1o = t1 + (double)n * d;
    *s2o = t2 + d * (2.0 * t1 + (double)n * d);
}

/* The sums of a block whose T-precision sums s1, s2 around c do not stand
 * (sums_stand), taken again: around its mean where only the shift was far
 * (dev_sums_recentred), else in double (sq_sum_exact when rms, s1 kept). Out
 * of line, into the caller's locals (see block_sums_check). */
__attribute__((noinline, cold)) static void TF(sums_again)(const T *x, ptrdiff_t n, double c, int rms, double s1,
                                                           double s2, double *s1o, double *s2o)
{
    *s1o = s1;
    if (rms) TF(sq_sum_exact)(x, n, s2o);
    else if (TF(sums_ok)(s1, s2, n)) TF(dev_sums_recentred)(x, n, c, s1, s1o, s2o);
    else TF(dev_sums_exact)(x, n, c, s1o, s2o);
}

/* The sums of a block from its lane sums a, q (a unused in RMS mode), reduced
 * across lanes, or taken again when they cannot be trusted (sums_again). */
static inline void TF(sums_checked)(VT a, VT q, const T *x, ptrdiff_t n, T c, int rms, double *s1, double *s2)
{
    *s1 = rms ? 0.0 : TF(hsumt)(a);
    *s2 = TF(hsumt)(q);
    if (TF(sums_stand)(*s1, *s2, n, rms)) return;
    TF(sums_again)(x, n, (double)c, rms, *s1, *s2, s1, s2);
}

static inline void TF(dev_sums)(const T *x, ptrdiff_t n, T c, double *s1, double *s2)
{
    VT a, q;
    TF(dev_sums_vec)(x, n, c, &a, &q);
    TF(sums_checked)(a, q, x, n, c, 0, s1, s2);
}

static inline double TF(sq_sum)(const T *x, ptrdiff_t n)
{
    double s1, s2;
    TF(sums_checked)((VT){0}, TF(sq_sum_vec)(x, n), x, n, (T)0, 1, &s1, &s2);
    return s2;
}

/* Partial statistics of one block (n <= FN_BLOCK): its shift, its mean less the
 * shift and m2, or in RMS mode 0, 0 and the sum of squares in m2. */
static inline __attribute__((always_inline)) void TF(block_stats)(const T *x, ptrdiff_t n, double inv_n, int rms,
                                                                  double *shift, double *off, double *m2)
{
    if (rms) {
        *shift = 0;
        *off = 0;
        *m2 = TF(sq_sum)(x, n);
        return;
    }
    double s1, s2;
    T c = TF(shift_of)(x[0]);
    TF(dev_sums)(x, n, c, &s1, &s2);
    *shift = (double)c;
    fn_sums_to_stats(s1, s2, 0.0, inv_n, 0, off, m2);
}

/* Merges a block (block_stats' shift, off and m2) into acc, its mean relative
 * to acc's ref (the first block's shift): (shift - ref) + off, as the rowwise
 * walk's fn_sums_to_stats(s1, s2, shift - ref) computes it. */
static inline void TF(acc_block)(fn_acc *acc, double n, double shift, double off, double m2, int rms)
{
    if (rms) { acc->n += n; acc->m2 += m2; return; }
    if (acc->n == 0) acc->ref = shift;
    fn_acc_merge(acc, n, (shift - acc->ref) + off, m2);
}

/* Merges, column by column, K blocks of nb values each (means mb, M2 m2b) into
 * K accumulators of na values each (means ma, M2 m2a, compensations ca or NULL,
 * see fn_merge_cols): fn_acc_merge's arithmetic with its divisions done once for
 * all columns. */
static void TF(col_fold)(double na, double *ma, double *m2a, double *ca, double nb, const double *mb,
                         const double *m2b, ptrdiff_t K, int rms)
{
    if (rms) {
        for (ptrdiff_t k = 0; k < K; k++) m2a[k] = (na == 0 ? 0 : m2a[k]) + m2b[k];
        if (na == 0) for (ptrdiff_t k = 0; k < K; k++) ma[k] = 0;
    } else {
        fn_merge_cols(na, ma, m2a, ca, nb, mb, m2b, K);
    }
}

/* Row j's part of block_sums_rows: its shift into *c0, its lane sums into *a, *q
 * (a zero in RMS mode). */
static inline __attribute__((always_inline)) void TF(row_lane_sums)(const T *row, ptrdiff_t n, int rms, VT *a, VT *q,
                                                                    double *c0)
{
    const VT tz = {0};
    T c = rms ? (T)0 : TF(shift_of)(row[0]);
    *c0 = (double)c;
    if (rms) {
        *a = tz;
        *q = TF(sq_sum_vec)(row, n);
    } else {
        TF(dev_sums_vec)(row, n, c, a, q);
    }
}

/* The sums of LANES rows from their lane sums, reduced together: s1[r], s2[r]. */
static inline __attribute__((always_inline)) void TF(rows_reduce)(const VT *a, const VT *q, double *s1, double *s2)
{
    VD sa = TF(hsumt_rows)(a), sq = TF(hsumt_rows)(q);
    __builtin_memcpy(s1, &sa, sizeof sa);
    __builtin_memcpy(s2, &sq, sizeof sq);
}

/* The sums of cnt blocks that cannot be trusted (sums_stand), taken again in
 * double as dev_sums (sq_sum) takes them. */
static inline __attribute__((always_inline)) void TF(block_sums_check)(const T *const *seg, ptrdiff_t cnt, ptrdiff_t n,
                                                                       int rms, double *restrict s1,
                                                                       double *restrict s2, const double *restrict c0)
{
    int all_ok = 1;
    for (ptrdiff_t j = 0; j < cnt; j++) all_ok &= TF(sums_ok)(s1[j], s2[j], n);
    if (sizeof(T) < sizeof(double) && !rms && fn_far_possible((double)n))
        for (ptrdiff_t j = 0; j < cnt; j++) all_ok &= fn_shift_near(s1[j], s2[j], (double)n);
    for (ptrdiff_t j = 0; !all_ok && j < cnt; j++) {
        if (TF(sums_stand)(s1[j], s2[j], n, rms)) continue;
        /* through locals: with &s1[j] passed to the function (not inlined), the
         * caller's arrays escape, stores to y may alias them, and LayerNorm (512,
         * 64) ran 2-3 % slower from cache */
        double e1, e2;
        TF(sums_again)(seg[j], n, c0[j], rms, s1[j], s2[j], &e1, &e2);
        s1[j] = e1;
        s2[j] = e2;
    }
}

/* The sums of dev_sums (sq_sum in RMS mode: s1 = 0) of cnt <= FN_STATS_ROWS
 * single blocks of n values each, at seg[0 .. cnt), with their shifts c0: the
 * vector sums of LANES blocks at a time are reduced together (rows_reduce), so the
 * blocks share their cross-lane adds. The same bits as dev_sums, double-precision
 * reruns included. s1 and s2 have room for cnt + LANES values. */
#define FN_STATS_ROWS 64
/* Rows of at most this many bytes are summed LANES at a time in one unrolled
 * stretch, folded as they come (fold_push; moments of (512, 64) and (256, 256)
 * 1.04-1.05x faster, AMD EPYC Zen 3, one thread); longer rows in a loop, their
 * lane sums through memory (LayerNorm (32, 512) ran 1-2 % slower unrolled). The
 * same bits either way. */
#define FN_FOLD_UNROLL_BYTES 1024
static inline __attribute__((always_inline)) void TF(block_sums_rows)(const T *const *seg, ptrdiff_t cnt, ptrdiff_t n,
                                                                      int rms, double *restrict s1, double *restrict s2,
                                                                      double *restrict c0)
{
    const VT tz = {0};
    for (ptrdiff_t j0 = 0; j0 < cnt; j0 += LANES) {
        if (n * (ptrdiff_t)sizeof(T) > FN_FOLD_UNROLL_BYTES) {
            VT a[LANES], q[LANES];
            for (int r = 0; r < LANES; r++) {
                ptrdiff_t j = j0 + r;
                a[r] = tz; q[r] = tz;
                if (j < cnt) TF(row_lane_sums)(seg[j], n, rms, &a[r], &q[r], &c0[j]);
            }
            TF(rows_reduce)(a, q, s1 + j0, s2 + j0);
            continue;
        }
        TF(fold_stack) fa, fq;
#pragma GCC unroll 8
        for (int r = 0; r < LANES; r++) {
            ptrdiff_t j = j0 + r;
            VT a = tz, q = tz;
            if (j < cnt) TF(row_lane_sums)(seg[j], n, rms, &a, &q, &c0[j]);
            TF(fold_push)(&fa, r, a);
            TF(fold_push)(&fq, r, q);
        }
        VD sa = TF(fold_out)(fa.v[FN_FOLD_LEVELS]), sq = TF(fold_out)(fq.v[FN_FOLD_LEVELS]);
        __builtin_memcpy(s1 + j0, &sa, sizeof sa);
        __builtin_memcpy(s2 + j0, &sq, sizeof sq);
    }
    TF(block_sums_check)(seg, cnt, n, rms, s1, s2, c0);
}

/* a * b + c rounded once where the ISA has FMA (twice on the generic path). Written
 * out, not left to the compiler's contraction: whether it fuses `a * b + c`
 * depends on where it moved the multiply (hoisted out of a branch, a shared
 * product is no longer fused), and the bits must not. */
static inline VT TF(fmadd)(VT a, VT b, VT c)
{
#if FN_VBYTES == 64 && defined(__AVX512F__)
    if (sizeof(T) == 4) return (VT)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
    return (VT)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif FN_VBYTES == 32 && defined(__FMA__)
    if (sizeof(T) == 4) return (VT)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
    return (VT)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    return a * b + c;
#endif
}

/* The cnt values at p (all TLANES, or fewer through a masked load padded with pad). */
static inline VT TF(load_n)(const T *p, ptrdiff_t cnt, T pad)
{
    return cnt == TLANES ? TF(loadt)(p) : TF(load_part)(p, cnt, pad);
}

/* Lanes [lo, hi) of the vector at p: a full load when that is all of them. */
static inline VT TF(load_range)(const T *p, ptrdiff_t lo, ptrdiff_t hi, T pad)
{
    return lo == 0 && hi == TLANES ? TF(loadt)(p) : TF(load_lanes)(p, lo, hi, pad);
}

/* One vector of normalized values, lanes [lo, hi) of the vector at x + i: ((x -
 * mh) - ml) * sc, then * w + b (vector parameters wv, bv at the same offset,
 * either may be NULL) or + sh (scalar shift), the final multiply-add fused
 * (fmadd). Partial vectors (padding lanes mh for x, 0 for w and b) go through
 * the very code of the full ones, so a value's rounding does not depend on its
 * place in the row. */
static inline __attribute__((always_inline)) VT TF(norm_of)(VT xv, VT wi, VT bi, int has_w, int has_b, VT mhv,
                                                          VT mlv, VT scv, VT shv)
{
    VT d = (xv - mhv) - mlv;
    if (has_w && has_b) return TF(fmadd)(d * scv, wi, bi);
    if (has_w) return d * scv * wi;
    return TF(fmadd)(d, scv, shv);
}

static inline VT TF(norm_vec_lanes)(const T *x, const T *wv, const T *bv, ptrdiff_t i, ptrdiff_t lo, ptrdiff_t hi,
                                    T mh, VT mhv, VT mlv, VT scv, VT shv)
{
    const VT tz = {0};
    VT wi = wv ? TF(load_range)(wv + i, lo, hi, (T)0) : tz, bi = wv && bv ? TF(load_range)(bv + i, lo, hi, (T)0) : tz;
    return TF(norm_of)(TF(load_range)(x + i, lo, hi, mh), wi, bi, wv != NULL, bv != NULL, mhv, mlv, scv, shv);
}

/* The values at x[i .. i + cnt), cnt <= TLANES, in lanes [0, cnt). */
static inline VT TF(norm_vec_n)(const T *x, const T *wv, const T *bv, ptrdiff_t i, ptrdiff_t cnt,
                                T mh, VT mhv, VT mlv, VT scv, VT shv)
{
    return TF(norm_vec_lanes)(x, wv, bv, i, 0, cnt, mh, mhv, mlv, scv, shv);
}

static inline VT TF(norm_vec)(const T *x, const T *wv, const T *bv, ptrdiff_t i,
                              VT mhv, VT mlv, VT scv, VT shv)
{
    return TF(norm_vec_n)(x, wv, bv, i, TLANES, (T)0, mhv, mlv, scv, shv);
}

/* The 0 < cnt < TLANES values at x[i ..]; padding lanes are not stored. */
static inline void TF(norm_part_vec)(const T *x, const T *wv, const T *bv, T *y, ptrdiff_t i, ptrdiff_t cnt,
                                     T mh, VT mhv, VT mlv, VT scv, VT shv)
{
    TF(store_part)(y + i, cnt, TF(norm_vec_n)(x, wv, bv, i, cnt, mh, mhv, mlv, scv, shv));
}

/* Values before the first vector boundary of y (vec_head), and align_head: as
 * many, when a range of n values is long enough to peel them. Full vector stores
 * that straddle two cache lines make every line of y a partial write, which the
 * core must read for ownership first (LayerNorm into a 16-byte aligned out ran
 * 5-7 % slower). Ranges under FN_REALIGN_BYTES are not peeled: the extra partial
 * store cost LayerNorm (512, 64) 5 %. Values are computed lane by lane, so
 * peeling changes no bits. */
static inline ptrdiff_t TF(vec_head)(const T *y)
{
    return (ptrdiff_t)(((FN_VBYTES - (uintptr_t)y % FN_VBYTES) % FN_VBYTES) / sizeof(T));
}

static inline ptrdiff_t TF(align_head)(const T *y, ptrdiff_t n)
{
    return n * (ptrdiff_t)sizeof(T) >= FN_REALIGN_BYTES && (uintptr_t)y % sizeof(T) == 0 ? TF(vec_head)(y) : 0;
}

/* A non-temporal store of one vector to an address aligned to FN_VBYTES. */
static inline void TF(stream_store)(T *p, VT v)
{
#if FN_VBYTES == 64 && defined(__AVX512F__)
    if (sizeof(T) == 4) _mm512_stream_ps((float *)p, (__m512)v);
    else _mm512_stream_pd((double *)p, (__m512d)v);
#elif FN_VBYTES == 32 && defined(__AVX__)
    if (sizeof(T) == 4) _mm256_stream_ps((float *)p, (__m256)v);
    else _mm256_stream_pd((double *)p, (__m256d)v);
#elif FN_VBYTES == 16 && defined(__SSE2__)
    if (sizeof(T) == 4) _mm_stream_ps((float *)p, (__m128)v);
    else _mm_stream_pd((double *)p, (__m128d)v);
#else
    TF(storet)(p, v);
#endif
}

/* Whether the rows of n values that norm_row_fast and norm_rows2_fast store from
 * y's first vector boundary on take their partial vectors at both ends as whole
 * vectors stored unaligned over their neighbours (the same values written twice)
 * instead of masked stores: an AVX2 masked store took 12 cycles on an AMD Zen 3
 * core (4 per row of LayerNorm (32, 512) into an out 16 bytes past a vector
 * boundary: 13 % of the call); without AVX2 the partial stores are scalar loops.
 * AVX-512's masked stores cost what a plain one does. */
#if FN_VBYTES == 64 && defined(__AVX512F__)
#define FN_OVERLAP_EDGES(n) 0
#else
#define FN_OVERLAP_EDGES(n) ((n) >= 2 * TLANES)
#endif

/* The T-precision normalize of n values with its coefficients given (norm_range's
 * loop without streaming stores), y stored from its vector boundary on. */
static inline __attribute__((always_inline)) void TF(norm_row_fast)(const T *x, T *y, ptrdiff_t n, const T *wv,
                                                                    const T *bv, T mh, T ml, T sc, T sh)
{
    const VT tz = {0};
    const VT mhv = tz + mh, mlv = tz + ml, scv = tz + sc, shv = tz + sh;
    ptrdiff_t i = TF(align_head)(y, n);
    int tail = (n - i) % TLANES != 0;
    if (FN_OVERLAP_EDGES(n) && (i || tail)) {
        /* every vector that a store overlaps is computed before that store: y may be x */
        VT last = tail ? TF(norm_vec)(x, wv, bv, n - TLANES, mhv, mlv, scv, shv) : tz;
        if (i) {
            VT head = TF(norm_vec)(x, wv, bv, 0, mhv, mlv, scv, shv);
            VT first = TF(norm_vec)(x, wv, bv, i, mhv, mlv, scv, shv);
            TF(storet)(y, head);
            TF(storet)(y + i, first);
            i += TLANES;
        }
        for (; i + TLANES <= n; i += TLANES) TF(storet)(y + i, TF(norm_vec)(x, wv, bv, i, mhv, mlv, scv, shv));
        if (tail) TF(storet)(y + n - TLANES, last);
        return;
    }
    if (i) TF(norm_part_vec)(x, wv, bv, y, 0, i, mh, mhv, mlv, scv, shv);
    for (; i + TLANES <= n; i += TLANES) TF(storet)(y + i, TF(norm_vec)(x, wv, bv, i, mhv, mlv, scv, shv));
    if (i < n) TF(norm_part_vec)(x, wv, bv, y, i, n - i, mh, mhv, mlv, scv, shv);
}

/* norm_rows2_fast's whole vectors from i on, two of each row a step (all four
 * computed before they are stored: y may be x); returns where they end. One a
 * step, LayerNorm (32, 512) and (64, 768) with weight and bias took 1.02-1.07x
 * the time on the AMD EPYC (both orders; (512, 64) 1.00-1.02x). */
static inline __attribute__((always_inline)) ptrdiff_t TF(norm_rows2_body)(const T *x0, const T *x1, T *y0, T *y1,
                                                                           ptrdiff_t i, ptrdiff_t n, const T *wv,
                                                                           const T *bv, VT mh0, VT ml0, VT sc0,
                                                                           VT mh1, VT ml1, VT sc1)
{
    const VT tz = {0};
    for (; i + 2 * TLANES <= n; i += 2 * TLANES) {
        VT wi = TF(loadt)(wv + i), bi = bv ? TF(loadt)(bv + i) : tz;
        VT wj = TF(loadt)(wv + i + TLANES), bj = bv ? TF(loadt)(bv + i + TLANES) : tz;
        FN_IN_REGISTER(wi);
        FN_IN_REGISTER(bi);
        FN_IN_REGISTER(wj);
        FN_IN_REGISTER(bj);
        VT v0 = TF(norm_of)(TF(loadt)(x0 + i), wi, bi, 1, bv != NULL, mh0, ml0, sc0, tz);
        VT v1 = TF(norm_of)(TF(loadt)(x1 + i), wi, bi, 1, bv != NULL, mh1, ml1, sc1, tz);
        VT v2 = TF(norm_of)(TF(loadt)(x0 + i + TLANES), wj, bj, 1, bv != NULL, mh0, ml0, sc0, tz);
        VT v3 = TF(norm_of)(TF(loadt)(x1 + i + TLANES), wj, bj, 1, bv != NULL, mh1, ml1, sc1, tz);
        TF(storet)(y0 + i, v0);
        TF(storet)(y1 + i, v1);
        TF(storet)(y0 + i + TLANES, v2);
        TF(storet)(y1 + i + TLANES, v3);
    }
    for (; i + TLANES <= n; i += TLANES) {
        VT wi = TF(loadt)(wv + i), bi = bv ? TF(loadt)(bv + i) : tz;
        FN_IN_REGISTER(wi);
        FN_IN_REGISTER(bi);
        VT v0 = TF(norm_of)(TF(loadt)(x0 + i), wi, bi, 1, bv != NULL, mh0, ml0, sc0, tz);
        VT v1 = TF(norm_of)(TF(loadt)(x1 + i), wi, bi, 1, bv != NULL, mh1, ml1, sc1, tz);
        TF(storet)(y0 + i, v0);
        TF(storet)(y1 + i, v1);
    }
    return i;
}

/* norm_row_fast of two rows with the same vector parameters wv, bv (wv not
 * NULL) and outputs at the same offset from a vector boundary: each vector of
 * the parameters loaded once for both rows. Row by row, three loads per output
 * vector bound the loop from cache (LayerNorm (32, 512)). Same bits. */
static inline __attribute__((always_inline)) void TF(norm_rows2_fast)(const T *x0, const T *x1, T *y0, T *y1,
                                                                      ptrdiff_t n, const T *wv, const T *bv,
                                                                      const T *mh, const T *ml, const T *sc)
{
    const VT tz = {0};
    const VT mh0 = tz + mh[0], ml0 = tz + ml[0], sc0 = tz + sc[0];
    const VT mh1 = tz + mh[1], ml1 = tz + ml[1], sc1 = tz + sc[1];
    ptrdiff_t i = TF(align_head)(y0, n);
    int tail = (n - i) % TLANES != 0;
    if (FN_OVERLAP_EDGES(n) && (i || tail)) {
        /* as in norm_row_fast */
        VT last0 = tz, last1 = tz;
        if (tail) {
            last0 = TF(norm_vec)(x0, wv, bv, n - TLANES, mh0, ml0, sc0, tz);
            last1 = TF(norm_vec)(x1, wv, bv, n - TLANES, mh1, ml1, sc1, tz);
        }
        if (i) {
            VT head0 = TF(norm_vec)(x0, wv, bv, 0, mh0, ml0, sc0, tz);
            VT head1 = TF(norm_vec)(x1, wv, bv, 0, mh1, ml1, sc1, tz);
            VT first0 = TF(norm_vec)(x0, wv, bv, i, mh0, ml0, sc0, tz);
            VT first1 = TF(norm_vec)(x1, wv, bv, i, mh1, ml1, sc1, tz);
            TF(storet)(y0, head0);
            TF(storet)(y0 + i, first0);
            TF(storet)(y1, head1);
            TF(storet)(y1 + i, first1);
            i += TLANES;
        }
        TF(norm_rows2_body)(x0, x1, y0, y1, i, n, wv, bv, mh0, ml0, sc0, mh1, ml1, sc1);
        if (tail) {
            TF(storet)(y0 + n - TLANES, last0);
            TF(storet)(y1 + n - TLANES, last1);
        }
        return;
    }
    if (i) {
        TF(norm_part_vec)(x0, wv, bv, y0, 0, i, mh[0], mh0, ml0, sc0, tz);
        TF(norm_part_vec)(x1, wv, bv, y1, 0, i, mh[1], mh1, ml1, sc1, tz);
    }
    i = TF(norm_rows2_body)(x0, x1, y0, y1, i, n, wv, bv, mh0, ml0, sc0, mh1, ml1, sc1);
    if (i < n) {
        TF(norm_part_vec)(x0, wv, bv, y0, i, n - i, mh[0], mh0, ml0, sc0, tz);
        TF(norm_part_vec)(x1, wv, bv, y1, i, n - i, mh[1], mh1, ml1, sc1, tz);
    }
}

/* cnt segments of n >= TLANES values lying end to end in x and in y (the planes
 * of neighbouring channels of one sample, BatchNorm NCHW), segment j normalized
 * with scalar coefficients (mh[j], ml[j], sc[j], sh[j]). The run is walked as
 * one row from y's first vector boundary: every store but the first and last is
 * a full aligned vector, where segment by segment a 14 x 14 plane took a partial
 * store and straddled cache lines with most of its vectors (BatchNorm (64, 256,
 * 14, 14) ran at 88 % of a copy, planes of 56 x 56 at 96 %). A vector that spans
 * two segments takes each lane's coefficients from its own segment (join) and is
 * computed once: computed with each segment's and joined, a 7 x 7 plane (four
 * vectors) took five (GroupNorm and inference BatchNorm (64, 256, 7, 7) 1-8 %
 * slower). Each value's arithmetic is norm_row_fast's: same bits. */
static void TF(norm_run_joined)(const T *x, T *y, ptrdiff_t n, ptrdiff_t cnt,
                                const T *mh, const T *ml, const T *sc, const T *sh)
{
    const VT tz = {0};
    ptrdiff_t j = 0, end = n;      /* segment j spans [end - n, end) */
    VT mhv = tz + mh[0], mlv = tz + ml[0], scv = tz + sc[0], shv = tz + sh[0];
    ptrdiff_t i = TF(vec_head)(y); /* < TLANES <= n */
    if (i) TF(norm_part_vec)(x, NULL, NULL, y, 0, i, mh[0], mhv, mlv, scv, shv);
    /* a segment's whole vectors in a loop of their own, then the vector at its
     * end: with the tests of every boundary case in each vector's step, GroupNorm
     * (64, 256, 7, 7) took 1.35x and inference BatchNorm 1.38x the time on one
     * thread (see README, Short planes). Four vectors a step, each computed from
     * its own values before the four are stored (y may be x): one a step, the
     * loop's two branches and load latency bound runs from cache (inference
     * BatchNorm (1, 64, 14, 14) took 1.2x the time; unrolled in norm_row_fast
     * too, LayerNorm (32, 512) with weight and bias ran 4-7 % slower) */
    for (;;) {
        for (; i + 4 * TLANES <= end; i += 4 * TLANES) {
            VT v0 = TF(norm_vec)(x, NULL, NULL, i, mhv, mlv, scv, shv);
            VT v1 = TF(norm_vec)(x, NULL, NULL, i + TLANES, mhv, mlv, scv, shv);
            VT v2 = TF(norm_vec)(x, NULL, NULL, i + 2 * TLANES, mhv, mlv, scv, shv);
            VT v3 = TF(norm_vec)(x, NULL, NULL, i + 3 * TLANES, mhv, mlv, scv, shv);
            TF(storet)(y + i, v0);
            TF(storet)(y + i + TLANES, v1);
            TF(storet)(y + i + 2 * TLANES, v2);
            TF(storet)(y + i + 3 * TLANES, v3);
        }
        for (; i + TLANES <= end; i += TLANES) TF(storet)(y + i, TF(norm_vec)(x, NULL, NULL, i, mhv, mlv, scv, shv));
        if (i < end && j + 1 == cnt) {
            TF(norm_part_vec)(x, NULL, NULL, y, i, end - i, mh[j], mhv, mlv, scv, shv);
            return;
        }
        if (++j == cnt) return;
        ptrdiff_t k = end - i;     /* lanes [0, k) in segment j - 1, the rest in segment j */
        end += n;
        VT nmh = tz + mh[j], nml = tz + ml[j], nsc = tz + sc[j], nsh = tz + sh[j];
        if (k > 0) {
            /* a whole vector: segment j holds n >= TLANES values */
            TF(storet)(y + i, TF(norm_vec)(x, NULL, NULL, i, TF(join)(mhv, nmh, k), TF(join)(mlv, nml, k),
                                           TF(join)(scv, nsc, k), TF(join)(shv, nsh, k)));
            i += TLANES;
        }
        mhv = nmh; mlv = nml; scv = nsc; shv = nsh;
    }
}

/* Length of the run of segments from j on (at most cnt - j) that norm_run_joined
 * can take: each fast, each starting where the one before ends in x and in y. */
static inline ptrdiff_t TF(joined_len)(const ptrdiff_t *xo, const ptrdiff_t *yo, const unsigned char *fast,
                                       ptrdiff_t j, ptrdiff_t cnt, ptrdiff_t n)
{
    ptrdiff_t e = j + 1;
    while (e < cnt && fast[e] && xo[e] == xo[e - 1] + n && yo[e] == yo[e - 1] + n) e++;
    return e - j;
}

/* One vector stored at y, a vector boundary: streamed or cached. */
static inline void TF(store_vec)(T *y, VT v, int stream)
{
    if (stream) TF(stream_store)(y, v);
    else TF(storet)(y, v);
}

/* y = ((x - mean) * rstd) * w + b over n contiguous values in double: the
 * reference that the T-precision version falls back to. Out of line, for rare
 * rows: inlined into the walks compiled for one row length, its tail loop drew
 * GCC's -Waggressive-loop-optimizations warning. */
__attribute__((noinline, cold)) static void TF(norm_range_exact)(const T *x, T *y, ptrdiff_t n, double mean,
                                                                 double rstd, const T *w, const T *b, int wvec)
{
    const VD zero = {0};
    const VD mv = zero + mean, rv = zero + rstd;
    ptrdiff_t i = 0;
    if (!w || !wvec) {
        double sc = w ? rstd * (double)w[0] : rstd, sh = (w && b) ? (double)b[0] : 0.0;
        const VD scv = zero + sc, shv = zero + sh;
        for (; i + LANES <= n; i += LANES) {
            VL out = __builtin_convertvector((TF(load)(x + i) - mv) * scv + shv, VL);
            __builtin_memcpy(y + i, &out, sizeof out);
        }
        for (; i < n; i++) y[i] = (T)(((double)x[i] - mean) * sc + sh);
        return;
    }
    for (; i + LANES <= n; i += LANES) {
        VD v = (TF(load)(x + i) - mv) * rv * TF(load)(w + i);
        if (b) v += TF(load)(b + i);
        VL out = __builtin_convertvector(v, VL);
        __builtin_memcpy(y + i, &out, sizeof out);
    }
    for (; i < n; i++) {
        double v = ((double)x[i] - mean) * rstd * (double)w[i];
        y[i] = (T)(b ? v + (double)b[i] : v);
    }
}

/* The same in T precision. The mean is split into mh + ml so that x - mh is
 * exact for x near the mean (Sterbenz) and data with |mean| >> std keeps its
 * digits; the result is within a few ulp of the double computation. w, b are a
 * vector (wvec), one scalar, or absent. `safe` says x - mean cannot overflow T
 * (see fn_t_safe); otherwise, or when a coefficient is not finite in T, the
 * range is computed in double. */
static inline void TF(norm_range)(const T *x, T *y, ptrdiff_t n, double mean, double rstd,
                                  const T *w, const T *b, int wvec, int safe, int stream)
{
    const T mh = (T)mean, ml = (T)(mean - (double)mh);
    double sc_d = w && !wvec ? rstd * (double)w[0] : rstd;
    const T sc = (T)sc_d, sh = w && !wvec && b ? b[0] : (T)0;
    if (!safe || !isfinite(sc) || !isfinite(mh)) {
        TF(norm_range_exact)(x, y, n, mean, rstd, w, b, wvec);
        return;
    }
    const T *wv = w && wvec ? w : NULL, *bv = w && wvec ? b : NULL;
    if (!stream || ((uintptr_t)y % sizeof(T)) != 0) {
        TF(norm_row_fast)(x, y, n, wv, bv, mh, ml, sc, sh);
        return;
    }
    const VT tz = {0};
    const VT mhv = tz + mh, mlv = tz + ml, scv = tz + sc, shv = tz + sh;
    /* streaming stores bypass the cache: no read-for-ownership of y, which a
     * large output would evict from cache anyway */
    ptrdiff_t i = fn_min(TF(vec_head)(y), n);
    if (i) TF(norm_part_vec)(x, wv, bv, y, 0, i, mh, mhv, mlv, scv, shv);
    for (; i + TLANES <= n; i += TLANES)
        TF(stream_store)(y + i, TF(norm_vec)(x, wv, bv, i, mhv, mlv, scv, shv));
    if (i < n) TF(norm_part_vec)(x, wv, bv, y, i, n - i, mh, mhv, mlv, scv, shv);
}

/* norm_range's coefficients for cnt units normalized with mean[j] and var[j] (over n
 * values each), rstd[j] = 1 / sqrt(var[j] + eps) and, when wrow, the unit's scalar
 * parameters w[wo[j]], b[wo[j]] (b may be NULL): mh, ml, sc, sh, and fast[j] = 1
 * when norm_range would take its T-precision loop without streaming stores (else
 * the caller calls norm_range). A loop over units without branches, so it
 * vectorizes. */
static inline __attribute__((always_inline)) void TF(unit_coeffs)(ptrdiff_t cnt, const double *mean, const double *var,
                                                                  const double *rstd, double n, const T *w, const T *b,
                                                                  const ptrdiff_t *wo, int wrow, int stream,
                                                                  T *mh, T *ml, T *sc, T *sh, unsigned char *fast)
{
    for (ptrdiff_t j = 0; j < cnt; j++) {
        sc[j] = (T)(wrow ? rstd[j] * (double)w[wo[j]] : rstd[j]);
        sh[j] = wrow && b ? b[wo[j]] : (T)0;
    }
#pragma omp simd
    for (ptrdiff_t j = 0; j < cnt; j++) {
        mh[j] = (T)mean[j];
        ml[j] = (T)(mean[j] - (double)mh[j]);
        /* x - x == 0 exactly when x is finite */
        fast[j] = (unsigned char)((stream == 0) & fn_t_safe(mean[j], var[j], n, sizeof(T))
                                  & (sc[j] - sc[j] == 0) & (mh[j] - mh[j] == 0));
    }
}


/* inv_total = 1 / acc->n, computed once by the caller */
static inline void TF(finish_stats)(const fn_acc *acc, double inv_total, int rms, double *mean, double *var)
{
    if (acc->n == 0) { *mean = NAN; *var = NAN; return; }
    *mean = rms ? 0.0 : acc->ref + (acc->mean + acc->c);
    *var = acc->m2 * inv_total;
}

/* 1 / (length of the last block of a segment), and 1 / (values per unit). */
static inline double TF(inv_tail)(const fn_seg_shape *s)
{
    ptrdiff_t t = s->R2 % FN_BLOCK;
    return 1.0 / (double)(t ? t : FN_BLOCK);
}

/* ---------------------------------------------------------------- SEG ---- */

/* The shape a unit's statistics are taken over. A unit whose segments lie end to
 * end in x (GroupNorm NCHW: the planes of its channels) is read as one segment of
 * R1 * R2 values, in blocks of FN_BLOCK that cross the plane boundaries, as
 * LayerNorm reads a row: one block of 8 x 49 values instead of 8 blocks of 49
 * (GroupNorm (64, 256, 7, 7) 24 % faster). Every walk takes its statistics
 * through this view, so the bits do not depend on the walk or thread count. */
static inline fn_seg_shape TF(stats_view)(const fn_seg_shape *s)
{
    fn_seg_shape v = *s;
    if (s->R1 > 1 && s->xr1 == s->R2) {
        v.R2 = s->R1 * s->R2;
        v.R1 = 1;
        v.xr1 = v.R2;
    }
    return v;
}

/* Merges the block of m <= FN_BLOCK values at blk (a segment's last when m is
 * short, of 1 / inv_tail values) into acc. */
static inline __attribute__((always_inline)) void TF(acc_one_block)(fn_acc *acc, const T *blk, ptrdiff_t m,
                                                                    int rms, double inv_tail)
{
    double bc, bm, bm2;
    TF(block_stats)(blk, m, m == FN_BLOCK ? 1.0 / FN_BLOCK : inv_tail, rms, &bc, &bm, &bm2);
    TF(acc_block)(acc, (double)m, bc, bm, bm2, rms);
}

/* Merges the blocks of one segment (R2 values at seg) into acc, in order. */
static inline __attribute__((always_inline)) void TF(acc_segment)(fn_acc *acc, const T *seg, ptrdiff_t R2,
                                                                  int rms, double inv_tail)
{
    for (ptrdiff_t i0 = 0; i0 < R2; i0 += FN_BLOCK)
        TF(acc_one_block)(acc, seg + i0, fn_min(FN_BLOCK, R2 - i0), rms, inv_tail);
}

/* Statistics of the unit at xu (R1 segments of R2 values; s is a statistics view). */
static inline __attribute__((always_inline)) void TF(seg_unit_stats)(const fn_seg_shape *s, const T *xu, int rms, double inv_tail,
                               double inv_total, double *mean, double *var)
{
    fn_acc acc = {0, 0, 0};
    for (ptrdiff_t r1 = 0; r1 < s->R1; r1++) TF(acc_segment)(&acc, xu + r1 * s->xr1, s->R2, rms, inv_tail);
    TF(finish_stats)(&acc, inv_total, rms, mean, var);
}

/* Normalize elements [i0, i1) of segment r1 of unit (a, k). */
static inline void TF(seg_norm_part)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                                     ptrdiff_t a, ptrdiff_t k, ptrdiff_t r1, ptrdiff_t i0, ptrdiff_t i1,
                                     double mean, double var)
{
    double rstd = 1.0 / sqrt(var + p->eps);
    int safe = fn_t_safe(mean, var, (double)(s->R1 * s->R2), sizeof(T));
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    ptrdiff_t widx = k * s->wk + r1 * s->wr1 + i0 * s->wr2;
    TF(norm_range)(x + a * s->xa + k * s->xk + r1 * s->xr1 + i0,
                   y + a * s->ya + k * s->yk + r1 * s->yr1 + i0,
                   i1 - i0, mean, rstd,
                   w ? w + widx : NULL, (w && b) ? b + widx : NULL, s->wr2 != 0, safe, p->stream);
}

/* Units [u0, u1) made of many short segments (BatchNorm over N planes of 14x14):
 * one unit's segments lie a whole row of units apart, too short a run for the
 * prefetchers. The units of a chunk are walked together, segment row by segment
 * row (r1 outer, unit inner), so memory is read in long runs. The statistics
 * are taken block row by block row of the statistics view: the blocks of LANES
 * units are reduced together (block_sums_rows) and merged into each unit in the
 * order seg_unit_stats merges them, so the statistics are the same bits. The
 * normalize walks the same way, from L2, with each unit's coefficients computed
 * once; a unit whose planes lie end to end (GroupNorm) is normalized as one run
 * (norm_run_joined), each plane with its channel's scale and shift. */
#define FN_MAX_CHUNK_UNITS FN_STATS_ROWS
#define FN_JOINED_SEGMENTS 64

/* Bytes per unit that a row-wise group keeps in L2 for its normalize (see
 * FN_ROWWISE_BYTES): none when only the statistics are taken (moments, and the
 * statistics pass of rowwise_apart), whose groups then take FN_MAX_CHUNK_UNITS
 * units and read each plane row in runs that many planes long. */
static inline ptrdiff_t TF(rowwise_kept_bytes)(const fn_seg_shape *s, const T *y)
{
    return y ? s->R1 * s->R2 * (ptrdiff_t)sizeof(T) : 0;
}

static void TF(seg_units_rowwise)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                                  ptrdiff_t u0, ptrdiff_t u1)
{
    int rms = p->mode == FN_MODE_RMS;
    fn_seg_shape sv = TF(stats_view)(s);
    double inv_tail = TF(inv_tail)(&sv), inv_total = 1.0 / (double)(s->R1 * s->R2);
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    int wvec = s->wr2 != 0;
    /* per-unit coefficients hold when the parameters do not vary along r1 */
    int per_unit = !w || s->wr1 == 0;
    ptrdiff_t group = fn_rowwise_units(TF(rowwise_kept_bytes)(s, y), FN_MAX_CHUNK_UNITS);
    for (ptrdiff_t g0 = u0; g0 < u1; g0 += group) {
        ptrdiff_t g1 = fn_min(g0 + group, u1), cnt = g1 - g0;
        ptrdiff_t xo[FN_MAX_CHUNK_UNITS], yo[FN_MAX_CHUNK_UNITS], wo[FN_MAX_CHUNK_UNITS];
        fn_unit_offsets(s, g0, cnt, xo, yo, wo);
        if (!p->stats_given) {
            /* every unit has merged as many values as every other: the merge of a
             * segment row is one loop over the units, its divisions done once */
            double am[FN_MAX_CHUNK_UNITS], am2[FN_MAX_CHUNK_UNITS], ac[FN_MAX_CHUNK_UNITS], ref[FN_MAX_CHUNK_UNITS];
            double na = 0;
            for (ptrdiff_t r1 = 0; r1 < sv.R1; r1++)
                for (ptrdiff_t i0 = 0; i0 < sv.R2; i0 += FN_BLOCK) {
                    const T *seg[FN_MAX_CHUNK_UNITS];
                    double s1[FN_MAX_CHUNK_UNITS + LANES], s2[FN_MAX_CHUNK_UNITS + LANES], c0[FN_MAX_CHUNK_UNITS];
                    double bm[FN_MAX_CHUNK_UNITS], bm2[FN_MAX_CHUNK_UNITS];
                    ptrdiff_t m = fn_min(FN_BLOCK, sv.R2 - i0);
                    for (ptrdiff_t j = 0; j < cnt; j++) seg[j] = x + xo[j] + r1 * sv.xr1 + i0;
                    TF(block_sums_rows)(seg, cnt, m, rms, s1, s2, c0);
                    /* means relative to each unit's first shift, as fn_acc holds them */
                    if (na == 0)
                        for (ptrdiff_t j = 0; j < cnt; j++) ref[j] = c0[j];
                    for (ptrdiff_t j = 0; j < cnt; j++)
                        fn_sums_to_stats(s1[j], s2[j], c0[j] - ref[j], m == FN_BLOCK ? 1.0 / FN_BLOCK : inv_tail,
                                         rms, &bm[j], &bm2[j]);
                    TF(col_fold)(na, am, am2, ac, (double)m, bm, bm2, cnt, rms);
                    na += (double)m;
                }
            for (ptrdiff_t j = 0; j < cnt; j++) {
                p->mean[g0 + j] = rms ? 0.0 : ref[j] + (am[j] + ac[j]);
                p->var[g0 + j] = am2[j] * inv_total;
            }
        }
        if (!y) continue;
        double rstd[FN_MAX_CHUNK_UNITS];
        T mh[FN_MAX_CHUNK_UNITS], ml[FN_MAX_CHUNK_UNITS], sc[FN_MAX_CHUNK_UNITS], sh[FN_MAX_CHUNK_UNITS];
        unsigned char fast[FN_MAX_CHUNK_UNITS];
        const double *mean = p->mean + g0, *var = p->var + g0;
        for (ptrdiff_t j = 0; j < cnt; j++) rstd[j] = 1.0 / sqrt(var[j] + p->eps);
        /* parameters that vary along r1 (GroupNorm's per-channel affine): the
         * unit's coefficients without them, each segment's scale and shift
         * formed from them as norm_range forms its own */
        TF(unit_coeffs)(cnt, mean, var, rstd, (double)(s->R1 * s->R2), per_unit ? w : NULL, b, wo,
                        per_unit && w && !wvec, p->stream, mh, ml, sc, sh, fast);
        /* BatchNorm NCHW: the chunk's planes of one sample lie end to end */
        int joined = per_unit && !wvec && s->R2 >= TLANES;
        /* GroupNorm NCHW: a unit's channel planes lie end to end, each with its
         * own scale and shift */
        int unit_joined = !per_unit && !wvec && s->R2 >= TLANES && s->xr1 == s->R2 && s->yr1 == s->R2;
        if (unit_joined) {
            /* units that follow each other in x and y join one run too, up to
             * FN_JOINED_SEGMENTS planes: no partial vectors at the units' ends
             * (GroupNorm (64, 256, 7, 7): a unit of 8 x 49 values is 24.5 vectors) */
            T mhs[FN_JOINED_SEGMENTS], mls[FN_JOINED_SEGMENTS], scs[FN_JOINED_SEGMENTS], shs[FN_JOINED_SEGMENTS];
            const T *rx = x;
            T *ry = y;
            ptrdiff_t run = 0;     /* planes pending from rx, ry; coefficients at [0, run) */
            for (ptrdiff_t j = 0; j < cnt; j++) {
                ptrdiff_t u = g0 + j;
                for (ptrdiff_t r0 = 0; r0 < s->R1; r0 += FN_JOINED_SEGMENTS) {
                    ptrdiff_t nseg = fn_min(FN_JOINED_SEGMENTS, s->R1 - r0);
                    const T *px = x + xo[j] + r0 * s->R2;
                    T *py = y + yo[j] + r0 * s->R2;
                    if (run && (run + nseg > FN_JOINED_SEGMENTS || px != rx + run * s->R2 || py != ry + run * s->R2)) {
                        TF(norm_run_joined)(rx, ry, s->R2, run, mhs, mls, scs, shs);
                        run = 0;
                    }
                    int ok = fast[j];
                    for (ptrdiff_t r = 0; r < nseg; r++) {
                        ptrdiff_t widx = wo[j] + (r0 + r) * s->wr1;
                        mhs[run + r] = mh[j]; mls[run + r] = ml[j];
                        scs[run + r] = (T)(rstd[j] * (double)w[widx]);
                        shs[run + r] = b ? b[widx] : (T)0;
                        ok &= scs[run + r] - scs[run + r] == 0;
                    }
                    if (ok) {
                        if (!run) { rx = px; ry = py; }
                        run += nseg;
                        continue;
                    }
                    if (run) TF(norm_run_joined)(rx, ry, s->R2, run, mhs, mls, scs, shs);
                    run = 0;
                    for (ptrdiff_t r = r0; r < r0 + nseg; r++)
                        TF(seg_norm_part)(s, x, y, p, u / s->K, u % s->K, r, 0, s->R2, mean[j], var[j]);
                }
            }
            if (run) TF(norm_run_joined)(rx, ry, s->R2, run, mhs, mls, scs, shs);
            continue;
        }
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++)
            for (ptrdiff_t j = 0; j < cnt; j++) {
                ptrdiff_t run = joined && fast[j] ? TF(joined_len)(xo, yo, fast, j, cnt, s->R2) : 1;
                if (run > 1) {
                    TF(norm_run_joined)(x + xo[j] + r1 * s->xr1, y + yo[j] + r1 * s->yr1, s->R2, run,
                                        mh + j, ml + j, sc + j, sh + j);
                    j += run - 1;
                    continue;
                }
                ptrdiff_t widx = wo[j] + (per_unit ? 0 : r1 * s->wr1);
                T scs = sc[j], shs = sh[j];
                if (!per_unit && !wvec) {
                    scs = (T)(rstd[j] * (double)w[widx]);
                    shs = b ? b[widx] : (T)0;
                }
                if (!fast[j] || !(scs - scs == 0)) {
                    ptrdiff_t u = g0 + j;
                    TF(seg_norm_part)(s, x, y, p, u / s->K, u % s->K, r1, 0, s->R2, mean[j], var[j]);
                    continue;
                }
                TF(norm_row_fast)(x + xo[j] + r1 * s->xr1, y + yo[j] + r1 * s->yr1, s->R2,
                                  w && wvec ? w + widx : NULL, w && wvec && b ? b + widx : NULL,
                                  mh[j], ml[j], scs, shs);
            }
    }
}

/* Lane l of the vector at a, for rows of 2^shift values spread over a vector:
 * a[l >> shift] (each row's coefficient in all the lanes of its row). */
#ifndef FN_SPREAD_LANE
#define FN_SPREAD_LANE(l, shift) ((l) >> (shift))
#endif
static inline __attribute__((always_inline)) VT TF(spread_rows)(const T *a, int shift)
{
#if FN_HAVE_SHUFFLEVECTOR && FN_VBYTES / FN_T_BYTES >= 4
    VT v = TF(loadt)(a);
#if FN_VBYTES / FN_T_BYTES == 16
    if (shift == 1) return __builtin_shufflevector(v, v, FN_LANES16(FN_SPREAD_LANE, 1));
    if (shift == 2) return __builtin_shufflevector(v, v, FN_LANES16(FN_SPREAD_LANE, 2));
    return __builtin_shufflevector(v, v, FN_LANES16(FN_SPREAD_LANE, 3));
#elif FN_VBYTES / FN_T_BYTES == 8
    if (shift == 1) return __builtin_shufflevector(v, v, FN_LANES8(FN_SPREAD_LANE, 1));
    return __builtin_shufflevector(v, v, FN_LANES8(FN_SPREAD_LANE, 2));
#else
    (void)shift;
    return __builtin_shufflevector(v, v, FN_LANES4(FN_SPREAD_LANE, 1));
#endif
#else
    VT r;
    for (int l = 0; l < TLANES; l++) r[l] = a[l >> shift];
    return r;
#endif
}

/* Rows of n = 2^shift < TLANES values lying end to end in x and in y
 * (LayerNorm or RMSNorm over rows of 2-8 values), TLANES / n rows per vector:
 * each lane takes its row's coefficients (spread_rows) and the parameters are
 * tiled along the vector, the arithmetic per value that of norm_vec_lanes, so
 * the bits are those of the per-row loop. (With one partial-vector store a row,
 * LayerNorm (100000, 8) float32 took 1.3x the time.) The coefficient arrays hold
 * TLANES values past the group's rows (spread_rows loads whole vectors). */
static inline __attribute__((always_inline)) void TF(norm_rows_packed_n)(const T *x, T *y, ptrdiff_t rows, int shift,
                                                                          const T *w, const T *b, const T *mh,
                                                                          const T *ml, const T *sc, const T *sh)
{
    const int n = 1 << shift, k = TLANES >> shift;
    VT wt = {0}, bt = {0};
    for (int l = 0; w && l < TLANES; l++) {
        wt[l] = w[l & (n - 1)];
        if (b) bt[l] = b[l & (n - 1)];
    }
    for (ptrdiff_t j = 0; j < rows; j += k) {
        VT d = (TF(loadt)(x + j * n) - TF(spread_rows)(mh + j, shift)) - TF(spread_rows)(ml + j, shift);
        VT scv = TF(spread_rows)(sc + j, shift), out;
        if (w && b) out = TF(fmadd)(d * scv, wt, bt);
        else if (w) out = d * scv * wt;
        else out = TF(fmadd)(d, scv, TF(spread_rows)(sh + j, shift));
        TF(storet)(y + j * n, out);
    }
}

/* The rows of a lean group that norm_rows_packed_n can take, from the first:
 * a multiple of TLANES / n, or 0 when n is not a power of two below TLANES,
 * the rows are not end to end, a row is not on the fast path, or the weight
 * vectors differ. w, b: the parameters along the row (wvec), else NULL. Always
 * inlined: with the piped lean walk beside its callers GCC called it instead,
 * and LayerNorm (512, 64) ran 4-5 % slower from cache. */
static inline __attribute__((always_inline)) ptrdiff_t TF(norm_rows_packed)(
    const T *x, T *y, ptrdiff_t n, ptrdiff_t cnt, const ptrdiff_t *xo, const ptrdiff_t *yo, const ptrdiff_t *wo,
    const T *w, const T *b, const T *mh, const T *ml, const T *sc, const T *sh, const unsigned char *fast)
{
    if (n < 2 || n >= TLANES || (n & (n - 1)) != 0) return 0;
    ptrdiff_t rows = cnt - cnt % (TLANES / n);
    int ok = rows > 0;
    for (ptrdiff_t j = 0; ok && j < rows; j++)
        ok = fast[j] && xo[j] == xo[0] + j * n && yo[j] == yo[0] + j * n && (!w || wo[j] == wo[0]);
    if (!ok) return 0;
    const T *wr = w ? w + wo[0] : NULL, *br = w && b ? b + wo[0] : NULL;
    if (n == 2) TF(norm_rows_packed_n)(x + xo[0], y + yo[0], rows, 1, wr, br, mh, ml, sc, sh);
    else if (n == 4) TF(norm_rows_packed_n)(x + xo[0], y + yo[0], rows, 2, wr, br, mh, ml, sc, sh);
    else TF(norm_rows_packed_n)(x + xo[0], y + yo[0], rows, 3, wr, br, mh, ml, sc, sh);
    return rows;
}

/* Asks for the lines of n values at y for writing. */
static inline void TF(prefetch_out)(T *y, ptrdiff_t n)
{
    ptrdiff_t yh = (ptrdiff_t)((uintptr_t)y % FN_LINE_BYTES);
    char *yb = (char *)y - yh;
    for (ptrdiff_t o = 0; o < yh + n * (ptrdiff_t)sizeof(T); o += FN_LINE_BYTES) __builtin_prefetch(yb + o, 1, 3);
}

/* Asks for reading, into L1 or into L2 only (to_l2, a constant at every call;
 * see FN_SEG_AHEAD_BYTES), one request per FN_LINE_BYTES of the `bytes` bytes
 * from p. From an unaligned p that may leave out the line the span ends in: the
 * column chunks ask so (see FN_COL_AHEAD_ROW_BYTES; the line-aligned span of
 * prefetch_in, a request more, ran slower there). */
static inline __attribute__((always_inline)) void TF(prefetch_span)(const void *p, ptrdiff_t bytes, int to_l2)
{
    const char *b = (const char *)p;
    for (ptrdiff_t o = 0; o < bytes; o += FN_LINE_BYTES) {
        if (to_l2) __builtin_prefetch(b + o, 0, 2);
        else __builtin_prefetch(b + o, 0, 3);
    }
}

/* Asks for the lines of n values at x for reading (see prefetch_span). */
static inline __attribute__((always_inline)) void TF(prefetch_in)(const T *x, ptrdiff_t n, int to_l2)
{
    ptrdiff_t xh = (ptrdiff_t)((uintptr_t)x % FN_LINE_BYTES);
    TF(prefetch_span)((const char *)x - xh, xh + n * (ptrdiff_t)sizeof(T), to_l2);
}

/* Asks for the lines of n values of x, and of y for writing. */
static inline void TF(prefetch_row)(const T *x, T *y, ptrdiff_t n)
{
    TF(prefetch_in)(x, n, 0);
    TF(prefetch_out)(y, n);
}

/* A group of a piped lean walk (seg_rows_lean_piped): where its rows lie and
 * their sums, taken row by row (lean_take) inside the normalize of the group
 * before, LANES rows reduced together as block_sums_rows reduces them: the same
 * bits; and where the rows of the group after it lie in x (far, far_cnt of
 * them: 0 when not asked for ahead; far_yo and far_wo are fn_unit_offsets'
 * other outputs, unused). */
typedef struct {
    ptrdiff_t cnt, taken, far_cnt;
    const T *xr[FN_UNIT_GROUP];
    ptrdiff_t xo[FN_UNIT_GROUP], yo[FN_UNIT_GROUP], wo[FN_UNIT_GROUP];
    ptrdiff_t far[FN_UNIT_GROUP], far_yo[FN_UNIT_GROUP], far_wo[FN_UNIT_GROUP];
    double s1[FN_UNIT_GROUP + LANES], s2[FN_UNIT_GROUP + LANES], c0[FN_UNIT_GROUP];
    VT a[LANES], q[LANES];
} TF(lean_group);

static inline __attribute__((always_inline)) void TF(lean_init)(TF(lean_group) *lg, const fn_seg_shape *s,
                                                                const T *x, ptrdiff_t g, ptrdiff_t cnt)
{
    lg->cnt = cnt;
    lg->taken = 0;
    fn_unit_offsets(s, g, cnt, lg->xo, lg->yo, lg->wo);
    for (ptrdiff_t j = 0; j < cnt; j++) lg->xr[j] = x + lg->xo[j];
}

/* The lane sums of the group's next row; a full batch of LANES rows (or the
 * group's last) is reduced. */
static inline __attribute__((always_inline)) void TF(lean_take)(TF(lean_group) *lg, ptrdiff_t n, int rms)
{
    const VT tz = {0};
    ptrdiff_t j = lg->taken++, r = j % LANES;
    TF(row_lane_sums)(lg->xr[j], n, rms, &lg->a[r], &lg->q[r], &lg->c0[j]);
    if (r == LANES - 1 || j == lg->cnt - 1) {
        for (ptrdiff_t k = r + 1; k < LANES; k++) { lg->a[k] = tz; lg->q[k] = tz; }
        TF(rows_reduce)(lg->a, lg->q, lg->s1 + (j - r), lg->s2 + (j - r));
    }
}

/* What the normalize of row j of a group does for the next group nx of a piped
 * walk: takes the sums of its row j and asks for the lines of that row's output
 * (and of row j of the group after nx in x, when nx holds where it lies). */
static inline __attribute__((always_inline)) void TF(lean_pipe_row)(TF(lean_group) *nx, ptrdiff_t j, const T *x,
                                                                    T *y, ptrdiff_t n, int rms)
{
    if (j >= nx->cnt) return;
    while (nx->taken <= j) TF(lean_take)(nx, n, rms);
    TF(prefetch_out)(y + nx->yo[j], n);
    if (j < nx->far_cnt) TF(prefetch_in)(x + nx->far[j], n, 0);
}

/* The rows [g, g + cnt) of a lean group from their sums (block_sums_rows') to
 * their outputs: the per-row scalar steps run as loops over the group, and every
 * value is computed as block_stats, finish_stats and norm_range compute it, so
 * the bits are the same as on the other paths. After row j, the normalize
 * takes row j of the next group nx (lean_pipe_row), or, with ahead > 0, asks
 * for the lines of row g + cnt + j, j < ahead, and of its output. n is s->R2,
 * a constant in the walks compiled for one row length (seg_rows_lean_fixed). */
static inline __attribute__((always_inline)) void TF(lean_norm)(const fn_seg_shape *s, const T *x, T *y,
                                                                const fn_norm_args *p, ptrdiff_t g, ptrdiff_t cnt,
                                                                const T *const *xr, const ptrdiff_t *xo,
                                                                const ptrdiff_t *yo, const ptrdiff_t *wo,
                                                                const double *s1, const double *s2, const double *c0,
                                                                ptrdiff_t ahead, TF(lean_group) *nx, const ptrdiff_t n)
{
    int rms = p->mode == FN_MODE_RMS;
    double inv_n = 1.0 / (double)n, eps = p->eps, rstd[FN_UNIT_GROUP];
    double *mean = p->mean + g, *var = p->var + g;
    for (ptrdiff_t j = 0; j < cnt; j++) {
        double m2;
        fn_sums_to_stats(s1[j], s2[j], c0[j], inv_n, rms, &mean[j], &m2);
        var[j] = m2 * inv_n;
    }
    /* statistics only (moments): no 1 / sqrt, a sixth of the time of rows of 64 */
    if (!y) return;
    for (ptrdiff_t j = 0; j < cnt; j++) rstd[j] = 1.0 / sqrt(var[j] + eps);
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    int wvec = s->wr2 != 0;
    T mh[FN_UNIT_GROUP + TLANES], ml[FN_UNIT_GROUP + TLANES], sc[FN_UNIT_GROUP + TLANES], sh[FN_UNIT_GROUP + TLANES];
    unsigned char fast[FN_UNIT_GROUP];
    TF(unit_coeffs)(cnt, mean, var, rstd, (double)n, w, b, wo, w && !wvec, p->stream, mh, ml, sc, sh, fast);
    /* rows of scalar coefficients that are not whole vectors and lie end to end
     * (InstanceNorm's 7 x 7 planes): joined runs, as BatchNorm's planes (a loop
     * of its own: in this one it made LayerNorm (512, 64) 3 % slower) */
    int joined = (!w || !wvec) && n >= TLANES && n % TLANES != 0;
    for (ptrdiff_t j = 0; joined && j < cnt; j++) {
        ptrdiff_t run = fast[j] ? TF(joined_len)(xo, yo, fast, j, cnt, n) : 1;
        if (run > 1) TF(norm_run_joined)(xr[j], y + yo[j], n, run, mh + j, ml + j, sc + j, sh + j);
        else if (fast[j]) TF(norm_row_fast)(xr[j], y + yo[j], n, NULL, NULL, mh[j], ml[j], sc[j], sh[j]);
        else TF(norm_range)(xr[j], y + yo[j], n, mean[j], rstd[j], w ? w + wo[j] : NULL, (w && b) ? b + wo[j] : NULL,
                            wvec, fn_t_safe(mean[j], var[j], (double)n, sizeof(T)), p->stream);
        for (ptrdiff_t k = j; nx && k < j + run; k++) TF(lean_pipe_row)(nx, k, x, y, n, rms);
        j += run - 1;
    }
    ptrdiff_t packed = joined ? 0 : TF(norm_rows_packed)(x, y, n, cnt, xo, yo, wo, w && wvec ? w : NULL, b, mh, ml,
                                                        sc, sh, fast);
    ptrdiff_t pxo[FN_UNIT_GROUP], pyo[FN_UNIT_GROUP], pwo[FN_UNIT_GROUP];
    if (ahead > 0 && !joined && !packed) fn_unit_offsets(s, g + cnt, ahead, pxo, pyo, pwo);
    else ahead = 0;
    for (ptrdiff_t j = packed; !joined && j < cnt; j++) {
        /* ahead > 0 first: with ahead a literal 0 (the piped walk compiled for
         * one row length) GCC warned of pxo[-1] (-Warray-bounds) */
        if (ahead > 0 && j < ahead) TF(prefetch_row)(x + pxo[j], y + pyo[j], n);
        if (nx) TF(lean_pipe_row)(nx, j, x, y, n, rms);
        if (!fast[j]) {
            TF(norm_range)(xr[j], y + yo[j], n, mean[j], rstd[j], w ? w + wo[j] : NULL, (w && b) ? b + wo[j] : NULL,
                           wvec, fn_t_safe(mean[j], var[j], (double)n, sizeof(T)), p->stream);
            continue;
        }
        if (w && wvec && j + 1 < cnt && fast[j + 1] && wo[j + 1] == wo[j]
            && TF(align_head)(y + yo[j], n) == TF(align_head)(y + yo[j + 1], n)) {
            if (ahead > 0 && j + 1 < ahead) TF(prefetch_row)(x + pxo[j + 1], y + pyo[j + 1], n);
            if (nx) TF(lean_pipe_row)(nx, j + 1, x, y, n, rms);
            TF(norm_rows2_fast)(xr[j], xr[j + 1], y + yo[j], y + yo[j + 1], n, w + wo[j], b ? b + wo[j] : NULL,
                                mh + j, ml + j, sc + j);
            j++;
            continue;
        }
        TF(norm_row_fast)(xr[j], y + yo[j], n, w && wvec ? w + wo[j] : NULL, w && wvec && b ? b + wo[j] : NULL,
                          mh[j], ml[j], sc[j], sh[j]);
    }
}

/* A group of at most FN_UNIT_GROUP single-block rows [g, g1), see seg_units: the
 * rows' blocks reduced LANES at a time (block_sums_rows), then lean_norm (ahead:
 * the rows of the next group to ask for; n: s->R2, see lean_norm). */
static inline __attribute__((always_inline)) void TF(seg_rows_lean)(const fn_seg_shape *s, const T *x, T *y,
                                                                    const fn_norm_args *p, ptrdiff_t g, ptrdiff_t g1,
                                                                    ptrdiff_t ahead, const ptrdiff_t n)
{
    ptrdiff_t cnt = g1 - g;
    const T *xr[FN_UNIT_GROUP];
    ptrdiff_t xo[FN_UNIT_GROUP], yo[FN_UNIT_GROUP], wo[FN_UNIT_GROUP];
    fn_unit_offsets(s, g, cnt, xo, yo, wo);
    for (ptrdiff_t j = 0; j < cnt; j++) xr[j] = x + xo[j];
    double s1[FN_UNIT_GROUP + LANES], s2[FN_UNIT_GROUP + LANES], c0[FN_UNIT_GROUP];
    TF(block_sums_rows)(xr, cnt, n, p->mode == FN_MODE_RMS, s1, s2, c0);
    TF(lean_norm)(s, x, y, p, g, cnt, xr, xo, yo, wo, s1, s2, c0, ahead, NULL, n);
}

/* The lean groups of single-block rows [u0, u1), `group` rows each, one after
 * the other; with ask_ahead (FN_LEAN_AHEAD), each group's normalize asks for
 * the next group's rows (n: s->R2, see lean_norm). */
static inline __attribute__((always_inline)) void TF(seg_rows_lean_groups)(const fn_seg_shape *s, const T *x, T *y,
                                                                           const fn_norm_args *p, ptrdiff_t u0,
                                                                           ptrdiff_t u1, ptrdiff_t group,
                                                                           int ask_ahead, const ptrdiff_t n)
{
    for (ptrdiff_t g = u0; g < u1; g += group) {
        ptrdiff_t g1 = fn_min(g + group, u1);
        TF(seg_rows_lean)(s, x, y, p, g, g1, ask_ahead && y ? fn_min(g1 + group, u1) - g1 : 0, n);
    }
}

/* seg_rows_lean_groups compiled for each row length fn_lean_fixed names (the
 * caller has checked it: no other length reaches this function). */
__attribute__((noinline)) static void TF(seg_rows_lean_fixed)(const fn_seg_shape *s, const T *x, T *y,
                                                              const fn_norm_args *p, ptrdiff_t u0, ptrdiff_t u1,
                                                              ptrdiff_t group, int ask_ahead)
{
#define FN_LEAN_GROUPS_N(n) TF(seg_rows_lean_groups)(s, x, y, p, u0, u1, group, ask_ahead, n)
    FN_FIXED_ROW_CALL(s->R2 * (ptrdiff_t)sizeof(T), FN_LEAN_GROUPS_N, (void)0);
#undef FN_LEAN_GROUPS_N
}

/* Single-block rows [u0, u1) in groups of `group` rows, as seg_rows_lean walks
 * them, but with each group's sums taken inside the normalize of the group
 * before (lean_pipe_row), so the core reads the next rows while it writes the
 * current ones, as a copy does (see FN_LEAN_AHEAD_BYTES); with far, it also
 * asks for the rows of x two groups ahead (n: s->R2, see lean_norm). y != NULL. */
static inline __attribute__((always_inline)) void TF(seg_rows_lean_piped_n)(const fn_seg_shape *s, const T *x, T *y,
                                                                            const fn_norm_args *p, ptrdiff_t u0,
                                                                            ptrdiff_t u1, ptrdiff_t group, int far,
                                                                            const ptrdiff_t n)
{
    int rms = p->mode == FN_MODE_RMS;
    TF(lean_group) groups[2];
    TF(lean_group) *cur = &groups[0], *nx = &groups[1];
    TF(lean_init)(cur, s, x, u0, fn_min(group, u1 - u0));
    TF(block_sums_rows)(cur->xr, cur->cnt, n, rms, cur->s1, cur->s2, cur->c0);
    for (ptrdiff_t g = u0; g < u1; g += group) {
        ptrdiff_t g1 = g + cur->cnt;
        int has_next = g1 < u1;
        if (has_next) {
            TF(lean_init)(nx, s, x, g1, fn_min(group, u1 - g1));
            ptrdiff_t g2 = g1 + nx->cnt;
            nx->far_cnt = far && g2 < u1 ? fn_min(group, u1 - g2) : 0;
            if (nx->far_cnt) fn_unit_offsets(s, g2, nx->far_cnt, nx->far, nx->far_yo, nx->far_wo);
        }
        TF(lean_norm)(s, x, y, p, g, cur->cnt, cur->xr, cur->xo, cur->yo, cur->wo, cur->s1, cur->s2, cur->c0, 0,
                      has_next ? nx : NULL, n);
        if (!has_next) break;
        while (nx->taken < nx->cnt) TF(lean_take)(nx, n, rms);
        TF(block_sums_check)(nx->xr, nx->cnt, n, rms, nx->s1, nx->s2, nx->c0);
        TF(lean_group) *t = cur;
        cur = nx;
        nx = t;
    }
}

/* seg_rows_lean_piped_n, compiled apart for rows of 128 and 256 bytes (see
 * fn_lean_fixed). A function of its own: inlined into seg_units with the other
 * walks, the piped walk made LayerNorm (512, 64) 10 % slower from cache. */
__attribute__((noinline)) static void TF(seg_rows_lean_piped)(const fn_seg_shape *s, const T *x, T *y,
                                                              const fn_norm_args *p, ptrdiff_t u0, ptrdiff_t u1,
                                                              ptrdiff_t group, int far)
{
    ptrdiff_t row_bytes = s->R2 * (ptrdiff_t)sizeof(T);
    if (row_bytes == 128) TF(seg_rows_lean_piped_n)(s, x, y, p, u0, u1, group, far, 128 / sizeof(T));
    else if (row_bytes == 256) TF(seg_rows_lean_piped_n)(s, x, y, p, u0, u1, group, far, 256 / sizeof(T));
    else TF(seg_rows_lean_piped_n)(s, x, y, p, u0, u1, group, far, s->R2);
}

/* The rows of a pre-norm residual step (add_rows): row u of the normalized
 * input is sum = x + r, written to `sum` (rows at the seg shape's x offsets) as
 * it is computed. */
typedef struct { const T *x, *r; ptrdiff_t xs, rs; } TF(add_in);

/* sum[i] = x[i] + r[i] over [i0, n) of row u */
static inline void TF(add_part)(const TF(add_in) *ad, ptrdiff_t u, T *sum, ptrdiff_t i0, ptrdiff_t n)
{
    const T *xr = ad->x + u * ad->xs, *rr = ad->r + u * ad->rs;
#pragma omp simd
    for (ptrdiff_t i = i0; i < n; i++) sum[i] = xr[i] + rr[i];
}

/* acc_four of the four vectors of row u's sum from i on, stored to sum too. */
static inline __attribute__((always_inline)) void TF(acc_four_add)(TF(row_acc) *s, const TF(add_in) *ad, ptrdiff_t u,
                                                                   T *sum, ptrdiff_t i, VT cv)
{
    const T *xr = ad->x + u * ad->xs + i, *rr = ad->r + u * ad->rs + i;
    VT v[4];
    for (int k = 0; k < 4; k++) {
        v[k] = TF(loadt)(xr + k * TLANES) + TF(loadt)(rr + k * TLANES);
        TF(storet)(sum + i + k * TLANES, v[k]);
    }
    TF(acc_dev4)(s, v[0] - cv, v[1] - cv, v[2] - cv, v[3] - cv);
}

/* Feeds x[i .. n) (four vectors at a time from i on, where the caller's steps
 * left off) and returns the row's sums as dev_sums / sq_sum return them. */
static inline __attribute__((always_inline)) void TF(acc_finish)(TF(row_acc) *s, const T *x, ptrdiff_t i, ptrdiff_t n,
                                                                 T c, int rms, double *s1, double *s2)
{
    TF(acc_rest)(s, x, i, n, c);
    TF(sums_checked)((s->a0 + s->a1) + (s->a2 + s->a3), (s->q0 + s->q1) + (s->q2 + s->q3), x, n, c, rms, s1, s2);
}

/* Row u's statistics from its sums and its norm_range coefficients, as
 * seg_rows_lean computes them. */
typedef struct { T mh, ml, sc, sh; double rstd; unsigned char fast; } TF(row_coef);

static inline __attribute__((always_inline)) TF(row_coef) TF(row_coefs_of)(const fn_norm_args *p, ptrdiff_t u,
                                                                            ptrdiff_t n, ptrdiff_t wo, int wrow)
{
    TF(row_coef) r;
    r.rstd = 1.0 / sqrt(p->var[u] + p->eps);
    TF(unit_coeffs)(1, &p->mean[u], &p->var[u], &r.rstd, (double)n, (const T *)p->w, (const T *)p->b, &wo, wrow, 0,
                    &r.mh, &r.ml, &r.sc, &r.sh, &r.fast);
    return r;
}

static inline __attribute__((always_inline)) TF(row_coef) TF(row_coefs)(const fn_norm_args *p, ptrdiff_t u, ptrdiff_t n,
                                                                         ptrdiff_t wo, int wrow, double s1, double s2,
                                                                         double c0)
{
    double m2, inv_n = 1.0 / (double)n;
    fn_sums_to_stats(s1, s2, c0, inv_n, p->mode == FN_MODE_RMS, &p->mean[u], &m2);
    p->var[u] = m2 * inv_n;
    return TF(row_coefs_of)(p, u, n, wo, wrow);
}

/* Merges block [0, m) of a row at blk into tot, as acc_one_block merges it: the
 * lane sums of its values before i are in acc (its shift c), the rest are fed
 * here; acc is cleared for the next block. */
static inline __attribute__((always_inline)) void TF(pipe_block_merge)(fn_acc *tot, TF(row_acc) *acc, const T *blk,
                                                                       ptrdiff_t i, ptrdiff_t m, T c, int rms,
                                                                       double inv_tail)
{
    const VT tz = {0};
    double s1, s2, off = 0, m2;
    TF(acc_finish)(acc, blk, i, m, c, rms, &s1, &s2);
    if (rms) m2 = s2;
    else fn_sums_to_stats(s1, s2, 0.0, m == FN_BLOCK ? 1.0 / FN_BLOCK : inv_tail, 0, &off, &m2);
    TF(acc_block)(tot, (double)m, rms ? 0.0 : (double)c, off, m2, rms);
    *acc = (TF(row_acc)){tz, tz, tz, tz, tz, tz, tz, tz};
}

/* Rows [u0, u1) of FN_REALIGN_BYTES to FN_PIPED_MAX_ROW_BYTES, y aligned to
 * sizeof(T): the statistics of row u + 1 are taken in the loop that normalizes
 * row u, four vectors of each per step (a row of several blocks: each block's
 * sums merged as seg_unit_stats merges them when the steps reach its end), so
 * the core reads the next row from memory while it writes the current one, as a
 * copy does. Taking the statistics of a group of
 * rows and then normalizing the group (seg_rows_lean) alternates a read-only
 * phase with a read-write one: LayerNorm (8192, 768) ran at 86-88 % of copy,
 * this loop at 98 %. Rows whose outputs lie end to end are written as one run,
 * so every store but the first and the last is a full vector at a vector
 * boundary (streamed when p->stream): the vector that spans rows u and u + 1 is
 * computed twice, once with each row's coefficients and its loads masked to that
 * row's lanes, and the two are joined. Row by row, an output not at a vector
 * boundary (NumPy's large arrays start 16 bytes into a page) takes a partial
 * store at both ends of every row, the line between two rows is written twice,
 * and streaming leaves that line to a read for ownership from memory (LayerNorm
 * (8192, 768) float64 into such an out= ran 12 % slower, float32 5 %). Every
 * value is computed as seg_rows_lean computes it. */
static void TF(seg_rows_piped)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                               ptrdiff_t u0, ptrdiff_t u1, const TF(add_in) *add)
{
    const VT tz = {0};
    int rms = p->mode == FN_MODE_RMS, stream = p->stream;
    ptrdiff_t n = s->R2;
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    int wvec = s->wr2 != 0, wrow = w && !wvec;
    ptrdiff_t xo, yo, wo, xn_o = 0, yn_o = 0, wn_o = 0;
    fn_unit_offsets(s, u0, 1, &xo, &yo, &wo);
    double s1, s2;
    /* rows of several blocks: their statistics merged block by block, as
     * seg_unit_stats merges them */
    int blocks = n > FN_BLOCK;
    double inv_tail = TF(inv_tail)(s), inv_total = 1.0 / (double)n;
    if (add) TF(add_part)(add, u0, (T *)x + xo, 0, n);
    T c = rms ? (T)0 : TF(shift_of)(x[xo]);
    TF(row_coef) cur;
    if (blocks) {
        TF(seg_unit_stats)(s, x + xo, rms, inv_tail, inv_total, &p->mean[u0], &p->var[u0]);
        cur = TF(row_coefs_of)(p, u0, n, wo, wrow);
    } else {
        TF(row_acc) acc = {tz, tz, tz, tz, tz, tz, tz, tz};
        TF(acc_finish)(&acc, x + xo, 0, n, c, rms, &s1, &s2);
        cur = TF(row_coefs)(p, u0, n, wo, wrow, s1, s2, (double)c);
    }
    /* values of row u before `start` are written already (by the vector joined
     * with row u - 1) */
    ptrdiff_t start = 0;
    int head = 1;
    for (ptrdiff_t u = u0; u < u1; u++) {
        const T *xr = x + xo;
        T *yr = y + yo;
        const T *wv = w && wvec ? w + wo : NULL, *bv = w && wvec && b ? b + wo : NULL;
        int has_next = u + 1 < u1;
        const T *xn = NULL;
        T cn = 0;
        if (has_next) {
            ptrdiff_t xo1, yo1, wo1;
            fn_unit_offsets(s, u + 1, 1, &xo1, &yo1, &wo1);
            xn_o = xo1; yn_o = yo1; wn_o = wo1;
            xn = x + xn_o;
            cn = rms ? (T)0 : TF(shift_of)(add ? add->x[(u + 1) * add->xs] + add->r[(u + 1) * add->rs] : xn[0]);
        }
        TF(row_acc) acc = {tz, tz, tz, tz, tz, tz, tz, tz};
        /* the next row's values before `is` are in acc or tot: those of its
         * block [b0, b1) in acc (shift cb), the blocks before in tot */
        fn_acc tot = {0, 0, 0};
        ptrdiff_t is = 0, b0 = 0, b1 = fn_min(n, FN_BLOCK);
        T cb = cn;
        if (!cur.fast) {
            /* the double-precision path, on its own */
            TF(norm_range)(xr, yr, n, p->mean[u], cur.rstd, w ? w + wo : NULL, (w && b) ? b + wo : NULL, wvec,
                           fn_t_safe(p->mean[u], p->var[u], (double)n, sizeof(T)), stream);
            head = 1;
        } else {
            const VT mhv = tz + cur.mh, mlv = tz + cur.ml, scv = tz + cur.sc, shv = tz + cur.sh;
            ptrdiff_t i = start;
            if (head) {
                i = TF(vec_head)(yr);
                if (i) TF(norm_part_vec)(xr, wv, bv, yr, 0, i, cur.mh, mhv, mlv, scv, shv);
            }
#define FN_PIPE_STEP(cond, STATS)                                                                     \
    for (; i + 4 * TLANES <= n && (cond); i += 4 * TLANES, is += 4 * TLANES) {                        \
        STATS;                                                                                        \
        for (int r = 0; r < 4; r++)                                                                   \
            TF(store_vec)(yr + i + r * TLANES, TF(norm_vec)(xr, wv, bv, i + r * TLANES, mhv, mlv, scv, shv), \
                          stream);                                                                    \
    }
            if (has_next) {
#ifdef FN_REALIGNED
                int ra = !add && FN_REALIGNED(xn, n);
                ptrdiff_t off = (ptrdiff_t)((uintptr_t)xn % FN_VBYTES) / (ptrdiff_t)sizeof(T), end = off + n;
                const T *base = xn - off;
                __m512i idx = TF(ra_index)(off);
                VT prev = ra ? TF(load_lanes)(base, off, TLANES, (T)0) : tz;
#endif
                for (;;) {
                    const VT cnv = tz + cb;
                    if (add)
                        FN_PIPE_STEP(is + 4 * TLANES <= b1, TF(acc_four_add)(&acc, add, u + 1, (T *)xn, is, cnv))
#ifdef FN_REALIGNED
                    /* while the vector after the fourth ends inside the row; a
                     * full block ends on a step, so prev stays the next one's */
                    if (ra)
                        FN_PIPE_STEP(is + 4 * TLANES <= b1 && is + 5 * TLANES <= end,
                                     TF(acc_four_ra)(&acc, base, is / TLANES, 0, idx, &prev, cnv))
#endif
                    if (!add) FN_PIPE_STEP(is + 4 * TLANES <= b1, TF(acc_four)(&acc, xn + is, cnv))
                    /* the last block, or this row's normalize ended first */
                    if (b1 == n || is < b1) break;
                    TF(pipe_block_merge)(&tot, &acc, xn + b0, is - b0, b1 - b0, cb, rms, inv_tail);
                    b0 = b1;
                    b1 = fn_min(n, b1 + FN_BLOCK);
                    cb = rms ? (T)0
                             : TF(shift_of)(add ? add->x[(u + 1) * add->xs + b0] + add->r[(u + 1) * add->rs + b0]
                                                : xn[b0]);
                }
            }
#undef FN_PIPE_STEP
            for (; i + TLANES <= n; i += TLANES)
                TF(store_vec)(yr + i, TF(norm_vec)(xr, wv, bv, i, mhv, mlv, scv, shv), stream);
            start = i;
        }
        if (!has_next) {
            if (cur.fast && start < n)
                TF(norm_part_vec)(xr, wv, bv, yr, start, n - start, cur.mh, tz + cur.mh, tz + cur.ml, tz + cur.sc,
                                  tz + cur.sh);
            break;
        }
        if (add) TF(add_part)(add, u + 1, (T *)xn, is, n);
        TF(row_coef) nxt;
        if (blocks) {
            TF(pipe_block_merge)(&tot, &acc, xn + b0, is - b0, b1 - b0, cb, rms, inv_tail);
            for (b0 = b1; b0 < n; b0 += FN_BLOCK)
                TF(acc_one_block)(&tot, xn + b0, fn_min(FN_BLOCK, n - b0), rms, inv_tail);
            TF(finish_stats)(&tot, inv_total, rms, &p->mean[u + 1], &p->var[u + 1]);
            nxt = TF(row_coefs_of)(p, u + 1, n, wn_o, wrow);
        } else {
            TF(acc_finish)(&acc, xn, is, n, cn, rms, &s1, &s2);
            nxt = TF(row_coefs)(p, u + 1, n, wn_o, wrow, s1, s2, (double)cn);
        }
        if (cur.fast) {
            ptrdiff_t k = n - start;
            int joined = nxt.fast && yn_o == yo + n && (!wvec || !w || wn_o == wo);
            if (k && joined) {
                /* lanes [k, TLANES) hold the first TLANES - k values of row u + 1 */
                const T *wn = w && wvec ? w + wn_o : NULL, *bn = w && wvec && b ? b + wn_o : NULL;
                VT lo = TF(norm_vec_n)(xr, wv, bv, start, k, cur.mh, tz + cur.mh, tz + cur.ml, tz + cur.sc,
                                       tz + cur.sh);
                VT hi = TF(norm_vec_lanes)(xn, wn, bn, -k, k, TLANES, nxt.mh, tz + nxt.mh, tz + nxt.ml, tz + nxt.sc,
                                           tz + nxt.sh);
                TF(store_vec)(yr + start, TF(join)(lo, hi, k), stream);
                start = TLANES - k;
                head = 0;
            } else {
                if (k)
                    TF(norm_part_vec)(xr, wv, bv, yr, start, k, cur.mh, tz + cur.mh, tz + cur.ml, tz + cur.sc,
                                      tz + cur.sh);
                start = 0;
                head = !joined;
            }
        }
        cur = nxt;
        xo = xn_o; yo = yn_o; wo = wn_o;
    }
}

/* Block t (of nb per segment) of the unit at xu into acc, in seg_unit_stats's order. */
static inline void TF(pipe_stats_block)(const fn_seg_shape *s, const T *xu, ptrdiff_t t, ptrdiff_t nb, int rms,
                                        double inv_tail, fn_acc *acc)
{
    ptrdiff_t i0 = (t % nb) * FN_BLOCK;
    TF(acc_one_block)(acc, xu + (t / nb) * s->xr1 + i0, fn_min(FN_BLOCK, s->R2 - i0), rms, inv_tail);
}

/* Units of a third to a half of L1 each, or up to FN_PIPE_UNIT_BYTES in inputs
 * that stay in cache, [u0, u1): the statistics of unit u + 1 are
 * taken block by block between the normalize blocks of unit u, so each thread
 * streams its next input from memory while it writes its current output, as a
 * copy does, instead of alternating a read-only phase with a write phase. The
 * blocks are merged in the same order as seg_unit_stats merges them. */
static void TF(seg_units_pipelined)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                                    ptrdiff_t u0, ptrdiff_t u1)
{
    int rms = p->mode == FN_MODE_RMS;
    fn_seg_shape sv = TF(stats_view)(s);
    double inv_tail = TF(inv_tail)(&sv), inv_total = 1.0 / (double)(s->R1 * s->R2);
    ptrdiff_t nb = (s->R2 + FN_BLOCK - 1) / FN_BLOCK, nbv = (sv.R2 + FN_BLOCK - 1) / FN_BLOCK;
    TF(seg_unit_stats)(&sv, x + fn_unit_x_offset(s, u0), rms, inv_tail, inv_total, &p->mean[u0], &p->var[u0]);
    for (ptrdiff_t u = u0; u < u1; u++) {
        ptrdiff_t a = u / s->K, k = u % s->K, un = u + 1;
        const T *xn = un < u1 ? x + fn_unit_x_offset(s, un) : NULL;
        double mean = p->mean[u], var = p->var[u];
        fn_acc acc = {0, 0, 0};
        /* the next unit's blocks (of the statistics view) one after each
         * normalize block, the ones left after the last */
        ptrdiff_t taken = 0, total = xn ? sv.R1 * nbv : 0;
        for (ptrdiff_t r1 = 0; r1 < s->R1; r1++)
            for (ptrdiff_t j = 0; j < nb; j++) {
                ptrdiff_t i0 = j * FN_BLOCK;
                TF(seg_norm_part)(s, x, y, p, a, k, r1, i0, fn_min(i0 + FN_BLOCK, s->R2), mean, var);
                if (taken < total) TF(pipe_stats_block)(&sv, xn, taken++, nbv, rms, inv_tail, &acc);
            }
        while (taken < total) TF(pipe_stats_block)(&sv, xn, taken++, nbv, rms, inv_tail, &acc);
        if (xn) TF(finish_stats)(&acc, inv_total, rms, &p->mean[un], &p->var[un]);
    }
}

/* 1 when seg_norm walks the units row-wise (seg_units_rowwise): units of
 * segments too short for the prefetchers, whatever the unit's size (7 x 7
 * planes spend more on the per-segment steps than on memory). With too little
 * L2 for its groups, seg_norm takes the statistics row-wise in a pass of their
 * own (see FN_ROWWISE_BYTES). */
static inline int TF(seg_rowwise)(const fn_seg_shape *s, const fn_norm_args *p)
{
    return !p->stats_given && s->R1 > 1 && s->K > 1 && s->R2 >= 1
           && s->R2 * (ptrdiff_t)sizeof(T) < FN_SHORT_SEGMENT_BYTES;
}

/* 1 when seg_norm takes a row-wise walk's statistics in a pass of their own and
 * then normalizes as inference does (see FN_ROWWISE_BYTES): with less L2 than
 * two groups, inputs of at least 4x that L2 (from cache, (8, 256, 14, 14) ran
 * 0.96-0.98x as fast apart), planes of at least a vector (the normalize joins
 * the planes of neighbouring channels; 2 x 2 planes ran 0.87-0.95x), and
 * parameters per unit (a GroupNorm unit's channels would be normalized plane by
 * plane: 0.48x for (64, 256, 7, 7)). Against the row-wise walk (AMD EPYC Zen 3,
 * 512 KiB L2, 2026-12-01; both builds whole, in one process, 21-31 rounds in
 * random order): training BatchNorm (64, 256, 14, 14) 1.12x faster at two
 * threads and at one (shorter runs: 0.94-1.25x), (128, 256, 7, 7) 1.13x at two;
 * (32, 128, 28, 28) 0.97-1.21x in shorter runs. Same bits. */
static inline int TF(rowwise_apart)(const fn_seg_shape *s, const T *y, const fn_norm_args *p)
{
    size_t l2 = fn_l2_bytes();
    return y && TF(seg_rowwise)(s, p) && l2 < 2 * (size_t)FN_ROWWISE_BYTES && s->R2 >= TLANES
           && (double)(s->A * s->K) * (double)(s->R1 * s->R2) * sizeof(T) >= 4.0 * (double)l2
           && (!p->w || s->wr1 == 0);
}

/* 1 when seg_units walks the rows as seg_rows_piped: rows of at most a block
 * only in inputs of FN_PIPED_MIN_BYTES and more (from cache their group walk
 * is faster: LayerNorm (256, 1024), in L2: 24 against 48 us); longer rows, up
 * to FN_PIPED_MAX_ROW_BYTES, in inputs of any size, instead of the tiled, the
 * pipelined and the group walks (see FN_PIPED_MIN_BYTES, FN_PIPED_MAX_ROW_BYTES). */
static inline int TF(rows_piped)(const fn_seg_shape *s, const T *y, const fn_norm_args *p)
{
    return s->R1 == 1 && s->R2 * (ptrdiff_t)sizeof(T) <= FN_PIPED_MAX_ROW_BYTES
           && s->R2 * (ptrdiff_t)sizeof(T) >= FN_REALIGN_BYTES && y
           && !p->stats_given && (uintptr_t)y % sizeof(T) == 0
           && (s->R2 > FN_BLOCK || (double)(s->A * s->K) * (double)s->R2 * sizeof(T) >= FN_PIPED_MIN_BYTES);
}

/* Units [u0, u1): first all statistics, then all normalizations, so the
 * dependency chains (reduce -> mean/rstd -> normalize) of neighbouring units
 * overlap in the out-of-order core instead of running one after another. A
 * group's normalize asks for the next group's lines (see FN_SEG_AHEAD_BYTES). */
static void TF(seg_units)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                          ptrdiff_t u0, ptrdiff_t u1, int lean_mode)
{
    int rms = p->mode == FN_MODE_RMS;
    fn_seg_shape sv = TF(stats_view)(s);
    double inv_tail = TF(inv_tail)(&sv), inv_total = 1.0 / (double)(s->R1 * s->R2);
    /* only as many units as stay in L1 together: a group that spills would make
     * the normalize pass re-read from L2 */
    ptrdiff_t unit_bytes = s->R1 * s->R2 * (ptrdiff_t)sizeof(T);
    ptrdiff_t group = fn_max(1, fn_min(FN_UNIT_GROUP, FN_L1_BYTES / fn_max(1, unit_bytes)));
    /* single-block rows (LayerNorm over up to FN_BLOCK values, and their moments)
     * take the lean path: no block merges, and the per-row scalar steps (mean,
     * variance, 1/sqrt, the safety test) run as vector loops over the group
     * instead of one dependency chain per row (moments of rows of 64 values 1.6x
     * faster than through seg_unit_stats). The arithmetic is that of block_stats
     * + finish_stats + seg_norm_part, so the results are the same bits. */
    int lean = s->R1 == 1 && s->R2 >= 1 && s->R2 <= FN_BLOCK && !p->stats_given;
    if (TF(rows_piped)(s, y, p)) {
        TF(seg_rows_piped)(s, x, y, p, u0, u1, NULL);
        return;
    }
    if (lean && y && lean_mode >= FN_LEAN_PIPED) {
        TF(seg_rows_lean_piped)(s, x, y, p, u0, u1, group, lean_mode == FN_LEAN_PIPED_FAR);
        return;
    }
    if (lean) {
        if (fn_lean_fixed(s->R2 * (ptrdiff_t)sizeof(T)))
            TF(seg_rows_lean_fixed)(s, x, y, p, u0, u1, group, lean_mode == FN_LEAN_AHEAD);
        else TF(seg_rows_lean_groups)(s, x, y, p, u0, u1, group, lean_mode == FN_LEAN_AHEAD, s->R2);
        return;
    }
    for (ptrdiff_t g = u0; g < u1; g += group) {
        ptrdiff_t g1 = fn_min(g + group, u1);
        if (!p->stats_given)
            for (ptrdiff_t u = g; u < g1; u++)
                TF(seg_unit_stats)(&sv, x + fn_unit_x_offset(s, u), rms, inv_tail, inv_total, &p->mean[u], &p->var[u]);
        if (y)
            for (ptrdiff_t u = g; u < g1; u++) {
                ptrdiff_t a = s->K == 1 ? u : u / s->K, k = u - a * s->K;
                ptrdiff_t un = u + (g1 - g);
                int ahead = !p->stats_given && un < u1 && unit_bytes <= FN_SEG_AHEAD_BYTES;
                const T *xn = ahead ? x + fn_unit_x_offset(s, un) : NULL;
                for (ptrdiff_t r1 = 0; r1 < s->R1; r1++) {
                    if (ahead) TF(prefetch_in)(xn + r1 * s->xr1, s->R2, 1);
                    TF(seg_norm_part)(s, x, y, p, a, k, r1, 0, s->R2, p->mean[u], p->var[u]);
                }
            }
    }
}

/* Few large units: every (unit, segment, block) is an item of its own, partials go
 * to a scratch array and are folded per unit in the serial path's order. */
static int TF(seg_split)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p, int nt)
{
    ptrdiff_t U = s->A * s->K;
    int rms = p->mode == FN_MODE_RMS;
    if (!p->stats_given) {
        fn_seg_shape sv = TF(stats_view)(s);
        ptrdiff_t nb = (sv.R2 + FN_BLOCK - 1) / FN_BLOCK, per_unit = sv.R1 * nb, n_items = U * per_unit;
        ptrdiff_t chunk = fn_chunk_items(n_items, FN_BLOCK, nt);
        double inv_tail = TF(inv_tail)(&sv), inv_total = 1.0 / (double)(s->R1 * s->R2);
        double *part = (double *)fn_scratch_alloc(sizeof(double) * 3 * (size_t)n_items);
        if (!part) return FN_ENOMEM;
        FN_PARALLEL_SHARES(nt, (n_items + chunk - 1) / chunk, c,
            for (ptrdiff_t it = c * chunk; it < fn_min(n_items, (c + 1) * chunk); it++) {
                ptrdiff_t u = it / per_unit, rem = it % per_unit, r1 = rem / nb, i0 = (rem % nb) * FN_BLOCK;
                const T *seg = x + fn_unit_x_offset(s, u) + r1 * sv.xr1;
                ptrdiff_t m = fn_min(FN_BLOCK, sv.R2 - i0);
                TF(block_stats)(seg + i0, m, m == FN_BLOCK ? 1.0 / FN_BLOCK : inv_tail, rms,
                                &part[3 * it], &part[3 * it + 1], &part[3 * it + 2]);
            });
        for (ptrdiff_t u = 0; u < U; u++) {
            fn_acc acc = {0, 0, 0};
            for (ptrdiff_t j = 0; j < per_unit; j++) {
                ptrdiff_t it = u * per_unit + j, i0 = (j % nb) * FN_BLOCK;
                TF(acc_block)(&acc, (double)fn_min(FN_BLOCK, sv.R2 - i0), part[3 * it], part[3 * it + 1],
                              part[3 * it + 2], rms);
            }
            TF(finish_stats)(&acc, inv_total, rms, &p->mean[u], &p->var[u]);
        }
        fn_scratch_free(part);
    }
    if (y) {
        ptrdiff_t nb = (s->R2 + FN_BLOCK - 1) / FN_BLOCK, per_unit = s->R1 * nb, n_items = U * per_unit;
        ptrdiff_t chunk = fn_chunk_items(n_items, FN_BLOCK, nt), nchunks = (n_items + chunk - 1) / chunk;
        /* each thread starts with what it read last (see col_split) */
        int mirror = !p->stats_given;
        FN_PARALLEL_SHARES(nt, nchunks, c0,
            ptrdiff_t c = mirror ? fn_share_mirror(c0, nchunks, nt) : c0;
            for (ptrdiff_t it = c * chunk; it < fn_min(n_items, (c + 1) * chunk); it++) {
                ptrdiff_t u = it / per_unit, rem = it % per_unit, r1 = rem / nb, i0 = (rem % nb) * FN_BLOCK;
                ptrdiff_t a = u / s->K, k = u % s->K;
                TF(seg_norm_part)(s, x, y, p, a, k, r1, i0, fn_min(i0 + FN_BLOCK, s->R2),
                                  p->mean[u], p->var[u]);
            }
        );
    }
    return FN_OK;
}

/* Statistics of units taken one block at a time, in seg_unit_stats's order, so
 * that a walk can spread them between its normalize steps (seg_units_tiled). */
typedef struct {
    ptrdiff_t u, i0; /* the unit, and the first value of its next block */
    fn_acc acc;
} TF(stats_cursor);

/* Takes the next block of c's unit (R1 == 1); after its last, stores the unit's
 * statistics and moves c to the next unit. Returns the values read. */
static inline ptrdiff_t TF(cursor_step)(const fn_seg_shape *s, const T *x, const fn_norm_args *p,
                                        TF(stats_cursor) *c, int rms, double inv_tail, double inv_total)
{
    ptrdiff_t m = fn_min(FN_BLOCK, s->R2 - c->i0);
    TF(acc_one_block)(&c->acc, x + fn_unit_x_offset(s, c->u) + c->i0, m, rms, inv_tail);
    c->i0 += m;
    if (c->i0 == s->R2) {
        TF(finish_stats)(&c->acc, inv_total, rms, &p->mean[c->u], &p->var[c->u]);
        c->u++;
        c->i0 = 0;
        c->acc = (fn_acc){0, 0, 0};
    }
    return m;
}

/* Rows longer than a block with weight and bias vectors (LayerNorm over 4096 values,
 * in inputs that seg_rows_piped does not take): [u0, u1) in tiles of rows that fit
 * L2 together. Each tile is normalized slice by
 * slice of columns, each slice for every row of the tile, so the slices of w and b
 * stay in L1 instead of being re-read from L2 for every row: with x and w and b
 * all missing L1, the loads of the normalize hold the fill buffers that the memory
 * streams need. (With a weight alone, RMSNorm, the pipelined walk is as fast.)
 * The statistics of the next tile are taken block by block between the normalize
 * steps, as many values read as written, so the thread streams its next input
 * from memory while it writes its output, as a copy does (a read-only phase, then
 * a write phase, ran at 0.95 of a copy's speed instead of 1.1). Every value is
 * computed as seg_units computes it. */
static void TF(seg_units_tiled)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                                ptrdiff_t u0, ptrdiff_t u1)
{
    int rms = p->mode == FN_MODE_RMS;
    double inv_tail = TF(inv_tail)(s), inv_total = 1.0 / (double)s->R2;
    ptrdiff_t tile = fn_max(1, FN_TILE_BYTES / (s->R2 * (ptrdiff_t)sizeof(T)));
    ptrdiff_t cols = FN_TILE_PARAM_BYTES / (ptrdiff_t)sizeof(T);
    TF(stats_cursor) c = {u0, 0, {0, 0, 0}};
    while (c.u < fn_min(u0 + tile, u1)) TF(cursor_step)(s, x, p, &c, rms, inv_tail, inv_total);
    for (ptrdiff_t g = u0; g < u1; g += tile) {
        ptrdiff_t g1 = fn_min(g + tile, u1), next_end = fn_min(g1 + tile, u1);
        ptrdiff_t written = 0, read = 0;
        for (ptrdiff_t i0 = 0; i0 < s->R2; i0 += cols) {
            ptrdiff_t i1 = fn_min(i0 + cols, s->R2);
            for (ptrdiff_t u = g; u < g1; u++) {
                TF(seg_norm_part)(s, x, y, p, u / s->K, u % s->K, 0, i0, i1, p->mean[u], p->var[u]);
                written += i1 - i0;
                while (c.u < next_end && read < written) read += TF(cursor_step)(s, x, p, &c, rms, inv_tail, inv_total);
            }
        }
        while (c.u < next_end) TF(cursor_step)(s, x, p, &c, rms, inv_tail, inv_total);
    }
}

/* Per-unit coefficients of the statistics-given walk (see unit_coeffs), taken once
 * per call instead of once per segment: a 7 x 7 plane is too short to pay for a
 * square root and the safety tests. buf is NULL when out of memory. Units whose
 * parameters vary along r1 get none (fast = 0 throughout). */
static fn_unit_coefs TF(given_coefs)(const fn_seg_shape *s, const fn_norm_args *p, ptrdiff_t U)
{
    fn_unit_coefs cf;
    size_t n = (size_t)U;
    cf.buf = fn_scratch_alloc(n * (sizeof(double) + sizeof(ptrdiff_t) + 4 * sizeof(T) + 1));
    if (!cf.buf) return cf;
    double *rstd = (double *)cf.buf;
    ptrdiff_t *wo = (ptrdiff_t *)(rstd + n);
    T *mh = (T *)(wo + n), *ml = mh + n, *sc = ml + n, *sh = sc + n;
    unsigned char *fast = (unsigned char *)(sh + n);
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    int wvec = s->wr2 != 0;
    /* var and eps in locals: the stores to rstd could alias p's fields
     * (-fno-strict-aliasing), which kept this loop scalar */
    const double *var = p->var, eps = p->eps;
#pragma omp simd
    for (ptrdiff_t u = 0; u < U; u++) rstd[u] = 1.0 / sqrt(var[u] + eps);
    /* units are (a, k), k fastest: no division per unit */
    for (ptrdiff_t a = 0, u = 0; a < s->A; a++)
        for (ptrdiff_t k = 0; k < s->K; k++, u++) wo[u] = k * s->wk;
    TF(unit_coeffs)(U, p->mean, p->var, rstd, (double)(s->R1 * s->R2), w, b, wo, w && !wvec, p->stream,
                    mh, ml, sc, sh, fast);
    if (w && s->wr1 != 0) memset(fast, 0, n);
    cf.wo = wo; cf.mh = mh; cf.ml = ml; cf.sc = sc; cf.sh = sh; cf.fast = fast;
    return cf;
}

/* Segments [it0, it1) of the statistics-given walk, in memory order (a, r1, k). */
static void TF(seg_norm_given)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p,
                               const fn_unit_coefs *cf, ptrdiff_t it0, ptrdiff_t it1)
{
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    int wvec = s->wr2 != 0;
    const T *mh = (const T *)cf->mh, *ml = (const T *)cf->ml, *sc = (const T *)cf->sc, *sh = (const T *)cf->sh;
    /* (a, r1, k) of it0, then stepped */
    ptrdiff_t k = it0 % s->K, r1 = (it0 / s->K) % s->R1, a = it0 / (s->K * s->R1);
    /* the planes of neighbouring channels lie end to end (NCHW) */
    int joined = !wvec && s->xk == s->R2 && s->yk == s->R2 && s->R2 >= TLANES;
    for (ptrdiff_t it = it0; it < it1; it++) {
        ptrdiff_t u = a * s->K + k;
        ptrdiff_t e = k + 1, lim = fn_min(s->K, k + (it1 - it));
        if (joined && cf->fast[u])
            while (e < lim && cf->fast[u + e - k]) e++;
        if (e - k > 1) {
            TF(norm_run_joined)(x + a * s->xa + k * s->xk + r1 * s->xr1, y + a * s->ya + k * s->yk + r1 * s->yr1,
                                s->R2, e - k, mh + u, ml + u, sc + u, sh + u);
            it += e - k - 1;
            k = e - 1;
        } else if (cf->fast[u]) {
            ptrdiff_t wo = cf->wo[u];
            TF(norm_row_fast)(x + a * s->xa + k * s->xk + r1 * s->xr1, y + a * s->ya + k * s->yk + r1 * s->yr1,
                              s->R2, w && wvec ? w + wo : NULL, w && wvec && b ? b + wo : NULL,
                              mh[u], ml[u], sc[u], sh[u]);
        } else {
            TF(seg_norm_part)(s, x, y, p, a, k, r1, 0, s->R2, p->mean[u], p->var[u]);
        }
        if (++k == s->K) {
            k = 0;
            if (++r1 == s->R1) { r1 = 0; a++; }
        }
    }
}

static int TF(col_norm)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p_in);

/* 1 when the SEG shape is one COL shape over rows of K * R2 columns: short
 * segments of the K units of a row lie end to end in x (and y), as BatchNorm's
 * over (N, C, L) with small L or NCHW with 2 x 2 planes, and the affine
 * parameters are per unit or per column. */
static inline int TF(seg_columns_ok)(const fn_seg_shape *s, const T *y, const void *w)
{
    int w_unit = s->wk == 1 && s->wr1 == 0 && s->wr2 == 0;
    int w_column = s->wk == s->R2 && s->wr1 == 0 && s->wr2 == 1;
    int short_enough = s->R2 <= FN_SEG_COLUMNS_ALWAYS
                       || (s->R2 <= FN_SEG_COLUMNS_MID && s->R1 >= FN_SEG_COLUMNS_MID_ROWS)
                       || (s->R2 <= FN_SEG_COLUMNS_MAX && s->R1 >= FN_SEG_COLUMNS_ROWS);
    return s->R2 > 1 && short_enough && s->K > 1 && s->R1 > 1
           && s->xk == s->R2 && s->xr1 >= s->K * s->R2 && (!y || (s->yk == s->R2 && s->yr1 >= s->K * s->R2))
           && (!w || w_unit || w_column);
}

/* Each of the per-unit values repeated for the unit's R2 columns. */
static inline __attribute__((always_inline)) void TF(repeat_loop)(const T *restrict per_unit, ptrdiff_t U,
                                                                  ptrdiff_t R2, T *restrict per_column)
{
    for (ptrdiff_t u = 0; u < U; u++) {
        T v = per_unit[u];
        for (ptrdiff_t j = 0; j < R2; j++) per_column[u * R2 + j] = v;
    }
}

static inline void TF(repeat_per_column)(const T *per_unit, ptrdiff_t KC, ptrdiff_t R2, T *per_column)
{
    /* R2 a constant for the short segments' usual lengths: the loop then
     * vectorizes over units (4096 values of R2 = 4 took 3 us one at a time) */
    switch (R2) {
    case 2: TF(repeat_loop)(per_unit, KC / 2, 2, per_column); break;
    case 4: TF(repeat_loop)(per_unit, KC / 4, 4, per_column); break;
    case 8: TF(repeat_loop)(per_unit, KC / 8, 8, per_column); break;
    default: TF(repeat_loop)(per_unit, KC / R2, R2, per_column);
    }
}

/* The SEG shape of seg_columns_ok through the COL walk: every row of K * R2
 * values read whole, column statistics shared by groups of R2 columns (one per
 * unit). Segment by segment, a unit's walk jumps between runs of a few values
 * (BatchNorm (4096, 64, 8) ran at 8 % of a copy, (256, 512, 2, 2) at 6 %).
 * Per-unit parameters and given statistics are repeated for each of the unit's
 * columns. */
static int TF(seg_as_columns)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p)
{
    ptrdiff_t R2 = s->R2, U = s->A * s->K, KC = s->K * R2, UC = U * R2;
    if (U == 0) return FN_OK;
    fn_col_shape c = {s->A, s->R1, KC, s->xa, s->xr1, s->ya, s->yr1, 0, p->stats_given ? 1 : R2};
    fn_norm_args cp = *p;
    int w_unit = p->w && s->wk == 1;
    double *stats = (double *)fn_scratch_alloc(sizeof(double) * 2 * (size_t)UC);
    T *wb = w_unit ? (T *)fn_scratch_alloc(sizeof(T) * 2 * (size_t)KC) : NULL;
    if (!stats || (w_unit && !wb)) {
        fn_scratch_free(stats);
        fn_scratch_free(wb);
        return FN_ENOMEM;
    }
    cp.mean = stats;
    cp.var = stats + UC;
    if (p->stats_given)
        for (ptrdiff_t u = 0; u < U; u++) {
            double m = p->mean[u], v = p->var[u];
            for (ptrdiff_t j = 0; j < R2; j++) { stats[u * R2 + j] = m; stats[UC + u * R2 + j] = v; }
        }
    if (w_unit) {
        TF(repeat_per_column)((const T *)p->w, KC, R2, wb);
        if (p->b) TF(repeat_per_column)((const T *)p->b, KC, R2, wb + KC);
        cp.w = wb;
        cp.b = p->b ? wb + KC : NULL;
    }
    int status = TF(col_norm)(&c, x, y, &cp);
    if (status == FN_OK && !p->stats_given && p->mean && p->var)
        for (ptrdiff_t u = 0; u < U; u++) { p->mean[u] = cp.mean[u * R2]; p->var[u] = cp.var[u * R2]; }
    fn_scratch_free(stats);
    fn_scratch_free(wb);
    return status;
}

/* Whether streaming stores suit y (or dx) of a SEG shape: units of one segment
 * under FN_STREAM_LONE_ROW_BYTES (rows), stored one by one, must start and end
 * on cache line boundaries, unless the walk joins them (joined: seg_rows_piped).
 * Where a line holds the end of one row and the start of the next, its two
 * partial stores amid the streaming stores of its other values cost about 300 ns
 * a row: LayerNorm backward (16384, 256) into a dx 16 bytes past a line (NumPy's
 * large arrays start 16 bytes into a page) ran at 0.34-0.38x the speed of cached
 * stores, (8192, 768) at 0.62-0.71x (one and two threads), the forward over
 * (262144, 64) at 0.67x. Longer rows pay it less often than streaming saves:
 * InstanceNorm backward over planes of 12.5 KiB ((64, 64, 56, 56)) ran 0.83-0.85x
 * as fast cached, over planes of 16 KiB 0.74-1.16x. Units of several segments
 * (BatchNorm NCHW) write the planes of neighbouring channels as one run and
 * stream at any offset ((32, 64, 56, 56) backward ran 0.96x cached). */
static inline int TF(seg_lines_apart)(const fn_seg_shape *s, const T *y, int joined)
{
    const ptrdiff_t line = FN_LINE_BYTES / (ptrdiff_t)sizeof(T);
    return joined || s->R1 > 1 || s->R2 * (ptrdiff_t)sizeof(T) >= FN_STREAM_LONE_ROW_BYTES
           || ((uintptr_t)y % FN_LINE_BYTES == 0 && s->ya % line == 0 && s->yk % line == 0 && s->R2 % line == 0);
}

static int TF(seg_norm)(const fn_seg_shape *s, const T *x, T *y, const fn_norm_args *p_in)
{
    if (TF(seg_columns_ok)(s, y, p_in->w)) return TF(seg_as_columns)(s, x, y, p_in);
    ptrdiff_t U = s->A * s->K, unit_len = s->R1 * s->R2;
    if (U == 0) return FN_OK;
    fn_norm_args args = *p_in;
    const fn_norm_args *p = &args;
    double *own = fn_own_stats(&args, U);
    if (!args.mean) return FN_ENOMEM;
    /* see FN_ROWWISE_BYTES: the statistics alone, then the normalize alone; not
     * when the statistics alone would take the column walk (y's layout is what
     * kept this call from it), whose sums are not the row-wise walk's bits */
    if (TF(rowwise_apart)(s, y, p) && !TF(seg_columns_ok)(s, NULL, p->w)) {
        int status = TF(seg_norm)(s, x, NULL, &args);
        if (status == FN_OK) {
            args.stats_given = 1;
            status = TF(seg_norm)(s, x, y, &args);
        }
        fn_scratch_free(own);
        return status;
    }
    double work = fn_work((double)U, (double)unit_len);
    int nt = work < FN_SERIAL_ELEMS ? 1 : p->nthreads;
    if (nt > 1) nt = fn_threads_acquire(nt);
    int status = FN_OK;
    /* pipelining needs the unit being normalized and the next one to share L1; it
     * replaces groups of at most two units (see seg_units), and, in inputs that
     * stay in cache, groups of one unit of long segments (see FN_PIPE_UNIT_BYTES) */
    ptrdiff_t unit_bytes = unit_len * (ptrdiff_t)sizeof(T);
    double x_bytes = (double)U * (double)unit_bytes;
    int rowwise = TF(seg_rowwise)(s, p);
    int piped_rows = TF(rows_piped)(s, y, p);
    int tiled = !piped_rows && y && !p->stats_given && s->R1 == 1 && s->R2 > FN_BLOCK && p->w && p->b && s->wr2 != 0
                && unit_bytes > FN_TILE_PARAM_BYTES;
    int pipe_size = 2 * unit_bytes <= FN_L1_BYTES
                    || (unit_bytes <= FN_PIPE_UNIT_BYTES && s->R2 * (ptrdiff_t)sizeof(T) >= FN_PIPE_SEGMENT_BYTES
                        && x_bytes < FN_STREAM_PASS_BYTES);
    int pipelined = !piped_rows && !tiled && !rowwise && y && !p->stats_given && 3 * unit_bytes > FN_L1_BYTES
                    && pipe_size;
    /* the statistics-given walk and seg_split normalize in a pass of their own, and
     * so do units larger than half of this machine's L2 (fn_l2_bytes; it was
     * FN_L2_BYTES, half of a 2 MiB L2: with 512 KiB of L2, InstanceNorm over
     * planes of 352 and 512 KiB, (8, 16, 300, 300) and (2, 32, 362, 362), ran
     * 1.10x and 1.25-1.40x faster at two threads streamed, same-process A/B,
     * both orders, 2026-12-01) */
    int own_pass = p->stats_given || (nt > 1 && U < 4 * (ptrdiff_t)nt)
                   || (double)unit_len * sizeof(T) > (double)fn_l2_bytes() / 2 || piped_rows;
    /* So does, in effect, a walk that reads a unit larger than L1 for its
     * statistics and then normalizes it from L2: cached stores of y take a read
     * for ownership of each line and evict lines that the normalize re-reads.
     * Units of several segments gain from streaming at any thread count
     * (training BatchNorm, units of 0.25-1 MiB, 24 MiB: 1.07-1.48x faster at two
     * threads, 1.6-1.97x at one); on one thread every walk but the lean row
     * groups and the pipelined units does (InstanceNorm (4, 48, 181, 181) 1.71x,
     * LayerNorm (1024, 8192) 1.41x, GroupNorm (16, 128, 64, 64) 1.58x: one core's
     * cached stores wait on their reads for ownership), where two cores ran
     * 0.87-1.0x as fast streamed, y being left in L3 from call to call. */
    int lean_rows = s->R1 == 1 && s->R2 <= FN_BLOCK;
    if (!pipelined && !lean_rows && (nt <= 1 || (s->R1 > 1 && !rowwise && unit_bytes > FN_L1_BYTES))) own_pass = 1;
    args.stream = p_in->stream && y != NULL && fn_stream_output(x_bytes, own_pass)
                  && TF(seg_lines_apart)(s, y, piped_rows);
    /* units of many short segments are not streamed (see FN_STREAM_SEGMENT_BYTES);
     * rows (R1 == 1) are, their partial lines are next to each other */
    if (s->R1 > 1 && s->R2 * (ptrdiff_t)sizeof(T) < FN_STREAM_SEGMENT_BYTES) args.stream = 0;
    /* what lean row groups do for the next group (see FN_LEAN_AHEAD_BYTES) */
    ptrdiff_t row_bytes = s->R2 * (ptrdiff_t)sizeof(T);
    int lean_mode = FN_LEAN_ALONE;
    if (x_bytes >= FN_LEAN_AHEAD_BYTES || (nt <= 1 && x_bytes >= FN_LEAN_AHEAD_BYTES / 2))
        lean_mode = row_bytes < FN_LEAN_PIPED_ROW_BYTES ? FN_LEAN_AHEAD
                    : nt <= 1 || row_bytes == FN_LEAN_PIPED_ROW_BYTES ? FN_LEAN_PIPED_FAR : FN_LEAN_PIPED;
    if (p->stats_given && y) {
        /* nothing to reduce (inference BatchNorm): walk the segments in memory
         * order, (a, r1, k), so each thread streams through long runs instead of
         * jumping between the planes of one channel. Units of one segment (a
         * batch of one sample) too: seg_units would take each plane's square
         * root and safety tests one plane after another, and normalize the
         * planes one by one instead of as one run */
        ptrdiff_t n_items = s->A * s->R1 * s->K, chunk = fn_chunk_items(n_items, s->R2, nt);
        ptrdiff_t nchunks = (n_items + chunk - 1) / chunk;
        fn_unit_coefs cf = TF(given_coefs)(s, p, U);
        if (!cf.buf) status = FN_ENOMEM;
        else
            FN_PARALLEL_SHARES(nt, nchunks, c,
                TF(seg_norm_given)(s, x, y, p, &cf, c * chunk, fn_min(n_items, (c + 1) * chunk));
            );
        fn_scratch_free(cf.buf);
    } else if (nt <= 1 && rowwise) {
        TF(seg_units_rowwise)(s, x, y, p, 0, U);
    } else if (nt <= 1) {
        if (tiled) TF(seg_units_tiled)(s, x, y, p, 0, U);
        else if (pipelined) TF(seg_units_pipelined)(s, x, y, p, 0, U);
        else TF(seg_units)(s, x, y, p, 0, U, lean_mode);
    } else if (U >= 4 * (ptrdiff_t)nt) {
        ptrdiff_t chunk = fn_chunk_items(U, unit_len, nt);
        /* a pipelined chunk starts with a statistics-only unit: make chunks long */
        if (pipelined) chunk = fn_max(chunk, U / (8 * (ptrdiff_t)nt));
        if (rowwise) chunk = fn_rowwise_chunk(U, TF(rowwise_kept_bytes)(s, y), FN_MAX_CHUNK_UNITS, nt);
        /* tiled chunks: at least a tile, and long (each starts with a tile's
         * statistics taken alone), with at least two chunks per thread */
        if (tiled)
            chunk = fn_max(chunk, fn_min(fn_max(FN_TILE_BYTES / unit_bytes, U / (8 * (ptrdiff_t)nt)),
                                         U / (2 * (ptrdiff_t)nt)));
        ptrdiff_t nchunks = (U + chunk - 1) / chunk;
        FN_PARALLEL_SHARES(nt, nchunks, c, {
            if (tiled) TF(seg_units_tiled)(s, x, y, p, c * chunk, fn_min(U, (c + 1) * chunk));
            else if (rowwise) TF(seg_units_rowwise)(s, x, y, p, c * chunk, fn_min(U, (c + 1) * chunk));
            else if (pipelined) TF(seg_units_pipelined)(s, x, y, p, c * chunk, fn_min(U, (c + 1) * chunk));
            else TF(seg_units)(s, x, y, p, c * chunk, fn_min(U, (c + 1) * chunk), lean_mode);
        });
    } else {
        status = TF(seg_split)(s, x, y, p, nt);
    }
    if (args.stream) fn_store_fence();
    if (nt > 1) fn_threads_release(nt);
    fn_scratch_free(own);
    return status;
}

/* ------------------------------------------------------------ ADD+ROWS ---- */
/* Pre-norm transformer step in one pass: s = x + r is written to sum (which may be
 * r itself) and y = norm(s) is computed while the row is in cache. Rows of D
 * contiguous values at row strides xs, rs, ss, ys. */
static void TF(add_rows_range)(const T *x, ptrdiff_t xs, const T *r, ptrdiff_t rs, T *sum, ptrdiff_t ss,
                               T *y, ptrdiff_t ys, ptrdiff_t D, const fn_norm_args *p,
                               ptrdiff_t m0, ptrdiff_t m1)
{
    const fn_seg_shape one = {1, 1, 1, D, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    int rms = p->mode == FN_MODE_RMS;
    double inv_tail = TF(inv_tail)(&one), inv_total = 1.0 / (double)D;
    for (ptrdiff_t m = m0; m < m1; m++) {
        const T *xr = x + m * xs, *rr = r + m * rs;
        T *sr = sum + m * ss;
#pragma omp simd
        for (ptrdiff_t i = 0; i < D; i++) sr[i] = xr[i] + rr[i];
        double mean, var;
        TF(seg_unit_stats)(&one, sr, rms, inv_tail, inv_total, &mean, &var);
        if (p->mean) { p->mean[m] = mean; p->var[m] = var; }
        double rstd = 1.0 / sqrt(var + p->eps);
        TF(norm_range)(sr, y + m * ys, D, mean, rstd, (const T *)p->w, (const T *)p->b, 1,
                       fn_t_safe(mean, var, (double)D, sizeof(T)), p->stream);
    }
}

static int TF(add_rows)(const T *x, ptrdiff_t xs, const T *r, ptrdiff_t rs, T *sum, ptrdiff_t ss,
                        T *y, ptrdiff_t ys, ptrdiff_t M, ptrdiff_t D, const fn_norm_args *p_in)
{
    if (M == 0) return FN_OK;
    fn_norm_args args = *p_in;
    const fn_norm_args *p = &args;
    /* rows of 1 to 32 KiB: the sum and statistics of row m + 1 are taken in
     * the loop that normalizes row m (seg_rows_piped, the same bits as
     * add_rows_range) */
    const fn_seg_shape rows = {M, 1, 1, D, ss, 0, 0, ys, 0, 0, 0, 0, 1};
    const TF(add_in) ad = {x, r, xs, rs};
    int piped = TF(rows_piped)(&rows, y, p) && (uintptr_t)sum % sizeof(T) == 0;
    double *own = NULL;
    if (piped) {
        own = fn_own_stats(&args, M);
        if (!args.mean) return FN_ENOMEM;
    }
    args.stream = p_in->stream && fn_stream_output((double)M * (double)D * sizeof(T), piped)
                  && TF(seg_lines_apart)(&rows, y, piped);
    double work = fn_work((double)M, (double)D);
    int nt = work < FN_SERIAL_ELEMS ? 1 : p->nthreads;
    if (nt > 1) nt = fn_threads_acquire(nt);
    ptrdiff_t chunk = nt <= 1 ? M : fn_chunk_items(M, D, nt), nchunks = (M + chunk - 1) / chunk;
    FN_PARALLEL_SHARES(nt, nchunks, c, {
        ptrdiff_t m0 = c * chunk, m1 = fn_min(M, (c + 1) * chunk);
        if (piped) TF(seg_rows_piped)(&rows, sum, y, p, m0, m1, &ad);
        else TF(add_rows_range)(x, xs, r, rs, sum, ss, y, ys, D, p, m0, m1);
    });
    if (nt > 1) fn_threads_release(nt);
    if (args.stream) fn_store_fence();
    fn_scratch_free(own);
    return FN_OK;
}

/* ---------------------------------------------------------------- COL ---- */
/* Rows of a slab are grouped in blocks of FN_COL_BLOCK rows and superblocks of
 * FN_COL_SUPER blocks. Each column's values are summed in T precision within a
 * block (at most FN_COL_BLOCK terms per accumulator), less a shift that keeps
 * x - c small beside |mean|; a unit's statistics are the fold of its
 * superblocks. A superblock's first block is shifted by its first row, and its
 * statistics found as a block's (col_block_stats); the other blocks are shifted
 * by that block's means and their sums added in double, turned into statistics
 * once and folded in (col_super_stats): a fold per block, with its divisions and
 * its passes over K, had made column statistics 10-12 % slower than row
 * statistics of the same bytes. */

/* s1[k] = sum(x - c[k]), s2[k] = sum((x - c[k])^2) over rows [r0, r1) of a slab at xs,
 * in T precision (c NULL: no shift, the RMS sums). */
static void TF(col_block_sums)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1, const T *c,
                               T *s1, T *s2)
{
    ptrdiff_t K = s->K;
    /* column chunks of 4 vectors keep their accumulators in registers across the
     * block's rows; one vector, then single columns, for what is left */
    const VT tz = {0};
    ptrdiff_t k = 0, kc = K / (4 * TLANES) * (4 * TLANES);
    /* rows in sub-blocks (fn_l1_sub_rows) when there are several chunks, each
     * chunk's sums carried in s1, s2 from one sub-block to the next (column
     * moments K = 256 ran 1.3x slower than row moments of the same bytes without);
     * contiguous rows under FN_COL_SEQ_AHEAD_MAX_ROW_BYTES ask for the next
     * sub-block's lines in address order as they go (fn_ahead_cursor), the
     * sub-blocks of a block made equal so that each asks for as many bytes as the
     * next one reads; other rows of FN_COL_AHEAD_ROW_BYTES and more ask for the
     * chunk's lines of the next sub-block as they are read */
    ptrdiff_t row_bytes = K * (ptrdiff_t)sizeof(T);
    ptrdiff_t sub = kc > 4 * TLANES ? fn_equal_sub_rows(r1 - r0, row_bytes) : r1 - r0;
    int seq = s->xr == K && row_bytes < FN_COL_SEQ_AHEAD_MAX_ROW_BYTES;
    int ahead = !seq && sub < r1 - r0 && row_bytes >= FN_COL_AHEAD_ROW_BYTES;
    for (ptrdiff_t rs = r0; rs < r1; rs += sub) {
        ptrdiff_t re = fn_min(rs + sub, r1);
        fn_ahead_cursor next = {0, 0};
        if (seq) next = fn_ahead_over(xs + re * K, xs + fn_min(re + sub, s->R) * K);
        for (k = 0; k < kc; k += 4 * TLANES) {
            VT c0 = tz, c1 = tz, c2 = tz, c3 = tz;
            if (c) {
                c0 = TF(loadt)(c + k); c1 = TF(loadt)(c + k + TLANES);
                c2 = TF(loadt)(c + k + 2 * TLANES); c3 = TF(loadt)(c + k + 3 * TLANES);
            }
            VT a0 = tz, a1 = tz, a2 = tz, a3 = tz, q0 = tz, q1 = tz, q2 = tz, q3 = tz;
            if (rs > r0) {
                a0 = TF(loadt)(s1 + k); a1 = TF(loadt)(s1 + k + TLANES);
                a2 = TF(loadt)(s1 + k + 2 * TLANES); a3 = TF(loadt)(s1 + k + 3 * TLANES);
                q0 = TF(loadt)(s2 + k); q1 = TF(loadt)(s2 + k + TLANES);
                q2 = TF(loadt)(s2 + k + 2 * TLANES); q3 = TF(loadt)(s2 + k + 3 * TLANES);
            }
            for (ptrdiff_t r = rs; r < re; r++) {
                const T *row = xs + r * s->xr + k;
                if (ahead && r + sub < r1) TF(prefetch_span)(row + sub * s->xr, 4 * TLANES * (ptrdiff_t)sizeof(T), 0);
                fn_ahead_step(&next, 4 * TLANES * (ptrdiff_t)sizeof(T));
                VT d0 = TF(loadt)(row) - c0, d1 = TF(loadt)(row + TLANES) - c1;
                VT d2 = TF(loadt)(row + 2 * TLANES) - c2, d3 = TF(loadt)(row + 3 * TLANES) - c3;
                a0 += d0; q0 += d0 * d0; a1 += d1; q1 += d1 * d1;
                a2 += d2; q2 += d2 * d2; a3 += d3; q3 += d3 * d3;
            }
            TF(storet)(s1 + k, a0); TF(storet)(s1 + k + TLANES, a1);
            TF(storet)(s1 + k + 2 * TLANES, a2); TF(storet)(s1 + k + 3 * TLANES, a3);
            TF(storet)(s2 + k, q0); TF(storet)(s2 + k + TLANES, q1);
            TF(storet)(s2 + k + 2 * TLANES, q2); TF(storet)(s2 + k + 3 * TLANES, q3);
        }
        fn_ahead_rest(&next);
    }
    k = kc;
    for (; k + TLANES <= K; k += TLANES) {
        VT c0 = c ? TF(loadt)(c + k) : tz, a0 = tz, q0 = tz;
        for (ptrdiff_t r = r0; r < r1; r++) {
            VT d0 = TF(loadt)(xs + r * s->xr + k) - c0;
            a0 += d0; q0 += d0 * d0;
        }
        TF(storet)(s1 + k, a0); TF(storet)(s2 + k, q0);
    }
    for (; k < K; k++) {
        T ck = c ? c[k] : (T)0, a = 0, q = 0;
        for (ptrdiff_t r = r0; r < r1; r++) {
            T d = xs[r * s->xr + k] - ck;
            a += d; q += d * d;
        }
        s1[k] = a; s2[k] = q;
    }
}

/* The same sums over rows [r0, r1) in double, added to s1, s2: the fallback for
 * sums that overflowed, underflowed or met inf/NaN. An infinite shift (a first
 * row or a first block's mean of inf) is taken as 0, as shift_of does. */
__attribute__((noinline, cold)) static void TF(col_sums_exact)(const fn_col_shape *s, const T *xs, ptrdiff_t r0,
                                                              ptrdiff_t r1, const T *c, double *s1, double *s2)
{
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *row = xs + r * s->xr;
        for (ptrdiff_t k = 0; k < s->K; k++) {
            double d = (double)row[k] - (c ? fn_finite_or_zero((double)c[k]) : 0.0);
            s1[k] += d; s2[k] += d * d;
        }
    }
}

/* 1 when each of the K <= FN_COL_CHECK columns at xs whose sums s1d, s2d over
 * rows [r0, r1) fail fn_col_sums_ok holds its shift (c[k] as col_sums_exact
 * takes it, 0 without c) in every row, and then sets those columns' sums to
 * what col_sums_exact gives them, +0 and +0 (each x - c is +-0). A constant
 * column (a channel that a ReLU zeroed) fails only because its s2 lies below
 * FN_TINY_SQ; rerunning its chunk in double made training BatchNorm
 * channels-last with an eighth of its channels zero 5.6-13x slower. The
 * columns that pass keep their T-precision sums. */
static int TF(col_fails_constant)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1, const T *c,
                                  double *s1d, double *s2d)
{
    double tiny = (double)(r1 - r0) * FN_TINY_SQ;
    T shift[FN_COL_CHECK];
    int fails[FN_COL_CHECK];
    for (ptrdiff_t k = 0; k < s->K; k++) {
        fails[k] = !fn_col_sum_ok(s1d[k], s2d[k], tiny);
        double ck = c ? fn_finite_or_zero((double)c[k]) : 0.0;
        shift[k] = (T)ck;
        /* a shift that T cannot hold is never met */
        if (fails[k] && (double)shift[k] != ck) return 0;
    }
    /* only the vectors of columns that hold a failing one (a ReLU's zeroed
     * channels are few), each lane compared where its column fails; the
     * columns past the last whole vector one by one */
    ptrdiff_t vcol[FN_COL_CHECK / TLANES], nv = 0, tcol[TLANES], ntail = 0, kv = s->K / TLANES * TLANES;
    VT vshift[FN_COL_CHECK / TLANES];
    TF(vi) vmask[FN_COL_CHECK / TLANES];
    for (ptrdiff_t k0 = 0; k0 < kv; k0 += TLANES) {
        int any = 0;
        for (ptrdiff_t l = 0; l < TLANES; l++) any |= fails[k0 + l];
        if (!any) continue;
        for (ptrdiff_t l = 0; l < TLANES; l++) {
            vshift[nv][l] = shift[k0 + l];
            vmask[nv][l] = fails[k0 + l] ? -1 : 0;
        }
        vcol[nv++] = k0;
    }
    for (ptrdiff_t k = kv; k < s->K; k++)
        if (fails[k]) tcol[ntail++] = k;
    TF(vi) ne = {0};
    int differs = 0;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *row = xs + r * s->xr;
        for (ptrdiff_t v = 0; v < nv; v++) ne |= (TF(vi))(TF(loadt)(row + vcol[v]) != vshift[v]) & vmask[v];
        for (ptrdiff_t j = 0; j < ntail; j++) differs |= row[tcol[j]] != shift[tcol[j]];
    }
    for (ptrdiff_t l = 0; l < TLANES; l++) differs |= ne[l] != 0;
    if (differs) return 0;
    for (ptrdiff_t k = 0; k < s->K; k++)
        if (fails[k]) { s1d[k] = 0.0; s2d[k] = 0.0; }
    return 1;
}

/* The double fallback (col_sums_exact) for the chunks of FN_COL_CHECK columns
 * whose T-precision sums s1d, s2d over rows [r0, r1) cannot be trusted, but
 * for chunks whose failing columns are constant (col_fails_constant). */
static void TF(col_sums_checked)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1, const T *c,
                                 double *s1d, double *s2d)
{
    for (ptrdiff_t k0 = 0; k0 < s->K; k0 += FN_COL_CHECK) {
        fn_col_shape sub = *s;
        sub.K = fn_min(FN_COL_CHECK, s->K - k0);
        if (fn_col_sums_ok(s1d + k0, s2d + k0, sub.K, (double)(r1 - r0))) continue;
        if (TF(col_fails_constant)(&sub, xs + k0, r0, r1, c ? c + k0 : NULL, s1d + k0, s2d + k0)) continue;
        for (ptrdiff_t k = k0; k < k0 + sub.K; k++) { s1d[k] = 0; s2d[k] = 0; }
        TF(col_sums_exact)(&sub, xs + k0, r0, r1, c ? c + k0 : NULL, s1d + k0, s2d + k0);
    }
}

/* A column's reference (col_ref): its slab's first value, or 0 where that is
 * inf or NaN (as shift_of). */
static inline double TF(col_ref)(const T *ref, ptrdiff_t k) { return fn_finite_or_zero((double)ref[k]); }

/* Statistics (mean[K], m2[K]; in RMS mode 0 and the sums of squares) of n values
 * per column from their sums less the shift c (c NULL: RMS), as fn_sums_to_stats,
 * the means relative to the columns' references (col_ref of ref: fn_acc's ref,
 * for the same reason). */
static void TF(col_sums_to_stats)(const double *s1, const double *s2, const T *c, const T *ref, double n,
                                  ptrdiff_t K, double *mean, double *m2)
{
    double inv_n = 1.0 / n;
    for (ptrdiff_t k = 0; k < K; k++)
        fn_sums_to_stats(s1[k], s2[k], c ? (double)c[k] - TF(col_ref)(ref, k) : 0.0, inv_n, !c, &mean[k], &m2[k]);
}

/* The chunks of FN_COL_CHECK columns of rows [r0, r1) whose sums s1d, s2d
 * around c have a column with its shift far from its mean (fn_shift_near) are
 * summed again, in T precision, around their means rounded to T (in shift, K
 * values; s1, s2: K T values of work space). Returns the shifts the sums are
 * now taken around: c itself when no chunk was far. float64 columns take it too
 * (unlike rows, whose test runs per row): rare, and never less accurate. */
static const T *TF(col_reshift_far)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1,
                                    const T *c, T *shift, T *s1, T *s2, double *s1d, double *s2d)
{
    double n = (double)(r1 - r0);
    const T *used = c;
    for (ptrdiff_t k0 = 0; k0 < s->K; k0 += FN_COL_CHECK) {
        fn_col_shape sub = *s;
        sub.K = fn_min(FN_COL_CHECK, s->K - k0);
        int near = 1;
        for (ptrdiff_t k = k0; k < k0 + sub.K; k++) near &= fn_shift_near(s1d[k], s2d[k], n);
        if (near) continue;
        if (used == c) {
            for (ptrdiff_t k = 0; k < s->K; k++) shift[k] = c[k];
            used = shift;
        }
        for (ptrdiff_t k = k0; k < k0 + sub.K; k++) shift[k] = (T)((double)c[k] + s1d[k] / n);
        TF(col_block_sums)(&sub, xs + k0, r0, r1, shift + k0, s1 + k0, s2 + k0);
        for (ptrdiff_t k = k0; k < k0 + sub.K; k++) { s1d[k] = (double)s1[k]; s2d[k] = (double)s2[k]; }
        TF(col_sums_checked)(&sub, xs + k0, r0, r1, shift + k0, s1d + k0, s2d + k0);
    }
    return used;
}

/* Rows a column block's shift is the mean of (col_first_shift). */
#define FN_COL_SHIFT_ROWS 8

/* The shifts of a column block of rows [r0, r1): the means of its first
 * FN_COL_SHIFT_ROWS rows (all of a shorter block's), in T, into shift (the first
 * row itself in columns whose mean is not finite). A shift z deviations from
 * the block's mean multiplies the rounding of its T sums by about 1 + z^2, and
 * each lane adds up to 64 rows of its column (a row's lanes add 16 values):
 * around their first row, which may lie up to 3 deviations away before the block
 * is summed again (col_reshift_far), float32 columns of 8 to 64 standard normal
 * rows had variances up to 1.4e-6 to 4.9e-6 off; around the mean of eight rows,
 * z is a third as large. */
static const T *TF(col_first_shift)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1, T *restrict shift)
{
    const T *first = xs + r0 * s->xr;
    const ptrdiff_t K = s->K, xr = s->xr, nr = fn_min(FN_COL_SHIFT_ROWS, r1 - r0);
    if (nr < 2) return first;
    /* summed in T: any value near the mean serves as a shift */
    for (ptrdiff_t k = 0; k < K; k++) shift[k] = first[k];
    for (ptrdiff_t r = 1; r < nr; r++)
        for (ptrdiff_t k = 0; k < K; k++) shift[k] += first[r * xr + k];
    const T inv = (T)(1.0 / (double)nr);
    for (ptrdiff_t k = 0; k < K; k++) {
        T m = shift[k] * inv;
        shift[k] = m - m == 0 ? m : first[k];
    }
    return shift;
}

/* Statistics of rows [r0, r1) of a slab at xs, shifted by the mean of the first
 * of them (col_first_shift; by their own means where that lies far,
 * col_reshift_far), the means relative to
 * the slab's first row (col_sums_to_stats). scratch: 2K doubles; shift: K values. */
static void TF(col_block_stats)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1,
                                int rms, double *scratch, T *shift, double *mean, double *m2)
{
    ptrdiff_t K = s->K;
    const T *c = rms ? NULL : TF(col_first_shift)(s, xs, r0, r1, shift);
    T *s1 = (T *)scratch, *s2 = (T *)(scratch + K);
    TF(col_block_sums)(s, xs, r0, r1, c, s1, s2);
    double *s1d = mean, *s2d = m2;
    for (ptrdiff_t k = 0; k < K; k++) { s1d[k] = (double)s1[k]; s2d[k] = (double)s2[k]; }
    TF(col_sums_checked)(s, xs, r0, r1, c, s1d, s2d);
    if (c) c = TF(col_reshift_far)(s, xs, r0, r1, c, shift, s1, s2, s1d, s2d);
    /* in place: column k's sums are read before its statistics are written */
    TF(col_sums_to_stats)(s1d, s2d, c, xs, (double)(r1 - r0), K, mean, m2);
}

/* Sums over rows [r0, r1) of a slab at xs, less c, block by block in T
 * precision and added in double into s1d, s2d (again in double when they
 * cannot be trusted). scratch: 2K doubles. */
static void TF(col_rest_sums)(const fn_col_shape *s, const T *xs, ptrdiff_t r0, ptrdiff_t r1, const T *c,
                              double *scratch, double *s1d, double *s2d)
{
    ptrdiff_t K = s->K;
    T *s1 = (T *)scratch, *s2 = (T *)(scratch + K);
    for (ptrdiff_t k = 0; k < K; k++) { s1d[k] = 0; s2d[k] = 0; }
    for (ptrdiff_t r = r0; r < r1; r += FN_COL_BLOCK) {
        TF(col_block_sums)(s, xs, r, fn_min(r + FN_COL_BLOCK, r1), c, s1, s2);
        for (ptrdiff_t k = 0; k < K; k++) { s1d[k] += (double)s1[k]; s2d[k] += (double)s2[k]; }
    }
    TF(col_sums_checked)(s, xs, r0, r1, c, s1d, s2d);
}

/* Superblock sb of slab a: its partial statistics in (mean, m2); scratch holds
 * 6K doubles. */
static void TF(col_super_stats)(const fn_col_shape *s, const T *x, ptrdiff_t a, ptrdiff_t sb,
                                int rms, double *scratch, double *mean, double *m2)
{
    ptrdiff_t K = s->K, rows = FN_COL_BLOCK * FN_COL_SUPER;
    ptrdiff_t r_begin = sb * rows, r_end = fn_min(r_begin + rows, s->R), r_rest = r_begin + FN_COL_BLOCK;
    const T *xs = x + a * s->xa;
    /* the first block's shifts borrow the rest's (c, below), free until then */
    TF(col_block_stats)(s, xs, r_begin, fn_min(r_rest, r_end), rms, scratch, (T *)(scratch + 2 * K), mean, m2);
    if (r_rest >= r_end) return;
    T *c = rms ? NULL : (T *)(scratch + 2 * K);
    double *s1d = scratch + 3 * K, *s2d = scratch + 4 * K, *m2r = scratch + 5 * K, n = (double)(r_end - r_rest);
    if (c)
        for (ptrdiff_t k = 0; k < K; k++) c[k] = (T)(TF(col_ref)(xs, k) + mean[k]);
    TF(col_rest_sums)(s, xs, r_rest, r_end, c, scratch, s1d, s2d);
    /* a shift more than two standard deviations from the rest's means (data
     * whose first rows differ from the rest) makes |x - c| large beside their
     * spread, and the T sums lose its precision: then the rest again, shifted by
     * its own means (per chunk of FN_COL_CHECK columns, see there) */
    for (ptrdiff_t k0 = 0; c && k0 < K; k0 += FN_COL_CHECK) {
        fn_col_shape sub = *s;
        sub.K = fn_min(FN_COL_CHECK, K - k0);
        int far = 0;
        for (ptrdiff_t k = k0; k < k0 + sub.K; k++) {
            double q = s1d[k] / n;
            far |= q * q * n > 4 * (s2d[k] - s1d[k] * q);
        }
        if (!far) continue;
        for (ptrdiff_t k = k0; k < k0 + sub.K; k++) c[k] = (T)((double)c[k] + s1d[k] / n);
        TF(col_rest_sums)(&sub, xs + k0, r_rest, r_end, c + k0, scratch, s1d + k0, s2d + k0);
    }
    /* the rest's means go to s1d, in place */
    TF(col_sums_to_stats)(s1d, s2d, c, xs, n, K, s1d, m2r);
    TF(col_fold)((double)(r_rest - r_begin), mean, m2, NULL, n, s1d, m2r, K, rms);
}

static ptrdiff_t TF(col_super_rows)(const fn_col_shape *s, ptrdiff_t sb)
{
    ptrdiff_t rows = FN_COL_BLOCK * FN_COL_SUPER;
    return fn_min(rows, s->R - sb * rows);
}

/* col_coeffs' loop over columns [0, K), with per_k and shift constants after
 * inlining: restrict and no reads of what was just stored let it vectorize (one
 * loop for every case, with its selects, stayed scalar: 7 ns a column, 40 % of a
 * BatchNorm call over (2, 512, 2, 2), 2048 columns). */
static inline __attribute__((always_inline)) int TF(col_coeffs_loop)(
    ptrdiff_t K, const double *restrict mean, const double *restrict var, double eps, double n,
    const T *restrict w, const T *restrict b, int per_k, int shift,
    T *restrict mh, T *restrict ml, T *restrict sc, T *restrict sh)
{
    int ok = 1;
#pragma omp simd reduction(& : ok)
    for (ptrdiff_t k = 0; k < K; k++) {
        double m = mean[k];
#if FN_T_BYTES == 4
        /* float data: 1 / sqrt(var + eps) in float, within 2 ulp of the double
         * one rounded (the double square root and division took a third of a
         * (2, 8192) BatchNorm inference); variances outside [1e-30, 1e30] go to
         * the double walk with the non-finite coefficients */
        float v = (float)(var[k] + eps), rstd = 1.0f / sqrtf(v);
        T sck = per_k ? rstd * w[k] : rstd;
        int v_ok = (v >= 1e-30f) & (v <= 1e30f);
#else
        double rstd = 1.0 / sqrt(var[k] + eps);
        T sck = per_k ? rstd * w[k] : rstd;
        int v_ok = 1;
#endif
        T mhk = (T)m;
        mh[k] = mhk;
        ml[k] = (T)(m - (double)mhk);
        sc[k] = sck;
        sh[k] = shift ? b[k] : (T)0;
        ok &= (fabs((double)mhk) <= (double)FN_T_MAX) & (fabs((double)sck) <= (double)FN_T_MAX)
              & fn_t_safe(m, var[k], n, sizeof(T)) & v_ok;
    }
    return ok;
}

/* Stride between col_coeffs' four arrays: K values and room for their periodic
 * continuation. */
static inline ptrdiff_t TF(col_c2)(ptrdiff_t K)
{
    const ptrdiff_t line = FN_LINE_BYTES / (ptrdiff_t)sizeof(T);
    return (K + fn_max(K, TLANES) + line - 1) / line * line;
}

/* Values a line-aligned block (fn_scratch_alloc) holds before the coefficient
 * arrays that start in it, at y's offset within a cache line (col_coef_base). */
#define FN_COEF_LEAD (FN_LINE_BYTES / (ptrdiff_t)sizeof(T))

/* Where coefficient arrays spaced col_c2(K) apart start in a line-aligned
 * block: at y's offset within a line. A normalize walk stores whole vectors
 * from y's vector boundaries on and loads the coefficients of the same columns,
 * so those loads are aligned too wherever a row's bytes are a whole number of
 * vectors. From a line-aligned block, inference BatchNorm (32, 28, 28, 128) with
 * y 16 bytes into a line took 1.2-1.4x as long (each coefficient vector
 * straddling two lines in turn), and a malloc'ed one gave either. */
static inline T *TF(col_coef_base)(T *block, const T *y)
{
    return block + (ptrdiff_t)((uintptr_t)y % FN_LINE_BYTES) / (ptrdiff_t)sizeof(T);
}

/* An array of K per-column values followed by its first TLANES values again,
 * periodically (K may be less than TLANES): a vector of columns starting anywhere
 * in [0, K) loads without wrapping, across rows when K is smaller than a vector
 * (col_coeffs, col_dx_coeffs). */
static inline void TF(col_periodic_tail)(T *v, ptrdiff_t K)
{
    for (ptrdiff_t i = K; i < K + TLANES; i++) v[i] = v[i - K];
}

/* Per-column coefficients of slab a in T precision, columns [k0, k1) of them:
 * y = ((x - mh) - ml) * sc + sh, times a per-row weight afterwards when
 * w_along_r (then sh = 0). Returns 0 when one of them is not finite in T; the
 * slab then normalizes in double. c holds mh, ml, sc, sh at steps of
 * col_c2(K), indexed by column; their periodic tails (col_periodic_tail) are
 * col_coeffs'. */
static int TF(col_coeffs_range)(const fn_col_shape *s, const fn_norm_args *p, ptrdiff_t a, T *c, ptrdiff_t k0,
                                ptrdiff_t k1)
{
    ptrdiff_t K = s->K, c2 = TF(col_c2)(K), nk = k1 - k0;
    int per_k = p->w && !s->w_along_r;
    const T *w = per_k ? (const T *)p->w + k0 : NULL, *b = per_k && p->b ? (const T *)p->b + k0 : NULL;
    const double *mean = p->mean + a * K + k0, *var = p->var + a * K + k0;
    double n = (double)s->R * (double)s->Kg;
    T *mh = c + k0, *ml = c + c2 + k0, *sc = c + 2 * c2 + k0, *sh = c + 3 * c2 + k0;
    if (b) return TF(col_coeffs_loop)(nk, mean, var, p->eps, n, w, b, 1, 1, mh, ml, sc, sh);
    if (w) return TF(col_coeffs_loop)(nk, mean, var, p->eps, n, w, b, 1, 0, mh, ml, sc, sh);
    return TF(col_coeffs_loop)(nk, mean, var, p->eps, n, w, b, 0, 0, mh, ml, sc, sh);
}

/* col_coeffs_range over all K columns of slab a, with the periodic tails. */
static int TF(col_coeffs)(const fn_col_shape *s, const fn_norm_args *p, ptrdiff_t a, T *c)
{
    int ok = TF(col_coeffs_range)(s, p, a, c, 0, s->K);
    for (int j = 0; j < 4; j++) TF(col_periodic_tail)(c + j * TF(col_c2)(s->K), s->K);
    return ok;
}

/* 1 when slab rows are contiguous in x and y, so that col_norm_flat can walk them
 * as one flat range (coefficients in T and per column). */
static inline int TF(col_flat_ok)(const fn_col_shape *s, const T *y, const fn_norm_args *p)
{
    return !(p->w && s->w_along_r) && s->xr == s->K && s->yr == s->K && ((uintptr_t)y % sizeof(T)) == 0;
}

/* Lanes [0, cnt) of the normalized values at x (cnt <= TLANES), with the
 * coefficients of their columns at c: mh, then ml, sc and sh at steps of c2
 * (col_coeffs' layout, c2 = col_c2(K)). Full, partial, head and tail vectors all come
 * from here, with the multiply-add written out, so a value's bits do not depend
 * on where a cut or the output's alignment puts it. */
static inline VT TF(col_norm_vec)(const T *x, const T *c, ptrdiff_t c2, ptrdiff_t cnt)
{
    VT d = (TF(load_n)(x, cnt, 0) - TF(load_n)(c, cnt, 0)) - TF(load_n)(c + c2, cnt, 0);
    return TF(fmadd)(d, TF(load_n)(c + 2 * c2, cnt, 0), TF(load_n)(c + 3 * c2, cnt, 0));
}

/* Normalize elements [e0, e1) of slab a (rows taken end to end, col_flat_ok)
 * given its T coefficients: one flat range written with aligned stores
 * (non-temporal ones when p->stream), whatever the alignment of a row, so no
 * store straddles two lines (see align_head); each vector's coefficients load
 * from its first column on, through the arrays' periodic tails. */
static void TF(col_norm_flat)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p,
                              ptrdiff_t a, ptrdiff_t e0, ptrdiff_t e1, const T *c)
{
    ptrdiff_t K = s->K, c2 = TF(col_c2)(K), step = TLANES % K;
    /* (read once: with -fno-strict-aliasing every store to y reloaded it) */
    const int stream = p->stream;
    const T *xf = x + a * s->xa + e0;
    T *yf = y + a * s->ya + e0;
    ptrdiff_t n = e1 - e0, i = fn_min(n, TF(vec_head)(yf)), col = e0 % K;
    if (i) {
        TF(store_part)(yf, i, TF(col_norm_vec)(xf, c + col, c2, i));
        col = (col + i) % K;
    }
    for (; i + TLANES <= n; i += TLANES) {
        TF(store_vec)(yf + i, TF(col_norm_vec)(xf + i, c + col, c2, TLANES), stream);
        col += step;
        if (col >= K) col -= K;
    }
    if (i < n) TF(store_part)(yf + i, n - i, TF(col_norm_vec)(xf + i, c + col, c2, n - i));
}

/* 1 when col_norm_tiles serves the slab's rows (col_flat_ok too): coefficients
 * larger than FN_COL_TILE_BYTES. */
static inline int TF(col_tiles_ok)(const fn_col_shape *s)
{
    return 4 * s->K * (ptrdiff_t)sizeof(T) > FN_COL_TILE_BYTES;
}

/* Rows [r0, r1) of slab a, columns [kb, ke) (col_flat_ok), normalized one tile
 * of columns at a time, each tile's coefficients read from L1 for all the rows.
 * Each row's part of a tile is stored from y's first vector boundary on (a
 * partial vector before it and after the last full one): NumPy's arrays start 16
 * bytes past a line, and every store of the row would straddle two (BatchNorm
 * (64, 4096) inference 13 % slower). */
static void TF(col_norm_tiles)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p,
                               ptrdiff_t a, ptrdiff_t r0, ptrdiff_t r1, const T *c, ptrdiff_t kb, ptrdiff_t ke)
{
    ptrdiff_t K = s->K, c2 = TF(col_c2)(K), kt = FN_COL_TILE_BYTES / (4 * (ptrdiff_t)sizeof(T));
    const int stream = p->stream;
    for (ptrdiff_t k0 = kb; k0 < ke; k0 += kt) {
        ptrdiff_t k1 = fn_min(k0 + kt, ke);
        for (ptrdiff_t r = r0; r < r1; r++) {
            const T *xr = x + a * s->xa + r * K;
            T *yr = y + a * s->ya + r * K;
            ptrdiff_t k = k0, h = fn_min(k1 - k0, TF(vec_head)(yr + k0));
            if (h) {
                TF(store_part)(yr + k, h, TF(col_norm_vec)(xr + k, c + k, c2, h));
                k += h;
            }
            for (; k + TLANES <= k1; k += TLANES)
                TF(store_vec)(yr + k, TF(col_norm_vec)(xr + k, c + k, c2, TLANES), stream);
            if (k < k1) TF(store_part)(yr + k, k1 - k, TF(col_norm_vec)(xr + k, c + k, c2, k1 - k));
        }
    }
}

/* Normalize rows [r0, r1) of slab a given its coefficients (ok == 0: in double). */
static void TF(col_norm_rows)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p,
                              ptrdiff_t a, ptrdiff_t r0, ptrdiff_t r1, const T *c, int ok)
{
    ptrdiff_t K = s->K, c2 = TF(col_c2)(K);
    const T *w = (const T *)p->w, *b = (const T *)p->b;
    const T *mh = c, *ml = c + c2, *sc = c + 2 * c2, *sh = c + 3 * c2;
    int along_r = w && s->w_along_r;
    if (ok && TF(col_flat_ok)(s, y, p)) {
        if (TF(col_tiles_ok)(s)) TF(col_norm_tiles)(s, x, y, p, a, r0, r1, c, 0, K);
        else TF(col_norm_flat)(s, x, y, p, a, r0 * K, r1 * K, c);
        return;
    }
    for (ptrdiff_t r = r0; r < r1; r++) {
        const T *xr = x + a * s->xa + r * s->xr;
        T *yr = y + a * s->ya + r * s->yr;
        if (!ok) {
            for (ptrdiff_t k = 0; k < K; k++) {
                double rstd = 1.0 / sqrt(p->var[a * K + k] + p->eps);
                double v = ((double)xr[k] - p->mean[a * K + k]) * rstd;
                if (w) v = along_r ? v * (double)w[r] + (b ? (double)b[r] : 0.0)
                               : v * (double)w[k] + (b ? (double)b[k] : 0.0);
                yr[k] = (T)v;
            }
        } else if (along_r) {
            T wr = w[r], br = b ? b[r] : (T)0;
#pragma omp simd
            for (ptrdiff_t k = 0; k < K; k++) yr[k] = (((xr[k] - mh[k]) - ml[k]) * sc[k]) * wr + br;
        } else {
            /* per-column affine: coefficient vectors for 2-vector column chunks */
            ptrdiff_t k = 0;
            for (; k + 2 * TLANES <= K; k += 2 * TLANES) {
                VT v0 = ((TF(loadt)(xr + k) - TF(loadt)(mh + k)) - TF(loadt)(ml + k)) * TF(loadt)(sc + k)
                        + TF(loadt)(sh + k);
                VT v1 = ((TF(loadt)(xr + k + TLANES) - TF(loadt)(mh + k + TLANES)) - TF(loadt)(ml + k + TLANES))
                        * TF(loadt)(sc + k + TLANES) + TF(loadt)(sh + k + TLANES);
                TF(storet)(yr + k, v0);
                TF(storet)(yr + k + TLANES, v1);
            }
            for (; k < K; k++) yr[k] = ((xr[k] - mh[k]) - ml[k]) * sc[k] + sh[k];
        }
    }
}

/* A slab's statistics after col_fold has merged its n rows (compensations ca,
 * NULL after a single merge; means relative to the slab's first row xs): the
 * means and the biased variances, NaN without rows, then shared by groups of
 * Kg columns. A group merges its columns' means taken relative to its first
 * column's reference (a data value, as the columns' own): merged as absolute
 * values, each mean's rounding at |mean|'s ulp entered the variance of the
 * means, and float64 channels-last GroupNorm of data N(3e5, 1e-2) came out with
 * variances 3.5e-10 off (relatively), where NCHW gave 7e-16. With Kf > 0 (Kg 1)
 * the caller merges columns k, k + Kf, ... itself (col_narrow_stats): column
 * k's mean is left relative to column k % Kf's reference for it. */
static void TF(col_fold_finish)(double *mean, double *m2, const double *ca, double n, ptrdiff_t K, ptrdiff_t Kg,
                                ptrdiff_t Kf, int rms, const T *xs)
{
    /* framed: means taken relative to their group's first reference r0, the
     * groups merged, r0 added back */
    int framed = Kg > 1 && !rms && n > 0;
    ptrdiff_t step = framed ? Kg : K;
    for (ptrdiff_t g0 = 0; g0 < K; g0 += step) {
        double r0 = framed ? TF(col_ref)(xs, g0) : 0.0;
        for (ptrdiff_t k = g0; k < fn_min(g0 + step, K); k++) {
            if (n == 0) { mean[k] = NAN; m2[k] = NAN; continue; }
            double rk = Kf > 0 ? TF(col_ref)(xs, k % Kf) : r0;
            mean[k] = rms ? 0.0 : (TF(col_ref)(xs, k) - rk) + (mean[k] + (ca ? ca[k] : 0.0));
            m2[k] /= n;
        }
    }
    fn_merge_column_groups(mean, m2, K, Kg);
    for (ptrdiff_t g0 = 0; framed && g0 < K; g0 += Kg) {
        double r0 = TF(col_ref)(xs, g0);
        for (ptrdiff_t k = g0; k < fn_min(g0 + Kg, K); k++) mean[k] += r0;
    }
}

static void TF(col_slab_stats)(const fn_col_shape *s, const T *x, const fn_norm_args *p, ptrdiff_t a, double *scratch)
{
    ptrdiff_t K = s->K, nsb = (s->R + FN_COL_BLOCK * FN_COL_SUPER - 1) / (FN_COL_BLOCK * FN_COL_SUPER);
    int rms = p->mode == FN_MODE_RMS;
    double *mean = p->mean + a * K, *m2 = p->var + a * K, *pm = scratch + 6 * K, *pm2 = scratch + 7 * K;
    double *ca = scratch + 8 * K, n = 0;
    for (ptrdiff_t sb = 0; sb < nsb; sb++) {
        TF(col_super_stats)(s, x, a, sb, rms, scratch, pm, pm2);
        double nb = (double)TF(col_super_rows)(s, sb);
        TF(col_fold)(n, mean, m2, ca, nb, pm, pm2, K, rms);
        n += nb;
    }
    TF(col_fold_finish)(mean, m2, ca, n, K, s->Kg, p->mean_frame, rms, x + a * s->xa);
}

/* Doubles of col_slab's scratch: col_slab_stats' 9K + 4 TLANES, or the
 * coefficients from their base (col_coef_base) where those take more. */
static inline size_t TF(col_slab_doubles)(ptrdiff_t K)
{
    ptrdiff_t coef_bytes = (4 * TF(col_c2)(K) + FN_COEF_LEAD) * (ptrdiff_t)sizeof(T);
    return (size_t)fn_max(9 * K + 4 * TLANES, (coef_bytes + (ptrdiff_t)sizeof(double) - 1) / (ptrdiff_t)sizeof(double));
}

/* scratch: col_slab_doubles(K), line-aligned (statistics, then the coefficients).
 * A slab larger than half of FN_L2_BYTES is normalized from its end, which its
 * statistics pass read last (see FN_COL_MIRROR_BYTES). */
static void TF(col_slab)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p, ptrdiff_t a, double *scratch)
{
    if (!p->stats_given) TF(col_slab_stats)(s, x, p, a, scratch);
    if (y) {
        T *c = TF(col_coef_base)((T *)scratch, y);
        int ok = TF(col_coeffs)(s, p, a, c);
        ptrdiff_t row_bytes = s->K * (ptrdiff_t)sizeof(T);
        if (!p->stats_given && s->R * row_bytes > FN_L2_BYTES / 2) {
            /* from the slab's end, a piece at a time (see FN_COL_MIRROR_BYTES) */
            ptrdiff_t piece = fn_max(1, FN_COL_MIRROR_BYTES / row_bytes);
            for (ptrdiff_t r1 = s->R; r1 > 0; r1 -= piece)
                TF(col_norm_rows)(s, x, y, p, a, fn_max(0, r1 - piece), r1, c, ok);
        } else {
            TF(col_norm_rows)(s, x, y, p, a, 0, s->R, c, ok);
        }
    }
}

static int TF(col_split)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p, int nt)
{
    ptrdiff_t K = s->K, A = s->A, rows = FN_COL_BLOCK * FN_COL_SUPER;
    ptrdiff_t nsb = (s->R + rows - 1) / rows, n_blocks = A * nsb;
    int rms = p->mode == FN_MODE_RMS;
    int status = FN_OK;
    if (!p->stats_given) {
        double *part = (double *)fn_scratch_alloc(sizeof(double) * 2 * (size_t)K * (size_t)n_blocks);
        if (!part) return FN_ENOMEM;
        /* item = (superblock of a slab, range of cw columns) */
        ptrdiff_t cw = fn_col_cut(K, n_blocks, nt, K), ncut = (K + cw - 1) / cw, n_items = n_blocks * ncut;
        fn_share sh[FN_MAX_SHARES];
        int ntc = fn_shares_threads(nt);
        fn_shares_init(sh, ntc, n_items);
        FN_PARALLEL_TEAM(ntc, tid,
            double *scratch = (double *)fn_scratch_alloc(sizeof(double) * 6 * (size_t)cw);
            if (!scratch) __atomic_store_n(&status, FN_ENOMEM, __ATOMIC_RELAXED);
            ptrdiff_t it;
            while (scratch && (it = fn_shares_claim(sh, ntc, tid)) >= 0) {
                ptrdiff_t blk = it / ncut, k0 = (it % ncut) * cw;
                fn_col_shape sub = *s;
                sub.K = fn_min(cw, K - k0);
                double *pm = part + 2 * K * blk + k0;
                TF(col_super_stats)(&sub, x + k0, blk / nsb, blk % nsb, rms, scratch, pm, pm + K);
            }
            fn_scratch_free(scratch);
        );
        /* the means' compensations during the fold, as col_slab_stats keeps them */
        double *ca = status == FN_OK ? (double *)fn_scratch_alloc(sizeof(double) * (size_t)K) : NULL;
        if (!ca) { fn_scratch_free(part); return status != FN_OK ? status : FN_ENOMEM; }
        for (ptrdiff_t a = 0; a < A; a++) {
            double *mean = p->mean + a * K, *m2 = p->var + a * K, n = 0;
            for (ptrdiff_t sb = 0; sb < nsb; sb++) {
                ptrdiff_t it = a * nsb + sb;
                double nb = (double)TF(col_super_rows)(s, sb);
                TF(col_fold)(n, mean, m2, ca, nb, part + 2 * K * it, part + 2 * K * it + K, K, rms);
                n += nb;
            }
            TF(col_fold_finish)(mean, m2, ca, n, K, s->Kg, p->mean_frame, rms, x + a * s->xa);
        }
        fn_scratch_free(ca);
        fn_scratch_free(part);
    }
    if (y) {
        ptrdiff_t cs = 4 * TF(col_c2)(K);
        T *block = (T *)fn_scratch_alloc(sizeof(T) * (size_t)(cs * A + FN_COEF_LEAD) + sizeof(int) * (size_t)A);
        if (!block) return FN_ENOMEM;
        T *coef = TF(col_coef_base)(block, y);
        int *ok = (int *)(block + cs * A + FN_COEF_LEAD);
        int flat = TF(col_flat_ok)(s, y, p);
        for (ptrdiff_t a = 0; a < A; a++) {
            ok[a] = TF(col_coeffs)(s, p, a, coef + cs * a);
            flat &= ok[a];
        }
        /* items of at least FN_COL_BLOCK rows and about FN_CHUNK_ELEMS values:
         * enough work to amortize the dispatch (see fn_col_step for fewer) */
        ptrdiff_t rows = fn_max(FN_COL_BLOCK, FN_CHUNK_ELEMS / fn_max(1, K));
        ptrdiff_t step = fn_col_step(A, s->R, K, rows, flat, TF(col_tiles_ok)(s), TLANES, nt);
        ptrdiff_t slab = s->R * K, nrb = (slab + step - 1) / step, n_norm = A * nrb;
        /* after the statistics pass, each thread starts with the rows it read
         * last, still in its L2 (BatchNorm (16, 28, 28, 128) 10 % faster) */
        int mirror = !p->stats_given;
        FN_PARALLEL_SHARES(nt, n_norm, it0,
            ptrdiff_t it = mirror ? fn_share_mirror(it0, n_norm, nt) : it0;
            ptrdiff_t a = it / nrb, e0 = (it % nrb) * step, e1 = fn_min(e0 + step, slab);
            const T *ca = coef + cs * a;
            /* whole rows (tiles, or the flat walk) unless cut inside a row */
            if (flat && (e0 % K != 0 || e1 % K != 0)) TF(col_norm_flat)(s, x, y, p, a, e0, e1, ca);
            else TF(col_norm_rows)(s, x, y, p, a, e0 / K, e1 / K, ca, ok[a]);
        );
        fn_scratch_free(block);
    }
    return FN_OK;
}

/* Columns per item of the one-walk paths for few rows (col_norm_fused,
 * col_bwd_walk): the item's rows about FN_COL_FUSED_BYTES for two arrays, a
 * multiple of FN_COL_CHECK and of Kg, at most FN_COL_CARRY_MAX, narrower where that makes
 * two items per thread; 0 (the separate passes) for more rows than a
 * superblock, row parts under FN_COL_FUSED_MIN_BYTES (the passes over whole rows
 * were faster from 256 rows of float32 on), or fewer than two items per thread
 * (the walk cuts columns only; the separate passes cut rows too). */
static ptrdiff_t TF(col_fused_cols)(const fn_col_shape *s, int nt)
{
    if (s->R < 1 || s->R > FN_COL_BLOCK * FN_COL_SUPER) return 0;
    /* items of whole FN_COL_CHECK chunks and whole groups of Kg columns */
    ptrdiff_t g = FN_COL_CHECK, h = s->Kg;
    while (h) { ptrdiff_t t = g % h; g = h; h = t; }
    ptrdiff_t unit = FN_COL_CHECK / g * s->Kg;
    ptrdiff_t cw = FN_COL_FUSED_BYTES / (2 * s->R * (ptrdiff_t)sizeof(T)) / unit * unit;
    if (cw * (ptrdiff_t)sizeof(T) < FN_COL_FUSED_MIN_BYTES) return 0;
    cw = fn_max(unit, fn_min(FN_COL_CARRY_MAX, cw) / unit * unit);
    ptrdiff_t per_slab = (2 * (ptrdiff_t)nt + s->A - 1) / s->A;
    if (nt > 1 && (s->K + cw - 1) / cw < per_slab)  /* narrower items, two per thread */
        cw = ((s->K + per_slab - 1) / per_slab + unit - 1) / unit * unit;
    if (cw * (ptrdiff_t)sizeof(T) < FN_COL_FUSED_MIN_BYTES || cw > FN_COL_CARRY_MAX) return 0;
    return nt <= 1 || s->A * ((s->K + cw - 1) / cw) >= 2 * (ptrdiff_t)nt ? cw : 0;
}

/* Whether the memory of x and y (rows of K values at strides xr, yr; slabs at xa,
 * ya) may overlap: their spans meet. */
static inline int TF(col_spans_meet)(const fn_col_shape *s, const T *x, const T *y)
{
    ptrdiff_t xlo = 0, xhi = s->K, ylo = 0, yhi = s->K;
    const ptrdiff_t ext[4] = {(s->A - 1) * s->xa, (s->R - 1) * s->xr, (s->A - 1) * s->ya, (s->R - 1) * s->yr};
    for (int i = 0; i < 2; i++) {
        if (ext[i] < 0) xlo += ext[i]; else xhi += ext[i];
        if (ext[i + 2] < 0) ylo += ext[i + 2]; else yhi += ext[i + 2];
    }
    return (uintptr_t)(x + xlo) < (uintptr_t)(y + yhi) && (uintptr_t)(y + ylo) < (uintptr_t)(x + xhi);
}

/* Normalization of slabs of one superblock (col_fused_cols), rows contiguous
 * (col_flat_ok), statistics per column or per group of Kg columns, in one walk:
 * each item, cw columns of a slab, takes its statistics (col_super_stats; none
 * in inference), its coefficients (col_coeffs_range) and its output
 * (col_norm_tiles) while its rows are in cache; before, the fold and the
 * coefficients ran serially over every column before the normalize pass. A slab
 * with a coefficient not finite in T is normalized again in double afterwards
 * (col_norm_rows), as the separate passes do it: every value has their bits.
 * The threads' work arrays come with the coefficients' block, so that no
 * allocation can fail once the first output is written. */
static int TF(col_norm_fused)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p, ptrdiff_t cw, int nt)
{
    ptrdiff_t A = s->A, K = s->K, R = s->R, cs = 4 * TF(col_c2)(K), ncut = (K + cw - 1) / cw;
    int rms = p->mode == FN_MODE_RMS;
    int ntc = fn_shares_threads(nt);
    /* per thread, col_super_stats' 6 cw doubles and the item's partial statistics;
     * then the coefficients of every slab and a flag per slab */
    double *work = (double *)fn_scratch_alloc(sizeof(double) * 8 * (size_t)cw * (size_t)ntc
                                              + sizeof(T) * (size_t)(cs * A + FN_COEF_LEAD) + sizeof(int) * (size_t)A);
    if (!work) return FN_ENOMEM;
    /* (8 cw ntc doubles: the coefficients' block starts a line) */
    T *block = (T *)(work + 8 * cw * ntc), *coef = TF(col_coef_base)(block, y);
    int *ok = (int *)(block + cs * A + FN_COEF_LEAD);
    for (ptrdiff_t a = 0; a < A; a++) ok[a] = 1;
    fn_share sh[FN_MAX_SHARES];
    fn_shares_init(sh, ntc, A * ncut);
    FN_PARALLEL_TEAM(ntc, tid,
        double *scratch = work + 8 * cw * tid;
        ptrdiff_t it;
        while ((it = fn_shares_claim(sh, ntc, tid)) >= 0) {
            ptrdiff_t a = it / ncut, k0 = (it % ncut) * cw, k1 = fn_min(k0 + cw, K);
            fn_col_shape sub = *s;
            sub.K = k1 - k0;
            double *mean = p->mean + a * K + k0, *m2 = p->var + a * K + k0;
            if (!p->stats_given) {
                TF(col_super_stats)(&sub, x + k0, a, 0, rms, scratch, scratch + 6 * cw, scratch + 7 * cw);
                TF(col_fold)(0, mean, m2, NULL, (double)R, scratch + 6 * cw, scratch + 7 * cw, sub.K, rms);
                TF(col_fold_finish)(mean, m2, NULL, (double)R, sub.K, s->Kg, 0, rms, x + a * s->xa + k0);
            }
            if (TF(col_coeffs_range)(s, p, a, coef + cs * a, k0, k1))
                TF(col_norm_tiles)(s, x, y, p, a, 0, R, coef + cs * a, k0, k1);
            else
                __atomic_store_n(&ok[a], 0, __ATOMIC_RELAXED);
        }
        if (p->stream) fn_store_fence();
    );
    int redo = 0;
    for (ptrdiff_t a = 0; a < A; a++) redo |= !ok[a];
    if (redo)
        FN_PARALLEL_SHARES(nt, A * R, it,
            ptrdiff_t a = it / R, r = it % R;
            if (!ok[a]) TF(col_norm_rows)(s, x, y, p, a, r, r + 1, coef + cs * a, 0);
        );
    fn_scratch_free(work);
    return FN_OK;
}

/* Rows per wide row of the narrow column walks: the fewest rows of K values that
 * fill whole runs of `lanes` values (a vector for col_narrow_stats, a pair of them
 * for the backward's col_bwd_sums_narrow). */
static inline ptrdiff_t TF(col_narrow_rows)(ptrdiff_t K, ptrdiff_t lanes)
{
    ptrdiff_t m = 1;
    while ((m * K) % lanes) m++;
    return m;
}

/* Whether col_narrow_stats takes the statistics: fewer than four vectors of
 * columns and not a whole number of them (the columns past the last whole
 * vector are summed one at a time: 8 of (N, 24) float32 took as long as the
 * other 16), rows end to end, per-column mean and variance. */
static inline int TF(col_narrow_ok)(const fn_col_shape *s, const fn_norm_args *p)
{
    return s->K % TLANES != 0 && s->K < 4 * TLANES && s->xr == s->K && s->Kg == 1
           && p->mode == FN_MODE_MEANVAR && !p->stats_given
           && s->R >= 4 * TF(col_narrow_rows)(s->K, TLANES);
}

/* Column statistics of few columns (col_narrow_ok) into p->mean, p->var: m rows
 * at a time are one row of m K columns, a whole number of vectors, whose
 * statistics the column walk takes with every lane busy; column k's are the
 * merge of wide columns k, K + k, ... (equal counts) and of the last R % m rows.
 * One lane per column, with K of the vector's lanes busy, had taken 180 us for
 * the statistics of (100000, 3) float32, five times its normalize. The wide
 * columns' means come relative to column k's first value (mean_frame) and are
 * merged so, as col_fold_finish merges a group's: merged as absolute values,
 * float64 variances of (16384, 6) N(3e5, 1e-2) data were 1.6e-11 off. */
static int TF(col_narrow_stats)(const fn_col_shape *s, const T *x, const fn_norm_args *p)
{
    ptrdiff_t K = s->K, m = TF(col_narrow_rows)(K, TLANES), Kw = m * K, Rw = s->R / m, A = s->A;
    fn_col_shape wide = *s;
    wide.R = Rw;
    wide.K = Kw;
    wide.xr = wide.yr = Kw;
    fn_norm_args q = *p;
    q.w = q.b = NULL;
    q.mean_frame = K;
    double *st = (double *)fn_scratch_alloc(sizeof(double) * 2 * (size_t)(A * Kw));
    if (!st) return FN_ENOMEM;
    q.mean = st;
    q.var = st + A * Kw;
    int status = TF(col_norm)(&wide, x, NULL, &q);
    if (status == FN_OK) {
        double n1 = (double)(m * Rw), nt = (double)(s->R - m * Rw);
        for (ptrdiff_t a = 0; a < A; a++) {
            const T *tail = x + a * s->xa + m * Rw * K;
            for (ptrdiff_t k = 0; k < K; k++) {
                double r0 = TF(col_ref)(x + a * s->xa, k), mean, var;
                fn_merge_equal_counts(q.mean + a * Kw + k, q.var + a * Kw + k, m, K, &mean, &var);
                fn_acc acc = {n1, mean, var * n1};
                if (nt > 0) {
                    /* Chan's merge with the rows left over, in the same frame */
                    double tm = 0, tq = 0;
                    for (ptrdiff_t r = 0; r < (ptrdiff_t)nt; r++) tm += (double)tail[r * K + k] - r0;
                    tm /= nt;
                    for (ptrdiff_t r = 0; r < (ptrdiff_t)nt; r++) {
                        double d = ((double)tail[r * K + k] - r0) - tm;
                        tq += d * d;
                    }
                    fn_acc_merge(&acc, nt, tm, tq);
                }
                p->mean[a * K + k] = r0 + (acc.mean + acc.c);
                p->var[a * K + k] = acc.m2 / acc.n;
            }
        }
    }
    fn_scratch_free(st);
    return status;
}

static int TF(col_norm)(const fn_col_shape *s, const T *x, T *y, const fn_norm_args *p_in)
{
    ptrdiff_t A = s->A, K = s->K;
    if (A * K == 0) return FN_OK;
    fn_norm_args args = *p_in;
    const fn_norm_args *p = &args;
    double *own = fn_own_stats(&args, A * K);
    if (!args.mean) return FN_ENOMEM;
    if (TF(col_narrow_ok)(s, p)) {
        int status = TF(col_narrow_stats)(s, x, &args);
        if (status != FN_OK || !y) {
            fn_scratch_free(own);
            return status;
        }
        args.stats_given = 1;
    }
    double work = (double)A * (double)s->R * (double)K;
    int nt = work < FN_SERIAL_ELEMS ? 1 : p->nthreads;
    if (nt > 1) nt = fn_threads_acquire(nt);
    int status = FN_OK;
    /* col_split normalizes in a pass of its own, col_slab slab by slab. Both
     * stream from FN_STREAM_PASS_BYTES on: the slab walk's x and y together no
     * longer stay in a 32 MiB L3 from call to call, and streamed, channels-last
     * GroupNorm (24.5 MiB) ran 1.41x (slabs of 196 KiB) and 1.51x (784 KiB)
     * faster at one thread, 1.03x and 1.54x at two (AMD EPYC Zen 3, same-process
     * A/B, both orders, 2026-12-01; slabs up to 1 MiB had taken cached stores
     * below FN_STREAM_BYTES) */
    int slabs = nt <= 1 || A >= 4 * (ptrdiff_t)nt;
    args.stream = p_in->stream && y != NULL && fn_stream_output(work * sizeof(T), 1);
    ptrdiff_t fused = y && TF(col_flat_ok)(s, y, p) ? TF(col_fused_cols)(s, nt) : 0;
    /* the one walk writes a slab's cuts before it knows every cut's coefficients,
     * and normalizes a slab with one not finite in T again from x afterwards
     * (col_norm_fused), which an output in place of x has overwritten: in-place
     * BatchNorm of (2, 2048) with one channel's variance + eps at 0 came out with
     * half the other channels normalized twice. Such slabs of several cuts take
     * the separate passes, which form all of a slab's coefficients first. */
    if (fused && fused < K && TF(col_spans_meet)(s, x, y)) fused = 0;
    if (fused) {
        status = TF(col_norm_fused)(s, x, y, p, fused, nt);
    } else if (slabs) {
        fn_share sh[FN_MAX_SHARES];
        int ntc = fn_shares_threads(nt);
        fn_shares_init(sh, ntc, A);
        FN_PARALLEL_TEAM(ntc, tid,
            double *scratch = (double *)fn_scratch_alloc(sizeof(double) * TF(col_slab_doubles)(K));
            if (!scratch) __atomic_store_n(&status, FN_ENOMEM, __ATOMIC_RELAXED);
            ptrdiff_t a;
            while (scratch && (a = fn_shares_claim(sh, ntc, tid)) >= 0)
                TF(col_slab)(s, x, y, p, a, scratch);
            if (p->stream) fn_store_fence();
            fn_scratch_free(scratch);
        );
    } else {
        status = TF(col_split)(s, x, y, p, nt);
    }
    if (nt > 1) fn_threads_release(nt);
    fn_scratch_free(own);
    return status;
}

#undef TF
#undef VD
#undef VL
#undef VT
#undef LANES
#undef TLANES
#undef FN_REALIGNED
