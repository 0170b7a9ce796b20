/* How fast one core moves an array of float32 through each kind of store and
 * walk, in GB/s (one read of x and one write of y counted), best of 15 rounds:
 * the machine facts behind the README's notes on inputs that stay in L3.
 *
 *   cc -O2 -mavx2 -mfma bench/store_walks.c -o /tmp/store_walks
 *   /tmp/store_walks 8        # MiB of x; 1-8 stay in L3 on the machines used
 *
 * Two copies at once, one per core:
 *   taskset -c 0 /tmp/store_walks 8 & taskset -c 1 /tmp/store_walks 8; wait
 *
 * Columns:
 *   memcpy      the C library's copy (what NumPy's copyto and the benchmark's
 *               copy reference run)
 *   vcopy       AVX2 loads and stores through the cache, 4 vectors a step
 *   movsb       rep movsb, which may write whole lines without reading them
 *   axpb        y = x * s + o, one vector a step, stores through the cache
 *   staged1k/4k y computed into a 1 KiB or 4 KiB buffer in L1, then rep movsb
 *   stream      y = x * s + o with non-temporal stores
 *   two_pass    per 32 KiB chunk: sums of x, then y = (x - c) * s + o
 *   piped       the same, with the next chunk's sums inside the normalize loop
 * Needs AVX2 and FMA (x86-64); not part of the package or its build.
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 8192 /* floats: 32 KiB */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void vcopy(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += 32) {
        __m256 a = _mm256_load_ps(x + i), b = _mm256_load_ps(x + i + 8);
        __m256 c = _mm256_load_ps(x + i + 16), d = _mm256_load_ps(x + i + 24);
        _mm256_store_ps(y + i, a);
        _mm256_store_ps(y + i + 8, b);
        _mm256_store_ps(y + i + 16, c);
        _mm256_store_ps(y + i + 24, d);
    }
}

static void movsb(void *d, const void *s, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

static void axpb(float *y, const float *x, size_t n)
{
    const __m256 s = _mm256_set1_ps(1.5f), o = _mm256_set1_ps(0.5f);
    for (size_t i = 0; i < n; i += 8) _mm256_store_ps(y + i, _mm256_fmadd_ps(_mm256_load_ps(x + i), s, o));
}

static void staged(float *y, const float *x, size_t n, size_t chunk)
{
    static float buf[1024] __attribute__((aligned(64)));
    const __m256 s = _mm256_set1_ps(1.5f), o = _mm256_set1_ps(0.5f);
    for (size_t c = 0; c < n; c += chunk) {
        for (size_t i = 0; i < chunk; i += 8)
            _mm256_store_ps(buf + i, _mm256_fmadd_ps(_mm256_load_ps(x + c + i), s, o));
        movsb(y + c, buf, chunk * sizeof(float));
    }
}

static void stream(float *y, const float *x, size_t n)
{
    const __m256 s = _mm256_set1_ps(1.5f), o = _mm256_set1_ps(0.5f);
    for (size_t i = 0; i < n; i += 8) _mm256_stream_ps(y + i, _mm256_fmadd_ps(_mm256_load_ps(x + i), s, o));
    _mm_sfence();
}

/* shifted sums of a chunk: s1 + s2 folded into one vector (enough to keep
 * the loop honest; the scale below depends on it) */
static __m256 chunk_sums(const float *x, __m256 c)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, q0 = s0, q1 = s0;
    for (size_t i = 0; i < CHUNK; i += 16) {
        __m256 a = _mm256_sub_ps(_mm256_load_ps(x + i), c), b = _mm256_sub_ps(_mm256_load_ps(x + i + 8), c);
        s0 = _mm256_add_ps(s0, a);
        s1 = _mm256_add_ps(s1, b);
        q0 = _mm256_fmadd_ps(a, a, q0);
        q1 = _mm256_fmadd_ps(b, b, q1);
    }
    return _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(q0, q1));
}

static __m256 scale_of(__m256 sums)
{
    float t[8];
    _mm256_storeu_ps(t, sums);
    return _mm256_set1_ps(1.0f / (1.0f + t[0] * 1e-30f));
}

static void two_pass(float *y, const float *x, size_t n)
{
    const __m256 o = _mm256_set1_ps(0.5f);
    for (size_t c = 0; c < n; c += CHUNK) {
        const float *xc = x + c;
        __m256 sh = _mm256_set1_ps(xc[0]), sc = scale_of(chunk_sums(xc, sh));
        for (size_t i = 0; i < CHUNK; i += 8)
            _mm256_store_ps(y + c + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_load_ps(xc + i), sh), sc, o));
    }
}

static void piped(float *y, const float *x, size_t n)
{
    const __m256 o = _mm256_set1_ps(0.5f);
    __m256 sh = _mm256_set1_ps(x[0]), sums = chunk_sums(x, sh);
    for (size_t c = 0; c < n; c += CHUNK) {
        const float *xc = x + c, *xn = x + c + CHUNK;
        __m256 sc = scale_of(sums), shc = sh;
        if (c + CHUNK < n) {
            __m256 s = _mm256_setzero_ps(), q = s;
            sh = _mm256_set1_ps(xn[0]);
            for (size_t i = 0; i < CHUNK; i += 8) {
                __m256 a = _mm256_sub_ps(_mm256_load_ps(xn + i), sh);
                s = _mm256_add_ps(s, a);
                q = _mm256_fmadd_ps(a, a, q);
                _mm256_store_ps(y + c + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_load_ps(xc + i), shc), sc, o));
            }
            sums = _mm256_add_ps(s, q);
        } else {
            for (size_t i = 0; i < CHUNK; i += 8)
                _mm256_store_ps(y + c + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_load_ps(xc + i), shc), sc, o));
        }
    }
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 8;
    size_t n = mib << 18;
    if (n == 0) { fprintf(stderr, "usage: %s MiB (at least 1)\n", argv[0]); return 2; }
    float *x = aligned_alloc(64, n * sizeof(float)), *y = aligned_alloc(64, n * sizeof(float));
    if (!x || !y) { fprintf(stderr, "out of memory\n"); return 1; }
    for (size_t i = 0; i < n; i++) { x[i] = (float)(i % 1000); y[i] = 0; }
    enum { KINDS = 9 };
    const char *names[KINDS] = {"memcpy", "vcopy", "movsb", "axpb", "staged1k", "staged4k", "stream", "two_pass",
                                "piped"};
    double best[KINDS];
    for (int k = 0; k < KINDS; k++) best[k] = 1e30;
    for (int round = 0; round < 15; round++)
        for (int k = 0; k < KINDS; k++) {
            double t = now();
            for (int rep = 0; rep < 5; rep++) {
                switch (k) {
                case 0: memcpy(y, x, n * sizeof(float)); break;
                case 1: vcopy(y, x, n); break;
                case 2: movsb(y, x, n * sizeof(float)); break;
                case 3: axpb(y, x, n); break;
                case 4: staged(y, x, n, 256); break;
                case 5: staged(y, x, n, 1024); break;
                case 6: stream(y, x, n); break;
                case 7: two_pass(y, x, n); break;
                default: piped(y, x, n); break;
                }
            }
            t = (now() - t) / 5;
            if (t < best[k]) best[k] = t;
        }
    printf("%zu MiB:", mib);
    for (int k = 0; k < KINDS; k++) printf(" %s %.1f", names[k], 2.0 * n * sizeof(float) / best[k] / 1e9);
    printf(" GB/s\n");
    free(x);
    free(y);
    return 0;
}
