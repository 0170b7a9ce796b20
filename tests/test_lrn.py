"""local_response_norm and its backward against float64 NumPy references
(PyTorch's formula and ONNX's), torch when installed, and finite differences."""
import numpy as np
import pytest

from fastnorm.family import local_response_norm, local_response_norm_backward
from reference import LAYOUTS, make_layout

ALPHA, BETA, K = 0.3, 0.75, 1.5


def lrn_ref(x, size, alpha=1e-4, beta=0.75, k=1.0, channel_axis=1, before=None, after=None):
    """float64 LRN written from the formula: PyTorch's window (size//2 channels
    before, (size-1)//2 after) unless before/after are given."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), channel_axis, 0)
    before = size // 2 if before is None else before
    after = (size - 1) // 2 if after is None else after
    C = x.shape[0]
    y = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - before), min(C - 1, c + after)
        s = np.sum(x[lo:hi + 1] ** 2, axis=0)
        y[c] = x[c] / (k + alpha / size * s) ** beta
    return np.moveaxis(y, 0, channel_axis)


def lrn_onnx_ref(x, size, alpha, beta, bias):
    """ONNX LRN: window max(0, c - floor((size-1)/2)) .. min(C-1, c + ceil((size-1)/2))."""
    return lrn_ref(x, size, alpha, beta, bias, 1, before=(size - 1) // 2, after=-(-(size - 1) // 2))


def lrn_bwd_ref(dy, x, size, alpha, beta, k, channel_axis=1):
    """dx from the chain rule, loop over windows, float64."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), channel_axis, 0)
    g = np.moveaxis(np.asarray(dy, dtype=np.float64), channel_axis, 0)
    C, before, after = x.shape[0], size // 2, (size - 1) // 2
    D = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - before), min(C - 1, c + after)
        D[c] = k + alpha / size * np.sum(x[lo:hi + 1] ** 2, axis=0)
    dx = g * D ** -beta
    t = g * x * D ** (-beta - 1)
    for c in range(C):
        lo, hi = max(0, c - before), min(C - 1, c + after)
        dx[lo:hi + 1] -= 2 * alpha * beta / size * x[lo:hi + 1] * t[c]
    return np.moveaxis(dx, 0, channel_axis)


def tol(dtype):
    return dict(rtol=2e-6, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- forward --

@pytest.mark.parametrize("shape", [(3, 7), (2, 6, 5), (2, 9, 4, 3), (2, 5, 3, 2, 2)])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 20])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_forward_reference(shape, size, channel_axis, dtype, rng):
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    y = local_response_norm(x, size, alpha=ALPHA, beta=BETA, k=K, channel_axis=channel_axis)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, lrn_ref(x, size, ALPHA, BETA, K, channel_axis), **tol(dtype))


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 0.75, 1.0, 2.0, -0.5])
def test_forward_betas(beta, dtype, rng):
    x = rng.standard_normal((2, 8, 5, 3)).astype(dtype)
    y = local_response_norm(x, 3, alpha=0.5, beta=beta, k=2.0)
    np.testing.assert_allclose(y, lrn_ref(x, 3, 0.5, beta, 2.0), **tol(dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channel_axis", [1, -1, 0, 2])
def test_layouts(layout, channel_axis, dtype, rng):
    a = rng.standard_normal((3, 6, 5, 4)).astype(dtype)
    x = make_layout(a, layout)
    expect = lrn_ref(a, 5, ALPHA, BETA, K, channel_axis)
    y = local_response_norm(x, 5, alpha=ALPHA, beta=BETA, k=K, channel_axis=channel_axis)
    np.testing.assert_allclose(y, expect, **tol(dtype))
    np.testing.assert_array_equal(x, a)   # input untouched
    out = make_layout(np.zeros_like(a), layout)
    r = local_response_norm(x, 5, alpha=ALPHA, beta=BETA, k=K, channel_axis=channel_axis, out=out)
    assert r is out
    np.testing.assert_allclose(out, expect, **tol(dtype))
    # in place
    r = local_response_norm(x, 5, alpha=ALPHA, beta=BETA, k=K, channel_axis=channel_axis, out=x)
    assert r is x
    np.testing.assert_allclose(x, expect, **tol(dtype))


def test_out_of_other_layout(rng):
    a = rng.standard_normal((2, 7, 6, 5))
    out = make_layout(np.zeros_like(a), "permuted")
    local_response_norm(np.asfortranarray(a), 4, alpha=ALPHA, out=out)
    np.testing.assert_allclose(out, lrn_ref(a, 4, ALPHA), rtol=1e-12)


def test_size_wider_than_channels(rng):
    x = rng.standard_normal((2, 3, 4))
    for size in (4, 7, 1000):
        np.testing.assert_allclose(local_response_norm(x, size, alpha=2.0),
                                   lrn_ref(x, size, 2.0), rtol=1e-12)
    huge = 10 ** 30                                  # beyond int64: clamped to the channels
    np.testing.assert_allclose(local_response_norm(x, huge, alpha=2.0 * huge),
                               lrn_ref(x, huge, 2.0 * huge), rtol=1e-12)


def test_threads_agree_bitwise(rng):
    x = rng.standard_normal((4, 32, 40, 30)).astype(np.float32)   # above the serial cutoff
    y1 = local_response_norm(x, 5, num_threads=1)
    y2 = local_response_norm(x, 5, num_threads=2)
    np.testing.assert_array_equal(y1, y2)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(local_response_norm_backward(g, x, 5, num_threads=1),
                                  local_response_norm_backward(g, x, 5, num_threads=2))


def test_large_parallel_channels_last(rng):
    a = rng.standard_normal((4, 20, 30, 48)).astype(np.float32)
    y = local_response_norm(a, 5, alpha=ALPHA, beta=BETA, k=K, channel_axis=-1, num_threads=2)
    np.testing.assert_allclose(y, lrn_ref(a, 5, ALPHA, BETA, K, -1), **tol(np.float32))


def test_no_cancellation_after_large_values():
    """Small channels after a huge one: a running sum that subtracts the leaving
    square would lose them; the window sums here are plain sums."""
    C = 40
    x = np.full((1, C, 3), 1e-3)
    x[0, 0] = 1e4
    x[0, 17] = 1e5
    y = local_response_norm(x, 3, alpha=1.0, beta=0.5, k=0.0)
    np.testing.assert_allclose(y, lrn_ref(x, 3, 1.0, 0.5, 0.0), rtol=1e-13)
    y32 = local_response_norm(x.astype(np.float32), 3, alpha=1.0, beta=0.5, k=0.0)
    np.testing.assert_allclose(y32, lrn_ref(x.astype(np.float32), 3, 1.0, 0.5, 0.0), rtol=1e-6)


def test_zero_size_and_float16(rng):
    x = np.zeros((0, 4, 3), dtype=np.float32)
    assert local_response_norm(x, 3).shape == (0, 4, 3)
    x = np.zeros((2, 0, 3))
    assert local_response_norm(x, 3).shape == (2, 0, 3)
    h = rng.standard_normal((2, 5, 3)).astype(np.float16)
    y = local_response_norm(h, 3, alpha=1.0)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, lrn_ref(h, 3, 1.0), rtol=2e-3, atol=2e-3)


def test_onnx_attribute_mapping(rng):
    """ONNX LRN(size, alpha, beta, bias) == local_response_norm(k=bias) for odd
    size; for even size ONNX's window is PyTorch's mirrored: reverse channels."""
    x = rng.standard_normal((2, 9, 4, 4))
    for size in (1, 3, 5):
        np.testing.assert_allclose(local_response_norm(x, size, alpha=0.2, beta=0.6, k=2.0),
                                   lrn_onnx_ref(x, size, 0.2, 0.6, 2.0), rtol=1e-12)
    for size in (2, 4):
        y = local_response_norm(x[:, ::-1], size, alpha=0.2, beta=0.6, k=2.0)[:, ::-1]
        np.testing.assert_allclose(y, lrn_onnx_ref(x, size, 0.2, 0.6, 2.0), rtol=1e-12)


# --------------------------------------------------------------- backward --

@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_backward_reference(size, channel_axis, dtype, rng):
    x = rng.standard_normal((2, 7, 4, 3)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx = local_response_norm_backward(dy, x, size, alpha=ALPHA, beta=BETA, k=K, channel_axis=channel_axis)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, lrn_bwd_ref(dy, x, size, ALPHA, BETA, K, channel_axis), **tol(dtype))


@pytest.mark.parametrize("size,beta", [(3, 0.75), (4, 0.3), (2, 1.0)])
def test_backward_finite_differences(size, beta, rng):
    x = rng.standard_normal((2, 6, 3))
    dy = rng.standard_normal(x.shape)
    dx = local_response_norm_backward(dy, x, size, alpha=0.7, beta=beta, k=1.2)
    h = 1e-6
    fd = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fp = np.sum(dy * lrn_ref(xp, size, 0.7, beta, 1.2))
        fm = np.sum(dy * lrn_ref(xm, size, 0.7, beta, 1.2))
        fd[idx] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("layout", ["F", "strided", "negative", "permuted"])
def test_backward_layouts_and_in_place(layout, dtype, rng):
    a = rng.standard_normal((3, 6, 5, 4)).astype(dtype)
    g = rng.standard_normal(a.shape).astype(dtype)
    expect = lrn_bwd_ref(g, a, 3, ALPHA, BETA, K)
    x, dy = make_layout(a, layout), make_layout(g, "C" if layout == "F" else "F")
    np.testing.assert_allclose(local_response_norm_backward(dy, x, 3, alpha=ALPHA, beta=BETA, k=K),
                               expect, **tol(dtype))
    dy2 = make_layout(g, layout)
    r = local_response_norm_backward(dy2, x, 3, alpha=ALPHA, beta=BETA, k=K, out=dy2)
    assert r is dy2
    np.testing.assert_allclose(dy2, expect, **tol(dtype))
    r = local_response_norm_backward(g, x, 3, alpha=ALPHA, beta=BETA, k=K, out=x)
    assert r is x
    np.testing.assert_allclose(x, expect, **tol(dtype))


# ------------------------------------------------------------------ torch --

@pytest.mark.parametrize("shape,size", [((2, 7, 5), 3), ((2, 16, 6, 5), 5), ((2, 6, 3, 2, 4), 4),
                                        ((1, 5, 4, 4), 8)])
def test_against_torch(shape, size, dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.local_response_norm(xt, size, alpha=ALPHA, beta=BETA, k=K)
    yt.backward(torch.tensor(dy))
    t = tol(dtype) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(local_response_norm(x, size, alpha=ALPHA, beta=BETA, k=K),
                               yt.detach().numpy(), **t)
    np.testing.assert_allclose(local_response_norm_backward(dy, x, size, alpha=ALPHA, beta=BETA, k=K),
                               xt.grad.numpy(), **t)
    # channels-last memory seen through channel_axis=-1
    xl = np.moveaxis(x, 1, -1)
    np.testing.assert_allclose(local_response_norm(xl, size, alpha=ALPHA, beta=BETA, k=K, channel_axis=-1),
                               np.moveaxis(yt.detach().numpy(), 1, -1), **t)


# ----------------------------------------------------------------- errors --

def _x():
    return np.ones((2, 4, 3))


@pytest.mark.parametrize("kwargs,exc", [
    (dict(size=0), ValueError), (dict(size=-2), ValueError), (dict(size=2.5), TypeError),
    (dict(size=True), TypeError), (dict(size="3"), TypeError), (dict(size=None), TypeError),
    (dict(alpha=np.nan), ValueError), (dict(alpha=np.inf), ValueError), (dict(alpha="a"), TypeError),
    (dict(alpha=None), TypeError), (dict(beta=np.nan), ValueError), (dict(beta=[1.0]), TypeError),
    (dict(k=-np.inf), ValueError), (dict(k=None), TypeError),
    (dict(channel_axis=3), ValueError), (dict(channel_axis=-4), ValueError),
    (dict(channel_axis=1.0), TypeError), (dict(num_threads=0), ValueError),
])
@pytest.mark.parametrize("backward", [False, True])
def test_bad_arguments(kwargs, exc, backward):
    x = _x()
    args = dict(size=3)
    args.update(kwargs)
    size = args.pop("size")
    out = np.full_like(x, 7.0)
    with pytest.raises(exc):
        if backward:
            local_response_norm_backward(np.ones_like(x), x, size, out=out, **args)
        else:
            local_response_norm(x, size, out=out, **args)
    assert np.all(out == 7.0)


@pytest.mark.parametrize("bad", [np.ones((2, 4, 3), dtype=np.int32), np.ones((2, 4, 3), dtype=bool),
                                 np.ones((2, 4, 3), dtype=np.complex128), np.array([[None]])])
def test_bad_dtype(bad):
    with pytest.raises(TypeError):
        local_response_norm(bad, 3)
    with pytest.raises(TypeError):
        local_response_norm_backward(np.ones((2, 4, 3)), bad, 3)


def test_bad_shapes_and_out():
    x = _x()
    with pytest.raises(ValueError):
        local_response_norm(np.ones(5), 3)            # 1-D
    with pytest.raises(ValueError):
        local_response_norm(x, 3, out=np.empty((2, 4, 4)))
    with pytest.raises(TypeError):
        local_response_norm(x, 3, out=np.empty((2, 4, 3), dtype=np.float32))
    with pytest.raises(TypeError):
        local_response_norm(x, 3, out=[[0.0]])
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        local_response_norm(x, 3, out=ro)
    buf = np.ones((3, 4, 3))
    with pytest.raises(ValueError):                  # partial overlap with x
        local_response_norm(buf[:2], 3, out=buf[1:])
    with pytest.raises(ValueError):
        local_response_norm_backward(np.ones((2, 4, 4)), x, 3)
    with pytest.raises(TypeError):
        local_response_norm_backward(np.ones((2, 4, 3), dtype=np.int64), x, 3)
    dy = np.ones((3, 4, 3))
    out = dy[1:]
    before = out.copy()
    with pytest.raises(ValueError):                  # partial overlap with dy
        local_response_norm_backward(dy[:2], x, 3, out=out)
    np.testing.assert_array_equal(out, before)
