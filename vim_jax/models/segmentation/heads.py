"""mmseg's UperNet decode head (pyramid pooling on the coarsest map + an FPN) and FCN auxiliary
head, as the official Vim segmentation configs use them (channels-last)."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from vim_jax.models.segmentation.layers import ClassifierConv, ConvBNReLU, adaptive_avg_pool, resize_bilinear


class PyramidPooling(nnx.Module):
    """PSPNet's pooling module: for each scale s, adaptive average pool to s x s, 1x1
    ConvBNReLU, bilinear back to the input size; returns those maps (the input not included)."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int], *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.scales = tuple(scales)
        self.convs = nnx.List([ConvBNReLU(cin, channels, 1, dtype=dtype, rngs=rngs) for _ in self.scales])

    def __call__(self, x):
        size = x.shape[1:3]
        return [resize_bilinear(conv(adaptive_avg_pool(x, s)), size) for s, conv in zip(self.scales, self.convs)]


class UperHead(nnx.Module):
    """UperNet: PPM + 3x3 bottleneck on the last map, 1x1 laterals on the others, a top-down path
    (bilinear upsampling and sums), 3x3 FPN convs, everything upsampled to the finest map,
    concatenated, fused by a 3x3 conv, then dropout and a 1x1 classifier."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, *,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        top = in_channels[-1]
        self.ppm = PyramidPooling(top, channels, pool_scales, dtype=dtype, rngs=rngs)
        self.bottleneck = ConvBNReLU(top + len(pool_scales) * channels, channels, 3, dtype=dtype, rngs=rngs)
        self.lateral_convs = nnx.List([ConvBNReLU(c, channels, 1, dtype=dtype, rngs=rngs) for c in in_channels[:-1]])
        self.fpn_convs = nnx.List([ConvBNReLU(channels, channels, 3, dtype=dtype, rngs=rngs) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3, dtype=dtype, rngs=rngs)
        self.classifier = ClassifierConv(channels, num_classes, dropout, rngs=rngs)

    def __call__(self, features):
        top = features[-1]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        laterals.append(self.bottleneck(jnp.concatenate([top, *self.ppm(top)], axis=-1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize_bilinear(laterals[i], laterals[i - 1].shape[1:3])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[1:3]
        fused = self.fpn_bottleneck(jnp.concatenate([resize_bilinear(o, size) for o in outs], axis=-1))
        return self.classifier(fused)


class FCNHead(nnx.Module):
    """mmseg's FCNHead as the auxiliary head: `num_convs` 3x3 ConvBNReLU (no concat of the input),
    dropout, 1x1 classifier."""

    def __init__(self, cin: int, channels: int, num_classes: int, *, num_convs: int = 1, dropout: float = 0.1,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        widths = [cin] + [channels] * num_convs
        self.convs = nnx.List([ConvBNReLU(a, b, 3, dtype=dtype, rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.classifier = ClassifierConv(channels, num_classes, dropout, rngs=rngs)

    def __call__(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.classifier(x)
