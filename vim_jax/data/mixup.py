"""Mixup / CutMix with label smoothing, on device in JAX, with timm's ``Mixup`` semantics (mode 'batch').

Per batch (timm ``Mixup._params_per_batch`` / ``_mix_batch`` / ``mixup_target``):

* with probability ``prob`` the batch is mixed, else lambda = 1 (targets only smoothed);
* if both alphas are > 0, CutMix is chosen with probability ``switch_prob``, else Mixup;
  lambda ~ Beta(alpha, alpha) of the chosen method;
* every example is paired with the batch *flipped* (example i with example B - 1 - i);
* Mixup: ``x = lam * x + (1 - lam) * flip(x)``;
* CutMix: a box of sides ``int(H * sqrt(1 - lam))``, ``int(W * sqrt(1 - lam))`` centred at a
  uniform pixel, clipped to the image, is pasted from ``flip(x)``; lambda is then corrected to
  ``1 - box_area / (H * W)`` (``correct_lam=True``);
* targets = ``lam * smooth(y) + (1 - lam) * smooth(flip(y))`` with ``smooth`` the one-hot with
  label smoothing: ``off = s / C``, ``on = 1 - s + off``.

DeiT runs one ``Mixup`` per GPU on its local batch. ``num_groups`` reproduces that on a global
batch: the batch is cut into that many equal contiguous groups (use the data-parallel size, so
groups are device shards and the flip never crosses devices), each with its own lambda and box.
Images are channels-last [B, H, W, C].
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MixupConfig:
    """timm ``Mixup`` arguments; the defaults are the DeiT/Vim recipe."""

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    correct_lam: bool = True
    num_classes: int = 1000

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class MixParams(NamedTuple):
    """One batch's draw: lambda (after box correction), whether CutMix, and its box [yl, yh, xl, xh)."""

    lam: jax.Array
    use_cutmix: jax.Array
    box: jax.Array


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """One-hot float32 targets with label smoothing (timm ``one_hot(on_value, off_value)``)."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (on - off) + off


def mix_targets(labels: jax.Array, lam: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
    """timm ``mixup_target``: ``lam * smooth(y) + (1 - lam) * smooth(y flipped along the batch)``."""
    y = smooth_one_hot(labels, num_classes, smoothing)
    return lam * y + (1.0 - lam) * y[::-1]


def cutmix_box(key: jax.Array, height: int, width: int, lam: jax.Array) -> jax.Array:
    """timm ``rand_bbox``: int32 [yl, yh, xl, xh], a box of area fraction ~ (1 - lam), clipped."""
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    k_y, k_x = jax.random.split(key)
    cy = jax.random.randint(k_y, (), 0, height)
    cx = jax.random.randint(k_x, (), 0, width)
    return jnp.stack([jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height),
                      jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)])


def box_mask(box: jax.Array, height: int, width: int) -> jax.Array:
    """bool [height, width], True inside [yl, yh) x [xl, xh)."""
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    return (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])


def sample_mix_params(key: jax.Array, height: int, width: int, config: MixupConfig = MixupConfig()) -> MixParams:
    """Draws one batch's (lambda, CutMix or not, box) as timm does, lambda already box-corrected."""
    k_apply, k_switch, k_lam, k_box = jax.random.split(key, 4)
    if config.mixup_alpha > 0 and config.cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(k_switch) < config.switch_prob
    else:
        use_cutmix = jnp.asarray(config.cutmix_alpha > 0)
    # One Beta draw whose alpha depends on the method: the same distribution as timm's two
    # branches, and one Beta sampler to compile instead of two (seconds each on CPU).
    alpha = jnp.where(use_cutmix, config.cutmix_alpha, config.mixup_alpha)
    lam = jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32)
    box = cutmix_box(k_box, height, width, lam)
    if config.correct_lam:
        area = (box[1] - box[0]) * (box[3] - box[2])
        lam = jnp.where(use_cutmix, 1.0 - area / (height * width), lam).astype(jnp.float32)
    applied = jax.random.uniform(k_apply) < config.prob
    lam = jnp.where(applied, lam, 1.0)
    # Not applied: an empty box keeps CutMix a no-op too.
    box = jnp.where(applied, box, jnp.zeros_like(box))
    return MixParams(lam, use_cutmix & applied, box)


def _mix_group(key, images, labels, config: MixupConfig):
    height, width = images.shape[1], images.shape[2]
    params = sample_mix_params(key, height, width, config)
    flipped = images[::-1]
    inside = box_mask(params.box, height, width)[None, :, :, None]
    cut = jnp.where(inside, flipped, images)
    lam = params.lam.astype(images.dtype)
    blended = lam * images + (1 - lam) * flipped
    mixed = jnp.where(params.use_cutmix, cut, blended)
    targets = mix_targets(labels, params.lam, config.num_classes, config.label_smoothing)
    return mixed, targets


def mixup_cutmix(key: jax.Array, images: jax.Array, labels: jax.Array, config: MixupConfig = MixupConfig(),
                 num_groups: int = 1) -> tuple[jax.Array, jax.Array]:
    """Mixes a batch: returns (images [B, H, W, C], soft targets float32 [B, num_classes]).

    Jit-able (``config`` and ``num_groups`` static). Each of the ``num_groups`` contiguous groups
    (B divisible by num_groups; each group's size even, as timm asserts) draws its own lambda.
    """
    batch = images.shape[0]
    if batch % num_groups or (batch // num_groups) % 2:
        raise ValueError(f"batch {batch} must split into {num_groups} groups of even size")
    if not config.enabled:
        return images, smooth_one_hot(labels, config.num_classes, config.label_smoothing)
    group = batch // num_groups
    keys = jax.random.split(key, num_groups)
    mixed, targets = jax.vmap(lambda k, x, y: _mix_group(k, x, y, config))(
        keys, images.reshape(num_groups, group, *images.shape[1:]), labels.reshape(num_groups, group))
    return mixed.reshape(images.shape), targets.reshape(batch, config.num_classes)
