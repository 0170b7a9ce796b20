"""The partial vectors at both ends of a row (LayerNorm, RMSNorm, InstanceNorm,
and the backward's dx rows).

A row is stored from its output's first vector boundary on. Where masked stores
are slow (AVX2) or scalar (the generic path), the partial vectors at the row's two
ends are stored as whole vectors laid over their neighbours, the overlapped values
written twice (src_c norm_row_fast, norm_rows2_fast, bwd_dx). In place (out=x)
every vector that such a store overlaps must be computed before the store. These
tests take row lengths with and without a partial vector at either end, x and out
at every element offset from a 64-byte boundary, and in place, on every SIMD path
the CPU supports, and require the bits of the aligned output and the float64
reference's values.
"""

import numpy as np
import pytest

import fastnorm
from backward_reference import layer_norm_backward as ref_layer_norm_backward
from backward_reference import rms_norm_backward as ref_rms_norm_backward
from reference import layer_norm as ref_layer_norm
from reference import rms_norm as ref_rms_norm
from reference import tol

# rows of one and a bit, two, and many vectors; past 1 KiB (float32 257, float64
# 130 values and more) rows are stored from a vector boundary
LENGTHS = [9, 16, 17, 23, 40, 100, 130, 257, 300, 1030]


def _at(shape, dtype, offset):
    """A C-contiguous array whose data starts `offset` elements past a 64-byte boundary."""
    size = int(np.prod(shape))
    buf = np.empty(size + 64, dtype=dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + offset
    return buf[start:start + size].reshape(shape)


def _calls(op, w, b):
    if op == "layer_norm":
        return lambda x, out: fastnorm.layer_norm(x, w, b, out=out), lambda x: ref_layer_norm(x, w, b)[0]
    if op == "layer_norm_plain":
        return lambda x, out: fastnorm.layer_norm(x, out=out), lambda x: ref_layer_norm(x)[0]
    if op == "rms_norm":
        return lambda x, out: fastnorm.rms_norm(x, w, out=out), lambda x: ref_rms_norm(x, w)[0]
    # InstanceNorm: each row a plane, scalar weight and bias per channel
    C = 3
    wc, bc = w[:C].copy(), b[:C].copy()

    def ref(x):
        n = x.shape[0] // C
        y, _, _ = ref_layer_norm(x.reshape(n, C, -1).astype(np.float64))
        return y.reshape(x.shape) * np.tile(wc, n)[:, None].astype(np.float64) \
            + np.tile(bc, n)[:, None].astype(np.float64)

    def call(x, out):
        n = x.shape[0] // C
        fastnorm.instance_norm(x.reshape(n, C, -1), wc, bc, out=out.reshape(n, C, -1))
        return out

    return call, ref


@pytest.mark.parametrize("op", ["layer_norm", "layer_norm_plain", "rms_norm", "instance_norm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_every_offset_and_in_place_give_the_aligned_bits(active_isa, op, dtype):
    rng = np.random.default_rng(7)
    step = 64 // np.dtype(dtype).itemsize
    for d in LENGTHS:
        # rows are taken in pairs (norm_rows2_fast), the fifth alone; InstanceNorm:
        # two samples of three channels
        shape = (6, d) if op == "instance_norm" else (5, d)
        x = (rng.standard_normal(shape) * 2.0 + 3.0).astype(dtype)
        w = rng.uniform(0.5, 2.0, d).astype(dtype)
        b = rng.uniform(-1.0, 1.0, d).astype(dtype)
        call, ref = _calls(op, w, b)
        aligned = call(x, _at(shape, dtype, 0)).copy()
        rtol, atol = tol(dtype)
        np.testing.assert_allclose(aligned, ref(x), rtol=rtol, atol=atol, err_msg=f"{op} d={d}")
        for kx in range(step):
            xk = _at(shape, dtype, kx)
            xk[...] = x
            for ky in range(step):
                out = _at(shape, dtype, ky)
                out[...] = np.nan
                assert call(xk, out) is out
                assert out.tobytes() == aligned.tobytes(), (op, d, kx, ky)
            assert call(xk, xk) is xk
            assert xk.tobytes() == aligned.tobytes(), (op, d, kx, "in place")


@pytest.mark.parametrize("rms", [False, True], ids=["layer_norm", "rms_norm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_backward_every_offset_gives_the_aligned_bits(active_isa, rms, dtype):
    # dx rows take the same stores (src_c bwd_dx); out=dy is in place for dx
    rng = np.random.default_rng(8)
    step = 64 // np.dtype(dtype).itemsize
    for d in LENGTHS:
        shape = (3, d)
        x = (rng.standard_normal(shape) * 2.0 + 3.0).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        w = rng.uniform(0.5, 2.0, d).astype(dtype)
        if rms:
            _, rstd = fastnorm.rms_norm(x, w, return_stats=True)
            ref = ref_rms_norm_backward(dy, x, rstd, w)[0]

            def call(xk, dyk, out):
                return fastnorm.rms_norm_backward(dyk, xk, rstd, w, out=out)[0]
        else:
            _, mean, rstd = fastnorm.layer_norm(x, w, return_stats=True)
            ref = ref_layer_norm_backward(dy, x, mean, rstd, w)[0]

            def call(xk, dyk, out):
                return fastnorm.layer_norm_backward(dyk, xk, mean, rstd, w, out=out)[0]
        aligned = call(x, dy, _at(shape, dtype, 0)).copy()
        rtol, atol = tol(dtype)
        np.testing.assert_allclose(aligned, ref, rtol=rtol, atol=atol, err_msg=f"rms={rms} d={d}")
        for kx in range(step):
            xk = _at(shape, dtype, kx)
            xk[...] = x
            dyk = _at(shape, dtype, kx)
            dyk[...] = dy
            for ky in range(step):
                out = _at(shape, dtype, ky)
                out[...] = np.nan
                assert call(xk, dyk, out) is out
                assert out.tobytes() == aligned.tobytes(), (rms, d, kx, ky)
            assert call(xk, dyk, dyk) is dyk
            assert dyk.tobytes() == aligned.tobytes(), (rms, d, kx, "out=dy")
