/* transpose_template.h - one tile of a transposing copy, for one SIMD path and
 * one element size (fn_transpose.c walks the tiles).
 *
 * Included by norm_isa.h with FN_TR_BYTES set to 4 and to 8; elements are
 * moved as unsigned integers of that size, so the bits (NaN payloads included)
 * are copied unchanged. The tile is
 *     dst[a * drow + b] = src[b * sb + a],   a < na, b < nb,
 * the source contiguous along a, the destination along b.
 *
 * Why in registers: copied element by element through a local buffer, a tile
 * spent one scalar load and store per element, and the copy of a (8192, 768)
 * float32 array ran at a tenth of a plain copy's speed. Here FN_TR_W source rows
 * of FN_TR_W elements are loaded as vectors and transposed by log2(FN_TR_W)
 * rounds of two-source shuffles, each round swapping the off-diagonal blocks of
 * half the previous size.
 *
 * Why whole lines: a block covers FN_TR_LINE source rows (one cache line of
 * every destination row it writes), so each destination line is written once,
 * completely, by consecutive stores. With non-temporal stores (stream) no line
 * is read for ownership; with cached stores the destination lines of the block
 * FN_TR_AHEAD rows down are prefetched for writing: strided one line per row,
 * they are not followed by the hardware prefetcher, and without the prefetch the
 * copy waited on every read-for-ownership (2.5x the time of a plain copy of the
 * same bytes, against 1.2-1.5x with it, in a stand-alone test). */

#define TR(name) FN_CAT(name, FN_CAT(_b, FN_TR_BYTES))
#if FN_TR_BYTES == 4
#define TRE uint32_t
#else
#define TRE uint64_t
#endif
/* lanes per vector; elements per cache line */
#define FN_TR_W (FN_VBYTES / FN_TR_BYTES)
#define FN_TR_LINE (64 / FN_TR_BYTES)
#define FN_TR_SUBS (FN_TR_LINE / FN_TR_W > 0 ? FN_TR_LINE / FN_TR_W : 1)

typedef TRE TR(fn_tr_vec) __attribute__((vector_size(FN_VBYTES)));

#ifndef FN_TRANSPOSE_SHARED
#define FN_TRANSPOSE_SHARED
/* destination rows between a block and the rows whose lines it prefetches */
#define FN_TR_AHEAD 16
/* lane l of the lower (upper) result of a round of block size h over vectors of
 * w lanes: the first (second) row keeps the lanes outside the block and takes
 * the other row's */
#define FN_TR_LO(l, w, h) (((l) & (h)) ? (w) + (l) - (h) : (l))
#define FN_TR_HI(l, w, h) (((l) & (h)) ? (w) + (l) : (l) + (h))
#endif

#if FN_TR_W == 16
#define TR_IDX(F, h) FN_LANES16(F, 16, h)
#elif FN_TR_W == 8
#define TR_IDX(F, h) FN_LANES8(F, 8, h)
#elif FN_TR_W == 4
#define TR_IDX(F, h) FN_LANES4(F, 4, h)
#else
#define TR_IDX(F, h) FN_LANES2(F, 2, h)
#endif
#if FN_HAVE_SHUFFLEVECTOR
#define TR_SHUF(a, b, F, h) __builtin_shufflevector(a, b, TR_IDX(F, h))
#else
#define TR_SHUF(a, b, F, h) __builtin_shuffle(a, b, (TR(fn_tr_vec)){TR_IDX(F, h)})
#endif
/* one round: rows i and i + h (i & h == 0) swap their off-diagonal h-blocks */
#define TR_ROUND(r, h)                                                              \
    for (int i_ = 0; i_ < FN_TR_W; i_++)                                            \
        if (!(i_ & (h))) {                                                          \
            TR(fn_tr_vec) a_ = r[i_], b_ = r[i_ + (h)];                             \
            r[i_] = TR_SHUF(a_, b_, FN_TR_LO, (h));                                 \
            r[i_ + (h)] = TR_SHUF(a_, b_, FN_TR_HI, (h));                           \
        }

static inline TR(fn_tr_vec) TR(tr_load)(const TRE *p)
{
    TR(fn_tr_vec) v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void TR(tr_store)(TRE *p, TR(fn_tr_vec) v, int stream)
{
#if FN_VBYTES == 64 && defined(__AVX512F__)
    if (stream) { _mm512_stream_si512((__m512i *)p, (__m512i)v); return; }
#elif FN_VBYTES == 32 && defined(__AVX__)
    if (stream) { _mm256_stream_si256((__m256i *)p, (__m256i)v); return; }
#elif FN_VBYTES == 16 && defined(__SSE2__)
    if (stream) { _mm_stream_si128((__m128i *)p, (__m128i)v); return; }
#endif
    (void)stream;
    __builtin_memcpy(p, &v, FN_VBYTES);
}

/* nsub blocks of FN_TR_W x FN_TR_W side by side along b: source rows
 * s + (j * FN_TR_W + k) * sb, destination rows d + k * drow. All nsub blocks
 * are transposed before any is stored, so that the parts of each destination
 * line are stored one after the other: streamed, a line written in parts far
 * apart in time leaves its write-combining buffer partly filled (the AVX2
 * float32 copy ran 6x slower so). */
static inline __attribute__((always_inline)) void TR(tr_block)(const TRE *s, ptrdiff_t sb, TRE *d, ptrdiff_t drow,
                                                                int nsub, int stream)
{
    TR(fn_tr_vec) r[FN_TR_SUBS][FN_TR_W];
    for (int j = 0; j < nsub; j++) {
        for (int k = 0; k < FN_TR_W; k++) r[j][k] = TR(tr_load)(s + (j * FN_TR_W + k) * sb);
#if FN_TR_W > 8
        TR_ROUND(r[j], 8)
#endif
#if FN_TR_W > 4
        TR_ROUND(r[j], 4)
#endif
#if FN_TR_W > 2
        TR_ROUND(r[j], 2)
#endif
        TR_ROUND(r[j], 1)
    }
    for (int k = 0; k < FN_TR_W; k++)
        for (int j = 0; j < nsub; j++) TR(tr_store)(d + k * drow + j * FN_TR_W, r[j][k], stream);
}

/* The tile (see the top of the file). stream: non-temporal stores, allowed when
 * dst and every drow-th element lie at the start of a cache line. */
static void TR(transpose_tile)(const void *src, ptrdiff_t sb, void *dst, ptrdiff_t drow, ptrdiff_t na,
                               ptrdiff_t nb, int stream)
{
    const TRE *s0 = (const TRE *)src;
    TRE *d0 = (TRE *)dst;
    ptrdiff_t b = 0;
    for (; b + FN_TR_LINE <= nb; b += FN_TR_LINE) {
        const TRE *s = s0 + b * sb;
        TRE *d = d0 + b;
        ptrdiff_t a = 0;
        for (; a + FN_TR_W <= na; a += FN_TR_W) {
            if (!stream && a + FN_TR_AHEAD + FN_TR_W <= na)
                for (int k = 0; k < FN_TR_W; k++) __builtin_prefetch(d + (a + FN_TR_AHEAD + k) * drow, 1, 3);
            TR(tr_block)(s + a, sb, d + a * drow, drow, FN_TR_SUBS, stream);
        }
        for (; a < na; a++)
            for (ptrdiff_t k = 0; k < FN_TR_LINE; k++) d[a * drow + k] = s[k * sb + a];
    }
    /* columns short of a line: vector blocks of one width, then elements */
    for (; b + FN_TR_W <= nb; b += FN_TR_W) {
        ptrdiff_t a = 0;
        for (; a + FN_TR_W <= na; a += FN_TR_W) TR(tr_block)(s0 + b * sb + a, sb, d0 + a * drow + b, drow, 1, 0);
        for (; a < na; a++)
            for (ptrdiff_t k = 0; k < FN_TR_W; k++) d0[a * drow + b + k] = s0[(b + k) * sb + a];
    }
    for (; b < nb; b++)
        for (ptrdiff_t a = 0; a < na; a++) d0[a * drow + b] = s0[b * sb + a];
}

#undef TR
#undef TRE
#undef FN_TR_W
#undef FN_TR_LINE
#undef FN_TR_SUBS
#undef TR_IDX
#undef TR_SHUF
#undef TR_ROUND
