"""Per-thread arithmetic of the kernels, written so that approximate special functions
(`ex2.approx`, `lg2.approx`) keep float32 accuracy and no branch enters the token loop."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# 2^f on [-1/2, 1/2] as 1 + f q(f) (so that 2^0 is exactly 1: decays near 1 compound over
# thousands of tokens), q fitted by least squares on Chebyshev nodes reweighted towards the minimax
# error. Evaluated in float32 after the range reduction below, 2^x has a relative error below
# 1.9e-7 over [-126, 0] (mean -2e-8), that of `ex2.approx` (2 ulp).
_EXP2_POLY = (1.0, 0.6931470036506653, 0.24022242426872253, 0.05550733581185341, 0.009671512991189957,
              0.001326472731307149)
_ROUNDING = 12582912.0  # 1.5 * 2^23: adding it rounds a float32 of magnitude < 2^22 to an integer
_ROUNDING_BITS = 0x4B400000  # its bits
_ONE_BITS = 0x3F800000  # the bits of 1.0f

# log1p(w) for w < this is its Taylor series through w^6 (relative error below w^6 / 7 ~ 1.4e-7);
# above it lg2.approx's absolute error (~1e-7) is small against log(1 + w) >= 0.095.
_SERIES_BELOW = 0.1


@dataclasses.dataclass(frozen=True)
class Funcs:
    """The kernels' special functions. `no_exp` is the timing-only ablation of
    `MosaicScanConfig.ablation`: every exponential and logarithm becomes a multiply-add (wrong
    values; divisions stay), so that the time it saves is what the special-function units cost."""

    no_exp: bool = False
    poly_states: int = 0

    @classmethod
    def of(cls, cfg) -> "Funcs":
        """The special functions a `MosaicScanConfig` asks for."""
        return cls(no_exp=cfg.ablation == "no_exp", poly_states=cfg.poly_exp_states)

    def decay(self, x, n):
        """exp2(x) for state n's decay: computed on the FMA units (`exp2_fma`) for the first
        `poly_states` states, on the special-function units' `ex2` for the others."""
        return exp2_fma(x) if n < self.poly_states and not self.no_exp else self.exp2(x)

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


def exp2_fma(x):
    """2^x in float32 without a special-function instruction: x = j + f with j an integer and
    |f| <= 1/2 (by the rounding constant), 2^f by a degree-5 polynomial (5 FMAs), 2^j by putting
    j into the exponent bits (integer shift and add). x is clamped to [-126, 127] (float32's normal range)."""
    x = jnp.clip(x, -126.0, 127.0)
    # The sum's low mantissa bits hold j (two's complement). It is read back as an integer rather
    # than as `(x + c) - c`, which compilers may fold to x.
    j = jax.lax.bitcast_convert_type(x + _ROUNDING, jnp.int32) - _ROUNDING_BITS
    f = x - j.astype(jnp.float32)
    p = _EXP2_POLY[-1]
    for c in _EXP2_POLY[-2::-1]:
        p = p * f + c
    scale = jax.lax.bitcast_convert_type(jax.lax.shift_left(j, 23) + _ONE_BITS, jnp.float32)  # 2^j
    return scale * p
