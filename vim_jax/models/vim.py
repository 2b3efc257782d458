"""VisionMamba: patch embedding, class token(s), position embedding, Mamba blocks, norm, head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax.config import VimConfig
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
        mid = cfg.num_patches // 2
        return jnp.concatenate([x[:, :mid], cls, x[:, mid:]], axis=1)

    def forward_features(self, images):
        """Images -> final-normed tokens `[batch, seq_len, embed_dim]`, float32."""
        self.check_images(images)
        cfg, dtype = self.cfg, self.cfg.compute_dtype
        stream_dtype = jnp.float32 if cfg.residual_in_fp32 else dtype
        x = self._insert_cls_tokens(self.patch_embed(images, dtype).astype(stream_dtype))
        if cfg.abs_pos_embed:
            x = x + self.pos_embed[...].astype(stream_dtype)
        keys = self.dropout_keys(cfg.depth + 2)
        x = input_dropout(x, cfg.drop_rate, None if keys is None else keys[-1])
        rope = self._rope() if cfg.rope else None
        if rope is not None:
            x = apply_rope(x, *rope)
        residual, h = self._run_blocks(x, jnp.zeros(x.shape, dtype), keys, rope)
        final_key = None if keys is None else keys[-2]
        residual = residual + drop_path(h, cfg.drop_path_rate, final_key, keys is None).astype(stream_dtype)
        return self.norm_f(residual, jnp.float32)

    def _rope(self):
        cfg = self.cfg
        cos, sin = rope_tables(cfg.embed_dim, cfg.grid_size, cfg.rope_pt_grid)
        patch_index = np.setdiff1d(np.arange(cfg.seq_len), np.asarray(cfg.cls_positions, np.int64))
        return cos, sin, patch_index

    def _run_blocks(self, residual, h, keys, rope):
        """`lax.scan` over the stacked blocks (pairs of blocks for bidirectional layers)."""
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
        (residual, h), _ = scan_blocks(self.blocks, step, (residual, h), xs, remat=cfg.remat, group=group)
        return residual, h

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
