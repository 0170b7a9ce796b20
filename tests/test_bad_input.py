"""Bad input, table-driven, for every name in ``fastnorm.__all__``.

Each row of ``CASES`` names a public function, a way to spoil one argument of an
otherwise valid call, the documented exception and the argument the message must
name.  Every case also checks that nothing was written: ``out`` (filled with a
sentinel), the running statistics and every other array argument are
byte-for-byte unchanged after the failed call.

``test_every_public_name_is_covered`` fails when a new public name is added to
``fastnorm.__all__`` without rows here.
"""

import io
import re

import numpy as np
import pytest

import fastnorm

F32 = np.float32
N, C = 3, 4  # x is (N, C) for the 2-D cases: C channels / a row of length C


# ------------------------------------------------------------------ valid calls
def _valid(func):
    """A dict of valid named arguments for ``func`` (float32, shape (N, C))."""
    if func in _POSITIONAL_FAMILY:
        return _valid_family(func)
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((N, C)).astype(F32)
    out = np.full((N, C), 7.0, F32)
    if func == "moments":
        return dict(x=x, axis=-1)
    if func == "batch_norm":
        return dict(x=x, weight=np.full(C, 1.5, F32), bias=np.full(C, 0.5, F32),
                    running_mean=np.full(C, 0.25, F32), running_var=np.full(C, 2.0, F32),
                    training=True, momentum=0.1, eps=1e-5, channel_axis=-1, out=out)
    if func == "layer_norm":
        return dict(x=x, weight=np.full(C, 1.5, F32), bias=np.full(C, 0.5, F32), axis=-1,
                    eps=1e-5, out=out)
    if func == "rms_norm":
        return dict(x=x, weight=np.full(C, 1.5, F32), axis=-1, eps=1e-5, out=out)
    dy = rng.standard_normal((N, C)).astype(F32)
    if func == "batch_norm_backward":
        return dict(dy=dy, x=x, mean=np.zeros(C, F32), invstd=np.ones(C, F32),
                    weight=np.full(C, 1.5, F32), channel_axis=-1, training=True, out=out)
    if func == "layer_norm_backward":
        return dict(dy=dy, x=x, mean=np.zeros(N, F32), rstd=np.ones(N, F32),
                    weight=np.full(C, 1.5, F32), axis=-1, out=out)
    if func == "rms_norm_backward":
        return dict(dy=dy, x=x, rstd=np.ones(N, F32), weight=np.full(C, 1.5, F32), axis=-1,
                    out=out)
    raise KeyError(func)


S, G = 2, 2  # spatial length and number of groups of the (N, C, S) family cases


def _valid_family(func):
    """Valid named arguments for the rest of the family: x is (N, C, S) float32 for the
    channel ops (channel_axis=1), (N, C) for the fused residual ops."""
    rng = np.random.default_rng(4321)
    x3 = rng.standard_normal((N, C, S)).astype(F32)
    dy3 = rng.standard_normal((N, C, S)).astype(F32)
    out3 = np.full((N, C, S), 7.0, F32)
    w, b = np.full(C, 1.5, F32), np.full(C, 0.5, F32)
    if func == "group_norm":
        return dict(x=x3, num_groups=G, weight=w, bias=b, eps=1e-5, channel_axis=1, out=out3)
    if func == "group_norm_backward":
        return dict(dy=dy3, x=x3, num_groups=G, mean=np.zeros((N, G), F32),
                    rstd=np.ones((N, G), F32), weight=w, channel_axis=1, out=out3)
    if func == "instance_norm":
        return dict(x=x3, weight=w, bias=b, running_mean=np.full(C, 0.25, F32),
                    running_var=np.full(C, 2.0, F32), training=True, momentum=0.1, eps=1e-5,
                    channel_axis=1, out=out3)
    if func == "instance_norm_backward":
        return dict(dy=dy3, x=x3, mean=np.zeros((N, C), F32), rstd=np.ones((N, C), F32),
                    weight=w, training=True, channel_axis=1, out=out3)
    x = rng.standard_normal((N, C)).astype(F32)
    if func == "add_layer_norm":
        return dict(x=x, residual=rng.standard_normal((N, C)).astype(F32), weight=w, bias=b,
                    axis=-1, eps=1e-5, out=np.full((N, C), 7.0, F32),
                    residual_out=np.full((N, C), 9.0, F32))
    if func == "add_rms_norm":
        return dict(x=x, residual=rng.standard_normal((N, C)).astype(F32), weight=w, axis=-1,
                    eps=1e-5, out=np.full((N, C), 7.0, F32), residual_out=np.full((N, C), 9.0, F32))
    if func == "local_response_norm":
        return dict(x=x3, size=3, alpha=1e-2, beta=0.75, k=1.0, channel_axis=1, out=out3)
    if func == "local_response_norm_backward":
        return dict(dy=dy3, x=x3, size=3, alpha=1e-2, beta=0.75, k=1.0, channel_axis=1, out=out3)
    if func == "weight_norm":
        return dict(v=rng.standard_normal((C, 3)).astype(F32), g=np.full(C, 2.0, F32), axis=0)
    if func == "weight_norm_backward":
        return dict(dw=rng.standard_normal((C, 3)).astype(F32),
                    v=rng.standard_normal((C, 3)).astype(F32), g=np.full(C, 2.0, F32), axis=0)
    if func == "fold_batch_norm":
        return dict(weight=rng.standard_normal((C, 3)).astype(F32), bias=np.full(C, 0.5, F32),
                    running_mean=np.full(C, 0.25, F32), running_var=np.full(C, 2.0, F32),
                    bn_weight=np.full(C, 1.5, F32), bn_bias=np.full(C, -0.5, F32), eps=1e-5,
                    channel_axis=0)
    raise KeyError(func)


_POSITIONAL_FAMILY = {
    "group_norm": ("x", "num_groups", "weight", "bias"),
    "group_norm_backward": ("dy", "x", "num_groups", "mean", "rstd", "weight"),
    "instance_norm": ("x", "weight", "bias"),
    "instance_norm_backward": ("dy", "x", "mean", "rstd", "weight"),
    "add_layer_norm": ("x", "residual", "weight", "bias"),
    "add_rms_norm": ("x", "residual", "weight"),
    "local_response_norm": ("x", "size"),
    "local_response_norm_backward": ("dy", "x", "size"),
    "weight_norm": ("v", "g"),
    "weight_norm_backward": ("dw", "v", "g"),
    "fold_batch_norm": ("weight", "bias", "running_mean", "running_var", "bn_weight", "bn_bias"),
}

_POSITIONAL = {
    "moments": ("x",),
    "batch_norm": ("x", "weight", "bias"),
    "layer_norm": ("x", "weight", "bias"),
    "rms_norm": ("x", "weight"),
    "batch_norm_backward": ("dy", "x", "mean", "invstd", "weight"),
    "layer_norm_backward": ("dy", "x", "mean", "rstd", "weight"),
    "rms_norm_backward": ("dy", "x", "rstd", "weight"),
}
FUNCS = list(_POSITIONAL)
FORWARD_OUT = ["batch_norm", "layer_norm", "rms_norm"]
BACKWARD = ["batch_norm_backward", "layer_norm_backward", "rms_norm_backward"]
WITH_OUT = FORWARD_OUT + BACKWARD


def _call(func, d):
    d = dict(d)
    pos = _POSITIONAL[func] if func in _POSITIONAL else _POSITIONAL_FAMILY[func]
    args = []
    for k in pos:  # positional up to the first one a mutation removed
        if k not in d:
            break
        args.append(d.pop(k))
    return getattr(fastnorm, func)(*args, **d)


def _snapshot(d):
    return {k: (v.shape, v.dtype, v.tobytes()) for k, v in d.items() if isinstance(v, np.ndarray)}


def _names(msg, name):
    return re.search(r"(?<![A-Za-z0-9_])(%s)(?![A-Za-z0-9_])" % name, msg) is not None


def _expect(func, d, exc, name):
    before = _snapshot(d)
    with pytest.raises(exc) as info:
        _call(func, d)
    msg = str(info.value)
    assert _names(msg, name), f"{func}: message does not name {name!r}: {msg!r}"
    after = _snapshot(d)
    for k in before:
        assert after[k] == before[k], f"{func}: {k} was modified by a failed call ({msg})"


# ------------------------------------------------------------------ mutations
def _set(**kv):
    def m(d):
        d.update(kv)
    return m


def _astype(name, dt):
    def m(d):
        a = d[name]
        if np.dtype(dt).kind == "U":
            d[name] = a.astype(int).astype(dt)
        elif np.dtype(dt).names:
            d[name] = np.zeros(a.shape, dt)
        else:
            d[name] = a.astype(dt)
    return m


def _drop_out(m):
    def mm(d):
        m(d)
        d.pop("out", None)
    return mm


def _reshape(name, shape):
    def m(d):
        d[name] = np.full(shape, 1.0, d[name].dtype)
    return m


def _readonly(name):
    def m(d):
        a = d[name].copy()
        a.flags.writeable = False
        d[name] = a
    return m


def _noncontig(name):
    def m(d):
        a = d[name]
        big = np.zeros((a.size, 2), a.dtype)
        big[:, 0] = a.ravel()
        d[name] = big[:, 0].reshape(a.shape)
    return m


def _overlap(name, dest="out"):
    """``dest`` (default ``out``) and ``name`` partially overlap in one buffer (dest first,
    name after)."""
    def m(d):
        a, out = d[name], d[dest]
        shift = out.size - max(1, a.size // 2)          # name starts inside out's tail
        buf = np.empty(shift + a.size + out.size, out.dtype)
        o = buf[:out.size].reshape(out.shape)
        v = buf[shift:shift + a.size].reshape(a.shape)
        v[...] = a
        o_fill = np.full(out.shape, 7.0, out.dtype)
        # keep the sentinel where it does not cover the aliased argument
        o.ravel()[:shift] = o_fill.ravel()[:shift]
        d[name], d[dest] = v, o
    return m


def _overlap_dy_before_out():
    """dy starts before out (the direction in which a row kernel reads stale data)."""
    def m(d):
        dy, out = d["dy"], d["out"]
        buf = np.empty(dy.size + C, out.dtype)
        v = buf[:dy.size].reshape(dy.shape)
        v[...] = dy
        d["dy"], d["out"] = v, buf[C:].reshape(out.shape)
    return m


def _overlap_before_out(name):
    """``name`` starts C elements before ``out`` in one buffer (same size as out)."""
    def m(d):
        a, out = d[name], d["out"]
        buf = np.empty(a.size + C, out.dtype)
        v = buf[:a.size].reshape(a.shape)
        v[...] = a
        d[name], d["out"] = v, buf[C:].reshape(out.shape)
    return m


BAD_DTYPES = [np.int32, np.int64, np.bool_, np.complex64, np.complex128, object, "U3",
              [("a", "f4"), ("b", "f4")]]
_DT_ID = {id(d): np.dtype(d).name if not isinstance(d, list) else "structured" for d in BAD_DTYPES}

XFAIL_ON = False
CASES = []  # (func, id, mutate, exc, name, xfail_reason)


def case(func, cid, mutate, exc, name, xfail=None):
    CASES.append(pytest.param(func, mutate, exc, name, id=f"{func}-{cid}",
                              marks=[pytest.mark.xfail(strict=True, reason=xfail)] if xfail and XFAIL_ON else []))


for f in FUNCS:
    for dt in BAD_DTYPES:
        case(f, f"x-{_DT_ID[id(dt)]}", _drop_out(_astype("x", dt)), TypeError, "x")
        if f in WITH_OUT:
            # a valid float32 out: the bad x must still be refused without a write
            case(f, f"x-{_DT_ID[id(dt)]}-with-out", _astype("x", dt), TypeError, "x")
    if f in BACKWARD:
        for dt in BAD_DTYPES:
            case(f, f"dy-{_DT_ID[id(dt)]}", _astype("dy", dt), TypeError, "dy")
        case(f, "dy-shape", _reshape("dy", (N, C + 1)), ValueError, "dy")
    for nt, exc in [(0, ValueError), (-1, ValueError), (-(2 ** 40), ValueError),
                    (True, TypeError), (1.5, TypeError), ("2", TypeError)]:
        case(f, f"num_threads={nt!r}", _set(num_threads=nt), exc, "num_threads")

# 0-d and 1-d where not allowed
for f in ["batch_norm", "batch_norm_backward"]:
    for shp in [(), (C,)]:
        def m(d, shp=shp):
            for k in ("x", "dy"):
                if k in d:
                    d[k] = np.ones(shp, F32)
            d.pop("out", None)
        case(f, f"x-ndim{len(shp)}", m, ValueError, "x")
for f in ["layer_norm", "rms_norm", "layer_norm_backward", "rms_norm_backward", "moments"]:
    def m(d):
        for k in ("x", "dy"):
            if k in d:
                d[k] = np.ones((), F32)
        d.pop("out", None)
    case(f, "x-0d-axis-1", m, ValueError, "axis")

# axes
for f in ["layer_norm", "rms_norm", "moments", "layer_norm_backward", "rms_norm_backward"]:
    for ax in [2, -3, (0, 2), (1, 1), (-1, 1), (0, 0, 1)]:
        def m(d, ax=ax):
            d["axis"] = ax
            d.pop("weight", None)
            d.pop("bias", None)
            for k in ("mean", "rstd"):
                if k in d:
                    d[k] = np.ones(1, F32)
        case(f, f"axis={ax!r}", m, ValueError, "axis")
    case(f, "axis=1.5", _set(axis=1.5), TypeError, "axis")
for f in ["batch_norm", "batch_norm_backward"]:
    for ax in [2, -3, 100]:
        case(f, f"channel_axis={ax!r}", _set(channel_axis=ax), ValueError, "channel_axis")
    case(f, "channel_axis=(0, 1)", _set(channel_axis=(0, 1)), (TypeError, ValueError),
         "channel_axis")
    case(f, "channel_axis=(1, 1)", _set(channel_axis=(1, 1)), (TypeError, ValueError),
         "channel_axis")

# affine parameters
PARAMS = {"batch_norm": ["weight", "bias"], "layer_norm": ["weight", "bias"],
          "rms_norm": ["weight"], "batch_norm_backward": ["weight"],
          "layer_norm_backward": ["weight"], "rms_norm_backward": ["weight"]}
for f, names in PARAMS.items():
    for p in names:
        for shp in [(C + 1,), (C - 1,), (1, C), (N, C), ()]:
            case(f, f"{p}-shape{shp}", _reshape(p, shp), ValueError, p)
        for dt in [np.int32, np.bool_, np.complex64, object, "U3"]:
            case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)

# statistics given to backward
STATS = {"batch_norm_backward": [("mean", C), ("invstd", C)],
         "layer_norm_backward": [("mean", N), ("rstd", N)],
         "rms_norm_backward": [("rstd", N)]}
for f, names in STATS.items():
    for p, n in names:
        case(f, f"{p}-shape", _reshape(p, (n + 1,)), ValueError, p)
        case(f, f"{p}-2d", _reshape(p, (1, n)), ValueError, p)
        for dt in [np.int64, np.complex128, object]:
            case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)

# running statistics
for p in ["running_mean", "running_var"]:
    f = "batch_norm"
    case(f, f"{p}-shape", _reshape(p, (C + 1,)), ValueError, p)
    case(f, f"{p}-2d", _reshape(p, (1, C)), ValueError, p)
    for dt in [np.int32, np.bool_, np.complex64, object]:
        case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)
    case(f, f"{p}-readonly-training", _readonly(p), ValueError, p)
    case(f, f"{p}-noncontiguous-training", _noncontig(p), ValueError, p)
    case(f, f"{p}-list-training", lambda d, p=p: d.update({p: d[p].tolist()}), TypeError, p)
case("batch_norm", "running_mean-alone", lambda d: d.pop("running_var"), ValueError,
     "running_mean|running_var")
case("batch_norm", "inference-without-running", _set(running_mean=None, running_var=None,
                                                      training=False), ValueError, "running_mean|running_var")
case("batch_norm", "one-value-per-channel", lambda d: (d.update(x=d["x"][:1].copy()), d.pop("out")),
     ValueError, "x|channel")

# out
for f in WITH_OUT:
    case(f, "out-shape", _reshape("out", (N, C + 1)), ValueError, "out")
    case(f, "out-transposed", _reshape("out", (C, N)), ValueError, "out")
    case(f, "out-float64", _astype("out", np.float64), (TypeError, ValueError), "out")
    case(f, "out-int32", _astype("out", np.int32), (TypeError, ValueError), "out")
    case(f, "out-readonly", _readonly("out"), ValueError, "out")
    case(f, "out-list", lambda d: d.update(out=d["out"].tolist()), TypeError, "out")

    def m(d):
        buf = np.full(d["x"].size + 1, 7.0, F32)
        x = buf[:-1].reshape(d["x"].shape)
        x[...] = d["x"]
        d["x"], d["out"] = x, buf[1:].reshape(d["x"].shape)
    case(f, "out-partially-overlaps-x", m, ValueError, "out")

# out aliasing an argument other than x (partial overlap)
_ALIAS_BUGS = {
    ("layer_norm", "weight"): "out overlapping weight is not refused",
    ("layer_norm", "bias"): "out overlapping bias is not refused",
    ("rms_norm", "weight"): "out overlapping weight is not refused",
}
ALIASES = {"batch_norm": ["weight", "bias", "running_mean", "running_var"],
           "layer_norm": ["weight", "bias"], "rms_norm": ["weight"],
           "batch_norm_backward": ["dy", "weight", "mean", "invstd"],
           "layer_norm_backward": ["dy", "weight", "mean", "rstd"],
           "rms_norm_backward": ["dy", "weight", "rstd"]}
for f, names in ALIASES.items():
    for p in names:
        reason = _ALIAS_BUGS.get((f, p))
        case(f, f"out-overlaps-{p}", _overlap(p), ValueError, "out", xfail=reason)
for f in BACKWARD:
    case(f, "out-overlaps-dy-shifted-back", _overlap_dy_before_out(), ValueError, "out")

# eps and momentum
for f in ["batch_norm", "layer_norm", "rms_norm"]:
    for e in [-1e-5, -1.0, float("nan"), -float("inf")]:
        case(f, f"eps={e!r}", _set(eps=e), ValueError, "eps")
    case(f, "eps='a'", _set(eps="a"), TypeError, "eps")
for mo in [-0.1, 1.1, float("nan"), float("inf"), -float("inf")]:
    case("batch_norm", f"momentum={mo!r}", _set(momentum=mo), ValueError, "momentum")
case("batch_norm", "momentum=None", _set(momentum=None), TypeError, "momentum")
# a momentum outside [0, 1] is refused in inference too (validated up front)
case("batch_norm", "momentum=2-inference", _set(momentum=2.0, training=False), ValueError, "momentum")

# moments ddof
case("moments", "ddof='a'", _set(ddof="a"), (TypeError, ValueError), "ddof")


# ============================================= the rest of the family
# group_norm(_backward), instance_norm(_backward), add_layer_norm, add_rms_norm,
# local_response_norm(_backward), weight_norm(_backward), fold_batch_norm.
FAM_ARRAY = ["group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
             "add_layer_norm", "add_rms_norm", "local_response_norm", "local_response_norm_backward"]
FAM_BACKWARD = ["group_norm_backward", "instance_norm_backward", "local_response_norm_backward"]
FAM_CHANNEL = ["group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
               "local_response_norm", "local_response_norm_backward"]
FAM_ADD = ["add_layer_norm", "add_rms_norm"]
FAMILY = FAM_ARRAY + ["weight_norm", "weight_norm_backward", "fold_batch_norm"]
_FAM_ALIAS_BUGS = {  # (func, what) -> xfail reason, for overlaps the library does not refuse
    ("add_layer_norm", "weight"): "add_layer_norm: out overlapping weight is not refused",
    ("add_layer_norm", "bias"): "add_layer_norm: out overlapping bias is not refused",
    ("add_rms_norm", "weight"): "add_rms_norm: out overlapping weight is not refused",
    ("add_layer_norm", "residual_out-weight"): "add_layer_norm: residual_out overlapping weight "
                                               "is not refused",
    ("add_layer_norm", "residual_out-bias"): "add_layer_norm: residual_out overlapping bias "
                                             "is not refused",
    ("add_rms_norm", "residual_out-weight"): "add_rms_norm: residual_out overlapping weight "
                                             "is not refused",
}

for f in FAM_ARRAY:
    for dt in BAD_DTYPES:
        case(f, f"x-{_DT_ID[id(dt)]}", _drop_out(_astype("x", dt)), TypeError, "x")
        case(f, f"x-{_DT_ID[id(dt)]}-with-out", _astype("x", dt), TypeError, "x")
    for nt, exc in [(0, ValueError), (-1, ValueError), (-(2 ** 40), ValueError),
                    (True, TypeError), (1.5, TypeError), ("2", TypeError)]:
        case(f, f"num_threads={nt!r}", _set(num_threads=nt), exc, "num_threads")
    # out (every one of these functions takes one)
    shp = _valid_family(f)["x"].shape
    case(f, "out-shape", _reshape("out", shp[:-1] + (shp[-1] + 1,)), ValueError, "out")
    case(f, "out-transposed", _reshape("out", shp[::-1]), ValueError, "out")
    case(f, "out-float64", _astype("out", np.float64), (TypeError, ValueError), "out")
    case(f, "out-int32", _astype("out", np.int32), (TypeError, ValueError), "out")
    case(f, "out-readonly", _readonly("out"), ValueError, "out")
    case(f, "out-list", lambda d: d.update(out=d["out"].tolist()), TypeError, "out")
    case(f, "out-partially-overlaps-x", _overlap("x"), ValueError, "out")
    case(f, "out-partially-overlaps-x-shifted-back", _overlap_before_out("x"), ValueError, "out")

for f in FAM_BACKWARD:
    for dt in BAD_DTYPES:
        case(f, f"dy-{_DT_ID[id(dt)]}", _astype("dy", dt), TypeError, "dy")
    shp = _valid_family(f)["x"].shape
    case(f, "dy-shape", _reshape("dy", shp[:-1] + (shp[-1] + 1,)), ValueError, "dy")
    case(f, "dy-0d", _reshape("dy", ()), ValueError, "dy")

# 0-d and 1-d where not allowed (instance_norm also needs a spatial axis)
for f in FAM_CHANNEL:
    shapes = [(), (C,)] + ([(N, C)] if f == "instance_norm" else [])
    for shp in shapes:
        def m(d, shp=shp):
            for k in ("x", "dy"):
                if k in d:
                    d[k] = np.ones(shp, F32)
            d.pop("out", None)
        case(f, f"x-ndim{len(shp)}", m, ValueError, "x")

# channel_axis
for f in FAM_CHANNEL:
    for ax in [3, -4, 100]:
        case(f, f"channel_axis={ax!r}", _set(channel_axis=ax), ValueError, "channel_axis")
    case(f, "channel_axis=1.5", _set(channel_axis=1.5), TypeError, "channel_axis")
    case(f, "channel_axis=None", _set(channel_axis=None), (TypeError, ValueError), "channel_axis")
    case(f, "channel_axis=(0, 1)", _set(channel_axis=(0, 1)), (TypeError, ValueError),
         "channel_axis")
    case(f, "channel_axis=(1, 1)", _set(channel_axis=(1, 1)), (TypeError, ValueError),
         "channel_axis")
    case(f, "channel_axis=(1,)", _set(channel_axis=(1,)), (TypeError, ValueError),
         "channel_axis")
for f in ["group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward"]:
    for ax in [0, -3]:  # the batch axis
        case(f, f"channel_axis={ax!r}-batch-axis", _set(channel_axis=ax), ValueError,
             "channel_axis")

# num_groups
for f in ["group_norm", "group_norm_backward"]:
    for g, exc in [(0, ValueError), (-1, ValueError), (-2, ValueError), (3, ValueError),
                   (C + 1, ValueError), (2 * C, ValueError), (True, TypeError), (2.0, TypeError),
                   (1.5, TypeError), ("2", TypeError), (None, TypeError)]:
        case(f, f"num_groups={g!r}", _set(num_groups=g), exc, "num_groups")

# affine parameters (shape (C,) for the channel ops; x.shape[-1] == C for the fused ones)
FAM_PARAMS = {"group_norm": ["weight", "bias"], "group_norm_backward": ["weight"],
              "instance_norm": ["weight", "bias"], "instance_norm_backward": ["weight"],
              "add_layer_norm": ["weight", "bias"], "add_rms_norm": ["weight"]}
for f, names in FAM_PARAMS.items():
    for p in names:
        for shp in [(C + 1,), (C - 1,), (1, C), (N, C), ()]:
            case(f, f"{p}-shape{shp}", _reshape(p, shp), ValueError, p)
        for dt in [np.int32, np.bool_, np.complex64, object, "U3"]:
            case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)

# statistics given to backward
FAM_STATS = {"group_norm_backward": [("mean", (N, G)), ("rstd", (N, G))],
             "instance_norm_backward": [("mean", (N, C)), ("rstd", (N, C))]}
for f, names in FAM_STATS.items():
    for p, shp in names:
        case(f, f"{p}-shape", _reshape(p, (shp[0], shp[1] + 1)), ValueError, p)
        case(f, f"{p}-transposed", _reshape(p, shp[::-1]), ValueError, p)
        case(f, f"{p}-1d", _reshape(p, (shp[0] * shp[1],)), ValueError, p)
        case(f, f"{p}-0d", _reshape(p, ()), ValueError, p)
        for dt in [np.int64, np.bool_, np.complex128, object]:
            case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)
for p in ["mean", "rstd"]:
    # inference statistics are (C,): the training ones (N, C) are refused
    case("instance_norm_backward", f"{p}-(N, C)-inference", _set(training=False), ValueError, p
         if p == "mean" else "mean|rstd|invstd")
case("group_norm_backward", "stats-for-other-num_groups",
     _set(num_groups=1), ValueError, "mean")

# instance_norm: running statistics, momentum, training-only arguments
f = "instance_norm"
for p in ["running_mean", "running_var"]:
    case(f, f"{p}-shape", _reshape(p, (C + 1,)), ValueError, p)
    case(f, f"{p}-2d", _reshape(p, (1, C)), ValueError, p)
    case(f, f"{p}-0d", _reshape(p, ()), ValueError, p)
    for dt in [np.int32, np.bool_, np.complex64, object]:
        case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)
        case(f, f"{p}-{np.dtype(dt).name}-inference", _drop_out(lambda d, p=p, dt=dt: (
            _astype(p, dt)(d), d.update(training=False))), TypeError, p)
    case(f, f"{p}-readonly-training", _readonly(p), ValueError, p)
    case(f, f"{p}-noncontiguous-training", _noncontig(p), ValueError, p)
    case(f, f"{p}-list-training", lambda d, p=p: d.update({p: d[p].tolist()}), TypeError, p)
case(f, "running_mean-alone", lambda d: d.pop("running_var"), ValueError,
     "running_mean|running_var")
case(f, "running_var-alone", lambda d: d.pop("running_mean"), ValueError,
     "running_mean|running_var")
case(f, "inference-without-running", _set(running_mean=None, running_var=None, training=False),
     ValueError, "running_mean|running_var")
case(f, "one-spatial-value", lambda d: (d.update(x=d["x"][:, :, :1].copy()), d.pop("out")),
     ValueError, "x|spatial")
case(f, "return_stats-inference", _set(training=False, return_stats=True), ValueError,
     "return_stats")
for mo in [-0.1, 1.1, float("nan"), float("inf"), -float("inf")]:
    case(f, f"momentum={mo!r}", _set(momentum=mo), ValueError, "momentum")
case(f, "momentum=None", _set(momentum=None), TypeError, "momentum")
case(f, "momentum='a'", _set(momentum="a"), TypeError, "momentum")
case(f, "momentum=2-inference", _set(momentum=2.0, training=False), ValueError, "momentum")

# eps
for f in ["group_norm", "instance_norm", "add_layer_norm", "add_rms_norm"]:
    for e in [-1e-5, -1.0, float("nan"), -float("inf")]:
        case(f, f"eps={e!r}", _set(eps=e), ValueError, "eps")
    case(f, "eps='a'", _set(eps="a"), TypeError, "eps")
    case(f, "eps=[1e-5]", _set(eps=[1e-5]), TypeError, "eps")
case("add_layer_norm", "eps=None", _set(eps=None), TypeError, "eps",
     xfail="add_layer_norm(eps=None) silently uses finfo(x.dtype).eps (add_rms_norm's default) "
           "instead of refusing it as layer_norm does")
case("instance_norm", "eps=-1-inference", _set(eps=-1.0, training=False), ValueError, "eps")

# fused residual ops: residual, axis, residual_out
for f in FAM_ADD:
    for dt in BAD_DTYPES:
        case(f, f"residual-{_DT_ID[id(dt)]}", _astype("residual", dt), TypeError, "residual")
    for shp in [(N, C + 1), (C,), (1, C), (N, C, 1), ()]:
        case(f, f"residual-shape{shp}", _reshape("residual", shp), ValueError, "residual")
    case(f, "residual-None", _set(residual=None), TypeError, "residual")

    def m(d):
        for k in ("x", "residual"):
            d[k] = np.ones((), F32)
        for k in ("out", "residual_out", "weight", "bias"):
            d.pop(k, None)
    case(f, "x-0d-axis-1", m, ValueError, "axis")
    for ax in [2, -3, (0, 2), (1, 1), (-1, 1), (0, 0, 1)]:
        def m(d, ax=ax):
            d["axis"] = ax
            d.pop("weight", None)
            d.pop("bias", None)
        case(f, f"axis={ax!r}", m, ValueError, "axis")
    case(f, "axis=1.5", _set(axis=1.5), TypeError, "axis")
    case(f, "axis='a'", _set(axis="a"), TypeError, "axis")
    # residual_out
    case(f, "residual_out-shape", _reshape("residual_out", (N, C + 1)), ValueError, "residual_out")
    case(f, "residual_out-transposed", _reshape("residual_out", (C, N)), ValueError,
         "residual_out")
    case(f, "residual_out-float64", _astype("residual_out", np.float64), (TypeError, ValueError),
         "residual_out")
    case(f, "residual_out-int32", _astype("residual_out", np.int32), (TypeError, ValueError),
         "residual_out")
    case(f, "residual_out-readonly", _readonly("residual_out"), ValueError, "residual_out")
    case(f, "residual_out-list", lambda d: d.update(residual_out=d["residual_out"].tolist()),
         TypeError, "residual_out")
    case(f, "residual_out-is-out", lambda d: d.update(residual_out=d["out"]), ValueError,
         "residual_out")
    case(f, "residual_out-overlaps-out", _overlap("residual_out", "out"), ValueError,
         "residual_out")
    case(f, "out-overlaps-residual_out", _overlap("out", "residual_out"), ValueError,
         "residual_out")
    case(f, "residual_out-partially-overlaps-x", _overlap("x", "residual_out"), ValueError,
         "residual_out")
    case(f, "residual_out-partially-overlaps-residual", _overlap("residual", "residual_out"),
         ValueError, "residual_out")
    for p in ["weight", "bias"] if f == "add_layer_norm" else ["weight"]:
        case(f, f"residual_out-overlaps-{p}", _overlap(p, "residual_out"), ValueError,
             "residual_out", xfail=_FAM_ALIAS_BUGS.get((f, "residual_out-" + p)))

# local response normalization: size, alpha, beta, k
for f in ["local_response_norm", "local_response_norm_backward"]:
    for sz, exc in [(0, ValueError), (-1, ValueError), (-(2 ** 40), ValueError),
                    (1.5, TypeError), (3.0, TypeError), (True, TypeError), ("3", TypeError),
                    (None, TypeError)]:
        case(f, f"size={sz!r}", _set(size=sz), exc, "size")
    for p in ["alpha", "beta", "k"]:
        for v in [float("nan"), float("inf"), -float("inf")]:
            case(f, f"{p}={v!r}", _set(**{p: v}), ValueError, p)
        for v in ["a", None, True, 1j]:
            case(f, f"{p}={v!r}", _set(**{p: v}), TypeError, p)

# weight_norm(_backward)
for f in ["weight_norm", "weight_norm_backward"]:
    for dt in BAD_DTYPES:
        case(f, f"v-{_DT_ID[id(dt)]}", _astype("v", dt), TypeError, "v",
             xfail=f"{f}: a non-float v is refused with 'x must be a float32 or float64 "
                   "array', which does not name v")
    for dt in [np.int32, np.bool_, np.complex64, object, "U3"]:
        case(f, f"g-{np.dtype(dt).name}", _astype("g", dt), TypeError, "g")
    for shp in [(C + 1,), (1, C), (C, 3), (), (C, 1, 1)]:
        case(f, f"g-shape{shp}", _reshape("g", shp), ValueError, "g")
    case(f, "g-for-axis=None", _set(axis=None), ValueError, "g")
    case(f, "v-0d-axis=0", lambda d: (d.update(v=np.ones((), F32), g=np.ones((), F32)),
                                      d.pop("dw", None) is not None and d.update(dw=np.ones((), F32))),
         ValueError, "axis")
    for ax in [2, -3, 100]:
        case(f, f"axis={ax!r}", _set(axis=ax), ValueError, "axis")
    for ax in [1.5, True, "0", (0, 1), [0]]:
        case(f, f"axis={ax!r}", _set(axis=ax), TypeError, "axis")
for dt in BAD_DTYPES:
    case("weight_norm_backward", f"dw-{_DT_ID[id(dt)]}", _astype("dw", dt), TypeError, "dw")
for shp in [(C, 4), (3, C), (C * 3,), ()]:
    case("weight_norm_backward", f"dw-shape{shp}", _reshape("dw", shp), ValueError, "dw")

# fold_batch_norm
f = "fold_batch_norm"
for dt in BAD_DTYPES:
    case(f, f"weight-{_DT_ID[id(dt)]}", _astype("weight", dt), TypeError, "weight")
case(f, "weight-0d", _reshape("weight", ()), ValueError, "weight")
for p in ["bias", "running_mean", "running_var", "bn_weight", "bn_bias"]:
    for shp in [(C + 1,), (C - 1,), (1, C), (C, 3), ()]:
        case(f, f"{p}-shape{shp}", _reshape(p, shp), ValueError, p)
    for dt in [np.int32, np.bool_, np.complex64, object, "U3"]:
        case(f, f"{p}-{np.dtype(dt).name}", _astype(p, dt), TypeError, p)
for p in ["running_mean", "running_var"]:
    case(f, f"{p}-None", _set(**{p: None}), ValueError, p)
case(f, "running_var+eps<=0", lambda d: d["running_var"].__setitem__(0, -1.0), ValueError,
     "running_var")
case(f, "running_var=-eps", _set(eps=0.0, running_var=np.zeros(C, F32)), ValueError,
     "running_var")
for e in [-1e-5, -1.0, float("nan"), -float("inf")]:
    case(f, f"eps={e!r}", _set(eps=e), ValueError, "eps")
case(f, "eps='a'", _set(eps="a"), TypeError, "eps")
for ax in [2, -3, 100]:
    case(f, f"channel_axis={ax!r}", _set(channel_axis=ax), ValueError, "channel_axis")
case(f, "channel_axis=1.5", _set(channel_axis=1.5), TypeError, "channel_axis")
case(f, "channel_axis=(0, 1)", _set(channel_axis=(0, 1)), (TypeError, ValueError), "channel_axis",
     xfail="fold_batch_norm: a tuple channel_axis raises 'too many values to unpack', which "
           "does not name channel_axis")
case(f, "channel_axis=(0, 0)", _set(channel_axis=(0, 0)), (TypeError, ValueError), "channel_axis")

# out aliasing an argument other than x (partial overlap), both directions
FAM_ALIASES = {"group_norm": ["weight", "bias"],
               "group_norm_backward": ["dy", "weight", "mean", "rstd"],
               "instance_norm": ["weight", "bias", "running_mean", "running_var"],
               "instance_norm_backward": ["dy", "weight", "mean", "rstd"],
               "add_layer_norm": ["residual", "weight", "bias"],
               "add_rms_norm": ["residual", "weight"],
               "local_response_norm_backward": ["dy"]}
for f, names in FAM_ALIASES.items():
    for p in names:
        case(f, f"out-overlaps-{p}", _overlap(p), ValueError, "out",
             xfail=_FAM_ALIAS_BUGS.get((f, p)))
    for p in ["dy", "residual"]:
        if p in names:
            case(f, f"out-overlaps-{p}-shifted-back", _overlap_before_out(p), ValueError, "out",
                 xfail=_FAM_ALIAS_BUGS.get((f, p + "-back")))
for p in ["weight", "bias", "running_mean", "running_var"]:
    case("instance_norm", f"out-overlaps-{p}-inference",
         lambda d, p=p: (d.update(training=False), _overlap(p)(d)), ValueError, "out",
         xfail=_FAM_ALIAS_BUGS.get(("instance_norm", p + "-inference")))


@pytest.mark.parametrize("func,mutate,exc,name", CASES)
def test_bad_argument(func, mutate, exc, name):
    d = _valid(func)
    _call(func, d)  # the unspoiled call is valid
    d = _valid(func)
    mutate(d)
    _expect(func, d, exc, name)


def test_valid_baselines_really_write():
    """The sentinel checks above mean something only if a valid call writes out."""
    for f in WITH_OUT:
        d = _valid(f)
        before = d["out"].copy()
        _call(f, d)
        assert not np.array_equal(d["out"], before), f


@pytest.mark.parametrize("func", ["batch_norm", "layer_norm", "rms_norm"])
def test_noncontiguous_and_readonly_params_are_read_correctly(func):
    """Parameters are only read: a strided or read-only weight is accepted and used."""
    d = _valid(func)
    d["weight"] = np.array([0.5, 1.0, 2.0, 3.0], F32)
    d.pop("out")
    ref = _call(func, d)
    d2 = dict(d)
    _noncontig("weight")(d2)
    _readonly("weight")(d2)  # the read-only copy of a strided view is contiguous,
    np.testing.assert_array_equal(_call(func, d2), ref)
    d3 = dict(d)
    _noncontig("weight")(d3)
    assert not d3["weight"].flags.c_contiguous
    np.testing.assert_array_equal(_call(func, d3), ref)


# ------------------------------------------------------------ classes & misc
def _raises(exc, name, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert _names(str(info.value), name), f"message does not name {name!r}: {info.value}"


def _state(layer):
    sd = layer.state_dict()
    return {k: np.asarray(v).tobytes() for k, v in sd.items()}


@pytest.mark.parametrize("kw,exc,name", [
    (dict(num_features=0), ValueError, "num_features"),
    (dict(num_features=-3), ValueError, "num_features"),
    (dict(num_features=2.5), ValueError, "num_features"),
    (dict(num_features=C, eps=-1.0), ValueError, "eps"),
    (dict(num_features=C, eps=float("nan")), ValueError, "eps"),
    (dict(num_features=C, momentum=1.5), ValueError, "momentum"),
    (dict(num_features=C, momentum=-0.5), ValueError, "momentum"),
    (dict(num_features=C, momentum=float("nan")), ValueError, "momentum"),
    (dict(num_features=C, dtype=np.int32), TypeError, "dtype"),
    (dict(num_features=C, dtype=np.complex64), TypeError, "dtype"),
], ids=str)
def test_batchnorm_constructor(kw, exc, name):
    _raises(exc, name, fastnorm.BatchNorm, **kw)


@pytest.mark.parametrize("cls", ["LayerNorm", "RMSNorm"])
@pytest.mark.parametrize("kw,exc,name", [
    (dict(normalized_shape=0), ValueError, "normalized_shape"),
    (dict(normalized_shape=()), ValueError, "normalized_shape"),
    (dict(normalized_shape=(C, -1)), ValueError, "normalized_shape"),
    (dict(normalized_shape=C, eps=-1.0), ValueError, "eps"),
    (dict(normalized_shape=C, eps=float("nan")), ValueError, "eps"),
    (dict(normalized_shape=C, dtype=np.int64), TypeError, "dtype"),
    (dict(normalized_shape=C, axis=(0, 1)), ValueError, "axis"),
    (dict(normalized_shape=C, axis=1.5), ValueError, "axis"),
], ids=str)
def test_rownorm_constructor(cls, kw, exc, name):
    _raises(exc, name, getattr(fastnorm, cls), **kw)


LAYER_INPUTS = [
    ("int", lambda x: x.astype(np.int32), TypeError, r"x|input"),
    ("bool", lambda x: x.astype(bool), TypeError, r"x|input"),
    ("complex", lambda x: x.astype(np.complex64), TypeError, r"x|input"),
    ("object", lambda x: x.astype(object), TypeError, r"x|input"),
    ("str", lambda x: x.astype(int).astype("U3"), TypeError, r"x|input"),
    ("0d", lambda x: np.ones((), F32), ValueError, r"x|input|shape"),
    ("wrong-size", lambda x: np.ones((N, C + 1), F32), ValueError, r"x|input|shape"),
]


@pytest.mark.parametrize("what,mk,exc,name", LAYER_INPUTS, ids=[c[0] for c in LAYER_INPUTS])
@pytest.mark.parametrize("cls", ["BatchNorm", "LayerNorm", "RMSNorm"])
def test_layer_call_bad_input_changes_nothing(cls, what, mk, exc, name):
    layer = getattr(fastnorm, cls)(C, **({"channel_axis": -1} if cls == "BatchNorm" else {}))
    x = np.random.default_rng(0).standard_normal((N, C)).astype(F32)
    layer(x)
    layer.backward(np.ones_like(x))
    state = _state(layer)
    nbt = getattr(layer, "num_batches_tracked", None)
    grads = (layer.weight_grad.tobytes(),)
    _raises(exc, name, layer, mk(x))
    assert _state(layer) == state
    assert getattr(layer, "num_batches_tracked", None) == nbt
    # the cache of the last good forward survives: backward still works and is the same
    layer.backward(np.ones_like(x))
    assert (layer.weight_grad.tobytes(),) == grads


@pytest.mark.parametrize("kw,exc,name", [
    (dict(num_groups=0, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=-2, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=1.5, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=True, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=None, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=3, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=2 * C, num_channels=C), ValueError, "num_groups"),
    (dict(num_groups=2, num_channels=0), ValueError, "num_channels|num_groups"),
    (dict(num_groups=2, num_channels=-4), ValueError, "num_channels"),
    (dict(num_groups=2, num_channels=4.0), ValueError, "num_channels"),
    (dict(num_groups=2, num_channels=C, eps=-1.0), ValueError, "eps"),
    (dict(num_groups=2, num_channels=C, eps=float("nan")), ValueError, "eps"),
    (dict(num_groups=2, num_channels=C, eps="a"), (TypeError, ValueError), "eps"),
    (dict(num_groups=2, num_channels=C, dtype=np.int32), TypeError, "dtype"),
    (dict(num_groups=2, num_channels=C, dtype=np.complex64), TypeError, "dtype"),
    (dict(num_groups=2, num_channels=C, channel_axis=1.5), (TypeError, ValueError), "channel_axis"),
    (dict(num_groups=2, num_channels=C, channel_axis=(1, 2)), (TypeError, ValueError),
     "channel_axis"),
], ids=str)
def test_groupnorm_constructor(kw, exc, name):
    _raises(exc, name, fastnorm.GroupNorm, **kw)


@pytest.mark.parametrize("kw,exc,name", [
    (dict(num_features=0), ValueError, "num_features"),
    (dict(num_features=-3), ValueError, "num_features"),
    (dict(num_features=2.5), ValueError, "num_features"),
    (dict(num_features=True), ValueError, "num_features"),
    (dict(num_features=C, eps=-1.0), ValueError, "eps"),
    (dict(num_features=C, eps=float("nan")), ValueError, "eps"),
    (dict(num_features=C, momentum=1.5), ValueError, "momentum"),
    (dict(num_features=C, momentum=-0.5), ValueError, "momentum"),
    (dict(num_features=C, momentum=float("nan")), ValueError, "momentum"),
    (dict(num_features=C, momentum="a"), (TypeError, ValueError), "momentum"),
    (dict(num_features=C, momentum=True), (TypeError, ValueError), "momentum"),
    (dict(num_features=C, dtype=np.int32), TypeError, "dtype"),
    (dict(num_features=C, dtype=np.complex64), TypeError, "dtype"),
    (dict(num_features=C, channel_axis=1.5), (TypeError, ValueError), "channel_axis"),
    (dict(num_features=C, channel_axis=(1, 2)), (TypeError, ValueError), "channel_axis"),
], ids=str)
def test_instancenorm_constructor(kw, exc, name):
    _raises(exc, name, fastnorm.InstanceNorm, **kw)


def _grouped_layer(cls, channel_axis=1):
    if cls == "GroupNorm":
        return fastnorm.GroupNorm(2, C, channel_axis=channel_axis)
    return fastnorm.InstanceNorm(C, affine=True, track_running_stats=True, channel_axis=channel_axis)


GROUPED_INPUTS = [
    ("int", lambda x: x.astype(np.int32), TypeError, r"x|input"),
    ("bool", lambda x: x.astype(bool), TypeError, r"x|input"),
    ("complex", lambda x: x.astype(np.complex64), TypeError, r"x|input"),
    ("object", lambda x: x.astype(object), TypeError, r"x|input"),
    ("str", lambda x: x.astype(int).astype("U3"), TypeError, r"x|input"),
    ("structured", lambda x: np.zeros(x.shape, [("a", "f4"), ("b", "f4")]), TypeError, r"x|input"),
    ("0d", lambda x: np.ones((), F32), ValueError, r"x|input|shape|ndim"),
    ("1d", lambda x: np.ones((C,), F32), ValueError, r"x|input|shape|ndim"),
    ("wrong-channels", lambda x: np.ones((N, C + 1, S), F32), ValueError, r"x|input|shape|channels"),
    ("channels-on-last-axis", lambda x: np.ones((N, S, C), F32), ValueError,
     r"x|input|shape|channels"),
]


@pytest.mark.parametrize("what,mk,exc,name", GROUPED_INPUTS, ids=[c[0] for c in GROUPED_INPUTS])
@pytest.mark.parametrize("cls", ["GroupNorm", "InstanceNorm"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grouped_layer_call_bad_input_changes_nothing(cls, training, what, mk, exc, name):
    layer = _grouped_layer(cls)
    x = np.random.default_rng(0).standard_normal((N, C, S)).astype(F32)
    layer(x)
    layer.train(training)
    layer(x)
    layer.backward(np.ones_like(x))
    state = _state(layer)
    nbt = getattr(layer, "num_batches_tracked", None)
    grads = (layer.weight_grad.tobytes(), layer.bias_grad.tobytes())
    _raises(exc, name, layer, mk(x))
    assert _state(layer) == state
    assert getattr(layer, "num_batches_tracked", None) == nbt
    # the cache of the last good forward survives: backward still works and is the same
    layer.backward(np.ones_like(x))
    assert (layer.weight_grad.tobytes(), layer.bias_grad.tobytes()) == grads


def test_instancenorm_needs_a_spatial_axis_and_changes_nothing():
    inorm = _grouped_layer("InstanceNorm")
    inorm(np.random.default_rng(0).standard_normal((N, C, S)).astype(F32))
    state = _state(inorm)
    _raises(ValueError, r"x|input|ndim|shape", inorm, np.ones((N, C), F32))
    _raises(ValueError, r"x|spatial", inorm, np.ones((N, C, 1), F32))
    assert _state(inorm) == state


@pytest.mark.parametrize("cls", ["GroupNorm", "InstanceNorm"])
@pytest.mark.parametrize("cax", [0, 3, -4, 100])
def test_grouped_layer_bad_channel_axis_changes_nothing(cls, cax):
    layer = _grouped_layer(cls, channel_axis=cax)
    state = _state(layer)
    _raises(ValueError, "channel_axis", layer, np.ones((N, C, S), F32))
    assert _state(layer) == state


@pytest.mark.parametrize("cls", ["GroupNorm", "InstanceNorm"])
def test_grouped_layer_backward_errors(cls):
    layer = _grouped_layer(cls)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((N, C, S), F32))
    layer(np.random.default_rng(0).standard_normal((N, C, S)).astype(F32))
    _raises(ValueError, "dy", layer.backward, np.ones((N + 1, C, S), F32))
    _raises(ValueError, "dy", layer.backward, np.ones((N, C, S + 1), F32))
    _raises(TypeError, "dy", layer.backward, np.ones((N, C, S), np.int32))


def test_batchnorm_one_value_per_channel_changes_nothing():
    bn = fastnorm.BatchNorm(C)
    bn(np.random.default_rng(0).standard_normal((5, C)).astype(F32))
    state = _state(bn)
    _raises(ValueError, r"x|channel|value", bn, np.ones((1, C), F32))
    assert _state(bn) == state and bn.num_batches_tracked == 1


@pytest.mark.parametrize("cls", ["BatchNorm", "LayerNorm", "RMSNorm"])
def test_layer_backward_errors(cls):
    layer = getattr(fastnorm, cls)(C)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((N, C), F32))
    layer(np.random.default_rng(0).standard_normal((N, C, 2) if cls == "BatchNorm" else (N, C))
          .astype(F32))
    _raises(ValueError, "dy", layer.backward, np.ones((N + 1, C), F32))


def test_running_moments_bad_input_changes_nothing():
    _raises(ValueError, "axis", fastnorm.RunningMoments, axis="a")
    _raises(ValueError, "axis", fastnorm.RunningMoments, axis=())
    _raises(ValueError, "axis", fastnorm.RunningMoments, axis=1.5)
    rm = fastnorm.RunningMoments(axis=0)
    x = np.random.default_rng(0).standard_normal((6, C))
    rm.update(x)
    snap = (rm.count, rm.mean.tobytes(), rm.var().tobytes())
    for bad, exc, name in [(x.astype(np.int64), TypeError, "x"),
                           (x.astype(np.complex128), TypeError, "x"),
                           (x.astype(object), TypeError, "x"),
                           (np.ones((6, C + 1)), ValueError, "shape"),
                           (np.ones(()), ValueError, "axis"),
                           (np.ones((0, C), np.int32), TypeError, "x")]:
        _raises(exc, name, rm.update, bad)
        assert (rm.count, rm.mean.tobytes(), rm.var().tobytes()) == snap
    _raises(TypeError, "RunningMoments|other", rm.merge, 3)
    _raises(ValueError, "ddof", rm.var, ddof=-1)
    other = fastnorm.RunningMoments(axis=0).update(np.ones((2, C + 1)))
    _raises(ValueError, "shape", rm.merge, other)
    assert (rm.count, rm.mean.tobytes(), rm.var().tobytes()) == snap


@pytest.mark.parametrize("n,exc", [(0, ValueError), (-1, ValueError), (True, TypeError),
                                   (1.0, TypeError), (None, TypeError), ("4", TypeError)],
                         ids=repr)
def test_set_num_threads_bad(n, exc):
    before = fastnorm.get_num_threads()
    _raises(exc, "n", fastnorm.set_num_threads, n)
    assert fastnorm.get_num_threads() == before


@pytest.mark.parametrize("n,exc", [(-1, ValueError), (True, TypeError), (1.0, TypeError),
                                   (None, TypeError), ("4", TypeError)], ids=repr)
def test_set_buffer_cache_bad(n, exc):
    before = fastnorm._ext.buffer_cache_limit()[0]
    _raises(exc, "max_bytes", fastnorm.set_buffer_cache, n)
    assert fastnorm._ext.buffer_cache_limit()[0] == before


def test_get_num_threads_and_show_config_take_no_bad_arguments():
    with pytest.raises(TypeError):
        fastnorm.get_num_threads(4)
    s = io.StringIO()
    fastnorm.show_config(file=s)
    assert "fastnorm" in s.getvalue()
    with pytest.raises((TypeError, AttributeError)):
        fastnorm.show_config(file=3)


COVERED = set(FUNCS) | set(FAMILY) | {"BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm",
                                      "InstanceNorm", "RunningMoments", "set_num_threads",
                                      "get_num_threads", "set_buffer_cache", "show_config"}


def test_every_public_name_is_covered():
    missing = set(fastnorm.__all__) - COVERED
    assert not missing, f"public names without bad-input rows: {sorted(missing)}"
