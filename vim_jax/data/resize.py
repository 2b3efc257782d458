"""Separable linear resizing as matrices, for numpy pipelines (no TF, no per-image loop).

``resize_matrix(n_in, n_out) @ x`` resizes axis 0 of ``x`` with the weights
``jax.image.resize(..., "linear")`` uses: a triangle kernel at half-pixel centres, widened by the
scale factor when shrinking (antialiasing), rows normalised to sum to one. A whole batch then
resizes with two matrix products, which numpy runs at BLAS speed.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=32)
def resize_matrix(input_size: int, output_size: int) -> np.ndarray:
    """float32 [output_size, input_size] linear-interpolation weights (antialiased when shrinking)."""
    scale = output_size / input_size
    kernel_scale = max(1.0 / scale, 1.0)
    centres = (np.arange(output_size) + 0.5) / scale - 0.5
    distance = np.abs(centres[:, None] - np.arange(input_size)[None, :]) / kernel_scale
    weights = np.maximum(0.0, 1.0 - distance)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    weights.flags.writeable = False  # cached and shared
    return weights
