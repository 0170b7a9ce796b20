"""The transposing copy (fastnorm._ext.copy_into) against an OpenMP copy of the same bytes.

A backward whose x is a transposed view and whose dy is C-ordered copies dy into
dx's order first (src_c/fn_transpose.c, tiles transposed in registers by
src_c/transpose_template.h). This script times that copy for a transposed
source into a C-ordered destination, and ``_ext.omp_copy`` of the same number of
bytes between two C-ordered arrays, in the same run, at 1 and 2 threads. Run::

    python bench/transpose_copy.py [rounds]

Each time is the median over `rounds` (default 20) of the best of 3 calls. The
last column is the transposing copy's time over the plain copy's.
"""

import sys
import timeit

import numpy as np

from fastnorm import _ext

SHAPES = [(4096, 512), (512, 4096), (8192, 768), (1000, 1000)]


def median_ms(fn, rounds):
    """Median over rounds of the best of 3 single calls, in milliseconds."""
    return float(np.median([min(timeit.repeat(fn, number=1, repeat=3)) for _ in range(rounds)])) * 1e3


def main(rounds=20):
    print("shape, dtype, threads: transposing copy, OpenMP copy of the same bytes (ms), ratio")
    for dtype in (np.float32, np.float64):
        for shape in SHAPES:
            src = np.random.default_rng(0).standard_normal(shape[::-1]).astype(dtype).T
            dst, plain_src, plain_dst = np.empty(shape, dtype), np.ascontiguousarray(src), np.empty(shape, dtype)
            for nt in (1, 2):
                t = median_ms(lambda: _ext.copy_into(src, dst, nt), rounds)
                c = median_ms(lambda: _ext.omp_copy(plain_src, plain_dst, nt), rounds)
                print(f"{str(shape):12s} {np.dtype(dtype).name:8s} {nt}: {t:8.3f} {c:8.3f}  {t / c:5.2f}", flush=True)
            assert np.array_equal(dst, src)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
