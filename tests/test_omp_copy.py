"""The benchmarks' bandwidth reference, `fastnorm._ext.omp_copy`: every byte
copied, whatever the size (chunks of 64 KiB shared between threads, four
vectors a step in each, a tail of single bytes), and the arguments checked."""

import numpy as np
import pytest

from fastnorm import _ext


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nbytes", [0, 1, 63, 64, 129, 4096 + 3, 65536, 65536 * 3 + 17, (1 << 20) + 5])
def test_copies_every_byte(nbytes, threads):
    rng = np.random.default_rng(nbytes)
    src = rng.integers(0, 256, nbytes, dtype=np.uint8)
    dst = np.zeros(nbytes + 64, np.uint8)
    view = dst[1:1 + nbytes]          # unaligned, with a guard byte on each side
    _ext.omp_copy(src, view, threads)
    assert view.tobytes() == src.tobytes()
    assert dst[0] == 0 and not dst[1 + nbytes:].any()


def test_float_payloads_unchanged():
    src = np.array([np.nan, -0.0, np.inf, 1e-45, -3.5] * 40, np.float32)
    src.view(np.uint32)[0] |= 0x1234   # a NaN payload
    dst = np.empty_like(src)
    _ext.omp_copy(src, dst)
    assert dst.tobytes() == src.tobytes()


def test_bad_arguments():
    a = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        _ext.omp_copy(a[::2], np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="differ in size"):
        _ext.omp_copy(a, np.zeros(15, np.float32))
    ro = np.zeros(16, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _ext.omp_copy(a, ro)
