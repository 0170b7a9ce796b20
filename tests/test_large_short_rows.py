"""Rows shorter than 1 KiB in inputs of 32 MiB and more (16 MiB on one thread):
while a group of rows is normalized, the next group's rows of x and the lines of
their output are requested ahead (FN_PREFETCH_ROWS_BYTES in src_c/fn_internal.h).
The requests must not change a value: each row depends on its own values alone,
so small calls over a few rows are the reference, bit for bit, and a few rows are
checked against the float64 formula.
"""

import numpy as np
import pytest

import fastnorm

PREFETCH_BYTES = 32 * 1024 * 1024


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, D", [(np.float32, 100), (np.float32, 64), (np.float64, 37)])
@pytest.mark.parametrize("op", ["layer", "rms"])
def test_rows_match_small_calls(op, dtype, D, threads):
    rng = np.random.default_rng(13)
    itemsize = np.dtype(dtype).itemsize
    rows = PREFETCH_BYTES // (itemsize * D) + 33   # the last group of rows is partial
    x = (rng.standard_normal((rows, D)) * 3 + 4).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    if op == "layer":
        run = lambda a, **kw: fastnorm.layer_norm(a, w, b, **kw)
    else:
        run = lambda a, **kw: fastnorm.rms_norm(a, w, eps=1e-5, **kw)
    out = np.empty_like(x)
    assert run(x, out=out, num_threads=threads) is out
    for part in (slice(0, 70), slice(rows // 2 - 3, rows // 2 + 61), slice(-70, None)):
        np.testing.assert_array_equal(out[part], run(np.ascontiguousarray(x[part])))
    x64 = x[-5:].astype(np.float64)
    if op == "layer":
        m, v = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
        ref = (x64 - m) / np.sqrt(v + 1e-5) * w + b
    else:
        ref = x64 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + 1e-5) * w
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out[-5:], ref, rtol=tol, atol=tol)
