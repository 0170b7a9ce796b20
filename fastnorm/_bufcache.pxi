# Outputs of 4 MiB and more come from src_c/fn_bufcache.c (recycled blocks, no
# page faults on reuse): a NumPy memory handler (NEP 49) is installed only while
# such an output is created, and the array keeps it, so its buffer returns to
# the cache when the array dies. Included by _ext.pyx.
from libc.stdint cimport uint8_t
from libc.string cimport memcpy, memset, strncpy
from cpython.pycapsule cimport PyCapsule_New

cdef extern from "fn_bufcache.h" nogil:
    size_t FN_CACHE_MIN_BYTES
    void *fn_cache_alloc(size_t size, int *reused)
    void *fn_cache_alloc_at(size_t size, size_t offset, int *reused)
    void fn_cache_free(void *ptr)
    size_t fn_cache_capacity(const void *ptr)
    size_t fn_cache_set_limit(size_t limit)
    size_t fn_cache_limit()
    size_t fn_cache_bytes()

cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)

cdef int _last_reused = 0
# where past a page boundary the next output starts (set by _new_output)
cdef size_t _next_offset = 0
# How far a large output's offset within its 4 KiB page lies past x's. Loads are
# matched to earlier stores by the low 12 bits of their addresses first, so a load
# of x whose address lies 16-240 bytes below that of a store to y just issued
# waits for the store (4K aliasing): with the output 64 bytes past x's offset (as
# it was), LayerNorm (8192, 768) and InstanceNorm (16, 64, 64, 64) ran 0.80-0.95x
# as fast as into an out at x's own offset, and 0.5-0.7x with 96 bytes. Half a page
# keeps every stream of the kernels far from the other's addresses either way:
# 0.97-1.03x x's own offset for LayerNorm and BatchNorm, 1.04-1.20x for GroupNorm
# and InstanceNorm, whose output lines no longer share L1 sets with the input
# lines re-read while they are written (README, Memory).
cdef size_t _PAGE = 4096
cdef size_t _OUT_PAGE_SHIFT = _PAGE // 2


cdef void *_h_malloc(void *ctx, size_t size) noexcept nogil:
    global _last_reused
    cdef int reused = 0
    cdef void *p = fn_cache_alloc_at(size, _next_offset, &reused)
    _last_reused = reused
    return p


cdef void *_h_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef int reused = 0
    if elsize and nelem > (<size_t>-1) // elsize:
        return NULL
    cdef void *p = fn_cache_alloc(nelem * elsize, &reused)
    if p != NULL:
        memset(p, 0, nelem * elsize)
    return p


cdef void *_h_realloc(void *ctx, void *ptr, size_t new_size) noexcept nogil:
    cdef int reused = 0
    if ptr == NULL:
        return fn_cache_alloc(new_size, &reused)
    cdef size_t cap = fn_cache_capacity(ptr)
    if new_size <= cap:
        return ptr
    cdef void *p = fn_cache_alloc(new_size, &reused)
    if p != NULL:
        memcpy(p, ptr, cap)
        fn_cache_free(ptr)
    return p


cdef void _h_free(void *ctx, void *ptr, size_t size) noexcept nogil:
    fn_cache_free(ptr)


cdef PyDataMem_Handler _handler
strncpy(_handler.name, b"fastnorm_output_cache", 126)
_handler.version = 1
_handler.allocator.ctx = NULL
_handler.allocator.malloc = _h_malloc
_handler.allocator.calloc = _h_calloc
_handler.allocator.realloc = _h_realloc
_handler.allocator.free = _h_free
_handler_capsule = PyCapsule_New(&_handler, "mem_handler", NULL)


cdef cnp.ndarray _new_output(cnp.ndarray x, bint *reused):
    """np.empty_like(x) (same shape, dtype and memory order); large ones from the
    cache. reused is set when the buffer's pages were mapped already.

    A large output starts half a page past x's offset within its page
    (_OUT_PAGE_SHIFT), so as far past a 64-byte boundary as x does: the kernels
    store from the output's first vector boundary on, and x's loads then fall on
    vector boundaries too instead of straddling two cache lines (NumPy's large
    arrays start 16 bytes into a page)."""
    global _last_reused, _next_offset
    reused[0] = False
    if <size_t>cnp.PyArray_NBYTES(x) < FN_CACHE_MIN_BYTES:
        return _empty_like(x)
    cdef size_t offset = <size_t>cnp.PyArray_DATA(x) % _PAGE
    if offset % <size_t>cnp.PyArray_ITEMSIZE(x):
        offset = 0
    old = PyDataMem_SetHandler(_handler_capsule)
    try:
        _last_reused = 0
        _next_offset = (offset + _OUT_PAGE_SHIFT) % _PAGE
        y = _empty_like(x)
        reused[0] = _last_reused
    finally:
        _next_offset = 0
        PyDataMem_SetHandler(old)
    return y


cdef inline cnp.ndarray _empty_like(cnp.ndarray x):
    """np.empty_like(x); a direct C call for the common C-contiguous case (small
    outputs pay for every microsecond)."""
    if cnp.PyArray_IS_C_CONTIGUOUS(x) and type(x) is np.ndarray:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
    return np.empty_like(x)


def new_output(cnp.ndarray x):
    """(y, reused): y like np.empty_like(x), from recycled memory when large;
    reused is True when y's pages are mapped already (then y may take the
    non-temporal stores of caller-owned outputs)."""
    cdef bint reused
    y = _new_output(x, &reused)
    return y, bool(reused)


def buffer_cache_limit(object limit=None):
    """Sets the cache's byte limit when limit is given; returns (old limit, bytes held)."""
    cdef size_t old = fn_cache_limit()
    if limit is not None:
        old = fn_cache_set_limit(<size_t>limit)
    return old, fn_cache_bytes()
