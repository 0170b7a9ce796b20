/* fn_runtime.c - baseline code around the kernels: CPU feature detection and the
 * choice of SIMD table, the thread budget shared by concurrent callers, fork
 * detection, and the public entry points that forward to the active table.
 *
 * Compiled without any -m flag: it must run on every x86-64 (and elsewhere). */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <unistd.h>
#define FN_HAVE_PTHREAD_ATFORK 1
#endif
#include "fn_internal.h"

extern const fn_isa_table fn_table_generic;
#ifdef FN_HAVE_AVX2
extern const fn_isa_table fn_table_avx2;
#endif
#ifdef FN_HAVE_AVX512
extern const fn_isa_table fn_table_avx512;
#endif

/* ------------------------------------------------------------ CPU ---- */

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static unsigned long long fn_xgetbv0(void)
{
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

/* CPUID says what the core can do, XCR0 whether the OS saves the wider registers:
 * both are needed, or an AVX instruction faults on a kernel that disabled it. */
static int fn_cpu_has(int isa)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return 0;
    unsigned long long xcr0 = fn_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0;                 /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int avx2 = (b >> 5) & 1;
    if (isa == FN_ISA_AVX2) return avx2 && fma;
    if (isa == FN_ISA_AVX512) {
        int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        return avx2 && fma && f && dq && bw && vl && (xcr0 & 0xe6) == 0xe6;   /* opmask, ZMM state */
    }
    return 0;
}
#else
static int fn_cpu_has(int isa) { (void)isa; return 0; }
#endif

static const fn_isa_table *fn_tables[FN_ISA_COUNT] = {
    &fn_table_generic,
#ifdef FN_HAVE_AVX2
    &fn_table_avx2,
#else
    NULL,
#endif
#ifdef FN_HAVE_AVX512
    &fn_table_avx512,
#else
    NULL,
#endif
};

static const char *fn_isa_names[FN_ISA_COUNT] = {"generic", "avx2", "avx512"};
static int fn_active = -1;

const char *fn_isa_name(int isa) { return (isa >= 0 && isa < FN_ISA_COUNT) ? fn_isa_names[isa] : "?"; }
int fn_isa_compiled(int isa) { return isa >= 0 && isa < FN_ISA_COUNT && fn_tables[isa] != NULL; }

int fn_isa_supported(int isa)
{
    if (!fn_isa_compiled(isa)) return 0;
    return isa == FN_ISA_GENERIC || fn_cpu_has(isa);
}

int fn_isa_select(int isa)
{
    if (!fn_isa_supported(isa)) return -1;
    fn_active = isa;
    return 0;
}

int fn_isa_active(void)
{
    if (fn_active < 0) {
        int best = FN_ISA_GENERIC;
        for (int i = 1; i < FN_ISA_COUNT; i++)
            if (fn_isa_supported(i)) best = i;
        fn_active = best;
    }
    return fn_active;
}

static const fn_isa_table *fn_table(void) { return fn_tables[fn_isa_active()]; }

/* ------------------------------------------------------- threads ---- */

#ifdef FN_HAVE_PTHREAD_ATFORK
static volatile int fn_is_forked_child = 0;
static void fn_on_fork_child(void) { fn_is_forked_child = 1; }
static pthread_once_t fn_fork_once = PTHREAD_ONCE_INIT;
static void fn_register_fork(void) { pthread_atfork(NULL, NULL, fn_on_fork_child); }
#endif

int fn_forked_child(void)
{
#ifdef FN_HAVE_PTHREAD_ATFORK
    pthread_once(&fn_fork_once, fn_register_fork);
    return fn_is_forked_child;
#else
    return 0;
#endif
}

int fn_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fn_omp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void fn_omp_set_num_threads(int n)
{
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int fn_usable_cores(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#elif defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

/* Threads held by running kernels. A call alone gets what it asks; concurrent
 * calls (Python threads, a ThreadPoolExecutor) share the cores instead of each
 * starting a full team, so the process never runs more OpenMP threads than
 * cores plus callers. */
static int fn_busy_threads = 0;

int fn_threads_acquire(int want)
{
    if (want <= 1) return 1;
    /* GNU OpenMP's pool does not survive fork(): a child runs serially. */
    if (fn_forked_child()) return 1;
#ifndef _OPENMP
    return 1;
#endif
    int cores = fn_usable_cores();
    int busy = __atomic_load_n(&fn_busy_threads, __ATOMIC_RELAXED);
    for (;;) {
        int grant = want;
        if (busy > 0) {
            int avail = cores - busy;
            grant = avail < 1 ? 1 : (avail < want ? avail : want);
        }
        if (grant <= 1) return 1;
        if (__atomic_compare_exchange_n(&fn_busy_threads, &busy, busy + grant, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return grant;
    }
}

void fn_threads_release(int n)
{
    if (n > 1) __atomic_fetch_sub(&fn_busy_threads, n, __ATOMIC_ACQ_REL);
}

/* ---------------------------------------------------- entry points ---- */

int fn_seg_norm_f32(const fn_seg_shape *s, const float *x, float *y, const fn_norm_args *p)
{ return fn_table()->seg_f32(s, x, y, p); }
int fn_seg_norm_f64(const fn_seg_shape *s, const double *x, double *y, const fn_norm_args *p)
{ return fn_table()->seg_f64(s, x, y, p); }
int fn_col_norm_f32(const fn_col_shape *s, const float *x, float *y, const fn_norm_args *p)
{ return fn_table()->col_f32(s, x, y, p); }
int fn_col_norm_f64(const fn_col_shape *s, const double *x, double *y, const fn_norm_args *p)
{ return fn_table()->col_f64(s, x, y, p); }

int fn_seg_bwd_f32(const fn_seg_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p)
{ return fn_table()->seg_bwd_f32(s, x, dy, dx, p); }
int fn_seg_bwd_f64(const fn_seg_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p)
{ return fn_table()->seg_bwd_f64(s, x, dy, dx, p); }
int fn_col_bwd_f32(const fn_col_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p)
{ return fn_table()->col_bwd_f32(s, x, dy, dx, p); }
int fn_col_bwd_f64(const fn_col_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p)
{ return fn_table()->col_bwd_f64(s, x, dy, dx, p); }

int fn_add_rows_f32(const float *x, ptrdiff_t xs, const float *r, ptrdiff_t rs, float *sum, ptrdiff_t ss,
                    float *y, ptrdiff_t ys, ptrdiff_t M, ptrdiff_t D, const fn_norm_args *p)
{ return fn_table()->add_rows_f32(x, xs, r, rs, sum, ss, y, ys, M, D, p); }
int fn_add_rows_f64(const double *x, ptrdiff_t xs, const double *r, ptrdiff_t rs, double *sum, ptrdiff_t ss,
                    double *y, ptrdiff_t ys, ptrdiff_t M, ptrdiff_t D, const fn_norm_args *p)
{ return fn_table()->add_rows_f64(x, xs, r, rs, sum, ss, y, ys, M, D, p); }

void fn_copy(const void *src, void *dst, size_t nbytes, int nthreads)
{
    const size_t chunk = (size_t)1 << 16;
    ptrdiff_t nchunks = (ptrdiff_t)((nbytes + chunk - 1) / chunk);
    int nt = nthreads > 1 ? fn_threads_acquire(nthreads) : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (ptrdiff_t i = 0; i < nchunks; i++) {
        size_t off = (size_t)i * chunk, len = nbytes - off < chunk ? nbytes - off : chunk;
        memcpy((char *)dst + off, (const char *)src + off, len);
    }
    if (nt > 1) fn_threads_release(nt);
}
