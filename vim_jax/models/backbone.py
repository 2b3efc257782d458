"""What the patch-token models (VisionMamba, DeiT) share: image checks, dropout keys, input
dropout, and their blocks stacked and run under one scan (cut at the blocks whose outputs
`forward_intermediates` returns)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vim_jax.models import intermediates
from vim_jax.models.layers import PatchEmbed


class PatchTokenModel(nnx.Module):
    """Base of a model whose `cfg` has `img_size`, `in_chans`, `patch_size`, `stride`, `grid_size`,
    `drop_rate` and `drop_path_rate`. Dropout and drop path follow the NNX mode (`model.train()`
    / `model.eval()` set `deterministic`). Subclasses name their checkpoint description in
    `checkpoint_keys` (a `vim_jax.models.checkpoint_keys.CheckpointKeys`)."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        """Keeps `cfg` and builds the patch embedding (the first parameters drawn from `rngs`)."""
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.stride, cfg.in_chans, cfg.embed_dim, rngs=rngs)

    def init_dropout(self, rngs: nnx.Rngs) -> None:
        """Forks a dropout RNG stream when the config drops anything; starts in training mode."""
        self.deterministic = False
        needs_rng = self.cfg.drop_rate > 0 or self.cfg.drop_path_rate > 0
        self.dropout_rngs = rngs["dropout"].fork() if needs_rng else None

    def dropout_keys(self, count: int):
        """`count` fresh keys, or None in eval mode or when nothing is dropped."""
        if self.deterministic or self.dropout_rngs is None:
            return None
        return jax.random.split(self.dropout_rngs(), count)

    def check_images(self, images, any_size: bool = False):
        """Raises a ValueError/TypeError naming what is wrong with `images` and what was expected
        (`any_size`: any height and width of at least one patch, as `forward_intermediates` takes)."""
        cfg = self.cfg
        shape = getattr(images, "shape", None)
        expected = f"[batch, {cfg.img_size}, {cfg.img_size}, {cfg.in_chans}]"
        if shape is None or len(shape) != 4:
            raise ValueError(f"images must be a 4-D channels-last array {expected}, got shape {shape}")
        if shape[-1] != cfg.in_chans:
            hint = " (channels-first input? transpose to [batch, height, width, channels])" \
                if shape[1] == cfg.in_chans else ""
            raise ValueError(f"images have {shape[-1]} channels, expected {cfg.in_chans}: {expected}{hint}")
        if any_size:
            intermediates.grid_of(images, cfg.patch_size, cfg.stride)
        elif shape[1] != cfg.img_size or shape[2] != cfg.img_size:
            raise ValueError(
                f"image size {shape[1]}x{shape[2]} does not fit this model's patch grid, built for "
                f"{cfg.img_size}x{cfg.img_size} ({cfg.grid_size[0]}x{cfg.grid_size[1]} patches of "
                f"{cfg.patch_size}, stride {cfg.stride}); resize the images or create the model with "
                f"img_size={shape[1]} (checkpoints' position embeddings are resized on load)")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise TypeError(f"images must be floating point (normalised pixels), got {images.dtype}; "
                            f"convert uint8 images with the model's evaluation transform")


def input_dropout(x, rate: float, key):
    """Dropout of the embedded tokens (timm's `pos_drop`); identity without a key or a rate."""
    if key is None or rate <= 0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def stack_blocks(make_block, depth: int, rngs: nnx.Rngs) -> nnx.Module:
    """`depth` blocks `make_block(rngs)`, each with its own RNG draws, as one module whose
    parameters are stacked on a leading axis (logical name "layers"): what `scan_blocks` runs."""

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs):
        return make_block(rngs)

    return make(rngs)


def scan_blocks(blocks: nnx.Module, step, carry, xs, *, remat: bool, group: int = 1,
                stops: Sequence[int] = (), end: int | None = None, unroll: bool = False):
    """`jax.lax.scan` over `blocks` (stacked on a leading axis by `nnx.vmap`), `group` at a time.

    `step(members, carry, x) -> (carry, y)` gets the group's blocks as a list of `group` modules
    and the matching slice of `xs` (leading axis `depth // group`). One traced block serves every
    layer, so compile time does not grow with depth (unless `unroll`: XLA then gets every step
    written out); with `remat` each step is recomputed in the backward pass (`jax.checkpoint`).
    The scan runs the first `end` groups (all by default) and is cut after the group counts
    `stops`, so that the carry there can be read; without stops it is one scan over every group. Returns the final carry, the stacked `y`s of the groups run and the
    carry after each stop.
    """
    graphdef, state = nnx.split(blocks)
    depth = jax.tree.leaves(state)[0].shape[0]
    length = depth // group
    grouped = jax.tree.map(lambda a: a.reshape(length, group, *a.shape[1:]), state)

    def body(carry, inputs):
        group_state, x = inputs
        members = [nnx.merge(graphdef, jax.tree.map(lambda a: a[j], group_state)) for j in range(group)]
        return step(members, carry, x)

    if remat:
        body = jax.checkpoint(body)
    end = length if end is None else end
    if not 0 < end <= length or any(not 0 < s <= end for s in stops):
        raise ValueError(f"scan stops {tuple(stops)} and end {end} must lie in 1..{length}, stops <= end")
    at_stops, ys, start = [], [], 0
    for stop in sorted({*stops, end}):
        part = (grouped, xs) if (start, stop) == (0, length) else \
            jax.tree.map(lambda a: a[start:stop], (grouped, xs))
        carry, y = jax.lax.scan(body, carry, part, unroll=unroll)
        ys.append(y)
        if stop in stops:
            at_stops.append(carry)
        start = stop
    ys = ys[0] if len(ys) == 1 else jax.tree.map(lambda *parts: jnp.concatenate(parts), *ys)
    return carry, ys, at_stops
