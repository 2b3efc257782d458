"""Per-thread arithmetic of the kernels, written so that approximate special functions
(`ex2.approx`, `lg2.approx`) keep float32 accuracy and no branch enters the token loop."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

# log1p(w) for w < this is its Taylor series through w^6 (relative error below w^6 / 7 ~ 1.4e-7);
# above it lg2.approx's absolute error (~1e-7) is small against log(1 + w) >= 0.095.
_SERIES_BELOW = 0.1


@dataclasses.dataclass(frozen=True)
class Funcs:
    """The kernels' special functions. `no_exp` is the timing-only ablation of
    `MosaicScanConfig.ablation`: every exponential and logarithm becomes a multiply-add (wrong
    values; divisions stay), so that the time it saves is what the special-function units cost."""

    no_exp: bool = False

    def exp2(self, x):
        return x * 0.5 + 1.0 if self.no_exp else jnp.exp2(x)

    def exp(self, x):
        return x * 0.5 + 1.0 if self.no_exp else jnp.exp(x)

    def log(self, x):
        return x * 0.5 - 0.5 if self.no_exp else jnp.log(x)

    def _log1p_small(self, w):
        """log(1 + w) for 0 <= w <= 1 without a log1p primitive (Mosaic GPU has none)."""
        series = w * (1.0 - w * (1 / 2 - w * (1 / 3 - w * (1 / 4 - w * (1 / 5 - w * (1 / 6))))))
        return jnp.where(w < _SERIES_BELOW, series, self.log(1.0 + w))

    def softplus(self, x):
        """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), branch-free."""
        return jnp.maximum(x, 0.0) + self._log1p_small(self.exp(-jnp.abs(x)))

    def sigmoid(self, x):
        return 1.0 / (1.0 + self.exp(-x))

    def silu(self, z):
        return z / (1.0 + self.exp(-z))
