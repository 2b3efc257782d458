"""Building blocks shared by the models: patch embedding, norms, drop path, RoPE (and the depthwise
token conv, which lives with the ops that fuse it: `vim_jax.ops.depthwise_conv`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax.ops.depthwise_conv import depthwise_conv1d  # noqa: F401 (the models' import path)


def param(value, axes: tuple[str | None, ...]) -> nnx.Param:
    """A float32 parameter annotated with logical axis names (mapped to a mesh by rules)."""
    # Not sharded at creation: the trainer shards the whole state through its logical-axis rules.
    return nnx.Param(jnp.asarray(value, jnp.float32), out_sharding=axes, eager_sharding=False)


def torch_linear_uniform(key, shape, fan_in):
    """PyTorch's default Linear/Conv init, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), +)."""
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def timm_trunc_normal(std: float):
    """timm's `trunc_normal_(std=std)`: a normal cut at +-2 in absolute value (not at +-2 std),
    which for std 0.02 is a plain normal with that std. JAX's `truncated_normal(std)` cuts at
    +-2 std and so has a std 12% smaller."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype) * std

    return init


class PatchEmbed(nnx.Module):
    """Conv2d(in_chans, dim, kernel=patch, stride) over channels-last images -> `[b, h*w, dim]`."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, dim: int, *, rngs: nnx.Rngs):
        self.patch_size, self.stride = patch_size, stride
        shape = (patch_size, patch_size, in_chans, dim)
        # LeCun normal (truncated), zero bias: upstream's `lecun_normal_` on the patch conv.
        self.kernel = param(jax.nn.initializers.lecun_normal()(rngs.params(), shape), (None, None, None, "embed"))
        self.bias = param(jnp.zeros((dim,)), ("embed",))

    def __call__(self, images, dtype):
        x = jax.lax.conv_general_dilated(
            images.astype(dtype), self.kernel[...].astype(dtype),
            window_strides=(self.stride, self.stride), padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = x + self.bias[...].astype(dtype)
        b, h, w, d = x.shape
        return x.reshape(b, h * w, d)  # row-major tokens, as upstream's flatten(2)


class Norm(nnx.Module):
    """RMSNorm (weight only) or LayerNorm (weight and bias), computed in float32."""

    def __init__(self, dim: int, kind: str = "rmsnorm", eps: float = 1e-5, *, rngs: nnx.Rngs | None = None):
        self.kind, self.eps = kind, eps
        self.scale = param(jnp.ones((dim,)), ("embed",))
        if kind == "layernorm":
            self.bias = param(jnp.zeros((dim,)), ("embed",))

    def __call__(self, x, dtype=None):
        dtype = dtype or x.dtype
        x = x.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.scale[...]
        if self.kind == "layernorm":
            x = x + self.bias[...]
        return x.astype(dtype)


def drop_path(x, rate, key, deterministic: bool):
    """Stochastic depth: zero whole samples with probability `rate`, rescale the kept ones."""
    if deterministic or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / jnp.maximum(1.0 - rate, 1e-6).astype(x.dtype), jnp.zeros_like(x))


def rope_tables(dim: int, grid: tuple[int, int], pt_grid: int):
    """cos/sin tables `[h*w, dim]` of upstream's 2-D rotary embedding (EVA-02 style).

    The first half of the channels rotates with the patch row, the second with the column; each
    half uses frequencies `10000^(-2i/(dim/2))` at positions scaled to the pre-training grid.
    """
    if dim % 4:
        raise ValueError(f"RoPE needs embed_dim divisible by 4, got {dim}")
    half = dim // 2
    freqs = 1.0 / (10000.0 ** (np.arange(0, half, 2)[: half // 2] / half))
    h, w = grid
    fh = np.repeat((np.arange(h) / h * pt_grid)[:, None] * freqs, 2, axis=-1)  # [h, half]
    fw = np.repeat((np.arange(w) / w * pt_grid)[:, None] * freqs, 2, axis=-1)  # [w, half]
    table = np.concatenate([np.broadcast_to(fh[:, None], (h, w, half)),
                            np.broadcast_to(fw[None, :], (h, w, half))], axis=-1).reshape(h * w, dim)
    return np.cos(table).astype(np.float32), np.sin(table).astype(np.float32)


def apply_rope(x, cos, sin, patch_index):
    """Rotates the patch tokens `x[:, patch_index]` (class tokens are left alone)."""
    patches = x[:, patch_index]
    pairs = patches.reshape(*patches.shape[:-1], -1, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(patches.shape)
    patches = patches * cos.astype(x.dtype) + rotated * sin.astype(x.dtype)
    return x.at[:, patch_index].set(patches)
