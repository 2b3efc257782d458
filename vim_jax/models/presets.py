"""The registered Vision Mamba models: the five released ones, and a tiny preset for tests."""

from __future__ import annotations

from vim_jax.config import VimConfig
from vim_jax.models.vim import VisionMamba
from vim_jax.registry import register_model

_SUFFIX = "bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"


def _build(config, rngs):
    return VisionMamba(config, rngs=rngs)


def _released(name: str, official: str, embed_dim: int, stride: int, top1: float, note: str = ""):
    register_model(
        name, VimConfig(embed_dim=embed_dim, stride=stride), _build, aliases=(official,),
        description=f"ImageNet-1k top-1 {top1} (released weights{note})")


_released("vim_tiny", f"vim_tiny_patch16_224_{_SUFFIX}", 192, 16, 76.1)
_released("vim_tiny_stride8", f"vim_tiny_patch16_stride8_224_{_SUFFIX}", 192, 8, 78.3, ", stride-8 fine-tune")
_released("vim_small", f"vim_small_patch16_224_{_SUFFIX}", 384, 16, 80.5)
_released("vim_small_stride8", f"vim_small_patch16_stride8_224_{_SUFFIX}", 384, 8, 81.6, ", stride-8 fine-tune")
_released("vim_base", "vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2",
          768, 16, 81.9)

register_model(
    "vim_test",
    VimConfig(img_size=32, patch_size=8, stride=8, embed_dim=32, depth=2, d_state=8, num_classes=10),
    _build, description="a two-block Vim on 32x32 images, for tests")
