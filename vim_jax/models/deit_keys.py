"""DeiT's checkpoint description (`DEIT_KEYS`): vim_jax checkpoints only, no official key table."""

from __future__ import annotations

from vim_jax.models.checkpoint_keys import COMMON_RUNTIME_FIELDS, CheckpointKeys

# A DeiT's single class token leads the sequence; it has one exactly when it pools it.
_POOL_OF_LAYOUT = {"head": "token", "none": "mean"}


def with_cls_layout(cfg, layout: str):
    """The same DeiT with its class token at `layout` ("head" or "none")."""
    if layout not in _POOL_OF_LAYOUT:
        raise ValueError(f"a DeiT's class token leads the sequence or is absent: cls_token 'head' or 'none', "
                         f"got {layout!r}")
    return cfg.replace(pool=_POOL_OF_LAYOUT[layout])


DEIT_KEYS = CheckpointKeys(
    runtime_fields=COMMON_RUNTIME_FIELDS | {"attention", "unroll_blocks"},
    cls_layout=lambda cfg: "head" if cfg.num_cls_tokens else "none",
    describe=lambda cfg: f"num_heads={cfg.num_heads}",
    with_cls_layout=with_cls_layout,
    backbone_fields=frozenset({"residual_in_fp32"}),
)
