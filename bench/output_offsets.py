"""Row walks with x and out at a line boundary and 16 bytes past one.

NumPy's large arrays start 16 bytes into a page, so their rows of 64, 256 or 768
float32 values share a cache line with the next row. This script times LayerNorm,
add+LayerNorm, InstanceNorm and LayerNorm backward with x, dy, the residual and
out= all at one offset from a 64-byte boundary, 0 and then 16 bytes, and prints
the ratio (README, Memory: rows off the lines). Both offsets are timed in
alternating rounds in one process; the figure is the median. Run::

    python bench/output_offsets.py [num_threads] [rounds]

A script rather than a pytest-benchmark group: the placement of each array is the
point, and pytest-benchmark's fixtures allocate their own.
"""

import statistics
import sys
import time

import numpy as np

import fastnorm

CASES = [
    ("layer_norm", (262144, 64)),
    ("layer_norm", (196608, 100)),
    ("add_layer_norm", (262144, 64)),
    ("instance_norm", (256, 256, 14, 14)),
    ("layer_norm_backward", (16384, 256)),
    ("layer_norm_backward", (8192, 768)),
]


def placed(shape, offset, rng=None):
    """A C-contiguous float32 array `offset` bytes past a 64-byte boundary (random
    values when rng is given)."""
    size = int(np.prod(shape))
    buf = np.empty(size + 32, np.float32)
    start = (-buf.ctypes.data % 64 + offset) // 4
    a = buf[start:start + size].reshape(shape)
    if rng is not None:
        a[...] = rng.standard_normal(shape) + 1.0
    return a


def make_call(op, shape, offset, nt, rng):
    """A no-argument call of op on arrays placed at offset, out= included."""
    x, out = placed(shape, offset, rng), placed(shape, offset)
    d = shape[-1] if op != "instance_norm" else shape[1]
    w = rng.uniform(0.5, 2.0, d).astype(np.float32)
    if op == "layer_norm":
        return lambda: fastnorm.layer_norm(x, w, w, out=out, num_threads=nt)
    if op == "add_layer_norm":
        r, s = placed(shape, offset, rng), placed(shape, offset)
        return lambda: fastnorm.add_layer_norm(x, r, w, w, out=out, residual_out=s, num_threads=nt)
    if op == "instance_norm":
        return lambda: fastnorm.instance_norm(x, w, w, out=out, num_threads=nt)
    dy = placed(shape, offset, rng)
    _, mean, rstd = fastnorm.layer_norm(x, w, return_stats=True)
    return lambda: fastnorm.layer_norm_backward(dy, x, mean, rstd, w, out=out, num_threads=nt)


def main(nt, rounds):
    rng = np.random.default_rng(0)
    print(f"{nt} thread(s), float32; ms per call, median of {rounds} alternating rounds")
    print(f"{'op':>20} {'shape':>20} {'aligned':>9} {'16 B off':>9} {'ratio':>6}")
    for op, shape in CASES:
        calls = [make_call(op, shape, off, nt, rng) for off in (0, 16)]
        times = [[], []]
        for _ in range(rounds):
            for i, f in enumerate(calls):
                f()
                t0 = time.perf_counter()
                for _ in range(3):
                    f()
                times[i].append((time.perf_counter() - t0) / 3 * 1e3)
        a, b = statistics.median(times[0]), statistics.median(times[1])
        print(f"{op:>20} {str(shape):>20} {a:9.2f} {b:9.2f} {b / a:6.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, int(sys.argv[2]) if len(sys.argv) > 2 else 5)
