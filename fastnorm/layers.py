"""Trainable normalization layers with PyTorch-compatible state.

``BatchNorm``, ``LayerNorm`` and ``RMSNorm`` wrap fastnorm's forward and
backward functions in objects that hold parameters (``weight``, ``bias``),
buffers (``running_mean``, ``running_var``, ``num_batches_tracked``), a
train/eval mode and what the backward pass needs from the last forward pass.
Their ``state_dict()`` uses PyTorch's key names and shapes, so a trained
``torch.nn.BatchNorm2d`` / ``LayerNorm`` / ``RMSNorm`` can be loaded for CPU
inference (convert tensors with ``.numpy()``), and back.

The layers are deliberately minimal: no autograd, no optimizer.  A training
loop calls ``y = layer(x)``, later ``dx = layer.backward(dy)``, and updates
``layer.weight`` / ``layer.bias`` from ``layer.weight_grad`` /
``layer.bias_grad`` itself.
"""

from collections.abc import Mapping
import numbers

import numpy as np

from . import normalization as _nz
from .backward import batch_norm_backward, layer_norm_backward, rms_norm_backward
from .running_moments import RunningMoments

__all__ = ["BatchNorm", "LayerNorm", "RMSNorm"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_eps(eps, allow_none=False):
    if eps is None and allow_none:
        return None
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a real number >= 0, got {eps!r}")
    return float(eps)


def _normalized_shape(normalized_shape):
    if isinstance(normalized_shape, (numbers.Integral, np.integer)):
        normalized_shape = (normalized_shape,)
    shape = tuple(normalized_shape)
    if not shape or not all(isinstance(n, (numbers.Integral, np.integer))
                            and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(
            "normalized_shape must be a positive int or a non-empty tuple of "
            f"positive ints, got {normalized_shape!r}")
    return tuple(int(n) for n in shape)


def _as_input(x):
    x = np.asarray(x)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"input must be float32 or float64, got dtype {x.dtype}")
    return x


def _cast(a, dtype):
    """``a`` in ``dtype`` (no copy when it already is); None stays None."""
    return None if a is None else np.asarray(a, dtype=dtype)


class _Layer:
    """Shared machinery: mode, gradients, state_dict and load_state_dict."""

    def __init__(self):
        self.training = True
        self.weight_grad = None
        self.bias_grad = None
        self._cache = None

    # -- mode -------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode.

        Parameters
        ----------
        mode : bool, default True

        Returns
        -------
        self

        Examples
        --------
        >>> from fastnorm import BatchNorm
        >>> BatchNorm(2).train(False).training
        False
        """
        self.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode; same as ``train(False)``.

        Returns
        -------
        self

        Examples
        --------
        >>> from fastnorm import BatchNorm
        >>> bn = BatchNorm(2).eval()
        >>> bn.training
        False
        """
        return self.train(False)

    # -- state ------------------------------------------------------------
    def _state_spec(self):
        """Ordered ``{key: (shape, dtype)}`` of what state_dict holds."""
        raise NotImplementedError

    def _get_state(self, key):
        return getattr(self, key)

    def _set_state(self, key, value):
        setattr(self, key, value)

    def state_dict(self):
        """Parameters and buffers under PyTorch's key names, as copies.

        Returns
        -------
        dict of str to ndarray
            Same keys, order and shapes as the matching ``torch.nn`` module's
            ``state_dict()``; ``num_batches_tracked`` is a 0-d int64 array.

        Examples
        --------
        >>> from fastnorm import LayerNorm
        >>> sorted(LayerNorm(4).state_dict())
        ['bias', 'weight']
        """
        out = {}
        for key, (shape, dtype) in self._state_spec().items():
            out[key] = np.array(self._get_state(key), dtype=dtype, copy=True).reshape(shape)
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Replace parameters and buffers from a PyTorch-style state dict.

        Every value is checked and converted before anything is assigned, so
        on error the layer is left unchanged.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Values with exactly the shapes ``state_dict()`` returns: NumPy
            arrays, lists, or torch tensors converted with ``.numpy()``.
            Values are copied and cast to the layer's dtype.
        strict : bool, default True
            If True, missing and unexpected keys are errors; if False they
            are ignored (shapes are still checked).

        Returns
        -------
        self

        Raises
        ------
        TypeError
            If ``state_dict`` is not a mapping or a value is not real numeric
            (``num_batches_tracked`` must be an integer).
        ValueError
            On missing or unexpected keys (when strict), a shape mismatch, or
            a negative ``num_batches_tracked``.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import RMSNorm
        >>> layer = RMSNorm(3).load_state_dict({"weight": [1.0, 2.0, 3.0]})
        >>> layer.weight.tolist()
        [1.0, 2.0, 3.0]
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping, got {type(state_dict).__name__}")
        spec = self._state_spec()
        name = type(self).__name__
        if strict:
            missing = [k for k in spec if k not in state_dict]
            unexpected = [k for k in state_dict if k not in spec]
            if missing or unexpected:
                parts = []
                if missing:
                    parts.append("missing key(s): " + ", ".join(map(repr, missing)))
                if unexpected:
                    parts.append("unexpected key(s): " + ", ".join(map(repr, unexpected)))
                raise ValueError(
                    f"Error loading state_dict for {name}: " + "; ".join(parts)
                    + f" (expected exactly {list(spec)})")
        new = {}
        for key, (shape, dtype) in spec.items():
            if key not in state_dict:
                continue
            try:
                value = np.asarray(state_dict[key])
            except Exception as exc:  # e.g. a tensor that still requires grad
                raise TypeError(
                    f"state_dict[{key!r}] cannot be converted to an array: {exc}") from exc
            integral = np.issubdtype(dtype, np.integer)
            ok_kinds = "iu" if integral else "iuf"
            if value.dtype.kind not in ok_kinds:
                raise TypeError(
                    f"state_dict[{key!r}] has dtype {value.dtype}, expected "
                    + ("an integer" if integral else "a real number") + " array")
            if value.shape != shape:
                raise ValueError(
                    f"Error loading state_dict for {name}: size mismatch for {key!r}: "
                    f"got shape {value.shape}, the shape in the layer is {shape}")
            if integral and value < 0:
                raise ValueError(f"state_dict[{key!r}] must be >= 0, got {value}")
            new[key] = np.array(value, dtype=dtype, copy=True, order="C")
        for key, value in new.items():
            self._set_state(key, value)
        return self

    # -- gradients --------------------------------------------------------
    def _cached(self, dy):
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before a forward pass")
        dy = np.asarray(dy)
        x = self._cache[0]
        if dy.shape != x.shape:
            raise ValueError(
                f"dy has shape {dy.shape} but the last forward input had shape {x.shape}")
        return dy, self._cache

    @staticmethod
    def _grad(g, like):
        return None if like is None or g is None else np.asarray(g, dtype=like.dtype)


class BatchNorm(_Layer):
    """Batch normalization over every axis but the channel axis.

    The NumPy/CPU counterpart of ``torch.nn.BatchNorm1d/2d/3d``: in training
    mode each channel is normalized with the batch mean and biased variance
    and the running statistics are updated; in evaluation mode the running
    statistics are used.

    Parameters
    ----------
    num_features : int
        Number of channels C (``x.shape[channel_axis]``).
    eps : float, default 1e-5
        Added to the variance for stability; >= 0.
    momentum : float or None, default 0.1
        Weight of the batch statistics in the running averages,
        ``r = (1 - momentum) * r + momentum * batch``.  ``None`` gives the
        cumulative (equal-weight) average over all batches seen, as PyTorch.
    affine : bool, default True
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default True
        Keep ``running_mean`` / ``running_var`` / ``num_batches_tracked``.
        If False these are None and batch statistics are always used.
    channel_axis : int, default 1
        The channel axis of the inputs; ``-1`` for channels-last (NHWC).
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        dtype of parameters and buffers.

    Attributes
    ----------
    training : bool
        True after construction.
    weight, bias : ndarray of shape (C,) or None
    running_mean, running_var : ndarray of shape (C,) or None
        ``running_var`` holds the unbiased variance, as PyTorch.
    num_batches_tracked : int or None
    weight_grad, bias_grad : ndarray of shape (C,) or None
        Set by each ``backward``.

    Raises
    ------
    ValueError
        On a non-positive ``num_features``, negative ``eps`` or a momentum
        outside [0, 1].
    TypeError
        On a non-float ``dtype``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm import BatchNorm
    >>> bn = BatchNorm(3)
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(8, 3, 4, 4)).astype(np.float32)
    >>> y = bn(x)                      # training: batch statistics
    >>> bool(abs(y.mean()) < 1e-5), bn.num_batches_tracked
    (True, 1)
    >>> dx = bn.backward(np.ones_like(y))
    >>> bn.bias_grad.tolist()
    [128.0, 128.0, 128.0]
    >>> y_eval = bn.eval()(x)          # evaluation: running statistics
    """

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, channel_axis=1, dtype=np.float32):
        super().__init__()
        if (not isinstance(num_features, (numbers.Integral, np.integer))
                or isinstance(num_features, bool) or num_features <= 0):
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if momentum is not None and (
                not isinstance(momentum, numbers.Real) or isinstance(momentum, bool)
                or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be None or a number in [0, 1], got {momentum!r}")
        if not isinstance(channel_axis, (numbers.Integral, np.integer)) or isinstance(
                channel_axis, bool):
            raise ValueError(f"channel_axis must be an int, got {channel_axis!r}")
        self.num_features = int(num_features)
        self.eps = _check_eps(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.channel_axis = int(channel_axis)
        self.dtype = _float_dtype(dtype)
        C = self.num_features
        self.weight = np.ones(C, self.dtype) if self.affine else None
        self.bias = np.zeros(C, self.dtype) if self.affine else None
        if self.track_running_stats:
            self.running_mean = np.zeros(C, self.dtype)
            self.running_var = np.ones(C, self.dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def __repr__(self):
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
                f"channel_axis={self.channel_axis}, dtype={self.dtype.name})")

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(f"BatchNorm expects an input with ndim >= 2, got shape {x.shape}")
        if not -x.ndim <= self.channel_axis < x.ndim:
            raise ValueError(
                f"channel_axis={self.channel_axis} is out of range for an input of shape {x.shape}")
        if x.shape[self.channel_axis] != self.num_features:
            raise ValueError(
                f"BatchNorm({self.num_features}) got an input of shape {x.shape} with "
                f"{x.shape[self.channel_axis]} channels on channel_axis={self.channel_axis}")

    def reset_running_stats(self):
        """Reset running_mean to zeros, running_var to ones, num_batches_tracked to 0.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import BatchNorm
        >>> bn = BatchNorm(2)
        >>> _ = bn(np.array([[1.0, 2.0], [3.0, 5.0]]))
        >>> bn.reset_running_stats()
        >>> bn.running_mean.tolist(), bn.num_batches_tracked
        ([0.0, 0.0], 0)
        """
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked = 0

    def __call__(self, x):
        """Normalize ``x`` and remember what ``backward`` needs.

        Parameters
        ----------
        x : array_like, float32 or float64
            ``ndim >= 2`` with ``num_features`` channels on ``channel_axis``.
            It must not be modified in place before ``backward``.

        Returns
        -------
        ndarray
            x's shape and dtype.

        Raises
        ------
        ValueError
            On a wrong number of channels or dimensions, or a training batch
            with one value per channel; running statistics are then unchanged.
        TypeError
            On non-float input.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import BatchNorm
        >>> BatchNorm(2)(np.array([[1.0, 2.0], [3.0, 6.0]])).round(3).tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
        """
        x = _as_input(x)
        self._check_input(x)
        use_batch = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        factor = 0.0
        rm = rv = None
        if update:
            n = self.num_batches_tracked + 1
            factor = 1.0 / n if self.momentum is None else self.momentum
        if self.track_running_stats and (update or not use_batch):
            # The kernels want running statistics in x's dtype; update a cast copy
            # when the layer's dtype differs and copy back only after success.
            rm = _cast(self.running_mean, x.dtype)
            rv = _cast(self.running_var, x.dtype)
            if update and rm is self.running_mean:
                # Work on copies so a failing call cannot leave half-updated stats.
                rm, rv = rm.copy(), rv.copy()
        w = _cast(self.weight, x.dtype)
        b = _cast(self.bias, x.dtype)
        y, mean, invstd = _nz.batch_norm(
            x, w, b, running_mean=rm, running_var=rv, training=use_batch,
            momentum=factor, eps=self.eps, channel_axis=self.channel_axis,
            return_stats=True)
        if update and x.size > 0:
            self.running_mean[...] = rm
            self.running_var[...] = rv
            self.num_batches_tracked = n
        self._cache = (x, mean, invstd, None if w is None else w.copy(), use_batch)
        return y

    def backward(self, dy):
        """Gradient with respect to the last forward input.

        In training mode (or without running statistics) the gradient flows
        through the batch mean and variance; in evaluation mode it is
        ``dy * weight / sqrt(running_var + eps)``.

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the last output.

        Returns
        -------
        dx : ndarray
            The last input's shape and dtype.

        Raises
        ------
        RuntimeError
            If no forward pass happened yet.
        ValueError
            If dy's shape differs from the last input's.

        Notes
        -----
        Sets ``weight_grad`` and ``bias_grad`` (None when ``affine=False``),
        overwriting the previous ones.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import BatchNorm
        >>> bn = BatchNorm(2, dtype=np.float64)
        >>> y = bn(np.array([[1.0, 2.0], [3.0, 6.0]]))
        >>> dx = bn.backward(np.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> bn.bias_grad.tolist()
        [1.0, 1.0]
        """
        dy, (x, mean, invstd, w, used_batch) = self._cached(dy)
        dx, dw, db = batch_norm_backward(
            dy, x, mean, invstd, w, channel_axis=self.channel_axis, training=used_batch)
        self.weight_grad = self._grad(dw, self.weight)
        self.bias_grad = self._grad(db, self.bias)
        return dx

    def calibrate(self, batches):
        """Set the running statistics to the exact statistics of ``batches``.

        The recommended end-of-training step: the exponential running
        averages lag behind the weights; this replaces them with the
        population mean and the unbiased variance (what PyTorch keeps in
        ``running_var``) of all values of each channel over all batches.
        Weights, bias and ``num_batches_tracked`` are not touched.

        Parameters
        ----------
        batches : iterable of array_like
            Inputs as the layer receives them (float32/float64, C channels on
            ``channel_axis``); consumed once.  Batches may differ in size and
            in their non-channel dimensions.

        Returns
        -------
        self

        Raises
        ------
        RuntimeError
            If ``track_running_stats`` is False (there is nothing to set).
        ValueError
            If a batch has the wrong channel count or the batches hold fewer
            than two values per channel; the running statistics are then
            unchanged.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import BatchNorm
        >>> data = np.random.default_rng(0).normal(size=(100, 2, 3)).astype(np.float32)
        >>> bn = BatchNorm(2).calibrate(np.array_split(data, 4))
        >>> ref = data.transpose(1, 0, 2).reshape(2, -1).astype(np.float64)
        >>> np.allclose(bn.running_var, ref.var(1, ddof=1), rtol=1e-6)
        True
        """
        if not self.track_running_stats:
            raise RuntimeError("calibrate() needs track_running_stats=True")
        total = RunningMoments(axis=0)
        for batch in batches:
            batch = _as_input(batch)
            self._check_input(batch)
            ca = self.channel_axis % batch.ndim
            # Axis per batch so batches of different rank can be mixed; merged by Chan.
            part = RunningMoments(axis=tuple(i for i in range(batch.ndim) if i != ca))
            total.merge(part.update(batch))
        if total.count < 2:
            raise ValueError(
                f"calibrate() needs at least two values per channel, got {total.count}")
        self.running_mean[...] = total.mean
        self.running_var[...] = total.var(ddof=1)
        return self

    def _state_spec(self):
        C = self.num_features
        spec = {}
        if self.affine:
            spec["weight"] = ((C,), self.dtype)
            spec["bias"] = ((C,), self.dtype)
        if self.track_running_stats:
            spec["running_mean"] = ((C,), self.dtype)
            spec["running_var"] = ((C,), self.dtype)
            spec["num_batches_tracked"] = ((), np.dtype(np.int64))
        return spec

    def _set_state(self, key, value):
        setattr(self, key, int(value) if key == "num_batches_tracked" else value)


class _RowNorm(_Layer):
    """Common parts of LayerNorm and RMSNorm: normalized_shape and axes."""

    def _init_shape(self, normalized_shape, axis):
        self.normalized_shape = _normalized_shape(normalized_shape)
        if axis is not None:
            axes = (axis,) if np.ndim(axis) == 0 else tuple(axis)
            if not all(isinstance(a, (numbers.Integral, np.integer))
                       and not isinstance(a, bool) for a in axes):
                raise ValueError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
            if len(axes) != len(self.normalized_shape):
                raise ValueError(
                    f"axis={axis!r} names {len(axes)} axes but normalized_shape="
                    f"{self.normalized_shape} has {len(self.normalized_shape)}")
            axis = int(axes[0]) if np.ndim(axis) == 0 else tuple(int(a) for a in axes)
        self.axis = axis

    def _axes(self, x):
        """Sorted normalized axes of ``x``; ValueError if its shape does not fit."""
        k = len(self.normalized_shape)
        if self.axis is None:
            if x.ndim < k:
                raise ValueError(
                    f"input of shape {x.shape} has fewer than {k} dimensions")
            axes = tuple(range(x.ndim - k, x.ndim))
        else:
            raw = (self.axis,) if np.ndim(self.axis) == 0 else self.axis
            if not all(-x.ndim <= a < x.ndim for a in raw):
                raise ValueError(
                    f"axis={self.axis!r} is out of range for an input of shape {x.shape}")
            axes = tuple(sorted(a % x.ndim for a in raw))
            if len(set(axes)) != len(axes):
                raise ValueError(
                    f"axis={self.axis!r} names the same axis twice for shape {x.shape}")
        got = tuple(x.shape[a] for a in axes)
        if got != self.normalized_shape:
            raise ValueError(
                f"{type(self).__name__} with normalized_shape={self.normalized_shape} got "
                f"an input of shape {x.shape} (sizes {got} at axes {axes})")
        return axes[0] if len(axes) == 1 else axes

    def _state_spec(self):
        spec = {}
        if self.weight is not None:
            spec["weight"] = (self.normalized_shape, self.dtype)
        if getattr(self, "bias", None) is not None:
            spec["bias"] = (self.normalized_shape, self.dtype)
        return spec


class LayerNorm(_RowNorm):
    """Layer normalization over one or more axes of each sample.

    The NumPy/CPU counterpart of ``torch.nn.LayerNorm``; ``axis`` also allows
    non-trailing axes (``axis=1`` on NCHW is ConvNeXt's channels-first
    LayerNorm) without transposes.  Training and evaluation behave the same.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        Sizes of the normalized axes (in increasing axis order); shape of
        ``weight`` and ``bias``.
    eps : float, default 1e-5
        Added to the variance; >= 0.
    elementwise_affine : bool, default True
        Learn ``weight`` (ones) and, if ``bias``, ``bias`` (zeros).
    bias : bool, default True
        Learn a bias (only with ``elementwise_affine``).
    axis : None, int or tuple of int, default None
        The normalized axes of the input.  None means the trailing
        ``len(normalized_shape)`` axes, as PyTorch.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        dtype of the parameters (an addition to PyTorch's signature).

    Attributes
    ----------
    training : bool
    weight, bias : ndarray of shape normalized_shape or None
    weight_grad, bias_grad : ndarray or None
        Set by each ``backward``.

    Raises
    ------
    ValueError
        On a bad ``normalized_shape``, negative ``eps``, or an ``axis`` whose
        length differs from ``normalized_shape``'s.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm import LayerNorm
    >>> ln = LayerNorm(4)
    >>> x = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> y = ln(x)
    >>> np.allclose(y.mean(axis=1), 0, atol=1e-6)
    True
    >>> dx = ln.backward(np.ones_like(y))
    >>> ln.bias_grad.tolist()
    [2.0, 2.0, 2.0, 2.0]
    >>> ch_first = LayerNorm(3, axis=1)          # NCHW, normalize channels
    >>> ch_first(np.ones((2, 3, 5, 5), np.float32)).shape
    (2, 3, 5, 5)
    """

    def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True,
                 bias=True, axis=None, dtype=np.float32):
        super().__init__()
        self._init_shape(normalized_shape, axis)
        self.eps = _check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = _float_dtype(dtype)
        shape = self.normalized_shape
        self.weight = np.ones(shape, self.dtype) if self.elementwise_affine else None
        self.bias = (np.zeros(shape, self.dtype)
                     if self.elementwise_affine and bias else None)

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}, axis={self.axis!r}, dtype={self.dtype.name})")

    def __call__(self, x):
        """Normalize ``x`` and remember what ``backward`` needs.

        Parameters
        ----------
        x : array_like, float32 or float64
            Its sizes at the normalized axes must equal ``normalized_shape``.
            It must not be modified in place before ``backward``.

        Returns
        -------
        ndarray
            x's shape and dtype.

        Raises
        ------
        ValueError
            If x's shape does not fit ``normalized_shape`` / ``axis``.
        TypeError
            On non-float input.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import LayerNorm
        >>> LayerNorm(2)(np.array([[1.0, 3.0]])).round(3).tolist()
        [[-1.0, 1.0]]
        """
        x = _as_input(x)
        axes = self._axes(x)
        w = _cast(self.weight, x.dtype)
        b = _cast(self.bias, x.dtype)
        y, mean, rstd = _nz.layer_norm(x, w, b, axis=axes, eps=self.eps, return_stats=True)
        self._cache = (x, mean, rstd, None if w is None else w.copy(), axes)
        return y

    def backward(self, dy):
        """Gradient with respect to the last forward input.

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the last output.

        Returns
        -------
        dx : ndarray
            The last input's shape and dtype.

        Raises
        ------
        RuntimeError
            If no forward pass happened yet.
        ValueError
            If dy's shape differs from the last input's.

        Notes
        -----
        Sets ``weight_grad`` and ``bias_grad`` (None for absent parameters).

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import LayerNorm
        >>> ln = LayerNorm(2, bias=False, dtype=np.float64)
        >>> y = ln(np.array([[1.0, 3.0]]))
        >>> dx = ln.backward(np.array([[1.0, 1.0]]))
        >>> np.allclose(dx, 0), ln.bias_grad is None
        (True, True)
        """
        dy, (x, mean, rstd, w, axes) = self._cached(dy)
        dx, dw, db = layer_norm_backward(dy, x, mean, rstd, w, axis=axes)
        self.weight_grad = self._grad(dw, self.weight)
        self.bias_grad = self._grad(db, self.bias)
        return dx


class RMSNorm(_RowNorm):
    """Root-mean-square normalization, ``x / sqrt(mean(x**2) + eps) * weight``.

    The NumPy/CPU counterpart of ``torch.nn.RMSNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        Sizes of the normalized axes (in increasing axis order); shape of
        ``weight``.
    eps : float or None, default None
        None means ``np.finfo(x.dtype).eps`` of each input, as PyTorch.
    elementwise_affine : bool, default True
        Learn ``weight`` (ones).
    axis : None, int or tuple of int, default None
        The normalized axes; None means the trailing
        ``len(normalized_shape)`` axes.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        dtype of the parameters (an addition to PyTorch's signature).

    Attributes
    ----------
    training : bool
    weight : ndarray of shape normalized_shape or None
    weight_grad : ndarray or None
        Set by each ``backward``.
    bias_grad : None
        Always None (RMSNorm has no bias).

    Raises
    ------
    ValueError
        On a bad ``normalized_shape``, negative ``eps``, or an ``axis`` whose
        length differs from ``normalized_shape``'s.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm import RMSNorm
    >>> rms = RMSNorm(2, eps=0.0)
    >>> rms(np.array([[3.0, 4.0]])).round(4).tolist()
    [[0.8485, 1.1314]]
    >>> dx = rms.backward(np.ones((1, 2)))
    """

    def __init__(self, normalized_shape, *, eps=None, elementwise_affine=True,
                 axis=None, dtype=np.float32):
        super().__init__()
        self._init_shape(normalized_shape, axis)
        self.eps = _check_eps(eps, allow_none=True)
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = _float_dtype(dtype)
        self.weight = (np.ones(self.normalized_shape, self.dtype)
                       if self.elementwise_affine else None)

    def __repr__(self):
        return (f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, axis={self.axis!r}, "
                f"dtype={self.dtype.name})")

    def __call__(self, x):
        """Normalize ``x`` and remember what ``backward`` needs.

        Parameters
        ----------
        x : array_like, float32 or float64
            Its sizes at the normalized axes must equal ``normalized_shape``.
            It must not be modified in place before ``backward``.

        Returns
        -------
        ndarray
            x's shape and dtype.

        Raises
        ------
        ValueError
            If x's shape does not fit ``normalized_shape`` / ``axis``.
        TypeError
            On non-float input.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import RMSNorm
        >>> RMSNorm(2, eps=0.0)(np.array([[1.0, -1.0]])).tolist()
        [[1.0, -1.0]]
        """
        x = _as_input(x)
        axes = self._axes(x)
        w = _cast(self.weight, x.dtype)
        y, rstd = _nz.rms_norm(x, w, axis=axes, eps=self.eps, return_stats=True)
        self._cache = (x, rstd, None if w is None else w.copy(), axes)
        return y

    def backward(self, dy):
        """Gradient with respect to the last forward input.

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the last output.

        Returns
        -------
        dx : ndarray
            The last input's shape and dtype.

        Raises
        ------
        RuntimeError
            If no forward pass happened yet.
        ValueError
            If dy's shape differs from the last input's.

        Notes
        -----
        Sets ``weight_grad`` (None without ``elementwise_affine``).

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm import RMSNorm
        >>> rms = RMSNorm(2, eps=0.0, dtype=np.float64)
        >>> y = rms(np.array([[3.0, 4.0]]))
        >>> dx = rms.backward(np.array([[3.0, 4.0]]))   # dy parallel to x: dx = 0
        >>> np.allclose(dx, 0), rms.weight_grad.round(2).tolist()
        (True, [2.55, 4.53])
        """
        dy, (x, rstd, w, axes) = self._cached(dy)
        dx, dw = rms_norm_backward(dy, x, rstd, w, axis=axes)
        self.weight_grad = self._grad(dw, self.weight)
        self.bias_grad = None
        return dx
