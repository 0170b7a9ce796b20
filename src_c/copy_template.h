/* copy_template.h - the plain copy behind the benchmarks' bandwidth reference
 * (`fastnorm._ext.omp_copy`), for one SIMD path; fn_copy in fn_runtime.c walks
 * it over chunks shared between threads. Included once by norm_isa.h.
 *
 * Why not memcpy: the reference stands for one read of x and one write of y
 * through the cache, and glibc's memcpy picks its own way per size. It copied
 * the 64 KiB chunks with `rep movsb`, which on the AMD EPYC (Zen 3) guest of
 * 2026-12-02 read from memory at a fifth of a vector loop's speed (12 MiB in
 * 4.55 against 0.86 ms on one thread, `glibc.cpu.x86_rep_movsb_threshold` set
 * above the chunk size), so fastnorm's ops read as 2-5x "faster than a copy"
 * there; whole-array calls take non-temporal stores instead. Four vectors a
 * step, unaligned loads and stores, the tail byte by byte. */

typedef unsigned char fn_cp_vec __attribute__((vector_size(FN_VBYTES)));

static void copy_bytes(const void *src, void *dst, size_t nbytes)
{
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *d = (unsigned char *)dst;
    size_t i = 0;
    for (; i + 4 * FN_VBYTES <= nbytes; i += 4 * FN_VBYTES) {
        fn_cp_vec v0, v1, v2, v3;
        __builtin_memcpy(&v0, s + i, FN_VBYTES);
        __builtin_memcpy(&v1, s + i + FN_VBYTES, FN_VBYTES);
        __builtin_memcpy(&v2, s + i + 2 * FN_VBYTES, FN_VBYTES);
        __builtin_memcpy(&v3, s + i + 3 * FN_VBYTES, FN_VBYTES);
        /* register barriers: without them GCC turns the loop back into a call
         * to memcpy (loop distribution) */
        FN_IN_REGISTER(v0);
        FN_IN_REGISTER(v1);
        FN_IN_REGISTER(v2);
        FN_IN_REGISTER(v3);
        __builtin_memcpy(d + i, &v0, FN_VBYTES);
        __builtin_memcpy(d + i + FN_VBYTES, &v1, FN_VBYTES);
        __builtin_memcpy(d + i + 2 * FN_VBYTES, &v2, FN_VBYTES);
        __builtin_memcpy(d + i + 3 * FN_VBYTES, &v3, FN_VBYTES);
    }
    for (; i < nbytes; i++) d[i] = s[i];
}
