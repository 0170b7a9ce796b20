"""Layer classes: modes, running statistics, gradients, PyTorch-compatible state."""

import numpy as np
import pytest

from fastnorm import BatchNorm, LayerNorm, RMSNorm

F64 = np.float64


def data(shape, seed, dtype=np.float32, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, size=shape).astype(dtype)


def _groups(x, channel_axis=1):
    x = np.moveaxis(np.asarray(x, F64), channel_axis, 0)
    return x.reshape(x.shape[0], -1)


def _bshape(ndim, C, channel_axis):
    s = [1] * ndim
    s[channel_axis] = C
    return s


def bn_eval_ref(x, layer):
    s = _bshape(x.ndim, layer.num_features, layer.channel_axis)
    y = (x.astype(F64) - layer.running_mean.reshape(s)) / np.sqrt(
        layer.running_var.astype(F64).reshape(s) + layer.eps)
    if layer.affine:
        y = y * layer.weight.reshape(s) + layer.bias.reshape(s)
    return y


def bn_train_ref(x, layer):
    X = _groups(x, layer.channel_axis)
    s = _bshape(x.ndim, layer.num_features, layer.channel_axis)
    y = (x.astype(F64) - X.mean(1).reshape(s)) / np.sqrt(X.var(1).reshape(s) + layer.eps)
    if layer.affine:
        y = y * layer.weight.reshape(s) + layer.bias.reshape(s)
    return y


def state_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert np.shape(a[k]) == np.shape(b[k])


# ------------------------------------------------------------- BatchNorm --
def test_batchnorm_defaults_and_state_keys():
    bn = BatchNorm(3)
    assert bn.training is True
    np.testing.assert_array_equal(bn.weight, np.ones(3))
    np.testing.assert_array_equal(bn.bias, np.zeros(3))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))
    assert bn.num_batches_tracked == 0
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert sd["weight"].shape == (3,) and sd["weight"].dtype == np.float32
    assert sd["num_batches_tracked"].shape == () and sd["num_batches_tracked"].dtype == np.int64
    assert list(BatchNorm(3, affine=False).state_dict()) == [
        "running_mean", "running_var", "num_batches_tracked"]
    assert BatchNorm(3, affine=False, track_running_stats=False).state_dict() == {}
    assert bn.eval() is bn and bn.training is False
    assert bn.train() is bn and bn.training is True
    bn.train(False)
    assert bn.training is False


@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_train_then_eval(channel_axis, dtype):
    shape = (6, 3, 4, 5) if channel_axis == 1 else (6, 4, 5, 3)
    bn = BatchNorm(3, channel_axis=channel_axis, dtype=dtype)
    bn.weight[:] = [0.5, 2.0, -1.0]
    bn.bias[:] = [0.1, -0.2, 0.3]
    x = data(shape, 0, dtype, loc=3.0, scale=2.0)
    y = bn(x)
    assert y.dtype == dtype and y.shape == x.shape
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, bn_train_ref(x, bn), **tol)
    X = _groups(x, channel_axis)
    m = 0.1
    np.testing.assert_allclose(bn.running_mean, m * X.mean(1), **tol)
    np.testing.assert_allclose(bn.running_var, (1 - m) + m * X.var(1, ddof=1), **tol)
    assert bn.num_batches_tracked == 1

    bn.eval()
    stats = bn.state_dict()
    x2 = data(shape, 1, dtype, loc=-1.0)
    y2 = bn(x2)
    np.testing.assert_allclose(y2, bn_eval_ref(x2, bn), **tol)
    # eval leaves the buffers alone, and differs from batch statistics
    state_equal(bn.state_dict(), stats)
    assert not np.allclose(y2, bn_train_ref(x2, bn), atol=1e-2)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.0, 1.0])
def test_batchnorm_momentum(momentum):
    bn = BatchNorm(4, momentum=momentum, dtype=np.float64)
    rm, rv = np.zeros(4), np.ones(4)
    for i in range(5):
        x = data((3 + i, 4, 2), 10 + i, np.float64, loc=i, scale=1 + i)
        bn(x)
        X = _groups(x)
        rm = (1 - momentum) * rm + momentum * X.mean(1)
        rv = (1 - momentum) * rv + momentum * X.var(1, ddof=1)
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-12)
    assert bn.num_batches_tracked == 5


def test_batchnorm_cumulative_average_momentum_none():
    bn = BatchNorm(2, momentum=None, dtype=np.float64)
    means, vars_ = [], []
    for i in range(4):
        x = data((5 + 3 * i, 2), 20 + i, np.float64, loc=2 * i, scale=1 + i)
        bn(x)
        means.append(x.mean(0))
        vars_.append(x.var(0, ddof=1))
        np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, np.mean(vars_, axis=0), rtol=1e-12)
    assert bn.num_batches_tracked == 4


def test_batchnorm_without_running_stats_always_uses_batch_stats():
    bn = BatchNorm(3, track_running_stats=False)
    assert bn.running_mean is None and bn.running_var is None
    assert bn.num_batches_tracked is None
    assert list(bn.state_dict()) == ["weight", "bias"]
    x = data((8, 3, 2), 30, loc=5.0, scale=3.0)
    y_train = bn(x)
    y_eval = bn.eval()(x)
    np.testing.assert_array_equal(y_train, y_eval)
    np.testing.assert_allclose(y_eval, bn_train_ref(x, bn), atol=2e-5)
    with pytest.raises(RuntimeError):
        bn.calibrate([x])


def test_batchnorm_failed_forward_changes_nothing():
    bn = BatchNorm(3)
    bn(data((4, 3), 0))
    before = bn.state_dict()
    for bad in (data((1, 3), 1),          # one value per channel in training
                data((4, 5), 2),          # wrong channel count
                data((4,), 3),            # too few dimensions
                np.ones((4, 3), np.int32)):
        with pytest.raises((ValueError, TypeError)):
            bn(bad)
        state_equal(bn.state_dict(), before)


def test_batchnorm_zero_size_batch_changes_nothing():
    bn = BatchNorm(3)
    bn(data((4, 3, 2), 5, loc=1.0))
    before = bn.state_dict()
    y = bn(np.empty((0, 3, 2), np.float32))
    assert y.shape == (0, 3, 2)
    state_equal(bn.state_dict(), before)
    assert bn.backward(np.empty((0, 3, 2), np.float32)).shape == (0, 3, 2)


def _fd(f, a, h=1e-6):
    a = np.array(a, F64)
    g = np.empty_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + h
        fp = f(a)
        a.flat[i] = old - h
        fm = f(a)
        a.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batchnorm_backward_matches_finite_differences(training, affine):
    bn = BatchNorm(3, affine=affine, dtype=np.float64, momentum=0.5)
    bn(data((5, 3, 2), 40, F64, loc=1.0))  # non-trivial running stats
    if affine:
        bn.weight[:] = [1.5, -0.5, 2.0]
        bn.bias[:] = [0.3, 0.0, -1.0]
    bn.train(training)
    x = data((4, 3, 2), 41, F64, scale=2.0)
    dy = data((4, 3, 2), 42, F64)
    snapshot = bn.state_dict()

    def loss(a):
        bn.load_state_dict(snapshot)  # the FD probes must not move the running stats
        return float((bn(a) * dy).sum())

    g = _fd(loss, x)
    bn.load_state_dict(snapshot)
    y = bn(x)
    dx = bn.backward(dy)
    assert dx.shape == x.shape and y.shape == x.shape
    np.testing.assert_allclose(dx, g, rtol=1e-6, atol=1e-8)
    if affine:
        xhat = (y - bn.bias.reshape(1, 3, 1)) / bn.weight.reshape(1, 3, 1)
        np.testing.assert_allclose(bn.weight_grad, (dy * xhat).sum((0, 2)), rtol=1e-10)
        np.testing.assert_allclose(bn.bias_grad, dy.sum((0, 2)), rtol=1e-10)
        assert bn.weight_grad.dtype == bn.weight.dtype
    else:
        assert bn.weight_grad is None and bn.bias_grad is None


def test_backward_errors():
    for layer, shape in ((BatchNorm(3), (4, 3)), (LayerNorm(3), (4, 3)), (RMSNorm(3), (4, 3))):
        with pytest.raises(RuntimeError):
            layer.backward(np.ones(shape, np.float32))
        layer(data(shape, 0))
        with pytest.raises(ValueError):
            layer.backward(np.ones((4, 2), np.float32))


def test_gradients_are_overwritten_not_accumulated():
    bn = BatchNorm(2)
    x = data((6, 2), 50)
    dy = data((6, 2), 51)
    bn(x)
    bn.backward(dy)
    first = bn.weight_grad.copy(), bn.bias_grad.copy()
    bn(x)
    bn.backward(dy)
    np.testing.assert_allclose(bn.weight_grad, first[0], rtol=1e-6)
    np.testing.assert_allclose(bn.bias_grad, first[1], rtol=1e-6)


def test_batchnorm_layer_dtype_differs_from_input():
    bn = BatchNorm(2)  # float32 buffers
    x = data((10, 2), 52, F64, loc=1.0)
    y = bn(x)
    assert y.dtype == F64 and bn.running_mean.dtype == np.float32
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(0), rtol=1e-6)
    bn.backward(np.ones_like(y))
    assert bn.weight_grad.dtype == np.float32


# -------------------------------------------------------------- calibrate --
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_calibrate_exact_population_statistics(channel_axis):
    rng = np.random.default_rng(60)
    bn = BatchNorm(3, channel_axis=channel_axis)
    bn.weight[:] = [1.0, 2.0, 3.0]
    shape = (4, 3, 5) if channel_axis == 1 else (4, 5, 3)
    batches = [rng.normal(100.0, 2.0, size=(n,) + shape[1:]).astype(np.float32)
               for n in (7, 1, 12, 3)]
    bn(batches[0])
    nbt = bn.num_batches_tracked
    weights = bn.weight.copy(), bn.bias.copy()
    assert bn.calibrate(iter(batches)) is bn  # a one-shot iterator is enough
    allx = np.concatenate(batches).astype(F64)
    X = _groups(allx, channel_axis)
    np.testing.assert_allclose(bn.running_mean, X.mean(1), rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, X.var(1, ddof=1), rtol=1e-4)
    np.testing.assert_array_equal(bn.weight, weights[0])
    np.testing.assert_array_equal(bn.bias, weights[1])
    assert bn.num_batches_tracked == nbt


def test_calibrate_errors_leave_stats_unchanged():
    bn = BatchNorm(3)
    bn(data((5, 3), 70))
    before = bn.state_dict()
    with pytest.raises(ValueError):
        bn.calibrate([data((5, 3), 71), data((5, 4), 72)])
    state_equal(bn.state_dict(), before)
    with pytest.raises(ValueError):
        bn.calibrate([])
    with pytest.raises(ValueError):
        bn.calibrate([data((1, 3), 73)])  # one value per channel: no unbiased variance
    state_equal(bn.state_dict(), before)


# ------------------------------------------------------- LayerNorm/RMSNorm --
def ln_ref(x, axes, w=None, b=None, eps=1e-5):
    x = np.asarray(x, F64)
    y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    shape = [n if i in axes else 1 for i, n in enumerate(x.shape)]
    if w is not None:
        y = y * np.asarray(w).reshape(shape)
    if b is not None:
        y = y + np.asarray(b).reshape(shape)
    return y


def test_layernorm_defaults_and_axes():
    ln = LayerNorm((4, 5))
    assert ln.training and ln.weight.shape == (4, 5) and ln.bias.shape == (4, 5)
    assert list(ln.state_dict()) == ["weight", "bias"]
    assert list(LayerNorm(4, bias=False).state_dict()) == ["weight"]
    assert LayerNorm(4, elementwise_affine=False).state_dict() == {}
    ln.weight[...] = data((4, 5), 1, loc=1.0)
    ln.bias[...] = data((4, 5), 2)
    x = data((2, 3, 4, 5), 3, loc=2.0)
    np.testing.assert_allclose(ln(x), ln_ref(x, (2, 3), ln.weight, ln.bias), atol=3e-5)
    # training and eval are the same computation
    np.testing.assert_array_equal(ln.eval()(x), ln.train()(x))
    # channels-first: normalize axis 1 of NCHW without transposes
    cf = LayerNorm(3, axis=1)
    cf.weight[:] = [1.0, 2.0, 3.0]
    x = data((2, 3, 4, 4), 4)
    np.testing.assert_allclose(cf(x), ln_ref(x, (1,), cf.weight, cf.bias), atol=3e-5)
    # non-contiguous tuple of axes, sizes listed in increasing axis order
    ln2 = LayerNorm((2, 4), axis=(-1, 0))
    x = data((2, 3, 4), 5)
    np.testing.assert_allclose(ln2(x), ln_ref(x, (0, 2)), atol=3e-5)
    with pytest.raises(ValueError):
        LayerNorm(3)(data((2, 4), 6))
    with pytest.raises(ValueError):
        LayerNorm((3, 4), axis=1)
    with pytest.raises(ValueError):
        LayerNorm(3, axis=3)(data((2, 3), 7))


@pytest.mark.parametrize("axis", [None, 1])
def test_layernorm_backward_matches_finite_differences(axis):
    ln = LayerNorm(3, axis=axis, dtype=F64, bias=True)
    ln.weight[:] = [0.5, 1.5, -2.0]
    ln.bias[:] = [1.0, 0.0, -1.0]
    shape = (2, 4, 3) if axis is None else (2, 3, 4)
    x = data(shape, 80, F64, loc=1.0)
    dy = data(shape, 81, F64)
    g = _fd(lambda a: float((ln(a) * dy).sum()), x)
    ln(x)
    np.testing.assert_allclose(ln.backward(dy), g, rtol=1e-6, atol=1e-8)
    gw = _fd(lambda w: float((ln_ref(x, (2,) if axis is None else (1,), w, ln.bias) * dy).sum()),
             ln.weight)
    np.testing.assert_allclose(ln.weight_grad, gw, rtol=1e-6, atol=1e-8)
    red = (0, 1) if axis is None else (0, 2)
    np.testing.assert_allclose(ln.bias_grad, dy.sum(red), rtol=1e-10)
    nob = LayerNorm(3, axis=axis, bias=False, dtype=F64)
    nob(x)
    nob.backward(dy)
    assert nob.bias_grad is None and nob.weight_grad.shape == (3,)


def test_rmsnorm_eps_default_and_backward():
    rms = RMSNorm(4)
    assert list(rms.state_dict()) == ["weight"]
    x32 = data((3, 4), 90, loc=0.5)
    ref = x32.astype(F64) / np.sqrt((x32.astype(F64) ** 2).mean(1, keepdims=True)
                                    + np.finfo(np.float32).eps)
    np.testing.assert_allclose(rms(x32), ref, rtol=2e-6)
    # eps=None is resolved per input dtype: float64 input uses float64's eps
    tiny = np.full((1, 4), 1e-5)
    want = tiny / np.sqrt(1e-10 + np.finfo(F64).eps)
    np.testing.assert_allclose(RMSNorm(4, dtype=F64)(tiny), want, rtol=1e-12)

    r = RMSNorm((2, 3), eps=0.01, dtype=F64)
    r.weight[...] = data((2, 3), 91, F64, loc=1.0)
    x = data((4, 2, 3), 92, F64)
    dy = data((4, 2, 3), 93, F64)
    g = _fd(lambda a: float((r(a) * dy).sum()), x)
    r(x)
    np.testing.assert_allclose(r.backward(dy), g, rtol=1e-6, atol=1e-8)
    rs = 1 / np.sqrt((x ** 2).mean((1, 2), keepdims=True) + 0.01)
    np.testing.assert_allclose(r.weight_grad, (dy * x * rs).sum(0), rtol=1e-10)
    assert r.bias_grad is None


# ----------------------------------------------------------------- state --
def test_state_round_trip_and_copies():
    a = BatchNorm(3, momentum=0.3)
    for i in range(3):
        a(data((6, 3, 2), 100 + i, loc=i))
    a.weight[:] = [1.0, 2.0, 3.0]
    sd = a.state_dict()
    assert sd["num_batches_tracked"] == 3
    sd["weight"][0] = 99.0  # a copy: the layer does not change
    assert a.weight[0] == 1.0
    sd["weight"][0] = 1.0

    b = BatchNorm(3)
    assert b.load_state_dict(sd) is b
    state_equal(b.state_dict(), a.state_dict())
    sd["running_mean"][:] = 123.0  # loading copied the values
    assert not (b.running_mean == 123.0).any()
    x = data((4, 3, 2), 110)
    np.testing.assert_array_equal(a.eval()(x), b.eval()(x))
    assert b.num_batches_tracked == 3 and isinstance(b.num_batches_tracked, int)

    # array-likes: lists and Python scalars
    c = BatchNorm(2).load_state_dict({"weight": [1, 2], "bias": [0.5, 0.5],
                                      "running_mean": (0.0, 1.0), "running_var": [2.0, 3.0],
                                      "num_batches_tracked": 7})
    assert c.weight.dtype == np.float32 and c.running_var.tolist() == [2.0, 3.0]
    assert c.num_batches_tracked == 7
    # the loaded buffers stay usable by training (writable, contiguous)
    c(data((5, 2), 111))
    assert c.num_batches_tracked == 8

    ln = LayerNorm((2, 3))
    ln.load_state_dict({"weight": np.arange(6.0).reshape(2, 3), "bias": np.ones((2, 3))})
    ln2 = LayerNorm((2, 3)).load_state_dict(ln.state_dict())
    state_equal(ln.state_dict(), ln2.state_dict())


BAD_BN_STATES = [
    ("missing", lambda sd: sd.pop("running_var")),
    ("unexpected", lambda sd: sd.update(extra=np.zeros(3))),
    ("shape", lambda sd: sd.update(running_var=np.ones(4))),
    ("shape2d", lambda sd: sd.update(bias=np.zeros((1, 3)))),
    ("nbt_shape", lambda sd: sd.update(num_batches_tracked=np.array([5]))),
    ("nbt_float", lambda sd: sd.update(num_batches_tracked=np.array(2.5))),
    ("nbt_negative", lambda sd: sd.update(num_batches_tracked=np.array(-1))),
    ("complex", lambda sd: sd.update(running_mean=np.zeros(3, complex))),
    ("strings", lambda sd: sd.update(bias=np.array(["a", "b", "c"]))),
]


@pytest.mark.parametrize("name,spoil", BAD_BN_STATES, ids=[b[0] for b in BAD_BN_STATES])
def test_bad_state_raises_and_leaves_layer_unchanged(name, spoil):
    bn = BatchNorm(3)
    bn(data((4, 3), 120, loc=2.0))
    before = bn.state_dict()
    sd = {k: v + 1 for k, v in before.items()}  # valid new values for every key ...
    spoil(sd)                                    # ... except one
    with pytest.raises((ValueError, TypeError)) as info:
        bn.load_state_dict(sd)
    assert "state_dict" in str(info.value) or "'" in str(info.value)
    state_equal(bn.state_dict(), before)


def test_bad_state_other_layers():
    ln = LayerNorm(4)
    before = ln.state_dict()
    with pytest.raises(ValueError):
        ln.load_state_dict({"weight": np.full(4, 2.0), "bias": np.zeros(5)})
    with pytest.raises(ValueError):
        ln.load_state_dict({"weight": np.full(4, 2.0)})
    with pytest.raises(TypeError):
        ln.load_state_dict([("weight", np.ones(4))])
    state_equal(ln.state_dict(), before)
    rms = RMSNorm(4)
    with pytest.raises(ValueError):
        rms.load_state_dict({"weight": np.ones(4), "bias": np.zeros(4)})
    rms.load_state_dict({"weight": np.ones(4), "bias": np.zeros(4)}, strict=False)
    np.testing.assert_array_equal(rms.weight, np.ones(4))


def test_constructor_errors():
    with pytest.raises(ValueError):
        BatchNorm(0)
    with pytest.raises(ValueError):
        BatchNorm(3, eps=-1.0)
    with pytest.raises(ValueError):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(TypeError):
        BatchNorm(3, dtype=np.int32)
    with pytest.raises(ValueError):
        LayerNorm(())
    with pytest.raises(ValueError):
        RMSNorm(4, eps=-1e-3)


# -------------------------------------------------------- PyTorch oracle --
@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_batchnorm_matches_torch(torch, momentum, channel_axis):
    C = 4
    tb = torch.nn.BatchNorm2d(C, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        tb.weight.copy_(torch.linspace(0.5, 2.0, C, dtype=torch.float64))
        tb.bias.copy_(torch.linspace(-1.0, 1.0, C, dtype=torch.float64))
    fb = BatchNorm(C, momentum=momentum, channel_axis=channel_axis, dtype=F64)
    fb.load_state_dict({k: v.detach().numpy() for k, v in tb.state_dict().items()})

    def to_fn(a):  # NCHW -> this layer's layout
        return a if channel_axis == 1 else np.moveaxis(a, 1, -1)

    for step, train in enumerate([True, True, True, False]):
        tb.train(train)
        fb.train(train)
        x = data((3, C, 5, 4), 130 + step, F64, loc=step, scale=1 + step)
        dy = data(x.shape, 140 + step, F64)
        tx = torch.tensor(x, requires_grad=True)
        ty = tb(tx)
        ty.backward(torch.tensor(dy))
        y = fb(to_fn(x))
        dx = fb.backward(to_fn(dy))
        np.testing.assert_allclose(y, to_fn(ty.detach().numpy()), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx, to_fn(tx.grad.numpy()), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fb.weight_grad, tb.weight.grad.numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(fb.bias_grad, tb.bias.grad.numpy(), rtol=1e-9, atol=1e-10)
        tb.weight.grad = tb.bias.grad = None
        for k, v in tb.state_dict().items():
            np.testing.assert_allclose(fb.state_dict()[k], v.numpy(), rtol=1e-10, err_msg=k)


def test_load_trained_torch_state_for_inference(torch):
    tb = torch.nn.BatchNorm2d(3)  # float32, as trained models are
    opt = torch.optim.SGD(tb.parameters(), lr=0.5)
    for i in range(4):
        x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(i)) * 3 + 2
        opt.zero_grad()
        (tb(x) ** 3).mean().backward()
        opt.step()
    tb.eval()
    fb = BatchNorm(3).load_state_dict({k: v.numpy() for k, v in tb.state_dict().items()})
    fb.eval()
    x = data((2, 3, 4, 4), 150, loc=2.0, scale=3.0)
    with torch.no_grad():
        want = tb(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fb(x), want, rtol=1e-5, atol=1e-5)
    # and back: fastnorm state loads into torch unchanged
    tb2 = torch.nn.BatchNorm2d(3)
    tb2.load_state_dict({k: torch.from_numpy(v) for k, v in fb.state_dict().items()})
    for k, v in tb.state_dict().items():
        assert torch.equal(v, tb2.state_dict()[k]), k


def test_layernorm_rmsnorm_match_torch(torch):
    shape = (3, 5, 6)
    x = data(shape, 160, F64, loc=1.0)
    dy = data(shape, 161, F64)
    tl = torch.nn.LayerNorm((5, 6), dtype=torch.float64)
    tr = torch.nn.RMSNorm(6, dtype=torch.float64)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(data((5, 6), 162, F64, loc=1.0)))
        tl.bias.copy_(torch.from_numpy(data((5, 6), 163, F64)))
        tr.weight.copy_(torch.from_numpy(data((6,), 164, F64, loc=1.0)))
    fl = LayerNorm((5, 6), dtype=F64).load_state_dict(
        {k: v.numpy() for k, v in tl.state_dict().items()})
    fr = RMSNorm(6, dtype=F64).load_state_dict({k: v.numpy() for k, v in tr.state_dict().items()})
    for t, f in ((tl, fl), (tr, fr)):
        tx = torch.tensor(x, requires_grad=True)
        ty = t(tx)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(f(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f.backward(dy), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(f.weight_grad, t.weight.grad.numpy(), rtol=1e-9, atol=1e-10)
        if t is tl:
            np.testing.assert_allclose(f.bias_grad, t.bias.grad.numpy(), rtol=1e-9, atol=1e-10)
    # float32 module with torch's default eps (None) gives the same outputs
    tr32 = torch.nn.RMSNorm(6)
    fr32 = RMSNorm(6).load_state_dict({k: v.numpy() for k, v in tr32.state_dict().items()})
    x32 = data((4, 6), 165, loc=0.1, scale=1e-3)
    with torch.no_grad():
        np.testing.assert_allclose(fr32(x32), tr32(torch.from_numpy(x32)).numpy(), rtol=1e-5)
