"""The compiled row paths of layer_norm / rms_norm (``fastnorm._ext.rows_fast``)
and of their backward passes (``rows_bwd_fast``).

Calls over the last axis of a C-contiguous float32/float64 array (axis=-1, or
the last axis's index as the layers pass it) skip the Python-level validation and
planning, with or without return_stats. They must give the general path's bits:
the same forward calls take the general path when eps is a NumPy scalar instead of
a Python float, the backward ones when rstd comes as a list.
"""

import numpy as np
import pytest

import fastnorm
from fastnorm import _ext, get_num_threads
from reference import assert_same_results

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
    assert_same_results(general, fast)
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
    assert_same_results(ref, got)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(1, 33), (300, 64)], ids=str)
@pytest.mark.parametrize("rms", [False, True], ids=["layer_norm", "rms_norm"])
@pytest.mark.parametrize("affine", [False, True])
def test_backward_same_bits_as_general_path(shape, dtype, rms, affine):
    # the general path is taken when rstd comes as a list (the compiled one takes
    # ndarrays only); the values are the same
    x = _data(shape, dtype, seed=1)
    dy = _data(shape, dtype, seed=2) - 5.0
    D = shape[-1]
    w = np.linspace(0.5, 1.5, D).astype(dtype) if affine else None
    mode = _ext.MODE_RMS if rms else _ext.MODE_MEANVAR
    if rms:
        _, rstd = fastnorm.rms_norm(x, w, eps=EPS, return_stats=True)
        mean = None
    else:
        _, mean, rstd = fastnorm.layer_norm(x, w, None if w is None else w[::-1].copy(), eps=EPS,
                                            return_stats=True)
    fast = _ext.rows_bwd_fast(dy, x, mean, rstd, w, None, mode, None, get_num_threads)
    assert fast is not None, "the compiled path declined a case it covers"
    if rms:
        general = fastnorm.rms_norm_backward(dy, x, rstd.tolist(), w) + (None,)
        public = fastnorm.rms_norm_backward(dy, x, rstd, w) + (None,)
    else:
        general = fastnorm.layer_norm_backward(dy, x, mean, rstd.tolist(), w)
        public = fastnorm.layer_norm_backward(dy, x, mean, rstd, w)
    assert_same_results(general, fast, public)


def test_backward_out_and_declined_cases():
    x = _data((8, 40), np.float32)
    dy = _data((8, 40), np.float32, seed=3)
    _, m, r = fastnorm.layer_norm(x, return_stats=True)
    ref = fastnorm.layer_norm_backward(dy, x, m, r)[0]
    out = np.full_like(x, np.nan)
    dx = _ext.rows_bwd_fast(dy, x, m, r, None, out, _ext.MODE_MEANVAR, None, get_num_threads)[0]
    assert dx is out
    np.testing.assert_array_equal(out, ref)
    declined = [
        (dy, x, m, r, None, dy),                      # dx in place of dy: the general path's scratch
        (dy, x, m, r, None, x),                       # or of x
        (dy.astype(np.float64), x, m, r, None, None),  # dy of another dtype
        (dy, x[:, ::2], m, r, None, None),            # strided x
        (dy, x, m[:4], r, None, None),                # wrong statistics shape
        (dy, x, m, list(r), None, None),              # statistics not an ndarray
        (dy, x, m, r, np.ones(40), None),             # weight of another dtype
        (dy, x[:, :1].copy(), m, r, None, None),      # rows of one value
    ]
    for args in declined:
        before = None if args[-1] is None else args[-1].copy()
        assert _ext.rows_bwd_fast(*args, _ext.MODE_MEANVAR, None, get_num_threads) is None
        if before is not None:
            np.testing.assert_array_equal(args[-1], before)
    # the public function still computes (or raises) through the general path
    dyc = dy.copy()
    dx = fastnorm.layer_norm_backward(dyc, x, m, r, out=dyc)[0]
    assert dx is dyc
    np.testing.assert_array_equal(dx, ref)
    with pytest.raises(ValueError):
        fastnorm.layer_norm_backward(dy, x, m[:4], r)
