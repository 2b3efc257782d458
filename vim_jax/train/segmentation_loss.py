"""Per-pixel cross-entropy with an ignore label, and the decode + auxiliary loss of mmseg's
UperNet recipe (the official Vim configs: auxiliary FCN weight 0.4).

mmseg (0.29, the version the official segmentation code pins) averages the per-pixel loss over
*all* pixels, the ignored ones counting as zero (`avg_non_ignore=False`); `avg_non_ignore=True`
averages over the labelled pixels only, as `torch.nn.functional.cross_entropy` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vim_jax.models.segmentation import resize_bilinear

IGNORE_INDEX = 255
AUX_WEIGHT = 0.4


def pixel_cross_entropy(logits, labels, *, ignore_index: int = IGNORE_INDEX, avg_non_ignore: bool = False,
                        mask=None):
    """Mean cross-entropy of `logits` `[b, h, w, classes]` against integer `labels` `[b, h, w]`.

    Pixels labelled `ignore_index` add nothing; `mask` `[b]` (optional) leaves out padded
    examples entirely. The mean is over every pixel of the kept examples, or over the labelled
    ones when `avg_non_ignore`.
    """
    if logits.shape[:3] != labels.shape:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must share [batch, height, width]")
    labels = labels.astype(jnp.int32)
    valid = labels != ignore_index
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    keep = jnp.ones(labels.shape, jnp.float32) if mask is None else jnp.broadcast_to(
        mask.astype(jnp.float32)[:, None, None], labels.shape)
    losses = -picked * valid * keep
    count = jnp.sum(valid * keep) if avg_non_ignore else jnp.sum(keep)
    return jnp.sum(losses) / jnp.maximum(count, 1.0)


def segmentation_loss(logits, aux_logits, labels, *, aux_weight: float = AUX_WEIGHT,
                      ignore_index: int = IGNORE_INDEX, avg_non_ignore: bool = False, mask=None):
    """`decode + aux_weight * auxiliary` loss; both heads' logits (any resolution) are first
    upsampled to the labels' size (bilinear, `align_corners=False`), as mmseg's heads do.

    Returns `(total, {"decode_loss", "aux_loss"})` (`aux_loss` 0 when `aux_logits` is None).
    """
    size = labels.shape[1:3]
    kwargs = dict(ignore_index=ignore_index, avg_non_ignore=avg_non_ignore, mask=mask)
    decode = pixel_cross_entropy(resize_bilinear(logits, size), labels, **kwargs)
    aux = jnp.zeros((), jnp.float32) if aux_logits is None else pixel_cross_entropy(
        resize_bilinear(aux_logits, size), labels, **kwargs)
    return decode + aux_weight * aux, {"decode_loss": decode, "aux_loss": aux}
