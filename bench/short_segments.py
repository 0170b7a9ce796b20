"""BatchNorm over very short segments lying next to each other, against a copy.

(N, C, L) with a small L and NCHW with 2 x 2 planes: training, inference and
backward at one thread count against an OpenMP copy of the same bytes measured
in the same run (``bench/bn_timing.py``). Run::

    python bench/short_segments.py [num_threads]

A script rather than a pytest-benchmark group: it reports the shapes the README's
"Very short segments" table lists, in one short run.
"""

import sys

import numpy as np

from bn_timing import case_arrays, time_fastnorm

SHAPES = [(4096, 64, 8), (1024, 256, 4), (8192, 64, 2), (2048, 64, 32), (1024, 64, 16), (256, 128, 8),
          (256, 512, 2, 2),
          (64, 512, 4, 4), (64, 256, 7, 7)]


def main(nt):
    rng = np.random.default_rng(0)
    print(f"{nt} thread(s), float32, out=; % = copy time / op time")
    print(f"{'shape':>20} {'copy':>8} {'training':>16} {'inference':>16} {'backward':>10}")
    for shape in SHAPES:
        copy, train, infer, bwd = time_fastnorm(case_arrays(shape, rng), nt)
        print(f"{str(shape):>20} {copy:7.0f}µs {train:7.0f}µs ({100 * copy / train:3.0f}%) "
              f"{infer:7.0f}µs ({100 * copy / infer:3.0f}%) {bwd:8.0f}µs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
