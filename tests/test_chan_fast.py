"""The compiled fast path of batch_norm, group_norm and instance_norm.

``fastnorm._ext.chan_fast`` takes the common calls (C-contiguous float32/float64
x, channels on axis 1 or last, parameters of x's dtype) without the Python-level
validation and planning. It must give the same bits as the general path, which
the same calls take when eps is a NumPy scalar instead of a Python float (the
fast path declines anything but a float), update running statistics the same
way and, with return_stats (as the layers call it), return the same statistics.
It must decline (return None) whatever it does not cover, so the general
path validates and raises.
"""

import numpy as np
import pytest

import fastnorm
from fastnorm import _ext, get_num_threads
from reference import assert_same_results, batch_norm as ref_batch_norm

EPS = 1e-5
GENERAL_EPS = np.float64(EPS)   # same value; the fast path declines a NumPy scalar


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (3.0 + rng.standard_normal(shape)).astype(dtype)


def _params(C, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype))


def _fast(x, w, b, out, groups, cax, rm=None, rv=None, training=None, momentum=0.1, num_threads=None):
    return _ext.chan_fast(x, w, b, EPS, out, groups, cax, rm, rv, training, momentum, num_threads,
                          get_num_threads)


# (shape, channel axis): NCHW with N > 1 and N == 1, channels-last, 2-D (N, C)
BN_LAYOUTS = [((4, 6, 5, 7), 1), ((1, 6, 9), 1), ((3, 5, 4, 6), -1), ((50, 6), 1), ((50, 6), -1),
              ((8, 16, 40, 40), 1), ((8, 40, 40, 16), -1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,cax", BN_LAYOUTS)
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_training_same_bits_as_general_path(shape, cax, dtype, affine):
    x = _data(shape, dtype)
    C = shape[cax]
    w, b = _params(C, dtype) if affine else (None, None)
    y = _fast(x, w, b, None, 0, cax)
    assert y is not None, "the fast path declined a case it covers"
    ref = fastnorm.batch_norm(x, w, b, channel_axis=cax, eps=GENERAL_EPS)
    np.testing.assert_array_equal(y, ref)
    # and against an independent float64 reference
    yr = ref_batch_norm(x, w, b, eps=EPS, channel_axis=cax)[0]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y, yr, rtol=tol, atol=tol)


@pytest.mark.parametrize("rdtype", [np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,cax", BN_LAYOUTS[:5])
def test_batch_norm_running_statistics_same_bits(shape, cax, dtype, rdtype):
    x = _data(shape, dtype)
    C = shape[cax]
    w, b = _params(C, dtype)
    rng = np.random.default_rng(5)
    rm0 = rng.standard_normal(C).astype(rdtype)
    rv0 = rng.uniform(0.5, 2.0, C).astype(rdtype)
    # training: y and the updated running statistics
    rm, rv = rm0.copy(), rv0.copy()
    y = _fast(x, w, b, None, 0, cax, rm, rv, True, 0.3)
    assert y is not None
    rm_g, rv_g = rm0.copy(), rv0.copy()
    ref = fastnorm.batch_norm(x, w, b, running_mean=rm_g, running_var=rv_g, training=True, momentum=0.3,
                              channel_axis=cax, eps=GENERAL_EPS)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(rm, rm_g)
    np.testing.assert_array_equal(rv, rv_g)
    assert not np.array_equal(rm, rm0)
    _, _, _, rm_ref, rv_ref = ref_batch_norm(x, w, b, rm0, rv0, training=True, momentum=0.3, eps=EPS,
                                             channel_axis=cax)
    # float32 statistics are float32-accurate (blocks summed in float32)
    rtol = 1e-6 if np.float32 in (dtype, rdtype) else 1e-12
    np.testing.assert_allclose(rm, rm_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(rv, rv_ref, rtol=rtol, atol=rtol)
    # inference: the running statistics are read, not written
    y = _fast(x, w, b, None, 0, cax, rm, rv, False)
    assert y is not None
    ref = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False,
                              channel_axis=cax, eps=GENERAL_EPS)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(rm, rm_g)
    yr = ref_batch_norm(x, w, b, rm, rv, training=False, eps=EPS, channel_axis=cax)[0]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, yr, rtol=tol, atol=tol)


# (shape, groups, channel axis); groups -1: InstanceNorm
GROUPED = [((2, 8, 5, 6), 4, 1), ((2, 8, 30), 8, 1), ((3, 6), 3, 1), ((2, 5, 6, 8), 2, -1),
           ((2, 5, 6, 8), 8, -1), ((2, 8, 5, 6), -1, 1), ((2, 5, 6, 8), -1, -1),
           ((8, 64, 32, 32), 16, 1), ((8, 32, 32, 64), 16, -1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,cax", GROUPED)
@pytest.mark.parametrize("affine", [False, True])
def test_group_and_instance_norm_same_bits_as_general_path(shape, groups, cax, dtype, affine):
    x = _data(shape, dtype)
    C = shape[cax]
    w, b = _params(C, dtype) if affine else (None, None)
    y = _fast(x, w, b, None, groups, cax, training=True)
    assert y is not None, "the fast path declined a case it covers"
    if groups == -1:
        ref = fastnorm.instance_norm(x, w, b, channel_axis=cax, eps=GENERAL_EPS)
    else:
        ref = fastnorm.group_norm(x, groups, w, b, channel_axis=cax, eps=GENERAL_EPS)
    np.testing.assert_array_equal(y, ref)
    # independent reference: channels moved to axis 1, grouped, float64
    G = C if groups == -1 else groups
    xm = np.moveaxis(x.astype(np.float64), cax, 1)
    xg = xm.reshape(xm.shape[0], G, -1)
    yr = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + EPS)).reshape(xm.shape)
    if affine:
        pshape = (1, C) + (1,) * (x.ndim - 2)
        yr = yr * w.reshape(pshape) + b.reshape(pshape)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y, np.moveaxis(yr, 1, cax), rtol=tol, atol=tol)


@pytest.mark.parametrize("groups", [0, 4, -1])
def test_out_and_in_place(groups):
    x = _data((4, 8, 6, 5), np.float32)
    w, b = _params(8, np.float32)
    ref = _fast(x, w, b, None, groups, 1, training=True if groups else None)
    out = np.full_like(x, np.nan)
    y = _fast(x, w, b, out, groups, 1, training=True if groups else None)
    assert y is out
    np.testing.assert_array_equal(out, ref)
    xi = x.copy()
    y = _fast(xi, w, b, xi, groups, 1, training=True if groups else None)
    assert y is xi
    np.testing.assert_array_equal(xi, ref)


def test_threads_do_not_change_the_bits():
    x = _data((8, 16, 48, 48), np.float32)
    for groups in (0, 4, -1):
        t = True if groups else None
        one = _fast(x, None, None, None, groups, 1, training=t, num_threads=1)
        two = _fast(x, None, None, None, groups, 1, training=t, num_threads=2)
        np.testing.assert_array_equal(one, two)


def _declined_cases():
    x = _data((4, 6, 5), np.float32)
    w, b = _params(6, np.float32)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    base = dict(x=x, w=w, b=b, out=None, groups=0, cax=1, rm=None, rv=None, training=None, momentum=0.1,
                num_threads=None)
    ro = np.ones(6, np.float32)
    ro.flags.writeable = False
    xro = x.copy()
    xro.flags.writeable = False
    return {
        "strided x": dict(base, x=x[:, :, ::2]),
        "float16 x": dict(base, x=x.astype(np.float16)),
        "1-D x": dict(base, x=x[0, 0]),
        "empty x": dict(base, x=x[:0]),
        "channel axis 0": dict(base, cax=0),
        "channel axis in the middle": dict(base, x=_data((2, 3, 6, 5), np.float32), cax=2),
        "bool channel axis": dict(base, cax=True),
        "weight of another dtype": dict(base, w=w.astype(np.float64)),
        "weight as a list": dict(base, w=list(w)),
        "bias without weight": dict(base, w=None),
        "read-only out=x": dict(base, x=xro, out=xro),
        "out overlapping x": dict(base, out=x[::-1]),
        "out of another dtype": dict(base, out=np.empty(x.shape, np.float64)),
        "out overlapping weight": dict(base, x=_data((1, 6, 1), np.float32), w=w, out=w.reshape(1, 6, 1)),
        "bad num_threads": dict(base, num_threads=0),
        "bad momentum": dict(base, momentum=1.5),
        "negative eps": None,
        "one value per channel when training": dict(base, x=x[:1, :, :1].copy()),
        "one channel": dict(base, x=x[:, :1].copy(), w=None, b=None),
        "inference without running statistics": dict(base, training=False),
        "only one running statistic": dict(base, rm=rm),
        "read-only running statistic when training": dict(base, rm=ro, rv=rv, training=True),
        "training not a bool": dict(base, training=1),
        "groups not dividing C": dict(base, groups=4, training=True),
        "group norm with running statistics": dict(base, groups=3, rm=rm, rv=rv, training=True),
        "instance norm of one value per instance": dict(base, x=_data((4, 6, 1), np.float32), groups=-1,
                                                         training=True),
        "instance norm of 2-D x": dict(base, x=_data((4, 6), np.float32), groups=-1, training=True),
    }


@pytest.mark.parametrize("case", list(_declined_cases()))
def test_declines_what_it_does_not_cover(case):
    c = _declined_cases()[case]
    if c is None:   # negative eps
        x = _data((4, 6, 5), np.float32)
        assert _ext.chan_fast(x, None, None, -1.0, None, 0, 1, None, None, None, 0.1, None,
                              get_num_threads) is None
        return
    out_before = None if c["out"] is None else c["out"].copy()
    y = _fast(c["x"], c["w"], c["b"], c["out"], c["groups"], c["cax"], c["rm"], c["rv"], c["training"],
              c["momentum"], c["num_threads"])
    assert y is None
    if out_before is not None:
        np.testing.assert_array_equal(c["out"], out_before)   # nothing written


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,cax", GROUPED + [(s, 0, c) for s, c in BN_LAYOUTS])
def test_return_stats_same_bits_as_general_path(shape, groups, cax, dtype):
    """(y, mean, rstd) of the fast path, as the layers ask for them."""
    x = _data(shape, dtype)
    C = shape[cax]
    w, b = _params(C, dtype)
    fast = _ext.chan_fast(x, w, b, EPS, None, groups, cax, None, None, True if groups else None, 0.1, None,
                          get_num_threads, True)
    assert fast is not None and len(fast) == 3
    if groups == 0:
        general = fastnorm.batch_norm(x, w, b, channel_axis=cax, eps=GENERAL_EPS, return_stats=True)
    elif groups == -1:
        general = fastnorm.instance_norm(x, w, b, channel_axis=cax, eps=GENERAL_EPS, return_stats=True)
    else:
        general = fastnorm.group_norm(x, groups, w, b, channel_axis=cax, eps=GENERAL_EPS, return_stats=True)
    assert_same_results(general, fast)


@pytest.mark.parametrize("rdtype", [np.float32, np.float64])
def test_return_stats_in_inference_are_the_running_statistics(rdtype):
    x = _data((3, 6, 5, 4), np.float32)
    rng = np.random.default_rng(3)
    rm = rng.standard_normal(6).astype(rdtype)
    rv = rng.uniform(0.5, 2.0, 6).astype(rdtype)
    y, mean, rstd = _ext.chan_fast(x, None, None, EPS, None, 0, 1, rm, rv, False, 0.1, None,
                                   get_num_threads, True)
    general = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=False, eps=GENERAL_EPS,
                                  return_stats=True)
    assert_same_results(general, (y, mean, rstd))
    np.testing.assert_allclose(rstd, 1 / np.sqrt(rv.astype(np.float64) + EPS), rtol=1e-6)


def test_truthy_return_stats_returns_the_statistics():
    # the public functions read return_stats by truth value, as the general path does
    x = _data((2, 4, 3, 3), np.float64)
    for r in (fastnorm.batch_norm(x, return_stats=1), fastnorm.group_norm(x, 2, return_stats=1),
              fastnorm.instance_norm(x, return_stats=1)):
        assert isinstance(r, tuple) and len(r) == 3


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_fast_path_equals_general_path(data):
    # any shape, channel axis, op and parameters: when the fast path takes a call,
    # its output, statistics and running statistics are the general path's bits;
    # when it declines, the public function still answers (or raises) as before
    ndim = data.draw(st.integers(2, 5), label="ndim")
    shape = tuple(data.draw(st.lists(st.sampled_from([1, 1, 2, 3, 5, 8, 16, 17]), min_size=ndim,
                                     max_size=ndim), label="shape"))
    cax = data.draw(st.sampled_from([1, -1, ndim - 1]), label="channel_axis")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    C = shape[cax]
    kind = data.draw(st.sampled_from(["bn_train", "bn_running", "bn_eval", "gn", "in"]), label="op")
    x = _data(shape, dtype, seed=data.draw(st.integers(0, 99), label="seed"))
    w, b = _params(C, dtype) if data.draw(st.booleans(), label="affine") else (None, None)
    out_kind = data.draw(st.sampled_from(["none", "buffer", "x"]), label="out")
    stats = data.draw(st.booleans(), label="return_stats")
    rm0, rv0 = np.linspace(-1, 1, C).astype(dtype), np.linspace(0.5, 2, C).astype(dtype)
    G = data.draw(st.sampled_from([g for g in (1, 2, 4, C) if C % g == 0]), label="groups")

    def call(eps, xin):
        out = None if out_kind == "none" else (np.empty_like(xin) if out_kind == "buffer" else xin)
        rm, rv = rm0.copy(), rv0.copy()
        try:
            if kind.startswith("bn"):
                kw = dict(running_mean=rm, running_var=rv) if kind != "bn_train" else {}
                r = fastnorm.batch_norm(xin, w, b, training=kind != "bn_eval" if kw else None, eps=eps,
                                        channel_axis=cax, out=out, return_stats=stats, **kw)
            elif kind == "gn":
                r = fastnorm.group_norm(xin, G, w, b, eps=eps, channel_axis=cax, out=out, return_stats=stats)
            else:
                r = fastnorm.instance_norm(xin, w, b, eps=eps, channel_axis=cax, out=out, return_stats=stats)
        except (ValueError, TypeError) as e:
            return type(e)
        r = r if isinstance(r, tuple) else (r,)
        return [a.copy() for a in r] + [rm, rv]

    fast = call(EPS, x.copy())
    general = call(GENERAL_EPS, x.copy())
    if isinstance(fast, type) or isinstance(general, type):
        assert fast == general
        return
    assert_same_results(general, fast)


def _backward_inputs(shape, cax, dtype, affine, seed):
    """x, dy and the weight (None unless affine) of a backward comparison."""
    x = _data(shape, dtype, seed=seed)
    dy = _data(shape, dtype, seed=seed + 1) - 3.0
    return x, dy, (_params(shape[cax], dtype)[0] if affine else None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,cax", BN_LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_backward_same_bits_as_general_path(shape, cax, dtype, training, affine):
    # chan_bwd_fast: the general path is taken when invstd comes as a list
    x, dy, w = _backward_inputs(shape, cax, dtype, affine, seed=4)
    _, mean, invstd = fastnorm.batch_norm(x, w, channel_axis=cax, return_stats=True)
    fast = _ext.chan_bwd_fast(dy, x, mean, invstd, w, cax, training, None, None, get_num_threads)
    assert fast is not None, "the compiled path declined a case it covers"
    general = fastnorm.batch_norm_backward(dy, x, mean, invstd.tolist(), w, channel_axis=cax, training=training)
    public = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, channel_axis=cax, training=training)
    assert_same_results(general, fast, public)


def _assert_declined(call, base, cases):
    """call(**args) returns None for base updated with each case, and writes
    nothing to out."""
    for d in cases:
        a = dict(base, **d)
        before = None if a["out"] is None else a["out"].copy()
        assert call(**a) is None, d
        if before is not None:
            np.testing.assert_array_equal(a["out"], before)


def test_batch_norm_backward_out_and_declined_cases():
    x = _data((4, 6, 5, 5), np.float32)
    dy = _data(x.shape, np.float32, seed=6)
    w = _params(6, np.float32)[0]
    _, m, s = fastnorm.batch_norm(x, w, return_stats=True)
    ref = fastnorm.batch_norm_backward(dy, x, m, s.tolist(), w)
    out = np.full_like(x, np.nan)
    got = _ext.chan_bwd_fast(dy, x, m, s, w, 1, True, out, None, get_num_threads)
    assert got[0] is out
    assert_same_results(ref, got)
    declined = [
        dict(out=dy), dict(out=x), dict(dy=dy.astype(np.float64)), dict(x=x[:, :, ::2], dy=dy[:, :, ::2]),
        dict(m=m[:3]), dict(s=list(s)), dict(w=w.astype(np.float64)), dict(cax=0), dict(cax=2),
        dict(training=1), dict(num_threads=0),
    ]
    _assert_declined(lambda dy, x, m, s, w, cax, training, out, num_threads: _ext.chan_bwd_fast(
        dy, x, m, s, w, cax, training, out, num_threads, get_num_threads),
        dict(dy=dy, x=x, m=m, s=s, w=w, cax=1, training=True, out=None, num_threads=None), declined)
    # the public function still computes in place of dy, and raises on bad input
    dyc = dy.copy()
    got = fastnorm.batch_norm_backward(dyc, x, m, s, w, out=dyc)
    assert got[0] is dyc
    np.testing.assert_array_equal(dyc, ref[0])
    with pytest.raises(ValueError):
        fastnorm.batch_norm_backward(dy, x, m[:3], s, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,cax", GROUPED)
@pytest.mark.parametrize("affine", [False, True])
def test_group_and_instance_norm_backward_same_bits_as_general_path(shape, groups, cax, dtype, affine):
    # group_bwd_fast: the general path is taken when rstd comes as a list
    x, dy, w = _backward_inputs(shape, cax, dtype, affine, seed=7)
    if groups == -1:
        _, mean, rstd = fastnorm.instance_norm(x, w, channel_axis=cax, return_stats=True)
        general = fastnorm.instance_norm_backward(dy, x, mean, rstd.tolist(), w, channel_axis=cax)
        public = fastnorm.instance_norm_backward(dy, x, mean, rstd, w, channel_axis=cax)
    else:
        _, mean, rstd = fastnorm.group_norm(x, groups, w, channel_axis=cax, return_stats=True)
        general = fastnorm.group_norm_backward(dy, x, groups, mean, rstd.tolist(), w, channel_axis=cax)
        public = fastnorm.group_norm_backward(dy, x, groups, mean, rstd, w, channel_axis=cax)
    fast = _ext.group_bwd_fast(dy, x, groups, mean, rstd, w, cax, None, None, get_num_threads)
    assert fast is not None, "the compiled path declined a case it covers"
    assert_same_results(general, fast, public)


def test_group_norm_backward_out_and_declined_cases():
    x = _data((4, 8, 5, 5), np.float32)
    dy = _data(x.shape, np.float32, seed=9)
    w = _params(8, np.float32)[0]
    _, m, r = fastnorm.group_norm(x, 4, w, return_stats=True)
    ref = fastnorm.group_norm_backward(dy, x, 4, m, r.tolist(), w)
    out = np.full_like(x, np.nan)
    got = _ext.group_bwd_fast(dy, x, 4, m, r, w, 1, out, None, get_num_threads)
    assert got[0] is out
    assert_same_results(ref, got)
    declined = [
        dict(out=dy), dict(out=x), dict(dy=dy.astype(np.float64)), dict(m=m[:, :2]), dict(r=r.tolist()),
        dict(groups=3), dict(groups=0), dict(groups=True), dict(w=w.astype(np.float64)), dict(cax=0),
        dict(num_threads=0),
    ]
    _assert_declined(lambda dy, x, groups, m, r, w, cax, out, num_threads: _ext.group_bwd_fast(
        dy, x, groups, m, r, w, cax, out, num_threads, get_num_threads),
        dict(dy=dy, x=x, groups=4, m=m, r=r, w=w, cax=1, out=None, num_threads=None), declined)
    dyc = dy.copy()
    got = fastnorm.group_norm_backward(dyc, x, 4, m, r, w, out=dyc)
    assert got[0] is dyc
    np.testing.assert_array_equal(dyc, ref[0])
    with pytest.raises(ValueError):
        fastnorm.group_norm_backward(dy, x, 3, m, r, w)


def _nhwc_memory(shape, dtype, seed=0):
    """An NCHW-shaped array in channels-last memory (NumPy's view of a PyTorch
    channels_last tensor)."""
    x = _data(shape, dtype, seed=seed)
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 16, 5, 7), (2, 8, 3), (1, 32, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("op", ["bn_train", "bn_eval", "group", "instance"])
def test_channels_last_memory_same_bits_as_general_path(shape, op, dtype):
    """chan_fast takes NCHW arrays in channels-last memory through the
    channels-last kernels: the general path's bits (an np.float64 eps sends the
    call there), outputs in x's memory order, out= of that order accepted."""
    x = _nhwc_memory(shape, dtype)
    assert not x.flags.c_contiguous
    C = shape[1]
    w, b = _params(C, dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)

    def call(eps, out=None):
        if op == "bn_train":
            return fastnorm.batch_norm(x, w, b, training=True, eps=eps, out=out, return_stats=True)
        if op == "bn_eval":
            return fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, eps=eps,
                                       out=out)
        if op == "group":
            return fastnorm.group_norm(x, 4, w, b, eps=eps, out=out, return_stats=True)
        return fastnorm.instance_norm(x, w, b, eps=eps, out=out, return_stats=True)

    groups = {"bn_train": 0, "bn_eval": 0, "group": 4, "instance": -1}[op]
    running = (rm, rv) if op == "bn_eval" else (None, None)
    assert _ext.chan_fast(x, w, b, 1e-5, None, groups, 1, *running, op != "bn_eval", 0.1, None,
                          get_num_threads) is not None, "the compiled path declined channels-last memory"
    fast, general = call(1e-5), call(np.float64(1e-5))
    assert_same_results(fast, general)
    y = fast[0] if isinstance(fast, tuple) else fast
    assert y.strides == x.strides
    out = np.empty_like(x)
    got = call(1e-5, out=out)
    assert (got[0] if isinstance(got, tuple) else got) is out
    np.testing.assert_array_equal(out, y)
    # the same data as an NHWC array with channel_axis=-1: the same kernel, the same bits
    nhwc = np.moveaxis(x, 1, -1)
    assert nhwc.flags.c_contiguous
    if op == "bn_eval":
        ref = fastnorm.batch_norm(nhwc, w, b, running_mean=rm, running_var=rv, training=False,
                                  channel_axis=-1)
        np.testing.assert_array_equal(np.moveaxis(ref, -1, 1), y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 16, 5, 7), (2, 8, 3), (1, 32, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("op", ["bn_train", "bn_eval", "group", "instance"])
def test_channels_last_memory_backward_same_bits_as_general_path(shape, op, dtype):
    """chan_bwd_fast and group_bwd_fast take x and dy both NCHW arrays in
    channels-last memory through the channels-last kernels: the general path's
    bits (an np.bool_ training or an np.int64 group count sends the call there),
    dx in x's memory order, out= of that order accepted; a dy of another order
    is left to the general path."""
    x = _nhwc_memory(shape, dtype)
    dy = _nhwc_memory(shape, dtype, seed=5)
    C = shape[1]
    w, b = _params(C, dtype)
    if op.startswith("bn"):
        _, m, v = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
        invstd = 1.0 / np.sqrt(v + 1e-5)
        fast = lambda dy, out=None: _ext.chan_bwd_fast(dy, x, m, invstd, w, 1, op == "bn_train", out, None,
                                                        get_num_threads)
        general = lambda: fastnorm.batch_norm_backward(dy, x, m, invstd, w, training=np.bool_(op == "bn_train"))
    else:
        groups = 4 if op == "group" else -1
        _, m, r = (fastnorm.group_norm(x, 4, w, b, return_stats=True) if op == "group"
                   else fastnorm.instance_norm(x, w, b, return_stats=True))
        fast = lambda dy, out=None: _ext.group_bwd_fast(dy, x, groups, m, r, w, 1, out, None, get_num_threads)
        general = lambda: (fastnorm.group_norm_backward(dy, x, np.int64(4), m, r, w) if op == "group"
                           else fastnorm.instance_norm_backward(dy, x, m, r, w, training=np.bool_(True)))
    got = fast(dy)
    assert got is not None, "the compiled path declined channels-last memory"
    assert_same_results(got, general())
    assert got[0].strides == x.strides
    out = np.empty_like(x)
    again = fast(dy, out)
    assert again[0] is out
    np.testing.assert_array_equal(out, got[0])
    assert fast(np.ascontiguousarray(dy)) is None
