/* norm_isa.h - one SIMD path of the engine: both dtypes and their function table.
 *
 * A compilation unit defines FN_ISA (generic, avx2, avx512) and FN_VBYTES, then
 * includes this header; setup.py compiles each unit with its own -m flags and
 * fn_runtime.c picks one table at import. */
#include "fn_internal.h"

#define T float
#define TS f32
#include "norm_template.h"
#include "bwd_template.h"
#undef T
#undef TS

#define T double
#define TS f64
#include "norm_template.h"
#include "bwd_template.h"
#undef T
#undef TS

const fn_isa_table FN_CAT(fn_table_, FN_ISA) = {
    FN_STR(FN_ISA), seg_norm_f32, seg_norm_f64, col_norm_f32, col_norm_f64,
    seg_bwd_f32, seg_bwd_f64, col_bwd_f32, col_bwd_f64,
    add_rows_f32, add_rows_f64,
};
