"""Argument preparation and the custom VJP of the Mosaic GPU scan.

Under differentiation the forward rule runs the Mosaic forward and keeps only the inputs; the
backward rule runs the Mosaic backward kernel (`backward.py`, which recomputes the states) and
adds up its partial sums. Where that kernel should not run (`backward.supported`: switched off
with `MosaicScanConfig(mosaic_backward=False)`, fewer CTAs than `bwd_min_ctas`, or a state too large
for its shared memory), the forward rule runs the same call through the "pallas" backend (the Triton kernels) or through
"reference" where those cannot run (on CPU, interpreted), and the backward is that call's VJP.

Two directions whose parked output does not fit in shared memory (`Static.fused` False) run as two
one-direction launches combined in XLA.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.mosaic_scan import backward
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


def _operands(A, B, C, D, bias):
    """The kernels' small operands: rows of [B | C] as float32 ([ndir, batch, length,
    2 * state_pad]) and the per-channel parameters `A * log2(e)`, D, delta_bias ([ndir, state + 2,
    channels_pad])."""
    ndir, channels, _ = A.shape
    # B and C are `channels / state` times smaller than u, and every thread reads all of them
    # each step, so one conversion here saves one per thread and step. B and C are zero-padded
    # to STATE_MULTIPLE states, so that copies of any row count are whole multiples of 128 bytes.
    bc = jnp.concatenate([_pad_last(B.astype(jnp.float32), STATE_MULTIPLE),
                          _pad_last(C.astype(jnp.float32), STATE_MULTIPLE)], -1)
    zeros = jnp.zeros((ndir, channels), jnp.float32)
    params = jnp.concatenate([
        jnp.swapaxes(A.astype(jnp.float32) * LOG2E, 1, 2),
        (zeros if D is None else D.astype(jnp.float32))[:, None],
        (zeros if bias is None else bias.astype(jnp.float32))[:, None]], 1)
    return bc, _pad_channels(params)


def _pad_channels(x):
    """Channel counts off the CTA width (none of Vim's) are padded: TMA boxes must fit the array."""
    return None if x is None else _pad_last(x, CHANNELS_PER_CTA)


def _forward(u, delta, A, B, C, D, z, bias, static):
    if len(static.revs) == 2 and not static.fused:
        return _two_launches(u, delta, A, B, C, D, z, bias, static)
    channels = u.shape[-1]
    bc, params = _operands(A, B, C, D, bias)
    p = _pad_channels
    out = scan_forward(p(u), p(delta), p(z), bc, params, state=A.shape[-1], static=static)
    return out[..., :channels]


def _two_launches(u, delta, A, B, C, D, z, bias, static):
    def one(k, single):
        pick = lambda x: None if x is None else x[k:k + 1]
        return _forward(pick(u), pick(delta), pick(A), pick(B), pick(C), pick(D), None, pick(bias), single)

    return combine_directions(one, z, static, u.dtype)


def combine_directions(one, z, static, dtype):
    """`scale * (y_0 + y_1) * silu(z)` in `dtype` from `one(k, static_k)`, direction k's output of
    a one-direction launch with settings `static_k` (no scale, no gate)."""
    y = sum(one(k, dataclasses.replace(static, revs=(rev,), scale=1.0, has_z=False, fused=True)).astype(jnp.float32)
            for k, rev in enumerate(static.revs)) * static.scale
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y.astype(dtype)


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
    if backward.supported(u.shape, A.shape[-1], static):
        return _forward(u, delta, A, B, C, D, z, bias, static), (u, delta, A, B, C, D, z, bias)
    # The residuals are the fallback's own (its VJP closure, a pytree of arrays).
    out, fallback_vjp = jax.vjp(functools.partial(_through_backend, static=static),
                                u, delta, A, B, C, D, z, bias)
    return out, (fallback_vjp,)


def _bwd_rule(static, res, dout):
    if len(res) == 1:
        return res[0](dout)
    u, delta, A, B, C, D, z, bias = res
    channels, state = u.shape[-1], A.shape[-1]
    bc, params = _operands(A, B, C, D, bias)
    p = _pad_channels
    du, dd, dz, dbc, dp = backward.scan_backward(p(u), p(delta), p(z), p(dout), bc, params,
                                                 state=state, static=static)
    cut = lambda x, like: x[..., :channels].astype(like.dtype)
    return (cut(du, u), cut(dd, delta),
            jnp.swapaxes(dp[:, :state, :channels], 1, 2).astype(A.dtype),
            dbc[..., :state].astype(B.dtype), dbc[..., state:].astype(C.dtype),
            None if D is None else cut(dp[:, state], D),
            None if z is None else cut(dz, z),
            None if bias is None else cut(dp[:, state + 1], bias))


_scan.defvjp(_fwd_rule, _bwd_rule)
