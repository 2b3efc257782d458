"""Sequential selective scan with `jax.lax.scan`: the oracle every other backend is checked against.

It favours obviousness over speed and memory: gradients come from plain autodiff, which stores the
state of every step. Run it on float64 inputs (under `jax.enable_x64`) to get a float64 oracle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vim_jax.ops import scan_math


def selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """See `vim_jax.ops.selective_scan`; all arguments are given (optional ones may be None)."""
    dtype = scan_math.compute_dtype(u, delta, A, B, C)
    delta = scan_math.prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A = A.astype(dtype)
    u_f, B_f, C_f = u.astype(dtype), B.astype(dtype), C.astype(dtype)

    def step(h, xs):
        u_t, d_t, B_t, C_t = xs  # [b, c], [b, c], [b, n], [b, n]
        h = jnp.exp(d_t[:, :, None] * A) * h + (d_t * u_t)[:, :, None] * B_t[:, None, :]
        # An elementwise product and sum, not einsum: a GPU matmul would round through TF32.
        return h, jnp.sum(h * C_t[:, None, :], axis=-1)

    batch, _, channels = u.shape
    h0 = jnp.zeros((batch, channels, A.shape[1]), dtype)
    time_major = [jnp.swapaxes(x, 0, 1) for x in (u_f, delta, B_f, C_f)]
    _, y = jax.lax.scan(step, h0, time_major, reverse=reverse)
    y = scan_math.skip_and_gate(jnp.swapaxes(y, 0, 1), u_f, D, z)
    return y.astype(u.dtype)
