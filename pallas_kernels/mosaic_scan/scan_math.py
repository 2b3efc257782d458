"""Per-thread arithmetic of the kernels, written so that approximate special functions
(`ex2.approx`, `lg2.approx`) keep float32 accuracy and no branch enters the token loop."""

from __future__ import annotations

import jax.numpy as jnp

# log1p(w) for w < this is its Taylor series through w^6 (relative error below w^6 / 7 ~ 1.4e-7);
# above it lg2.approx's absolute error (~1e-7) is small against log(1 + w) >= 0.095.
_SERIES_BELOW = 0.1


def _log1p_small(w):
    """log(1 + w) for 0 <= w <= 1 without a log1p primitive (Mosaic GPU has none)."""
    series = w * (1.0 - w * (1 / 2 - w * (1 / 3 - w * (1 / 4 - w * (1 / 5 - w * (1 / 6))))))
    return jnp.where(w < _SERIES_BELOW, series, jnp.log(1.0 + w))


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), branch-free."""
    return jnp.maximum(x, 0.0) + _log1p_small(jnp.exp(-jnp.abs(x)))


def silu(z):
    return z / (1.0 + jnp.exp(-z))
