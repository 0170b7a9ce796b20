/* norm_generic.c - the baseline x86-64 (SSE2) or other-architecture path. */
#define FN_ISA generic
#define FN_VBYTES 16
#include "norm_isa.h"
