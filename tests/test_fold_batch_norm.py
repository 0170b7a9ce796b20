"""fold_batch_norm: BN(W x + b) == W' x + b' on a real NumPy 2-D convolution
and Linear layers, against torch's fusion helpers when installed."""
import numpy as np
import pytest

from fastnorm.family import fold_batch_norm


def conv2d(x, w, b=None, stride=1, padding=0, groups=1):
    """float64 cross-correlation as torch.nn.functional.conv2d: x (N, Cin, H, W),
    w (Cout, Cin/groups, kh, kw)."""
    x = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    N, Cin, H, W = x.shape
    Cout, cpg, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    opg = Cout // groups
    outs = []
    for gi in range(groups):
        xs = win[:, gi * cpg:(gi + 1) * cpg]                  # N, cpg, Ho, Wo, kh, kw
        ws = np.asarray(w[gi * opg:(gi + 1) * opg], dtype=np.float64)
        outs.append(np.einsum("nchwij,ocij->nohw", xs, ws))
    y = np.concatenate(outs, axis=1)
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y


def bn_eval(z, mean, var, gamma, beta, eps, axis=1):
    shape = [1] * z.ndim
    shape[axis] = -1
    r = lambda a: np.asarray(a, dtype=np.float64).reshape(shape)  # noqa: E731
    return (z - r(mean)) / np.sqrt(r(var) + eps) * r(gamma) + r(beta)


def bn_params(rng, C):
    return (rng.standard_normal(C), rng.uniform(0.2, 3.0, C), rng.uniform(0.5, 2.0, C),
            rng.standard_normal(C))


def test_conv_numpy_reference_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=2, padding=1,
                                     groups=2).numpy()
    np.testing.assert_allclose(conv2d(x, w, b, stride=2, padding=1, groups=2), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("stride,padding,groups", [(1, 0, 1), (2, 1, 1), (1, 1, 2)])
def test_conv2d(with_bias, affine, stride, padding, groups, dtype, rng):
    Cin, Cout = 4, 6
    x = rng.standard_normal((2, Cin, 9, 8))
    w = rng.standard_normal((Cout, Cin // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(Cout).astype(dtype) if with_bias else None
    mean, var, gamma, beta = bn_params(rng, Cout)
    if not affine:
        gamma = beta = None
    eps = 1e-3
    w2, b2 = fold_batch_norm(w, b, mean, var, gamma, beta, eps=eps)
    assert w2.shape == w.shape and w2.dtype == dtype and b2.shape == (Cout,) and b2.dtype == dtype
    expect = bn_eval(conv2d(x, w, b, stride, padding, groups), mean, var,
                     np.ones(Cout) if gamma is None else gamma, np.zeros(Cout) if beta is None else beta, eps)
    got = conv2d(x, w2, b2, stride, padding, groups)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expect, rtol=rtol, atol=rtol * 10)


def test_linear_and_transposed_layout(dtype, rng):
    x = rng.standard_normal((5, 7))
    W = rng.standard_normal((3, 7)).astype(dtype)   # torch Linear: (out, in)
    b = rng.standard_normal(3).astype(dtype)
    mean, var, gamma, beta = bn_params(rng, 3)
    expect = bn_eval(x @ W.T.astype(np.float64) + b, mean, var, gamma, beta, 1e-5)
    W2, b2 = fold_batch_norm(W, b, mean, var, gamma, beta)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(x @ W2.T.astype(np.float64) + b2, expect, rtol=rtol, atol=rtol * 10)
    # the same layer stored (in, out): output channels on axis 1 (or -1)
    Wt = np.ascontiguousarray(W.T)
    for ax in (1, -1):
        Wt2, bt2 = fold_batch_norm(Wt, b, mean, var, gamma, beta, channel_axis=ax)
        np.testing.assert_allclose(Wt2, W2.T, rtol=1e-6 if dtype == np.float32 else 1e-15)
        np.testing.assert_array_equal(bt2, b2)


def test_inputs_untouched(rng):
    w = rng.standard_normal((4, 2, 3, 3))
    b = rng.standard_normal(4)
    params = bn_params(rng, 4)
    copies = [a.copy() for a in (w, b) + params]
    fold_batch_norm(w, b, *params)
    for a, c in zip((w, b) + params, copies):
        np.testing.assert_array_equal(a, c)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
    w = rng.standard_normal((6, 3, 3, 3))
    b = rng.standard_normal(6)
    mean, var, gamma, beta = bn_params(rng, 6)
    T = torch.tensor
    tw, tb = fuse_conv_bn_weights(T(w), T(b), T(mean), T(var), 1e-5, T(gamma), T(beta))
    w2, b2 = fold_batch_norm(w, b, mean, var, gamma, beta)
    np.testing.assert_allclose(w2, tw.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(b2, tb.detach().numpy(), rtol=1e-13, atol=1e-14)
    tw, tb = fuse_conv_bn_weights(T(w), None, T(mean), T(var), 1e-5, None, None)
    w2, b2 = fold_batch_norm(w, None, mean, var)
    np.testing.assert_allclose(w2, tw.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(b2, tb.detach().numpy(), rtol=1e-13, atol=1e-14)
    L = rng.standard_normal((6, 5))
    tw, tb = fuse_linear_bn_weights(T(L), T(b), T(mean), T(var), 1e-5, T(gamma), T(beta))
    w2, b2 = fold_batch_norm(L, b, mean, var, gamma, beta)
    np.testing.assert_allclose(w2, tw.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(b2, tb.detach().numpy(), rtol=1e-13, atol=1e-14)
    # a real module: conv -> BatchNorm2d (eval) == folded conv
    conv = torch.nn.Conv2d(3, 6, 3, padding=1).double()
    bn = torch.nn.BatchNorm2d(6).double()
    bn.running_mean.copy_(T(mean))
    bn.running_var.copy_(T(var))
    bn.weight.data.copy_(T(gamma))
    bn.bias.data.copy_(T(beta))
    bn.eval()
    x = rng.standard_normal((2, 3, 8, 8))
    with torch.no_grad():
        ref = bn(conv(T(x))).numpy()
    w2, b2 = fold_batch_norm(conv.weight.detach().numpy(), conv.bias.detach().numpy(), mean, var, gamma, beta,
                             eps=bn.eps)
    np.testing.assert_allclose(conv2d(x, w2, b2, padding=1), ref, rtol=1e-11, atol=1e-11)


def test_errors(rng):
    w = rng.standard_normal((4, 3))
    p = [np.ones(4)] * 2
    with pytest.raises(TypeError):
        fold_batch_norm(np.ones((4, 3), dtype=np.int64), None, *p)
    with pytest.raises(TypeError):
        fold_batch_norm(w, np.ones(4, dtype=np.int64), *p)
    with pytest.raises(TypeError):
        fold_batch_norm(w, None, np.ones(4, dtype=bool), np.ones(4))
    with pytest.raises(ValueError):
        fold_batch_norm(np.float64(1.0), None, *p)
    with pytest.raises(ValueError):
        fold_batch_norm(w, np.ones(3), *p)
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, np.ones(3), np.ones(4))
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, np.ones(4), np.ones((4, 1)))
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, *p, bn_weight=np.ones(5))
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, *p, bn_bias=np.ones(3))
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, *p, eps=-1.0)
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, *p, channel_axis=2)
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, np.ones(4), np.array([1.0, 0.0, 1.0, 1.0]), eps=0.0)
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, np.ones(4), -np.ones(4))
    with pytest.raises(ValueError):
        fold_batch_norm(w, None, None, np.ones(4))
    w2, b2 = fold_batch_norm(w, None, np.ones(4), np.zeros(4), eps=1e-5)    # var 0 + eps > 0: fine
    assert np.all(np.isfinite(w2)) and np.all(np.isfinite(b2))
