"""The official segmentation recipe's optimizer pieces: layer-wise learning-rate decay and mmcv's
"poly" schedule with linear warm-up.

Layer-wise decay (BEiT's `LayerDecayOptimizerConstructor`, which the official Vim segmentation
configs use with 24 layers and rate 0.92): with `L = num_layers + 2` groups, a parameter of
group `g` trains at `rate ** (L - 1 - g)` times the learning rate (its weight decay too: the scale
multiplies the whole AdamW update). Groups: the patch embedding, position embedding and class
token are 0, block `i` is `i + 1`, everything else (final norm, neck, heads) `L - 1`, at full
rate.

`rule="official"` is what that constructor does to a Vim backbone: it finds blocks by the name
`backbone.blocks.<i>`, but Vim calls them `backbone.layers.<i>`, so every block falls into the
last group and trains at the full rate; only the embeddings are decayed (by `rate ** 25`).
`rule="per_block"` is the decay as intended (what it does to a ViT/DeiT backbone).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

EMBEDDING_NAMES = ("patch_embed", "pos_embed", "cls_token")
BLOCKS_NAME = "blocks"
RULES = ("official", "per_block")


def layer_decay_scales(params: dict, *, num_layers: int, rate: float, rule: str = "per_block") -> dict:
    """Nested dict like `params` (`nnx.to_pure_dict` layout) of learning-rate scales: a float per
    parameter, or for the stacked blocks (leading axis of `num_layers`) an array
    `[num_layers, 1, ...]` with block i's scale in row i."""
    if rule not in RULES:
        raise ValueError(f"layer decay rule={rule!r}; expected one of {RULES}")
    top = num_layers + 1  # the last of num_layers + 2 groups

    def scale(group):
        return float(rate ** (top - group))

    def decide(path, value):
        names = [getattr(k, "key", None) for k in path]
        if any(n in EMBEDDING_NAMES for n in names):
            return scale(0)
        if BLOCKS_NAME in names and rule == "per_block":
            if value.shape[0] != num_layers:
                raise ValueError(f"{'/'.join(map(str, names))}: stacked blocks have {value.shape[0]} rows, "
                                 f"expected num_layers={num_layers}")
            rows = np.array([scale(i + 1) for i in range(num_layers)], np.float32)
            return rows.reshape((num_layers,) + (1,) * (value.ndim - 1))
        return scale(top)

    return jax.tree_util.tree_map_with_path(decide, params)


def stacked_block_count(params: dict) -> int:
    """Rows of the stacked blocks (the leading axis of every parameter under `blocks`)."""
    rows = set()

    def visit(path, value):
        if BLOCKS_NAME in [getattr(k, "key", None) for k in path]:
            rows.add(value.shape[0])

    jax.tree_util.tree_map_with_path(visit, params)
    if len(rows) != 1:
        raise ValueError(f"layer-wise decay needs one stack of blocks named {BLOCKS_NAME!r} in the parameters; "
                         f"found leading axes {sorted(rows) or 'none'}")
    return rows.pop()


def poly_schedule(base_lr: float, total_steps: int, *, power: float = 1.0, min_lr: float = 0.0,
                  warmup_steps: int = 0, warmup_ratio: float = 1e-6) -> optax.Schedule:
    """mmcv's `poly` policy by iteration: `(base - min) * (1 - t / total) ** power + min`, and in
    the first `warmup_steps` that value times `1 - (1 - t / warmup_steps) * (1 - warmup_ratio)`
    (the official segmentation configs: power 1, min 0, 1500 warm-up steps, ratio 1e-6)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")

    def schedule(step):
        t = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
        regular = (base_lr - min_lr) * (1.0 - t / total_steps) ** power + min_lr
        if not warmup_steps:
            return regular
        # 1 - (1 - t / w) * (1 - ratio), written so that float32 keeps the tiny start value.
        factor = warmup_ratio + (1.0 - warmup_ratio) * t / warmup_steps
        return jnp.where(t < warmup_steps, regular * factor, regular)

    return schedule
