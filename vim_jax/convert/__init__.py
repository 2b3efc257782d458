"""Checkpoint conversion: official PyTorch `.pth` files and vim_jax orbax checkpoints.

Reading `.pth` files needs no torch (`pth_reader`); only `export_official` imports it.
"""

from vim_jax.convert.backbone_init import BackboneParams, checkpoint_cls_layout, read_backbone_params
from vim_jax.convert.checkpoint import (
    CheckpointMismatchError,
    LoadedParams,
    checkpoint_num_classes,
    export_official,
    fill_abstract,
    load_into,
    read_params,
)
from vim_jax.convert.orbax_io import read_metadata, restore_params, save_params
from vim_jax.convert.pos_embed import resize_pos_embed
from vim_jax.convert.pth_reader import CheckpointFormatError, UnsafeCheckpointError, open_pth, read_pth

__all__ = [
    "BackboneParams",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "LoadedParams",
    "UnsafeCheckpointError",
    "checkpoint_cls_layout",
    "checkpoint_num_classes",
    "export_official",
    "fill_abstract",
    "load_into",
    "open_pth",
    "read_metadata",
    "read_backbone_params",
    "read_params",
    "read_pth",
    "resize_pos_embed",
    "restore_params",
    "save_params",
]
