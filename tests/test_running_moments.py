"""RunningMoments: any split of the data gives the one-pass float64 statistics."""

import numpy as np
import pytest

from fastnorm import RunningMoments


def _random_split(data, axis, rng, max_parts=6):
    """Split `data` along `axis` into 1..max_parts random (possibly empty) pieces."""
    n = data.shape[axis]
    cuts = np.sort(rng.integers(0, n + 1, size=rng.integers(0, max_parts)))
    return np.split(data, cuts, axis=axis)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(4))
def test_random_splits_equal_one_pass(dtype, seed):
    rng = np.random.default_rng(seed)
    # Large offset: a naive E[x^2]-E[x]^2 merge would lose the variance.
    data = rng.normal(1e3, 2.0, size=(257, 3, 4)).astype(dtype)
    rm = RunningMoments(axis=0)
    for part in _random_split(data, 0, rng):
        assert rm.update(part) is rm
    ref = data.astype(np.float64)
    assert rm.count == 257 and isinstance(rm.count, int)
    assert rm.mean.dtype == np.float64 and rm.mean.shape == (3, 4)
    # float32 batches are reduced in float32 by fastnorm.moments, then merged in float64.
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(rm.mean, ref.mean(0), rtol=rtol)
    np.testing.assert_allclose(rm.var(), ref.var(0), rtol=1e3 * rtol)
    np.testing.assert_allclose(rm.var(ddof=1), ref.var(0, ddof=1), rtol=1e3 * rtol)


@pytest.mark.parametrize("axis", [0, (0, 2), (0, 2, 3), -1, None])
def test_tuple_and_negative_axes(axis):
    rng = np.random.default_rng(1)
    data = rng.normal(-3.0, 0.5, size=(40, 2, 5, 3))
    split_axis = 0 if axis != -1 else 3
    rm = RunningMoments(axis=axis)
    for part in np.array_split(data, 3, axis=split_axis):
        rm.update(part)
    np.testing.assert_allclose(rm.mean, data.mean(axis=axis), rtol=1e-12)
    np.testing.assert_allclose(rm.var(ddof=0), data.var(axis=axis), rtol=1e-10)
    expected_count = data.size // np.asarray(data.mean(axis=axis)).size
    assert rm.count == expected_count


@pytest.mark.parametrize("seed", range(3))
def test_merge_of_any_partition(seed):
    rng = np.random.default_rng(10 + seed)
    data = rng.normal(50.0, 3.0, size=(300, 5))
    parts = _random_split(data, 0, rng, max_parts=8)
    accs = [RunningMoments().update(p) for p in parts]
    total = RunningMoments()
    for i in rng.permutation(len(accs)):
        assert total.merge(accs[i]) is total
    np.testing.assert_allclose(total.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(total.var(), data.var(0), rtol=1e-10)
    assert total.count == 300
    # Tree-shaped merge gives the same.
    left = RunningMoments().update(data[:100]).merge(RunningMoments().update(data[100:170]))
    right = RunningMoments().update(data[170:])
    left.merge(right)
    np.testing.assert_allclose(left.var(ddof=1), data.var(0, ddof=1), rtol=1e-10)
    # merge leaves its argument alone
    assert right.count == 130
    np.testing.assert_allclose(right.mean, data[170:].mean(0), rtol=1e-12)


def test_merge_with_empty_and_into_empty():
    data = np.arange(12.0).reshape(6, 2)
    a = RunningMoments().update(data)
    a.merge(RunningMoments())
    assert a.count == 6
    b = RunningMoments().merge(a)
    np.testing.assert_array_equal(b.mean, data.mean(0))
    np.testing.assert_allclose(b.var(), data.var(0))
    b.update(data)  # b does not alias a's arrays
    assert a.count == 6 and b.count == 12


def test_empty_state():
    rm = RunningMoments()
    assert rm.count == 0 and rm.mean is None and rm.var() is None
    rm.update(np.empty((0, 3)))
    assert rm.count == 0 and rm.mean.shape == (3,) and np.isnan(rm.mean).all()
    rm.update(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(rm.var(), [0.0, 0.0, 0.0])
    assert np.isnan(rm.var(ddof=1)).all()  # one value: unbiased variance undefined
    with pytest.raises(ValueError):
        rm.var(ddof=-1)


def _snapshot(rm):
    return rm.count, rm.mean.copy(), rm.var().copy()


def _assert_same(rm, snap):
    count, mean, var = snap
    assert rm.count == count
    np.testing.assert_array_equal(rm.mean, mean)
    np.testing.assert_array_equal(rm.var(), var)


def test_wrong_trailing_shape_raises_and_changes_nothing():
    rng = np.random.default_rng(3)
    rm = RunningMoments(axis=0).update(rng.normal(size=(10, 3, 4)))
    snap = _snapshot(rm)
    for bad in (rng.normal(size=(10, 4, 3)), rng.normal(size=(10, 3)),
                rng.normal(size=(10, 3, 4, 1)), rng.normal(size=(0, 3, 5))):
        with pytest.raises(ValueError):
            rm.update(bad)
        _assert_same(rm, snap)
    with pytest.raises(ValueError):
        rm.merge(RunningMoments().update(rng.normal(size=(4, 3))))
    _assert_same(rm, snap)
    with pytest.raises(TypeError):
        rm.merge(np.ones((2, 3, 4)))
    with pytest.raises(TypeError):
        rm.update(np.ones((2, 3, 4), dtype=np.int64))
    _assert_same(rm, snap)


def test_bad_axis():
    with pytest.raises(ValueError):
        RunningMoments(axis=1.5)
    rm = RunningMoments(axis=(0, 3))
    with pytest.raises(ValueError):
        rm.update(np.ones((2, 3)))
    assert rm.count == 0 and rm.mean is None
    with pytest.raises(ValueError):
        RunningMoments(axis=(0, -2)).update(np.ones((2, 3)))  # same axis twice


def test_inputs_any_layout_and_array_like():
    data = np.random.default_rng(4).normal(size=(20, 6))
    rm = RunningMoments()
    rm.update(np.asfortranarray(data[:7]))
    rm.update(data[7:, ::-1][:, ::-1])
    rm.update(np.empty((0, 6)))
    np.testing.assert_allclose(rm.mean, data.mean(0), rtol=1e-12)
    rm2 = RunningMoments().update(data.tolist())
    np.testing.assert_allclose(rm2.var(), data.var(0), rtol=1e-10)


def test_float32_batches_keep_float64_batch_statistics():
    # Each batch's statistics enter the float64 accumulation unrounded: rounded to
    # float32 first (as fastnorm.moments returns them), a batch mean of 1e4 lost
    # 5e-4 of a spread of 1, and the variance merged from 100 batches was 2.9e-6
    # off (the kernel's own float32 sums: 3e-7).
    x = (1e4 + np.random.default_rng(0).standard_normal((100000, 3))).astype(np.float32)
    rm = RunningMoments(axis=0)
    for i in range(0, 100000, 1000):
        rm.update(x[i:i + 1000])
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(rm.mean, x64.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(rm.var(), x64.var(axis=0), rtol=1e-6)
    assert rm.mean.dtype == np.float64


# float64 batches with |mean| >> std: each batch mean, rounded to a double, had
# carried half an ulp of |mean| into the merge's deviation, and the variance of
# 10 batches of 200 values of N(3e5, 1e-2) came out 1.1e-10 off (relatively).
@pytest.mark.parametrize("axis", [0, (0, 2)], ids=str)
def test_float64_batches_far_from_zero(axis):
    rng = np.random.default_rng(3)
    batches = [3e5 + 1e-2 * rng.standard_normal((200, 3, 2)) for _ in range(10)]
    whole = np.concatenate(batches) - 3e5           # exact
    ref_mean = whole.mean(axis=axis)
    ref_var = ((whole - whole.mean(axis=axis, keepdims=True)) ** 2).mean(axis=axis)
    one = RunningMoments(axis=axis)
    for b in batches:
        one.update(b)
    first, second = RunningMoments(axis=axis), RunningMoments(axis=axis)
    for b in batches[:4]:
        first.update(b)
    for b in batches[4:]:
        second.update(b)
    first.merge(second)
    for rm in (one, first):
        assert np.max(np.abs(rm.var() / ref_var - 1)) < 1e-13
        np.testing.assert_allclose(rm.mean - 3e5, ref_mean, rtol=0, atol=np.spacing(3e5))  # the rounding of a double


def test_float64_batches_far_from_zero_with_infinities():
    rm = RunningMoments(axis=0)
    rm.update(np.array([[3e5, 3e5], [3e5 + 1e-2, np.inf]]))
    rm.update(np.array([[3e5 - 1e-2, 3e5], [3e5, 3e5]]))
    assert rm.mean[0] == pytest.approx(3e5, rel=1e-15) and rm.mean[1] == np.inf
    assert rm.var()[0] == pytest.approx(5e-5, rel=1e-9) and np.isnan(rm.var()[1])
