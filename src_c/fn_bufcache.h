/* fn_bufcache.h - recycled memory for large outputs (see fn_bufcache.c). */
#ifndef FN_BUFCACHE_H
#define FN_BUFCACHE_H

#include <stddef.h>

/* Blocks below this size are never cached: the C heap already reuses them
 * without page faults. */
#define FN_CACHE_MIN_BYTES ((size_t)4 << 20)
/* Default upper bound on the bytes held by free cached blocks. */
#define FN_CACHE_DEFAULT_LIMIT ((size_t)1 << 30)

/* A block of at least size bytes, starting on a page boundary; *reused = 1 when
 * it comes from the cache (its pages are mapped). NULL when out of memory. */
void *fn_cache_alloc(size_t size, int *reused);
/* The same, handed out offset % 4096 bytes past a page boundary. */
void *fn_cache_alloc_at(size_t size, size_t offset, int *reused);
/* Returns a block of fn_cache_alloc(_at) to the cache, or to the system. */
void fn_cache_free(void *ptr);
/* Bytes usable from ptr, a pointer that fn_cache_alloc(_at) returned. */
size_t fn_cache_capacity(const void *ptr);
size_t fn_cache_set_limit(size_t limit);
size_t fn_cache_limit(void);
size_t fn_cache_bytes(void);

#endif
