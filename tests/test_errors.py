"""The error contract.

Each bad input raises the documented exception type, the message names the
offending argument, and nothing is written: ``out``, the running statistics,
x and the parameters are byte-for-byte unchanged afterwards.
"""

import re

import numpy as np
import pytest

import fastnorm

F32 = np.float32
C = 4  # channels / normalized length in the fixtures below


def base(func):
    """Valid arguments for ``func`` (x float32 of shape (3, C, 5) for BN, (3, 5, C)
    otherwise) with a sentinel-filled ``out`` and running statistics."""
    rng = np.random.default_rng(0)
    if func == "batch_norm":
        x = rng.standard_normal((3, C, 5)).astype(F32)
        kw = dict(weight=np.ones(C, F32), bias=np.zeros(C, F32),
                  running_mean=np.full(C, 0.25, F32), running_var=np.full(C, 2.0, F32),
                  training=True, out=np.full(x.shape, 7.0, F32))
    elif func == "layer_norm":
        x = rng.standard_normal((3, 5, C)).astype(F32)
        kw = dict(weight=np.ones(C, F32), bias=np.zeros(C, F32),
                  out=np.full(x.shape, 7.0, F32))
    elif func == "rms_norm":
        x = rng.standard_normal((3, 5, C)).astype(F32)
        kw = dict(weight=np.ones(C, F32), out=np.full(x.shape, 7.0, F32))
    elif func == "moments":
        x = rng.standard_normal((3, 5, C)).astype(F32)
        kw = dict(axis=-1)
    else:
        raise ValueError(func)
    return x, kw


def call(func, x, kw):
    f = getattr(fastnorm, func)
    kw = dict(kw)
    if func in ("batch_norm", "layer_norm"):
        return f(x, kw.pop("weight", None), kw.pop("bias", None), **kw)
    if func == "rms_norm":
        return f(x, kw.pop("weight", None), **kw)
    return f(x, **kw)


def readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def expect_error(func, x, kw, exc, name):
    arrays = {k: v for k, v in kw.items() if isinstance(v, np.ndarray)}
    arrays["x"] = x
    before = {k: (v.shape, v.dtype, v.tobytes()) for k, v in arrays.items()}
    with pytest.raises(exc) as info:
        call(func, x, kw)
    msg = str(info.value)
    assert re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(name), msg), (
        f"message does not name {name!r}: {msg!r}")
    for k, v in arrays.items():
        assert (v.shape, v.dtype, v.tobytes()) == before[k], f"{k} was modified by a failed call"


# ---------------------------------------------------------------- dtypes of x
BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128, object, "U3"]
ALL_FUNCS = ["batch_norm", "layer_norm", "rms_norm", "moments"]


@pytest.mark.parametrize("func", ALL_FUNCS)
@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_x_dtype_raises_typeerror(func, bad):
    x, kw = base(func)
    xb = x.astype(bad) if np.dtype(bad).kind != "U" else x.astype(int).astype(bad)
    kw.pop("out", None)  # (an out of x's dtype could not exist for these dtypes)
    expect_error(func, xb, kw, TypeError, "x")


@pytest.mark.parametrize("func", ["batch_norm", "layer_norm", "rms_norm"])
@pytest.mark.parametrize("bad", [np.int32, np.complex64, np.bool_], ids=lambda d: np.dtype(d).name)
def test_bad_x_dtype_with_out_writes_nothing(func, bad):
    x, kw = base(func)
    # out is a valid float32 buffer but x is not floating: TypeError, out untouched
    expect_error(func, x.astype(bad), kw, TypeError, "x")


@pytest.mark.parametrize("func", ALL_FUNCS)
def test_list_of_ints_is_typeerror(func):
    xl = [[[1, 2, 3, 4]] * 5] * 3
    _, kw = base(func)
    kw.pop("out", None)
    with pytest.raises(TypeError):
        call(func, xl, kw)


# ----------------------------------------------------------------------- eps
@pytest.mark.parametrize("func", ["batch_norm", "layer_norm", "rms_norm"])
@pytest.mark.parametrize("eps", [-1e-5, -1.0, float("nan")], ids=str)
def test_negative_eps(func, eps):
    x, kw = base(func)
    kw["eps"] = eps
    expect_error(func, x, kw, ValueError, "eps")


@pytest.mark.parametrize("func", ["batch_norm", "layer_norm", "rms_norm"])
def test_zero_eps_is_allowed(func):
    x, kw = base(func)
    kw["eps"] = 0.0
    y = call(func, x, kw)
    assert y is kw["out"] and np.all(np.isfinite(y))


# ----------------------------------------------------------------------- out
OUT_FUNCS = ["batch_norm", "layer_norm", "rms_norm"]


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_wrong_shape(func):
    x, kw = base(func)
    kw["out"] = np.full(x.shape[:-1] + (x.shape[-1] + 1,), 7.0, F32)
    expect_error(func, x, kw, ValueError, "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_same_size_other_shape(func):
    x, kw = base(func)
    kw["out"] = np.full(x.shape[::-1], 7.0, F32)
    expect_error(func, x, kw, ValueError, "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_broadcastable_shape(func):
    x, kw = base(func)
    kw["out"] = np.full((1,) + x.shape, 7.0, F32)
    expect_error(func, x, kw, ValueError, "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
@pytest.mark.parametrize("odt", [np.float64, np.float16, np.int32],
                         ids=lambda d: np.dtype(d).name)
def test_out_wrong_dtype(func, odt):
    x, kw = base(func)
    kw["out"] = np.full(x.shape, 7, odt)
    # the issue allows ValueError or TypeError for a wrong-dtype out
    expect_error(func, x, kw, (TypeError, ValueError), "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_float32_for_float64_x(func):
    x, kw = base(func)
    x = x.astype(np.float64)
    for k in ("weight", "bias", "running_mean", "running_var"):
        if k in kw:
            kw[k] = kw[k].astype(np.float64)
    expect_error(func, x, kw, (TypeError, ValueError), "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_readonly(func):
    x, kw = base(func)
    kw["out"] = readonly(kw["out"])
    expect_error(func, x, kw, ValueError, "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_readonly_broadcast_view(func):
    x, kw = base(func)
    kw["out"] = np.broadcast_to(np.float32(7.0), x.shape)
    expect_error(func, x, kw, ValueError, "out")


@pytest.mark.parametrize("func", OUT_FUNCS)
def test_out_not_an_ndarray(func):
    x, kw = base(func)
    kw["out"] = np.full(x.shape, 7.0, F32).tolist()
    with pytest.raises((TypeError, ValueError)):
        call(func, x, kw)


# ---------------------------------------------------------------------- axes
@pytest.mark.parametrize("func", ["layer_norm", "rms_norm", "moments"])
@pytest.mark.parametrize("axis", [3, -4, (0, 3), (1, 1), (-1, 2), (0, -3)], ids=str)
def test_bad_axis(func, axis):
    x, kw = base(func)
    kw["axis"] = axis
    for k in ("weight", "bias"):
        kw.pop(k, None)
    expect_error(func, x, kw, ValueError, "axis")


@pytest.mark.parametrize("func", ["layer_norm", "rms_norm"])
def test_axis_on_1d_out_of_range(func):
    x = np.arange(5, dtype=F32)
    with pytest.raises(ValueError, match="axis"):
        call(func, x, {"axis": 1})


@pytest.mark.parametrize("func", ["layer_norm", "rms_norm", "moments"])
def test_non_integer_axis(func):
    x, kw = base(func)
    for k in ("weight", "bias"):
        kw.pop(k, None)
    kw["axis"] = 1.5
    with pytest.raises((TypeError, ValueError)):
        call(func, x, kw)


# ---------------------------------------------------- layer/rms param shapes
@pytest.mark.parametrize("func,param", [("layer_norm", "weight"), ("layer_norm", "bias"),
                                        ("rms_norm", "weight")])
@pytest.mark.parametrize("pshape", [(C + 1,), (C - 1,), (1, C), (5, C), ()], ids=str)
def test_norm_param_wrong_shape(func, param, pshape):
    x, kw = base(func)
    kw[param] = np.full(pshape, 1.5, F32)
    expect_error(func, x, kw, ValueError, param)


@pytest.mark.parametrize("func,param", [("layer_norm", "weight"), ("layer_norm", "bias"),
                                        ("rms_norm", "weight")])
def test_norm_param_shape_must_follow_increasing_axis_order(func, param):
    x, kw = base(func)           # x shape (3, 5, C)
    kw["axis"] = (2, 0)          # params must have shape (3, C), not (C, 3)
    kw["weight"] = np.ones((3, C), F32)
    if "bias" in kw:
        kw["bias"] = np.zeros((3, C), F32)
    kw[param] = np.ones((C, 3), F32)
    expect_error(func, x, kw, ValueError, param)


@pytest.mark.parametrize("func", ["layer_norm", "rms_norm"])
def test_norm_param_for_multi_axis_accepts_increasing_order(func):
    x, kw = base(func)
    kw["axis"] = (2, 0)
    kw["weight"] = np.ones((3, C), F32)
    if "bias" in kw:
        kw["bias"] = np.zeros((3, C), F32)
    y = call(func, x, kw)
    assert y is kw["out"]


# ------------------------------------------------------------- batch_norm
def test_bn_x_1d():
    x, kw = base("batch_norm")
    x1 = x[0, 0]
    kw = {"out": np.full(x1.shape, 7.0, F32)}
    expect_error("batch_norm", x1, kw, ValueError, "x")


def test_bn_x_0d():
    with pytest.raises(ValueError):
        fastnorm.batch_norm(np.float32(1.0))


@pytest.mark.parametrize("ca", [3, -4, 10])
def test_bn_bad_channel_axis(ca):
    x, kw = base("batch_norm")
    kw["channel_axis"] = ca
    expect_error("batch_norm", x, kw, ValueError, "channel_axis")


@pytest.mark.parametrize("param", ["weight", "bias", "running_mean", "running_var"])
@pytest.mark.parametrize("pshape", [(C + 1,), (C - 1,), (1, C), (C, 1), ()], ids=str)
def test_bn_param_wrong_shape(param, pshape):
    x, kw = base("batch_norm")
    kw[param] = np.full(pshape, 1.5, F32)
    expect_error("batch_norm", x, kw, ValueError, param)


@pytest.mark.parametrize("param", ["running_mean", "running_var"])
def test_bn_param_wrong_shape_eval(param):
    x, kw = base("batch_norm")
    kw["training"] = False
    kw[param] = np.full(C + 1, 1.5, F32)
    expect_error("batch_norm", x, kw, ValueError, param)


def test_bn_channel_axis_changes_expected_param_length():
    x, kw = base("batch_norm")          # x (3, C, 5): params of length C fit axis 1 only
    kw["channel_axis"] = -1
    for k in ("bias", "running_mean", "running_var"):
        kw.pop(k)
    expect_error("batch_norm", x, kw, ValueError, "weight")


@pytest.mark.parametrize("missing", ["running_mean", "running_var", "both"])
def test_bn_eval_needs_running_stats(missing):
    x, kw = base("batch_norm")
    kw["training"] = False
    if missing in ("running_mean", "both"):
        kw.pop("running_mean")
    if missing in ("running_var", "both"):
        kw.pop("running_var")
    name = "running_var" if missing == "running_var" else "running_mean"
    expect_error("batch_norm", x, kw, ValueError, name)


@pytest.mark.parametrize("shape,ca", [((1, C), 1), ((1, C, 1, 1), 1), ((1, 1, 1, C), -1),
                                      ((1, C), -1), ((1, 1, C), 2)], ids=str)
@pytest.mark.parametrize("with_rs", [True, False])
def test_bn_training_one_value_per_channel(shape, ca, with_rs):
    x = np.arange(np.prod(shape), dtype=F32).reshape(shape)
    kw = dict(weight=np.ones(C, F32), bias=np.zeros(C, F32), training=True,
              channel_axis=ca, out=np.full(shape, 7.0, F32))
    if with_rs:
        kw.update(running_mean=np.full(C, 0.25, F32), running_var=np.full(C, 2.0, F32))
    arrays = {k: v for k, v in kw.items() if isinstance(v, np.ndarray)}
    before = {k: v.tobytes() for k, v in arrays.items()}
    with pytest.raises(ValueError):
        call("batch_norm", x, kw)
    for k, v in arrays.items():
        assert v.tobytes() == before[k], f"{k} modified"


def test_bn_training_none_one_value_per_channel():
    # training=None with no running stats means training -> ValueError too
    with pytest.raises(ValueError):
        fastnorm.batch_norm(np.ones((1, C), F32))


@pytest.mark.parametrize("param", ["running_mean", "running_var"])
def test_bn_training_readonly_running_stat(param):
    x, kw = base("batch_norm")
    kw[param] = readonly(kw[param])
    expect_error("batch_norm", x, kw, ValueError, param)


@pytest.mark.parametrize("param", ["running_mean", "running_var"])
def test_bn_training_noncontiguous_running_stat(param):
    x, kw = base("batch_norm")
    buf = np.full(2 * C, 3.0, F32)
    kw[param] = buf[::2]
    expect_error("batch_norm", x, kw, ValueError, param)
    assert np.all(buf == 3.0)


def test_bn_eval_accepts_readonly_and_strided_running_stats():
    x, kw = base("batch_norm")
    kw["training"] = False
    rm = readonly(kw["running_mean"])
    rv = np.full(2 * C, 2.0, F32)[::2]
    kw["running_mean"], kw["running_var"] = rm, rv
    y = call("batch_norm", x, kw)
    ref = (x.astype(np.float64) - 0.25) / np.sqrt(2.0 + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("func", ["batch_norm", "layer_norm", "rms_norm"])
def test_late_error_writes_nothing_to_out_inplace(func):
    """out=x with a bad parameter: x itself must stay untouched."""
    x, kw = base(func)
    kw["out"] = x
    kw["weight"] = np.ones(C + 2, F32)
    expect_error(func, x, kw, ValueError, "weight")
