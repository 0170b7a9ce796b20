"""Rows shorter than 1 KiB in inputs of 32 MiB and more (16 MiB on one thread):
while a group of rows is normalized, the next group is served row by row. Rows
of 128 bytes and more have their sums taken there (seg_rows_lean_piped, on one
thread or for rows of 128 bytes also asking for x two groups ahead; rows of 128
and 256 bytes through a copy compiled for their length); shorter
rows ask for the next group's lines of x and of their output (FN_LEAN_AHEAD_BYTES
in src_c/fn_internal.h). Neither may change a value: each row depends on its own
values alone, so small calls over a few rows, which walk their groups one after
the other, are the reference, bit for bit; rows whose float32 sums are taken
again in double (constant rows, a far first value, inf) sit inside the piped
groups; and a few rows are checked against the float64 formula.
"""

import numpy as np
import pytest

import fastnorm
import reference

LARGE_BYTES = 32 * 1024 * 1024


def _large_rows(dtype, D, seed=13):
    rng = np.random.default_rng(seed)
    rows = LARGE_BYTES // (np.dtype(dtype).itemsize * D) + 33   # the last group is partial
    x = (rng.standard_normal((rows, D)) * 3 + 4).astype(dtype)
    # rows whose sums are taken again in double: constant, a first value far from
    # the rest, an inf; in the first, second, a middle and the last group
    for r in (5, 40, rows // 2 + 1, rows - 10):
        x[r] = 2.5
        x[r + 1, 0] = 300.0
        x[r + 2, D // 2] = np.inf
    return x


def _check_parts(x, out, run):
    rows = x.shape[0]
    for part in (slice(0, 70), slice(rows // 2 - 3, rows // 2 + 61), slice(-70, None)):
        np.testing.assert_array_equal(out[part], run(np.ascontiguousarray(x[part])))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, D", [(np.float32, 100), (np.float32, 64), (np.float32, 32), (np.float32, 16),
                                      (np.float32, 8), (np.float64, 37), (np.float64, 32), (np.float64, 16)])
@pytest.mark.parametrize("op", ["layer", "rms"])
def test_rows_match_small_calls(op, dtype, D, threads):
    x = _large_rows(dtype, D)
    rng = np.random.default_rng(5)
    w = rng.standard_normal(D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    if op == "layer":
        run = lambda a, **kw: fastnorm.layer_norm(a, w, b, **kw)
    else:
        run = lambda a, **kw: fastnorm.rms_norm(a, w, eps=1e-5, **kw)
    out = np.empty_like(x)
    assert run(x, out=out, num_threads=threads) is out
    _check_parts(x, out, run)
    if op == "layer":
        ref = reference.layer_norm(x[-5:], w, b)[0]
    else:
        ref = reference.rms_norm(x[-5:], w, eps=1e-5)[0]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[-5:], ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("threads", [1, 2])
def test_rows_without_weights_joined(threads):
    """No parameters, rows not a whole number of vectors: the rows are written
    as joined runs, and the next group's sums are taken after each run."""
    x = _large_rows(np.float32, 100)
    out = fastnorm.layer_norm(x, num_threads=threads)
    _check_parts(x, out, lambda a: fastnorm.layer_norm(a))


@pytest.mark.parametrize("threads", [1, 2])
def test_strided_rows(threads):
    """Rows of a wider array (not end to end), and statistics returned."""
    wide = _large_rows(np.float32, 80, seed=3)
    x = wide[:, 8:72]
    y, mean, rstd = fastnorm.layer_norm(x, return_stats=True, num_threads=threads)
    for part in (slice(0, 70), slice(-70, None)):
        y_ref, m_ref, r_ref = fastnorm.layer_norm(np.ascontiguousarray(x[part]), return_stats=True)
        np.testing.assert_array_equal(y[part], y_ref)
        np.testing.assert_array_equal(mean[part], m_ref)
        np.testing.assert_array_equal(rstd[part], r_ref)
