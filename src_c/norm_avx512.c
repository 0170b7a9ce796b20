/* norm_avx512.c - the AVX-512 (F/BW/DQ/VL) path; compiled with -mavx512f and
 * friends, only called after fn_runtime.c has checked the CPU and the OS. */
#define FN_ISA avx512
#define FN_VBYTES 64
#include "norm_isa.h"
