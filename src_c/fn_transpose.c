/* fn_transpose.c - copies between arrays whose memory orders differ.
 *
 * When a backward's dy does not share x's layout (x a transposed view, dy
 * C-contiguous), or a layout has no kernel shape, the wrapper copies an array
 * into another order. Element by element, one of the two sides strides through
 * memory: NumPy's copy of a (4096, 512) float32 array into Fortran order took
 * 9 ms, four times a LayerNorm backward. Here the two innermost axes (the
 * destination's unit-stride axis and the source's) are taken in tiles of
 * FN_TILE x FN_TILE elements, so the tile's source lines stay in L1 while its
 * destination rows are written, and the tiles are shared among threads. */
#include <stdint.h>
#include <string.h>
#include "fn_internal.h"

#define FN_TILE 64

/* One tile: rows a in [0, na) of the destination (stride drow), each nb
 * contiguous elements, read from the source at stride sb per element and sa
 * per row. The source is read row by row into a local tile first: read and
 * written directly, power-of-two strides put the tile's loads and stores in one
 * L1 set and at the same offsets within their pages ((4096, 512) float32 into
 * Fortran order took 9 ms, (4000, 500) 1.7 ms). Elements of 4 or 8 bytes, copied
 * as integers (bits unchanged). */
#define FN_TILE_COPY(UT)                                                            \
    do {                                                                            \
        UT buf_[FN_TILE * FN_TILE];                                                 \
        for (ptrdiff_t b_ = 0; b_ < nb; b_++) {                                     \
            const UT *s_ = (const UT *)src + b_ * sb;                               \
            for (ptrdiff_t a_ = 0; a_ < na; a_++) buf_[a_ * FN_TILE + b_] = s_[a_ * sa]; \
        }                                                                           \
        for (ptrdiff_t a_ = 0; a_ < na; a_++) {                                     \
            UT *d_ = (UT *)dst + a_ * drow;                                         \
            for (ptrdiff_t b_ = 0; b_ < nb; b_++) d_[b_] = buf_[a_ * FN_TILE + b_];   \
        }                                                                           \
    } while (0)

static void fn_tile(const void *src, ptrdiff_t sa, ptrdiff_t sb, void *dst, ptrdiff_t drow, ptrdiff_t na,
                    ptrdiff_t nb, size_t elsize)
{
    ptrdiff_t es = (ptrdiff_t)elsize;
    if (sb == 1) {
        /* both contiguous along the tile's rows (a view of every other row) */
        for (ptrdiff_t a = 0; a < na; a++)
            memcpy((char *)dst + a * drow * es, (const char *)src + a * sa * es, (size_t)nb * elsize);
        return;
    }
    if (elsize == 4) FN_TILE_COPY(uint32_t);
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
    ptrdiff_t ta = (NA + FN_TILE - 1) / FN_TILE, tb = (NB + FN_TILE - 1) / FN_TILE;
    ptrdiff_t outer = total / (NA * NB), items = outer * ta * tb;
    int nt = nthreads > 1 && total >= FN_SERIAL_ELEMS ? fn_threads_acquire(nthreads) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (ptrdiff_t it = 0; it < items; it++) {
        ptrdiff_t o = it / (ta * tb), t = it % (ta * tb), a0 = (t % ta) * FN_TILE, b0 = (t / ta) * FN_TILE;
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
        ptrdiff_t na = fn_min(FN_TILE, NA - a0), nb = fn_min(FN_TILE, NB - b0);
        if (dstride[ib] == 1) {
            fn_tile(s, sa, sstride[ib], dp, da, na, nb, elsize);
        } else {
            /* no contiguous destination axis: element by element */
            for (ptrdiff_t a = 0; a < na; a++)
                for (ptrdiff_t b = 0; b < nb; b++)
                    memcpy(dp + (a * da + b * dstride[ib]) * es, s + (a * sa + b * sstride[ib]) * es, elsize);
        }
    }
    if (nt > 1) fn_threads_release(nt);
    return FN_OK;
}
