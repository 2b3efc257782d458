"""vim_jax: Vision Mamba (Vim) in JAX / Flax NNX."""

from vim_jax.config import VimConfig
from vim_jax.models import deit_presets as _deit_presets  # registers the DeiT baselines
from vim_jax.models import presets as _presets  # registers the Vim models
from vim_jax.models.segmentation import presets as _segmentation_presets  # registers the segmentors
from vim_jax.models.deit import DeiT, DeiTConfig
from vim_jax.models.vim import VisionMamba
from vim_jax.ops import list_backends, selective_scan, selective_scan_bidirectional
from vim_jax.registry import EvalSettings, create_model, get_config, list_models, register_model

__all__ = [
    "DeiT",
    "DeiTConfig",
    "EvalSettings",
    "VimConfig",
    "VisionMamba",
    "create_model",
    "get_config",
    "list_backends",
    "list_models",
    "register_model",
    "selective_scan",
    "selective_scan_bidirectional",
]
