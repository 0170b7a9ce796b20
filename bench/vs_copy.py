"""fastnorm with out= against an OpenMP copy of the same bytes, in the same rounds.

The performance targets are stated as a share of copy bandwidth, and this
machine's memory speed moves from minute to minute, so each round times the op
and then ``fastnorm._ext.omp_copy`` of x into a preallocated array, and the
figure is the median over rounds of the per-round ratio (copy time / op time;
for a backward, which reads x and dy and writes dx, the copy time scaled by
3/2). Run::

    python bench/vs_copy.py [num_threads] [rounds] [case ...]

Cases (float32, all of them when none is named): ``ln`` LayerNorm (8192, 768),
``bn_nchw`` training BatchNorm (32, 64, 56, 56), ``bn_nhwc`` the same channels-last,
``bn_2d`` (262144, 64), ``gn_nhwc`` GroupNorm (32, 56, 56, 64) with 32 groups
channels-last, ``bn_bwd_nhwc`` BatchNorm backward (32, 56, 56, 64) channels-last.
A script rather than a pytest-benchmark group: it measures one ratio per round
rather than each call's time distribution.
"""

import statistics
import sys
import time

import numpy as np

import fastnorm
from fastnorm import _ext


def _cases(nt, rng):
    """name -> (x, call(out), copy scale), built lazily so that only the named
    cases allocate."""

    def arr(shape):
        return (rng.standard_normal(shape) + 1).astype(np.float32)

    def ln():
        x, w = arr((8192, 768)), arr(768)
        return x, lambda o: fastnorm.layer_norm(x, w, w, out=o, num_threads=nt), 1.0

    def bn(shape, axis):
        x, w = arr(shape), arr(shape[axis])
        return x, lambda o: fastnorm.batch_norm(x, w, w, training=True, channel_axis=axis, out=o,
                                                num_threads=nt), 1.0

    def gn_nhwc():
        x, w = arr((32, 56, 56, 64)), arr(64)
        return x, lambda o: fastnorm.group_norm(x, 32, w, w, channel_axis=-1, out=o, num_threads=nt), 1.0

    def bn_bwd_nhwc():
        x, dy, w = arr((32, 56, 56, 64)), arr((32, 56, 56, 64)), arr(64)
        _, mean, rstd = fastnorm.batch_norm(x, w, None, training=True, channel_axis=-1, return_stats=True)
        return x, lambda o: fastnorm.batch_norm_backward(dy, x, mean, rstd, w, channel_axis=-1, out=o,
                                                         num_threads=nt), 1.5

    return {
        "ln": ln,
        "bn_nchw": lambda: bn((32, 64, 56, 56), 1),
        "bn_nhwc": lambda: bn((32, 56, 56, 64), -1),
        "bn_2d": lambda: bn((262144, 64), -1),
        "gn_nhwc": gn_nhwc,
        "bn_bwd_nhwc": bn_bwd_nhwc,
    }


def main(nt, rounds, names):
    cases = _cases(nt, np.random.default_rng(0))
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(cases)}")
    print(f"{nt} thread(s), float32, out=; median of {rounds} rounds")
    for name in names or list(cases):
        x, call, scale = cases[name]()
        # the copy writes into the op's own out: pages of different arrays run
        # at different speeds on the KVM guests (up to 11 %, see peers.CopyPeer)
        out = np.empty_like(x)
        dst = out
        calls = max(3, int(3e7 / x.nbytes))
        for _ in range(3):
            call(out)
            _ext.omp_copy(x, dst, nt)
        t_op, t_copy = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                call(out)
            t_op.append((time.perf_counter() - t0) / calls)
            t0 = time.perf_counter()
            for _ in range(calls):
                _ext.omp_copy(x, dst, nt)
            t_copy.append((time.perf_counter() - t0) / calls)
        ratios = sorted(scale * c / t for c, t in zip(t_copy, t_op))
        print(f"{name:12s} {x.nbytes / 2**20:6.1f} MiB  fastnorm {statistics.median(t_op) * 1e6:8.1f} us  "
              f"copy {statistics.median(t_copy) * 1e6:8.1f} us  {statistics.median(ratios) * 100:5.1f} % of copy "
              f"(quartiles {ratios[len(ratios) // 4] * 100:.0f}-{ratios[3 * len(ratios) // 4] * 100:.0f})",
              flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, int(sys.argv[2]) if len(sys.argv) > 2 else 7,
         sys.argv[3:])
