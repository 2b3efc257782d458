"""Sliding-window inference (mmseg's `slide` test mode): logits of overlapping crops, averaged."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start of each window along an axis of `size`: every `stride`, the last one moved back to
    end at the border; one window (of the whole axis) when `size <= crop`."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


def slide_inference(predict: Callable, images, num_classes: int, crop: int = 512, stride: int = 341):
    """Logits `[b, h, w, num_classes]` of `images` `[b, h, w, c]` from crops of `crop` x `crop`
    every `stride` pixels, each pixel the mean over the crops that cover it.

    `predict(crops)` maps `[b, ch, cw, c]` to logits `[b, ch, cw, num_classes]`: a segmentor (in
    eval mode) or a pure function. It runs once per window position on the batch's crops there
    (`lax.map`, one compiled call, as mmseg runs window by window), so that memory and the
    compiled shapes stay those of a batch of crops rather than of all windows at once. Images smaller than `crop` along an axis
    are covered by one crop of their size along it. Traceable under `jit`.
    """
    b, h, w, _ = images.shape
    ch, cw = min(crop, h), min(crop, w)
    boxes = [(y, x) for y in window_starts(h, crop, stride) for x in window_starts(w, crop, stride)]
    crops = jnp.stack([images[:, y:y + ch, x:x + cw] for y, x in boxes])
    if isinstance(predict, nnx.Module):  # its state enters the loop as arrays, not as mutable Variables
        graphdef, state = nnx.split(predict)
        predict = lambda c: nnx.merge(graphdef, state)(c)  # noqa: E731
    logits = jax.lax.map(lambda c: predict(c).astype(jnp.float32), crops)
    total = jnp.zeros((b, h, w, num_classes), jnp.float32)
    count = jnp.zeros((1, h, w, 1), jnp.float32)
    for k, (y, x) in enumerate(boxes):
        total = total.at[:, y:y + ch, x:x + cw].add(logits[k])
        count = count.at[:, y:y + ch, x:x + cw].add(1.0)
    return total / count
