"""A segmentor's backbone started from a classifier's checkpoint.

The official segmentation recipe (hustvl/Vim `seg/`) fine-tunes ImageNet classifiers under UperNet
with a backbone that has no class token and no head, at another image size. `read_backbone_params`
turns a classifier's checkpoint (an official `.pth` or a vim_jax one, of the family of the
backbone) into that backbone's parameters: the checkpoint is read and checked as the classifier it
is, with the backbone's class-token layout replaced by the checkpoint's, every other shape the
backbone's, and its position embedding resized to the backbone's patch grid (bicubic, as upstream
interpolates it); then the class token and its position-embedding row(s) are dropped, at the
index they have in that grid (the middle one for Vim's middle class token, where upstream's
`pos_embed[:, 1:]` assumes a leading one). The classifier is not read. Whatever the backbone has
that the checkpoint lacks is an error (the converter's `CheckpointMismatchError`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from flax import nnx

from vim_jax.config import CLS_TOKEN_POSITIONS, class_token_positions
from vim_jax.convert.checkpoint import (CheckpointMismatchError, checkpoint_num_classes, official_state_keys,
                                        read_params, recorded_config)
from vim_jax.convert.mismatch import config_differences
from vim_jax.models.checkpoint_keys import CLS_TOKEN, HEAD


@dataclasses.dataclass(frozen=True)
class BackboneParams:
    """A backbone's parameters read from a classifier's checkpoint, and what was left out.

    params: the backbone's parameter tree (`nnx.to_pure_dict` layout), every entry filled.
    cls_token: the checkpoint's class-token layout ("middle", "head", "head_tail", "none").
    unused: what of the checkpoint the backbone does not use (its classifier, class token and
      class-token position rows), in words.
    pos_embed: (checkpoint shape, backbone shape) of the position embedding, or None.
    config_changes: "field: checkpoint X, model Y" for each config field the backbone sets
      otherwise than a vim_jax checkpoint's model (runtime fields aside; none for a `.pth`).
    """

    params: dict
    path: Path
    cls_token: str
    unused: tuple[str, ...]
    pos_embed: tuple[tuple[int, ...], tuple[int, ...]] | None
    config_changes: tuple[str, ...]

    def describe(self) -> str:
        """One line for logs: what was read, resized and left out."""
        parts = [f"backbone from {self.path} (class token: {self.cls_token})"]
        if self.pos_embed:
            parts.append("pos_embed {} -> {}".format(*self.pos_embed))
        if self.unused:
            parts.append("not used: " + ", ".join(self.unused))
        if self.config_changes:
            parts.append("the backbone differs from the checkpoint's model in " + "; ".join(self.config_changes))
        return "; ".join(parts)


def checkpoint_cls_layout(path: str | os.PathLike, abstract_backbone: nnx.Module, *, which: str = "model") -> str:
    """Where a classifier checkpoint's class token(s) sit: as its recorded config says (vim_jax
    checkpoints), or as the family reads an official state dict's keys (Vim: one class token is in
    the middle, upstream's default, see `vim_keys.official_cls_layout`; DeiT: it leads the sequence)."""
    path = Path(path)
    keys = type(abstract_backbone).checkpoint_keys
    if path.is_dir():
        source = recorded_config(path, type(abstract_backbone.cfg))
        if source is None:
            raise CheckpointMismatchError(f"{path} records no model config, so where its class token sits is "
                                          "unknown: pass cls_token ('middle', 'head', 'head_tail' or 'none')")
        return keys.cls_layout(source)
    return keys.official_cls_layout(official_state_keys(path, which=which))


def read_backbone_params(path: str | os.PathLike, abstract_backbone: nnx.Module, *, which: str = "model",
                         cls_token: str | None = None) -> BackboneParams:
    """Reads a classifier's checkpoint into a backbone without a head (`num_classes=0`).

    Args:
      path: an official `.pth` file or a vim_jax checkpoint (`vim-jax convert` output or a
        `vim-jax train` checkpoint directory, its latest step) of the backbone's family.
      abstract_backbone: the backbone (e.g. `nnx.eval_shape` of a VisionMamba with
        `cls_token="none"`); its config decides every shape but the checkpoint's class token.
      which: "model" or "model_ema".
      cls_token: the checkpoint's class-token layout; None reads it (`checkpoint_cls_layout`).
    Raises:
      `CheckpointMismatchError`: the checkpoint does not fit (listing every difference), or its
      class token cannot become the backbone's (the backbone must have none, or the same).
    """
    path, cfg = Path(path), abstract_backbone.cfg
    keys = type(abstract_backbone).checkpoint_keys
    if cfg.num_classes:
        raise ValueError(f"read_backbone_params fills a backbone without a classifier; this one has "
                         f"num_classes={cfg.num_classes}")
    if cls_token is not None and cls_token not in CLS_TOKEN_POSITIONS:
        raise ValueError(f"cls_token must be one of {CLS_TOKEN_POSITIONS} or None, got {cls_token!r}")
    source_layout = cls_token or checkpoint_cls_layout(path, abstract_backbone, which=which)
    target_layout = keys.cls_layout(cfg)
    if source_layout != target_layout and target_layout != "none":
        raise CheckpointMismatchError(
            f"{path}: its class token ({source_layout!r}) cannot become this backbone's ({target_layout!r}); "
            "a backbone starts from a classifier with the same class-token layout, or has none (cls_token='none')")
    # The classifier as it was trained, but at the backbone's shapes: read and checked as such,
    # its position embedding resized to the backbone's grid with the class rows where they go there.
    classifier_cfg = keys.with_cls_layout(cfg, source_layout)
    classifier = nnx.eval_shape(lambda: type(abstract_backbone)(classifier_cfg, rngs=nnx.Rngs(0)))
    loaded = read_params(path, classifier, which=which, new_head=True, may_differ=keys.backbone_fields)
    params = dict(loaded.params)
    unused = [f"{HEAD} ({num} classes)" for num in [checkpoint_num_classes(path, which=which)] if num]
    if source_layout != target_layout:
        del params[CLS_TOKEN]
        rows = class_token_positions(source_layout, cfg.num_patches)
        params["pos_embed"] = np.delete(np.asarray(params["pos_embed"]), rows, axis=1)
        unused += [CLS_TOKEN, f"pos_embed row(s) {', '.join(map(str, rows))} (the class token's, at the "
                              f"{cfg.grid_size[0]}x{cfg.grid_size[1]} grid)"]
    changes = ()
    if loaded.kind == "orbax":
        recorded = recorded_config(path, type(cfg))
        if recorded is not None:
            changes = tuple(config_differences(recorded, cfg, keys.runtime_fields | {"num_classes", "cls_token"}))
    pos_embed = None
    if "pos_embed" in params:
        saved = loaded.pos_embed_resized[0] if loaded.pos_embed_resized else (1, classifier_cfg.seq_len, cfg.embed_dim)
        pos_embed = (saved, tuple(params["pos_embed"].shape))
    return BackboneParams(params, loaded.path, source_layout, tuple(unused), pos_embed, changes)
