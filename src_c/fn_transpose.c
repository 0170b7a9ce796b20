/* fn_transpose.c - copies between arrays whose memory orders differ.
 *
 * When a backward's dy does not share x's layout (x a transposed view, dy
 * C-contiguous), or a layout has no kernel shape, the wrapper copies an array
 * into another order. Element by element, one of the two sides strides through
 * memory: NumPy's copy of a (4096, 512) float32 array into Fortran order took
 * 9 ms, four times a LayerNorm backward. Here the two innermost axes (the
 * destination's unit-stride axis and the source's) are taken in tiles of
 * FN_TR_ROWS x FN_TR_COLS elements, shared among threads; a tile whose source
 * is contiguous along its rows is transposed in vector registers by the active
 * SIMD path (transpose_template.h). */
#include <stdint.h>
#include <string.h>
#include "fn_internal.h"

/* destination rows and columns of a tile: the columns whole cache lines for
 * both element sizes, so that streamed tiles start on a line */
#define FN_TR_ROWS 128
#define FN_TR_COLS 64

/* A tile whose source is strided along both axes: rows a in [0, na) of the
 * destination (stride drow), each nb contiguous elements, read from the source
 * at stride sb per element and sa per row, through a local tile first: read and
 * written directly, power-of-two strides put the tile's loads and stores in one
 * L1 set and at the same offsets within their pages. Elements of 4 or 8 bytes,
 * copied as integers (bits unchanged). */
#define FN_TILE_COPY(UT)                                                            \
    do {                                                                            \
        UT buf_[FN_TR_ROWS * FN_TR_COLS];                                           \
        for (ptrdiff_t b_ = 0; b_ < nb; b_++) {                                     \
            const UT *s_ = (const UT *)src + b_ * sb;                               \
            for (ptrdiff_t a_ = 0; a_ < na; a_++) buf_[a_ * FN_TR_COLS + b_] = s_[a_ * sa]; \
        }                                                                           \
        for (ptrdiff_t a_ = 0; a_ < na; a_++) {                                     \
            UT *d_ = (UT *)dst + a_ * drow;                                         \
            for (ptrdiff_t b_ = 0; b_ < nb; b_++) d_[b_] = buf_[a_ * FN_TR_COLS + b_]; \
        }                                                                           \
    } while (0)

static void fn_tile(const void *src, ptrdiff_t sa, ptrdiff_t sb, void *dst, ptrdiff_t drow, ptrdiff_t na,
                    ptrdiff_t nb, size_t elsize, fn_tile_fn simd_tile, int stream)
{
    ptrdiff_t es = (ptrdiff_t)elsize;
    if (sb == 1) {
        /* both contiguous along the tile's rows (a view of every other row) */
        for (ptrdiff_t a = 0; a < na; a++)
            memcpy((char *)dst + a * drow * es, (const char *)src + a * sa * es, (size_t)nb * elsize);
        return;
    }
    if (sa == 1) simd_tile(src, sb, dst, drow, na, nb, stream);
    else if (elsize == 4) FN_TILE_COPY(uint32_t);
    else FN_TILE_COPY(uint64_t);
}

int fn_copy_strided(const void *src, const ptrdiff_t *sstride, void *dst, const ptrdiff_t *dstride,
                    const ptrdiff_t *shape, int nd, size_t elsize, int nthreads)
{
    if ((elsize != 4 && elsize != 8) || nd < 1 || nd > 32) return FN_EINVAL;
    ptrdiff_t total = 1;
    for (int d = 0; d < nd; d++) total *= shape[d];
    if (total == 0) return FN_OK;
    /* ib: the destination's contiguous axis (else the last); ia: the source's
     * (else the axis before ib, or the same when there is one axis) */
    int ib = nd - 1, ia = -1;
    for (int d = 0; d < nd; d++)
        if (dstride[d] == 1 && shape[d] > 1) ib = d;
    for (int d = 0; d < nd; d++)
        if (sstride[d] == 1 && shape[d] > 1 && d != ib) ia = d;
    if (ia < 0) ia = ib > 0 ? ib - 1 : (nd > 1 ? 1 : ib);
    ptrdiff_t NA = ia == ib ? 1 : shape[ia], NB = shape[ib];
    /* When the destination's strides other than along ib are whole cache lines,
     * all its rows start at one offset within a line: the column tiles are laid
     * on a grid shifted by lead_in (the first tile narrower), so that every other
     * tile starts on a line and writes whole lines. Large destinations are then
     * written with non-temporal stores (as the kernels' outputs, fastnorm.h). */
    int lines = dstride[ib] == 1;
    for (int d = 0; d < nd; d++)
        if (d != ib && shape[d] > 1 && (dstride[d] * (ptrdiff_t)elsize) % 64 != 0) lines = 0;
    ptrdiff_t lead = lines ? (ptrdiff_t)((64 - (uintptr_t)dst % 64) % 64) / (ptrdiff_t)elsize : 0;
    ptrdiff_t lead_in = (FN_TR_COLS - lead) % FN_TR_COLS;
    int stream = lines && (double)total * (double)elsize >= FN_STREAM_PASS_BYTES;
    ptrdiff_t ta = (NA + FN_TR_ROWS - 1) / FN_TR_ROWS, tb = (NB + lead_in + FN_TR_COLS - 1) / FN_TR_COLS;
    ptrdiff_t outer = total / (NA * NB), items = outer * ta * tb;
    fn_tile_fn simd_tile = fn_transpose_tile(elsize);
    int nt = nthreads > 1 && total >= FN_SERIAL_ELEMS ? fn_threads_acquire(nthreads) : 1;
    /* shares claimed tile by tile, so that a descheduled thread's tiles are
     * taken by the others (fn_share) */
    FN_PARALLEL_SHARES(nt, items, it, {
        ptrdiff_t o = it / (ta * tb), t = it % (ta * tb), a0 = (t % ta) * FN_TR_ROWS;
        ptrdiff_t b0 = fn_max(0, (t / ta) * FN_TR_COLS - lead_in), b1 = fn_min(NB, (t / ta + 1) * FN_TR_COLS - lead_in);
        /* the other axes' offsets from o, the last axis fastest */
        ptrdiff_t so = 0, dof = 0, rest = o;
        for (int d = nd - 1; d >= 0; d--) {
            if (d == ia || d == ib) continue;
            ptrdiff_t i = rest % shape[d];
            rest /= shape[d];
            so += i * sstride[d];
            dof += i * dstride[d];
        }
        ptrdiff_t sa = ia == ib ? 0 : sstride[ia], da = ia == ib ? 0 : dstride[ia], es = (ptrdiff_t)elsize;
        const char *s = (const char *)src + (so + a0 * sa + b0 * sstride[ib]) * es;
        char *dp = (char *)dst + (dof + a0 * da + b0 * dstride[ib]) * es;
        ptrdiff_t na = fn_min(FN_TR_ROWS, NA - a0), nb = b1 - b0;
        if (dstride[ib] == 1) {
            fn_tile(s, sa, sstride[ib], dp, da, na, nb, elsize, simd_tile, stream);
        } else {
            /* no contiguous destination axis: element by element */
            for (ptrdiff_t a = 0; a < na; a++)
                for (ptrdiff_t b = 0; b < nb; b++)
                    memcpy(dp + (a * da + b * dstride[ib]) * es, s + (a * sa + b * sstride[ib]) * es, elsize);
        }
    });
    if (nt > 1) fn_threads_release(nt);
    return FN_OK;
}
