"""Argument preparation and the custom VJP of the Mosaic GPU scan.

There is no Mosaic GPU backward kernel yet. Under differentiation the forward rule runs the same
call through the "pallas" backend (the Triton kernels, which save their own chunk-entry states),
or through "reference" where those cannot run (on CPU, interpreted), and the backward is that
call's VJP. So a training step costs exactly the Triton forward and backward, and only calls that
are not differentiated (inference) run the Mosaic GPU forward.

Two directions whose parked output does not fit in shared memory (`Static.fused` False) run as two
one-direction launches combined in XLA.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.mosaic_scan.config import CHANNELS_PER_CTA, LOG2E, STATE_MULTIPLE, Static
from pallas_kernels.mosaic_scan.forward import scan_forward

BACKWARD_BACKENDS = ("pallas", "reference")


def scan(u, delta, A, B, C, D, z, bias, static: Static):
    """Direction-stacked inputs ([ndir, ...], z shared or None; D, bias possibly None) -> out."""
    return _scan(u, delta, A, B, C, D, z, bias, static)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _scan(u, delta, A, B, C, D, z, bias, static):
    return _forward(u, delta, A, B, C, D, z, bias, static)


def _pad_last(x, multiple):
    extra = -x.shape[-1] % multiple
    if not extra:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def _forward(u, delta, A, B, C, D, z, bias, static):
    if len(static.revs) == 2 and not static.fused:
        return _two_launches(u, delta, A, B, C, D, z, bias, static)
    ndir, _, _, channels = u.shape
    state = A.shape[-1]
    # Rows of [B | C] as float32: B and C are `channels / state` times smaller than u, and every
    # thread reads all of them each step, so one conversion here saves one per thread and step.
    # B and C are zero-padded to STATE_MULTIPLE states, so that copies of any row count are whole
    # multiples of 128 bytes.
    bc = jnp.concatenate([_pad_last(B.astype(jnp.float32), STATE_MULTIPLE),
                          _pad_last(C.astype(jnp.float32), STATE_MULTIPLE)], -1)
    zeros = jnp.zeros((ndir, channels), jnp.float32)
    params = jnp.concatenate([
        jnp.swapaxes(A.astype(jnp.float32) * LOG2E, 1, 2),
        (zeros if D is None else D.astype(jnp.float32))[:, None],
        (zeros if bias is None else bias.astype(jnp.float32))[:, None]], 1)
    # Channel counts off the CTA width (none of Vim's) are padded: TMA boxes must fit the array.
    pad = lambda x: None if x is None else _pad_last(x, CHANNELS_PER_CTA)
    out = scan_forward(pad(u), pad(delta), pad(z), bc, pad(params), state=state, static=static)
    return out[..., :channels]


def _two_launches(u, delta, A, B, C, D, z, bias, static):
    def one(k):
        pick = lambda x: None if x is None else x[k:k + 1]
        single = dataclasses.replace(static, revs=(static.revs[k],), scale=1.0, has_z=False, fused=True)
        return _forward(pick(u), pick(delta), pick(A), pick(B), pick(C), pick(D), None, pick(bias), single)

    y = (one(0).astype(jnp.float32) + one(1).astype(jnp.float32)) * static.scale
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y.astype(u.dtype)


def _through_backend(u, delta, A, B, C, D, z, bias, static):
    """The same call through the fallback backends (differentiable there)."""
    from vim_jax.ops import selective_scan, selective_scan_bidirectional

    if len(static.revs) == 2:
        return selective_scan_bidirectional(u, delta, A, B, C, D, z, bias, static.delta_softplus,
                                            static.scale, backend=BACKWARD_BACKENDS)
    pick = lambda x: None if x is None else x[0]
    return selective_scan(u[0], delta[0], A[0], B[0], C[0], pick(D), z, pick(bias), static.delta_softplus,
                          static.revs[0], backend=BACKWARD_BACKENDS)


def _fwd_rule(u, delta, A, B, C, D, z, bias, static):
    # The residuals are the fallback's own (its VJP closure, a pytree of arrays).
    return jax.vjp(functools.partial(_through_backend, static=static), u, delta, A, B, C, D, z, bias)


def _bwd_rule(static, backward, dout):
    return backward(dout)


_scan.defvjp(_fwd_rule, _bwd_rule)
