"""fastnorm against PyTorch over many shapes and layouts: a hunt for slow classes.

The benchmark suite times the performance issue's cases; this script times the
forward and backward of LayerNorm, RMSNorm, BatchNorm (training and inference),
GroupNorm and InstanceNorm over shapes around them — single rows, pooled
(N, C, 1, 1) batches, few or many columns, channels-last and transposed or
strided inputs — and prints PyTorch's time over fastnorm's, flagging the calls
where PyTorch is faster (<<<) or less than 1.25x slower (<). Both allocate their
outputs, at the same thread count. Run::

    python bench/peer_sweep.py [filter] [--threads N]

`filter` keeps the cases whose label contains it (e.g. "GN", "f64",
"(256, 2048"). Each time is the median of 5 rounds of the best of 3 `timeit`
repeats. Needs PyTorch (a script, not a pytest-benchmark group: it scans for
outliers rather than recording the published table).
"""

import argparse
import itertools
import timeit

import numpy as np

import fastnorm

ROW_SHAPES = [((1, 768), None), ((4, 4096), None), ((1, 65536), None), ((1, 1 << 20), None),
              ((16, 128, 768), None), ((2048, 100), None), ((64, 33), None), ((100000, 8), None),
              ((4096, 512), "transposed"), ((4096, 512), "every other row"), ((8, 3), None)]
CHANNEL_SHAPES = [((32, 64, 56, 56), "channels-last"), ((8, 64, 56, 56), None), ((1, 64, 112, 112), None),
                  ((1, 512, 7, 7), None), ((256, 2048, 1, 1), None), ((16, 3, 224, 224), None),
                  ((2, 32, 16, 16, 16), None), ((64, 128, 28, 28), None), ((4, 256, 14, 14), "channels-last"),
                  ((32, 64, 56, 28), None), ((100000, 3), None), ((1000, 37), None), ((1, 2048), None)]


def median_us(fn):
    """Median of 5 rounds of the best of 3 repeats, calls per repeat sized to ~2 ms."""
    once = min(timeit.repeat(fn, number=1, repeat=3))
    n = max(1, min(200, int(2e-3 / max(once, 1e-7))))
    return float(np.median([min(timeit.repeat(fn, number=n, repeat=3)) / n for _ in range(5)])) * 1e6


def array(rng, shape, dtype, layout=None):
    """Standard normal data of `shape` in the given memory layout."""
    if layout == "every other row":
        return rng.standard_normal((2 * shape[0],) + shape[1:]).astype(dtype)[::2]
    x = rng.standard_normal(shape).astype(dtype)
    if layout == "transposed":   # the last two axes swapped in memory
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, -1, -2)), -1, -2)
    if layout == "channels-last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    return x


def backward_case(torch, forward, inputs, dy):
    """PyTorch's autograd backward of forward(*inputs) for the gradient dy."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    if leaves[0].dim() == 4 and not inputs[0].is_contiguous():
        leaves[0] = inputs[0].detach().clone(memory_format=torch.channels_last).requires_grad_(True)
    y = forward(*leaves)
    return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)


def row_cases(torch, F, rng, dtype, tag):
    for shape, layout in ROW_SHAPES:
        x = array(rng, shape, dtype, layout)
        D = shape[-1]
        w, b = (rng.standard_normal(D).astype(dtype) for _ in range(2))
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        label = f"{tag} {shape} {layout or ''}"
        yield f"LN {label}", lambda: fastnorm.layer_norm(x, w, b), lambda: F.layer_norm(tx, (D,), tw, tb)
        yield (f"RMS {label}", lambda: fastnorm.rms_norm(x, w, eps=1e-6),
               lambda: F.rms_norm(tx, (D,), tw, 1e-6))
        _, m, r = fastnorm.layer_norm(x, w, b, return_stats=True)
        dy = array(rng, shape, dtype)
        yield (f"LN bwd {label}", lambda: fastnorm.layer_norm_backward(dy, x, m, r, w),
               backward_case(torch, lambda a, c, d: F.layer_norm(a, (D,), c, d), (tx, tw, tb),
                             torch.from_numpy(dy)))


def channel_cases(torch, F, rng, dtype, tag):
    for shape, layout in CHANNEL_SHAPES:
        x = array(rng, shape, dtype, layout)
        C = shape[1]
        w, b, rm = (rng.standard_normal(C).astype(dtype) for _ in range(3))
        rv = (rng.random(C) + 0.5).astype(dtype)
        tx, tw, tb, trm, trv = (torch.from_numpy(a) for a in (x, w, b, rm.copy(), rv.copy()))
        label = f"{tag} {shape} {layout or ''}"
        spatial = int(np.prod(shape[2:]))
        trainable = shape[0] * spatial > 1
        dy = array(rng, shape, dtype, layout)
        tdy = torch.from_numpy(dy)
        if trainable:
            yield (f"BN train {label}", lambda: fastnorm.batch_norm(x, w, b, training=True),
                   lambda: F.batch_norm(tx, None, None, tw, tb, training=True))
        yield (f"BN eval {label}",
               lambda: fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False),
               lambda: F.batch_norm(tx, trm, trv, tw, tb, training=False))
        if trainable:
            _, m, r = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
            yield (f"BN bwd {label}", lambda: fastnorm.batch_norm_backward(dy, x, m, r, w),
                   backward_case(torch, lambda a, c, d: F.batch_norm(a, None, None, c, d, training=True),
                                 (tx, tw, tb), tdy))
        if len(shape) < 3 or C % 8 or C < 16:
            continue
        G = 8 if C < 64 else 32
        yield (f"GN{G} {label}", lambda: fastnorm.group_norm(x, G, w, b), lambda: F.group_norm(tx, G, tw, tb))
        if spatial > 1:
            yield (f"IN {label}", lambda: fastnorm.instance_norm(x, w, b),
                   lambda: F.instance_norm(tx, None, None, tw, tb, use_input_stats=True))
        _, m, r = fastnorm.group_norm(x, G, w, b, return_stats=True)
        yield (f"GN{G} bwd {label}", lambda: fastnorm.group_norm_backward(dy, x, G, m, r, w),
               backward_case(torch, lambda a, c, d: F.group_norm(a, G, c, d), (tx, tw, tb), tdy))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filter", nargs="?", default="", help="keep labels containing this")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    fastnorm.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.threads} thread(s), both allocating; x = PyTorch's time / fastnorm's")
    for dtype, tag in ((np.float32, "f32"), (np.float64, "f64")):
        # timed as the generators yield: their closures see the current case
        for label, ours, theirs in itertools.chain(row_cases(torch, F, rng, dtype, tag),
                                                   channel_cases(torch, F, rng, dtype, tag)):
            if args.filter not in label:
                continue
            ours()
            theirs()
            a, t = median_us(ours), median_us(theirs)
            flag = "  <<<" if t < a else ("  <" if t < 1.25 * a else "")
            print(f"{label:48s} fastnorm {a:9.1f} us  torch {t:9.1f} us  x{t / a:5.2f}{flag}", flush=True)


if __name__ == "__main__":
    main()
