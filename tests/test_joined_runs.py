"""Planes of neighbouring channels written as one run (NCHW, short planes).

Where the planes of neighbouring channels lie end to end in x and in the output,
the kernels write them as one run from the output's first vector boundary: the
whole vectors of each plane in a loop, the vector that spans two planes with
each lane's coefficients taken from its own plane, the partial vectors at the
run's two ends masked (src_c norm_run_joined and bwd_dx_joined). Where the run
starts against a vector boundary moves every plane boundary inside its vector,
so these tests write each output at every element offset from a 64-byte
boundary, for planes of one vector, of a whole number of vectors and of a
vector and a bit, and require the bits of the aligned output and the float64
reference's values.
"""

import numpy as np
import pytest

import fastnorm
from backward_reference import batch_norm_backward as ref_batch_norm_backward
from reference import batch_norm as ref_batch_norm
from reference import tol

# (N, C, H, W): planes of 8, 9, 16, 25 and 49 values; too few samples for the
# short-segment walk (tests/test_short_segments.py), so the planes are joined
SHAPES = [(6, 8, 2, 4), (5, 6, 3, 3), (4, 8, 4, 4), (3, 10, 5, 5), (3, 10, 7, 7)]


def _at(shape, dtype, offset):
    """A C-contiguous array whose data starts `offset` elements past a 64-byte boundary."""
    size = int(np.prod(shape))
    buf = np.empty(size + 64, dtype=dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + offset
    return buf[start:start + size].reshape(shape)


def _data(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2.0 + 5.0).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    w = np.linspace(0.5, 2.0, C).astype(dtype)
    b = np.linspace(-1.0, 1.0, C).astype(dtype)
    return x, dy, w, b


def _group_norm_ref(x, groups, w, b, eps=1e-5):
    N, C = x.shape[:2]
    xg = x.astype(np.float64).reshape(N, groups, -1)
    mean = xg.mean(axis=2, keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=2, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    p = (1, C) + (1,) * (x.ndim - 2)
    return y * w.astype(np.float64).reshape(p) + b.astype(np.float64).reshape(p)


def _cases(x, dy, w, b, nt):
    """(name, call(out) -> y, float64 reference of y), on nt threads."""
    rm = np.linspace(4.0, 6.0, x.shape[1]).astype(x.dtype)
    rv = np.linspace(1.0, 5.0, x.shape[1]).astype(x.dtype)
    _, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
    return [
        ("batch_norm training",
         lambda out: fastnorm.batch_norm(x, w, b, training=True, out=out, num_threads=nt),
         ref_batch_norm(x, w, b, training=True)[0]),
        ("batch_norm inference",
         lambda out: fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False, out=out,
                                         num_threads=nt),
         ref_batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False)[0]),
        ("group_norm", lambda out: fastnorm.group_norm(x, 2, w, b, out=out, num_threads=nt),
         _group_norm_ref(x, 2, w, b)),
        ("instance_norm", lambda out: fastnorm.instance_norm(x, w, b, out=out, num_threads=nt),
         _group_norm_ref(x, x.shape[1], w, b)),
        ("batch_norm_backward dx",
         lambda out: fastnorm.batch_norm_backward(dy, x, mean, invstd, w, out=out, num_threads=nt)[0],
         ref_batch_norm_backward(dy, x, mean, invstd, w)[0]),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_output_offset_gives_the_aligned_bits(shape, dtype, num_threads):
    x, dy, w, b = _data(shape, dtype)
    for name, call, ref in _cases(x, dy, w, b, num_threads):
        aligned = call(_at(shape, dtype, 0)).copy()
        rtol, atol = tol(dtype)
        np.testing.assert_allclose(aligned, ref, rtol=rtol, atol=atol, err_msg=name)
        for k in range(1, 64 // np.dtype(dtype).itemsize):
            out = _at(shape, dtype, k)
            out[...] = np.nan
            assert call(out) is out
            assert out.tobytes() == aligned.tobytes(), (name, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_in_place_run(dtype):
    # out=x: every value of the run is computed from x before the vectors that
    # overlap it are stored
    shape = (3, 10, 7, 7)
    x, _, w, b = _data(shape, dtype)
    ref = fastnorm.group_norm(x, 2, w, b)
    for k in range(64 // np.dtype(dtype).itemsize):
        xk = _at(shape, dtype, k)
        xk[...] = x
        assert fastnorm.group_norm(xk, 2, w, b, out=xk) is xk
        assert xk.tobytes() == ref.tobytes(), k


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 10, 7, 7), (2, 8, 14, 14)], ids=str)
def test_in_place_runs_of_several_vectors_a_step(shape, dtype):
    # planes of 49 and 196 values: the runs' loops take four whole vectors a
    # step, all four computed before any of them is stored (inference in place
    # of x, the backward's dx in place of dy)
    x, dy, w, b = _data(shape, dtype)
    C = shape[1]
    rm = np.linspace(4.0, 6.0, C).astype(dtype)
    rv = np.linspace(1.0, 5.0, C).astype(dtype)
    ref = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False)
    _, mean, invstd = fastnorm.batch_norm(x, w, b, training=True, return_stats=True)
    ref_dx = fastnorm.batch_norm_backward(dy, x, mean, invstd, w)[0]
    for k in range(0, 64 // np.dtype(dtype).itemsize, 3):
        xk = _at(shape, dtype, k)
        xk[...] = x
        assert fastnorm.batch_norm(xk, w, b, running_mean=rm, running_var=rv, training=False, out=xk) is xk
        assert xk.tobytes() == ref.tobytes(), k
        dyk = _at(shape, dtype, k)
        dyk[...] = dy
        assert fastnorm.batch_norm_backward(dyk, x, mean, invstd, w, out=dyk)[0] is dyk
        assert dyk.tobytes() == ref_dx.tobytes(), k
