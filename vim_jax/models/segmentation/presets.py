"""Registered segmentors: the official ADE20K UperNet models (`seg/configs/vim/upernet/` in
hustvl/Vim), the same UperNet on DeiT-Ti for comparison, and a tiny one for tests.

The official segmentation backbones have no class token (Vim-S is built with one, which is then
deleted with its position-embedding row), drop path 0.1, and are built for the 512 crop; Vim-Ti
keeps its residual stream in the compute dtype, Vim-S in float32 with RoPE on tokens and
residuals. UperNet's width is the embedding width; the FCN auxiliary head's is 256.
"""

from __future__ import annotations

from vim_jax.models.segmentation.config import SegmentorConfig
from vim_jax.models.segmentation.segmentor import Segmentor
from vim_jax.registry import EvalSettings, register_model

_HEADLESS = (("num_classes", 0), ("cls_token", "none"), ("pool", "mean"))


def _build(config, rngs):
    return Segmentor(config, rngs=rngs)


# mmseg's ADE20K normalisation is ImageNet's mean and std (in 0-255 units); 512 crops, no resize margin.
_ADE = EvalSettings(input_size=512, crop_pct=1.0, interpolation="bilinear")

register_model(
    "upernet_vim_tiny",
    SegmentorConfig(backbone="vim_tiny", decode_channels=192, backbone_overrides=_HEADLESS + (
        ("img_size", 512), ("residual_in_fp32", False), ("drop_path_rate", 0.1))),
    _build, eval_settings=_ADE, description="UperNet + Vim-Ti, ADE20K 150 classes, the official recipe")
register_model(
    "upernet_vim_small",
    SegmentorConfig(backbone="vim_small", decode_channels=384, backbone_overrides=_HEADLESS + (
        ("img_size", 512), ("residual_in_fp32", True), ("rope", True), ("rope_residual", True),
        ("drop_path_rate", 0.1))),
    _build, eval_settings=_ADE, description="UperNet + Vim-S, ADE20K 150 classes, the official recipe")
# mmseg's ViT/DeiT UperNet reads blocks 2, 5, 8 and 11 of twelve; the class token is dropped from
# the maps. The widths are those of the Vim-Ti segmentor, so that only the backbone differs.
register_model(
    "upernet_deit_tiny",
    SegmentorConfig(backbone="deit_tiny", out_indices=(2, 5, 8, 11), decode_channels=192, backbone_overrides=(
        ("num_classes", 0), ("img_size", 512), ("drop_path_rate", 0.1))),
    _build, eval_settings=_ADE, description="UperNet + DeiT-Ti, ADE20K 150 classes, Vim-Ti's head widths")
register_model(
    "upernet_vim_test",
    SegmentorConfig(backbone="vim_test", out_indices=(0, 1, 2, 3), num_classes=11, decode_channels=16,
                    aux_channels=8, crop_size=32, slide_stride=24,
                    backbone_overrides=_HEADLESS + (("depth", 4),)),
    _build, eval_settings=EvalSettings(input_size=32, crop_pct=1.0),
    description="a four-block Vim-UperNet on 32x32 crops, 11 classes, for tests")
