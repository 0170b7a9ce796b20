"""weight_norm and its backward against a float64 NumPy reference, torch when
installed, and finite differences."""
import numpy as np
import pytest

from fastnorm.family import weight_norm, weight_norm_backward
from reference import make_layout


def wn_ref(v, g, axis):
    v = np.asarray(v, dtype=np.float64)
    if axis is None:
        return np.asarray(g, dtype=np.float64) * v / np.sqrt(np.sum(v * v))
    axis %= v.ndim
    red = tuple(i for i in range(v.ndim) if i != axis)
    n = np.sqrt(np.sum(v * v, axis=red, keepdims=True))
    shape = [1] * v.ndim
    shape[axis] = v.shape[axis]
    return np.asarray(g, dtype=np.float64).reshape(shape) * v / n


def g_shape(v, axis, torch_shape=True):
    if axis is None:
        return ()
    if not torch_shape:
        return (v.shape[axis],)
    return tuple(v.shape[i] if i == axis % v.ndim else 1 for i in range(v.ndim))


CASES = [((5, 3, 3, 2), 0), ((5, 3, 3, 2), 1), ((5, 3, 3, 2), -1), ((5, 3, 3, 2), None),
         ((4, 6), 0), ((4, 6), -1), ((7,), 0), ((7,), None)]


@pytest.mark.parametrize("shape,axis,torch_shape",
                         [c + (t,) for c in CASES for t in (True, False) if c[1] is not None or t])
def test_forward(shape, axis, torch_shape, dtype, rng):
    v = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(0.5, 2, g_shape(v, axis, torch_shape)).astype(dtype)
    w = weight_norm(v, g, axis=axis)
    assert w.shape == v.shape and w.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(w, wn_ref(v, g, axis), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("shape,axis", CASES)
def test_backward_finite_differences(shape, axis, rng):
    v = rng.standard_normal(shape)
    g = rng.uniform(0.5, 2, g_shape(v, axis))
    dw = rng.standard_normal(shape)
    dv, dg = weight_norm_backward(dw, v, g, axis=axis)
    assert dv.shape == v.shape and dg.shape == g.shape
    h = 1e-6
    fdv = np.empty_like(v)
    for idx in np.ndindex(v.shape):
        vp, vm = v.copy(), v.copy()
        vp[idx] += h
        vm[idx] -= h
        fdv[idx] = (np.sum(dw * wn_ref(vp, g, axis)) - np.sum(dw * wn_ref(vm, g, axis))) / (2 * h)
    fdg = np.empty_like(g)
    for idx in np.ndindex(g.shape):
        gp, gm = g.copy(), g.copy()
        gp[idx] += h
        gm[idx] -= h
        fdg[idx] = (np.sum(dw * wn_ref(v, gp, axis)) - np.sum(dw * wn_ref(v, gm, axis))) / (2 * h)
    np.testing.assert_allclose(dv, fdv, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dg, fdg, rtol=1e-6, atol=1e-8)


def test_backward_dg_keeps_g_shape_and_dtype(rng):
    v = rng.standard_normal((4, 3, 2)).astype(np.float32)
    g1 = rng.uniform(1, 2, 4)                       # 1-D float64
    dv, dg = weight_norm_backward(np.ones_like(v), v, g1, axis=0)
    assert dv.dtype == np.float32 and dg.shape == (4,) and dg.dtype == np.float64
    dv2, dg2 = weight_norm_backward(np.ones_like(v), v, g1.reshape(4, 1, 1), axis=0)
    assert dg2.shape == (4, 1, 1)
    np.testing.assert_allclose(dg2.ravel(), dg, rtol=1e-14)
    np.testing.assert_allclose(dv2, dv, rtol=1e-6)


@pytest.mark.parametrize("layout", ["F", "strided", "negative", "permuted"])
def test_layouts(layout, rng):
    a = rng.standard_normal((4, 3, 5))
    g = rng.uniform(1, 2, 3)
    np.testing.assert_allclose(weight_norm(make_layout(a, layout), g, axis=1), wn_ref(a, g, 1), rtol=1e-13)
    dw = rng.standard_normal(a.shape)
    dv, dg = weight_norm_backward(make_layout(dw, layout), make_layout(a, layout), g, axis=1)
    dv0, dg0 = weight_norm_backward(dw, a, g, axis=1)
    np.testing.assert_allclose(dv, dv0, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dg, dg0, rtol=1e-13, atol=1e-15)


def test_extreme_magnitudes():
    v = np.array([[3e200, 4e200], [3e-200, 4e-200]])
    np.testing.assert_allclose(weight_norm(v, np.ones(2)), [[0.6, 0.8], [0.6, 0.8]], rtol=1e-14)


def test_zero_slice_is_nan():
    with np.errstate(all="raise"):
        w = weight_norm(np.array([[0.0, 0.0], [1.0, 0.0]]), np.ones(2))
    assert np.all(np.isnan(w[0])) and np.array_equal(w[1], [1.0, 0.0])


def wn_bwd_ref(dw, v, g, axis):
    """dv, dg from the formulas, float64 (g's shape as given)."""
    v = np.asarray(v, dtype=np.float64)
    dw = np.asarray(dw, dtype=np.float64)
    red = tuple(range(v.ndim)) if axis is None else tuple(i for i in range(v.ndim) if i != axis % v.ndim)
    n = np.sqrt(np.sum(v * v, axis=red, keepdims=True))
    gb = np.asarray(g, dtype=np.float64).reshape(n.shape)
    u = v / n
    dg = np.sum(dw * u, axis=red, keepdims=True)
    return gb / n * (dw - u * dg), dg.reshape(np.shape(g))


@pytest.mark.parametrize("vmag,dwmag", [(1e200, 1.0), (1e-200, 1.0), (1.0, 1e-200), (1e150, 1e150),
                                        (1e-160, 1e-160), (1e200, 1e-100)])
@pytest.mark.parametrize("axis", [0, None])
def test_backward_extreme_magnitudes(vmag, dwmag, axis, rng):
    """float64 slices whose sums would overflow or underflow in the engine take the
    scaled NumPy path: dv scales as dwmag / vmag, dg as dwmag."""
    v = rng.standard_normal((4, 6))
    g = rng.uniform(0.5, 2, g_shape(v, axis))
    dw = rng.standard_normal(v.shape)
    edv, edg = wn_bwd_ref(dw, v, g, axis)
    dv, dg = weight_norm_backward(dw * dwmag, v * vmag, g, axis=axis)
    np.testing.assert_allclose(dv / (dwmag / vmag), edv, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dg / dwmag, edg, rtol=1e-12, atol=1e-14)
    if axis == 0:
        # one extreme slice among moderate ones: each takes its own path
        vm = v.copy()
        vm[0] *= vmag
        dv, dg = weight_norm_backward(dw, vm, g, axis=0)
        np.testing.assert_allclose(dv[0] * vmag, edv[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dv[1:], edv[1:], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dg, edg, rtol=1e-12, atol=1e-14)


def test_non_finite_inputs():
    v = np.array([[3.0, 4.0], [np.inf, 1.0], [np.nan, 1.0], [1.0, 2.0], [0.0, 0.0]])
    g = np.ones(5)
    dw = np.array([[1.0, 2.0], [1.0, 1.0], [1.0, 1.0], [np.inf, 1.0], [1.0, 1.0]])
    with np.errstate(all="raise"):
        w = weight_norm(v, g)
        dv, dg = weight_norm_backward(dw, v, g)
    with np.errstate(all="ignore"):
        edv, edg = wn_bwd_ref(dw, v, g, 0)
    np.testing.assert_allclose(w[0], [0.6, 0.8], rtol=1e-15)
    assert np.all(np.isnan(w[1:3])) and np.all(np.isnan(w[4]))
    np.testing.assert_allclose(dv, edv, rtol=1e-14)  # and the formulas' inf / NaN pattern
    np.testing.assert_allclose(dg, edg, rtol=1e-14)


def test_float16_and_zero_d(rng):
    v = rng.standard_normal((4, 5)).astype(np.float16)
    g = rng.uniform(0.5, 2, 4).astype(np.float16)
    dw = rng.standard_normal(v.shape).astype(np.float16)
    w = weight_norm(v, g)
    assert w.dtype == np.float16
    np.testing.assert_allclose(w, wn_ref(v, g, 0), rtol=1e-3, atol=1e-3)
    dv, dg = weight_norm_backward(dw, v, g)
    assert dv.dtype == np.float16 and dg.dtype == np.float16
    edv, edg = wn_bwd_ref(dw, v, g, 0)
    np.testing.assert_allclose(dv, edv, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(dg, edg, rtol=2e-3, atol=2e-3)
    # 0-d v: axis=None, ||v|| = |v|
    w = weight_norm(np.array(-3.0), np.array(2.0), axis=None)
    assert w.shape == () and w == -2.0
    dv, dg = weight_norm_backward(np.array(5.0), np.array(-3.0), np.array(2.0), axis=None)
    assert dv.shape == () and dg.shape == () and dv == 0.0 and dg == -5.0


@pytest.mark.parametrize("shape,axis", [((3, 0), 0), ((0, 3), 0), ((2, 0, 2), -1), ((0, 4), None)])
def test_empty(shape, axis, dtype):
    v = np.ones(shape, dtype=dtype)
    g = np.ones(g_shape(v, axis), dtype=dtype)
    w = weight_norm(v, g, axis=axis)
    assert w.shape == shape and w.dtype == dtype
    dv, dg = weight_norm_backward(v, v, g, axis=axis)
    assert dv.shape == shape and dv.dtype == dtype
    assert dg.shape == g.shape and dg.dtype == dtype and np.all(dg == 0)


@pytest.mark.parametrize("axis", [0, 1, -1, None])
def test_large_parallel(axis, dtype, rng):
    """Above the engine's serial cutoff: the OpenMP paths."""
    v = rng.standard_normal((96, 80, 3, 3)).astype(dtype)
    g = rng.uniform(0.5, 2, g_shape(v, axis, torch_shape=False)).astype(dtype)
    dw = rng.standard_normal(v.shape).astype(dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(weight_norm(v, g, axis=axis), wn_ref(v, g, axis), rtol=rtol, atol=rtol)
    dv, dg = weight_norm_backward(dw, v, g, axis=axis)
    edv, edg = wn_bwd_ref(dw, v, g, axis)
    np.testing.assert_allclose(dv, edv, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dg, edg, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("shape,axis", [((5, 3, 3, 2), 0), ((5, 3, 3, 2), 2), ((4, 6), None)])
def test_against_torch(shape, axis, dtype, rng):
    torch = pytest.importorskip("torch")
    v = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(0.5, 2, g_shape(v, axis)).astype(dtype)
    dw = rng.standard_normal(shape).astype(dtype)
    vt = torch.tensor(v, requires_grad=True)
    gt = torch.tensor(g, requires_grad=True)
    wt = torch._weight_norm(vt, gt, -1 if axis is None else axis)
    wt.backward(torch.tensor(dw))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(weight_norm(v, g, axis=axis), wt.detach().numpy(), rtol=rtol, atol=rtol)
    dv, dg = weight_norm_backward(dw, v, g, axis=axis)
    np.testing.assert_allclose(dv, vt.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dg, gt.grad.numpy().reshape(g.shape), rtol=rtol, atol=rtol)


def test_torch_module_weight_norm(rng):
    """torch.nn.utils.weight_norm on a Conv2d (dim=0) gives our w from its weight_g/weight_v."""
    torch = pytest.importorskip("torch")
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(3, 4, 3).double())
    v = conv.parametrizations.weight.original1.detach().numpy()
    g = conv.parametrizations.weight.original0.detach().numpy()
    np.testing.assert_allclose(weight_norm(v, g, axis=0), conv.weight.detach().numpy(), rtol=1e-12)


def test_errors(rng):
    v = rng.standard_normal((4, 3))
    with pytest.raises(TypeError):
        weight_norm(np.ones((4, 3), dtype=np.int64), np.ones(4))
    with pytest.raises(TypeError):
        weight_norm(v, np.ones(4, dtype=np.int64))
    with pytest.raises(ValueError):
        weight_norm(v, np.ones(3), axis=0)
    with pytest.raises(ValueError):
        weight_norm(v, np.ones((1, 3)), axis=0)
    with pytest.raises(ValueError):
        weight_norm(v, np.ones(4), axis=None)
    with pytest.raises(ValueError):
        weight_norm(v, np.ones(4), axis=2)
    with pytest.raises(ValueError):
        weight_norm(v, np.ones(4), axis=-3)
    with pytest.raises(TypeError):
        weight_norm(v, np.ones(4), axis=(0,))
    with pytest.raises(TypeError):
        weight_norm(v, np.ones(4), axis=0.0)
    with pytest.raises(ValueError):
        weight_norm_backward(np.ones((4, 4)), v, np.ones(4))
    with pytest.raises(TypeError):
        weight_norm_backward(np.ones((4, 3), dtype=np.int32), v, np.ones(4))
    assert weight_norm(v, np.ones((4, 1))).shape == (4, 3)
    assert weight_norm(v, np.ones((1, 3)), axis=-1).shape == (4, 3)
    assert weight_norm(v, np.array(2.0), axis=None).shape == (4, 3)
