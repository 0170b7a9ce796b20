"""fastnorm: fast, numerically stable CPU normalization layers for NumPy.

OpenMP-parallel C kernels (src_c/) with run-time SIMD dispatch, wrapped with
Cython, under a NumPy-compatible API.
"""
__version__ = "0.1.0"

from . import _ext
from ._config import (_apply_buffer_cache_env, _apply_forced_isa, get_num_threads, set_buffer_cache,
                      set_num_threads, show_config)
from .normalization import batch_norm, layer_norm, moments, rms_norm
from .backward import batch_norm_backward, layer_norm_backward, rms_norm_backward
from .grouped import group_norm, group_norm_backward, instance_norm, instance_norm_backward
from .residual import add_layer_norm, add_rms_norm
from .family import (fold_batch_norm, local_response_norm, local_response_norm_backward, weight_norm,
                     weight_norm_backward)
from .layers import BatchNorm, LayerNorm, RMSNorm
from .layers_grouped import GroupNorm, InstanceNorm
from .running_moments import RunningMoments

_apply_forced_isa()
_apply_buffer_cache_env()

__all__ = [
    "moments", "batch_norm", "layer_norm", "rms_norm",
    "batch_norm_backward", "layer_norm_backward", "rms_norm_backward",
    "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
    "add_layer_norm", "add_rms_norm",
    "local_response_norm", "local_response_norm_backward", "weight_norm", "weight_norm_backward",
    "fold_batch_norm",
    "BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm", "RunningMoments",
    "set_num_threads", "get_num_threads", "set_buffer_cache", "show_config",
]
