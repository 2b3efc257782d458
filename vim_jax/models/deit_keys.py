"""DeiT's checkpoint description (`DEIT_KEYS`): vim_jax checkpoints only, no official key table."""

from __future__ import annotations

from vim_jax.models.checkpoint_keys import COMMON_RUNTIME_FIELDS, CheckpointKeys

DEIT_KEYS = CheckpointKeys(
    runtime_fields=COMMON_RUNTIME_FIELDS | {"attention"},
    # A DeiT's single class token leads the sequence.
    cls_layout=lambda cfg: "head" if cfg.num_cls_tokens else "none",
    describe=lambda cfg: f"num_heads={cfg.num_heads}",
)
