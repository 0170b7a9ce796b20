"""Exact mean and variance of a data set seen one batch at a time.

Each batch is reduced by :func:`fastnorm.moments` (one parallel pass in the
compiled kernels); batches are combined with Chan, Golub and LeVeque's
pairwise update in float64, so any split of the data gives the statistics of
one pass over all of it, to rounding, without keeping the data.
"""

import numpy as np

from . import normalization as _nz

__all__ = ["RunningMoments"]


def _two_sum(a, b):
    """a + b and its rounding error (TwoSum, elementwise; the error is 0 where
    the sum is not finite)."""
    s = a + b
    bb = s - a
    with np.errstate(invalid="ignore"):
        err = (a - (s - bb)) + (b - bb)
    return s, np.where(np.isfinite(s), err, 0.0)


def _normalize_axes(axis, ndim):
    """Sorted tuple of non-negative reduced axes (``None`` means all)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise ValueError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"axis={axis!r} is out of range for a batch of dimension {ndim}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis={axis!r} contains duplicate axes")
    return tuple(sorted(out))


def _mean_residual(x, axes, mean, var, n):
    """What the float64 batch mean `mean` lacks of the exact mean of x over `axes`
    (0 where that is below what the merges can see).

    The mean comes rounded to a double, half an ulp of |mean| off. The Chan merge's
    deviation between two batch means carries that error into the variance, about
    1.1e-16 * (|mean| / std) / sqrt(n) relatively: float64 batches of 200 values of
    N(3e5, 1e-2) gave variances 1.1e-10 off. Where that would exceed about 1e-13
    (|mean| > 1000 sqrt(n) std: never for data whose mean is within a few hundred
    standard deviations of zero), the rounding is taken back, as the mean of
    x - mean, in one more pass over the batch. float32 batches are left as they
    are: their own statistics come from float32 lane sums, some 1e-7 off already.
    """
    far = np.isfinite(mean) & (mean * mean > 1e6 * n * var)
    if x.dtype != np.float64 or not far.any():
        return np.zeros_like(mean)
    with np.errstate(invalid="ignore"):
        resid = np.mean(x - np.expand_dims(mean, axes), axis=axes)
    return np.where(far & np.isfinite(resid), resid, 0.0)


class RunningMoments:
    """Exact count, mean and variance accumulated over batches.

    Each batch is reduced over ``axis``; the remaining axes form the shape of
    the statistics and must be the same for every batch.  Per-batch moments
    come from :func:`fastnorm.moments`; the running count, mean and sum of
    squared deviations (M2) are kept in float64 and combined with Chan et
    al.'s parallel formula, so the result does not depend on how the data was
    split into batches (up to rounding).

    Parameters
    ----------
    axis : None, int or tuple of int, default 0
        The axes of each batch that are reduced, as in :func:`fastnorm.moments`.
        ``None`` reduces every axis (scalar statistics).

    Attributes
    ----------
    count : int
        Number of values accumulated per statistic.
    mean : ndarray of float64 or None
        The running mean (a copy); None before any batch fixed the shape, NaN
        while ``count`` is 0.

    Raises
    ------
    ValueError
        If ``axis`` is not None, an int or a non-empty tuple of ints (its range
        is checked against each batch).

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm import RunningMoments
    >>> rng = np.random.default_rng(0)
    >>> data = rng.normal(size=(1000, 3))
    >>> rm = RunningMoments(axis=0)
    >>> for batch in np.array_split(data, 7):
    ...     _ = rm.update(batch)
    >>> rm.count
    1000
    >>> np.allclose(rm.mean, data.mean(0)), np.allclose(rm.var(ddof=1), data.var(0, ddof=1))
    (True, True)
    """

    def __init__(self, axis=0):
        if axis is not None:
            axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
            if not axes or not all(
                    isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))
                    for a in axes):
                raise ValueError(
                    f"axis must be None, an int or a non-empty tuple of ints, got {axis!r}")
            # Range is checked per batch, when the batch's ndim is known.
            axis = axes[0] if np.ndim(axis) == 0 else tuple(int(a) for a in axes)
        self.axis = axis
        self._count = 0
        self._shape = None
        self._mean = None
        self._comp = None   # rounding error of _mean's updates: the mean is _mean + _comp
        self._m2 = None

    @property
    def count(self):
        """Number of values accumulated per statistic (int)."""
        return self._count

    @property
    def shape(self):
        """Shape of the statistics, or None before the first batch."""
        return self._shape

    @property
    def mean(self):
        """Running mean (float64 copy); None before the first batch."""
        if self._shape is None:
            return None
        if self._count == 0:
            return np.full(self._shape, np.nan)
        return np.array(self._mean + self._comp, dtype=np.float64)

    def var(self, ddof=0):
        """Variance of everything accumulated so far.

        Parameters
        ----------
        ddof : int, default 0
            Delta degrees of freedom: the divisor is ``count - ddof``
            (``ddof=1`` gives the unbiased estimate PyTorch keeps as
            ``running_var``).

        Returns
        -------
        ndarray of float64 or None
            The statistics' shape; NaN where ``count - ddof <= 0`` (as
            ``np.var``); None before the first batch.

        Raises
        ------
        ValueError
            If ``ddof`` is negative.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import RunningMoments
        >>> rm = RunningMoments(axis=None).update(np.array([1.0, 2.0, 3.0, 4.0]))
        >>> float(rm.var()), float(rm.var(ddof=1))
        (1.25, 1.6666666666666667)
        """
        if ddof < 0:
            raise ValueError(f"ddof must be >= 0, got {ddof}")
        if self._shape is None:
            return None
        if self._count - ddof <= 0:
            return np.full(self._shape, np.nan)
        return self._m2 / (self._count - ddof)

    def _check_shape(self, shape, what):
        if self._shape is not None and shape != self._shape:
            raise ValueError(
                f"{what} has statistics shape {shape}, but this RunningMoments "
                f"accumulates statistics of shape {self._shape}")

    def update(self, x):
        """Accumulate one batch.

        Parameters
        ----------
        x : array_like, float32 or float64
            The batch; reduced over ``axis``.  Its remaining axes must match
            the statistics' shape fixed by the first batch.  A batch with no
            values along ``axis`` fixes the shape but adds nothing.

        Returns
        -------
        self : RunningMoments

        Raises
        ------
        ValueError
            If ``axis`` does not fit ``x`` or the remaining shape differs from
            earlier batches; nothing is changed.
        TypeError
            If ``x`` is not floating point (from :func:`fastnorm.moments`);
            nothing is changed.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import RunningMoments
        >>> rm = RunningMoments(axis=(0, 2))
        >>> _ = rm.update(np.ones((4, 3, 5))).update(np.zeros((2, 3, 7)))
        >>> rm.count, rm.mean.round(4).tolist()
        (34, [0.5882, 0.5882, 0.5882])
        """
        x = np.asarray(x)
        axes = _normalize_axes(self.axis, x.ndim)
        shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
        self._check_shape(shape, "batch")
        n_b = 1
        for a in axes:
            n_b *= int(x.shape[a])
        if n_b == 0:
            if x.dtype not in (np.float32, np.float64):
                # Same contract as a non-empty batch: fastnorm.moments rejects these.
                raise TypeError(f"x must be float32 or float64, got dtype {x.dtype}")
            if self._shape is None:
                self._shape = shape
            return self
        # the batch's statistics in float64: rounded to a float32 batch's dtype,
        # its mean had lost what |mean| >> std leaves of the spread
        _, _, mean_b, var_b = _nz.moments_float64(x, axes)
        mean_b = mean_b.reshape(shape)
        m2_b = var_b.reshape(shape) * n_b
        self._combine(n_b, mean_b, _mean_residual(x, axes, mean_b, var_b.reshape(shape), n_b), m2_b, shape)
        return self

    def _combine(self, n_b, mean_b, comp_b, m2_b, shape):
        # mean_b + comp_b: the batch's (or the other accumulator's) mean
        n_a = self._count
        if n_a == 0:
            mean, comp, m2 = mean_b.copy(), comp_b.copy(), m2_b.copy()
        else:
            n = n_a + n_b
            # Weighted form keeps the update stable when n_b << n_a and vice versa;
            # the step's rounding error is kept in comp (TwoSum), so that many
            # batches with |mean| >> std do not round the mean to its ulp each time.
            with np.errstate(invalid="ignore"):
                delta = (mean_b - self._mean) + (comp_b - self._comp)
                mean, comp = _two_sum(self._mean, self._comp + delta * (n_b / n))
                m2 = self._m2 + m2_b + delta * delta * (n_a * n_b / n)
                # a mean of +-inf or NaN on either side: the means weighted by
                # their counts, as the kernels' merges (+-inf stays, +inf with
                # -inf is NaN), and a NaN spread, as NumPy's x - mean gives
                bad = ~np.isfinite(delta)
                if bad.any():
                    plain = self._mean * (n_a / n) + mean_b * (n_b / n)
                    mean = np.where(bad, plain, mean)
                    comp = np.where(bad, 0.0, comp)
                    m2 = np.where(bad, np.where(np.isfinite(plain), np.inf, np.nan), m2)
        self._shape = shape
        self._count = n_a + n_b
        self._mean, self._comp, self._m2 = mean, comp, m2

    def merge(self, other):
        """Add another accumulator's data to this one (Chan et al.).

        Parameters
        ----------
        other : RunningMoments
            Statistics of other batches; left unchanged.

        Returns
        -------
        self : RunningMoments

        Raises
        ------
        TypeError
            If ``other`` is not a RunningMoments.
        ValueError
            If the statistics' shapes differ; nothing is changed.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import RunningMoments
        >>> a = RunningMoments().update(np.array([[1.0], [2.0]]))
        >>> b = RunningMoments().update(np.array([[3.0], [4.0]]))
        >>> a.merge(b).mean.tolist(), a.var().tolist()
        ([2.5], [1.25])
        """
        if not isinstance(other, RunningMoments):
            raise TypeError(
                f"can only merge another RunningMoments, got {type(other).__name__}")
        if other._shape is None:
            return self
        self._check_shape(other._shape, "other")
        if other._count == 0:
            if self._shape is None:
                self._shape = other._shape
            return self
        self._combine(other._count, other._mean, other._comp, other._m2, other._shape)
        return self

    def __repr__(self):
        return (f"RunningMoments(axis={self.axis!r}, count={self._count}, "
                f"shape={self._shape})")
