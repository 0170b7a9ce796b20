"""Backward calls whose x, dy and dx are laid out differently.

The kernels read x with its own strides and dy with dx's: a strided view of x
(every other row, a slice of a padded buffer) with a whole dy takes no copy, dx
coming out in dy's order; a dy in another order than dx is copied into dx's
first. Each case runs with x a padded view (dy whole), with dy a padded view (x
whole), with both padded differently and with an out= of a third layout, and
must give what the same call gives on C-contiguous copies of its inputs. The
cases reach each walk of the backward kernels: rows piped with grouped
parameter partials, rows split into blocks across threads, segments of several
rows, BatchNorm's short planes walked row-wise and joined, InstanceNorm's small
planes a vector of units at a time, GroupNorm's per-channel planes, short
segments as columns, and the column walk (rows, flat slabs, per-row parameters,
groups of columns).
"""

import numpy as np
import pytest

import fastnorm


def padded(rng, shape, dtype, pad_axis, how):
    """Standard normal values of `shape` as a view into a larger buffer: every
    other index along pad_axis ("every other") or the first shape[pad_axis] of
    shape[pad_axis] + 3 ("sliced")."""
    big = list(shape)
    big[pad_axis] = 2 * shape[pad_axis] if how == "every other" else shape[pad_axis] + 3
    a = rng.standard_normal(big).astype(dtype)
    index = [slice(None)] * len(shape)
    index[pad_axis] = slice(None, None, 2) if how == "every other" else slice(0, shape[pad_axis])
    v = a[tuple(index)]
    assert v.shape == tuple(shape) and not v.flags.c_contiguous
    return v


def layer_norm_case(axis, weighted=True):
    def run(rng, x, dy, out, nt):
        red = (axis,) if isinstance(axis, int) else axis
        pshape = tuple(x.shape[a] for a in red)
        w = rng.standard_normal(pshape).astype(x.dtype) if weighted else None
        _, m, r = fastnorm.layer_norm(np.ascontiguousarray(x), w, axis=axis, return_stats=True)
        return lambda x_, dy_, out_: fastnorm.layer_norm_backward(dy_, x_, m, r, w, axis=axis, out=out_,
                                                                  num_threads=nt)
    return run


def rms_norm_case():
    def run(rng, x, dy, out, nt):
        w = rng.standard_normal(x.shape[-1]).astype(x.dtype)
        _, r = fastnorm.rms_norm(np.ascontiguousarray(x), w, return_stats=True)
        return lambda x_, dy_, out_: fastnorm.rms_norm_backward(dy_, x_, r, w, out=out_, num_threads=nt)
    return run


def batch_norm_case(channel_axis, training):
    def run(rng, x, dy, out, nt):
        C = x.shape[channel_axis]
        w = rng.standard_normal(C).astype(x.dtype)
        _, m, v = fastnorm.batch_norm(np.ascontiguousarray(x), w, channel_axis=channel_axis, training=True,
                                      return_stats=True)
        invstd = 1.0 / np.sqrt(v + 1e-5)
        return lambda x_, dy_, out_: fastnorm.batch_norm_backward(dy_, x_, m, invstd, w,
                                                                  channel_axis=channel_axis, training=training,
                                                                  out=out_, num_threads=nt)
    return run


def group_norm_case(groups, channel_axis=1, weighted=True):
    def run(rng, x, dy, out, nt):
        C = x.shape[channel_axis]
        w = rng.standard_normal(C).astype(x.dtype) if weighted else None
        _, m, r = fastnorm.group_norm(np.ascontiguousarray(x), groups, w, channel_axis=channel_axis,
                                      return_stats=True)
        return lambda x_, dy_, out_: fastnorm.group_norm_backward(dy_, x_, groups, m, r, w,
                                                                  channel_axis=channel_axis, out=out_,
                                                                  num_threads=nt)
    return run


def instance_norm_case():
    def run(rng, x, dy, out, nt):
        w = rng.standard_normal(x.shape[1]).astype(x.dtype)
        _, m, r = fastnorm.instance_norm(np.ascontiguousarray(x), w, return_stats=True)
        return lambda x_, dy_, out_: fastnorm.instance_norm_backward(dy_, x_, m, r, w, out=out_, num_threads=nt)
    return run


# (label, case, shape, padded axis, how)
CASES = [
    ("LN rows piped, grouped partials", layer_norm_case(-1), (512, 64), 0, "every other"),
    ("LN rows sliced", layer_norm_case(-1), (300, 130), 1, "sliced"),
    ("LN rows without weight", layer_norm_case(-1, weighted=False), (40, 3000), 0, "every other"),
    ("LN few long rows, split in blocks", layer_norm_case(-1), (2, 40000), 0, "every other"),
    ("LN segments of several rows", layer_norm_case((1, 2)), (6, 4, 64), 2, "sliced"),
    ("LN over axis 0: columns, parameter per row", layer_norm_case(0), (64, 300), 1, "sliced"),
    ("RMS rows", rms_norm_case(), (256, 96), 0, "every other"),
    ("BN short planes row-wise", batch_norm_case(1, True), (8, 16, 7, 7), 1, "every other"),
    ("BN short planes joined", batch_norm_case(1, True), (8, 16, 7, 7), 0, "every other"),
    ("BN planes", batch_norm_case(1, True), (4, 8, 40, 40), 1, "every other"),
    ("BN inference planes", batch_norm_case(1, False), (4, 8, 20, 20), 0, "every other"),
    ("BN short segments as columns", batch_norm_case(1, True), (64, 16, 2, 2), 0, "every other"),
    ("BN 2-D columns", batch_norm_case(1, True), (1000, 64), 1, "sliced"),
    ("BN 2-D inference", batch_norm_case(1, False), (1000, 64), 1, "sliced"),
    ("BN 2-D narrow", batch_norm_case(1, True), (3000, 3), 1, "sliced"),
    ("BN channels-last, slabs flat", batch_norm_case(3, True), (6, 8, 8, 32), 0, "every other"),
    ("BN channels-last rows", batch_norm_case(3, True), (4, 8, 8, 32), 3, "sliced"),
    ("LN over the middle axis: column slabs, tiles", layer_norm_case(1, weighted=False), (4, 16, 1024), 0,
     "every other"),
    ("IN small planes", instance_norm_case(), (4, 8, 7, 7), 1, "every other"),
    ("GN per-channel planes", group_norm_case(8), (4, 32, 8, 8), 0, "every other"),
    ("GN per-channel planes, few units", group_norm_case(2), (1, 8, 16, 16), 3, "sliced"),
    ("GN without weight", group_norm_case(4, weighted=False), (3, 16, 9, 9), 0, "every other"),
    ("GN channels-last, groups of columns", group_norm_case(4, channel_axis=3), (4, 6, 6, 32), 0, "every other"),
]


def _tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("which", ["x padded", "dy padded", "both padded", "x padded, out F"])
@pytest.mark.parametrize("label, case, shape, axis, how", CASES, ids=[c[0] for c in CASES])
def test_backward_of_padded_views(label, case, shape, axis, how, which, num_threads, dtype, rng):
    if which == "dy padded":
        x = rng.standard_normal(shape).astype(dtype)
    else:
        x = padded(rng, shape, dtype, axis, how)
    if which == "x padded":
        dy = rng.standard_normal(shape).astype(dtype)
    else:
        # both padded: dy every other index along the next axis of more than one
        other = which == "both padded"
        nxt = next(a % len(shape) for a in range(axis + 1, axis + len(shape)) if shape[a % len(shape)] > 1)
        dy = padded(rng, shape, dtype, nxt if other else axis, "every other" if other else how)
    out = np.empty(shape, dtype, order="F") if which == "x padded, out F" else None
    backward = case(rng, x, dy, out, num_threads)
    got = backward(x, dy, out)
    want = backward(np.ascontiguousarray(x), np.ascontiguousarray(dy), None)
    if out is not None:
        assert got[0] is out
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, **_tolerance(dtype))



def test_padded_x_with_coefficients_beyond_float32(rng):
    """A float32 BatchNorm backward whose rstd (1e39, given in float64) is not
    finite in float32 takes the float64 row walk (col_dx_rows_exact): x padded,
    dy whole, against the contiguous call."""
    x = padded(rng, (1000, 64), np.float32, 1, "sliced")
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = np.full(64, 1e-6, np.float32)
    mean, invstd = np.zeros(64), np.full(64, 1e39)
    with np.errstate(over="ignore"):     # dweight (about 1e41) overflows float32
        got = fastnorm.batch_norm_backward(dy, x, mean, invstd, w, training=False)[0]
        want = fastnorm.batch_norm_backward(dy, np.ascontiguousarray(x), mean, invstd, w, training=False)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-6)
