"""Denormal inputs against normal inputs of the same shape (pytest-benchmark).

Data below the normal range (float32 under 1.2e-38, float64 under 2.2e-308)
makes x86 floating-point units take microcode assists on operations that read
or produce such values, unless flush-to-zero is set, which fastnorm does not set
(it would change results: a denormal activation read as zero normalizes wrongly).
float32 rows of denormals are normalized in float64, where they are normal
numbers; float64 denormals and the backward passes run on them as they are.

Each group holds one op, single-threaded, on a (64, 4096) array of normal data
and on the same data scaled into the denormal range; the ratio of the two
medians is the slowdown. Run::

    pytest bench/test_bench_denormals.py --benchmark-only --benchmark-group-by=group \\
        --benchmark-columns=median,rounds

The speed is measured here and never asserted in the test suite
(tests/test_extreme_values.py checks what denormal inputs compute).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnorm

OPS = {
    "layer_norm": lambda a: fastnorm.layer_norm(a, num_threads=1),
    "rms_norm": lambda a: fastnorm.rms_norm(a, num_threads=1),
    "batch_norm": lambda a: fastnorm.batch_norm(a.reshape(64, 64, -1), num_threads=1),
    "moments": lambda a: fastnorm.moments(a, axis=-1, num_threads=1),
    "layer_norm_backward": lambda a: fastnorm.layer_norm_backward(
        a, a, np.zeros(a.shape[0]), np.ones(a.shape[0]), num_threads=1),
}
TINY = {"float32": 1e-40, "float64": 1e-310}


@pytest.mark.parametrize("kind", ["normal", "denormal"])
@pytest.mark.parametrize("dtype", list(TINY))
@pytest.mark.parametrize("op", list(OPS))
def test_denormals(benchmark, op, dtype, kind):
    """One op on normal or denormal (64, 4096) data, one thread."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((64, 4096)).astype(dtype)
    if kind == "denormal":
        a = (a * TINY[dtype]).astype(dtype)
        assert (np.abs(a[a != 0]) < np.finfo(dtype).tiny).all()
    benchmark.group = f"denormals: {op} {dtype}"
    benchmark.extra_info.update(op=op, dtype=dtype, kind=kind)
    f = OPS[op]
    with np.errstate(all="ignore"):
        benchmark(f, a)
