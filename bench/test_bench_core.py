"""Core benchmark cases of fastnorm against its peers (pytest-benchmark).

One group per case.  In each group: fastnorm allocating (``y = f(x)``) and
with ``out=``, every importable peer (NumPy formula, hand-written numba,
PyTorch CPU, ONNX Runtime), and the copy-bandwidth reference (an OpenMP copy
of the same bytes into a preallocated array, and into a fresh one), each at
every thread count of ``--bench-threads`` (default 1 and 2; NumPy is
single-threaded and runs once).

Run::

    pytest bench/ --benchmark-only --benchmark-json=bench/results/core.json
    python bench/report.py bench/results/core.json
"""

from __future__ import annotations

import pytest

from conftest import bench_threads
from peers import PEERS, Case

#: The cases of the performance issue (float32 unless stated).
CORE_CASES = [
    Case("LayerNorm (8192, 768)", "layer_norm", (8192, 768)),
    Case("LayerNorm (8192, 4096)", "layer_norm", (8192, 4096)),
    Case("LayerNorm (65536, 1024)", "layer_norm", (65536, 1024)),
    Case("LayerNorm (512, 64)", "layer_norm", (512, 64)),
    Case("LayerNorm (32, 512)", "layer_norm", (32, 512)),
    Case("LayerNorm (8192, 768) float64", "layer_norm", (8192, 768), dtype="float64"),
    Case("RMSNorm (8192, 4096)", "rms_norm", (8192, 4096)),
    Case("BatchNorm train NCHW (32, 64, 56, 56)", "batch_norm_train", (32, 64, 56, 56),
         layout="NCHW"),
    Case("BatchNorm train NHWC (32, 56, 56, 64)", "batch_norm_train", (32, 56, 56, 64),
         layout="NHWC"),
    Case("BatchNorm eval NCHW (32, 64, 56, 56)", "batch_norm_eval", (32, 64, 56, 56),
         layout="NCHW"),
    Case("BatchNorm eval NHWC (32, 56, 56, 64)", "batch_norm_eval", (32, 56, 56, 64),
         layout="NHWC"),
    # small inference inputs: the cost of a call, not of memory
    Case("BatchNorm eval NCHW (1, 64, 14, 14)", "batch_norm_eval", (1, 64, 14, 14), layout="NCHW"),
    Case("BatchNorm train 2-D (262144, 64)", "batch_norm_train", (262144, 64), layout="NC"),
    Case("BatchNorm train NCHW (64, 256, 14, 14)", "batch_norm_train", (64, 256, 14, 14),
         layout="NCHW"),
    # the normalization family and the backward passes (later issues); an
    # implementation lacking the op is skipped
    Case("GroupNorm (8, 256, 32, 32), 32 groups", "group_norm", (8, 256, 32, 32),
         layout="NCHW", groups=32),
    Case("GroupNorm (1, 256, 7, 7), 32 groups", "group_norm", (1, 256, 7, 7), layout="NCHW", groups=32),
    Case("GroupNorm NHWC (8, 32, 32, 256), 32 groups", "group_norm", (8, 32, 32, 256),
         layout="NHWC", groups=32),
    # planes of 7 x 7 (the last stage of a ResNet): per-plane steps, not memory
    Case("GroupNorm (64, 256, 7, 7), 32 groups", "group_norm", (64, 256, 7, 7), layout="NCHW", groups=32),
    Case("InstanceNorm (16, 64, 64, 64)", "instance_norm", (16, 64, 64, 64), layout="NCHW"),
    Case("add+LayerNorm (8192, 768)", "add_layer_norm", (8192, 768)),
    Case("LayerNorm backward (8192, 768)", "layer_norm_backward", (8192, 768)),
    Case("BatchNorm backward NCHW (32, 64, 56, 56)", "batch_norm_backward", (32, 64, 56, 56),
         layout="NCHW"),
    Case("BatchNorm backward NHWC (32, 56, 56, 64)", "batch_norm_backward", (32, 56, 56, 64),
         layout="NHWC"),
    Case("BatchNorm backward NCHW (64, 256, 7, 7)", "batch_norm_backward", (64, 256, 7, 7),
         layout="NCHW"),
    Case("GroupNorm backward (8, 256, 32, 32), 32 groups", "group_norm_backward", (8, 256, 32, 32),
         layout="NCHW", groups=32),
    Case("GroupNorm backward NHWC (8, 32, 32, 256), 32 groups", "group_norm_backward",
         (8, 32, 32, 256), layout="NHWC", groups=32),
]


def _params(cases, threads):
    """Flat parameter list, case-major so each case's inputs are built once."""
    out = []
    for case in cases:
        for i, t in enumerate(threads):
            for peer in PEERS:
                pt = t
                if peer.threads is not None:  # fixed thread count (NumPy): run once
                    if i:
                        continue
                    pt = peer.threads[0]
                for variant in peer.variants:
                    pid = f"{case.id}-{peer.name}-{variant}-t{pt}"
                    out.append(pytest.param(case, peer.name, variant, pt, id=pid))
    return out


def pytest_generate_tests(metafunc):
    if "core_case" in metafunc.fixturenames:
        metafunc.parametrize(("core_case", "impl", "variant", "threads"),
                             _params(CORE_CASES, bench_threads(metafunc.config)))


@pytest.mark.core
def test_core(run_case, core_case, impl, variant, threads):
    """Benchmark one (case, implementation, variant, thread count)."""
    run_case(core_case, impl, variant, threads, suite="core")
