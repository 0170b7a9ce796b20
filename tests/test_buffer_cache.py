"""Recycled memory for large outputs (src_c/fn_bufcache.c, fastnorm.set_buffer_cache).

Outputs of 4 MiB and more come from a cache of freed blocks. The tests check
that a freed output's block is handed to the next output of a similar size,
that values are unaffected, that the byte limit holds, and that the arrays
behave as ordinary NumPy arrays (resize, views that outlive the owner).
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastnorm
from fastnorm import _ext

MIB = 2**20


def _held():
    return _ext.buffer_cache_limit()[1]


@pytest.fixture
def cache_limit():
    """An empty cache (earlier tests may have left blocks) with a 512 MiB limit."""
    old = fastnorm.set_buffer_cache(0)
    fastnorm.set_buffer_cache(512 * MIB)
    yield
    fastnorm.set_buffer_cache(old)


def _x(rows=2048, cols=1024, seed=0):   # 8 MiB of float32
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 3 + 1


def test_freed_output_is_reused(cache_limit):
    x = _x()
    ref = fastnorm.layer_norm(x, out=np.empty_like(x))
    y = fastnorm.layer_norm(x)
    addr = y.ctypes.data
    np.testing.assert_array_equal(y, ref)
    del y
    assert _held() >= x.nbytes
    y2 = fastnorm.layer_norm(x)
    assert y2.ctypes.data == addr
    np.testing.assert_array_equal(y2, ref)
    assert _held() == 0


def test_smallest_cached_size_is_reused(cache_limit):
    # a 4 MiB output gets a block rounded up to whole 2 MiB huge pages (6 MiB): the
    # cache must still hand it out again
    x = _x(rows=1024)
    y = fastnorm.layer_norm(x)
    addr = y.ctypes.data
    del y
    y2 = fastnorm.layer_norm(x)
    assert y2.ctypes.data == addr


def test_stale_blocks_make_room(cache_limit):
    # outputs of sizes no longer asked for fill every slot; a new size still gets
    # cached (the least recently freed block goes) and reused
    stale = [fastnorm.layer_norm(_x(rows=1024 + 256 * k)) for k in range(12)]
    del stale
    x = _x(rows=8192)                     # 32 MiB, a size none of them fits
    y = fastnorm.layer_norm(x)
    addr = y.ctypes.data
    del y
    held = _held()
    y2 = fastnorm.layer_norm(x)
    assert y2.ctypes.data == addr
    assert held - _held() >= x.nbytes     # y2's block came out of the cache
    assert held <= 512 * MIB


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm", "batch_norm", "group_norm", "add_layer_norm",
                                "layer_norm_backward"])
def test_every_allocating_path_gives_the_same_values(cache_limit, op):
    x = _x(seed=1)
    w = np.linspace(0.5, 1.5, x.shape[1]).astype(np.float32)

    def call():
        if op == "layer_norm":
            return fastnorm.layer_norm(x, w, w)
        if op == "rms_norm":
            return fastnorm.rms_norm(x, w)
        if op == "batch_norm":
            return fastnorm.batch_norm(x, w, w, training=True, channel_axis=1)
        if op == "group_norm":
            return fastnorm.group_norm(x.reshape(8, 256, 1024), 16)
        if op == "add_layer_norm":
            return fastnorm.add_layer_norm(x, x[::-1], w, w)[0]
        _, m, r = fastnorm.layer_norm(x, return_stats=True)
        return fastnorm.layer_norm_backward(x[::-1], x, m, r, w)[0]

    first = call().copy()
    for _ in range(3):   # the second and later calls get recycled blocks
        np.testing.assert_array_equal(call(), first)


def test_limit_bounds_what_is_held():
    old = fastnorm.set_buffer_cache(20 * MIB)
    try:
        ys = [fastnorm.layer_norm(_x(seed=s)) for s in range(4)]   # 4 x 8 MiB
        del ys
        assert _held() <= 20 * MIB
        assert fastnorm.set_buffer_cache(0) == 20 * MIB
        assert _held() == 0
        y = fastnorm.layer_norm(_x())
        del y
        assert _held() == 0
    finally:
        fastnorm.set_buffer_cache(old)


def test_arrays_are_ordinary(cache_limit):
    x = _x()
    y = fastnorm.layer_norm(x)
    ref = y.copy()
    view = y[10:20]
    del y
    np.testing.assert_array_equal(view, ref[10:20])   # the view keeps the block alive
    del view
    y = fastnorm.layer_norm(x)
    y.resize((4096, 1024), refcheck=False)   # through the handler's realloc
    np.testing.assert_array_equal(y[:2048], ref)
    y.resize((1024, 1024), refcheck=False)
    np.testing.assert_array_equal(y, ref[:1024])


def test_threads_share_the_cache_safely(cache_limit):
    xs = [_x(seed=s) for s in range(4)]
    refs = [fastnorm.layer_norm(x, out=np.empty_like(x)) for x in xs]
    errors = []

    def work(i):
        try:
            for _ in range(10):
                if not np.array_equal(fastnorm.layer_norm(xs[i], num_threads=1), refs[i]):
                    errors.append(i)
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)])
def test_bad_limit(bad, exc):
    with pytest.raises(exc, match="max_bytes"):
        fastnorm.set_buffer_cache(bad)


@pytest.mark.parametrize("value, limit_mib", [("0", 0), ("64", 64), ("bad", 1024)])
def test_environment_variable(value, limit_mib):
    code = "import fastnorm, fastnorm._ext as e; print(e.buffer_cache_limit()[0] // 2**20)"
    env = dict(os.environ, FASTNORM_BUFFER_CACHE_MB=value)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(res.stdout.split()[-1]) == limit_mib
    if value == "bad":
        assert "FASTNORM_BUFFER_CACHE_MB ignored" in res.stderr


def test_output_starts_half_a_page_from_input(cache_limit):
    # a large output starts as far past a 64-byte boundary as x does, so that x's
    # loads fall on vector boundaries where y's stores do, and half a page from x's
    # offset within a page, so that no load of x waits on a store to y whose
    # address differs from it in the page number only (4K aliasing); its block is
    # found again from that offset when it is freed and handed out at another
    x = _x()
    ref = fastnorm.layer_norm(x, out=np.empty_like(x))
    buf = np.empty(x.size + 32, np.float32)
    base = (-buf.ctypes.data % 64) // 4
    held = _held()
    for k in (0, 3, 12, 1, 0):
        xk = buf[base + k:base + k + x.size].reshape(x.shape)
        xk[...] = x
        y = fastnorm.layer_norm(xk)
        assert y.ctypes.data % 64 == 4 * k
        assert (y.ctypes.data - xk.ctypes.data) % 4096 == 2048
        np.testing.assert_array_equal(y, ref)
        del y
        assert _held() >= held + x.nbytes
    # an input not on an element boundary of its own type
    raw = np.empty(x.nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64 + 2
    xo = raw[start:start + x.nbytes].view(np.float32).reshape(x.shape)
    xo[...] = x
    y = fastnorm.layer_norm(xo)
    assert y.ctypes.data % 4 == 0
    np.testing.assert_array_equal(y, ref)
