"""Rows of 16, 32, 64 and 128 bytes take a copy of the row-group walk compiled
for their length, and so do rows of 128 and 256 bytes in large inputs (the piped
walk; fn_lean_fixed in src_c/fn_internal.h). Each row must come out as the
float64 formula says, within float rounding, and as the same row normalized in a
call of its own, bit for bit: a row's values depend on that row alone, whatever
group, batch of reduced rows or thread it falls in. Rows whose float32 sums are
taken again in double (constant, a first value far from the rest, inf, values
too small to square in float32) sit among the others.
"""

import numpy as np
import pytest

import fastnorm

ROWS = 4096 + 5                      # 129 groups of 32 rows, the last partial
SPECIAL_ROWS = (0, 33, 2050, ROWS - 1)


def _rows(dtype, D, rows=ROWS, seed=7):
    rng = np.random.default_rng(seed + D)
    x = (rng.standard_normal((rows, D)) * 2 + 5).astype(dtype)
    r0, r1, r2, r3 = SPECIAL_ROWS
    x[r0] = 1.5
    x[r1, 0] = 400.0
    x[r2, D // 2] = np.inf
    x[r3] = np.linspace(1e-30, 3e-30, D)
    return x


def _ops(dtype, D):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    return {
        "layer": lambda a, **kw: fastnorm.layer_norm(a, w, b, return_stats=True, **kw),
        "layer_plain": lambda a, **kw: fastnorm.layer_norm(a, **kw),
        "rms": lambda a, **kw: fastnorm.rms_norm(a, w, eps=1e-5, **kw),
        "moments": lambda a, **kw: fastnorm.moments(a, axis=1, **kw),
    }, w, b


def _reference(op, x, w, b):
    x64 = x.astype(np.float64)
    if op == "moments":
        return x64.mean(axis=1), x64.var(axis=1)
    if op == "rms":
        return x64 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + 1e-5) * w
    m, v = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
    y = (x64 - m) / np.sqrt(v + 1e-5)
    return y * w + b if op == "layer" else y


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", ["layer", "layer_plain", "rms", "moments"])
@pytest.mark.parametrize("row_bytes", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_fixed_length(dtype, row_bytes, op, threads):
    D = row_bytes // np.dtype(dtype).itemsize
    x = _rows(dtype, D)
    ops, w, b = _ops(dtype, D)
    got = _as_tuple(ops[op](x, num_threads=threads))
    for r in SPECIAL_ROWS + (1, 31, 32, 64, 1000, ROWS - 6):
        alone = _as_tuple(ops[op](np.ascontiguousarray(x[r:r + 1])))
        for g, a in zip(got, alone):
            np.testing.assert_array_equal(g[r:r + 1], a)
    finite = np.isfinite(x).all(axis=1)
    ref = _reference(op, x[finite], w, b)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    if op == "moments":
        np.testing.assert_allclose(got[0][finite], ref[0], rtol=tol)
        np.testing.assert_allclose(got[1][finite], ref[1], rtol=tol * 10, atol=1e-30)
    else:
        np.testing.assert_allclose(got[0][finite], ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fixed_rows_strided_and_misaligned(dtype):
    """Rows of 64 bytes that are not end to end (every other row of an array),
    and rows whose start is not a vector boundary (out= one element in)."""
    D = 64 // np.dtype(dtype).itemsize
    x = _rows(dtype, D)
    ops, w, b = _ops(dtype, D)
    y, mean, rstd = ops["layer"](x[::2])
    y2, mean2, rstd2 = ops["layer"](np.ascontiguousarray(x[::2]))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(rstd, rstd2)
    buf = np.empty(x.size + 1, dtype)
    out = buf[1:].reshape(x.shape)
    fastnorm.layer_norm(x, w, b, out=out)
    np.testing.assert_array_equal(out, ops["layer"](x)[0])
