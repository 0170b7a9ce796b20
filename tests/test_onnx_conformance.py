"""ONNX operator conformance of the forward semantics, with the attribute mapping.

Each ONNX operator's formula is implemented below in float64 NumPy straight from
the specification (independent of fastnorm and of PyTorch), and fastnorm is
called with the documented attribute mapping:

====================================  ==============================================
ONNX                                  fastnorm
====================================  ==============================================
GroupNormalization-21(num_groups,     group_norm(X, num_groups, scale, bias,
  epsilon), per-channel scale/bias      eps=epsilon)
InstanceNormalization(epsilon)        instance_norm(X, scale, B, eps=epsilon)
LRN(size, alpha, beta, bias)          local_response_norm(X, size, alpha=alpha,
                                        beta=beta, k=bias); for even size on
                                        X[:, ::-1] and the result reversed back
LayerNormalization(axis=k, epsilon)   layer_norm(X, Scale, B, axis=range(k, rank))
RMSNormalization(axis=k, epsilon)     rms_norm(X, scale, axis=range(k, rank))
BatchNormalization (inference)        batch_norm(X, scale, B, running_mean=mean,
                                        running_var=var, training=False)
BatchNormalization (training_mode=1,  batch_norm(..., training=True,
  momentum=m)                           momentum=1 - m)
com.microsoft.SkipLayerNormalization  add_layer_norm(input, skip (+ bias), gamma,
  (epsilon)                             beta, eps=epsilon) -> (output, sum)
====================================  ==============================================

When ``onnx`` and ``onnxruntime`` are importable, single-node models also run
through onnxruntime and are compared with fastnorm.
"""

import math

import numpy as np
import pytest

import fastnorm


# ---------------------------------------------------------------------------
# float64 NumPy transcriptions of the ONNX specification formulas
# ---------------------------------------------------------------------------
def onnx_group_normalization(X, scale, bias, num_groups, epsilon=1e-5):
    X = np.asarray(X, np.float64)
    N, C = X.shape[:2]
    xg = X.reshape(N, num_groups, -1)
    mean = xg.mean(axis=-1, keepdims=True)
    var = xg.var(axis=-1, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + epsilon)).reshape(X.shape)
    bs = (1, C) + (1,) * (X.ndim - 2)
    return y * np.reshape(scale, bs) + np.reshape(bias, bs)


def onnx_instance_normalization(X, scale, B, epsilon=1e-5):
    X = np.asarray(X, np.float64)
    axes = tuple(range(2, X.ndim))
    mean = X.mean(axis=axes, keepdims=True)
    var = X.var(axis=axes, keepdims=True)
    bs = (1, X.shape[1]) + (1,) * (X.ndim - 2)
    return np.reshape(scale, bs) * (X - mean) / np.sqrt(var + epsilon) + np.reshape(B, bs)


def onnx_lrn(X, size, alpha=1e-4, beta=0.75, bias=1.0):
    X = np.asarray(X, np.float64)
    C = X.shape[1]
    sq = np.zeros_like(X)
    for c in range(C):
        lo = max(0, c - math.floor((size - 1) / 2))
        hi = min(C - 1, c + math.ceil((size - 1) / 2))
        sq[:, c] = (X[:, lo:hi + 1] ** 2).sum(axis=1)
    return X / (bias + alpha / size * sq) ** beta


def onnx_layer_normalization(X, Scale, B, axis=-1, epsilon=1e-5):
    X = np.asarray(X, np.float64)
    axes = tuple(range(axis % X.ndim, X.ndim))
    mean = X.mean(axis=axes, keepdims=True)
    d = X - mean
    inv_std = 1.0 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + epsilon)
    return d * inv_std * Scale + B


def onnx_rms_normalization(X, scale, axis=-1, epsilon=1e-5):
    X = np.asarray(X, np.float64)
    axes = tuple(range(axis % X.ndim, X.ndim))
    return X / np.sqrt((X * X).mean(axis=axes, keepdims=True) + epsilon) * scale


def onnx_batch_normalization(X, scale, B, input_mean, input_var, epsilon=1e-5, momentum=0.9,
                             training_mode=0):
    X = np.asarray(X, np.float64)
    bs = (1, X.shape[1]) + (1,) * (X.ndim - 2)
    axes = (0,) + tuple(range(2, X.ndim))
    if training_mode:
        cur_mean = X.mean(axis=axes)
        cur_var = X.var(axis=axes)       # ONNX: population variance of the batch
        running_mean = input_mean * momentum + cur_mean * (1 - momentum)
        running_var = input_var * momentum + cur_var * (1 - momentum)
        mean, var = cur_mean, cur_var
    else:
        mean, var = input_mean, input_var
        running_mean = running_var = None
    y = (X - np.reshape(mean, bs)) / np.sqrt(np.reshape(var, bs) + epsilon)
    return y * np.reshape(scale, bs) + np.reshape(B, bs), running_mean, running_var


def ort_skip_layer_normalization(inp, skip, gamma, beta=None, bias=None, epsilon=1e-12):
    s = np.asarray(inp, np.float64) + skip
    if bias is not None:
        s = s + bias
    mean = s.mean(axis=-1, keepdims=True)
    var = ((s - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (s - mean) / np.sqrt(var + epsilon) * gamma
    if beta is not None:
        y = y + beta
    return y, s


def _close(actual, expected, dtype, scale=1.0):
    rtol, atol = (1e-5, 2e-5) if np.dtype(dtype) == np.float32 else (1e-11, 1e-11)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=atol * scale)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def fdt(request):
    return np.dtype(request.param)


@pytest.fixture
def gen():
    return np.random.default_rng(20240521)


# ---------------------------------------------------------------------------
# fastnorm vs the ONNX formulas
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape, G", [((2, 6, 5), 3), ((2, 8, 3, 4), 2), ((1, 4, 2, 2, 3), 4),
                                      ((3, 6, 4, 4), 1)])
@pytest.mark.parametrize("epsilon", [1e-5, 0.1])
def test_group_normalization(gen, fdt, shape, G, epsilon):
    X = gen.normal(size=shape).astype(fdt)
    scale = gen.normal(size=shape[1]).astype(fdt)
    bias = gen.normal(size=shape[1]).astype(fdt)
    ref = onnx_group_normalization(X, scale, bias, G, epsilon)
    _close(fastnorm.group_norm(X, G, scale, bias, eps=epsilon), ref, fdt)
    # channels-last input, same values
    Xl = np.moveaxis(X, 1, -1).copy()
    yl = fastnorm.group_norm(Xl, G, scale, bias, eps=epsilon, channel_axis=-1)
    _close(np.moveaxis(yl, -1, 1), ref, fdt)


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5), (1, 2, 3, 2, 4)])
def test_instance_normalization(gen, fdt, shape):
    X = (gen.normal(size=shape) * 3 + 2).astype(fdt)
    scale = gen.normal(size=shape[1]).astype(fdt)
    B = gen.normal(size=shape[1]).astype(fdt)
    _close(fastnorm.instance_norm(X, scale, B, eps=1e-3),
           onnx_instance_normalization(X, scale, B, 1e-3), fdt)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("shape", [(2, 7, 3, 3), (2, 5, 4)])
def test_lrn(gen, fdt, size, shape):
    X = gen.normal(size=shape).astype(fdt)
    alpha, beta, bias = 0.3, 0.75, 1.5
    ref = onnx_lrn(X, size, alpha, beta, bias)
    if size % 2:
        y = fastnorm.local_response_norm(X, size, alpha=alpha, beta=beta, k=bias)
    else:
        # ONNX puts the extra channel of an even window after c, PyTorch before
        y = fastnorm.local_response_norm(X[:, ::-1], size, alpha=alpha, beta=beta, k=bias)[:, ::-1]
    _close(y, ref, fdt)


def test_lrn_even_size_differs_from_torch_window(gen):
    # guards the mapping above: without the reversal an even window is not ONNX's
    X = gen.normal(size=(1, 6, 2))
    y = fastnorm.local_response_norm(X, 2, alpha=1.0, beta=1.0, k=1.0)
    assert not np.allclose(y, onnx_lrn(X, 2, 1.0, 1.0, 1.0))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -2])
def test_layer_normalization(gen, fdt, axis):
    X = gen.normal(size=(2, 3, 4, 5)).astype(fdt)
    k = axis % 4
    Scale = gen.normal(size=X.shape[k:]).astype(fdt)
    B = gen.normal(size=X.shape[k:]).astype(fdt)
    y = fastnorm.layer_norm(X, Scale, B, axis=tuple(range(k, 4)), eps=1e-4)
    _close(y, onnx_layer_normalization(X, Scale, B, axis, 1e-4), fdt, scale=2)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_rms_normalization(gen, fdt, axis):
    X = gen.normal(size=(3, 4, 6)).astype(fdt)
    k = axis % 3
    scale = gen.normal(size=X.shape[k:]).astype(fdt)
    y = fastnorm.rms_norm(X, scale, axis=tuple(range(k, 3)), eps=1e-5)
    _close(y, onnx_rms_normalization(X, scale, axis, 1e-5), fdt, scale=2)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)])
def test_batch_normalization_inference(gen, fdt, shape):
    C = shape[1]
    X = gen.normal(size=shape).astype(fdt)
    scale, B, mean = (gen.normal(size=C).astype(fdt) for _ in range(3))
    var = gen.uniform(0.2, 3.0, size=C).astype(fdt)
    y = fastnorm.batch_norm(X, scale, B, running_mean=mean, running_var=var, training=False,
                            eps=1e-3)
    _close(y, onnx_batch_normalization(X, scale, B, mean, var, 1e-3)[0], fdt, scale=2)


@pytest.mark.parametrize("m", [0.9, 0.5, 0.0, 1.0])
def test_batch_normalization_training_momentum(gen, m):
    X = gen.normal(size=(6, 3, 4)) * 2 + 1
    scale, B, mean = (gen.normal(size=3) for _ in range(3))
    var = gen.uniform(0.5, 2.0, size=3)
    ref_y, ref_rm, ref_rv = onnx_batch_normalization(X, scale, B, mean, var, 1e-5, m, 1)
    rm, rv = mean.copy(), var.copy()
    y = fastnorm.batch_norm(X, scale, B, running_mean=rm, running_var=rv, training=True,
                            momentum=1 - m, eps=1e-5)
    np.testing.assert_allclose(y, ref_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm, ref_rm, rtol=1e-12, atol=1e-12)
    # The running variance follows PyTorch: the batch term is the unbiased
    # variance (n / (n - 1) times ONNX's population variance); the momentum
    # mapping is the same.
    n = X.size // 3
    cur_var = X.var(axis=(0, 2))
    np.testing.assert_allclose(rv, var * m + cur_var * n / (n - 1) * (1 - m), rtol=1e-12)


@pytest.mark.parametrize("with_bias", [False, True])
def test_skip_layer_normalization(gen, fdt, with_bias):
    inp = gen.normal(size=(2, 3, 16)).astype(fdt)
    skip = gen.normal(size=(2, 3, 16)).astype(fdt)
    gamma, beta, bias = (gen.normal(size=16).astype(fdt) for _ in range(3))
    ref_y, ref_s = ort_skip_layer_normalization(inp, skip, gamma, beta,
                                                bias if with_bias else None, 1e-12)
    # SkipLayerNormalization's optional bias is added to the sum: fold it into skip
    sk = (skip + bias).astype(fdt) if with_bias else skip
    y, s = fastnorm.add_layer_norm(inp, sk, gamma, beta, eps=1e-12)
    _close(s, ref_s, fdt, scale=4)
    _close(y, ref_y, fdt, scale=2)


# ---------------------------------------------------------------------------
# onnxruntime
# ---------------------------------------------------------------------------
def _ort_run(op, inputs, outputs, attrs, opset, domain=""):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    names = [n for n, _ in inputs]
    node = helper.make_node(op, [n if a is not None else "" for n, a in inputs], outputs,
                            domain=domain, **attrs)
    tin = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
           for n, a in inputs if a is not None]
    tout = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph([node], op, tin, tout)
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = min(model.ir_version, 10)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime without this operator/opset
        pytest.skip(f"onnxruntime cannot run {op}-{opset}: {exc}")
    feeds = {n: a.astype(np.float32) for n, a in inputs if a is not None}
    del names
    return sess.run(outputs, feeds)


def _ort_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-4)


def test_ort_group_normalization(gen):
    X = gen.normal(size=(2, 6, 4, 5)).astype(np.float32)
    s, b = gen.normal(size=6).astype(np.float32), gen.normal(size=6).astype(np.float32)
    (y,) = _ort_run("GroupNormalization", [("X", X), ("scale", s), ("bias", b)], ["Y"],
                    dict(num_groups=3, epsilon=1e-4), 21)
    _ort_close(fastnorm.group_norm(X, 3, s, b, eps=1e-4), y)


def test_ort_instance_normalization(gen):
    X = gen.normal(size=(2, 3, 4, 5)).astype(np.float32)
    s, b = gen.normal(size=3).astype(np.float32), gen.normal(size=3).astype(np.float32)
    (y,) = _ort_run("InstanceNormalization", [("X", X), ("scale", s), ("B", b)], ["Y"],
                    dict(epsilon=1e-3), 17)
    _ort_close(fastnorm.instance_norm(X, s, b, eps=1e-3), y)


@pytest.mark.parametrize("size", [3, 5])   # onnxruntime rejects even sizes
def test_ort_lrn(gen, size):
    X = gen.normal(size=(2, 7, 3, 3)).astype(np.float32)
    (y,) = _ort_run("LRN", [("X", X)], ["Y"],
                    dict(size=size, alpha=0.5, beta=0.75, bias=2.0), 17)
    if size % 2:
        ours = fastnorm.local_response_norm(X, size, alpha=0.5, beta=0.75, k=2.0)
    else:
        ours = fastnorm.local_response_norm(X[:, ::-1], size, alpha=0.5, beta=0.75, k=2.0)[:, ::-1]
    _ort_close(ours, y)


@pytest.mark.parametrize("axis", [1, -1, -2])
def test_ort_layer_normalization(gen, axis):
    X = gen.normal(size=(2, 3, 4, 5)).astype(np.float32)
    k = axis % 4
    S = gen.normal(size=X.shape[k:]).astype(np.float32)
    B = gen.normal(size=X.shape[k:]).astype(np.float32)
    (y,) = _ort_run("LayerNormalization", [("X", X), ("Scale", S), ("B", B)], ["Y"],
                    dict(axis=axis, epsilon=1e-5), 17)
    _ort_close(fastnorm.layer_norm(X, S, B, axis=tuple(range(k, 4))), y)


@pytest.mark.parametrize("axis", [1, -1])
def test_ort_rms_normalization(gen, axis):
    X = gen.normal(size=(2, 3, 8)).astype(np.float32)
    k = axis % 3
    S = gen.normal(size=X.shape[k:]).astype(np.float32)
    (y,) = _ort_run("RMSNormalization", [("X", X), ("scale", S)], ["Y"],
                    dict(axis=axis, epsilon=1e-5), 23)
    _ort_close(fastnorm.rms_norm(X, S, axis=tuple(range(k, 3)), eps=1e-5), y)


def test_ort_batch_normalization(gen):
    X = gen.normal(size=(2, 3, 4, 4)).astype(np.float32)
    s, b, m = (gen.normal(size=3).astype(np.float32) for _ in range(3))
    v = gen.uniform(0.2, 2.0, size=3).astype(np.float32)
    (y,) = _ort_run("BatchNormalization", [("X", X), ("scale", s), ("B", b), ("mean", m),
                                           ("var", v)], ["Y"], dict(epsilon=1e-3), 15)
    _ort_close(fastnorm.batch_norm(X, s, b, running_mean=m, running_var=v, training=False,
                                   eps=1e-3), y)


@pytest.mark.parametrize("with_bias", [False, True])
def test_ort_skip_layer_normalization(gen, with_bias):
    inp = gen.normal(size=(2, 3, 16)).astype(np.float32)
    skip = gen.normal(size=(2, 3, 16)).astype(np.float32)
    gamma, beta, bias = (gen.normal(size=16).astype(np.float32) for _ in range(3))
    y, _, _, s = _ort_run("SkipLayerNormalization",
                          [("input", inp), ("skip", skip), ("gamma", gamma), ("beta", beta),
                           ("bias", bias if with_bias else None)],
                          ["output", "mean", "inv_std_var", "input_skip_bias_sum"],
                          dict(epsilon=1e-5), 17, domain="com.microsoft")
    sk = skip + bias if with_bias else skip
    ours_y, ours_s = fastnorm.add_layer_norm(inp, sk, gamma, beta, eps=1e-5)
    _ort_close(ours_s, s)
    _ort_close(ours_y, y)

