"""How LayerNorm time grows with input size: cache and memory regimes.

LayerNorm over rows of ``D`` float32 values (default 1024, i.e. 4 KiB rows;
``FASTNORM_BENCH_SCALING_D`` changes it) with the row count chosen so that
``x`` takes 4 KiB, 16 KiB, ... 256 MiB (factors of 4), so L1, L2, LLC and
DRAM regimes are visible in the report's plot.  Each size runs fastnorm
(allocating and ``out=``), the copy reference and the peers (NumPy only up
to 16 MiB: it is slow and memory-hungry beyond).

Optional (about a minute and a half): skipped unless ``--scaling`` or
``FASTNORM_BENCH_SCALING=1``::

    pytest bench/test_bench_scaling.py --scaling --benchmark-only \\
        --benchmark-json=bench/results/scaling.json
"""

from __future__ import annotations

import os

import pytest

from conftest import bench_threads
from peers import PEERS, Case

D = int(os.environ.get("FASTNORM_BENCH_SCALING_D", "1024"))
SIZES = [4 << 10 << (2 * k) for k in range(9)]  # 4 KiB ... 256 MiB
NUMPY_MAX = 16 << 20


def _label(nbytes):
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= div:
            return f"{nbytes // div} {unit}"
    return f"{nbytes} B"


def scaling_cases(d=D, sizes=SIZES):
    """LayerNorm cases of ``d``-wide float32 rows over the given byte sizes.

    Parameters
    ----------
    d : int
        Row length.
    sizes : list of int
        Target sizes of x in bytes (rounded to whole rows, at least one).

    Returns
    -------
    list of Case
    """
    out = []
    for nb in sizes:
        rows = max(1, nb // (4 * d))
        out.append(Case(f"LayerNorm scaling {_label(rows * 4 * d)} ({rows}, {d})",
                        "layer_norm", (rows, d), id=f"lnscale_{rows}x{d}"))
    return out


def _params(threads):
    out = []
    for case in scaling_cases():
        for i, t in enumerate(threads):
            for peer in PEERS:
                pt = t
                if peer.threads is not None:
                    if i or case.nbytes > NUMPY_MAX:
                        continue
                    pt = peer.threads[0]
                for variant in peer.variants:
                    out.append(pytest.param(case, peer.name, variant, pt,
                                            id=f"{case.id}-{peer.name}-{variant}-t{pt}"))
    return out


def pytest_generate_tests(metafunc):
    if "scale_case" in metafunc.fixturenames:
        threads = [max(bench_threads(metafunc.config))]
        metafunc.parametrize(("scale_case", "impl", "variant", "threads"), _params(threads))


@pytest.mark.scaling
def test_scaling(run_case, scale_case, impl, variant, threads):
    """Benchmark one (size, implementation, variant) at the largest thread count."""
    run_case(scale_case, impl, variant, threads, suite="scaling")
