"""Few rows of many columns: the column walk cut across its columns.

BatchNorm over (N, C) with a small batch and many channels (an MLP's
(64, 4096)), channels-last batches of few pixels, and GroupNorm channels-last
with few pixels have too few row blocks to share among threads. The kernels then
cut each block's columns into ranges (statistics and backward sums), cut the
output anywhere in its flat range, and normalize rows whose coefficients
outgrow L1 one tile of columns at a time (src_c: fn_col_cut, fn_col_step,
col_norm_tiles, col_dx_tiles); slabs of at most 128 rows take one walk over
ranges of columns instead (col_fused_cols, col_norm_fused, col_bwd_walk), which
must give the bits of the separate passes. These tests hold those walks to float64
references and to the same bits at every thread count, with data that sends
some columns (not all of a cut) to the fallbacks: a column whose first rows sit
far from the rest, a column with |mean| >> std, a column holding inf.
"""

import numpy as np
import pytest

import fastnorm
from reference import batch_norm as ref_batch_norm
from reference import tol
from test_backward import bn_backward64, close

# (N, C): rows of the column walk, columns; wide enough to be cut, and columns
# that are not a multiple of a vector (1000, 2100) or of the cut unit (4100)
SHAPES = [(2, 4100), (8, 4096), (64, 4096), (64, 1000), (100, 2100), (1500, 1536)]
THREADS = (1, 2, 3, 4)


def _data(shape, dtype, seed=0, hard=False, big_mean=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2 + 0.5
    if hard:
        C = shape[1]
        x[: max(1, shape[0] // 8), C // 3] += 50.0  # first rows far from the rest
        if big_mean:
            x[:, C // 2] = 1.0e3 + rng.standard_normal(shape[0]) * 0.1  # |mean| >> std
    return x.astype(dtype)


def _params(C, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(C) * 0.5 + 1).astype(dtype), rng.standard_normal(C).astype(dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("hard", [False, True], ids=["plain", "hard"])
def test_training_matches_reference(shape, hard, dtype, num_threads):
    x = _data(shape, dtype, hard=hard)
    w, b = _params(shape[1], dtype)
    assert_training_matches_reference(x, w, b, dtype, num_threads)


def assert_training_matches_reference(x, w, b, dtype, num_threads):
    """Training BatchNorm of (N, C) x: output, mean and invstd against float64."""
    y, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True,
                                          num_threads=num_threads)
    ry, rmean, rinv, _, _ = ref_batch_norm(x, w, b, training=True)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=rtol, atol=atol)
    np.testing.assert_allclose(mean.astype(np.float64), rmean, rtol=rtol, atol=atol)
    np.testing.assert_allclose(invstd.astype(np.float64), rinv, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("offset", [0, 1, 5], ids=lambda o: f"out+{o}")
def test_inference_into_misaligned_out(shape, offset, dtype, num_threads):
    """out= starting 0, 1 or 5 elements past an aligned buffer: the flat cuts
    and the tiles store from wherever the output starts."""
    assert_inference_into_out(shape, offset, dtype, num_threads)


def assert_inference_into_out(shape, offset, dtype, num_threads):
    """Inference BatchNorm of (N, C) into an out= starting `offset` elements
    into a guarded buffer: against float64, nothing written outside."""
    x = _data(shape, dtype)
    w, b = _params(shape[1], dtype)
    rng = np.random.default_rng(2)
    rm = rng.standard_normal(shape[1]).astype(dtype)
    rv = (rng.random(shape[1]) + 0.5).astype(dtype)
    buf = np.full(x.size + offset + 1, -777.0, dtype)
    out = buf[offset:offset + x.size].reshape(shape)
    y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, out=out,
                            num_threads=num_threads)
    assert y is out
    ry = ref_batch_norm(x, w, b, rm.copy(), rv.copy(), training=False)[0]
    np.testing.assert_allclose(y.astype(np.float64), ry, *tol(dtype))
    assert np.all(buf[:offset] == -777.0) and buf[-1] == -777.0


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nonfinite_column_stays_in_its_column(shape, dtype):
    x = _data(shape, dtype)
    C = shape[1]
    x[shape[0] // 2, C - 3] = np.inf
    y, mean, _ = fastnorm.batch_norm(x, training=True, return_stats=True, num_threads=2)
    # the column's mean is inf (or NaN where superblocks were merged), its outputs NaN
    assert np.isnan(y[:, C - 3]).all() and not np.isfinite(mean[C - 3])
    finite = np.delete(np.arange(C), C - 3)
    ry, rmean, _, _, _ = ref_batch_norm(x[:, finite], training=True)
    np.testing.assert_allclose(y[:, finite].astype(np.float64), ry, *tol(dtype))
    np.testing.assert_allclose(mean[finite].astype(np.float64), rmean, *tol(dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_same_bits_at_every_thread_count(shape, dtype):
    x = _data(shape, dtype, hard=True)
    w, b = _params(shape[1], dtype)
    dy = _data(shape, dtype, seed=3)
    rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    runs = []
    for nt in THREADS:
        y, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True,
                                              num_threads=nt)
        yi = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False,
                                 num_threads=nt)
        dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, num_threads=nt)
        runs.append((y, mean, invstd, yi, dx, dw, db))
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("shape", [(8, 4096), (64, 1000), (16, 2100)], ids=str)
def test_backward_scale_beyond_float32(shape):
    """A column whose dx scale (weight * invstd) overflows float32 sends its
    slab's dx to the double walk, whichever walk took the sums (the one-walk
    path of few rows, col_bwd_walk, writes dx before it knows): every column
    matches float64, with the same bits at every thread count."""
    dtype = np.float32
    R, C = shape
    k = C // 3
    rng = np.random.default_rng(5)
    x = _data(shape, dtype)
    x[:, k] = 0.5 + 1e-3 * rng.standard_normal(R)      # invstd ~ 1e3
    w, _ = _params(C, dtype)
    w[k] = 1e37                                           # scale ~ 1e40: inf in float32
    dy = _data(shape, dtype, seed=3)
    dy[:, k] *= 1e-12                                     # its dx stays finite
    _, mean, invstd = fastnorm.batch_norm(x, training=True, return_stats=True)
    want_dx, want_dw, want_db = bn_backward64(dy, x, w, 1, True, eps=1e-5)
    rest = np.delete(np.arange(C), k)
    runs = []
    for nt in THREADS:
        dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, num_threads=nt)
        assert np.isfinite(dx).all()
        close(dx[:, rest], want_dx[:, rest], dtype, "dx")
        np.testing.assert_allclose(dx[:, k], want_dx[:, k], rtol=1e-3)
        close(dw, want_dw, dtype, "dweight")
        close(db, want_db, dtype, "dbias")
        runs.append((dx, dw, db))
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_closed_form(shape, training, dtype, num_threads):
    # without the |mean| >> std column: its float64 parameter gradient is only
    # as exact as its condition (|mean| / std = 1e4) allows, beyond close()'s 1e-11
    eps = 0.1
    x = _data(shape, dtype, hard=True, big_mean=False)
    dy = _data(shape, dtype, seed=3)
    w, _ = _params(shape[1], dtype)
    if training:
        x64 = x.astype(np.float64)
        mean64, var64 = x64.mean(0), x64.var(0)
    else:
        rng = np.random.default_rng(4)
        mean64, var64 = rng.standard_normal(shape[1]) * 0.3, rng.random(shape[1]) + 0.5
    want_dx, want_dw, want_db = bn_backward64(dy, x, w, 1, training, (mean64, var64), eps)
    mean, invstd = mean64.astype(dtype), (1 / np.sqrt(var64 + eps)).astype(dtype)
    dx, dw, db = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, training=training,
                                              num_threads=num_threads)
    close(dx, want_dx, dtype, "dx")
    close(dw, want_dw, dtype, "dweight")
    close(db, want_db, dtype, "dbias")


# (2, 8, 8, 1280) and (2, 8, 8, 640): groups of 40 and 20 channels, which the
# one-walk path of few rows (col_norm_fused) takes in items of whole groups
@pytest.mark.parametrize("shape", [(2, 4, 4, 2048), (3, 2, 5, 1024), (2, 8, 8, 1280), (2, 8, 8, 640)], ids=str)
def test_group_norm_channels_last(shape, dtype):
    """Channels-last GroupNorm of few pixels: sums cut across the columns of a
    sample, forward and backward against float64, same bits at 1-4 threads."""
    groups = 32
    x = _data((shape[0] * shape[1] * shape[2], shape[3]), dtype, hard=True).reshape(shape)
    dy = _data((x.size // shape[3], shape[3]), dtype, seed=3).reshape(shape)
    w, b = _params(shape[3], dtype)
    runs = []
    for nt in THREADS:
        y, mean, rstd = fastnorm.group_norm(x, groups, w, b, channel_axis=-1, return_stats=True,
                                            num_threads=nt)
        dx, dw, db = fastnorm.group_norm_backward(dy, x, groups, mean, rstd, w, channel_axis=-1,
                                                  num_threads=nt)
        runs.append((y, mean, rstd, dx, dw, db))
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)
    y, mean, rstd, dx, dw, db = runs[0]
    N, C = shape[0], shape[3]
    X = x.astype(np.float64).reshape(N, -1, groups, C // groups)
    mu = X.mean(axis=(1, 3), keepdims=True)
    var = X.var(axis=(1, 3), keepdims=True)
    xhat = (X - mu) / np.sqrt(var + 1e-5)
    ry = (xhat.reshape(x.shape) * w.astype(np.float64) + b.astype(np.float64))
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=rtol, atol=atol)
    G = dy.astype(np.float64).reshape(X.shape) * w.astype(np.float64).reshape(1, 1, groups, -1)
    M = X.shape[1] * X.shape[3]
    r = 1 / np.sqrt(var + 1e-5)
    want_dx = r * (G - G.sum(axis=(1, 3), keepdims=True) / M
                   - xhat * (G * xhat).sum(axis=(1, 3), keepdims=True) / M)
    close(dx, want_dx.reshape(x.shape), dtype, "dx")
    D = dy.astype(np.float64).reshape(-1, C)
    close(dw, (D * xhat.reshape(-1, C)).sum(0), dtype, "dweight")
    close(db, D.sum(0), dtype, "dbias")


@pytest.mark.parametrize("shape", [(2, 8, 8, 1280), (3, 4, 4, 2048)], ids=str)
def test_group_norm_channels_last_backward_rstd_beyond_float32(shape):
    """A group whose given rstd overflows float32 (its dy zero: its dx is 0) sends
    its sample's dx to the double walk, after the one walk over items of whole
    groups has written it: every group against float64, same bits at 1-4 threads."""
    groups, dtype = 32, np.float32
    N, C = shape[0], shape[3]
    rows = N * shape[1] * shape[2]
    x = _data((rows, C), dtype).reshape(shape)
    dy = _data((rows, C), dtype, seed=3).reshape(shape)
    w, b = _params(C, dtype)
    _, mean, rstd = fastnorm.group_norm(x, groups, w, b, channel_axis=-1, return_stats=True)
    rstd = rstd.astype(np.float64)
    rstd[1, 5] = 1e39
    kg = C // groups
    dy[1, ..., 5 * kg:6 * kg] = 0
    runs = [fastnorm.group_norm_backward(dy, x, groups, mean, rstd, w, channel_axis=-1, num_threads=nt)
            for nt in THREADS]
    for other in runs[1:]:
        for a, c in zip(runs[0], other):
            np.testing.assert_array_equal(a, c)
    dx, dw, db = runs[0]
    X = x.astype(np.float64).reshape(N, -1, groups, kg)
    mu = mean.astype(np.float64).reshape(N, 1, groups, 1)
    r = rstd.reshape(N, 1, groups, 1)
    xhat = (X - mu) * r
    G = dy.astype(np.float64).reshape(X.shape) * w.astype(np.float64).reshape(1, 1, groups, -1)
    M = X.shape[1] * kg
    want = r * (G - G.sum(axis=(1, 3), keepdims=True) / M
                - xhat * (G * xhat).sum(axis=(1, 3), keepdims=True) / M)
    assert np.isfinite(dx).all()
    assert (dx[1, ..., 5 * kg:6 * kg] == 0).all()
    close(dx, want.reshape(x.shape), dtype, "dx")
    D = dy.astype(np.float64).reshape(N, -1, C)
    close(dw, (D * xhat.reshape(N, -1, C)).sum((0, 1)), dtype, "dweight")
    close(db, D.sum((0, 1)), dtype, "dbias")


@pytest.mark.parametrize("shape", [(2, 4100), (64, 1000), (64, 4096)], ids=str)
def test_same_bits_wherever_out_starts(shape, dtype):
    """Outputs starting anywhere within a vector: the flat cuts and the tiles
    store from the output's first vector boundary on, so the values a partial
    vector computes must be the full vectors' bits (multiply-adds written out)."""
    x = _data(shape, dtype, hard=True)
    w, b = _params(shape[1], dtype)
    dy = _data(shape, dtype, seed=3)
    rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    _, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
    calls = [
        lambda o, nt: fastnorm.batch_norm(x, w, b, training=True, out=o, num_threads=nt),
        lambda o, nt: fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                          training=False, out=o, num_threads=nt),
        lambda o, nt: fastnorm.batch_norm_backward(dy, x, mean, invstd, w, out=o, num_threads=nt),
    ]
    for call in calls:
        results = []
        for offset in (0, 1, 3, 5, 8):
            for nt in (1, 2):
                buf = np.empty(x.size + 8, dtype)
                out = buf[offset:offset + x.size].reshape(shape)
                call(out, nt)
                results.append(out.copy())
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])
