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

fn_tile_fn fn_transpose_tile(size_t elsize)
{
    return elsize == 4 ? fn_table()->transpose_tile_b4 : fn_table()->transpose_tile_b8;
}

/* --------------------------------------------------------- caches ---- */

/* The machine the walks were first tuned on had 2 MiB of L2 per core. */
#define FN_L2_DEFAULT_BYTES ((size_t)2 << 20)

static size_t fn_l2_cached = 0;   /* 0: not detected yet */

static size_t fn_l2_detect(void)
{
#ifdef _SC_LEVEL2_CACHE_SIZE
    long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0) return (size_t)v;
#endif
    return FN_L2_DEFAULT_BYTES;
}

/* Relaxed atomics: detection gives every thread the same value, and an override
 * only has to be seen by the calls that start after it. */
size_t fn_l2_bytes(void)
{
    size_t v = __atomic_load_n(&fn_l2_cached, __ATOMIC_RELAXED);
    if (!v) {
        v = fn_l2_detect();
        __atomic_store_n(&fn_l2_cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

void fn_set_l2_bytes(size_t bytes)
{
    __atomic_store_n(&fn_l2_cached, bytes ? bytes : fn_l2_detect(), __ATOMIC_RELAXED);
}

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

/* Online processors of the machine (what /proc/stat's ticks are summed over). */
static int fn_usable_cores_raw(void)
{
#if defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

/* FASTNORM_IGNORE_LOAD=1 turns the load adaptation off (benchmarks of raw scaling). */
static int fn_ignore_load(void)
{
    static int cached = -1;
    if (cached < 0) {
        const char *e = getenv("FASTNORM_IGNORE_LOAD");
        cached = e && e[0] && e[0] != '0';
    }
    return cached;
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

/* Cores that other processes leave free, sampled from /proc/stat at most every
 * FN_LOAD_PERIOD_NS. A 2-thread OpenMP region whose second thread shares a core
 * with a busy process waits milliseconds at its closing barrier; when another
 * process keeps a core busy, fastnorm asks for fewer threads instead (down to
 * the serial path). */
#define FN_LOAD_PERIOD_NS 50000000LL

#if defined(__linux__)
#include <stdio.h>
#include <time.h>
static long long fn_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int fn_read_cpu_ticks(unsigned long long *busy, unsigned long long *all, unsigned long long *self)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
                   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4) return 0;
    *all = 0;
    for (int i = 0; i < 8; i++) *all += v[i];
    *busy = *all - v[3] - v[4];   /* minus idle and iowait */
    f = fopen("/proc/self/stat", "r");
    if (!f) return 0;
    /* fields 14 and 15 (utime, stime) follow the command name in parentheses */
    char buf[1024];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return 0;
    *self = ut + st;
    return 1;
}

static int fn_free_cores_cached = 0;
static long long fn_load_sampled_at = 0;
static unsigned long long fn_prev_busy, fn_prev_all, fn_prev_self;
static int fn_load_lock = 0;

static int fn_free_cores(int cores)
{
    long long now = fn_now_ns();
    long long last = __atomic_load_n(&fn_load_sampled_at, __ATOMIC_ACQUIRE);
    if (last && now - last < FN_LOAD_PERIOD_NS) return __atomic_load_n(&fn_free_cores_cached, __ATOMIC_RELAXED);
    if (__atomic_exchange_n(&fn_load_lock, 1, __ATOMIC_ACQ_REL)) {   /* another thread samples */
        int c = __atomic_load_n(&fn_free_cores_cached, __ATOMIC_RELAXED);
        return c ? c : cores;
    }
    unsigned long long busy, all, self;
    int free_cores = cores;
    if (fn_read_cpu_ticks(&busy, &all, &self)) {
        if (last && all > fn_prev_all) {
            double per_cpu = (double)(all - fn_prev_all) / (double)fn_usable_cores_raw();
            double others = ((double)(busy - fn_prev_busy) - (double)(self - fn_prev_self)) / per_cpu;
            free_cores = cores - (int)(others + 0.5);
            if (free_cores < 1) free_cores = 1;
            if (free_cores > cores) free_cores = cores;
        }
        fn_prev_busy = busy; fn_prev_all = all; fn_prev_self = self;
    }
    __atomic_store_n(&fn_free_cores_cached, free_cores, __ATOMIC_RELAXED);
    __atomic_store_n(&fn_load_sampled_at, now, __ATOMIC_RELEASE);
    __atomic_store_n(&fn_load_lock, 0, __ATOMIC_RELEASE);
    return free_cores;
}

/* fn_usable_cores() at most FN_LOAD_PERIOD_NS old: with GNU OpenMP it is a
 * sched_getaffinity system call, a good part of a small call's time. */
static int fn_usable_cores_cached(void)
{
    static int cores = 0;
    static long long at = 0;
    long long now = fn_now_ns();
    int c = __atomic_load_n(&cores, __ATOMIC_RELAXED);
    if (c && now - __atomic_load_n(&at, __ATOMIC_RELAXED) < FN_LOAD_PERIOD_NS) return c;
    c = fn_usable_cores();
    __atomic_store_n(&cores, c, __ATOMIC_RELAXED);
    __atomic_store_n(&at, now, __ATOMIC_RELAXED);
    return c;
}
#else
static int fn_free_cores(int cores) { return cores; }
static int fn_usable_cores_cached(void) { return fn_usable_cores(); }
#endif

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
    int cores = fn_usable_cores_cached();
    if (!fn_ignore_load()) {
        int free_cores = fn_free_cores(cores);
        if (free_cores < want) want = free_cores;
        if (want <= 1) return 1;
    }
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

/* A SEG shape whose segments hold one value each, laid end to end in x and y
 * (GroupNorm over (N, C, 1, 1): units of Cg planes of one value), as one
 * segment of R1 values per unit; the kernels' per-segment steps would otherwise
 * run once per value (such a GroupNorm took 2-4x PyTorch's time). Returns s
 * itself when it is not that case. */
static const fn_seg_shape *fn_seg_joined(const fn_seg_shape *s, int has_y, fn_seg_shape *joined)
{
    if (s->R2 != 1 || s->R1 < 2 || s->xr1 != 1 || (has_y && s->yr1 != 1)
        || (s->wr1 != 0 && s->wr1 != 1))
        return s;
    *joined = *s;
    joined->R2 = s->R1;
    joined->R1 = 1;
    joined->xr1 = joined->yr1 = s->R1;
    joined->wr2 = s->wr1;
    joined->wr1 = 0;
    return joined;
}

int fn_seg_norm_f32(const fn_seg_shape *s, const float *x, float *y, const fn_norm_args *p)
{ fn_seg_shape j; return fn_table()->seg_f32(fn_seg_joined(s, y != NULL, &j), x, y, p); }
int fn_seg_norm_f64(const fn_seg_shape *s, const double *x, double *y, const fn_norm_args *p)
{ fn_seg_shape j; return fn_table()->seg_f64(fn_seg_joined(s, y != NULL, &j), x, y, p); }
int fn_col_norm_f32(const fn_col_shape *s, const float *x, float *y, const fn_norm_args *p)
{ return fn_table()->col_f32(s, x, y, p); }
int fn_col_norm_f64(const fn_col_shape *s, const double *x, double *y, const fn_norm_args *p)
{ return fn_table()->col_f64(s, x, y, p); }

int fn_seg_bwd_f32(const fn_seg_shape *s, const float *x, const float *dy, float *dx, const fn_bwd_args *p)
{ fn_seg_shape j; return fn_table()->seg_bwd_f32(fn_seg_joined(s, dx != NULL, &j), x, dy, dx, p); }
int fn_seg_bwd_f64(const fn_seg_shape *s, const double *x, const double *dy, double *dx, const fn_bwd_args *p)
{ fn_seg_shape j; return fn_table()->seg_bwd_f64(fn_seg_joined(s, dx != NULL, &j), x, dy, dx, p); }
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

int fn_lrn_f32(const fn_lrn_shape *s, const float *x, float *y, const fn_lrn_args *p)
{ return fn_table()->lrn_f32(s, x, y, p); }
int fn_lrn_f64(const fn_lrn_shape *s, const double *x, double *y, const fn_lrn_args *p)
{ return fn_table()->lrn_f64(s, x, y, p); }
int fn_lrn_bwd_f32(const fn_lrn_shape *s, const float *x, const float *dy, float *dx, const fn_lrn_args *p)
{ return fn_table()->lrn_bwd_f32(s, x, dy, dx, p); }
int fn_lrn_bwd_f64(const fn_lrn_shape *s, const double *x, const double *dy, double *dx, const fn_lrn_args *p)
{ return fn_table()->lrn_bwd_f64(s, x, dy, dx, p); }

/* Kept for lrn.h's interface: LRN shares the engine's OpenMP build. */
int fn_lrn_openmp_enabled(void) { return fn_openmp_enabled(); }

void fn_copy(const void *src, void *dst, size_t nbytes, int nthreads)
{
    const size_t chunk = (size_t)1 << 16;
    ptrdiff_t nchunks = (ptrdiff_t)((nbytes + chunk - 1) / chunk);
    int nt = nthreads > 1 ? fn_threads_acquire(nthreads) : 1;
    void (*copy)(const void *, void *, size_t) = fn_table()->copy_bytes;
    const char *src_b = (const char *)src;
    char *dst_b = (char *)dst;
    FN_PARALLEL_SHARES(nt, nchunks, i,
        size_t off = (size_t)i * chunk, len = nbytes - off < chunk ? nbytes - off : chunk;
        copy(src_b + off, dst_b + off, len);
    );
    if (nt > 1) fn_threads_release(nt);
}
