"""The official segmentation backbone's pyramid: four stride-16 (or stride-8) maps of one block
each -> strides 4, 8, 16 and 32, by transposed convolutions and max pooling (the "fpn1".."fpn4"
of `seg/backbone/vim.py` in hustvl/Vim, from BEiT's segmentation code)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vim_jax.models.segmentation.layers import BatchNorm, ConvTranspose2x2, at_least_float32, max_pool

OUTPUT_STRIDES = (4, 8, 16, 32)


class Pyramid(nnx.Module):
    """Maps `[b, h, w, dim]` at `backbone_stride` (16 or 8) -> maps at strides 4, 8, 16, 32.

    Stride 16: (ConvT -> BN -> GELU -> ConvT), ConvT, identity, max pool 2.
    Stride 8: ConvT, identity, max pool 2, max pool 4.
    """

    def __init__(self, dim: int, backbone_stride: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if backbone_stride not in (8, 16):
            raise ValueError(f"the pyramid takes stride-16 or stride-8 backbones, got stride {backbone_stride}")
        self.backbone_stride = backbone_stride
        if backbone_stride == 16:
            self.up4_first = ConvTranspose2x2(dim, dim, dtype=dtype, rngs=rngs)
            self.up4_bn = BatchNorm(dim)
            self.up4_second = ConvTranspose2x2(dim, dim, dtype=dtype, rngs=rngs)
            self.up8 = ConvTranspose2x2(dim, dim, dtype=dtype, rngs=rngs)
        else:
            self.up4 = ConvTranspose2x2(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, features):
        if len(features) != 4:
            raise ValueError(f"the pyramid takes the maps of four blocks, got {len(features)}")
        a, b, c, d = features
        smallest = 32 // self.backbone_stride  # patches per side the stride-32 map pools
        if min(d.shape[1:3]) < smallest:
            raise ValueError(f"a {d.shape[1]}x{d.shape[2]} patch grid is too small for the pyramid: its stride-32 "
                             f"map needs at least {smallest} patches per side (images of 32 pixels or more)")
        if self.backbone_stride == 16:
            up = jax.nn.gelu(self.up4_bn(at_least_float32(self.up4_first(a))), approximate=False)
            return [self.up4_second(up.astype(a.dtype)), self.up8(b), c, max_pool(d, 2)]
        return [self.up4(a), b, max_pool(c, 2), max_pool(d, 4)]
