"""vim_jax: Vision Mamba (Vim) in JAX / Flax NNX."""

from vim_jax.config import VimConfig
from vim_jax.models import presets as _presets  # registers the models
from vim_jax.models.vim import VisionMamba
from vim_jax.ops import list_backends, selective_scan, selective_scan_bidirectional
from vim_jax.registry import EvalSettings, create_model, get_config, list_models, register_model

__all__ = [
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
