"""Image ops that run on the accelerator, inside the jitted step: normalisation and random erasing.

Pipelines hand images over as uint8 (a quarter of float32's bytes through host memory and the
host-to-device copy); they become normalised float32 here, on device. Random erasing fills its box
with N(0, 1) noise *in normalised units*, so it must follow the normalisation and runs here too.
Everything is batched ([B, H, W, C], channels-last) and jit-able.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_ATTEMPTS = 10  # timm draws up to 10 candidate boxes


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 (or [0, 255]) images -> float32 ``(x / 255 - mean) / std`` per channel (torchvision
    ``ToTensor`` + ``Normalize``); ``mean`` and ``std`` are per-channel sequences on the [0, 1] scale."""
    images = images.astype(jnp.float32) / 255.0
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _randint_inclusive(key: jax.Array, high: jax.Array) -> jax.Array:
    """Integers uniform in [0, high] (Python's random.randint(0, high)), one per entry of ``high``."""
    u = jax.random.uniform(key, high.shape)
    return jnp.minimum(jnp.floor(u * (high + 1)).astype(jnp.int32), high)


def _erase_one(key: jax.Array, image: jax.Array, probability: float, min_area: float, max_area: float,
               log_aspect: tuple[float, float], mode: str) -> jax.Array:
    height, width, channels = image.shape
    k_apply, k_area, k_aspect, k_top, k_left, k_fill = jax.random.split(key, 6)
    target = jax.random.uniform(k_area, (_ATTEMPTS,), minval=min_area, maxval=max_area) * (height * width)
    aspect = jnp.exp(jax.random.uniform(k_aspect, (_ATTEMPTS,), minval=log_aspect[0], maxval=log_aspect[1]))
    # jnp.round rounds half to even, like Python's round().
    box_h = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    box_w = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    fits = (box_w < width) & (box_h < height)
    i = jnp.argmax(fits)  # the first candidate that fits
    top = _randint_inclusive(k_top, height - box_h)[i]
    left = _randint_inclusive(k_left, width - box_w)[i]
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + box_h[i]) & (cols >= left) & (cols < left + box_w[i])
    applied = (jax.random.uniform(k_apply) <= probability) & jnp.any(fits)  # timm skips if rand > p
    inside = (inside & applied)[:, :, None]
    if mode == "pixel":
        fill = jax.random.normal(k_fill, image.shape, image.dtype)
    elif mode == "rand":
        fill = jnp.broadcast_to(jax.random.normal(k_fill, (1, 1, channels), image.dtype), image.shape)
    else:
        fill = jnp.zeros_like(image)
    return jnp.where(inside, fill, image)


def random_erasing(key: jax.Array, images: jax.Array, probability: float = 0.25, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: float | None = None,
                   mode: str = "pixel") -> jax.Array:
    """timm ``RandomErasing`` (max_count 1) on each image of a normalised float batch [B, H, W, C].

    Each image, with probability ``probability``: up to ten candidate boxes (area fraction uniform
    in [min_area, max_area], aspect log-uniform in [min_aspect, 1 / min_aspect]); the first that
    fits strictly inside is filled with N(0, 1) noise per pixel ('pixel'), per channel ('rand') or
    zeros ('const'). If no candidate fits, the image is unchanged. ``key`` is split per image.
    """
    if mode not in ("pixel", "rand", "const"):
        raise ValueError(f"unknown random erasing mode {mode!r}")
    max_aspect = max_aspect or 1 / min_aspect
    log_aspect = (math.log(min_aspect), math.log(max_aspect))
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, x: _erase_one(k, x, probability, min_area, max_area, log_aspect, mode))(keys, images)
