/* norm_isa.h - one SIMD path of the engine: both dtypes and their function table.
 *
 * A compilation unit defines FN_ISA (generic, avx2, avx512) and FN_VBYTES, then
 * includes this header; setup.py compiles each unit with its own -m flags and
 * fn_runtime.c picks one table at import. The LRN kernels, the tiles of the
 * transposing copy and the benchmarks' plain copy ride along, so they get the
 * same vector width as the rest of the engine. */
#include "fn_internal.h"
#include "lrn_common.h"
#include <float.h>

/* vectors of 8-byte lanes, for shuffles that do not depend on the element type */
typedef long long fn_q8 __attribute__((vector_size(8)));
typedef long long fn_q16 __attribute__((vector_size(16)));
#if FN_VBYTES >= 32
typedef long long fn_q32 __attribute__((vector_size(32)));
#endif
#if FN_VBYTES >= 64
typedef long long fn_q64 __attribute__((vector_size(64)));
#endif

#define T float
#define TS f32
#define FN_T_BYTES 4
#define FN_T_MAX FLT_MAX
#define FN_T_MIN FLT_MIN
#include "norm_template.h"
#include "bwd_template.h"
#include "lrn_template.h"
#undef T
#undef TS
#undef FN_T_BYTES
#undef FN_T_MAX
#undef FN_T_MIN

#define T double
#define TS f64
#define FN_T_BYTES 8
#define FN_T_MAX DBL_MAX
#define FN_T_MIN DBL_MIN
#include "norm_template.h"
#include "bwd_template.h"
#include "lrn_template.h"
#undef T
#undef TS
#undef FN_T_BYTES
#undef FN_T_MAX
#undef FN_T_MIN

#define FN_TR_BYTES 4
#include "transpose_template.h"
#undef FN_TR_BYTES
#define FN_TR_BYTES 8
#include "transpose_template.h"
#undef FN_TR_BYTES

#include "copy_template.h"

const fn_isa_table FN_CAT(fn_table_, FN_ISA) = {
    FN_STR(FN_ISA), seg_norm_f32, seg_norm_f64, col_norm_f32, col_norm_f64,
    seg_bwd_f32, seg_bwd_f64, col_bwd_f32, col_bwd_f64,
    add_rows_f32, add_rows_f64,
    lrn_f32, lrn_f64, lrn_bwd_f32, lrn_bwd_f64,
    transpose_tile_b4, transpose_tile_b8, copy_bytes,
};
