"""The compiled row path of layer_norm and rms_norm (``fastnorm._ext.rows_fast``).

Calls over the last axis of a C-contiguous float32/float64 array (axis=-1, or
the last axis's index as the layers pass it) skip the Python-level validation and
planning, with or without return_stats. They must give the general path's bits:
the same calls take the general path when eps is a NumPy scalar instead of a
Python float.
"""

import numpy as np
import pytest

import fastnorm
from fastnorm import _ext, get_num_threads

EPS = 1e-5
GENERAL_EPS = np.float64(EPS)


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (5.0 + rng.standard_normal(shape)).astype(dtype)


SHAPES = [(7,), (3, 5), (4, 64), (2, 3, 300), (64, 1024)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("rms", [False, True], ids=["layer_norm", "rms_norm"])
def test_return_stats_same_bits_as_general_path(shape, dtype, rms):
    x = _data(shape, dtype)
    D = shape[-1]
    w = np.linspace(0.5, 1.5, D).astype(dtype)
    b = np.linspace(-1, 1, D).astype(dtype)
    mode = _ext.MODE_RMS if rms else _ext.MODE_MEANVAR
    fast = _ext.rows_fast(x, w, None if rms else b, EPS, None, mode, None, get_num_threads, True)
    assert fast is not None and len(fast) == (2 if rms else 3)
    if rms:
        general = fastnorm.rms_norm(x, w, eps=GENERAL_EPS, return_stats=True)
    else:
        general = fastnorm.layer_norm(x, w, b, eps=GENERAL_EPS, return_stats=True)
    for a, g in zip(fast, general):
        assert a.dtype == g.dtype and a.shape == g.shape
        np.testing.assert_array_equal(a, g)
    # and the statistics against float64 NumPy
    x64 = x.astype(np.float64)
    ms = (x64 * x64).mean(-1) if rms else x64.var(-1)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast[-1], 1 / np.sqrt(ms + EPS), rtol=tol)
    if not rms:
        np.testing.assert_allclose(fast[1], x64.mean(-1), rtol=tol)


@pytest.mark.parametrize("axis", [-1, (-1,), 2, (2,)], ids=str)
def test_last_axis_by_index_takes_the_compiled_path_with_the_same_result(axis):
    # the layers pass the last axis as its index
    x = _data((2, 3, 40), np.float32)
    ref = fastnorm.layer_norm(x, eps=GENERAL_EPS, return_stats=True)
    got = fastnorm.layer_norm(x, axis=axis, return_stats=True)
    for a, g in zip(got, ref):
        np.testing.assert_array_equal(a, g)


def test_layers_match_the_functions():
    x = _data((16, 96), np.float32)
    ln = fastnorm.LayerNorm(96)
    ln.weight[...] = np.linspace(0.5, 2, 96)
    y = ln(x)
    np.testing.assert_array_equal(y, fastnorm.layer_norm(x, ln.weight, ln.bias, eps=GENERAL_EPS))
    dx = ln.backward(np.ones_like(x))
    ref = fastnorm.layer_norm_backward(np.ones_like(x), x, *fastnorm.layer_norm(
        x, ln.weight, ln.bias, eps=GENERAL_EPS, return_stats=True)[1:], ln.weight)[0]
    np.testing.assert_array_equal(dx, ref)
    rms = fastnorm.RMSNorm(96)
    np.testing.assert_array_equal(rms(x), fastnorm.rms_norm(x, rms.weight, eps=rms.eps))


def test_truthy_return_stats_returns_the_statistics():
    x = _data((4, 8), np.float64)
    assert len(fastnorm.layer_norm(x, return_stats=1)) == 3
    assert len(fastnorm.rms_norm(x, return_stats=1)) == 2
