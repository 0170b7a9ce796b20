/* fn_bufcache.c - recycled memory for large outputs.
 *
 * A fresh large allocation costs a page fault per page on first write (the
 * kernel zeroes each page), which makes `y = layer_norm(x)` on 100 MB two to
 * three times slower than writing into memory already mapped. Pipelines call
 * the same op on same-sized inputs again and again, so blocks freed by outputs
 * are kept (up to a byte limit) and handed to the next output of a similar size,
 * as ONNX Runtime's arena or PyTorch's caching allocators do.
 *
 * Each block carries a header with its size. Plain C, no Python: the NumPy
 * memory handler that routes output arrays here lives in fastnorm/_bufcache.pxi.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include "fn_bufcache.h"

#define FN_CACHE_SLOTS 8
#define FN_HEADER 64                  /* the block's own fields; keeps what follows 64-byte aligned */
#define FN_PAGE 4096
/* Data starts FN_LEAD bytes past the header plus its offset within a page (under
 * FN_PAGE), so that the word before its 64-byte boundary, which leads back to the
 * block, lies past the header. */
#define FN_LEAD 64
#define FN_SLACK (FN_HEADER + FN_LEAD + FN_PAGE)
#define FN_HUGE_PAGE ((size_t)2 << 20)

/* stamp: when the block was freed; the oldest block makes room for a new one */
static struct { char *base; size_t cap; unsigned long long stamp; } slots[FN_CACHE_SLOTS];
static size_t cached_bytes = 0, cache_limit = FN_CACHE_DEFAULT_LIMIT;
static unsigned long long clock_ticks = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* The header of a block: its size from base to end, and whether it was mapped on
 * its own. Its capacity, the bytes usable at any page offset, is total - FN_SLACK. */
typedef struct { size_t total, mapped; } fn_block_header;

static char *fresh_block(size_t size)
{
    /* 2 MiB alignment lets transparent huge pages back the whole block */
    size_t align = size >= FN_HUGE_PAGE ? FN_HUGE_PAGE : 64;
    size_t total = (size + FN_SLACK + align - 1) / align * align;
    char *base = NULL;
    size_t mapped = 0;
#if defined(__linux__)
    if (size >= FN_HUGE_PAGE) {
        /* mapped on its own rather than through malloc: a block given back then
         * returns its pages to the system instead of lingering in malloc's heap
         * (which raises its mmap threshold after large frees) */
        char *m = (char *)mmap(NULL, total + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        base = (char *)(((uintptr_t)m + align - 1) / align * align);
        if (base > m) munmap(m, (size_t)(base - m));
        if (m + total + align > base + total) munmap(base + total, (size_t)(m + total + align - (base + total)));
        mapped = 1;
#if defined(MADV_HUGEPAGE)
        madvise(base, total, MADV_HUGEPAGE);
#endif
    }
#endif
    if (!base && posix_memalign((void **)&base, align, total) != 0) return NULL;
    fn_block_header *h = (fn_block_header *)base;
    h->total = total;
    h->mapped = mapped;
    return base;
}

/* The word before the 64-byte boundary at or below ptr, a pointer hand_out
 * returned: it leads back to the block. */
static char **back_slot(const void *ptr)
{
    return (char **)((uintptr_t)ptr & ~(uintptr_t)(FN_LEAD - 1)) - 1;
}

/* Where block base hands out data offset % FN_PAGE bytes past a page boundary. */
static void *hand_out(char *base, size_t offset)
{
    char *first = base + FN_HEADER + FN_LEAD;
    char *p = first + (offset - (uintptr_t)first) % FN_PAGE;
    *back_slot(p) = base;
    return p;
}

/* The block that holds ptr, a pointer hand_out returned. */
static char *block_base(const void *ptr)
{
    return *back_slot(ptr);
}

/* A block of capacity size or more: a cached one when one fits, else fresh. */
static char *take_block(size_t size, int *reused)
{
    *reused = 0;
    if (size >= FN_CACHE_MIN_BYTES) {
        /* the smallest cached block that fits without wasting more than a quarter,
         * beyond the rounding of fresh blocks to whole huge pages (a 4 MiB output
         * gets a 6 MiB block, which a quarter alone would never hand out again) */
        int best = -1;
        pthread_mutex_lock(&lock);
        for (int i = 0; i < FN_CACHE_SLOTS; i++)
            if (slots[i].base && slots[i].cap >= size && slots[i].cap - size <= size / 4 + FN_HUGE_PAGE
                    && (best < 0 || slots[i].cap < slots[best].cap))
                best = i;
        char *base = NULL;
        if (best >= 0) {
            base = slots[best].base;
            cached_bytes -= slots[best].cap;
            slots[best].base = NULL;
        }
        pthread_mutex_unlock(&lock);
        if (base) {
            *reused = 1;
            return base;
        }
    }
    return fresh_block(size ? size : 1);
}

static void release_block(char *base)
{
    const fn_block_header *h = (const fn_block_header *)base;
#if defined(__linux__)
    if (h->mapped) {
        munmap(base, h->total);
        return;
    }
#endif
    free(base);
}

void *fn_cache_alloc(size_t size, int *reused)
{
    return fn_cache_alloc_at(size, 0, reused);
}

void *fn_cache_alloc_at(size_t size, size_t offset, int *reused)
{
    char *base = take_block(size, reused);
    return base ? hand_out(base, offset) : NULL;
}

void fn_cache_free(void *ptr)
{
    if (!ptr) return;
    char *base = block_base(ptr);
    size_t cap = ((const fn_block_header *)base)->total - FN_SLACK;
    char *drop[FN_CACHE_SLOTS];
    int ndrop = 0;
    if (cap >= FN_CACHE_MIN_BYTES) {
        pthread_mutex_lock(&lock);
        if (cap <= cache_limit) {
            /* the least recently freed blocks make room: a cache full of blocks of
             * sizes no longer asked for would otherwise turn every new one away */
            for (;;) {
                int empty = -1, oldest = -1;
                for (int i = 0; i < FN_CACHE_SLOTS; i++) {
                    if (!slots[i].base) { if (empty < 0) empty = i; }
                    else if (oldest < 0 || slots[i].stamp < slots[oldest].stamp) oldest = i;
                }
                if (empty >= 0 && cached_bytes + cap <= cache_limit) {
                    slots[empty].base = base;
                    slots[empty].cap = cap;
                    slots[empty].stamp = ++clock_ticks;
                    cached_bytes += cap;
                    base = NULL;
                    break;
                }
                drop[ndrop++] = slots[oldest].base;
                cached_bytes -= slots[oldest].cap;
                slots[oldest].base = NULL;
            }
        }
        pthread_mutex_unlock(&lock);
    }
    for (int i = 0; i < ndrop; i++) release_block(drop[i]);
    if (base) release_block(base);
}

size_t fn_cache_capacity(const void *ptr)
{
    const char *base = block_base(ptr);
    return (size_t)(base + ((const fn_block_header *)base)->total - (const char *)ptr);
}

/* Sets the limit (bytes) and frees cached blocks beyond it; returns the old one. */
size_t fn_cache_set_limit(size_t limit)
{
    char *drop[FN_CACHE_SLOTS];
    int ndrop = 0;
    pthread_mutex_lock(&lock);
    size_t old = cache_limit;
    cache_limit = limit;
    for (int i = 0; i < FN_CACHE_SLOTS && cached_bytes > limit; i++)
        if (slots[i].base) {
            drop[ndrop++] = slots[i].base;
            cached_bytes -= slots[i].cap;
            slots[i].base = NULL;
        }
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < ndrop; i++) release_block(drop[i]);
    return old;
}

size_t fn_cache_limit(void)
{
    pthread_mutex_lock(&lock);
    size_t n = cache_limit;
    pthread_mutex_unlock(&lock);
    return n;
}

size_t fn_cache_bytes(void)
{
    pthread_mutex_lock(&lock);
    size_t n = cached_bytes;
    pthread_mutex_unlock(&lock);
    return n;
}
