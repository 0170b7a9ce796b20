/* fn_internal.h - helpers shared by every compilation unit of the engine.
 *
 * Everything here is static inline: this header is also compiled with AVX2 and
 * AVX-512 flags, and a non-static function could become the copy that the
 * baseline code links to.
 */
#ifndef FN_INTERNAL_H
#define FN_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>
#include "fastnorm.h"
#include "lrn.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define FN_CAT_(a, b) a##b
#define FN_CAT(a, b) FN_CAT_(a, b)
#define FN_UNPAREN(...) __VA_ARGS__

/* __builtin_shufflevector (clang, GCC 12 and later) extracts vector halves in
 * registers; older GCC takes a slower route through memory (same results). */
#if !defined(FN_NO_SHUFFLEVECTOR) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))
#define FN_HAVE_SHUFFLEVECTOR 1
#else
#define FN_HAVE_SHUFFLEVECTOR 0
#endif
/* Keeps vector v in a register from here on: GCC otherwise folds a load used
 * twice into both uses as memory operands, loading it twice. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FN_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define FN_IN_REGISTER(v) ((void)0)
#endif
/* F(0, ...), F(1, ...), ..., F(n - 1, ...): the lane lists of n-lane shuffles
 * (the transposing copy's rounds, the packed rows' spread coefficients). */
#define FN_LANES2(F, ...) F(0, __VA_ARGS__), F(1, __VA_ARGS__)
#define FN_LANES4(F, ...) FN_LANES2(F, __VA_ARGS__), F(2, __VA_ARGS__), F(3, __VA_ARGS__)
#define FN_LANES8(F, ...) FN_LANES4(F, __VA_ARGS__), F(4, __VA_ARGS__), F(5, __VA_ARGS__), F(6, __VA_ARGS__), \
        F(7, __VA_ARGS__)
#define FN_LANES16(F, ...) FN_LANES8(F, __VA_ARGS__), F(8, __VA_ARGS__), F(9, __VA_ARGS__), F(10, __VA_ARGS__), \
        F(11, __VA_ARGS__), F(12, __VA_ARGS__), F(13, __VA_ARGS__), F(14, __VA_ARGS__), F(15, __VA_ARGS__)
#define FN_STR_(a) #a
#define FN_STR(a) FN_STR_(a)

/* Elements per statistics block. Each block is summed in double with its first
 * element as shift, so cancellation in s2 - s1^2/n is bounded by the block
 * length (|x0 - mean|^2 <= n * var), then blocks are merged by Chan's formula. */
#define FN_BLOCK 1024
/* A float32 block whose mean square (of deviations) is below this may have lost
 * squares to underflow (FLT_MIN / FLT_EPSILON); it is summed again in double. */
#define FN_TINY_SQ 1e-30

/* Rows per block and blocks per superblock of the column kernel. */
#define FN_COL_BLOCK 64
#define FN_COL_SUPER 16
/* A column's statistics depend on its own values only: the checks that send sums
 * to the double fallback, or shift them again, run per chunk of this many columns
 * (a multiple of every path's four vectors), and a parallel walk cuts the columns
 * at multiples of it, so its bits are the serial walk's. */
#define FN_COL_CHECK 64
/* Columns per statistics item of a slab cut across its columns (col_split with
 * few superblocks: BatchNorm (64, 4096) read all its statistics on one thread). */
#define FN_COL_CUT_MIN 256
/* Bytes of the four per-column coefficient arrays a column tile of the
 * normalize reads (col_norm_tiles): wider rows are normalized tile by tile so
 * the coefficients stay in L1 (BatchNorm (64, 4096) read 64 KiB of them from L2
 * for every 16 KiB row). */
#define FN_COL_TILE_BYTES 16384
/* Column statistics over rows of at least this many bytes ask for the lines of
 * the next sub-block of rows (col_block_sums; the backward's sums, col_bwd_super,
 * for x and dy): a chunk of columns reads a few lines of every row, too sparse
 * for the prefetchers, and each sub-block met its loads as misses. Against the
 * walk without (AMD EPYC Zen 3, 2026-12-01; both builds whole, in one process,
 * 25 rounds in random order, two threads): training BatchNorm 2-D with 256
 * columns 1.12x, 512 columns 1.23x, GroupNorm (8, 32, 32, 256) 1.08x; backward:
 * BatchNorm 2-D with 256 columns 1.10x, GroupNorm (8, 32, 32, 256) 1.14x;
 * BatchNorm (32, 56, 56, 64), which does not take them, 1.01x. On one thread
 * the machine drifted more than the difference: two runs of 15 rounds gave
 * GroupNorm NHWC 1.35-1.40x and its backward 1.13x, but 0.90x and 1.19x for the
 * 2-D forward with 256 columns, 0.93x and 1.45x for its backward. Rows of 128
 * and 64 columns (512 and 256 bytes, which the prefetchers follow) ran
 * 0.89-1.07x with the requests in shorter runs, hence the limit. */
#ifndef FN_COL_AHEAD_ROW_BYTES
#define FN_COL_AHEAD_ROW_BYTES 1024
#endif
/* Column statistics over contiguous rows shorter than this ask for the next
 * sub-block's lines in address order instead (fn_ahead_cursor); with rows of
 * 8 KiB and more, sub-blocks of one to three rows, the chunk requests above ran
 * 5-7 % faster (a C loop of col_block_sums' shape, one thread, Zen 3). */
#define FN_COL_SEQ_AHEAD_MAX_ROW_BYTES 8192
/* Most columns whose backward lane sums col_bwd_super carries between sub-blocks
 * (on its stack); wider slabs are walked without sub-blocks. */
#define FN_COL_CARRY_MAX 1024
/* The one-walk column paths for few rows (col_fused_cols): bytes of the two
 * arrays an item reads (x and y, or x and dy), and the fewest bytes of a row an
 * item takes (narrower parts of rows are loaded across too many rows at once). */
#define FN_COL_FUSED_BYTES (1 << 19)
#define FN_COL_FUSED_MIN_BYTES 2048
/* Per-column arrays of the channels-last dx coefficients (col_dx_coeffs). */
#define FN_COL_DX_ARRAYS 6
/* Units per group of the backward's fused parameter sums, and the most doubles
 * of partial sums it may hold (else parameters get a pass of their own). */
#define FN_PARAM_GROUP 64
#define FN_PARAM_SCRATCH (8.0 * 1024 * 1024)
/* Rows of K units per group when each unit has parameters of its own (see
 * fn_param_group_units). */
#define FN_PARAM_GROUP_ROWS 8

/* Most units (rows) whose statistics are taken before any of them is
 * normalized, so that their dependency chains overlap. */
#define FN_UNIT_GROUP 32

/* Units of at most this many bytes walked a group at a time (seg_units: the
 * group's statistics, then its normalize) ask for the next group's lines into L2
 * while they are normalized, a segment of the next group before each segment
 * normalized, so the next statistics read from L2 instead of L3 or memory.
 * Against the walk without (AMD EPYC Zen 3, AVX2, 512 KiB L2, 2026-12-01; both
 * builds whole, in one process, 21-31 rounds in random order): GroupNorm (8,
 * 256, 32, 32) with 32 groups (units of 32 KiB) 1.10x faster at two threads and
 * 1.04x at one while the machine's memory was slow, 0.98-1.09x while it was
 * fast (the same call took 270 or 540 us from one minute to the next). Units of
 * 400 KiB (training BatchNorm (32, 64, 56, 56)) ran 0.94-1.0x with the requests
 * in shorter runs, hence the limit; asking into L1 (prefetcht0) instead of L2
 * ran 0.89x as fast. */
#ifndef FN_SEG_AHEAD_BYTES
#define FN_SEG_AHEAD_BYTES (256 * 1024)
#endif

/* Units of more than half of L1 up to this many bytes, made of segments of at
 * least FN_PIPE_SEGMENT_BYTES, take the pipelined walk (seg_units_pipelined: the
 * next unit's statistics between the normalize blocks of the current one) in
 * inputs under FN_STREAM_PASS_BYTES (units of one segment, rows and InstanceNorm
 * planes, only above FN_PIPED_MAX_ROW_BYTES: shorter ones take seg_rows_piped
 * since 2026-12-01), which stay in L3, where they took the walk a
 * unit at a time with the next unit's lines asked for (FN_SEG_AHEAD_BYTES). That
 * walk reads a unit's 32 KiB from L3 with no store to overlap, then writes it back
 * with no load to overlap; a perf profile (cpu-clock, 3000 calls) of GroupNorm
 * (8, 256, 32, 32) at one thread put a tenth of the call's samples on the burst
 * of prefetcht1 before each segment. bench/store_walks.c on one core of that
 * machine (AMD EPYC Zen 3), 2-8 MiB: 32 KiB chunks walked as statistics then
 * normalize 26-40 GB/s, with the next chunk's statistics inside the normalize
 * loop 42-51 GB/s, a copy 57-77 GB/s. Against the walk before (2026-12-01,
 * both builds whole, one process, one output array for both, 11-21 rounds in
 * random order): GroupNorm (8, 256, 32, 32) with 32 groups (units of 32 KiB)
 * 1.08-1.10x at two threads and 1.09-1.10x at one, with 16 groups (64 KiB)
 * 1.01-1.02x and 1.14-1.15x, training BatchNorm (16, 64, 32, 32) (64 KiB)
 * 0.99-1.03x and 1.07-1.09x, LayerNorm (256, 8192) without parameters 1.05x and 1.13x,
 * InstanceNorm (4, 64, 64, 128) 0.95-1.0x and 1.12x; units of 128 KiB ran
 * 0.94-0.96x at two threads; 32 MiB inputs (GroupNorm (16, 128, 64, 64)), no
 * longer streamed, 0.84-0.88x, hence the size limit; channels-last GroupNorm
 * (segments of 64 bytes, too short for the walk's blocks) 0.85x. Measured on
 * that machine only; the tuning machine (Intel, 2 MiB L2) was not lent since. */
#define FN_PIPE_UNIT_BYTES (64 * 1024)
#define FN_PIPE_SEGMENT_BYTES 1024

/* Rows and ranges at least this long are stored from their first vector boundary
 * on (align_head), read from aligned loads when they do not start on one, and
 * written end to end with their neighbours (see sums_vec_realigned,
 * seg_rows_piped); shorter ones stay in L1 and pay more for the set-up than for
 * split loads and stores (LayerNorm (512, 64) ran 5-10 % slower). */
#define FN_REALIGN_BYTES 1024

/* Rows of at most a block are walked as seg_rows_piped (statistics of the next
 * row inside the normalize loop of the current one) when x is at least this
 * large. Smaller inputs stay in cache between calls, where the group walk was
 * faster (Intel, 2 MiB L2, 2026-11-29): LayerNorm (2048, 1024), 8 MiB, took
 * 0.36-0.40 ms walked in groups and 0.43-0.45 ms piped; (4096, 1024), 16 MiB,
 * 0.72 against 0.62 ms. On the AMD EPYC (Zen 3, 512 KiB L2) rows of 1 KiB ran
 * 0.85-0.87x as fast piped below this size, rows of 2 KiB 0.95-1.03x and of 4
 * KiB 0.98-1.14x, so these keep the limit. */
#ifndef FN_PIPED_MIN_BYTES
#define FN_PIPED_MIN_BYTES (12.0 * 1024 * 1024)
#endif
/* Rows longer than a block are walked so too, in inputs of any size, their
 * statistics merged block by block as seg_unit_stats merges them, up to this
 * length: the row being normalized and the next one then share L1 with the
 * parameters' lines. Against
 * the tiled walk (weight and bias) and the pipelined one (a C harness timing
 * both builds and an OpenMP copy in alternating rounds, 2026-12-01), LayerNorm
 * float32 rows of 2048 values 1.30x faster at two threads (71 -> 93 % of copy)
 * and 1.32x at one, 4096 values 1.09x and 1.16x, 8192 values 1.00x and 1.34x,
 * RMSNorm 1.12x, float64 rows of 2048 values 1.26x (add+LayerNorm, against a
 * row at a time: 1.09-1.25x; InstanceNorm's planes of 4096 values, against the
 * pipelined walk: 1.09-1.24x); rows of 16384 float32 values ran 0.87x (without
 * parameters 0.96x, RMSNorm 1.01x), hence the limit. Below FN_PIPED_MIN_BYTES,
 * against the group, tiled and pipelined walks that such rows took there until
 * 2026-12-01 23:45 (AMD EPYC Zen 3; both builds whole, one process, alternating
 * rounds, 9 each, `out=`): LayerNorm float32 from 64 KiB to 8 MiB, rows of 2048
 * to 8192 values, 1.04-1.31x faster at one thread and 0.99-1.22x at two,
 * (100, 3001) with weight and bias 1.31x and 1.23x, float64 rows of 1536 to
 * 4096 values 1.09-1.29x and 1.02-1.18x, RMSNorm 1.09-1.17x and 1.01-1.08x,
 * InstanceNorm (8, 32, 48, 48) 1.33x and 1.10x, add+LayerNorm (256, 2048) 1.05x
 * and 1.03x; none slower beyond the +-5 % that two copies of one build differ
 * by there. */
#ifndef FN_PIPED_MAX_ROW_BYTES
#define FN_PIPED_MAX_ROW_BYTES FN_L1_BYTES
#endif

/* Rows too short for that walk (under FN_REALIGN_BYTES) are walked in groups
 * (seg_rows_lean). In inputs at least this large (half as large on one thread),
 * which do not stay in L2 or L3 from call to call, the normalize of each group
 * serves the next group, row by row (FN_LEAN_AHEAD and the others: ALONE below
 * that size):
 * - rows of FN_LEAN_PIPED_ROW_BYTES and more take their sums there and ask for
 *   the lines of their output (FN_LEAN_PIPED, seg_rows_lean_piped), so the core
 *   reads the next rows while it writes the current ones, as a copy does; on one
 *   thread, and for rows of exactly that length, they also ask for the rows of x
 *   two groups ahead (FN_LEAN_PIPED_FAR);
 * - shorter rows ask for the lines of the next group's rows of x and of their
 *   output (FN_LEAN_AHEAD).
 * Asking ahead (the walk before the pipe) made LayerNorm (65536, 128), (131072,
 * 64), (90000, 100), (262144, 32) float32 and (65536, 64) float64, 32 MiB,
 * 1.15-1.25x faster at two threads and 1.50-1.63x at one; smaller inputs, from
 * L3, only paid for it ((32768, 128), 16 MiB, 0.95x at two threads). The pipe,
 * against asking ahead (a C harness timing both builds and an OpenMP memcpy in
 * the same rounds, 2026-11-30): LayerNorm (65536, 128), (131072, 64), (90000,
 * 100) float32 and (65536, 64) float64 1.09-1.17x faster at two threads and
 * 1.09-1.14x at one, RMSNorm (131072, 64) 1.06x and 1.04x, (262144, 32) 1.0x and
 * 1.06x; rows of 64 bytes ran 0.91-0.93x as fast piped (hence the limit), rows
 * of 128 bytes 0.8x without the requests two groups ahead, which cost rows of
 * 256 bytes and more 3-6 % at two threads. Piped from 8 MiB on one thread:
 * 0.95-1.06x. */
enum { FN_LEAN_ALONE, FN_LEAN_AHEAD, FN_LEAN_PIPED, FN_LEAN_PIPED_FAR };
#define FN_LEAN_AHEAD_BYTES (32.0 * 1024 * 1024)
#define FN_LEAN_PIPED_ROW_BYTES 128
#define FN_LINE_BYTES 64

/* Lean rows of 16, 32, 64 or 128 bytes take a copy of the group walk compiled
 * for their length (seg_rows_lean_fixed), and piped rows of 128 or 256 bytes a
 * copy of the piped walk (seg_rows_lean_piped): a row is then at most a few
 * vectors whose loops, tails and alignment tests the compiler resolves once, not
 * per row. Same bits (the same inline code with n a constant). Against the walk
 * with n a variable (a C harness timing both builds and an OpenMP memcpy in the
 * same rounds, 2026-11-30): LayerNorm (8192, 16) float32 from cache 1.27x faster
 * at one and two threads, (8192, 8) float64 1.42x, RMSNorm (8192, 16) 1.47x,
 * (2048, 32) 1.03x; 32 MiB inputs at two threads and one: (524288, 16) float32
 * 1.29x and 1.22x, (262144, 32) 1.28x and 1.21x, (524288, 8) float64 1.59x and
 * 1.32x, (262144, 16) float64 1.39x and 1.13x, rows of 256 bytes 1.03-1.07x;
 * (512, 64) and (32, 512), not compiled apart, 1.0-1.1x. Rows of 256 bytes from
 * cache ran 0.96-0.98x as fast compiled apart, hence their absence from the
 * group walk's lengths; groups of 64 rows instead of 32 cost the piped rows of
 * 128 bytes 7 %. */
static inline int fn_lean_fixed(ptrdiff_t row_bytes)
{
    return row_bytes == 16 || row_bytes == 32 || row_bytes == 64 || row_bytes == 128;
}
/* In a template body (element type T): CALL(n) with n the row's value count as
 * a constant for each row length fn_lean_fixed names, else OTHER; one copy of
 * the walk CALL names is compiled for each length. */
#define FN_FIXED_ROW_CALL(row_bytes, CALL, OTHER)             \
    do {                                                      \
        if ((row_bytes) == 16) CALL(16 / (ptrdiff_t)sizeof(T));   \
        else if ((row_bytes) == 32) CALL(32 / (ptrdiff_t)sizeof(T)); \
        else if ((row_bytes) == 64) CALL(64 / (ptrdiff_t)sizeof(T)); \
        else if ((row_bytes) == 128) CALL(128 / (ptrdiff_t)sizeof(T)); \
        else OTHER;                                           \
    } while (0)

/* Data a core can keep in its L1 cache while working on it. */
#define FN_L1_BYTES 32768
/* ... and in its L2 (half of a 2 MiB L2: the output passes through it too). */
#define FN_L2_BYTES (1024 * 1024)
/* Pieces of the slab walk's normalize (col_slab), taken from the slab's end:
 * its statistics pass read the last rows last, and they are still in L2, where
 * the normalize in address order met them evicted by the rows before (channels-
 * last GroupNorm, 32 groups, against the walk in address order, both builds on
 * the same arrays in rotating order, AMD Zen 3 with 512 KiB of L2, 2026-12-02:
 * (8, 32, 32, 256), slabs of 1 MiB, 1.11-1.18x faster at one thread and
 * 1.04-1.10x at two; (4, 64, 64, 128), 2 MiB, 1.12-1.15x and 1.06-1.08x; (16,
 * 64, 64, 64), streamed, 1.00-1.03x; (32, 56, 56, 64), streamed, 0.93-1.05x and
 * 1.00-1.07x; (8, 16, 16, 512), slabs of 512 KiB, 0.97-1.07x, hence the lower
 * limit of half of FN_L2_BYTES). Pieces of 16 KiB ran 0.96-1.14x, 256 KiB
 * 0.97-1.16x. */
#define FN_COL_MIRROR_BYTES 65536
/* Rows per tile of the tiled row walk (seg_units_tiled): as many as fill this
 * many bytes, which stay in L2 between the statistics and the normalize; and the
 * columns per slice: as many as fill this many bytes of w (and as many of b), which
 * stay in L1 while the slice is normalized for every row of the tile. */
#ifndef FN_TILE_BYTES
#define FN_TILE_BYTES (256 * 1024)
#endif
#ifndef FN_TILE_PARAM_BYTES
#define FN_TILE_PARAM_BYTES 8192
#endif
/* Units per group of the row-wise walk (BatchNorm over short planes): as many as
 * fill this many bytes. x stays in L2 from the statistics to the
 * normalize, next to the lines of y that the normalize writes (1 MiB groups ran
 * 10-20 % slower, with 2 MiB of L2 per core). A core with less than twice this
 * much L2 (fn_l2_bytes) cannot keep a group there, and shorter groups read
 * shorter runs of each plane row (a group of 128 KiB ran 0.69-0.77x as fast,
 * AMD EPYC Zen 3, 512 KiB of L2): there the statistics of all units are taken
 * first and the normalize is a pass of its own, as in inference (see
 * rowwise_apart in src_c/norm_template.h). Statistics taken alone (that pass,
 * and moments) keep nothing for a normalize: their groups take
 * FN_MAX_CHUNK_UNITS units (rowwise_kept_bytes), whose plane rows are read in
 * runs that many planes long. Against groups sized by this constant (Zen 3,
 * 2026-12-01, same-process A/B, 9-15 rounds, the same bits): moments over
 * (64, 256, 14, 14) 1.20-1.23x at two threads and 1.25x at one, (128, 256, 7, 7)
 * 1.14x at two; training BatchNorm (64, 256, 14, 14) on that machine 1.06-1.12x
 * and 1.14x, (128, 256, 7, 7) 1.03-1.04x at two, (32, 512, 14, 14) 0.97-1.04x and
 * 1.03x. */
#ifndef FN_ROWWISE_BYTES
#define FN_ROWWISE_BYTES (512 * 1024)
#endif
/* Segments shorter than this many bytes are too short for the hardware
 * prefetchers to follow a walk that jumps from segment to segment. */
#define FN_SHORT_SEGMENT_BYTES 4096
/* SEG units whose segments lie end to end across units are walked as columns
 * (seg_as_columns) when their segments hold at most FN_SEG_COLUMNS_ALWAYS
 * values, at most FN_SEG_COLUMNS_MID values with FN_SEG_COLUMNS_MID_ROWS
 * segments per unit or more, or at most FN_SEG_COLUMNS_MAX values with
 * FN_SEG_COLUMNS_ROWS segments or more. Since the column walk cuts few row
 * blocks across their columns (fn_col_cut), segments of 5-16 values gain from
 * 128 rows on (BatchNorm (256, 128, 8) training 212 -> 48 us, (1024, 64, 16)
 * 670 -> 233 us, backward 2-4x faster); below that, and for 17-32 values below
 * 2048 rows, the segment walk stays ahead (inference (64, 512, 4, 4) 98
 * against 123 us; (128, 32, 32) backward 42 against 68 us). The choice depends
 * on the shape alone, so results do not depend on the thread count. */
#define FN_SEG_COLUMNS_ALWAYS 4
#define FN_SEG_COLUMNS_MID 16
#define FN_SEG_COLUMNS_MID_ROWS 128
#define FN_SEG_COLUMNS_MAX 32
#define FN_SEG_COLUMNS_ROWS 2048
/* backward units of one segment up to this size have their sums taken several
 * at a time (seg_bwd_units) */
#define FN_BWD_BATCH_BYTES 256
/* Backward rows with a weight (LayerNorm, RMSNorm) of at most this many bytes
 * take their sums FN_BWD_ROW_GROUP rows at a time (seg_bwd_rows_grouped; rows
 * of 16, 32, 64 or 128 bytes through copies compiled for their length, see
 * fn_lean_fixed); longer ones row by row, each inside the dx loop of the row
 * before (seg_bwd_rows_piped). Same bits. Against the row-by-row walk (a C
 * harness timing both builds in alternating rounds, 2026-11-30): LayerNorm
 * backward float32 rows of 4 and 8 values 1.44-1.46x faster at one thread and
 * 1.41x at two, 16 values 1.29x, 32 values 1.18x and 1.14x, 7 and 24 values
 * 1.22x and 1.18x, float64 rows of 8 and 16 values 1.26x and 1.08x; rows of 160
 * and 192 bytes ran 0.98x and 0.95x grouped, hence the limit; (8192, 768) 1.0x.
 * Longer rows of at most a block take the groups too in inputs under
 * FN_PIPED_MIN_BYTES, which stay in cache (AMD Zen 3, same process, both
 * orders, 2026-12-01: (2048, 512) 1.23x, (1024, 256) 1.21x, (200, 300) 1.23x,
 * (512, 256) 1.09-1.27x faster grouped); (16384, 256) ran 0.95-1.06x grouped. */
#define FN_BWD_GROUPED_MAX_BYTES 128
/* Backward rows with a weight longer than a block, up to this length, in inputs
 * of FN_PIPED_MIN_BYTES and more, take the row walk too (seg_bwd_rows_piped: the
 * next row's sums, block by block, inside the dx loop), where each row was read
 * for its sums and then again for its dx. The same bits. Against that walk (a C
 * harness timing both builds in alternating rounds, 2026-12-01): LayerNorm
 * backward float32 rows of 4096 values 1.09x faster at two threads and 1.11x at
 * one, 8192 values 1.14x, 16384 values 1.12x and 1.13x, 3001 values 1.10x,
 * float64 rows of 2048 values 1.12x, (1024, 4096) (16 MiB) 1.15x and 1.24x; rows
 * of 65536 values ran 0.88x at one thread, and inputs that stay in cache
 * 0.94-0.95x ((256, 2048)). */
#ifndef FN_BWD_PIPED_MAX_ROW_BYTES
#define FN_BWD_PIPED_MAX_ROW_BYTES 65536
#endif
#define FN_BWD_ROW_GROUP 32
/* How far ahead of its reads the row walk's sums (bwd_dx_piped) ask for the
 * next row's lines. The prefetchers alone left LayerNorm backward (8192, 768)
 * at about half the bytes per second of a one-thread copy: the walk reads the
 * next row only while it writes dx, not during the parameter pass over the row
 * in L1. Distances tried in the loop (AMD Zen 3, builds on the same arrays in
 * rotating order, 2026-12-02, against no requests): 512 bytes 0.99-1.05x, 1 KiB
 * 1.05-1.09x at one thread and 1.05-1.12x at two, 1536 and 2048 bytes
 * 0.99-1.08x, the whole row after next 1.01-1.08x; asking for the row after next
 * during the parameter pass as well gained nothing. With the loop compiled apart
 * per case (bwd_dx_piped): (8192, 768) 1.01-1.11x at one thread and 1.00-1.09x
 * at two, (16384, 256) 1.09x and 1.01x, (2048, 4096) 1.05x and 1.03x, (512,
 * 16384) 1.03x and 1.06x. */
#ifndef FN_BWD_AHEAD_BYTES
#define FN_BWD_AHEAD_BYTES 1024
#endif
/* The plane walk of GroupNorm backward NCHW (seg_bwd_planes) takes a unit's
 * sums from L3 or memory and then its dx from L2; while it writes row r1's dx it
 * asks for row r1 of the next unit (x and dy, into L2), for as many rows as fit
 * in 1 / FN_PLANE_AHEAD_L2_DIV of the L2 (fn_l2_bytes; 0: no requests). AMD
 * Zen 3, 512 KiB L2, float32, `out=`, against no requests, whole builds on the
 * same arrays in rotating order, both orders, 2026-12-02: (8, 256, 32, 32), units
 * of 32 KiB per array, 1.05x at one thread and 1.13-1.21x at two; (16, 128, 64,
 * 64), half of each unit asked for, 1.02-1.05x and 1.06-1.12x; (4, 64, 128, 128)
 * and (32, 32, 56, 56) 0.96-1.09x, as the unchanged channels-last walk beside
 * them (0.98-1.07x): no difference. An eighth of the L2 (divisor 8) gained no
 * more. */
#ifndef FN_PLANE_AHEAD_L2_DIV
#define FN_PLANE_AHEAD_L2_DIV 4
#endif

/* Below this much work a call runs serially: a parallel region costs more. Work
 * is counted in elements plus, per unit (row), FN_UNIT_WORK elements for its fixed
 * cost (reductions across lanes, coefficients, the unit's set-up): 512 rows of 64
 * values take as long as a million streamed ones would take a sixth of. */
#define FN_SERIAL_ELEMS 65536
#define FN_UNIT_WORK 256

static inline double fn_work(double units, double unit_len) { return units * (unit_len + FN_UNIT_WORK); }
/* Work (elements) a dynamic chunk of the parallel loops should hold. */
#define FN_CHUNK_ELEMS 16384

/* A running count, mean and sum of squared deviations. The mean is held as mean +
 * c, c the rounding error of the updates so far: each merge moves the mean by a
 * fraction of a block's deviation, and with |mean| >> std a plain sum rounds
 * every step to the mean's ulp (float64 data of mean 1e4 and std 1e-3, 4 Mi
 * values in blocks of FN_BLOCK: 7-18 ulp off, where NumPy's pairwise mean is
 * within one; tests/test_long_unit_mean.py). The mean is held relative to ref,
 * the shift of the first block merged (a data value): the deviation of a
 * Chan merge, mean_b - mean_a, is then taken between values of the data's
 * spread, not between means rounded at |mean|'s ulp (float64 columns of mean 1e6
 * and std 1e-3: variances 1.2e-8 off before, where NumPy's were 5e-13). */
typedef struct { double n, mean, m2, c, ref; } fn_acc;

/* a + b into *hi and its rounding error into *lo (TwoSum, exact for finite a, b;
 * lo is 0 once the sum is inf or NaN, so that hi + lo keeps inf) */
static inline void fn_two_sum(double a, double b, double *hi, double *lo)
{
    double s = a + b, bb = s - a, e = (a - (s - bb)) + (b - bb);
    *hi = s;
    *lo = s - s == 0 ? e : 0.0;
}

/* x where finite, else 0: a block's shift (shift_of in norm_template.h) */
static inline double fn_finite_or_zero(double x) { return x - x == 0 ? x : 0.0; }

/* The merged mean where Chan's deviation is not finite (a mean of +-inf or NaN
 * on either side, or means of opposite signs near double's limit): the means
 * weighted by their counts, which keeps +-inf where NumPy's sum does and gives
 * NaN for +inf with -inf. Its spread: NaN where the mean is not finite (x - mean
 * is, in NumPy), else beyond double's range. */
static inline double fn_plain_merge(double ma, double wa, double mb, double wb) { return ma * wa + mb * wb; }
static inline double fn_plain_merge_m2(double mean) { return mean - mean == 0 ? INFINITY : NAN; }

/* One Chan merge (fn_acc_merge's arithmetic) of a block's mean mb and M2 m2b into
 * a mean *ma + *ca and M2 *m2a, with fa = nb / n, fw = na / n, fc = na * nb / n;
 * the non-finite case as selects, so that loops over columns vectorize. */
static inline void fn_chan_step(double *ma, double *ca, double *m2a, double mb, double m2b, double fa, double fw,
                                double fc)
{
    double d = (mb - *ma) - *ca, hi, lo, plain = fn_plain_merge(*ma, fw, mb, fa);
    fn_two_sum(*ma, *ca + d * fa, &hi, &lo);
    int ok = d - d == 0;
    *m2a = ok ? *m2a + (m2b + d * d * fc) : fn_plain_merge_m2(plain);
    *ma = ok ? hi : plain;
    *ca = ok ? lo : 0.0;
}

/* Chan et al.: merge a block of nb values with mean mb and sum of squared
 * deviations m2b into acc, the deviation taken from the compensated mean. The
 * first merge copies, so folding the same blocks in the same order gives the
 * same bits whichever thread computed them. */
static inline void fn_acc_merge(fn_acc *acc, double nb, double mb, double m2b)
{
    if (acc->n == 0) {
        acc->n = nb; acc->mean = mb; acc->m2 = m2b; acc->c = 0;
        return;
    }
    double n = acc->n + nb;
    fn_chan_step(&acc->mean, &acc->c, &acc->m2, mb, m2b, nb / n, acc->n / n, acc->n * nb / n);
    acc->n = n;
}

/* The same merge for K columns that share their counts; ca holds the columns'
 * compensations (fn_acc's c), or is NULL for a fold of a single merge (a column
 * superblock's first block and its rest), whose rounding nothing adds to. */
static inline void fn_merge_cols(double na, double *ma, double *m2a, double *ca, double nb,
                                 const double *mb, const double *m2b, ptrdiff_t K)
{
    if (na == 0) {
        for (ptrdiff_t k = 0; k < K; k++) { ma[k] = mb[k]; m2a[k] = m2b[k]; }
        if (ca) for (ptrdiff_t k = 0; k < K; k++) ca[k] = 0;
        return;
    }
    double n = na + nb, fa = nb / n, fw = na / n, fc = na * nb / n;
    if (ca) {
#pragma omp simd
        for (ptrdiff_t k = 0; k < K; k++) fn_chan_step(&ma[k], &ca[k], &m2a[k], mb[k], m2b[k], fa, fw, fc);
        return;
    }
    /* without a compensation: its rounding error is not kept (ma + d * fa, one
     * rounding where the ISA fuses it) */
#pragma omp simd
    for (ptrdiff_t k = 0; k < K; k++) {
        double d = mb[k] - ma[k], plain = fn_plain_merge(ma[k], fw, mb[k], fa);
        int ok = d - d == 0;
        m2a[k] = ok ? m2a[k] + (m2b[k] + d * d * fc) : fn_plain_merge_m2(plain);
        ma[k] = ok ? ma[k] + d * fa : plain;
    }
}

/* A block summed around a shift c that lies z standard deviations from its mean
 * has the rounding error of its T-precision variance multiplied by about 1 + z^2
 * (s2 = n var + n (mean - c)^2 cancels down to n var). The shift is a block's
 * first value (rows, and a column superblock's first block), so an outlier there
 * costs accuracy: 100 as the first of 1024 standard normal float32 values gave a
 * variance 1.4e-4 off. Blocks whose shift lies more than sqrt(FN_FAR_Z2)
 * deviations from their mean (fn_shift_near false; 0.3 % of normal data's) are
 * summed again. */
#define FN_FAR_Z2 9.0
static inline int fn_shift_near(double s1, double s2, double n)
{
    /* (s1^2 / n) <= z2 (s2 - s1^2 / n), without a division; true for NaN-free
     * sums of a constant block (0 <= 0) and for infinite ones (inf <= inf) */
    return (1.0 + FN_FAR_Z2) * s1 * s1 <= FN_FAR_Z2 * n * s2;
}

/* Whether blocks of n values can hold a far shift: one of n values lies at most
 * sqrt(n - 1) deviations from their mean. Tested once per call by the loops over
 * short rows (rows of 8 values ran 6 % slower with the test in every row's). */
static inline int fn_far_possible(double n)
{
    return n > 1.0 + FN_FAR_Z2;
}

/* 1 when the T-precision sums s1, s2 of a column's n values (in double) can be
 * trusted, as sums_ok for a row: finite, and mean squares not below FN_TINY_SQ
 * (tiny = n * FN_TINY_SQ). Branch-free, so that loops over columns vectorize
 * (x - x == 0 exactly when x is finite). */
static inline int fn_col_sum_ok(double s1, double s2, double tiny)
{
    return (s1 - s1 == 0) & (s2 - s2 == 0) & (s2 >= tiny);
}

/* fn_col_sum_ok for each of K columns of n values, tiny = n * FN_TINY_SQ. */
static inline int fn_col_sums_ok(const double *s1, const double *s2, ptrdiff_t K, double n)
{
    int ok = 1;
    const double tiny = n * FN_TINY_SQ;
    for (ptrdiff_t k = 0; k < K; k++) ok &= fn_col_sum_ok(s1[k], s2[k], tiny);
    return ok;
}

/* The mean and biased variance of cnt parts of equal counts whose own are at
 * mean[j * step], var[j * step]: the mean of the means, and the mean of the
 * variances plus the variance of the means (exact). */
static inline void fn_merge_equal_counts(const double *mean, const double *var, ptrdiff_t cnt, ptrdiff_t step,
                                         double *m_out, double *v_out)
{
    /* the means summed around the first: with |mean| >> std, a plain sum of the
     * means rounds to their ulp at every step (GroupNorm over 23 channels-last
     * columns of mean 1e5 and std 1e-2: 10x the input's own rounding error) */
    double m0 = mean[0], dm = 0, v = 0, d2 = 0;
    for (ptrdiff_t j = 0; j < cnt; j++) { dm += mean[j * step] - m0; v += var[j * step]; }
    double m = m0 + dm / (double)cnt;
    if (!(m - m == 0)) {
        /* inf or NaN means: the plain mean (inf stays inf, not inf - inf) */
        m = 0;
        for (ptrdiff_t j = 0; j < cnt; j++) m += mean[j * step];
        m /= (double)cnt;
    }
    for (ptrdiff_t j = 0; j < cnt; j++) d2 += (mean[j * step] - m) * (mean[j * step] - m);
    *m_out = m;
    *v_out = v / (double)cnt + d2 / (double)cnt;
}

/* Groups of kg consecutive columns with equal counts (channels-last GroupNorm):
 * each column's mean and biased variance become its group's. */
static inline void fn_merge_column_groups(double *mean, double *var, ptrdiff_t K, ptrdiff_t kg)
{
    if (kg <= 1) return;
    for (ptrdiff_t g0 = 0; g0 + kg <= K; g0 += kg) {
        double m, v;
        fn_merge_equal_counts(mean + g0, var + g0, kg, 1, &m, &v);
        for (ptrdiff_t k = g0; k < g0 + kg; k++) { mean[k] = m; var[k] = v; }
    }
}

/* True when the T-precision normalize is safe for a unit of n values with this
 * mean and (biased) variance: x - mean cannot overflow (|x - mean| <= sqrt(n * var))
 * and the values are not in float32's denormal range. */
static inline int fn_t_safe(double mean, double var, double n, size_t tsize)
{
    /* sqrt(n * var) + |mean| < limit, checked without a square root (this sits
     * on every row's dependency chain); tiny data (denormal range in float32) is
     * normalized in double as well: denormal operands make float arithmetic take
     * microcode assists. Written without branches, so loops over rows vectorize. */
    double limit = tsize < sizeof(double) ? 1e37 : 1e307;
    double spread2 = var * n, am = fabs(mean);
    int in_range = (spread2 < 0.25 * limit * limit) & (am < 0.5 * limit);
    int not_tiny = (tsize == sizeof(double)) | (spread2 > 1e-60) | (am > 1e-30) | ((spread2 == 0) & (am == 0));
    return in_range & not_tiny;
}

/* Outputs at least this large are written with non-temporal stores: they cannot
 * stay in cache, and streaming saves the read-for-ownership of every line.
 * A normalize pass of its own (statistics given, or taken in a pass before), and
 * rows whose statistics are taken inside the previous row's normalize loop
 * (seg_rows_piped: LayerNorm (8192, 768) ran at 105 % of copy streamed, 98 %
 * cached), stream from FN_STREAM_PASS_BYTES on; so do the units that seg_norm
 * normalizes from L2 after reading them whole (see there). A walk that alternates the
 * statistics of a group of rows with their normalize streams only from
 * FN_STREAM_BYTES on:
 * below that, x and y stay in L3 from call to call, the read-for-ownership of y
 * is an L3 hit, and the write-backs of cached stores drain while the next group
 * is read, which streaming stores, written out at once, do not (LayerNorm
 * (8192, 768) walked in groups of rows ran 5-7 % slower streamed, inference
 * BatchNorm 25 % faster). */
#define FN_STREAM_BYTES (48.0 * 1024 * 1024)
#define FN_STREAM_PASS_BYTES (16.0 * 1024 * 1024)
/* Units made of segments shorter than this many bytes are never streamed: the
 * partial lines at both ends of every segment take regular stores, and the mix
 * ran at half the speed of regular stores alone (BatchNorm over 7 x 7 planes);
 * 14 x 14 planes (784 bytes) still gain from streaming. */
#define FN_STREAM_SEGMENT_BYTES 512
/* Rows stored one by one under this many bytes stream only when they start and
 * end on cache lines (see seg_lines_apart). */
#define FN_STREAM_LONE_ROW_BYTES 8192

static inline int fn_stream_output(double bytes, int own_pass)
{
    return bytes >= (own_pass ? FN_STREAM_PASS_BYTES : FN_STREAM_BYTES);
}

/* Orders this thread's non-temporal stores before anything that follows. The
 * walks' per-chunk functions do not call it: each thread of the region that runs
 * them does, once after its last item (FN_PARALLEL_SHARES, the hand-claimed
 * teams), and a serial walk once at its end: a fence waits for the stores
 * streamed before it to reach memory, which a chunk's end does not need. */
static inline void fn_store_fence(void)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_sfence();
#endif
}

/* Statistics arrays for a call that did not ask for them (mean == NULL): the
 * kernels always work through p->mean / p->var. Returns the block to free (or
 * NULL); on allocation failure p->mean stays NULL. */
static inline double *fn_own_stats(fn_norm_args *p, ptrdiff_t units)
{
    if (p->mean && p->var) return NULL;
    double *own = (double *)fn_scratch_alloc(sizeof(double) * 2 * (size_t)units);
    p->mean = own;
    p->var = own ? own + units : NULL;
    return own;
}

/* Per-unit normalize coefficients for a whole call (arrays of the element type
 * behind void pointers, all in buf). */
typedef struct {
    void *buf;
    const ptrdiff_t *wo;
    const void *mh, *ml, *sc, *sh;
    const unsigned char *fast;
} fn_unit_coefs;

/* Thread budget shared by concurrent callers (see fn_runtime.c). */
int fn_threads_acquire(int want);
void fn_threads_release(int n);

static inline ptrdiff_t fn_min(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
static inline ptrdiff_t fn_max(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }

/* A block's mean and m2 (sum of squared deviations; in RMS mode the sum of squares)
 * from its sums s1 = sum(x - c), s2 = sum((x - c)^2) around its shift c, with
 * inv_n = 1 / n computed once by the caller (divisions would sit on every row's
 * dependency chain). Every path takes block statistics through here. */
static inline void fn_sums_to_stats(double s1, double s2, double c, double inv_n, int rms,
                                    double *mean, double *m2)
{
    double d = s1 * inv_n, v = s2 - s1 * d;
    *mean = rms ? 0.0 : c + d;
    *m2 = rms ? s2 : (v < 0 ? 0 : v);
}

/* Units per group of seg_bwd_grouped: FN_PARAM_GROUP rows sharing one weight
 * row; with weights of their own per k (the joined GroupNorm, wk != 0), groups
 * of FN_PARAM_GROUP_ROWS whole rows of K units, so that each partial still sums
 * several terms and the partials stay few (groups of 64 units gave every
 * parameter of a (256, 2048, 1, 1) GroupNorm 2 terms a group, and the partials
 * cost as much as the data). From FN_PARAM_GROUP / 2 to 2 * FN_PARAM_GROUP rows
 * sharing one weight row make two groups, one per thread of a two-thread call:
 * they took a pass of their own over x and dy in double after dx (LayerNorm
 * backward (32, 512) 1.04-1.14x, (100, 1024) 1.25-1.5x faster grouped). Fewer
 * rows keep that pass: in two groups, (8, 768) ran 0.82x as fast. */
static inline ptrdiff_t fn_param_group_units(const fn_seg_shape *s)
{
    ptrdiff_t U = s->A * s->K;
    if (s->wk) return s->K * FN_PARAM_GROUP_ROWS;
    return U >= FN_PARAM_GROUP / 2 && U < 2 * FN_PARAM_GROUP ? (U + 1) / 2 : FN_PARAM_GROUP;
}

/* Offset in x of unit u = (u / K, u % K) of a SEG shape. */
static inline ptrdiff_t fn_unit_x_offset(const fn_seg_shape *s, ptrdiff_t u)
{
    ptrdiff_t a = s->K == 1 ? u : u / s->K;
    return a * s->xa + (u - a * s->K) * s->xk;
}

/* Offsets of units [g, g + cnt) of a SEG shape: x at xo[j], y at yo[j], affine
 * parameters at wo[j]. Unit u is (u / K, u % K), stepped rather than divided. */
static inline void fn_unit_offsets(const fn_seg_shape *s, ptrdiff_t g, ptrdiff_t cnt,
                                   ptrdiff_t *xo, ptrdiff_t *yo, ptrdiff_t *wo)
{
    /* the shape in locals: the stores to xo, yo, wo might alias *s otherwise, and
     * every field was reloaded for every unit (8 % of LayerNorm (512, 64)) */
    const ptrdiff_t K = s->K, xa = s->xa, xk = s->xk, ya = s->ya, yk = s->yk, wk = s->wk;
    const ptrdiff_t a0 = g / K, k0 = g % K;
    if (k0 + cnt <= K) {
        /* all in one a (LayerNorm's rows): a loop without the wrap, which vectorizes */
        for (ptrdiff_t j = 0; j < cnt; j++) {
            xo[j] = a0 * xa + (k0 + j) * xk;
            yo[j] = a0 * ya + (k0 + j) * yk;
            wo[j] = (k0 + j) * wk;
        }
        return;
    }
    for (ptrdiff_t j = 0, a = a0, k = k0; j < cnt; j++) {
        xo[j] = a * xa + k * xk;
        yo[j] = a * ya + k * yk;
        wo[j] = k * wk;
        if (++k == K) { k = 0; a++; }
    }
}

/* The column walks' sub-blocks (col_block_stats, col_bwd_super): rows of
 * row_bytes (of x, or of x and dy) that fill half of L1, at least one. With
 * several column chunks, each chunk re-reads the sub-block from L1, and the
 * block's lines are fetched within a short window instead of a few lines per row
 * per chunk pass. */
static inline ptrdiff_t fn_l1_sub_rows(ptrdiff_t row_bytes)
{
    return fn_max(1, FN_L1_BYTES / 2 / fn_max(1, row_bytes));
}

/* Rows per sub-block when n rows are cut into equal sub-blocks of at most
 * fn_l1_sub_rows(row_bytes) each: a walk that asks for the next sub-block's
 * lines as it reads (fn_ahead_cursor) then asks for what the next one reads. */
static inline ptrdiff_t fn_equal_sub_rows(ptrdiff_t n, ptrdiff_t row_bytes)
{
    ptrdiff_t fit = fn_l1_sub_rows(row_bytes), parts = fn_max(1, (n + fit - 1) / fit);
    return (n + parts - 1) / parts;
}

/* n doubles rounded up to whole cache lines: where a line-aligned block
 * (fn_scratch_alloc) goes on with arrays that must start a line. */
static inline ptrdiff_t fn_line_doubles(ptrdiff_t n)
{
    const ptrdiff_t per = FN_LINE_BYTES / (ptrdiff_t)sizeof(double);
    return (n + per - 1) / per * per;
}

/* Requests for the lines a column walk reads next, in address order: a chunk of
 * columns reads a few lines of every row of its sub-block, a pattern the
 * prefetchers follow badly (column sums of 128 or 200 float32 columns read at
 * 0.45-0.6x the speed of row sums of the same bytes). The walk asks, at each
 * step, for as many bytes of the next sub-block as the step reads, so the
 * requests stay one sub-block ahead. A cursor with at == end asks for nothing.
 * The lines go to L2 (a locality of 2): into L1, column moments of 32 to 200
 * float32 columns ran 2-8 % slower, one and two threads. */
typedef struct { uintptr_t at, end; } fn_ahead_cursor;

static inline fn_ahead_cursor fn_ahead_over(const void *from, const void *end)
{
    fn_ahead_cursor c = {(uintptr_t)from - (uintptr_t)from % FN_LINE_BYTES, (uintptr_t)end};
    return c;
}

static inline __attribute__((always_inline)) void fn_ahead_step(fn_ahead_cursor *c, ptrdiff_t bytes)
{
    for (ptrdiff_t o = 0; o < bytes; o += FN_LINE_BYTES) {
        if (c->at < c->end) __builtin_prefetch((const void *)c->at, 0, 2);
        c->at += FN_LINE_BYTES;
    }
}

/* The cursor's lines not asked for yet, all at once. */
static inline void fn_ahead_rest(fn_ahead_cursor *c)
{
    for (; c->at < c->end; c->at += FN_LINE_BYTES) __builtin_prefetch((const void *)c->at, 0, 2);
}

/* Items per chunk of a parallel loop over n items of item_elems values each:
 * about FN_CHUNK_ELEMS values, but at least two chunks per thread, so that no
 * thread goes without work (256 rows of 64 values made a single chunk). */
static inline ptrdiff_t fn_chunk_items(ptrdiff_t n, ptrdiff_t item_elems, int nt)
{
    ptrdiff_t c = FN_CHUNK_ELEMS / fn_max(1, item_elems);
    return fn_max(1, fn_min(c, n / (2 * (ptrdiff_t)nt)));
}

/* Units per group of the row-wise walk, see FN_ROWWISE_BYTES. */
static inline ptrdiff_t fn_rowwise_units(ptrdiff_t unit_bytes, ptrdiff_t max_units)
{
    return fn_max(1, fn_min(max_units, FN_ROWWISE_BYTES / fn_max(1, unit_bytes)));
}

/* Units per chunk of a row-wise walk over U units on nt threads: at most as many
 * as fn_rowwise_units allows, at least two chunks per thread, and as many chunks
 * for each thread (7 chunks on 2 threads left one thread a chunk behind:
 * BatchNorm (64, 256, 7, 7) ~ 10 % slower). */
static inline ptrdiff_t fn_rowwise_chunk(ptrdiff_t U, ptrdiff_t unit_bytes, ptrdiff_t max_units, int nt)
{
    ptrdiff_t fit = fn_rowwise_units(unit_bytes, max_units);
    ptrdiff_t n_chunks = fn_max((U + fit - 1) / fit, 2 * (ptrdiff_t)nt);
    n_chunks = (n_chunks + nt - 1) / nt * nt;
    return fn_max(1, (U + n_chunks - 1) / n_chunks);
}

/* Columns per item of a column walk's sums over n_blocks row blocks: all K when
 * they are at most max_cols wide and there are blocks for every thread;
 * otherwise cuts of at least FN_COL_CUT_MIN columns (when K allows) into about
 * four items per thread, multiples of FN_COL_CHECK so that each column's bits
 * stay those of the whole row. Blocks are not cut to balance threads that
 * already have one each: part-rows read slower than whole ones (BatchNorm
 * (2048, 64, 32), two blocks of 2048 columns, 6 % slower cut in four). */
static inline ptrdiff_t fn_col_cut(ptrdiff_t K, ptrdiff_t n_blocks, int nt, ptrdiff_t max_cols)
{
    ptrdiff_t cuts = 1;
    if (n_blocks < nt && K >= 2 * FN_COL_CUT_MIN)
        cuts = fn_min((4 * (ptrdiff_t)nt + n_blocks - 1) / n_blocks, K / FN_COL_CUT_MIN);
    cuts = fn_max(cuts, (K + max_cols - 1) / max_cols);
    if (cuts <= 1) return K;
    ptrdiff_t cw = (K + cuts - 1) / cuts;
    return (cw + FN_COL_CHECK - 1) / FN_COL_CHECK * FN_COL_CHECK;
}

/* Elements per item of a pass that writes A slabs of R rows of K columns: blocks
 * of `rows` rows, or, for rows contiguous in memory (flat) that would make fewer
 * than four items per thread, smaller cuts of at least FN_CHUNK_ELEMS / 4
 * elements, a multiple of `align` (whole rows when `whole_rows`): BatchNorm
 * (64, 4096) normalized its single block of rows on one thread. */
static inline ptrdiff_t fn_col_step(ptrdiff_t A, ptrdiff_t R, ptrdiff_t K, ptrdiff_t rows, int flat,
                                    int whole_rows, ptrdiff_t align, int nt)
{
    ptrdiff_t step = rows * K;
    if (!flat) return step;
    double total = (double)A * (double)R * (double)K;
    step = fn_max(FN_CHUNK_ELEMS / 4, fn_min(step, (ptrdiff_t)(total / (4.0 * nt)) + 1));
    step = (step + align - 1) / align * align;
    return whole_rows ? (step + K - 1) / K * K : step;
}

/* Work sharing with cache affinity and load balance. Items [0, n) are split into
 * one contiguous share per thread; a thread takes the items of its own share in
 * order, then those left in the other shares. Uncontended, each thread gets the
 * same share call after call, so data a previous call left in its cache is
 * found there again (dynamic scheduling hands the items out in a different
 * order each time); when a thread is descheduled, the others finish its share.
 * Every item is claimed exactly once: owner and thieves advance the same
 * counter. */
typedef struct { ptrdiff_t next, end; char pad[64 - 2 * sizeof(ptrdiff_t)]; } fn_share;

#define FN_MAX_SHARES 256

/* Threads (shares) a walk over fn_share items runs on: nt, at least 1 and at
 * most FN_MAX_SHARES. */
static inline int fn_shares_threads(int nt)
{
    return nt < 1 ? 1 : nt < FN_MAX_SHARES ? nt : FN_MAX_SHARES;
}

static inline void fn_shares_init(fn_share *sh, int nt, ptrdiff_t n)
{
    for (int t = 0; t < nt; t++) {
        sh[t].next = n * t / nt;
        sh[t].end = n * (t + 1) / nt;
    }
}

/* The next items [*lo, *hi) for thread tid, 0 when none is left: from its own
 * share up to `batch` at a time (an eighth of what is left, at least one), from
 * another's one. Each claim is a locked add, which on x86 also waits for the
 * thread's streamed stores to reach memory: FN_PARALLEL_SHARES claims up to
 * FN_SHARE_BATCH items at once. */
#define FN_SHARE_BATCH 8
static inline int fn_shares_claim_range(fn_share *sh, int nt, int tid, ptrdiff_t batch, ptrdiff_t *lo,
                                        ptrdiff_t *hi)
{
    for (int k = 0; k < nt; k++) {
        fn_share *q = &sh[(tid + k) % nt];
        ptrdiff_t next = __atomic_load_n(&q->next, __ATOMIC_RELAXED);
        if (next >= q->end) continue;
        ptrdiff_t want = k == 0 ? fn_max(1, fn_min(batch, (q->end - next) / 8)) : 1;
        ptrdiff_t c = __atomic_fetch_add(&q->next, want, __ATOMIC_RELAXED);
        if (c < q->end) {
            *lo = c;
            *hi = fn_min(c + want, q->end);
            return 1;
        }
    }
    return 0;
}

/* The next item for thread tid, or -1 when none is left. */
static inline ptrdiff_t fn_shares_claim(fn_share *sh, int nt, int tid)
{
    ptrdiff_t lo, hi;
    return fn_shares_claim_range(sh, nt, tid, 1, &lo, &hi) ? lo : -1;
}

/* Item `it` of a walk over n items in nt shares (fn_shares_init), mirrored within
 * its share: each thread walks its share from the end. */
static inline ptrdiff_t fn_share_mirror(ptrdiff_t it, ptrdiff_t n, int nt)
{
    nt = fn_shares_threads(nt);
    int t = 0;
    while (t + 1 < nt && it >= n * (t + 1) / nt) t++;
    return n * t / nt + n * (t + 1) / nt - 1 - it;
}

#ifdef _OPENMP
#include <omp.h>
#define FN_THREAD_ID() omp_get_thread_num()
#else
#define FN_THREAD_ID() 0
#endif

/* { ... } once on each thread of a team of nt, tid its number (0..nt-1). The
 * body is the variadic part, so it may hold commas. One thread runs it without
 * entering OpenMP: GNU OpenMP's parallel region with if (0) still builds a team
 * of one and wakes a futex, about 0.35 us, a tenth of a small call (BatchNorm
 * inference over (1, 64, 14, 14) takes 3 us). The body is compiled twice. */
#define FN_PARALLEL_TEAM(nt, tid, ...) do {                                         \
        int fn_team_nt_ = (nt);                                                   \
        if (fn_team_nt_ <= 1) {                                                   \
            const int tid = 0;                                                    \
            (void)tid;                                                            \
            { __VA_ARGS__ }                                                       \
        } else {                                                                  \
            _Pragma("omp parallel num_threads(fn_team_nt_)")                      \
            {                                                                     \
                const int tid = FN_THREAD_ID();                                   \
                (void)tid;                                                        \
                { __VA_ARGS__ }                                                   \
            }                                                                     \
        }                                                                         \
    } while (0)

/* for (item = 0..n-1) { ... }, on nt threads (at most FN_MAX_SHARES), see
 * fn_share; a plain loop for nt <= 1. Each thread orders its streamed stores
 * once, after its last item (fn_store_fence): a fence or a claim after every
 * item waited for the item's stores to reach memory each time. */
#define FN_PARALLEL_SHARES(nt, n, item, ...) do {                                   \
        fn_share fn_sh_[FN_MAX_SHARES];                                           \
        int fn_nt_ = fn_shares_threads(nt);                                       \
        ptrdiff_t fn_n_ = (n);                                                    \
        if (fn_nt_ <= 1) {                                                        \
            const int fn_tid_ = 0;                                                \
            (void)fn_tid_;                                                        \
            for (ptrdiff_t item = 0; item < fn_n_; item++) { __VA_ARGS__ }        \
            fn_store_fence();                                                     \
        } else {                                                                  \
            fn_shares_init(fn_sh_, fn_nt_, fn_n_);                                \
            FN_PARALLEL_TEAM(fn_nt_, fn_tid_,                                     \
                ptrdiff_t fn_lo_, fn_hi_;                                         \
                while (fn_shares_claim_range(fn_sh_, fn_nt_, fn_tid_, FN_SHARE_BATCH, &fn_lo_, &fn_hi_)) \
                    for (ptrdiff_t item = fn_lo_; item < fn_hi_; item++) { __VA_ARGS__ } \
                fn_store_fence();                                                 \
            );                                                                    \
        }                                                                         \
    } while (0)

/* One tile of a transposing copy (transpose_template.h). */
typedef void (*fn_tile_fn)(const void *src, ptrdiff_t sb, void *dst, ptrdiff_t drow, ptrdiff_t na, ptrdiff_t nb,
                           int stream);

typedef struct {
    const char *name;
    int (*seg_f32)(const fn_seg_shape *, const float *, float *, const fn_norm_args *);
    int (*seg_f64)(const fn_seg_shape *, const double *, double *, const fn_norm_args *);
    int (*col_f32)(const fn_col_shape *, const float *, float *, const fn_norm_args *);
    int (*col_f64)(const fn_col_shape *, const double *, double *, const fn_norm_args *);
    int (*seg_bwd_f32)(const fn_seg_shape *, const float *, const float *, float *, const fn_bwd_args *);
    int (*seg_bwd_f64)(const fn_seg_shape *, const double *, const double *, double *, const fn_bwd_args *);
    int (*col_bwd_f32)(const fn_col_shape *, const float *, const float *, float *, const fn_bwd_args *);
    int (*col_bwd_f64)(const fn_col_shape *, const double *, const double *, double *, const fn_bwd_args *);
    int (*add_rows_f32)(const float *, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t,
                        float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const fn_norm_args *);
    int (*add_rows_f64)(const double *, ptrdiff_t, const double *, ptrdiff_t, double *, ptrdiff_t,
                        double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, const fn_norm_args *);
    int (*lrn_f32)(const fn_lrn_shape *, const float *, float *, const fn_lrn_args *);
    int (*lrn_f64)(const fn_lrn_shape *, const double *, double *, const fn_lrn_args *);
    int (*lrn_bwd_f32)(const fn_lrn_shape *, const float *, const float *, float *, const fn_lrn_args *);
    int (*lrn_bwd_f64)(const fn_lrn_shape *, const double *, const double *, double *, const fn_lrn_args *);
    fn_tile_fn transpose_tile_b4, transpose_tile_b8;
    void (*copy_bytes)(const void *src, void *dst, size_t nbytes);
} fn_isa_table;

/* The active path's tile of a transposing copy for elements of 4 or 8 bytes. */
fn_tile_fn fn_transpose_tile(size_t elsize);

#endif
