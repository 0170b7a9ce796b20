"""Threads, runtime configuration and SIMD paths.

- set_num_threads / get_num_threads, num_threads= on every function
- the default honours OMP_NUM_THREADS and usable cores (fresh subprocesses)
- threadpoolctl.threadpool_limits(1) makes fastnorm serial
- results with 1 and 2 threads agree; concurrent calls from Python threads
- show_config(); every SIMD path this CPU supports (FASTNORM_FORCE_ISA, one
  subprocess per ISA) against the float64 reference, the engine's kernels and
  the LRN kernels (compiled per ISA as well)
"""

import os
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastnorm
from conftest import run_python
from reference import batch_norm as ref_bn, layer_norm as ref_ln, rms_norm as ref_rms, tol

USABLE = len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads():
    old = fastnorm.get_num_threads()
    yield
    fastnorm.set_num_threads(old)


def test_get_num_threads_is_positive_int():
    n = fastnorm.get_num_threads()
    assert isinstance(n, int) and n >= 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_set_get_roundtrip(n, restore_threads):
    fastnorm.set_num_threads(n)
    assert fastnorm.get_num_threads() == n
    x = np.random.default_rng(n).standard_normal((33, 65))
    np.testing.assert_allclose(fastnorm.layer_norm(x), ref_ln(x)[0], rtol=1e-10, atol=1e-10)


def test_num_threads_kwarg_does_not_change_global(restore_threads):
    fastnorm.set_num_threads(1)
    x = np.ones((4, 8), np.float32)
    fastnorm.layer_norm(x, num_threads=2)
    fastnorm.rms_norm(x, num_threads=2)
    fastnorm.batch_norm(x, num_threads=2)
    fastnorm.moments(x, num_threads=2)
    assert fastnorm.get_num_threads() == 1


# ------------------------------------------------------ fresh-process defaults
DEFAULT_CODE = "import fastnorm; print(fastnorm.get_num_threads())"


def test_default_is_usable_cores():
    p = run_python(DEFAULT_CODE, env_remove=("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"))
    assert int(p.stdout.strip().splitlines()[-1]) == USABLE


@pytest.mark.skipif(USABLE < 2, reason="needs 2 usable cores")
def test_default_follows_cpu_affinity():
    """'usable cores' is len(os.sched_getaffinity(0)), not os.cpu_count()."""
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "import fastnorm; print(fastnorm.get_num_threads())")
    p = run_python(code, env_remove=("OMP_NUM_THREADS", "OMP_THREAD_LIMIT"))
    assert int(p.stdout.strip().splitlines()[-1]) == 1


@pytest.mark.parametrize("n", [1, 2])
def test_default_honours_omp_num_threads(n):
    p = run_python(DEFAULT_CODE, env_update={"OMP_NUM_THREADS": str(n)})
    assert int(p.stdout.strip().splitlines()[-1]) == n


def test_threadpoolctl_limits_make_it_serial():
    pytest.importorskip("threadpoolctl")
    code = textwrap.dedent("""
        import numpy as np, fastnorm
        from threadpoolctl import threadpool_limits, threadpool_info
        x = np.random.default_rng(0).standard_normal((64, 257)).astype(np.float32)
        y0 = fastnorm.layer_norm(x)
        default = fastnorm.get_num_threads()
        apis = [i["user_api"] for i in threadpool_info()]
        assert "openmp" in apis, f"threadpoolctl cannot see fastnorm's OpenMP runtime: {apis}"
        with threadpool_limits(1):
            inside = fastnorm.get_num_threads()
            y1 = fastnorm.layer_norm(x)
        after = fastnorm.get_num_threads()
        np.testing.assert_allclose(y0, y1, rtol=1e-6, atol=1e-6)
        print(default, inside, after)
    """)
    p = run_python(code, env_remove=("OMP_NUM_THREADS",))
    default, inside, after = map(int, p.stdout.split()[-3:])
    assert inside == 1
    assert default == USABLE and after == USABLE


# -------------------------------------------------------- thread agreement
@pytest.mark.parametrize("func", ["layer_norm", "rms_norm", "batch_norm", "batch_norm_nhwc",
                                  "moments"])
@pytest.mark.parametrize("shape", [(2, 7), (3, 17), (64, 1000), (16, 8, 33), (2, 8, 9, 65)],
                         ids=str)
def test_one_and_two_threads_agree(func, shape, dtype, rng):
    x = (rng.standard_normal(shape) + 1.5).astype(dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    C = shape[-1] if func == "batch_norm_nhwc" else shape[1]
    results = []
    for nt in (1, 2):
        if func == "layer_norm":
            r = fastnorm.layer_norm(x, axis=-1, return_stats=True, num_threads=nt)
        elif func == "rms_norm":
            r = fastnorm.rms_norm(x, return_stats=True, num_threads=nt)
        elif func == "moments":
            r = fastnorm.moments(x, axis=tuple(range(x.ndim - 1)), num_threads=nt)
        else:
            rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
            ca = -1 if func == "batch_norm_nhwc" else 1
            r = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True,
                                    channel_axis=ca, return_stats=True, num_threads=nt)
            r = tuple(r) + (rm, rv)
        results.append([np.asarray(a) for a in r])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def test_concurrent_python_threads(rng):
    """Calls from several Python threads (GIL released) give correct results."""
    xs = [rng.standard_normal((256, 300)).astype(np.float32) for _ in range(8)]

    def work(x):
        return (fastnorm.layer_norm(x, num_threads=1),
                fastnorm.batch_norm(x, num_threads=1),
                fastnorm.rms_norm(x, num_threads=2))

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(work, xs))
    for x, (ln, bn, rms) in zip(xs, results):
        np.testing.assert_allclose(ln, ref_ln(x)[0], *tol(np.float32))
        np.testing.assert_allclose(bn, ref_bn(x)[0], *tol(np.float32))
        np.testing.assert_allclose(rms, ref_rms(x)[0], *tol(np.float32))


# ---------------------------------------------------------- config and ISAs
def test_show_config(capsys):
    fastnorm.show_config()
    text = capsys.readouterr().out
    assert text.strip()
    low = text.lower()
    assert "openmp" in low
    assert fastnorm._ext.isa_name().lower() in low
    version = getattr(fastnorm, "__version__", None)
    assert version is not None and str(version) in text
    assert str(fastnorm.get_num_threads()) in text


def test_isa_query():
    isas = fastnorm._ext.supported_isas()
    assert isinstance(isas, list) and all(isinstance(i, str) for i in isas)
    assert "generic" in isas
    assert set(isas) <= {"generic", "avx2", "avx512"}
    active = fastnorm._ext.isa_name()
    assert isinstance(active, str) and active in isas


ISA_CODE = textwrap.dedent("""
    import contextlib, io, sys
    import numpy as np
    import fastnorm
    from reference import (batch_norm as ref_bn, layer_norm as ref_ln, rms_norm as ref_rms,
                           moments as ref_m, make_layout, tol)
    isa = {isa!r}
    assert fastnorm._ext.isa_name() == isa, (fastnorm._ext.isa_name(), isa)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fastnorm.show_config()
    assert isa in buf.getvalue().lower(), buf.getvalue()
    rng = np.random.default_rng(1)
    checked = 0
    for dt in (np.float32, np.float64):
        rt, at = tol(dt)
        for n in (1, 2, 4, 7, 8, 15, 16, 17, 31, 32, 33, 64, 65, 1000):
            for layout in ("C", "negative", "strided"):
                x = make_layout((rng.standard_normal((5, n)) * 2 + 1).astype(dt), layout)
                w = rng.standard_normal(n).astype(dt)
                b = rng.standard_normal(n).astype(dt)
                for nt in (1, 2):
                    y, m, r = fastnorm.layer_norm(x, w, b, return_stats=True, num_threads=nt)
                    ry, rm, rr = ref_ln(x, w, b)
                    np.testing.assert_allclose(y, ry, rt, at)
                    np.testing.assert_allclose(r, rr, rt, at)
                    y = fastnorm.rms_norm(x, w, num_threads=nt)
                    np.testing.assert_allclose(y, ref_rms(x, w)[0], rt, at)
                    y = fastnorm.layer_norm(x, axis=0, num_threads=nt)
                    np.testing.assert_allclose(y, ref_ln(x, axis=0)[0], rt, at)
                    mm, vv = fastnorm.moments(x, axis=1, num_threads=nt)
                    em, ev = ref_m(x, 1)
                    np.testing.assert_allclose(mm, em, rt, at)
                    np.testing.assert_allclose(vv, ev, rt, at)
                    checked += 1
            for shape, ca in (((3, n, 5), 1), ((3, 5, n), -1), ((4, n), 1), ((n + 1, 3), 1),
                              ((2, 3, 2, n), -1)):
                x = (rng.standard_normal(shape) + 2).astype(dt)
                C = shape[ca]
                for training in (True, False):
                    rm = rng.standard_normal(C).astype(dt)
                    rv = (rng.random(C) + 0.5).astype(dt)
                    rm0, rv0 = rm.copy(), rv.copy()
                    y, mean, invstd = fastnorm.batch_norm(
                        x, running_mean=rm, running_var=rv, training=training,
                        channel_axis=ca, return_stats=True, num_threads=2)
                    ry, em, ei, erm, erv = ref_bn(x, None, None, rm0, rv0, training=training,
                                                  channel_axis=ca)
                    np.testing.assert_allclose(y, ry, rt, at)
                    np.testing.assert_allclose(mean, em, rt, at)
                    np.testing.assert_allclose(invstd, ei, rt, at)
                    np.testing.assert_allclose(rm, erm, rt, at)
                    np.testing.assert_allclose(rv, erv, rt, at)
    # big inputs: the parallel paths of this ISA
    for dt in (np.float32, np.float64):
        rt, at = tol(dt)
        x = (rng.standard_normal((2, 70001)) + 3).astype(dt)
        np.testing.assert_allclose(fastnorm.layer_norm(x, num_threads=2), ref_ln(x)[0], rt, at)
        np.testing.assert_allclose(fastnorm.rms_norm(x, num_threads=2), ref_rms(x)[0], rt, at)
        xt = np.ascontiguousarray(x.T)
        np.testing.assert_allclose(fastnorm.layer_norm(xt, axis=0, num_threads=2),
                                   ref_ln(xt, axis=0)[0], rt, at)
        for shape, ca in (((2, 3, 150, 151), 1), ((4, 50, 51, 3), -1), ((100003, 7), 1),
                          ((8, 64, 13, 11), 1)):
            x = (rng.standard_normal(shape) + 3).astype(dt)
            np.testing.assert_allclose(fastnorm.batch_norm(x, channel_axis=ca, num_threads=2),
                                       ref_bn(x, channel_axis=ca)[0], rt, at)
    # row statistics taken while normalizing (several rows reduced at once) and
    # statistics alone (one row at a time) are the same arithmetic: the same bits
    for dt in (np.float32, np.float64):
        for n in (1, 2, 4, 5, 8, 16, 32, 33, 64, 100, 512, 1000, 1024):
            x = (rng.standard_normal((37, n)) * 3 + 1e3).astype(dt)
            _, m, r = fastnorm.layer_norm(x, return_stats=True, eps=1e-5, num_threads=1)
            mm, vv = fastnorm.moments(x, axis=1, num_threads=1)
            assert np.array_equal(m, mm), (dt, n)
            if dt == np.float64:
                assert np.array_equal(r, 1.0 / np.sqrt(vv + 1e-5)), n
    # large-mean accuracy on this path
    x = (1e6 + rng.standard_normal((16, 1000))).astype(np.float32)
    ry = ref_ln(x)[0]
    lim = 16 * np.finfo(np.float32).eps * (1 + np.abs(ry))
    assert np.all(np.abs(fastnorm.layer_norm(x) - ry) <= lim)
    xb = (1e6 + rng.standard_normal((64, 8, 100))).astype(np.float32)
    ryb = ref_bn(xb)[0]
    limb = 16 * np.finfo(np.float32).eps * (1 + np.abs(ryb))
    assert np.all(np.abs(fastnorm.batch_norm(xb) - ryb) <= limb)
    # short planes of many samples: the walk row by row of channels
    xr = (1e6 + rng.standard_normal((96, 16, 10, 10))).astype(np.float32)
    ryr = ref_bn(xr)[0]
    limr = 16 * np.finfo(np.float32).eps * (1 + np.abs(ryr))
    assert np.all(np.abs(fastnorm.batch_norm(xr) - ryr) <= limr)
    print("ok", checked)
""")


def _supported_isas():
    try:
        return list(fastnorm._ext.supported_isas())
    except Exception:  # pragma: no cover - reported by test_isa_query
        return ["generic"]


def _run_on_isa(code, isa):
    """Run `code` (with its {isa!r} placeholder filled) in a subprocess pinned to isa."""
    if isa not in _supported_isas():
        pytest.skip(f"{isa} not supported by this CPU")
    p = run_python(code.replace("{isa!r}", repr(isa)), env_update={"FASTNORM_FORCE_ISA": isa}, timeout=300)
    assert p.stdout.split()[0] == "ok"


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_supported_isa_matches_reference(isa):
    _run_on_isa(ISA_CODE, isa)


LRN_ISA_CODE = textwrap.dedent("""
    import numpy as np
    import fastnorm
    from fastnorm.family import local_response_norm as lrn, local_response_norm_backward as lrn_bwd
    from reference import make_layout
    from test_lrn import lrn_ref, lrn_bwd_ref, tol
    isa = {isa!r}
    assert fastnorm._ext.isa_name() == isa, (fastnorm._ext.isa_name(), isa)
    rng = np.random.default_rng(2)
    checked = 0
    for dt in (np.float32, np.float64):
        # every power kind of the kernel (0.75, 0.5, 1, 0, general), both channel
        # axes (the tile width follows the position count), odd layouts
        for beta in (0.75, 0.5, 1.0, 0.0, 0.3):
            for shape, ca in (((2, 9, 4, 3), 1), ((2, 5, 3, 11), -1), ((3, 17), 1), ((1, 6, 130), 1)):
                for size in (1, 4, 5):
                    for layout in ("C", "negative", "strided"):
                        a = (rng.standard_normal(shape) * 2).astype(dt)
                        g = rng.standard_normal(shape).astype(dt)
                        x, dy = make_layout(a, layout), make_layout(g, layout)
                        y = lrn(x, size, alpha=0.3, beta=beta, k=1.5, channel_axis=ca)
                        np.testing.assert_allclose(y, lrn_ref(a, size, 0.3, beta, 1.5, ca), **tol(dt))
                        dx = lrn_bwd(dy, x, size, alpha=0.3, beta=beta, k=1.5, channel_axis=ca)
                        np.testing.assert_allclose(dx, lrn_bwd_ref(g, a, size, 0.3, beta, 1.5, ca),
                                                   **tol(dt))
                        checked += 1
        # big inputs: the parallel path of this ISA, equal to its serial path
        a = rng.standard_normal((4, 20, 30, 48)).astype(dt)
        g = rng.standard_normal(a.shape).astype(dt)
        for ca in (1, -1):
            y1 = lrn(a, 5, alpha=0.3, channel_axis=ca, num_threads=1)
            y2 = lrn(a, 5, alpha=0.3, channel_axis=ca, num_threads=2)
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_allclose(y2, lrn_ref(a, 5, 0.3, channel_axis=ca), **tol(dt))
            d1 = lrn_bwd(g, a, 5, alpha=0.3, channel_axis=ca, num_threads=1)
            d2 = lrn_bwd(g, a, 5, alpha=0.3, channel_axis=ca, num_threads=2)
            np.testing.assert_array_equal(d1, d2)
            np.testing.assert_allclose(d2, lrn_bwd_ref(g, a, 5, 0.3, 0.75, 1.0, ca), **tol(dt))
    print("ok", checked)
""")


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_supported_isa_lrn_matches_reference(isa):
    _run_on_isa(LRN_ISA_CODE, isa)


def test_set_num_threads_rejects_zero(restore_threads):
    fastnorm.set_num_threads(2)
    with pytest.raises(ValueError):
        fastnorm.set_num_threads(0)
    assert fastnorm.get_num_threads() == 2


# ----------------------------------------------- parallel paths (big inputs)
# Inputs below ~64k elements run serially, so the cases below are large enough
# for the parallel paths: many units (one unit per thread item), few long units
# (a unit split across threads) and the column layout (channels-last / 2-D
# BatchNorm, layer_norm over axis 0) with more rows than one block.
BIG_CASES = [
    ("layer_norm", (600, 129), dict(axis=-1)),
    ("layer_norm", (2, 70001), dict(axis=-1)),
    ("layer_norm", (70001, 3), dict(axis=0)),
    ("layer_norm", (4, 9, 50, 41), dict(axis=1)),
    ("layer_norm", (5, 33, 451), dict(axis=(0, 2))),
    ("rms_norm", (600, 129), dict(axis=-1)),
    ("rms_norm", (3, 50001), dict(axis=-1)),
    ("rms_norm", (30001, 3), dict(axis=0)),
    ("batch_norm", (8, 64, 13, 11), dict(channel_axis=1)),
    ("batch_norm", (2, 3, 150, 151), dict(channel_axis=1)),
    ("batch_norm", (4, 50, 51, 3), dict(channel_axis=-1)),
    ("batch_norm", (100003, 7), dict(channel_axis=1)),
    ("batch_norm", (9, 17, 5, 97), dict(channel_axis=-1)),
    ("batch_norm_eval", (4, 50, 51, 3), dict(channel_axis=-1)),
    ("batch_norm_eval", (2, 3, 150, 151), dict(channel_axis=1)),
    ("moments", (200003,), dict(axis=None)),
    ("moments", (70001, 3), dict(axis=0)),
    ("moments", (3, 70001), dict(axis=1)),
    ("moments", (40, 50, 41), dict(axis=(0, 2))),
]


def _run_big(func, x, kw, nt, rng_seed=0):
    """Returns (list of fastnorm outputs, list of float64 reference outputs)."""
    dt = x.dtype
    r = np.random.default_rng(rng_seed)
    if func == "layer_norm":
        from reference import _norm_axes
        ps = tuple(x.shape[a] for a in _norm_axes(kw["axis"], x.ndim))
        w = r.standard_normal(ps).astype(dt)
        b = r.standard_normal(ps).astype(dt)
        got = fastnorm.layer_norm(x, w, b, return_stats=True, num_threads=nt, **kw)
        exp = ref_ln(x, w, b, **kw)
    elif func == "rms_norm":
        got = fastnorm.rms_norm(x, return_stats=True, num_threads=nt, **kw)
        exp = ref_rms(x, **kw)
    elif func.startswith("batch_norm"):
        C = x.shape[kw["channel_axis"]]
        w = r.standard_normal(C).astype(dt)
        b = r.standard_normal(C).astype(dt)
        rm = r.standard_normal(C).astype(dt)
        rv = (r.random(C) + 0.5).astype(dt)
        training = func == "batch_norm"
        exp = ref_bn(x, w, b, rm.copy(), rv.copy(), training=training, **kw)
        got = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=training,
                                  return_stats=True, num_threads=nt, **kw)
        got = tuple(got) + (rm, rv)
    else:
        from reference import moments as ref_m
        got = fastnorm.moments(x, kw["axis"], num_threads=nt)
        exp = ref_m(x, kw["axis"])
    return [np.asarray(g) for g in got], list(exp)


@pytest.mark.parametrize("func,shape,kw", BIG_CASES,
                         ids=[f"{f}-{'x'.join(map(str, s))}-{k}" for f, s, k in BIG_CASES])
@pytest.mark.parametrize("layout", ["C", "F", "negative"])
def test_parallel_paths_match_reference(func, shape, kw, layout, dtype):
    from reference import make_layout
    rng = np.random.default_rng(sum(shape))
    x = make_layout((rng.standard_normal(shape) * 2 + 3).astype(dtype), layout)
    x0 = x.copy()
    got2, exp = _run_big(func, x, kw, 2)
    np.testing.assert_array_equal(x, x0)
    rtol, atol = tol(dtype)
    for i, (g, e) in enumerate(zip(got2, exp)):
        assert g.dtype == dtype, (i, g.dtype)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol * 5, err_msg=f"output {i}")
    got1, _ = _run_big(func, x, kw, 1)
    agree = 1e-6 if dtype == np.float32 else 1e-13
    for g1, g2 in zip(got1, got2):
        np.testing.assert_allclose(g1, g2, rtol=agree, atol=agree)


@pytest.mark.parametrize("func,shape,kw", BIG_CASES[::2],
                         ids=[f"{f}-{'x'.join(map(str, s))}-{k}" for f, s, k in BIG_CASES[::2]])
def test_thread_count_does_not_change_bits(func, shape, kw):
    """The engine documents fixed-order folds, so 1 and 2 threads give the same bits."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) + 1e3).astype(np.float32)
    got1, _ = _run_big(func, x, kw, 1)
    for nt in (2, 4):  # 4 oversubscribes a 2-core machine: still the same bits
        got, _ = _run_big(func, x, kw, nt)
        for g1, g in zip(got1, got):
            assert g1.tobytes() == g.tobytes(), f"num_threads={nt}"


@pytest.mark.parametrize("loc", [1e4, 1e6])
@pytest.mark.parametrize("func,shape,kw", [
    ("layer_norm", (2, 70001), dict(axis=-1)),
    ("layer_norm", (70001, 3), dict(axis=0)),
    ("batch_norm", (2, 3, 150, 151), dict(channel_axis=1)),
    ("batch_norm", (100003, 7), dict(channel_axis=1)),
    ("batch_norm", (4, 50, 51, 3), dict(channel_axis=-1)),
], ids=str)
def test_parallel_paths_large_mean_float32(loc, func, shape, kw):
    rng = np.random.default_rng(3)
    x = (loc + rng.standard_normal(shape)).astype(np.float32)
    if func == "layer_norm":
        y = fastnorm.layer_norm(x, num_threads=2, **kw)
        ry = ref_ln(x, **kw)[0]
    else:
        y = fastnorm.batch_norm(x, num_threads=2, **kw)
        ry = ref_bn(x, **kw)[0]
    limit = 16 * np.finfo(np.float32).eps * (1 + np.abs(ry))
    err = np.abs(y.astype(np.float64) - ry)
    assert np.all(err <= limit), err.max()
