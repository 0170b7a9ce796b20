"""Copies between memory orders (src_c/fn_transpose.c, fastnorm._ext.copy_into).

A backward whose dy does not share dx's layout copies dy into dx's order in
tiles of the two innermost axes (dx takes x's order, or a whole dy's when a
kernel shape takes x with it: a strided x is then read in place). The copies
must give NumPy's bits for any shape, permutation, stride and sign of stride,
and the backward must give the same bits as with the arrays in one layout
already.
"""

import numpy as np
import pytest

import fastnorm
from fastnorm import _ext

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def layouts(draw):
    """(source view, destination array) of one shape and dtype in any orders."""
    nd = draw(st.integers(1, 4))
    # sides up to 130, at most 2**18 elements (doubled strides double each side:
    # unbounded, four sides of 130 asked hypothesis for 18 GB)
    shape = tuple(draw(st.lists(st.sampled_from([1, 2, 3, 7, 33, 70, 130]), min_size=nd, max_size=nd)))
    hypothesis.assume(np.prod(shape) <= 2**18 // 2**nd)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    perm = draw(st.permutations(range(nd)))
    steps = tuple(draw(st.sampled_from([1, 2, -1])) for _ in range(nd))
    big = rng.standard_normal(tuple(n * abs(s) for n, s in zip(shape, steps))).astype(dtype)
    src = big[tuple(slice(None, None, s) for s in steps)]
    src = np.transpose(src, perm)
    order = draw(st.sampled_from(["C", "F", "reversed"]))
    if order == "reversed":
        dst = np.empty(src.shape[::-1], dtype).T
    else:
        dst = np.empty(src.shape, dtype, order=order)
    return src, dst


@SETTINGS
@given(layouts(), st.sampled_from([1, 2, 3]))
def test_copy_gives_numpys_bits(case, num_threads):
    src, dst = case
    _ext.copy_into(src, dst, num_threads)
    bits = np.uint32 if dst.itemsize == 4 else np.uint64
    np.testing.assert_array_equal(dst.view(bits), src.view(bits))


@pytest.mark.parametrize("shape", [(4096, 512), (300, 130), (2, 33, 65)], ids=str)
def test_large_transpose(shape, dtype):
    src = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    dst = np.empty(shape, dtype, order="F")
    _ext.copy_into(src, dst, 2)
    np.testing.assert_array_equal(dst, src)
    back = np.empty(shape, dtype)
    _ext.copy_into(dst, back, 2)
    np.testing.assert_array_equal(back, src)


def test_other_arrays_fall_back_to_numpy():
    src = np.arange(12, dtype=np.int64).reshape(3, 4)
    dst = np.empty((4, 3), np.int64).T
    _ext.copy_into(src, dst)
    np.testing.assert_array_equal(dst, src)


@pytest.mark.parametrize("layout", ["transposed x", "strided x"])
def test_backward_with_dy_in_another_layout(layout, dtype):
    rng = np.random.default_rng(3)
    if layout == "transposed x":
        x = np.ascontiguousarray(rng.standard_normal((300, 130)).astype(dtype).T).T
    else:
        x = rng.standard_normal((600, 130)).astype(dtype)[::2]
    dy = rng.standard_normal(x.shape).astype(dtype)   # C-contiguous
    w = rng.standard_normal(x.shape[1]).astype(dtype)
    _, m, r = fastnorm.layer_norm(x, w, return_stats=True)
    got = fastnorm.layer_norm_backward(dy, x, m, r, w)
    # dy in x's layout (transposed), or x copied whole: the kernels' own inputs
    if layout == "transposed x":
        dy_like_x = np.asfortranarray(dy)
        want = fastnorm.layer_norm_backward(dy_like_x, x, m, r, w)
    else:
        want = fastnorm.layer_norm_backward(dy, np.ascontiguousarray(x), m, r, w)
        assert got[0].flags.c_contiguous    # dy's order: x read in place
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
