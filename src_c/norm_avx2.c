/* norm_avx2.c - the AVX2 + FMA path; compiled with -mavx2 -mfma, only called
 * after fn_runtime.c has checked the CPU and the OS. */
#define FN_ISA avx2
#define FN_VBYTES 32
#include "norm_isa.h"
