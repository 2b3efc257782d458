"""`jax.custom_vjp` wiring: forward kernel (+ segment summaries), backward kernel, partial sums.

The forward saves only the state entering every chunk (`[ndir, batch, segments, chunks, state,
channels]` float32, `chunk` times smaller than all states) and, with two directions, the parked
first-direction output; the backward recomputes everything else.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from pallas_kernels.selective_scan import segments
from pallas_kernels.selective_scan.backward import adjoint_summary, scan_backward
from pallas_kernels.selective_scan.forward import scan_forward, segment_summary
from pallas_kernels.selective_scan.tiling import LOG2E, Geometry, ScanConfig


class Kernels(NamedTuple):
    """The four kernel launchers the VJP runs, with the signatures of the Pallas ones in
    `forward.py` and `backward.py` (another backend, such as `pallas_kernels.triton_scan`, passes
    its own: the wiring, the segment chaining and the partial sums here are shared)."""

    forward: Callable
    segment_summary: Callable
    backward: Callable
    adjoint_summary: Callable


PALLAS = Kernels(scan_forward, segment_summary, scan_backward, adjoint_summary)


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything about a call that is not an array (hashable: it keys the custom VJP)."""

    revs: tuple
    delta_softplus: bool
    scale: float
    has_z: bool
    cfg: ScanConfig
    interpret: bool
    kernels: Kernels = PALLAS

    def kernel_kwargs(self):
        return dict(revs=self.revs, delta_softplus=self.delta_softplus, interpret=self.interpret)


def scan(u, delta, A, B, C, D, z, bias, static: Static):
    """out for direction-stacked inputs ([ndir, ...]; z shared, or a placeholder if not has_z)."""
    return _scan(u, delta, A, B, C, D, z, bias, static)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _scan(u, delta, A, B, C, D, z, bias, static):
    return _forward(u, delta, A, B, C, D, z, bias, static, save=False)[0]


def _geometry(u, A, cfg):
    batch, length, channels = u.shape[1:]
    return Geometry(batch, length, channels, A.shape[-1], cfg)


def _prepare(A, B, C, g: Geometry):
    """Kernel-side copies of the small operands: A * log2(e) transposed to [ndir, state_pad,
    channels_pad]; B and C float32 padded to state_pad (they are `channels` times smaller than u,
    and every thread reads all of them each step, so converting once here pays); and the int32 0
    whose unknown alignment fixes the kernels' layout (`kernel_ops`)."""
    ndir, channels, state = A.shape
    A2 = jnp.pad(A.astype(jnp.float32) * LOG2E,
                 ((0, 0), (0, g.channels_pad - channels), (0, g.state_pad - state)))
    pad = ((0, 0), (0, 0), (0, 0), (0, g.state_pad - state))
    B = jnp.pad(B.astype(jnp.float32), pad)
    C = jnp.pad(C.astype(jnp.float32), pad)
    return jnp.zeros((1,), jnp.int32), jnp.swapaxes(A2, 1, 2), B, C


def _forward(u, delta, A, B, C, D, z, bias, static, save):
    g = _geometry(u, A, static.cfg)
    zero, A2, B2, C2 = _prepare(A, B, C, g)
    zz = z if static.has_z else None
    h0 = delta_sum = None
    if g.n_segments > 1:
        h_end, delta_sum = static.kernels.segment_summary(zero, u, delta, A2, B2, bias, g=g, **static.kernel_kwargs())
        h0 = segments.entry_states(h_end, segments.segment_decay(A2, delta_sum), static.revs)
    out, stage, states = static.kernels.forward(zero, u, delta, A2, B2, C2, D, zz, bias, h0, g=g,
                                      scale=static.scale, save_states=save, **static.kernel_kwargs())
    return out, (u, delta, A, B, C, D, z, bias, states, stage, delta_sum)


def _fwd_rule(u, delta, A, B, C, D, z, bias, static):
    return _forward(u, delta, A, B, C, D, z, bias, static, save=True)


def _bwd_rule(static, res, dout):
    u, delta, A, B, C, D, z, bias, states, stage, delta_sum = res
    g = _geometry(u, A, static.cfg.backward())
    zero, A2, B2, C2 = _prepare(A, B, C, g)
    zz = z if static.has_z else None
    channels, state = u.shape[-1], A.shape[-1]
    lam0 = None
    if g.n_segments > 1:
        lam_out = static.kernels.adjoint_summary(zero, delta, A2, C2, zz, bias, dout, g=g, scale=static.scale,
                                  **static.kernel_kwargs())
        lam0 = segments.entry_adjoints(lam_out, segments.segment_decay(A2, delta_sum), static.revs)
    du, dd, dz, dBp, dCp, dAp, dDp, dbp = static.kernels.backward(
        zero, u, delta, A2, B2, C2, D, zz, bias, dout, states, lam0, stage, g=g, scale=static.scale,
        **static.kernel_kwargs())
    dB = dBp.sum(1)[..., :state].astype(B.dtype)
    dC = dCp.sum(1)[..., :state].astype(C.dtype)
    dA = jnp.swapaxes(dAp.sum((1, 2))[:, :state, :channels], 1, 2).astype(A.dtype)
    dD = dDp.sum((1, 2))[:, :channels].astype(D.dtype)
    dbias = dbp.sum((1, 2))[:, :channels].astype(bias.dtype)
    dz = dz if static.has_z else jnp.zeros_like(z)
    return du, dd, dA, dB, dC, dD, dz, dbias


_scan.defvjp(_fwd_rule, _bwd_rule)
