"""The convolutional pieces of the segmentation neck and heads, channels-last, PyTorch semantics.

`ConvBNReLU` is mmcv's ConvModule as mmseg's heads build it (conv without bias, BatchNorm, ReLU;
Kaiming-normal fan-out init); BatchNorm is PyTorch's (momentum 0.1, eps 1e-5), reading the batch
statistics in train mode and the running ones in eval mode (under `jit` over a sharded batch the
statistics are those of the global batch, as SyncBN's). `resize_bilinear` is
`F.interpolate(mode="bilinear", align_corners=False)`, `adaptive_avg_pool` is
`nn.AdaptiveAvgPool2d`, `max_pool` is `nn.MaxPool2d(k, k)`, `ConvTranspose2x2` is
`nn.ConvTranspose2d(c, c, kernel_size=2, stride=2)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax.models.layers import param, torch_linear_uniform

BN_MOMENTUM = 0.1  # PyTorch's: running = (1 - momentum) * running + momentum * batch
BN_EPS = 1e-5


class BatchNorm(nnx.Module):
    """PyTorch's BatchNorm over the last axis: batch statistics in train mode (the running ones
    move by `momentum`, the variance's unbiased), running statistics in eval mode
    (`use_running_average`, set by `model.eval()`). Computed in its input's dtype: give it float32
    or wider."""

    def __init__(self, channels: int, momentum: float = BN_MOMENTUM, eps: float = BN_EPS):
        self.momentum, self.eps = momentum, eps
        self.scale = param(jnp.ones((channels,)), ("channels",))
        self.bias = param(jnp.zeros((channels,)), ("channels",))
        self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
        self.use_running_average = False

    def __call__(self, x):
        if self.use_running_average:
            mean, var = self.mean[...].astype(x.dtype), self.var[...].astype(x.dtype)
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            n = x.size // x.shape[-1]
            m = self.momentum
            self.mean[...] = ((1 - m) * self.mean[...] + m * mean).astype(jnp.float32)
            self.var[...] = ((1 - m) * self.var[...] + m * var * (n / max(n - 1, 1))).astype(jnp.float32)
        scale, bias = self.scale[...].astype(x.dtype), self.bias[...].astype(x.dtype)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


def at_least_float32(x):
    """`x` in float32, or kept in float64 (the float64 tests)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def conv2d(x, kernel, bias=None, padding: int = 0):
    """Stride-1 convolution, `x: [b, h, w, cin]`, `kernel: [kh, kw, cin, cout]`, zero padding."""
    y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), [(padding, padding)] * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias.astype(x.dtype)


class ConvBNReLU(nnx.Module):
    """k x k conv (padding k // 2, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.kernel_size, self.dtype = kernel_size, dtype
        # mmcv's kaiming_init(mode="fan_out", nonlinearity="relu", distribution="normal").
        std = math.sqrt(2.0 / (cout * kernel_size * kernel_size))
        shape = (kernel_size, kernel_size, cin, cout)
        self.kernel = param(std * jax.random.normal(rngs.params(), shape), (None, None, None, "channels"))
        self.bn = BatchNorm(cout)

    def __call__(self, x):
        y = conv2d(x.astype(self.dtype), self.kernel[...], padding=self.kernel_size // 2)
        return jax.nn.relu(self.bn(at_least_float32(y))).astype(self.dtype)


class ConvTranspose2x2(nnx.Module):
    """Transposed conv, kernel 2, stride 2: `out[2i + a, 2j + b] = x[i, j] @ kernel[:, a, b] + bias`
    (the patches do not overlap). `kernel: [cin, 2, 2, cout]`; PyTorch's default init."""

    def __init__(self, cin: int, cout: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        fan_in = cout * 4  # PyTorch computes a transposed conv's fan-in from weight.size(1) * k * k
        self.kernel = param(torch_linear_uniform(rngs.params(), (cin, 2, 2, cout), fan_in),
                            ("embed", None, None, "channels"))
        self.bias = param(torch_linear_uniform(rngs.params(), (cout,), fan_in), ("channels",))

    def __call__(self, x):
        x = x.astype(self.dtype)
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwc,cijo->bhiwjo", x, self.kernel[...].astype(x.dtype))
        return y.reshape(b, 2 * h, 2 * w, -1) + self.bias[...].astype(x.dtype)


class ClassifierConv(nnx.Module):
    """mmseg's `cls_seg`: channel dropout (Dropout2d) then a 1x1 conv with bias to the classes
    (normal std 0.01, zero bias); logits in float32."""

    def __init__(self, cin: int, num_classes: int, dropout: float, *, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(dropout, broadcast_dims=(1, 2), rngs=rngs) if dropout > 0 else None
        self.kernel = param(0.01 * jax.random.normal(rngs.params(), (1, 1, cin, num_classes)),
                            (None, None, "channels", "classes"))
        self.bias = param(jnp.zeros((num_classes,)), ("classes",))

    def __call__(self, x):
        if self.dropout is not None:
            x = self.dropout(x)
        return conv2d(x, self.kernel[...], self.bias[...]).astype(jnp.float32)


def resize_bilinear(x, size: tuple[int, int]):
    """`[b, h, w, c]` -> `[b, *size, c]`, bilinear with half-pixel centres, no antialiasing
    (PyTorch's `align_corners=False`)."""
    if tuple(size) == tuple(x.shape[1:3]):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), "bilinear", antialias=False)


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`[out, in]` averaging weights of PyTorch's adaptive average pooling along one axis: bin i
    covers `floor(i * in / out)` to `ceil((i + 1) * in / out)` (bins overlap when out > in/2)."""
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool(x, out_size: int):
    """`[b, h, w, c]` -> `[b, out_size, out_size, c]` (`nn.AdaptiveAvgPool2d(out_size)`)."""
    rows = jnp.asarray(adaptive_pool_matrix(x.shape[1], out_size), x.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(x.shape[2], out_size), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def max_pool(x, k: int):
    """Non-overlapping k x k max pooling; a remainder row/column is dropped (floor mode)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, k, k, 1), "VALID")
