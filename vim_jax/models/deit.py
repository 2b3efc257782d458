"""DeiT (a plain ViT) in Flax NNX: the attention baseline that Vim is compared with.

Same patch embedding, input checks, `forward_features` / `forward_head` / `__call__` API and
stacked-blocks-under-`lax.scan` execution as `VisionMamba`; the blocks are timm's pre-norm
`x + attn(LN(x))`, `x + mlp(LN(x))` with the class token at the head of the sequence.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax.config import DTYPES, PatchGrid
from vim_jax.models import intermediates
from vim_jax.models.backbone import PatchTokenModel, input_dropout, scan_blocks, stack_blocks
from vim_jax.models.deit_keys import DEIT_KEYS
from vim_jax.models.layers import Norm, drop_path, param, timm_trunc_normal, torch_linear_uniform

ATTENTIONS = ("flash", "xla")
DEIT_POOLS = ("token", "mean")

_timm_normal = timm_trunc_normal(0.02)  # timm's init of every Linear weight and of pos_embed


@dataclasses.dataclass(frozen=True)
class DeiTConfig(PatchGrid):
    """Architecture and precision of a DeiT model (defaults: DeiT-Ti at 224).

    The fields shared with `VimConfig` mean the same thing there. `attention="flash"` runs the
    forward pass with cuDNN flash attention where cuDNN can (a GPU, bf16/fp16, head_dim <= 128 or
    256 on Hopper, multiple of 8), else with XLA's; gradients always go through XLA's attention
    (`flash_forward_attention`). The choice is made here, at trace time, because
    `jax.nn.dot_product_attention(implementation=None)` is always XLA in JAX <= 0.11. `"xla"` is
    plain attention everywhere (the full score matrix in memory).
    """

    # The patch grid and widths of `PatchGrid`, and
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    attention: str = "flash"

    # "token" reads the class token (DeiT); "mean" averages the patch tokens (no class token).
    pool: str = "token"
    norm_eps: float = 1e-6  # timm's ViT LayerNorm
    # timm under autocast keeps the residual stream in float32 (patch embed + fp32 pos_embed).
    residual_in_fp32: bool = True

    drop_rate: float = 0.0  # after the position embedding, as in Vim
    drop_path_rate: float = 0.0

    dtype: str = "float32"  # compute dtype; parameters are float32
    remat: bool = False  # recompute each block in the backward pass
    unroll_blocks: bool = False  # unroll the scan over blocks (as `VimConfig.unroll_blocks`)

    def __post_init__(self):
        for field, value, allowed in (("attention", self.attention, ATTENTIONS), ("pool", self.pool, DEIT_POOLS),
                                      ("dtype", self.dtype, DTYPES)):
            if value not in allowed:
                raise ValueError(f"DeiTConfig.{field}={value!r}; expected one of {allowed}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size < self.patch_size:
            raise ValueError(f"img_size {self.img_size} is smaller than patch_size {self.patch_size}")
        if self.stride <= 0 or self.patch_size <= 0:
            raise ValueError("patch_size and stride must be positive")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def num_cls_tokens(self) -> int:
        return 1 if self.pool == "token" else 0

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    def replace(self, **changes) -> "DeiTConfig":
        return dataclasses.replace(self, **changes)


def attention_implementation(cfg: DeiTConfig, seq_len: int, dtype) -> str:
    """The implementation `cfg.attention` runs the forward pass with here, for `seq_len` tokens in
    `dtype`: "cudnn" or "xla" (traced abstractly, nothing runs). Gradients always go through XLA:
    see `flash_forward_attention`."""
    if cfg.attention == "xla":
        return "xla"
    q = jax.ShapeDtypeStruct((1, seq_len, cfg.num_heads, cfg.head_dim), jnp.dtype(dtype))
    try:
        jax.eval_shape(lambda q: jax.nn.dot_product_attention(q, q, q, implementation="cudnn"), q)
    except (NotImplementedError, RuntimeError, ValueError):
        # Raised at trace time where cuDNN is absent or refuses the shape/dtype.
        return "xla"
    return "cudnn"


def _xla_attention(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def flash_forward_attention(forward_implementation: str = "cudnn"):
    """Attention `[b, L, heads, head_dim]` computed by `forward_implementation` when only its value
    is needed (inference), and by XLA when differentiated.

    Under `jax.grad` the forward runs in XLA and keeps XLA's residuals for the backward pass, so
    training costs what plain XLA attention costs: cuDNN's flash backward in JAX 0.11 refuses
    DeiT's 197 tokens, and cuDNN's backward is reported to return NaN at lengths it does not
    align to (cudnn-frontend issue 160).
    """

    @jax.custom_vjp
    def attention(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, implementation=forward_implementation)

    def forward(q, k, v):
        return jax.vjp(_xla_attention, q, k, v)  # (value, the pullback: a pytree of residuals)

    def backward(pullback, grad):
        return pullback(grad)

    attention.defvjp(forward, backward)
    return attention


class Dense(nnx.Module):
    """`x @ kernel + bias` with timm's Linear init (trunc-normal std 0.02, zero bias)."""

    def __init__(self, din: int, dout: int, axes: tuple[str | None, str | None], *, rngs: nnx.Rngs):
        self.kernel = param(_timm_normal(rngs.params(), (din, dout)), axes)
        self.bias = param(jnp.zeros((dout,)), axes[1:])

    def __call__(self, x):
        return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


class Attention(nnx.Module):
    r"""Multi-head self-attention: `softmax(q k^T / sqrt(head_dim)) v`, heads concatenated, projected.

    `qkv` is stored `[embed, 3, heads, head_dim]` (timm's `qkv.weight.T` reshaped), `proj`
    `[heads, head_dim, embed]`, so that heads can be sharded along the logical axis "heads". The
    qkv bias stays flat `[3 * embed]` (timm's layout): the trainer reads a parameter's official
    rank from its number of logical axes, and biases must look 1-D to escape weight decay.
    """

    def __init__(self, cfg: DeiTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, hd = cfg.embed_dim, cfg.num_heads, cfg.head_dim
        self.qkv_kernel = param(_timm_normal(rngs.params(), (d, 3, h, hd)), ("embed", None, "heads", "head_dim"))
        if cfg.qkv_bias:
            self.qkv_bias = param(jnp.zeros((3 * d,)), (None,))
        self.proj_kernel = param(_timm_normal(rngs.params(), (h, hd, d)), ("heads", "head_dim", "embed"))
        self.proj_bias = param(jnp.zeros((d,)), ("embed",))

    def __call__(self, x):
        """`x: [b, L, D]` in the compute dtype -> `[b, L, D]`."""
        cfg, dtype = self.cfg, x.dtype
        qkv = jnp.einsum("bld,dthk->tblhk", x, self.qkv_kernel[...].astype(dtype))
        if cfg.qkv_bias:
            qkv = qkv + self.qkv_bias[...].astype(dtype).reshape(3, 1, 1, cfg.num_heads, cfg.head_dim)
        if attention_implementation(cfg, x.shape[1], dtype) == "cudnn":
            o = flash_forward_attention("cudnn")(qkv[0], qkv[1], qkv[2])
        else:
            o = _xla_attention(qkv[0], qkv[1], qkv[2])
        return jnp.einsum("blhk,hkd->bld", o, self.proj_kernel[...].astype(dtype)) + self.proj_bias[...].astype(dtype)


class Mlp(nnx.Module):
    """fc1 -> GELU (exact, PyTorch's default) -> fc2."""

    def __init__(self, cfg: DeiTConfig, *, rngs: nnx.Rngs):
        self.fc1 = Dense(cfg.embed_dim, cfg.mlp_dim, ("embed", "mlp"), rngs=rngs)
        self.fc2 = Dense(cfg.mlp_dim, cfg.embed_dim, ("mlp", "embed"), rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """Pre-norm transformer block: `x + drop_path(attn(LN(x)))`, then `x + drop_path(mlp(LN(x)))`."""

    def __init__(self, cfg: DeiTConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.norm1 = Norm(cfg.embed_dim, "layernorm", cfg.norm_eps)
        self.attn = Attention(cfg, rngs=rngs)
        self.norm2 = Norm(cfg.embed_dim, "layernorm", cfg.norm_eps)
        self.mlp = Mlp(cfg, rngs=rngs)

    def __call__(self, x, drop_rate, keys, deterministic: bool):
        """`keys`: two drop-path keys (attention branch, MLP branch), ignored when deterministic."""
        dtype = self.cfg.compute_dtype
        h = self.attn(self.norm1(x, dtype))
        x = x + drop_path(h, drop_rate, None if deterministic else keys[0], deterministic).astype(x.dtype)
        h = self.mlp(self.norm2(x, dtype))
        return x + drop_path(h, drop_rate, None if deterministic else keys[1], deterministic).astype(x.dtype)


class DeiT(PatchTokenModel):
    """DeiT over channels-last images `[batch, height, width, in_chans]`.

    `forward_features` returns the final-normed tokens `[batch, seq_len, embed_dim]` (float32,
    class token first), `forward_head` pools them (class token or patch mean) and applies the
    classifier, and calling the model does both.
    """

    checkpoint_keys = DEIT_KEYS

    def __init__(self, cfg: DeiTConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        d = cfg.embed_dim
        # timm leaves the patch conv at PyTorch's default init (its ViT init touches Linear only).
        fan_in = cfg.patch_size * cfg.patch_size * cfg.in_chans
        self.patch_embed.kernel[...] = torch_linear_uniform(rngs.params(), self.patch_embed.kernel.shape, fan_in)
        self.patch_embed.bias[...] = torch_linear_uniform(rngs.params(), (d,), fan_in)
        if cfg.num_cls_tokens:
            self.cls_token = param(1e-6 * jax.random.normal(rngs.params(), (1, 1, d)), (None, None, "embed"))
        self.pos_embed = param(_timm_normal(rngs.params(), (1, cfg.seq_len, d)), (None, None, "embed"))

        self.blocks = stack_blocks(lambda rngs: Block(cfg, rngs=rngs), cfg.depth, rngs)
        self.norm = Norm(d, "layernorm", cfg.norm_eps)
        if cfg.num_classes:
            self.head = Dense(d, cfg.num_classes, ("embed", "classes"), rngs=rngs)
        self.init_dropout(rngs)

    def forward_features(self, images):
        """Images -> final-normed tokens `[batch, seq_len, embed_dim]`, float32."""
        self.check_images(images)
        x, keys = self._embed(images, self.cfg.grid_size)
        x, _ = self._run_blocks(x, keys)
        return self.norm(x, jnp.float32)

    def forward_intermediates(self, images, indices=None, norm: bool = False, output_fmt: str = "NHWC",
                              intermediates_only: bool = False):
        """The tokens of blocks `indices` as maps on the patch grid (timm's API), at any image size.

        As `VisionMamba.forward_intermediates`: each block's output tokens (`norm=True`: after the
        final LayerNorm), class token removed, `[batch, rows, cols, embed_dim]` float32 maps (or
        "NCHW"); returns the maps alone or `(forward_features tokens, maps)`.
        """
        self.check_images(images, any_size=True)
        cfg = self.cfg
        chosen = intermediates.block_indices(indices, cfg.depth)
        grid = intermediates.grid_of(images, cfg.patch_size, cfg.stride)
        x, keys = self._embed(images, grid)
        end = chosen[-1] + 1 if intermediates_only else cfg.depth
        x, stops = self._run_blocks(x, keys, stops=tuple(i + 1 for i in chosen), end=end)
        cls_rows = (0,) if cfg.num_cls_tokens else ()
        maps = [intermediates.tokens_to_maps(self.norm(t, jnp.float32) if norm else t.astype(jnp.float32),
                                             grid, cls_rows, output_fmt) for t in stops]
        return maps if intermediates_only else (self.norm(x, jnp.float32), maps)

    def _embed(self, images, grid):
        """Patch tokens, class token, position embedding (resized to `grid` when it is not the
        config's) and dropout -> (tokens in the residual dtype, dropout keys)."""
        cfg, dtype = self.cfg, self.cfg.compute_dtype
        stream_dtype = jnp.float32 if cfg.residual_in_fp32 else dtype
        x = self.patch_embed(images, dtype).astype(stream_dtype)
        if cfg.num_cls_tokens:
            cls = jnp.broadcast_to(self.cls_token[...].astype(stream_dtype), (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
        cls_rows = (0,) if cfg.num_cls_tokens else ()
        pos_embed = intermediates.resize_pos_embed_to_grid(self.pos_embed[...], cfg.grid_size, grid, cls_rows, cls_rows)
        x = x + pos_embed.astype(stream_dtype)
        keys = self.dropout_keys(2 * cfg.depth + 1)
        x = input_dropout(x, cfg.drop_rate, None if keys is None else keys[-1])
        return x, keys

    def _run_blocks(self, x, keys, stops=(), end=None):
        """`lax.scan` over the stacked blocks up to block `end` (all by default), split after the
        block counts `stops`; block i drops with rate linspace(0, rate, depth)[i]. Returns the
        final tokens and the tokens at each stop."""
        cfg = self.cfg
        deterministic = keys is None
        rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth).astype(np.float32)
        layer_keys = (keys[: 2 * cfg.depth].reshape(cfg.depth, 2, *keys.shape[1:]) if keys is not None
                      else jnp.zeros((cfg.depth, 2), jnp.uint32))

        def step(members, x, xs):
            rate, key = xs
            return members[0](x, rate, key, deterministic), None

        x, _, at_stops = scan_blocks(self.blocks, step, x, (rates, layer_keys), remat=cfg.remat, stops=stops, end=end,
                                     unroll=cfg.unroll_blocks)
        return x, at_stops

    def forward_head(self, features, pre_logits: bool = False):
        """Pools `forward_features` output (class token, or the mean of the patch tokens) and
        applies the classifier (or returns the pooled features when `pre_logits` or headless)."""
        cfg = self.cfg
        pooled = features[:, 0] if cfg.pool == "token" else jnp.mean(features[:, cfg.num_cls_tokens:], axis=1)
        if pre_logits or not cfg.num_classes:
            return pooled
        return self.head(pooled.astype(cfg.compute_dtype)).astype(jnp.float32)

    def __call__(self, images):
        """Images `[batch, height, width, in_chans]` (float, normalised) -> logits `[batch, classes]`."""
        return self.forward_head(self.forward_features(images))
