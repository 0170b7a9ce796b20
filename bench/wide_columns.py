"""BatchNorm over few rows of many columns, against a copy and PyTorch.

A small batch of wide features (an MLP's (64, 4096)) gives the column walk one
block of rows: its statistics, normalize and backward are cut across the
columns so every thread gets work (src_c fn_col_cut, fn_col_step). Training,
inference and backward at one thread count, each as the median of 5 rounds of
``timeit`` (best of 3 repeats per round), with an OpenMP copy of the same bytes
(``fastnorm._ext.omp_copy``) and, when installed, PyTorch measured in the same
run. Run::

    python bench/wide_columns.py [num_threads]

A script rather than a pytest-benchmark group: it reports the shapes the README's
"Few rows of many columns" table lists, in one short run.
"""

import sys
import timeit

import numpy as np

import fastnorm

SHAPES = [(8, 4096), (64, 4096), (64, 8192), (256, 4096), (32, 2048)]


def median_us(fn, number=20):
    rounds = [min(timeit.repeat(fn, number=number, repeat=3)) / number for _ in range(5)]
    return float(np.median(rounds)) * 1e6


def torch_calls(x, dy, w, b, rm, rv, nt):
    """PyTorch's training, inference and backward on the same arrays, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(nt)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw, tb = torch.from_numpy(w), torch.from_numpy(b)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    tdy = torch.from_numpy(dy)
    yt = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)

    def backward():
        torch.autograd.grad(yt, tx, tdy, retain_graph=True)

    with torch.no_grad():
        def train():
            torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)

        def infer():
            torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=False)
    return train, infer, backward


def main(nt):
    rng = np.random.default_rng(0)
    print(f"{nt} thread(s), float32, out=; % = copy time / op time; torch: its time / fastnorm's")
    print(f"{'shape':>12} {'copy':>7} {'training':>22} {'inference':>22} {'backward':>16}")
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        y, cp = np.empty_like(x), np.empty_like(x)
        C = shape[1]
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        _, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
        copy = median_us(lambda: fastnorm._ext.omp_copy(x, cp, nt))
        ours = [median_us(lambda: fastnorm.batch_norm(x, w, b, training=True, out=y, num_threads=nt)),
                median_us(lambda: fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                                      training=False, out=y, num_threads=nt)),
                median_us(lambda: fastnorm.batch_norm_backward(dy, x, mean, invstd, w,
                                                               num_threads=nt))]
        peer = torch_calls(x, dy, w, b, rm, rv, nt)
        theirs = [median_us(f) for f in peer] if peer else [float("nan")] * 3
        cells = [f"{t:6.0f}µs {100 * copy / t:3.0f}% {p / t:4.1f}x" for t, p in zip(ours[:2], theirs[:2])]
        cells.append(f"{ours[2]:6.0f}µs {theirs[2] / ours[2]:4.1f}x")
        print(f"{str(shape):>12} {copy:5.0f}µs " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
