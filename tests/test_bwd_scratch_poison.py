"""The backward fast paths hand the kernels a scratch block that is not zeroed
(per-unit sums, corrected means, parameter gradients): every kernel must write
each value it reads. With the block filled with NaN first
(`_ext.poison_bwd_buffers`), every call must give the bits it gives without.
"""

import numpy as np
import pytest

import fastnorm
from fastnorm import _ext


@pytest.fixture
def poisoned():
    _ext.poison_bwd_buffers(True)
    try:
        yield
    finally:
        _ext.poison_bwd_buffers(False)


def _rows(op, shape, weighted):
    def call(rng, dtype, nt):
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal(shape[-1]).astype(dtype) if weighted else None
        if op == "layer":
            _, m, r = fastnorm.layer_norm(x, w, return_stats=True)
            return lambda: fastnorm.layer_norm_backward(dy, x, m, r, w, num_threads=nt)
        _, r = fastnorm.rms_norm(x, w, return_stats=True)
        return lambda: fastnorm.rms_norm_backward(dy, x, r, w, num_threads=nt)
    return call


def _batch(shape, channel_axis, training, weighted=True):
    def call(rng, dtype, nt):
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        C = shape[channel_axis]
        w = rng.standard_normal(C).astype(dtype) if weighted else None
        _, m, v = fastnorm.batch_norm(x, w, channel_axis=channel_axis, training=True, return_stats=True)
        inv = (1 / np.sqrt(v + 1e-5)).astype(dtype)
        return lambda: fastnorm.batch_norm_backward(dy, x, m, inv, w, channel_axis=channel_axis,
                                                    training=training, num_threads=nt)
    return call


def _grouped(shape, groups, channel_axis=1, weighted=True):
    def call(rng, dtype, nt):
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        C = shape[channel_axis]
        w = rng.standard_normal(C).astype(dtype) if weighted else None
        if groups == -1:
            _, m, r = fastnorm.instance_norm(x, w, channel_axis=channel_axis, return_stats=True)
            return lambda: fastnorm.instance_norm_backward(dy, x, m, r, w, channel_axis=channel_axis,
                                                           num_threads=nt)
        _, m, r = fastnorm.group_norm(x, groups, w, channel_axis=channel_axis, return_stats=True)
        return lambda: fastnorm.group_norm_backward(dy, x, groups, m, r, w, channel_axis=channel_axis,
                                                    num_threads=nt)
    return call


CASES = {
    "LN (32, 512)": _rows("layer", (32, 512), True),
    "LN (4096, 64) grouped partials": _rows("layer", (4096, 64), True),
    "LN (2, 40000) split rows": _rows("layer", (2, 40000), True),
    "LN no weight": _rows("layer", (64, 300), False),
    "RMS (512, 64)": _rows("rms", (512, 64), True),
    "RMS no weight": _rows("rms", (64, 300), False),
    "BN (8, 4096) train": _batch((8, 4096), 1, True),
    "BN (8, 4096) eval": _batch((8, 4096), 1, False),
    "BN (30000, 3) narrow": _batch((30000, 3), 1, True),
    "BN (4096, 40) narrow": _batch((4096, 40), 1, True),
    "BN NCHW (4, 16, 7, 7)": _batch((4, 16, 7, 7), 1, True),
    "BN NCHW (2, 8, 40, 40) no weight": _batch((2, 8, 40, 40), 1, True, weighted=False),
    "BN NHWC (4, 7, 7, 16)": _batch((4, 7, 7, 16), 3, True),
    "BN (256, 2048, 1, 1)": _batch((256, 2048, 1, 1), 1, True),
    "GN (2, 32, 8, 8)": _grouped((2, 32, 8, 8), 8),
    "GN no weight": _grouped((2, 32, 8, 8), 8, weighted=False),
    "GN (256, 2048, 1, 1)": _grouped((256, 2048, 1, 1), 32),
    "GN channels-last": _grouped((4, 6, 6, 32), 4, channel_axis=3),
    "IN (4, 8, 7, 7)": _grouped((4, 8, 7, 7), -1),
}


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_poisoned_scratch_gives_the_same_bits(name, num_threads, dtype, poisoned):
    rng = np.random.default_rng(7)
    backward = CASES[name](rng, dtype, num_threads)
    got = backward()
    _ext.poison_bwd_buffers(False)
    want = backward()
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, w)

