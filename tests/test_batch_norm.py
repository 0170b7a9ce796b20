"""fastnorm.batch_norm against the float64 reference (PyTorch semantics)."""

import numpy as np
import pytest

import fastnorm
from reference import (
    OUT_MODES,
    batch_norm as ref_batch_norm,
    make_layout,
    make_out,
    naive_batch_norm_f32,
    tol,
)


def nchan(shape, channel_axis):
    return shape[channel_axis]


def make_args(rng, shape, channel_axis, dtype, affine="both", mode="train"):
    """mode: "train" (no running stats), "train_rs" (training=True with running
    stats), "eval" (running stats, training=None), "eval_explicit"
    (training=False)."""
    C = nchan(shape, channel_axis)
    w = b = rm = rv = None
    if affine in ("weight", "both"):
        w = (rng.standard_normal(C) * 0.5 + 1).astype(dtype)
    if affine in ("bias", "both"):
        b = rng.standard_normal(C).astype(dtype)
    training = None
    if mode != "train":
        rm = rng.standard_normal(C).astype(dtype)
        rv = (rng.random(C) + 0.5).astype(dtype)
    if mode == "train_rs":
        training = True
    elif mode == "eval_explicit":
        training = False
    return w, b, rm, rv, training


def run_and_check(x, w, b, rm, rv, training, channel_axis=1, momentum=0.1, eps=1e-5,
                  out_mode=None, return_stats=False, num_threads=None):
    dtype = x.dtype
    x_orig = x.copy()
    params_orig = [None if p is None else p.copy() for p in (w, b)]
    rm_orig = None if rm is None else rm.copy()
    rv_orig = None if rv is None else rv.copy()
    ry, rmean, rinvstd, new_rm, new_rv = ref_batch_norm(
        x_orig, w, b, rm_orig, rv_orig, training=training, momentum=momentum, eps=eps,
        channel_axis=channel_axis)
    out, check_guard = make_out(x, out_mode)
    kw = {}
    if out is not None:
        kw["out"] = out
    if training is not None:
        kw["training"] = training
    res = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, momentum=momentum,
                              eps=eps, channel_axis=channel_axis, return_stats=return_stats,
                              num_threads=num_threads, **kw)
    if return_stats:
        assert isinstance(res, tuple) and len(res) == 3
        y, mean, invstd = res
    else:
        y = res
    assert isinstance(y, np.ndarray)
    assert y.shape == x.shape and y.dtype == dtype
    if out is not None:
        assert y is out
    check_guard()
    if out_mode != "inplace":
        np.testing.assert_array_equal(x, x_orig)
    for p, po in zip((w, b), params_orig):
        if p is not None:
            np.testing.assert_array_equal(p, po)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y.astype(np.float64), ry, rtol=rtol, atol=atol)
    C = x.shape[channel_axis]
    if return_stats:
        assert np.shape(mean) == (C,) and np.shape(invstd) == (C,)
        assert np.asarray(mean).dtype == dtype and np.asarray(invstd).dtype == dtype
        np.testing.assert_allclose(np.asarray(mean, np.float64), rmean, rtol=rtol, atol=atol)
        np.testing.assert_allclose(np.asarray(invstd, np.float64), rinvstd, rtol=rtol,
                                   atol=atol)
    if rm is not None:
        # updated in place (training) or untouched (eval)
        np.testing.assert_allclose(rm.astype(np.float64), new_rm, rtol=rtol, atol=atol)
        np.testing.assert_allclose(rv.astype(np.float64), new_rv, rtol=rtol, atol=atol)
        is_training = training if training is not None else False
        if not is_training:
            assert rm.tobytes() == rm_orig.tobytes() and rv.tobytes() == rv_orig.tobytes()
    return res


SHAPES = [(17, 5), (1000, 3), (4, 5, 7), (2, 3, 5, 7), (2, 3, 2, 3, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("mode", ["train", "train_rs", "eval"])
@pytest.mark.parametrize("affine", ["none", "both"])
def test_batch_norm_values(shape, channel_axis, mode, affine, dtype, layout, rng):
    x = make_layout((rng.standard_normal(shape) * 2 + 0.5).astype(dtype), layout)
    w, b, rm, rv, training = make_args(rng, shape, channel_axis, dtype, affine, mode)
    run_and_check(x, w, b, rm, rv, training, channel_axis=channel_axis)


@pytest.mark.parametrize("shape,channel_axis", [((9, 4), 1), ((9, 4), -1),
                                                ((3, 4, 5, 6), 1), ((3, 4, 5, 6), -1),
                                                ((3, 4, 5, 6), 2), ((4, 3, 5), 0)],
                         ids=str)
@pytest.mark.parametrize("out_mode", OUT_MODES)
@pytest.mark.parametrize("return_stats", [False, True])
@pytest.mark.parametrize("mode", ["train_rs", "eval_explicit"])
@pytest.mark.parametrize("layout", ["C", "F", "negative", "permuted"])
def test_batch_norm_out_and_stats(shape, channel_axis, out_mode, return_stats, mode, layout,
                                  dtype, rng, num_threads):
    x = make_layout((rng.standard_normal(shape) * 2 - 1).astype(dtype), layout)
    w, b, rm, rv, training = make_args(rng, shape, channel_axis, dtype, "both", mode)
    run_and_check(x, w, b, rm, rv, training, channel_axis=channel_axis, out_mode=out_mode,
                  return_stats=return_stats, num_threads=num_threads)


@pytest.mark.parametrize("affine", ["weight", "bias"])
def test_batch_norm_weight_or_bias_only(affine, dtype, rng):
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    w, b, rm, rv, training = make_args(rng, x.shape, 1, dtype, affine, "train_rs")
    run_and_check(x, w, b, rm, rv, training, return_stats=True)


def test_batch_norm_2d_is_per_column(dtype):
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]], dtype=dtype)
    y = fastnorm.batch_norm(x, eps=0.0)
    # column 0: mean 3, biased var 8/3; column 1: mean 20, var 200
    np.testing.assert_allclose(y[:, 0], np.array([-2, 0, 2]) / np.sqrt(8 / 3), rtol=1e-6)
    np.testing.assert_allclose(y[:, 1], np.array([-10, -10, 20]) / np.sqrt(200), rtol=1e-6)


def test_batch_norm_running_stats_hand_computed(dtype):
    """N=2 values per channel: unbiased var = 2 * biased var."""
    x = np.array([[1.0, 0.0], [3.0, 4.0]], dtype=dtype)   # means (2, 2); var (1, 4)
    rm = np.array([0.0, 10.0], dtype=dtype)
    rv = np.array([1.0, 1.0], dtype=dtype)
    y, mean, invstd = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True,
                                          momentum=0.1, eps=0.0, return_stats=True)
    np.testing.assert_allclose(mean, [2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(invstd, [1.0, 0.5], rtol=1e-6)  # biased var normalizes
    np.testing.assert_allclose(y, [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(rm, [0.9 * 0 + 0.1 * 2, 0.9 * 10 + 0.1 * 2], rtol=1e-6)
    # unbiased: channel 0 var 2, channel 1 var 8
    np.testing.assert_allclose(rv, [0.9 + 0.1 * 2, 0.9 + 0.1 * 8], rtol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("shape,channel_axis", [((8, 3), 1), ((4, 3, 5, 5), 1),
                                                ((4, 5, 5, 3), -1), ((2, 3, 1, 1), 1)],
                         ids=str)
def test_batch_norm_running_update_momentum(momentum, shape, channel_axis, dtype, rng,
                                            num_threads):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b, rm, rv, _ = make_args(rng, shape, channel_axis, dtype, "both", "train_rs")
    rm_id, rv_id = id(rm), id(rv)
    run_and_check(x, w, b, rm, rv, True, channel_axis=channel_axis, momentum=momentum,
                  return_stats=True, num_threads=num_threads)
    assert id(rm) == rm_id and id(rv) == rv_id


def test_batch_norm_repeated_training_steps(dtype, rng):
    """Several steps: running stats converge as PyTorch's would."""
    C = 4
    rm = np.zeros(C, dtype)
    rv = np.ones(C, dtype)
    erm = np.zeros(C)
    erv = np.ones(C)
    for step in range(5):
        x = (rng.standard_normal((16, C, 3)) * (step + 1) + step).astype(dtype)
        fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True, momentum=0.2)
        _, _, _, erm, erv = ref_batch_norm(x, None, None, erm, erv, training=True,
                                           momentum=0.2)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(rm, erm, rtol=rtol, atol=atol)
    np.testing.assert_allclose(rv, erv, rtol=rtol, atol=atol)


def test_batch_norm_training_none_with_running_stats_is_eval(dtype, rng):
    x = rng.standard_normal((10, 3, 4)).astype(dtype)
    rm = np.array([5.0, -1.0, 0.0], dtype)
    rv = np.array([4.0, 1.0, 0.25], dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = fastnorm.batch_norm(x, running_mean=rm, running_var=rv,
                                          return_stats=True)
    assert rm.tobytes() == rm0.tobytes() and rv.tobytes() == rv0.tobytes()
    ry = (x.astype(np.float64) - rm0[None, :, None]) / np.sqrt(rv0[None, :, None] + 1e-5)
    np.testing.assert_allclose(y, ry, *tol(dtype))
    np.testing.assert_allclose(mean, rm0, rtol=1e-7)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(rv0.astype(np.float64) + 1e-5), rtol=1e-6)


def test_batch_norm_training_without_running_stats(dtype, rng):
    x = rng.standard_normal((10, 3)).astype(dtype)
    y = fastnorm.batch_norm(x, training=True)
    np.testing.assert_allclose(y, ref_batch_norm(x)[0], *tol(dtype))


@pytest.mark.parametrize("n", [2, 3, 7, 15, 16, 17, 31, 33, 65, 1000])
def test_batch_norm_lengths(n, dtype, rng, num_threads):
    # per-channel count n on both layouts, and n channels
    for shape, ca in (((n, 3), 1), ((n, 3), -1), ((2, 3, n), 1), ((2, n, 3), -1),
                      ((4, n), 1), ((1, n, 2), 1), ((2, 1, n), -1)):
        x = (rng.standard_normal(shape) + 1).astype(dtype)
        w, b, rm, rv, training = make_args(rng, shape, ca, dtype, "both", "train_rs")
        run_and_check(x, w, b, rm, rv, training, channel_axis=ca, return_stats=True,
                      num_threads=num_threads)


@pytest.mark.parametrize("shape,channel_axis", [((1, 3), 1), ((1, 3, 1, 1), 1),
                                                ((1, 1, 1, 3), -1)], ids=str)
def test_batch_norm_one_value_per_channel_eval_ok(shape, channel_axis, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    w, b, rm, rv, training = make_args(rng, shape, channel_axis, dtype, "both", "eval")
    run_and_check(x, w, b, rm, rv, training, channel_axis=channel_axis, return_stats=True)


@pytest.mark.parametrize("shape,channel_axis", [((0, 4), 1), ((0, 4), -1), ((0, 4, 3, 3), 1),
                                                ((0, 3, 3, 4), -1), ((2, 4, 0), 1),
                                                ((3, 0, 4), -1)], ids=str)
@pytest.mark.parametrize("mode", ["train", "train_rs", "eval"])
def test_batch_norm_zero_size_batch(shape, channel_axis, mode, dtype, rng):
    x = np.zeros(shape, dtype=dtype)
    w, b, rm, rv, training = make_args(rng, shape, channel_axis, dtype, "both", mode)
    rm0 = None if rm is None else rm.copy()
    rv0 = None if rv is None else rv.copy()
    kw = {} if training is None else {"training": training}
    y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                            channel_axis=channel_axis, **kw)
    assert isinstance(y, np.ndarray) and y.shape == shape and y.dtype == dtype
    if rm is not None:
        assert rm.tobytes() == rm0.tobytes(), "running_mean changed by a zero-size batch"
        assert rv.tobytes() == rv0.tobytes(), "running_var changed by a zero-size batch"
    out = np.empty(shape, dtype)
    assert fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                               channel_axis=channel_axis, out=out, **kw) is out


@pytest.mark.parametrize("value", [0.0, 2.5, 0.1])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_batch_norm_constant_channel_gives_bias(value, channel_axis, dtype, rng, num_threads):
    shape = (4, 5, 6, 7) if channel_axis == 1 else (4, 6, 7, 5)
    x = rng.standard_normal(shape).astype(dtype)
    sel = [slice(None)] * 4
    sel[channel_axis] = 2
    x[tuple(sel)] = value
    b = rng.standard_normal(5).astype(dtype)
    w = rng.standard_normal(5).astype(dtype)
    y = fastnorm.batch_norm(x, w, b, channel_axis=channel_axis, num_threads=num_threads)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[tuple(sel)], b[2], atol=1e-4)
    np.testing.assert_allclose(y, ref_batch_norm(x, w, b, channel_axis=channel_axis)[0],
                               *tol(dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("shape,channel_axis", [((4, 5, 6, 7), 1), ((4, 6, 7, 5), -1),
                                                ((300, 5), 1)], ids=str)
def test_batch_norm_nonfinite_stays_in_its_channel(bad, shape, channel_axis, dtype, rng,
                                                   num_threads):
    x = rng.standard_normal(shape).astype(dtype)
    sel = [1] * x.ndim
    sel[channel_axis] = 3
    x[tuple(sel)] = bad
    rm = np.zeros(5, dtype)
    rv = np.ones(5, dtype)
    y = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True,
                            channel_axis=channel_axis, num_threads=num_threads)
    yc = np.moveaxis(y, channel_axis, 0)
    xc = np.moveaxis(x, channel_axis, 0)
    good = [0, 1, 2, 4]
    assert np.all(np.isfinite(yc[good]))
    assert np.all(np.isfinite(rm[good])) and np.all(np.isfinite(rv[good]))
    assert not np.all(np.isfinite(yc[3]))
    assert not np.isfinite(rm[3]) or not np.isfinite(rv[3])
    xg = np.moveaxis(xc[good], 0, channel_axis)
    ry, _, _, erm, erv = ref_batch_norm(xg, None, None, np.zeros(4), np.ones(4),
                                        training=True, channel_axis=channel_axis)
    np.testing.assert_allclose(np.moveaxis(yc[good], 0, channel_axis), ry, *tol(dtype))
    np.testing.assert_allclose(rm[good], erm, *tol(dtype))
    np.testing.assert_allclose(rv[good], erv, *tol(dtype))
    if bad != bad:
        assert np.all(np.isnan(yc[3]))


@pytest.mark.parametrize("loc", [1e4, 1e6])
@pytest.mark.parametrize("shape,channel_axis", [((16, 4, 16, 16), 1), ((16, 16, 16, 4), -1),
                                                ((4096, 8), 1)], ids=str)
def test_batch_norm_large_mean_float32(loc, shape, channel_axis, rng, num_threads):
    """float32, mean 1e4 / 1e6, std 1: as accurate as float64 rounded to float32.

    The float32 E[x^2]-E[x]^2 formula is computed too and must fail the same
    tolerance by > 100x, so the test provably detects it.
    """
    x = (loc + rng.standard_normal(shape)).astype(np.float32)
    C = shape[channel_axis]
    rm = np.zeros(C, np.float32)
    rv = np.ones(C, np.float32)
    y = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True,
                            channel_axis=channel_axis, num_threads=num_threads)
    ry, _, _, erm, erv = ref_batch_norm(x, None, None, np.zeros(C), np.ones(C),
                                        training=True, channel_axis=channel_axis)
    limit = 16 * np.finfo(np.float32).eps * (1 + np.abs(ry))
    own = np.abs(ry.astype(np.float32).astype(np.float64) - ry)
    assert np.all(own <= limit)
    err = np.abs(y.astype(np.float64) - ry)
    assert np.all(err <= limit), f"max err {err.max():.3g}, reference rounding {own.max():.3g}"
    np.testing.assert_allclose(rm, erm, rtol=1e-6)
    np.testing.assert_allclose(rv, erv, rtol=1e-5)
    naive = naive_batch_norm_f32(x, channel_axis=channel_axis).astype(np.float64)
    with np.errstate(invalid="ignore"):
        naive_ratio = np.nanmax(np.abs(naive - ry) / limit) if np.any(np.isfinite(naive)) else np.inf
    assert (not np.all(np.isfinite(naive))) or naive_ratio > 100


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_batch_norm_threads_agree(channel_axis, dtype, rng):
    shape = (8, 16, 13, 11) if channel_axis == 1 else (8, 13, 11, 16)
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    res = []
    for nt in (1, 2):
        rm = np.zeros(16, dtype)
        rv = np.ones(16, dtype)
        y, m, s = fastnorm.batch_norm(x, running_mean=rm, running_var=rv, training=True,
                                      channel_axis=channel_axis, return_stats=True,
                                      num_threads=nt)
        res.append((y, m, s, rm, rv))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


# ------------------------------------------------------------- unusual inputs
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_batch_norm_unaligned_input(channel_axis, dtype, rng):
    from reference import unaligned_copy
    x = rng.standard_normal((5, 7, 9)).astype(dtype)
    y = fastnorm.batch_norm(unaligned_copy(x), channel_axis=channel_axis)
    np.testing.assert_allclose(y, ref_batch_norm(x, channel_axis=channel_axis)[0], *tol(dtype))


def test_batch_norm_zero_stride_input(dtype, rng):
    """x broadcast along the batch: every channel sees repeats of one image."""
    img = rng.standard_normal((3, 4, 5)).astype(dtype)
    x = np.broadcast_to(img, (6, 3, 4, 5))
    y = fastnorm.batch_norm(x)
    np.testing.assert_allclose(y, ref_batch_norm(x)[0], *tol(dtype))
    xc = np.broadcast_to(rng.standard_normal((1, 3)).astype(dtype), (10, 3))  # constant columns
    b = np.array([1.0, -2.0, 3.0], dtype)
    np.testing.assert_allclose(fastnorm.batch_norm(xc, None, b), np.broadcast_to(b, (10, 3)),
                               atol=1e-5)


def test_batch_norm_huge_finite_float32_stays_finite(rng):
    x = (rng.standard_normal((50, 4)) * 1e37).astype(np.float32)
    x[0, 0], x[1, 0] = 3e38, -3e38
    y = fastnorm.batch_norm(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref_batch_norm(x)[0], *tol(np.float32))


@pytest.mark.parametrize("shape", [(40, 6), (70001, 2)], ids=str)
def test_batch_norm_partially_overlapping_out(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    view = x[::-1]
    expected = ref_batch_norm(view.copy())[0]
    try:
        y = fastnorm.batch_norm(view, out=x)
    except ValueError as e:
        assert "out" in str(e)
        return
    np.testing.assert_allclose(y, expected, *tol(np.float32))
