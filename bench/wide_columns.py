"""BatchNorm over few rows of many columns, and many rows of few, against a copy and PyTorch.

A small batch of wide features (an MLP's (64, 4096)) gives the column walk one
block of rows: its statistics, normalize and backward are cut across the
columns so every thread gets work (src_c fn_col_cut, fn_col_step). Tabular data
of few features ((100000, 3)) has fewer columns than a vector: its rows are
normalized as one flat range and its statistics taken over rows of m * C values
(col_narrow_stats). Training, inference and backward at one thread count against
an OpenMP copy of the same bytes (``bench/bn_timing.py``) and, when installed,
PyTorch, measured in the same run. Run::

    python bench/wide_columns.py [num_threads]

A script rather than a pytest-benchmark group: it reports the shapes the README's
"Few rows of many columns" table lists, in one short run.
"""

import sys

import numpy as np

from bn_timing import case_arrays, median_us, time_fastnorm

SHAPES = [(8, 4096), (64, 4096), (64, 8192), (256, 4096), (32, 2048), (100000, 3), (37500, 8), (12500, 24)]


def torch_calls(a, nt):
    """PyTorch's training, inference and backward on the same arrays, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(nt)
    tx = torch.from_numpy(a["x"]).requires_grad_(True)
    tw, tb = torch.from_numpy(a["w"]), torch.from_numpy(a["b"])
    trm, trv = torch.from_numpy(a["rm"].copy()), torch.from_numpy(a["rv"].copy())
    tdy = torch.from_numpy(a["dy"])
    yt = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)

    def backward():
        torch.autograd.grad(yt, tx, tdy, retain_graph=True)

    def train():
        with torch.no_grad():
            torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True)

    def infer():
        with torch.no_grad():
            torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=False)
    return train, infer, backward


def main(nt):
    rng = np.random.default_rng(0)
    print(f"{nt} thread(s), float32, out=; % = copy time / op time; torch: its time / fastnorm's")
    print(f"{'shape':>12} {'copy':>7} {'training':>22} {'inference':>22} {'backward':>16}")
    for shape in SHAPES:
        a = case_arrays(shape, rng)
        copy, *ours = time_fastnorm(a, nt)
        peer = torch_calls(a, nt)
        theirs = [median_us(f) for f in peer] if peer else [float("nan")] * 3
        cells = [f"{t:6.0f}µs {100 * copy / t:3.0f}% {p / t:4.1f}x" for t, p in zip(ours[:2], theirs[:2])]
        cells.append(f"{ours[2]:6.0f}µs {theirs[2] / ours[2]:4.1f}x")
        print(f"{str(shape):>12} {copy:5.0f}µs " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
