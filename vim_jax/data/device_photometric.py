"""mmseg's ``PhotoMetricDistortion`` in jax, for the device: the host draws each crop's parameters
(``seg_transforms.sample_photometric``, carried in the batch by ``seg_transforms.photometric_columns``)
and the jitted training step applies them here to the uint8 batch, before normalisation.

The arithmetic is ``seg_transforms.apply_photometric``'s (the numpy reference) in float32, step
for step: brightness, contrast (first or last), saturation and hue through OpenCV's 8-bit HSV,
each step ending on whole values in 0..255 as mmseg's uint8 casts do. Only the crop's unpadded
extent is distorted; the padding keeps its colour, as mmseg pads after the distortion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vim_jax.data.seg_transforms import PHOTOMETRIC_COLUMNS
from vim_jax.data.seg_transforms import rgb_to_hsv as st_rgb_to_hsv

_COLUMN = {name: i for i, name in enumerate(PHOTOMETRIC_COLUMNS)}

# Both conversions read the numpy reference's own results from tables instead of redoing its
# float32 arithmetic: on a GPU, XLA contracts hue * 30 + 180 into one fused multiply-add and would
# turn H / 30 into a product with a reciprocal, each an ulp off the reference, which moves
# roundings at exact half values (an H200 failed the exact comparison with the formulas).
#
# rgb_to_hsv: OpenCV's hue depends only on which channel is the largest (red first, then green),
# the difference of the other two (red: g - b, green: b - r, blue: r - g) and max - min; its
# saturation only on max and max - min. One colour per such case, converted by the reference:
_DIFF = np.arange(256)[None, :]
_NUM = np.arange(-255, 256)[:, None]
_LOW = 255 - _DIFF  # the smallest channel, the largest being 255
_OTHER = (_LOW + np.maximum(_NUM, 0), _LOW + np.maximum(-_NUM, 0))  # the two others: their difference is _NUM
_FEASIBLE = np.abs(_NUM) <= _DIFF
_TOP = np.full(np.broadcast_shapes(_NUM.shape, _DIFF.shape), 255)
# (r, g, b) per case, the largest channel being red, green or blue:
_CASE_RGB = [np.stack(channels, axis=-1) for channels in
             ((_TOP, *_OTHER), (_OTHER[1], _TOP, _OTHER[0]),
              (_OTHER[0], _OTHER[1], _TOP))]
_HUE = np.stack([np.where(_FEASIBLE, st_rgb_to_hsv(np.clip(c, 0, 255).astype(np.uint8))[..., 0], 0)
                 for c in _CASE_RGB])  # [3, 511, 256]: case, difference + 255, max - min
_VALUE = np.arange(256)[:, None]
_GREYISH = np.stack(np.broadcast_arrays(_VALUE, *(2 * [np.clip(_VALUE - _DIFF, 0, 255)])), axis=-1)
_SATURATION = st_rgb_to_hsv(_GREYISH.astype(np.uint8))[..., 1]  # [256, 256]: max, max - min (<= max)

# hsv_to_rgb's factors of V for every 8-bit (H, S), computed as the numpy reference computes them.
_H = np.arange(180, dtype=np.float32)[:, None] / np.float32(30)
_S = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)
_F = _H - np.floor(_H)
_FACTORS = np.stack(np.broadcast_arrays(1 - _S, 1 - _S * _F, 1 - _S * (1 - _F)), axis=-1)  # [180, 256, 3]
_SECTOR = (np.floor(_H[:, 0]).astype(np.int32) % 6)


def _convert(x: jax.Array, alpha=1.0, beta=0.0) -> jax.Array:
    # clip to 0..255, then truncate like the cast to uint8
    return jnp.floor(jnp.clip(x * alpha + beta, 0.0, 255.0))


def rgb_to_hsv(x: jax.Array) -> jax.Array:
    """Whole-valued float RGB [..., 3] -> OpenCV 8-bit HSV (H in [0, 180), S and V in [0, 255])."""
    channels = x.astype(jnp.int32)
    r, g, b = channels[..., 0], channels[..., 1], channels[..., 2]
    value = channels.max(axis=-1)
    diff = value - channels.min(axis=-1)
    case = jnp.where(value == r, 0, jnp.where(value == g, 1, 2))
    num = jnp.select([case == 0, case == 1], [g - b, b - r], r - g)
    hue = jnp.asarray(_HUE, jnp.float32)[case, num + 255, diff]
    saturation = jnp.asarray(_SATURATION, jnp.float32)[value, diff]
    return jnp.stack([hue, saturation, value.astype(jnp.float32)], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """The inverse of :func:`rgb_to_hsv` (whole-valued HSV in its ranges), rounded to whole values in 0..255."""
    h, s = hsv[..., 0].astype(jnp.int32), hsv[..., 1].astype(jnp.int32)
    v = hsv[..., 2]
    sector = jnp.asarray(_SECTOR)[h]
    factors = jnp.asarray(_FACTORS)[h, s]
    p, q, t = v * factors[..., 0], v * factors[..., 1], v * factors[..., 2]
    # Per sector 0..5, which of (v, p, q, t) each channel takes.
    red = jnp.select([sector == k for k in range(6)], [v, q, p, p, t, v])
    green = jnp.select([sector == k for k in range(6)], [t, v, v, q, p, p])
    blue = jnp.select([sector == k for k in range(6)], [p, p, t, v, v, q])
    return jnp.clip(jnp.round(jnp.stack([red, green, blue], axis=-1)), 0.0, 255.0)


def _adjust_saturation(x: jax.Array, alpha: jax.Array) -> jax.Array:
    hsv = rgb_to_hsv(x)
    return hsv_to_rgb(hsv.at[..., 1].set(_convert(hsv[..., 1], alpha=alpha)))


def _adjust_hue(x: jax.Array, delta: jax.Array) -> jax.Array:
    hsv = rgb_to_hsv(x)
    return hsv_to_rgb(hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 180.0)))


def _distort_one(image: jax.Array, columns: jax.Array) -> jax.Array:
    def param(name):
        value = columns[_COLUMN[name]]
        return ~jnp.isnan(value), jnp.nan_to_num(value)

    x = image.astype(jnp.float32)
    on, brightness = param("brightness")
    x = jnp.where(on, _convert(x, beta=brightness), x)
    first = columns[_COLUMN["contrast_first"]] > 0
    on_contrast, contrast = param("contrast")
    x = jnp.where(on_contrast & first, _convert(x, alpha=contrast), x)
    on, saturation = param("saturation")
    x = jnp.where(on, _adjust_saturation(x, saturation), x)
    on, hue = param("hue")
    x = jnp.where(on, _adjust_hue(x, hue), x)
    x = jnp.where(on_contrast & ~first, _convert(x, alpha=contrast), x)
    rows = jnp.arange(image.shape[0])[:, None, None] < columns[_COLUMN["height"]]
    cols = jnp.arange(image.shape[1])[None, :, None] < columns[_COLUMN["width"]]
    return jnp.where(rows & cols, x, image.astype(jnp.float32))


def photometric_distortion(images: jax.Array, columns: jax.Array) -> jax.Array:
    """uint8 crops [B, H, W, 3] and their draws [B, len(PHOTOMETRIC_COLUMNS)] -> the distorted
    crops as whole-valued float32 in 0..255 (ready for ``device_ops.normalize``)."""
    if columns.shape != (images.shape[0], len(PHOTOMETRIC_COLUMNS)):
        raise ValueError(f"expected photometric columns [{images.shape[0]}, {len(PHOTOMETRIC_COLUMNS)}], "
                         f"got {columns.shape}")
    return jax.vmap(_distort_one)(images, columns)
