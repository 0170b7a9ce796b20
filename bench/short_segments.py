"""BatchNorm over very short segments lying next to each other, against a copy.

(N, C, L) with a small L and NCHW with 2 x 2 planes: training, inference and
backward at one thread count, each as the median of 5 rounds of ``timeit``
(best of 3 repeats per round), with an OpenMP copy of the same bytes
(``fastnorm._ext.omp_copy``) measured in the same run. Run::

    python bench/short_segments.py [num_threads]

A script rather than a pytest-benchmark group: it reports the shapes the README's
"Very short segments" table lists, in one short run.
"""

import sys
import timeit

import numpy as np

import fastnorm

SHAPES = [(4096, 64, 8), (1024, 256, 4), (8192, 64, 2), (2048, 64, 32), (1024, 64, 16), (256, 128, 8),
          (256, 512, 2, 2),
          (64, 512, 4, 4), (64, 256, 7, 7)]


def median_us(fn, number=20):
    rounds = [min(timeit.repeat(fn, number=number, repeat=3)) / number for _ in range(5)]
    return float(np.median(rounds)) * 1e6


def main(nt):
    rng = np.random.default_rng(0)
    print(f"{nt} thread(s), float32, out=; % = copy time / op time")
    print(f"{'shape':>20} {'copy':>8} {'training':>16} {'inference':>16} {'backward':>10}")
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        y, cp = np.empty_like(x), np.empty_like(x)
        C = shape[1]
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        _, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
        copy = median_us(lambda: fastnorm._ext.omp_copy(x, cp, nt))
        train = median_us(lambda: fastnorm.batch_norm(x, w, b, training=True, out=y, num_threads=nt))
        infer = median_us(lambda: fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                                      training=False, out=y, num_threads=nt))
        bwd = median_us(lambda: fastnorm.batch_norm_backward(dy, x, mean, invstd, w, num_threads=nt))
        print(f"{str(shape):>20} {copy:7.0f}µs {train:7.0f}µs ({100 * copy / train:3.0f}%) "
              f"{infer:7.0f}µs ({100 * copy / infer:3.0f}%) {bwd:8.0f}µs")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
