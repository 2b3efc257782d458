"""VisionMamba: patch embedding, class token(s), position embedding, Mamba blocks, norm, head."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax.config import VimConfig, class_token_positions
from vim_jax.models import intermediates, scan_orders
from vim_jax.models.backbone import PatchTokenModel, input_dropout, scan_blocks, stack_blocks
from vim_jax.models.layers import Norm, apply_rope, drop_path, param, rope_tables, timm_trunc_normal
from vim_jax.models.mixer import VimMixer
from vim_jax.models.vim_keys import VIM_KEYS


class Block(nnx.Module):
    """Add -> norm -> mixer, returning the new residual and the mixer output (upstream's order)."""

    def __init__(self, cfg: VimConfig, *, rngs: nnx.Rngs):
        self.norm = Norm(cfg.embed_dim, cfg.norm, cfg.norm_eps)
        self.mixer = VimMixer(cfg, rngs=rngs)

    def __call__(self, residual, h, drop_rate, drop_key, deterministic: bool, flip: bool = False):
        residual = residual + drop_path(h, drop_rate, drop_key, deterministic).astype(residual.dtype)
        return residual, self.mixer(self.norm(residual, h.dtype), flip)


class Head(nnx.Module):
    def __init__(self, dim: int, num_classes: int, *, rngs: nnx.Rngs):
        init = timm_trunc_normal(0.02)
        self.kernel = param(init(rngs.params(), (dim, num_classes)), ("embed", "classes"))
        self.bias = param(jnp.zeros((num_classes,)), ("classes",))

    def __call__(self, x):
        y = x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)
        return y.astype(jnp.float32)


class VisionMamba(PatchTokenModel):
    """Vision Mamba over channels-last images `[batch, height, width, in_chans]`.

    `forward_features` returns the normalised token sequence `[batch, tokens, embed_dim]`
    (float32), `forward_head` pools it (class token(s), mean, max or last token) and applies the
    classifier, and calling the model does both.
    """

    checkpoint_keys = VIM_KEYS

    def __init__(self, cfg: VimConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        d = cfg.embed_dim
        trunc = timm_trunc_normal(0.02)
        if cfg.num_cls_tokens:
            self.cls_token = param(trunc(rngs.params(), (1, cfg.num_cls_tokens, d)), (None, None, "embed"))
        if cfg.abs_pos_embed:
            self.pos_embed = param(trunc(rngs.params(), (1, cfg.seq_len, d)), (None, None, "embed"))

        self.blocks = stack_blocks(lambda rngs: Block(cfg, rngs=rngs), cfg.depth, rngs)
        self.norm_f = Norm(d, cfg.norm, cfg.norm_eps)
        if cfg.num_classes:
            self.head = Head(d, cfg.num_classes, rngs=rngs)
        self.init_dropout(rngs)

    def _insert_cls_tokens(self, x):
        cfg = self.cfg
        if not cfg.num_cls_tokens:
            return x
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], cfg.num_cls_tokens, x.shape[-1]))
        if cfg.cls_token == "head":
            return jnp.concatenate([cls, x], axis=1)
        if cfg.cls_token == "head_tail":
            return jnp.concatenate([cls[:, :1], x, cls[:, 1:]], axis=1)
        mid = x.shape[1] // 2
        return jnp.concatenate([x[:, :mid], cls, x[:, mid:]], axis=1)

    def forward_features(self, images):
        """Images -> final-normed tokens `[batch, seq_len, embed_dim]`, float32."""
        self.check_images(images)
        cfg = self.cfg
        x, keys, rope = self._embed(images, cfg.grid_size)
        residual, h, _ = self._run_blocks(x, jnp.zeros(x.shape, cfg.compute_dtype), keys, rope)
        final_key = None if keys is None else keys[-2]
        residual = residual + drop_path(h, cfg.drop_path_rate, final_key, keys is None).astype(x.dtype)
        return self.norm_f(residual, jnp.float32)

    def forward_intermediates(self, images, indices=None, norm: bool = False, output_fmt: str = "NHWC",
                              intermediates_only: bool = False):
        """The tokens of blocks `indices` as maps on the patch grid (timm's API), at any image size.

        Args:
          images: `[batch, height, width, in_chans]`, any height and width of at least one patch;
            the position embedding is resized to their grid (class-token rows kept).
          indices: block indices (negative from the end), an int n for the last n blocks, or None
            for every block.
          norm: False gives each block's mixer output, the feature the official segmentation
            backbone reads; True gives `norm_f(residual + mixer output)`, the tokens
            `forward_features` would return if the model ended at that block.
          output_fmt: "NHWC" (`[batch, rows, cols, embed_dim]`) or "NCHW".
          intermediates_only: return only the maps (and skip the blocks after the last index).
        Returns:
          A list of float32 maps, class tokens removed, or `(forward_features tokens, maps)`.
        """
        self.check_images(images, any_size=True)
        cfg = self.cfg
        chosen = intermediates.block_indices(indices, cfg.depth)
        group = 2 if cfg.bidirectional_layers else 1
        if any((i + 1) % group for i in chosen):
            raise ValueError(f"bidirectional layers run blocks in pairs: indices must end a pair "
                             f"(odd block indices), got {chosen}")
        grid = intermediates.grid_of(images, cfg.patch_size, cfg.stride)
        if grid != cfg.grid_size and not all(scan_orders.is_raster_family(o) for o in cfg.directions):
            raise ValueError(f"scan orders {cfg.directions} are laid out on the {cfg.grid_size} grid: give "
                             f"images of {cfg.img_size}x{cfg.img_size} or build the model for this size")
        x, keys, rope = self._embed(images, grid)
        last = chosen[-1] + 1 if intermediates_only else cfg.depth
        residual, h, stops = self._run_blocks(x, jnp.zeros(x.shape, cfg.compute_dtype), keys, rope,
                                              stops=tuple((i + 1) // group for i in chosen), end=last // group)
        cls_rows = self._cls_positions(grid)
        maps = [intermediates.tokens_to_maps(self.norm_f(r + o.astype(r.dtype), jnp.float32) if norm
                                             else o.astype(jnp.float32), grid, cls_rows, output_fmt)
                for r, o in stops]
        if intermediates_only:
            return maps
        final_key = None if keys is None else keys[-2]
        residual = residual + drop_path(h, cfg.drop_path_rate, final_key, keys is None).astype(x.dtype)
        return self.norm_f(residual, jnp.float32), maps

    def _cls_positions(self, grid):
        return class_token_positions(self.cfg.cls_token, grid[0] * grid[1])

    def _embed(self, images, grid):
        """Patch tokens with class token(s), position embedding (resized to `grid` when it is not
        the config's), dropout and RoPE -> (tokens in the residual dtype, dropout keys, RoPE)."""
        cfg, dtype = self.cfg, self.cfg.compute_dtype
        stream_dtype = jnp.float32 if cfg.residual_in_fp32 else dtype
        x = self._insert_cls_tokens(self.patch_embed(images, dtype).astype(stream_dtype))
        if cfg.abs_pos_embed:
            pos_embed = intermediates.resize_pos_embed_to_grid(
                self.pos_embed[...], cfg.grid_size, grid, cfg.cls_positions, self._cls_positions(grid))
            x = x + pos_embed.astype(stream_dtype)
        keys = self.dropout_keys(cfg.depth + 2)
        x = input_dropout(x, cfg.drop_rate, None if keys is None else keys[-1])
        rope = self._rope(grid) if cfg.rope else None
        if rope is not None:
            x = apply_rope(x, *rope)
        return x, keys, rope

    def _rope(self, grid):
        cfg = self.cfg
        cos, sin = rope_tables(cfg.embed_dim, grid, cfg.rope_pt_grid)
        tokens = grid[0] * grid[1] + cfg.num_cls_tokens
        patch_index = np.setdiff1d(np.arange(tokens), np.asarray(self._cls_positions(grid), np.int64))
        return cos, sin, patch_index

    def _run_blocks(self, residual, h, keys, rope, stops=(), end=None):
        """`lax.scan` over the stacked blocks (pairs of blocks for bidirectional layers), up to
        group `end` (all by default), split at the group counts `stops`; returns the final
        `(residual, h)` and the `(residual, h)` after each stop."""
        cfg = self.cfg
        deterministic = keys is None
        # Block i drops the output of block i-1 with rate linspace(0, drop_path_rate, depth)[i-1].
        rates = np.concatenate([[0.0], np.linspace(0.0, cfg.drop_path_rate, cfg.depth)[:-1]]).astype(np.float32)
        layer_keys = keys[: cfg.depth] if keys is not None else jnp.zeros((cfg.depth,), jnp.uint32)
        group = 2 if cfg.bidirectional_layers else 1
        first = np.arange(cfg.depth // group) == 0

        def step(members, carry, xs):
            residual, h = carry
            rate, key, is_first = xs
            if rope is not None:
                h = apply_rope(h, *rope)
                if cfg.rope_residual:
                    residual = jnp.where(is_first, residual, apply_rope(residual, *rope))
            # j = 1: the second block of a pair runs on the reversed sequence
            outs = [block(residual, h, rate[j], None if deterministic else key[j], deterministic, flip=j == 1)
                    for j, block in enumerate(members)]
            return (sum(r for r, _ in outs), sum(o for _, o in outs)), None

        xs = (rates.reshape(-1, group), layer_keys.reshape(cfg.depth // group, group, *layer_keys.shape[1:]), first)
        (residual, h), _, at_stops = scan_blocks(self.blocks, step, (residual, h), xs, remat=cfg.remat, group=group,
                                                 stops=stops, end=end, unroll=cfg.unroll_blocks)
        return residual, h, at_stops

    def forward_head(self, features, pre_logits: bool = False):
        """Pools `forward_features` output and applies the classifier (or returns the pooled
        features when `pre_logits` or the model has no head)."""
        cfg = self.cfg
        if cfg.pool == "max" and not pre_logits and cfg.num_classes:
            return jnp.max(self.head(features.astype(cfg.compute_dtype)), axis=1)
        if cfg.pool == "token":
            pooled = jnp.mean(features[:, np.asarray(cfg.cls_positions)], axis=1)
        elif cfg.pool == "mean":
            pooled = jnp.mean(features, axis=1)
        elif cfg.pool == "max":
            pooled = jnp.max(features, axis=1)
        else:
            pooled = features[:, -1]
        if pre_logits or not cfg.num_classes:
            return pooled
        return self.head(pooled.astype(cfg.compute_dtype))

    def __call__(self, images):
        """Images `[batch, height, width, in_chans]` (float, normalised) -> logits `[batch, classes]`."""
        return self.forward_head(self.forward_features(images))
