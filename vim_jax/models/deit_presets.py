"""The registered DeiT models (timm's `deit_*_patch16_224` as aliases) and a tiny one for tests."""

from __future__ import annotations

from vim_jax.models.deit import DeiT, DeiTConfig
from vim_jax.registry import register_model


def _build(config, rngs):
    return DeiT(config, rngs=rngs)


def _deit(name: str, embed_dim: int, num_heads: int, top1: float):
    register_model(
        name, DeiTConfig(embed_dim=embed_dim, num_heads=num_heads), _build, aliases=(f"{name}_patch16_224",),
        description=f"DeiT baseline; the paper's ImageNet-1k top-1 {top1}")


_deit("deit_tiny", 192, 3, 72.2)
_deit("deit_small", 384, 6, 79.8)
_deit("deit_base", 768, 12, 81.8)

register_model(
    "deit_test",
    DeiTConfig(img_size=32, patch_size=8, stride=8, embed_dim=32, depth=2, num_heads=2, num_classes=10),
    _build, description="a two-block DeiT on 32x32 images, for tests")
