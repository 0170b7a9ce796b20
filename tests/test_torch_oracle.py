"""Optional: PyTorch as a second oracle (skipped when torch is not installed).

Checks that fastnorm follows torch.nn.functional.batch_norm / layer_norm /
rms_norm semantics, including the in-place running-statistics update (momentum,
unbiased variance), eps=None for rms_norm, and channels-last via channel_axis.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastnorm  # noqa: E402
from reference import tol  # noqa: E402


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("shape", [(8, 5), (4, 5, 7), (2, 5, 3, 4), (2, 5, 2, 3, 2)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_batch_norm_matches_torch(shape, channels_last, training, momentum, dtype, rng):
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    C = shape[1]
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    trm, trv = T(rm.copy()), T(rv.copy())
    ty = F.batch_norm(T(x), trm, trv, T(w), T(b), training=training, momentum=momentum,
                      eps=1e-5).numpy()
    if channels_last:
        xl = np.moveaxis(x, 1, -1)
        y = fastnorm.batch_norm(xl, w, b, running_mean=rm, running_var=rv, training=training,
                                momentum=momentum, channel_axis=-1)
        y = np.moveaxis(y, -1, 1)
    else:
        y = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=training,
                                momentum=momentum)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y, ty, rtol=rtol * 5, atol=atol * 5)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=rtol * 5, atol=atol * 5)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=rtol * 5, atol=atol * 5)


def test_batch_norm_one_value_per_channel_like_torch():
    x = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError):
        F.batch_norm(T(x), None, None, training=True)
    with pytest.raises(ValueError):
        fastnorm.batch_norm(x, training=True)


@pytest.mark.parametrize("shape,k", [((6, 33), 1), ((2, 3, 17), 2), ((2, 3, 4, 5), 3),
                                     ((2, 2, 3, 4, 5), 2)], ids=str)
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_matches_torch(shape, k, affine, dtype, rng):
    """torch normalizes the trailing k dims; fastnorm axis=tuple(range(-k, 0))."""
    x = (rng.standard_normal(shape) * 3 - 1).astype(dtype)
    ns = shape[-k:]
    w = rng.standard_normal(ns).astype(dtype) if affine else None
    b = rng.standard_normal(ns).astype(dtype) if affine else None
    ty = F.layer_norm(T(x), ns, None if w is None else T(w), None if b is None else T(b),
                      eps=1e-5).numpy()
    y = fastnorm.layer_norm(x, w, b, axis=tuple(range(-k, 0)))
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y, ty, rtol=rtol * 5, atol=atol * 5)


def test_layer_norm_channels_first_matches_torch_transposes(dtype, rng):
    """ConvNeXt's channels-first LayerNorm: torch needs two permutes."""
    x = rng.standard_normal((2, 8, 5, 6)).astype(dtype)
    w = rng.standard_normal(8).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    tx = T(x).permute(0, 2, 3, 1)
    ty = F.layer_norm(tx, (8,), T(w), T(b), eps=1e-6).permute(0, 3, 1, 2).numpy()
    y = fastnorm.layer_norm(x, w, b, axis=1, eps=1e-6)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y, ty, rtol=rtol * 5, atol=atol * 5)


@pytest.mark.parametrize("shape,k", [((6, 33), 1), ((2, 3, 17), 2), ((2, 3, 4, 5), 1)], ids=str)
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("affine", [False, True])
def test_rms_norm_matches_torch(shape, k, eps, affine, dtype, rng):
    if not hasattr(F, "rms_norm"):
        pytest.skip("torch too old for rms_norm")
    # small values so that the default eps (finfo.eps) matters
    x = (rng.standard_normal(shape) * np.sqrt(np.finfo(dtype).eps)).astype(dtype)
    ns = shape[-k:]
    w = rng.standard_normal(ns).astype(dtype) if affine else None
    ty = F.rms_norm(T(x), ns, None if w is None else T(w), eps=eps).numpy()
    y = fastnorm.rms_norm(x, w, axis=tuple(range(-k, 0)), eps=eps)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(y, ty, rtol=rtol * 5, atol=atol * 5)
