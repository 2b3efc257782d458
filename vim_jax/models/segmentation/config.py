"""`SegmentorConfig`: a registered backbone read at four blocks, the pyramid, UperNet and the FCN
auxiliary head, with the official ADE20K recipe's sizes as defaults."""

from __future__ import annotations

import dataclasses
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class SegmentorConfig:
    """Architecture of a segmentation model.

    `backbone` is a registered model name built with `backbone_overrides` (pairs of config field
    and value, e.g. `(("img_size", 512), ("cls_token", "none"))`); its blocks `out_indices` feed
    the pyramid. `decode_channels` is UperNet's width (the official Vim configs set it to the
    embedding width), `aux_channels` the FCN head's (0: no auxiliary head). `crop_size` and
    `slide_stride` are the sliding-window evaluation's (the official 512 / 341).
    """

    backbone: str = "vim_tiny"
    backbone_overrides: tuple[tuple[str, Any], ...] = ()
    out_indices: tuple[int, ...] = (5, 11, 17, 23)
    num_classes: int = 150
    decode_channels: int = 192
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    aux_channels: int = 256
    aux_in_index: int = 2  # the stride-16 map
    aux_num_convs: int = 1
    dropout: float = 0.1
    dtype: str = "float32"  # compute dtype of the neck and heads (BatchNorm and logits in float32)
    crop_size: int = 512
    slide_stride: int = 341

    def __post_init__(self):
        object.__setattr__(self, "backbone_overrides", tuple((k, v) for k, v in self.backbone_overrides))
        object.__setattr__(self, "out_indices", tuple(self.out_indices))
        object.__setattr__(self, "pool_scales", tuple(self.pool_scales))
        if len(self.out_indices) != 4:
            raise ValueError(f"the pyramid reads four blocks, got out_indices={self.out_indices}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if not 0 <= self.aux_in_index < 4:
            raise ValueError(f"aux_in_index picks one of the four pyramid maps, got {self.aux_in_index}")
        if self.dtype not in DTYPES:
            raise ValueError(f"SegmentorConfig.dtype={self.dtype!r}; expected one of {DTYPES}")
        if not 0 < self.slide_stride <= self.crop_size:
            raise ValueError(f"slide_stride must be in (0, crop_size={self.crop_size}], got {self.slide_stride}")

    @property
    def backbone_config(self):
        from vim_jax.registry import get_config  # the registry imports the presets that import this

        return get_config(self.backbone, **dict(self.backbone_overrides))

    def replace(self, **changes) -> "SegmentorConfig":
        return dataclasses.replace(self, **changes)


def registered_segmentors() -> list[str]:
    """The registered models whose config is a `SegmentorConfig`, sorted."""
    from vim_jax.registry import list_models, resolve  # the registry imports the presets that import this

    return [name for name in list_models() if isinstance(resolve(name).config, SegmentorConfig)]
