"""Rows of 2, 4 or 8 values several to a vector (norm_rows_packed in src_c/norm_template.h).

LayerNorm and RMSNorm over rows shorter than a vector whose length is a power of
two, lying end to end in x and y, are normalized TLANES / n rows per vector with
per-lane coefficients. The arithmetic per value is the per-row loop's, so the
results must be the per-row loop's bits: the same rows read from a padded buffer
(not end to end) take that loop. Checked on every SIMD path (the vector widths
give different rows per vector), for every parameter case, for groups whose row
count is not a multiple of the rows per vector, and for a group holding a row
off the fast path (a huge value), and against float64 NumPy.
"""

import numpy as np
import pytest

import fastnorm

EPS = 1e-5


def padded_view(x):
    """x's values in rows one element apart: the per-row loop's layout."""
    buf = np.zeros((x.shape[0], x.shape[1] + 1), x.dtype)
    buf[:, :-1] = x
    return buf[:, :-1]


def call(x, op, params, num_threads):
    """op ('layer_norm' or 'rms_norm') over the rows of x with params
    ('w and b', 'w', 'none'; RMSNorm takes no b)."""
    d = x.shape[1]
    w = np.linspace(0.5, 2.0, d).astype(x.dtype) if params != "none" else None
    b = np.linspace(-1.0, 1.0, d).astype(x.dtype) if params == "w and b" else None
    if op == "rms_norm":
        return fastnorm.rms_norm(x, w, eps=EPS, num_threads=num_threads)
    return fastnorm.layer_norm(x, w, b, eps=EPS, num_threads=num_threads)


def reference(x, op, params):
    x64 = x.astype(np.float64)
    d = x.shape[1]
    if op == "rms_norm":
        y = x64 / np.sqrt((x64 * x64).mean(1, keepdims=True) + EPS)
    else:
        y = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + EPS)
    if params != "none":
        y = y * np.linspace(0.5, 2.0, d).astype(x.dtype)
    if params == "w and b" and op == "layer_norm":
        y = y + np.linspace(-1.0, 1.0, d).astype(x.dtype)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("params", ["w and b", "w", "none"])
def test_same_bits_as_rows_one_by_one(active_isa, dtype, op, params):
    rng = np.random.default_rng(7)
    for d in (2, 4, 8, 3, 16):
        # 1001 rows: groups of 32 rows and a last group of 9 (not whole vectors)
        x = (3.0 + rng.standard_normal((1001, d))).astype(dtype)
        for nt in (1, 2):
            packed = call(x, op, params, nt)
            one_by_one = call(padded_view(x), op, params, nt)
            np.testing.assert_array_equal(packed, one_by_one)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(packed, reference(x, op, params), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_with_a_row_off_the_fast_path(active_isa, dtype):
    """A row whose mean is too large for the T-precision normalize makes its
    group take the per-row loop (in double); the other groups stay packed."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((200, 4)).astype(dtype)
    fi = np.finfo(dtype)
    # float64: values that differ would overflow the variance; equal ones
    # still take the per-row loop
    spread = 16 * fi.eps * np.arange(4) if dtype == np.float32 else 0
    x[37] = (fi.max / 8 * (1 + spread)).astype(dtype)
    packed = fastnorm.layer_norm(x, eps=EPS)
    np.testing.assert_array_equal(packed, fastnorm.layer_norm(padded_view(x), eps=EPS))
    assert np.all(np.isfinite(packed))
    np.testing.assert_allclose(packed, reference(x, "layer_norm", "none"), rtol=1e-5, atol=1e-5)


def test_output_with_its_own_layout():
    """x end to end and y not (an out= view), and the reverse: the per-row loop,
    the same bits."""
    x = np.random.default_rng(9).standard_normal((500, 8)).astype(np.float32)
    ref = fastnorm.layer_norm(x, eps=EPS)
    out = np.zeros((500, 9), np.float32)[:, :8]
    fastnorm.layer_norm(x, eps=EPS, out=out)
    np.testing.assert_array_equal(out, ref)
    out2 = np.empty((500, 8), np.float32)
    fastnorm.layer_norm(padded_view(x), eps=EPS, out=out2)
    np.testing.assert_array_equal(out2, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [2, 4, 8])
def test_nothing_written_past_the_last_row(active_isa, dtype, d):
    """Row counts whose last group ends inside a vector of rows: the values
    after out's last row keep their bits."""
    rng = np.random.default_rng(10)
    for rows in (1, 3, 5, 33, 1001):
        x = rng.standard_normal((rows, d)).astype(dtype)
        for nt in (1, 2):
            buf = np.full(rows * d + 64, 7.0, dtype)
            out = buf[:rows * d].reshape(rows, d)
            fastnorm.layer_norm(x, np.ones(d, dtype), np.zeros(d, dtype), eps=EPS, out=out, num_threads=nt)
            np.testing.assert_array_equal(buf[rows * d:], 7.0)
            np.testing.assert_array_equal(out, fastnorm.layer_norm(padded_view(x), eps=EPS))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("plane", [(1, 2), (2, 2), (2, 4)], ids=str)
def test_instance_norm_planes_with_channel_parameters(active_isa, dtype, plane):
    """InstanceNorm over planes of 2-8 values: rows whose weight and bias are
    one value per row (folded into the coefficients)."""
    rng = np.random.default_rng(11)
    x = (2.0 + rng.standard_normal((9, 21) + plane)).astype(dtype)
    w = rng.uniform(0.5, 2.0, 21).astype(dtype)
    b = rng.standard_normal(21).astype(dtype)
    y = fastnorm.instance_norm(x, w, b, eps=EPS)
    padded = np.zeros((9, 21, plane[0], plane[1] + 1), dtype)
    padded[..., :-1] = x
    np.testing.assert_array_equal(y, fastnorm.instance_norm(padded[..., :-1], w, b, eps=EPS))
    x64 = x.astype(np.float64).reshape(9, 21, -1)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + EPS)
    ref = ref * w[:, None].astype(np.float64) + b[:, None].astype(np.float64)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.reshape(ref.shape), ref, rtol=tol, atol=tol)
