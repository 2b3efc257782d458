"""Small pieces of selective-scan arithmetic shared by the pure-JAX backends."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(*arrays) -> jnp.dtype:
    """The dtype a scan runs in: float32, or float64 when the inputs are float64."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def prepare_delta(delta, delta_bias, delta_softplus: bool, dtype):
    """`softplus(delta + delta_bias)` (or without softplus), in `dtype`."""
    delta = delta.astype(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.astype(dtype)
    if delta_softplus:
        delta = jax.nn.softplus(delta)
    return delta


def skip_and_gate(y, u, D, z):
    """`(y + D * u) * silu(z)` with the optional parts left out; `y` sets the dtype."""
    if D is not None:
        y = y + D.astype(y.dtype) * u.astype(y.dtype)
    if z is not None:
        y = y * jax.nn.silu(z.astype(y.dtype))
    return y
