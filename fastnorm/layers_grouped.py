"""GroupNorm and InstanceNorm layers with PyTorch-compatible state.

The counterparts of ``torch.nn.GroupNorm`` and ``torch.nn.InstanceNorm1d/2d/3d``
in the style of :mod:`fastnorm.layers`: ``y = layer(x)`` runs the forward pass
and keeps what ``dx = layer.backward(dy)`` needs; ``backward`` stores
``weight_grad`` / ``bias_grad``; ``state_dict()`` / ``load_state_dict()`` use
PyTorch's key names and shapes, so a trained torch module can be loaded for
CPU inference (convert tensors with ``.numpy()``), and back.
"""

import numbers

import numpy as np

from . import _engine
from . import grouped as _gr
from .layers import _Layer, _as_input, _cast, _check_eps, _float_dtype

__all__ = ["GroupNorm", "InstanceNorm"]


def _positive_int(value, name):
    if (not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool)
            or value <= 0):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _channel_axis(channel_axis):
    if not isinstance(channel_axis, (numbers.Integral, np.integer)) or isinstance(
            channel_axis, bool):
        raise ValueError(f"channel_axis must be an int, got {channel_axis!r}")
    return int(channel_axis)


class _ChannelLayer(_Layer):
    """Input checks shared by GroupNorm and InstanceNorm."""

    _min_ndim = 2

    def _check_input(self, x):
        name = type(self).__name__
        if x.ndim < self._min_ndim:
            raise ValueError(
                f"{name} expects an input with ndim >= {self._min_ndim}, got shape {x.shape}")
        if not -x.ndim <= self.channel_axis < x.ndim or self.channel_axis % x.ndim == 0:
            raise ValueError(
                f"channel_axis={self.channel_axis} is out of range (or the batch axis) "
                f"for an input of shape {x.shape}")
        C = self._channels
        if x.shape[self.channel_axis] != C:
            raise ValueError(
                f"{name}({C}) got an input of shape {x.shape} with "
                f"{x.shape[self.channel_axis]} channels on channel_axis={self.channel_axis}")


class GroupNorm(_ChannelLayer):
    """Group normalization: per sample, over groups of channels and all spatial axes.

    The NumPy/CPU counterpart of ``torch.nn.GroupNorm``: the ``num_channels``
    channels are split into ``num_groups`` groups of consecutive channels;
    each (sample, group) is normalized with its own mean and biased variance,
    then a per-channel affine is applied.  Training and evaluation behave the
    same (there are no running statistics).  Channels-last inputs
    (``channel_axis=-1``) are computed natively with exact statistics.

    Parameters
    ----------
    num_groups : int
        Number of groups; must divide ``num_channels``.
    num_channels : int
        Number of channels C (``x.shape[channel_axis]``).
    eps : float, default 1e-5
        Added to the variance; >= 0.
    affine : bool, default True
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    channel_axis : int, default 1
        The channel axis of the inputs; ``-1`` for channels-last (NHWC).
        Must not be the batch axis 0.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        dtype of the parameters (an addition to PyTorch's signature).

    Attributes
    ----------
    training : bool
        True after construction (has no effect on the computation).
    weight, bias : ndarray of shape (C,) or None
    weight_grad, bias_grad : ndarray of shape (C,) or None
        Set by each ``backward``.

    Raises
    ------
    ValueError
        On non-positive ``num_groups`` / ``num_channels``, ``num_groups`` not
        dividing ``num_channels``, or a negative ``eps``.
    TypeError
        On a non-float ``dtype``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnorm.layers_grouped import GroupNorm
    >>> gn = GroupNorm(2, 4)
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> y = gn(x)
    >>> np.allclose(y.reshape(2, 8).mean(axis=1), 0, atol=1e-6)
    True
    >>> dx = gn.backward(np.ones_like(y))
    >>> gn.bias_grad.tolist()
    [4.0, 4.0, 4.0, 4.0]
    >>> sorted(gn.state_dict())
    ['bias', 'weight']
    """

    def __init__(self, num_groups, num_channels, *, eps=1e-5, affine=True, channel_axis=1,
                 dtype=np.float32):
        super().__init__()
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = _positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"num_groups={self.num_groups} does not divide num_channels={self.num_channels}")
        self.eps = _check_eps(eps)
        self.affine = bool(affine)
        self.channel_axis = _channel_axis(channel_axis)
        self.dtype = _float_dtype(dtype)
        C = self.num_channels
        self.weight = np.ones(C, self.dtype) if self.affine else None
        self.bias = np.zeros(C, self.dtype) if self.affine else None

    @property
    def _channels(self):
        return self.num_channels

    def __repr__(self):
        return (f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, channel_axis={self.channel_axis}, "
                f"dtype={self.dtype.name})")

    def __call__(self, x):
        """Normalize ``x`` and remember what ``backward`` needs.

        Parameters
        ----------
        x : array_like, float32 or float64
            ``ndim >= 2`` with ``num_channels`` channels on ``channel_axis``.
            It must not be modified in place before ``backward``.

        Returns
        -------
        ndarray
            x's shape and dtype.

        Raises
        ------
        ValueError
            On a wrong number of channels or dimensions.
        TypeError
            On non-float input.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm.layers_grouped import GroupNorm
        >>> GroupNorm(1, 2, eps=0.0)(np.array([[1.0, 3.0]])).tolist()
        [[-1.0, 1.0]]
        """
        x = _as_input(x)
        self._check_input(x)
        w = _cast(self.weight, x.dtype)
        b = _cast(self.bias, x.dtype)
        y, mean, rstd = _gr.group_norm(x, self.num_groups, w, b, eps=self.eps,
                                       channel_axis=self.channel_axis, return_stats=True)
        self._cache = (x, mean, rstd, None if w is None else w.copy())
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
        Sets ``weight_grad`` and ``bias_grad`` (None when ``affine=False``),
        overwriting the previous ones.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm.layers_grouped import GroupNorm
        >>> gn = GroupNorm(1, 2, dtype=np.float64)
        >>> y = gn(np.array([[1.0, 3.0]]))
        >>> dx = gn.backward(np.array([[1.0, 1.0]]))   # constant dy: dx = 0
        >>> np.allclose(dx, 0), gn.bias_grad.tolist()
        (True, [1.0, 1.0])
        """
        dy, (x, mean, rstd, w) = self._cached(dy)
        dx, dw, db = _gr.group_norm_backward(dy, x, self.num_groups, mean, rstd, w,
                                             channel_axis=self.channel_axis)
        self.weight_grad = self._grad(dw, self.weight)
        self.bias_grad = self._grad(db, self.bias)
        return dx

    def _state_spec(self):
        if not self.affine:
            return {}
        C = self.num_channels
        return {"weight": ((C,), self.dtype), "bias": ((C,), self.dtype)}


class InstanceNorm(_ChannelLayer):
    """Instance normalization: per sample and channel, over the spatial axes.

    The NumPy/CPU counterpart of ``torch.nn.InstanceNorm1d/2d/3d`` (one class
    for any number of spatial axes).  In training mode, or always when
    ``track_running_stats=False``, each (sample, channel) is normalized with
    its own mean and biased variance; with ``track_running_stats=True``
    training also updates ``running_mean`` / ``running_var`` with the batch
    average of the instance means and unbiased variances, and evaluation mode
    normalizes with the running statistics.

    As in PyTorch, ``num_batches_tracked`` is kept (for state_dict
    compatibility) but never incremented, and ``momentum=None`` means the
    running statistics are not updated at all (PyTorch passes momentum 0).

    Parameters
    ----------
    num_features : int
        Number of channels C (``x.shape[channel_axis]``).
    eps : float, default 1e-5
        Added to the variance; >= 0.
    momentum : float or None, default 0.1
        ``r = (1 - momentum) * r + momentum * batch``; None is 0.
    affine : bool, default False
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default False
        Keep ``running_mean`` (zeros) / ``running_var`` (ones) /
        ``num_batches_tracked`` and use them in evaluation mode.
    channel_axis : int, default 1
        The channel axis; ``-1`` for channels-last.  Not the batch axis 0.
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
        dtype of parameters and buffers.

    Attributes
    ----------
    training : bool
        True after construction.
    weight, bias : ndarray of shape (C,) or None
    running_mean, running_var : ndarray of shape (C,) or None
    num_batches_tracked : int or None
        0 when ``track_running_stats``, else None.
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
    >>> from fastnorm.layers_grouped import InstanceNorm
    >>> inorm = InstanceNorm(2, affine=True, track_running_stats=True)
    >>> x = np.array([[[1.0, 3.0], [2.0, 6.0]]], dtype=np.float32)
    >>> inorm(x).round(3).tolist()
    [[[-1.0, 1.0], [-1.0, 1.0]]]
    >>> np.allclose(inorm.running_mean, [0.2, 0.4])
    True
    >>> dx = inorm.backward(np.ones_like(x))
    >>> inorm.bias_grad.tolist()
    [2.0, 2.0]
    >>> sorted(inorm.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    >>> y_eval = inorm.eval()(x)        # running statistics
    """

    _min_ndim = 3

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, channel_axis=1, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        if momentum is not None and (
                not isinstance(momentum, numbers.Real) or isinstance(momentum, bool)
                or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum must be None or a number in [0, 1], got {momentum!r}")
        self.eps = _check_eps(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.channel_axis = _channel_axis(channel_axis)
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

    @property
    def _channels(self):
        return self.num_features

    def __repr__(self):
        return (f"InstanceNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
                f"channel_axis={self.channel_axis}, dtype={self.dtype.name})")

    def reset_running_stats(self):
        """Reset running_mean to zeros, running_var to ones, num_batches_tracked to 0.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm.layers_grouped import InstanceNorm
        >>> inorm = InstanceNorm(1, track_running_stats=True)
        >>> _ = inorm(np.array([[[1.0, 3.0]]]))
        >>> inorm.reset_running_stats()
        >>> inorm.running_mean.tolist()
        [0.0]
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
            ``ndim >= 3`` (batch, channels, at least one spatial axis) with
            ``num_features`` channels on ``channel_axis``.  It must not be
            modified in place before ``backward``.

        Returns
        -------
        ndarray
            x's shape and dtype.

        Raises
        ------
        ValueError
            On a wrong number of channels or dimensions, or one spatial value
            per instance when using instance statistics; running statistics
            are then unchanged.
        TypeError
            On non-float input.

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm.layers_grouped import InstanceNorm
        >>> InstanceNorm(1, eps=0.0)(np.array([[[1.0, 3.0]]])).tolist()
        [[[-1.0, 1.0]]]
        """
        x = _as_input(x)
        self._check_input(x)
        use_input = self.training or not self.track_running_stats
        w = _cast(self.weight, x.dtype)
        b = _cast(self.bias, x.dtype)
        rm = rv = None
        if self.track_running_stats:
            # Work on copies in x's dtype; copy back only after success so a failing
            # call cannot leave half-updated statistics.
            rm = np.array(self.running_mean, dtype=x.dtype, copy=True)
            rv = np.array(self.running_var, dtype=x.dtype, copy=True)
        if use_input:
            momentum = 0.0 if self.momentum is None else self.momentum
            y, mean, rstd = _gr.instance_norm(
                x, w, b, running_mean=rm, running_var=rv, training=True, momentum=momentum,
                eps=self.eps, channel_axis=self.channel_axis, return_stats=True)
            if rm is not None and x.size > 0:
                self.running_mean[...] = rm
                self.running_var[...] = rv
        else:
            y = _gr.instance_norm(x, w, b, running_mean=rm, running_var=rv, training=False,
                                  eps=self.eps, channel_axis=self.channel_axis)
            mean = rm
            rstd = _engine.inv_std(rv, self.eps).astype(x.dtype)
        self._cache = (x, mean, rstd, None if w is None else w.copy(), use_input)
        return y

    def backward(self, dy):
        """Gradient with respect to the last forward input.

        With instance statistics the gradient flows through each instance's
        mean and variance; with running statistics (evaluation mode and
        ``track_running_stats``) it is ``dy * weight / sqrt(running_var + eps)``.

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
        Sets ``weight_grad`` and ``bias_grad`` (None when ``affine=False``).

        Examples
        --------
        >>> import numpy as np
        >>> from fastnorm.layers_grouped import InstanceNorm
        >>> inorm = InstanceNorm(1, affine=True, dtype=np.float64)
        >>> y = inorm(np.array([[[1.0, 3.0]]]))
        >>> dx = inorm.backward(np.array([[[1.0, 1.0]]]))
        >>> np.allclose(dx, 0), inorm.bias_grad.tolist()
        (True, [2.0])
        """
        dy, (x, mean, rstd, w, used_input) = self._cached(dy)
        dx, dw, db = _gr.instance_norm_backward(dy, x, mean, rstd, w, training=used_input,
                                                channel_axis=self.channel_axis)
        self.weight_grad = self._grad(dw, self.weight)
        self.bias_grad = self._grad(db, self.bias)
        return dx

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
