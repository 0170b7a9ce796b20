"""GroupNorm / InstanceNorm layer classes: forward, backward, modes, state_dict.

Forward values are checked against float64 NumPy formulas (independent of
fastnorm), gradients against central finite differences, and the behaviour
against torch.nn.GroupNorm / InstanceNorm{1,2,3}d when torch is installed.
"""

import numpy as np
import pytest

from fastnorm.layers_grouped import GroupNorm, InstanceNorm
from reference import assert_close


def ref_groups(x, G, w=None, b=None, eps=1e-5, cax=1):
    x = np.moveaxis(np.asarray(x, np.float64), cax, 1)
    N, C = x.shape[:2]
    xg = x.reshape(N, G, -1)
    m = xg.mean(2, keepdims=True)
    v = ((xg - m) ** 2).mean(2, keepdims=True)
    y = ((xg - m) / np.sqrt(v + eps)).reshape(x.shape)
    bs = (1, C) + (1,) * (x.ndim - 2)
    if w is not None:
        y = y * np.asarray(w, np.float64).reshape(bs) + np.asarray(b, np.float64).reshape(bs)
    return np.moveaxis(y, 1, cax)


def ref_running(x, rm, rv, w=None, b=None, eps=1e-5, cax=1):
    x = np.moveaxis(np.asarray(x, np.float64), cax, 1)
    C = x.shape[1]
    bs = (1, C) + (1,) * (x.ndim - 2)
    y = (x - np.asarray(rm, np.float64).reshape(bs)) / np.sqrt(
        np.asarray(rv, np.float64).reshape(bs) + eps)
    if w is not None:
        y = y * np.asarray(w, np.float64).reshape(bs) + np.asarray(b, np.float64).reshape(bs)
    return np.moveaxis(y, 1, cax)


def _fd_input(layer, x, dy, h=1e-6):
    dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        dx[i] = (np.sum(dy * layer(xp)) - np.sum(dy * layer(xm))) / (2 * h)
    return dx


# ---------------------------------------------------------------------------
# GroupNorm
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cax", [1, -1])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_forward_backward(rng, dtype, cax, affine):
    shape = (2, 6, 3, 4) if cax == 1 else (2, 3, 4, 6)
    gn = GroupNorm(3, 6, affine=affine, channel_axis=cax, dtype=dtype)
    assert gn.training
    if affine:
        gn.weight[...] = rng.normal(size=6)
        gn.bias[...] = rng.normal(size=6)
    x = rng.normal(size=shape).astype(dtype)
    y = gn(x)
    assert y.dtype == dtype
    assert_close(y, ref_groups(x, 3, gn.weight, gn.bias, cax=cax), dtype)
    dy = rng.normal(size=shape).astype(dtype)
    dx = gn.backward(dy)
    assert dx.shape == x.shape and dx.dtype == dtype
    if affine:
        xh = ref_groups(x, 3, cax=cax)
        red = tuple(a for a in range(4) if a != cax % 4)
        assert gn.weight_grad.shape == (6,) and gn.weight_grad.dtype == dtype
        assert_close(gn.weight_grad, (dy * xh).sum(red), dtype, scale=10)
        assert_close(gn.bias_grad, dy.astype(np.float64).sum(red), dtype, scale=10)
    else:
        assert gn.weight_grad is None and gn.bias_grad is None
    # eval changes nothing for GroupNorm
    np.testing.assert_array_equal(gn.eval()(x), y)


def test_group_norm_backward_finite_differences(rng):
    gn = GroupNorm(2, 4, eps=1e-3, dtype=np.float64)
    gn.weight[...] = rng.normal(size=4)
    gn.bias[...] = rng.normal(size=4)
    x = rng.normal(size=(2, 4, 3))
    dy = rng.normal(size=x.shape)
    gn(x)
    dx = gn.backward(dy)
    np.testing.assert_allclose(dx, _fd_input(gn, x, dy), rtol=1e-6, atol=1e-7)


def test_group_norm_constructor_errors():
    with pytest.raises(ValueError):
        GroupNorm(4, 6)
    with pytest.raises(ValueError):
        GroupNorm(0, 6)
    with pytest.raises(ValueError):
        GroupNorm(2, 0)
    with pytest.raises(ValueError):
        GroupNorm(2, 4, eps=-1)
    with pytest.raises(TypeError):
        GroupNorm(2, 4, dtype=np.int32)


def test_group_norm_input_errors(rng):
    gn = GroupNorm(2, 4)
    with pytest.raises(RuntimeError):
        gn.backward(np.ones((2, 4, 3)))
    with pytest.raises(ValueError):
        gn(np.ones((2, 6, 3), np.float32))
    with pytest.raises(ValueError):
        gn(np.ones(4, np.float32))
    with pytest.raises(TypeError):
        gn(np.ones((2, 4, 3), np.int32))
    gn(np.ones((2, 4, 3), np.float32))
    with pytest.raises(ValueError):
        gn.backward(np.ones((2, 4, 5), np.float32))
    with pytest.raises(ValueError):
        GroupNorm(2, 4, channel_axis=0)(np.ones((4, 4, 3), np.float32))


def test_group_norm_state_dict():
    gn = GroupNorm(2, 4, dtype=np.float64)
    sd = gn.state_dict()
    assert list(sd) == ["weight", "bias"]
    assert GroupNorm(2, 4, affine=False).state_dict() == {}
    sd["weight"][0] = 99.0           # a copy
    assert gn.weight[0] == 1.0
    gn.load_state_dict({"weight": [1.0, 2.0, 3.0, 4.0], "bias": np.zeros(4, np.float32)})
    assert gn.weight.dtype == np.float64 and gn.weight.tolist() == [1.0, 2.0, 3.0, 4.0]
    before = gn.state_dict()
    for bad in ({"weight": np.ones(5), "bias": np.zeros(4)},
                {"weight": np.ones(4)},
                {"weight": np.ones(4), "bias": np.zeros(4), "running_mean": np.zeros(4)}):
        with pytest.raises(ValueError):
            gn.load_state_dict(bad)
        after = gn.state_dict()
        assert all(np.array_equal(before[k], after[k]) for k in before)


def test_group_norm_torch(rng):
    torch = pytest.importorskip("torch")
    tg = torch.nn.GroupNorm(4, 8, eps=1e-4)
    with torch.no_grad():
        tg.weight.copy_(torch.randn(8, generator=torch.Generator().manual_seed(0)))
        tg.bias.copy_(torch.randn(8, generator=torch.Generator().manual_seed(1)))
    gn = GroupNorm(4, 8, eps=1e-4)
    gn.load_state_dict({k: v.detach().numpy() for k, v in tg.state_dict().items()})
    assert list(gn.state_dict()) == list(tg.state_dict())
    x = rng.normal(size=(3, 8, 5, 5)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tg(tx)
    ty.backward(torch.tensor(dy))
    y = gn(x)
    dx = gn.backward(dy)
    assert_close(y, ty.detach().numpy().astype(np.float64), np.float32, scale=5)
    assert_close(dx, tx.grad.numpy().astype(np.float64), np.float32, scale=5)
    assert_close(gn.weight_grad, tg.weight.grad.numpy().astype(np.float64), np.float32, scale=50)
    assert_close(gn.bias_grad, tg.bias.grad.numpy().astype(np.float64), np.float32, scale=50)
    # and back into torch
    tg2 = torch.nn.GroupNorm(4, 8)
    tg2.load_state_dict({k: torch.from_numpy(v) for k, v in gn.state_dict().items()})
    assert torch.equal(tg2.weight, tg.weight)
    # channels-last layer on the transposed data
    gl = GroupNorm(4, 8, eps=1e-4, channel_axis=-1).load_state_dict(gn.state_dict())
    yl = gl(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert_close(yl.transpose(0, 3, 1, 2), ty.detach().numpy().astype(np.float64), np.float32, 5)


# ---------------------------------------------------------------------------
# InstanceNorm
# ---------------------------------------------------------------------------
def test_instance_norm_defaults():
    inorm = InstanceNorm(3)
    assert inorm.training and not inorm.affine and not inorm.track_running_stats
    assert inorm.weight is None and inorm.bias is None and inorm.running_mean is None
    assert inorm.state_dict() == {}
    t = InstanceNorm(3, affine=True, track_running_stats=True, dtype=np.float64)
    sd = t.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert sd["num_batches_tracked"].dtype == np.int64 and sd["num_batches_tracked"].shape == ()
    assert sd["running_var"].tolist() == [1.0, 1.0, 1.0]
    assert list(InstanceNorm(3, track_running_stats=True).state_dict()) == [
        "running_mean", "running_var", "num_batches_tracked"]
    assert list(InstanceNorm(3, affine=True).state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("cax", [1, -1])
@pytest.mark.parametrize("momentum", [0.1, 0.6])
def test_instance_norm_train_eval(rng, dtype, cax, momentum):
    shape = (4, 3, 5, 2) if cax == 1 else (4, 5, 2, 3)
    inorm = InstanceNorm(3, momentum=momentum, affine=True, track_running_stats=True,
                         channel_axis=cax, dtype=dtype)
    inorm.weight[...] = rng.normal(size=3)
    inorm.bias[...] = rng.normal(size=3)
    rm = np.zeros(3)
    rv = np.ones(3)
    for step in range(3):
        x = (rng.normal(size=shape) * (step + 1) + step).astype(dtype)
        y = inorm(x)
        assert_close(y, ref_groups(x, 3, inorm.weight, inorm.bias, cax=cax), dtype)
        xs = np.moveaxis(x.astype(np.float64), cax, 1).reshape(4, 3, -1)
        rm = (1 - momentum) * rm + momentum * xs.mean(2).mean(0)
        rv = (1 - momentum) * rv + momentum * xs.var(2, ddof=1).mean(0)
        assert_close(inorm.running_mean, rm, dtype)
        assert_close(inorm.running_var, rv, dtype)
    assert inorm.num_batches_tracked == 0          # as torch's InstanceNorm
    inorm.eval()
    x = rng.normal(size=shape).astype(dtype)
    snap = inorm.running_mean.copy()
    y = inorm(x)
    np.testing.assert_array_equal(inorm.running_mean, snap)
    assert_close(y, ref_running(x, rm, rv, inorm.weight, inorm.bias, cax=cax), dtype, scale=5)
    dy = rng.normal(size=shape).astype(dtype)
    dx = inorm.backward(dy)
    bs = [1] * 4
    bs[cax] = 3
    scale = (inorm.weight.astype(np.float64) / np.sqrt(rv + 1e-5)).reshape(bs)
    assert_close(dx, dy * scale, dtype, scale=5)
    xh = ref_running(x, rm, rv, cax=cax)
    red = tuple(a for a in range(4) if a != cax % 4)
    assert_close(inorm.weight_grad, (dy * xh).sum(red), dtype, scale=20)
    assert_close(inorm.bias_grad, dy.astype(np.float64).sum(red), dtype, scale=20)


def test_instance_norm_no_tracking_eval_uses_input_stats(rng):
    inorm = InstanceNorm(2).eval()
    x = rng.normal(size=(2, 2, 6))
    assert_close(inorm(x), ref_groups(x, 2), np.float64)


def test_instance_norm_momentum_none_does_not_update(rng):
    inorm = InstanceNorm(2, momentum=None, track_running_stats=True)
    inorm(rng.normal(size=(2, 2, 6)).astype(np.float32) + 5)
    assert inorm.running_mean.tolist() == [0.0, 0.0]
    assert inorm.running_var.tolist() == [1.0, 1.0]


def test_instance_norm_backward_finite_differences(rng):
    inorm = InstanceNorm(3, affine=True, eps=1e-3, dtype=np.float64)
    inorm.weight[...] = rng.normal(size=3)
    inorm.bias[...] = rng.normal(size=3)
    x = rng.normal(size=(2, 3, 4))
    dy = rng.normal(size=x.shape)
    inorm(x)
    dx = inorm.backward(dy)
    np.testing.assert_allclose(dx, _fd_input(inorm, x, dy), rtol=1e-6, atol=1e-7)


def test_instance_norm_errors_leave_state(rng):
    inorm = InstanceNorm(3, track_running_stats=True)
    with pytest.raises(ValueError):
        inorm(np.ones((2, 3, 1), np.float32))      # one value per instance
    with pytest.raises(ValueError):
        inorm(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError):
        inorm(np.ones((2, 4, 5), np.float32))
    assert inorm.running_mean.tolist() == [0.0] * 3 and inorm.running_var.tolist() == [1.0] * 3
    with pytest.raises(ValueError):
        InstanceNorm(3, momentum=2.0)
    with pytest.raises(ValueError):
        InstanceNorm(0)
    with pytest.raises(RuntimeError):
        InstanceNorm(3).backward(np.ones((1, 3, 2)))
    before = inorm.state_dict()
    with pytest.raises(ValueError):
        inorm.load_state_dict({"running_mean": np.ones(3), "running_var": np.ones(4),
                               "num_batches_tracked": 0})
    with pytest.raises(ValueError):
        inorm.load_state_dict({"running_mean": np.ones(3), "running_var": np.ones(3)})
    with pytest.raises(TypeError):
        inorm.load_state_dict({"running_mean": np.ones(3), "running_var": np.ones(3),
                               "num_batches_tracked": 1.5})
    after = inorm.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("ndim", [3, 4, 5])
def test_instance_norm_torch(rng, ndim):
    torch = pytest.importorskip("torch")
    cls = {3: torch.nn.InstanceNorm1d, 4: torch.nn.InstanceNorm2d, 5: torch.nn.InstanceNorm3d}
    tm = cls[ndim](4, affine=True, track_running_stats=True, momentum=0.3)
    with torch.no_grad():
        tm.weight.copy_(torch.linspace(0.5, 2.0, 4))
        tm.bias.copy_(torch.linspace(-1.0, 1.0, 4))
    fm = InstanceNorm(4, affine=True, track_running_stats=True, momentum=0.3)
    fm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    assert list(fm.state_dict()) == list(tm.state_dict())
    shape = (3, 4) + (5, 4, 3)[: ndim - 2]
    for _ in range(2):
        x = (rng.normal(size=shape) * 2 + 1).astype(np.float32)
        dy = rng.normal(size=shape).astype(np.float32)
        tx = torch.tensor(x, requires_grad=True)
        tm.zero_grad()
        ty = tm(tx)
        ty.backward(torch.tensor(dy))
        y = fm(x)
        dx = fm.backward(dy)
        assert_close(y, ty.detach().numpy().astype(np.float64), np.float32, scale=5)
        assert_close(dx, tx.grad.numpy().astype(np.float64), np.float32, scale=5)
        assert_close(fm.weight_grad, tm.weight.grad.numpy().astype(np.float64), np.float32, 50)
    sd_t = {k: v.numpy() for k, v in tm.state_dict().items()}
    sd_f = fm.state_dict()
    for k in sd_t:
        assert sd_f[k].shape == sd_t[k].shape
        np.testing.assert_allclose(sd_f[k], sd_t[k], rtol=1e-5, atol=1e-6)
    # eval mode: running statistics, in torch and here
    tm.eval()
    fm.eval()
    x = rng.normal(size=shape).astype(np.float32)
    with torch.no_grad():
        ty = tm(torch.tensor(x)).numpy()
    assert_close(fm(x), ty.astype(np.float64), np.float32, scale=5)
    # round trip into a fresh torch module gives the same eval output
    tm2 = cls[ndim](4, affine=True, track_running_stats=True).eval()
    tm2.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in fm.state_dict().items()})
    with torch.no_grad():
        np.testing.assert_allclose(tm2(torch.tensor(x)).numpy(), ty, rtol=1e-5, atol=1e-5)
