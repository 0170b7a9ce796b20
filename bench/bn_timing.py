"""Timing of fastnorm's BatchNorm calls against a copy, shared by the shape scripts.

``bench/short_segments.py`` and ``bench/wide_columns.py`` time the same four calls
on their shapes: an OpenMP copy of the same bytes, training, inference (both with
``out=``) and the backward, each the median of 5 rounds of ``timeit`` (best of 3
repeats of 20 calls).
"""

import timeit

import numpy as np

import fastnorm


def median_us(fn, number=20):
    """Median over 5 rounds of the best of 3 ``timeit`` repeats, in microseconds."""
    rounds = [min(timeit.repeat(fn, number=number, repeat=3)) / number for _ in range(5)]
    return float(np.median(rounds)) * 1e6


def case_arrays(shape, rng):
    """float32 x, dy, out and copy buffers, unit weight, zero bias and running
    statistics for a BatchNorm over axis 1 of `shape`, with x's batch statistics."""
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    C = shape[1]
    a = dict(x=x, dy=dy, y=np.empty_like(x), cp=np.empty_like(x),
             w=np.ones(C, np.float32), b=np.zeros(C, np.float32),
             rm=np.zeros(C, np.float32), rv=np.ones(C, np.float32))
    _, a["mean"], a["invstd"] = fastnorm.batch_norm(x, a["w"], a["b"], training=True, return_stats=True)
    return a


def time_fastnorm(a, nt):
    """(copy, training, inference, backward) times in microseconds at nt threads."""
    x, y, w, b = a["x"], a["y"], a["w"], a["b"]
    copy = median_us(lambda: fastnorm._ext.omp_copy(x, a["cp"], nt))
    train = median_us(lambda: fastnorm.batch_norm(x, w, b, training=True, out=y, num_threads=nt))
    infer = median_us(lambda: fastnorm.batch_norm(x, w, b, running_mean=a["rm"], running_var=a["rv"],
                                                  training=False, out=y, num_threads=nt))
    bwd = median_us(lambda: fastnorm.batch_norm_backward(a["dy"], x, a["mean"], a["invstd"], w,
                                                         num_threads=nt))
    return copy, train, infer, bwd
