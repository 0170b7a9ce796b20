"""pytest configuration of the fastnorm benchmark suite (``pytest bench/``).

Options
-------
--contended
    Keep one core busy with a bounded busy-loop process for the whole run
    (same as ``FASTNORM_BENCH_CONTENDED=1``).  Groups get a `` [contended]``
    suffix and ``extra_info["contended"]`` is True.
--scaling
    Also run the size-scaling suite (``test_bench_scaling.py``, marked
    ``scaling``; same as ``FASTNORM_BENCH_SCALING=1``).
--bench-threads=1,2
    Thread counts to measure (default ``FASTNORM_BENCH_THREADS`` or ``1,2``).
--bench-peers=a,b
    Only these implementations (names from ``peers.PEERS``: fastnorm, numpy,
    numba, torch, ort, copy).

Unless given on the command line, pytest-benchmark runs each benchmark for
at most ``FASTNORM_BENCH_MAX_TIME`` seconds (default 0.2) and at least
``FASTNORM_BENCH_MIN_ROUNDS`` rounds (default 5), which keeps the default
run to a few minutes; pass ``--benchmark-max-time``/``--benchmark-min-rounds``
for steadier figures.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # robust under --import-mode=importlib too
    sys.path.insert(0, _HERE)

import contention  # noqa: E402
import peers  # noqa: E402


def pytest_addoption(parser):
    """Register --contended, --scaling, --bench-threads and --bench-peers."""
    g = parser.getgroup("fastnorm-bench")
    g.addoption("--contended", action="store_true", default=False,
                help="keep one core busy with a busy-loop process during the benchmarks")
    g.addoption("--scaling", action="store_true", default=False,
                help="also run the LayerNorm size-scaling benchmarks")
    g.addoption("--bench-threads", default=None,
                help="comma-separated thread counts (default 1,2)")
    g.addoption("--bench-peers", default=None,
                help="comma-separated implementations to run (default: all)")


def pytest_configure(config):
    """Register the suite's markers."""
    config.addinivalue_line("markers", "scaling: size-scaling benchmark (run with --scaling)")
    config.addinivalue_line("markers", "core: core benchmark cases")


def bench_threads(config=None):
    """Thread counts to benchmark.

    Parameters
    ----------
    config : pytest.Config, optional

    Returns
    -------
    list of int
    """
    spec = None
    if config is not None:
        spec = config.getoption("--bench-threads")
    spec = spec or os.environ.get("FASTNORM_BENCH_THREADS") or "1,2"
    return [int(t) for t in str(spec).split(",") if t.strip()]


def selected_peers(config=None):
    """Names of the implementations selected with ``--bench-peers``.

    Parameters
    ----------
    config : pytest.Config, optional

    Returns
    -------
    list of str
    """
    spec = config.getoption("--bench-peers") if config is not None else None
    spec = spec or os.environ.get("FASTNORM_BENCH_PEERS")
    names = [p.name for p in peers.PEERS]
    if not spec:
        return names
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    return [n for n in names if n in wanted]


def _given(config, flag):
    return any(str(a).startswith(flag) for a in config.invocation_params.args)


def pytest_collection_modifyitems(config, items):
    """Apply the default time budget and skip the scaling suite unless asked for."""
    scaling = config.getoption("--scaling") or \
        os.environ.get("FASTNORM_BENCH_SCALING", "") in ("1", "true", "yes")
    defaults = {}
    if not _given(config, "--benchmark-max-time"):
        defaults["max_time"] = float(os.environ.get("FASTNORM_BENCH_MAX_TIME", "0.2"))
    if not _given(config, "--benchmark-min-rounds"):
        defaults["min_rounds"] = int(os.environ.get("FASTNORM_BENCH_MIN_ROUNDS", "5"))
    skip_scaling = pytest.mark.skip(reason="size-scaling suite: run with --scaling")
    for item in items:
        if "benchmark" not in getattr(item, "fixturenames", ()):
            continue
        if not str(item.fspath).startswith(_HERE):
            continue
        if defaults and item.get_closest_marker("benchmark") is None:
            item.add_marker(pytest.mark.benchmark(**defaults))
        if item.get_closest_marker("scaling") is not None and not scaling:
            item.add_marker(skip_scaling)


# --------------------------------------------------------------------------
# Contended mode
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def contended(request):
    """True in contended mode; the busy loop runs while the fixture is alive."""
    if not contention.contended_requested(request.config):
        yield False
        return
    busy = contention.BusyLoop()
    busy.start()
    try:
        yield True
    finally:
        busy.stop()


# --------------------------------------------------------------------------
# Inputs: one case at a time in memory
# --------------------------------------------------------------------------

class _CaseCache:
    """Keeps the inputs (and reference slice) of the most recent case only.

    With them, fastnorm's benchmarked callables of that case per (variant,
    threads): the same-rounds ratios of the peers benchmarked after it time that
    callable, with its own ``out=`` array, not a fresh one on other pages (pages
    of different arrays ran up to 11 % apart on the KVM guests).
    """

    def __init__(self):
        self.case = None
        self.inp = None
        self.ref = None
        self.fastnorm_calls = {}

    def get(self, case):
        if self.case != case:
            self.clear()
            self.case = case
            self.inp = peers.make_inputs(case)
        return self.inp

    def reference(self, case):
        self.get(case)
        if self.ref is None:
            self.ref = peers.reference_head(case, self.inp)
        return self.ref

    def clear(self):
        for p in peers.PEERS:
            p.release()
        self.case = self.inp = self.ref = None
        self.fastnorm_calls = {}
        gc.collect()


_CACHE = _CaseCache()


@pytest.fixture(scope="session")
def case_cache():
    """The shared one-case input cache."""
    yield _CACHE
    _CACHE.clear()


@pytest.fixture
def run_case(benchmark, case_cache, contended, request):
    """Return ``run(case, impl, variant, threads, suite)`` which benchmarks one combination.

    It skips when the implementation is unavailable or does not support the
    case, runs it once (warm-up: JIT compilation, session creation, first
    touch), checks the result against a float64 reference slice, then hands
    it to pytest-benchmark with the case name as group and the case, impl,
    variant and thread count in ``extra_info``.
    """

    def run(case, impl, variant, threads, suite="core"):
        if impl not in selected_peers(request.config):
            pytest.skip(f"{impl} not selected (--bench-peers)")
        peer = peers.get_peer(impl)
        if not peer.available():
            pytest.skip(f"{impl} unavailable: {peer.why_unavailable()}")
        if not peer.supports(case, variant):
            pytest.skip(f"{impl} has no {variant} variant of {case.op}")
        inp = case_cache.get(case)
        try:
            fn = peer.make(case, inp, threads, variant)
        except Exception as exc:  # e.g. ONNX Runtime lacking an operator
            pytest.skip(f"{impl} cannot run {case.name}: {type(exc).__name__}: {exc}")
        if fn is None:
            pytest.skip(f"{impl} does not support {case.name} ({variant})")
        y = fn()  # warm-up
        if impl == "copy":
            ref = inp["x"][:2].astype("float64")
        else:
            ref = case_cache.reference(case)
        err = peers.head_error(case, y, ref)
        assert err <= peers.tolerance(case), (
            f"{impl} ({variant}, {threads} threads) is wrong on {case.name}: "
            f"max abs error {err:.3g}")
        del y
        benchmark.group = case.name + (" [contended]" if contended else "")
        benchmark.extra_info.update(case.as_dict())
        benchmark.extra_info.update(impl=impl, label=peer.label, variant=variant,
                                    threads=threads, contended=bool(contended),
                                    suite=suite, error=err)
        benchmark(fn)
        key = (case.name, variant, threads)
        median = _median_of(benchmark)
        if impl == "fastnorm" and median is not None:
            _FASTNORM_MEDIANS[key] = median
            case_cache.fastnorm_calls[variant, threads] = fn
        fast_median = _FASTNORM_MEDIANS.get(key)
        if (impl not in _NO_SAME_ROUNDS and not contended and median is not None
                and fast_median is not None and median < _CLOSE_PEER * fast_median):
            # fastnorm's speed-up over this peer from alternating rounds: the
            # medians of two benchmarks taken a minute apart moved by up to 2x on
            # the KVM guests (the same-rounds figure is the one the targets take).
            # Only for peers within _CLOSE_PEER of fastnorm's median, which keeps
            # the suite's time: a peer further behind misses no target on drift
            fast_fn = case_cache.fastnorm_calls.get((variant, threads))
            if fast_fn is not None:
                benchmark.extra_info["fastnorm_speedup"] = interleaved_ratio(fn, fast_fn)
        if impl == "fastnorm":
            copy_peer = peers.get_peer("copy")
            # into fastnorm's own out= array: the ratio then compares the op and the
            # copy on the same pages (see CopyPeer)
            ref_fn = (copy_peer.make(case, inp, threads, variant, out=getattr(fn, "out_buffer", None))
                      if copy_peer.available() else None)
            if ref_fn is not None:
                benchmark.extra_info["copy_ratio"] = interleaved_ratio(ref_fn, fn)

    return run


#: fastnorm's median per (case name, variant, threads) of this session, for the
#: peers benchmarked after it (fastnorm comes first in peers.PEERS)
_FASTNORM_MEDIANS = {}
#: peers whose median is under this many times fastnorm's get a same-rounds ratio
_CLOSE_PEER = 2.5
#: implementations without one: fastnorm and the copy themselves, NumPy (single-
#: threaded, far behind), and ONNX Runtime, whose worker threads spin after each
#: run and hold the cores while fastnorm's next calls run (LayerNorm (8192, 768)
#: took 2.4-8 ms right after ONNX Runtime's calls, 2.5 ms right after PyTorch's)
_NO_SAME_ROUNDS = ("fastnorm", "copy", "numpy", "ort")


def _median_of(benchmark):
    """The median of the benchmark just run, or None (e.g. --benchmark-disable)."""
    try:
        return benchmark.stats.stats.median
    except AttributeError:
        return None


def interleaved_ratio(ref_fn, fn, rounds=7, budget_s=0.01):
    """Median over rounds of ref_fn's time / fn's time, the two taken in turn.

    The machines are shared and their memory bandwidth drifts between one
    benchmark and the next (the same OpenMP copy took 7.3 ms in one run and
    8.5-9.3 ms in others), so a ratio of two medians taken minutes apart moves
    by 5-10 %. Taken in alternating rounds, each a median of a few calls, both
    see the same machine.

    Parameters
    ----------
    ref_fn, fn : callable
        The reference (an OpenMP copy of the same bytes) and the measured call.
    rounds : int
        Rounds of one median of ref_fn and one of fn.
    budget_s : float
        About how long each median's calls take.

    Returns
    -------
    float
        The median of the per-round ratios (> 1: fn is faster than ref_fn).

    Examples
    --------
    >>> r = interleaved_ratio(lambda: sum(range(1000)), lambda: sum(range(1000)))
    >>> r > 0  # about 1 here; a timing, so nothing more is promised
    True
    """
    import statistics
    import time

    def median_time(f, calls):
        ts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    fn()
    ref_fn()
    t0 = time.perf_counter()
    fn()
    calls = max(3, min(200, int(budget_s / max(time.perf_counter() - t0, 1e-7))))
    ratios = [median_time(ref_fn, calls) / median_time(fn, calls) for _ in range(rounds)]
    return statistics.median(ratios)


# --------------------------------------------------------------------------
# Machine information stored in the JSON
# --------------------------------------------------------------------------

def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record cores, load average, contention, peer versions and fastnorm's config."""
    machine_info["usable_cores"] = peers.usable_cores()
    machine_info["loadavg_start"] = _loadavg()
    machine_info["contended"] = contention.contended_requested(config)
    machine_info["peers"] = peers.peer_status()
    try:
        import contextlib
        import io
        import fastnorm
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            fastnorm.show_config()
        machine_info["fastnorm_config"] = buf.getvalue()
    except Exception as exc:
        machine_info["fastnorm_config"] = f"unavailable: {exc}"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Record the load average at the end of the run."""
    output_json["machine_info"]["loadavg_end"] = _loadavg()
