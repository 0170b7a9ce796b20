"""Layouts that no kernel shape takes (fastnorm/_engine.py's fallback).

When the reduced and kept axes interleave in memory beyond what the canonical
shapes express, or the innermost axis is strided, the engine copies x (and dy)
into (kept..., reduced...) order, runs there, and brings the result back into
the layout np.empty_like(x) has: the copies go through the tiled transposing
copy when source and destination run along different axes, and the result is
returned without a copy when it already has that layout. An out= whose layout
does not follow x's is filled by the same copy. The results must be the bits of
the same call on a C-ordered copy arranged the way the fallback arranges it,
and the output's strides those of np.empty_like(x).
"""

import numpy as np
import pytest

import fastnorm

EPS = 1e-5


def cases(dtype):
    """(label, x, reduced axes) whose layout has no kernel shape."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 20, 9, 33)).astype(dtype)
    b = rng.standard_normal((130, 70)).astype(dtype)
    return [
        ("C 4-D over axes (0, 2)", a, (0, 2)),
        ("F-ordered 4-D over axes (1, 3)", np.asfortranarray(a), (1, 3)),
        ("H and W swapped, over axes (0, 3)", a.transpose(0, 1, 3, 2), (0, 3)),
        ("every other column, last axis", b[:, ::2], (1,)),
        ("every other value of the last axis, over axes (1, 2)", a[..., ::2], (1, 2)),
        ("every other channel, over axes (1, 2)", a[:, ::2], (1, 2)),
    ]


def test_cases_have_no_kernel_shape():
    from fastnorm import _layout
    for label, x, red in cases(np.float32):
        flags = tuple(i in red for i in range(x.ndim))
        assert _layout.plan(x, np.empty_like(x), flags) is None, label


def reference_layout(x, reduced):
    """x.transpose(kept + reduced) in C order, and the permutation."""
    kept = [i for i in range(x.ndim) if i not in reduced]
    perm = kept + list(reduced)
    return np.ascontiguousarray(x.transpose(perm)), perm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_bits_and_layout(dtype):
    for label, x, red in cases(dtype):
        xc, perm = reference_layout(x, red)
        last = tuple(range(len(perm) - len(red), len(perm)))
        want = fastnorm.layer_norm(xc, axis=last, eps=EPS).transpose(np.argsort(perm))
        got = fastnorm.layer_norm(x, axis=red, eps=EPS)
        np.testing.assert_array_equal(got, want, err_msg=label)
        assert got.strides == np.empty_like(x).strides, label
        # out= in another order: the same values, written in place
        out = np.empty(x.shape, dtype, order="F")
        assert fastnorm.layer_norm(x, axis=red, eps=EPS, out=out) is out
        np.testing.assert_array_equal(out, want, err_msg=label)
        x64 = x.astype(np.float64)
        ref = (x64 - x64.mean(red, keepdims=True)) / np.sqrt(x64.var(red, keepdims=True) + EPS)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=label)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_bits_and_layout(dtype):
    rng = np.random.default_rng(1)
    for label, x, red in cases(dtype):
        dy = rng.standard_normal(x.shape).astype(dtype)
        _, mean, rstd = fastnorm.layer_norm(x, axis=red, eps=EPS, return_stats=True)
        xc, perm = reference_layout(x, red)
        dyc = np.ascontiguousarray(dy.transpose(perm))
        last = tuple(range(len(perm) - len(red), len(perm)))
        want = fastnorm.layer_norm_backward(dyc, xc, mean, rstd, axis=last)[0].transpose(np.argsort(perm))
        got = fastnorm.layer_norm_backward(dy, x, mean, rstd, axis=red)[0]
        np.testing.assert_array_equal(got, want, err_msg=label)
        out = np.empty(x.shape, dtype, order="F")
        fastnorm.layer_norm_backward(dy, x, mean, rstd, axis=red, out=out)
        np.testing.assert_array_equal(out, want, err_msg=label)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_of_transposed_planes(dtype):
    """GroupNorm of NCHW with H and W swapped in memory: x copied into C order
    in tiles, y brought back into x's layout."""
    x = np.random.default_rng(2).standard_normal((3, 8, 40, 24)).astype(dtype).transpose(0, 1, 3, 2)
    got = fastnorm.group_norm(x, 4, eps=EPS)
    np.testing.assert_array_equal(got, fastnorm.group_norm(np.ascontiguousarray(x), 4, eps=EPS))
    assert got.strides == np.empty_like(x).strides
