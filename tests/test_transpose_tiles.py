"""The transposing copy's tiles on every SIMD path (src_c/transpose_template.h).

A tile whose source is contiguous along the destination's rows is transposed in
vector registers in blocks of one cache line per destination row; the column
tiles are laid on a grid shifted so that they start on a line whenever all
destination rows share one offset within a line, and destinations of 16 MB and
more are then written with non-temporal stores. Every path must give NumPy's
bits: the sources are random bit patterns (NaNs with payloads, signalling NaNs,
denormals), and every edge the blocks leave (rows and columns short of a block
or a line, a first tile narrower than a line) is reached on each ISA.
"""

import numpy as np
import pytest

from fastnorm import _ext

BITS = {np.float32: np.uint32, np.float64: np.uint64}


def random_bits(shape, dtype, seed):
    """An array of shape whose elements are arbitrary bit patterns of dtype."""
    bits = BITS[dtype]
    raw = np.random.default_rng(seed).integers(0, np.iinfo(bits).max, size=shape, dtype=bits, endpoint=True)
    return raw.view(dtype)


def transposed_source(rows, cols, dtype, seed):
    """A (rows, cols) view whose memory runs down its columns."""
    return random_bits((cols, rows), dtype, seed).T


def destination(rows, cols, dtype, row_len, at_byte):
    """An empty (rows, cols) view with rows of row_len elements (row_len >= cols),
    its first element at_byte bytes past a 64-byte boundary."""
    es = np.dtype(dtype).itemsize
    buf = np.empty(rows * row_len + 64 // es, dtype)
    skip = ((at_byte - buf.ctypes.data % 64) % 64) // es
    dst = buf[skip:skip + rows * row_len].reshape(rows, row_len)[:, :cols]
    assert dst.ctypes.data % 64 == at_byte
    return dst


def assert_same_bits(dst, src):
    bits = BITS[dst.dtype.type]
    np.testing.assert_array_equal(dst.view(bits), np.ascontiguousarray(src).view(bits))


# sides around one vector (2 to 16 elements), one line (8 or 16) and one tile
# (128 rows, 64 columns)
SIDES = [1, 3, 8, 15, 17, 33, 64, 65, 129, 200]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", SIDES)
def test_every_edge_of_the_blocks(active_isa, dtype, rows):
    for cols in SIDES:
        src = transposed_source(rows, cols, dtype, seed=rows * 1000 + cols)
        dst = np.empty((rows, cols), dtype)
        _ext.copy_into(src, dst, 1)
        assert_same_bits(dst, src)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_rows_starting_inside_a_line(active_isa, dtype, num_threads):
    """Rows of whole lines starting at every offset: the first column tile is
    narrower than a line, the others start on one."""
    es = np.dtype(dtype).itemsize
    row_len = 2 * 64 // es + 64 // es   # three lines
    for at_byte in range(0, 64, es):
        for cols in (row_len, row_len - 5, 7):
            src = transposed_source(150, cols, dtype, seed=at_byte + cols)
            dst = destination(150, cols, dtype, row_len, at_byte)
            _ext.copy_into(src, dst, num_threads)
            assert_same_bits(dst, src)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_at_different_offsets_within_lines(active_isa, dtype):
    """Rows that are not whole lines long (each starts elsewhere in its line):
    cached stores over the whole tile."""
    es = np.dtype(dtype).itemsize
    for row_len in (101, 64 // es + 1):
        src = transposed_source(300, row_len, dtype, seed=row_len)
        dst = destination(300, row_len, dtype, row_len, at_byte=es)
        _ext.copy_into(src, dst, 2)
        assert_same_bits(dst, src)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("at_byte", [0, 24])
def test_streamed_destination(active_isa, dtype, at_byte):
    """16 MB and more, rows of whole lines: non-temporal stores (and the fence
    before the threads join) give the same bits."""
    es = np.dtype(dtype).itemsize
    rows, cols = (16 << 20) // (1024 * es) + 3, 1024
    src = transposed_source(rows, cols, dtype, seed=at_byte)
    dst = destination(rows, cols, dtype, cols, at_byte)
    _ext.copy_into(src, dst, 2)
    assert_same_bits(dst, src)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_axes_with_rows_of_whole_lines(active_isa, dtype):
    """An outer axis whose destination stride is whole lines keeps streaming and
    the shifted grid; one that is not turns both off."""
    es = np.dtype(dtype).itemsize
    for cols in (64 // es * 3, 64 // es * 3 + 1):
        src = random_bits((5, cols, 70), dtype, seed=cols).transpose(0, 2, 1)
        buf = np.empty(5 * 70 * cols + 64 // es, dtype)
        dst = buf[1:1 + src.size].reshape(src.shape)
        _ext.copy_into(src, dst, 2)
        assert_same_bits(dst, src)
