/* fn_scratch.c - per-thread reuse of the kernels' per-call work arrays.
 *
 * The column kernels need arrays that grow with the number of columns (partial
 * sums per row block, four coefficient arrays): 400 KiB for a BatchNorm
 * backward over 4096 channels. malloc serves blocks that large with mmap and
 * returns them with munmap, so every call paid for fresh pages: a backward over
 * (8, 4096) float32 spent half its 255 us in the kernel's page-fault and unmap
 * paths. Each thread (the caller's and OpenMP's workers) keeps the blocks it
 * freed, up to FN_SCRATCH_SLOTS of them and FN_SCRATCH_KEEP_BYTES in all, and
 * hands the smallest one that fits to its next request. A thread's blocks are
 * released when it exits. Sanitizer builds do not cache, so that a use after
 * free still shows. */
#include <stdlib.h>
#include "fn_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define FN_SCRATCH_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FN_SCRATCH_CACHE 0
#endif
#endif
#ifndef FN_SCRATCH_CACHE
#if defined(__unix__) || defined(__APPLE__)
#define FN_SCRATCH_CACHE 1
#else
#define FN_SCRATCH_CACHE 0
#endif
#endif

#define FN_SCRATCH_SLOTS 4
#define FN_SCRATCH_KEEP_BYTES ((size_t)8 << 20)
/* The block's capacity and malloc's pointer sit before the caller's pointer,
 * which starts a cache line: the column kernels place their coefficient arrays
 * at y's offset within a line (col_coef_base), so that their loads are as
 * aligned as the stores to y. */
#define FN_SCRATCH_HEADER 64

typedef struct {
    size_t cap;
    void *raw;
} fn_scratch_head;

static void *fn_scratch_new(size_t bytes)
{
    char *raw = (char *)malloc(FN_SCRATCH_HEADER + FN_LINE_BYTES + bytes);
    if (!raw) return NULL;
    char *q = raw + FN_SCRATCH_HEADER + (FN_LINE_BYTES - (uintptr_t)raw % FN_LINE_BYTES) % FN_LINE_BYTES;
    fn_scratch_head h = {bytes, raw};
    __builtin_memcpy(q - FN_SCRATCH_HEADER, &h, sizeof h);
    return q;
}

static fn_scratch_head fn_scratch_head_of(void *q)
{
    fn_scratch_head h;
    __builtin_memcpy(&h, (char *)q - FN_SCRATCH_HEADER, sizeof h);
    return h;
}

static size_t fn_scratch_cap(void *q) { return fn_scratch_head_of(q).cap; }
static void fn_scratch_release(void *q) { free(fn_scratch_head_of(q).raw); }

#if FN_SCRATCH_CACHE
#include <pthread.h>

typedef struct {
    void *blk[FN_SCRATCH_SLOTS];
    size_t held;
} fn_scratch_cache;

static pthread_key_t fn_scratch_key;
static pthread_once_t fn_scratch_once = PTHREAD_ONCE_INIT;
static int fn_scratch_key_ok;

static void fn_scratch_destroy(void *v)
{
    fn_scratch_cache *c = (fn_scratch_cache *)v;
    for (int i = 0; i < FN_SCRATCH_SLOTS; i++)
        if (c->blk[i]) fn_scratch_release(c->blk[i]);
    free(c);
}

static void fn_scratch_make_key(void) { fn_scratch_key_ok = pthread_key_create(&fn_scratch_key, fn_scratch_destroy) == 0; }

static fn_scratch_cache *fn_scratch_get_cache(void)
{
    pthread_once(&fn_scratch_once, fn_scratch_make_key);
    if (!fn_scratch_key_ok) return NULL;
    fn_scratch_cache *c = (fn_scratch_cache *)pthread_getspecific(fn_scratch_key);
    if (!c) {
        c = (fn_scratch_cache *)calloc(1, sizeof *c);
        if (c && pthread_setspecific(fn_scratch_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

void *fn_scratch_alloc(size_t bytes)
{
    fn_scratch_cache *c = fn_scratch_get_cache();
    if (c) {
        int best = -1;
        for (int i = 0; i < FN_SCRATCH_SLOTS; i++)
            if (c->blk[i] && fn_scratch_cap(c->blk[i]) >= bytes
                && (best < 0 || fn_scratch_cap(c->blk[i]) < fn_scratch_cap(c->blk[best])))
                best = i;
        if (best >= 0) {
            void *q = c->blk[best];
            c->blk[best] = NULL;
            c->held -= fn_scratch_cap(q);
            return q;
        }
    }
    return fn_scratch_new(bytes);
}

void fn_scratch_free(void *q)
{
    if (!q) return;
    size_t cap = fn_scratch_cap(q);
    fn_scratch_cache *c = cap <= FN_SCRATCH_KEEP_BYTES ? fn_scratch_get_cache() : NULL;
    while (c) {
        /* room for it: an empty slot within the byte budget */
        int empty = -1, smallest = -1;
        for (int i = 0; i < FN_SCRATCH_SLOTS; i++) {
            if (!c->blk[i]) empty = i;
            else if (smallest < 0 || fn_scratch_cap(c->blk[i]) < fn_scratch_cap(c->blk[smallest])) smallest = i;
        }
        if (empty >= 0 && c->held + cap <= FN_SCRATCH_KEEP_BYTES) {
            c->blk[empty] = q;
            c->held += cap;
            return;
        }
        /* else make room by dropping a smaller block, if there is one */
        if (smallest < 0 || fn_scratch_cap(c->blk[smallest]) >= cap) break;
        c->held -= fn_scratch_cap(c->blk[smallest]);
        fn_scratch_release(c->blk[smallest]);
        c->blk[smallest] = NULL;
    }
    fn_scratch_release(q);
}
#else
void *fn_scratch_alloc(size_t bytes) { return fn_scratch_new(bytes); }
void fn_scratch_free(void *q)
{
    if (q) fn_scratch_release(q);
}
#endif
