"""Operands and custom VJP of the Mosaic scan with the conv prologue (`conv_selective_scan`).

The forward rule runs the forward kernel with the prologue (u and delta computed in it) and keeps
only the op's inputs. The backward rule recomputes u and delta in XLA (`vim_jax.ops.conv_prologue`,
the reference composition's own), runs the scan's backward kernel on them exactly as `vjp` does
for a plain scan, and chains du and ddelta back to x, the conv and the dt projection through the
recompute's VJP. So the gradients are those of the unfused path at the composition's u and delta.
Where the backward kernel should not run (`backward.supported`), the forward rule runs the
composition through the fallback backends and the backward is its VJP.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.mosaic_scan import backward, vjp
from pallas_kernels.mosaic_scan.config import RANK_MULTIPLE, Static
from pallas_kernels.mosaic_scan.forward import scan_forward
from vim_jax.ops import conv_prologue


def scan(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static: Static):
    """x, z [batch, length, channels] (shared by the directions; z may be None); the others
    direction-stacked: conv_w [ndir, d_conv, channels], conv_b [ndir, channels], dt_low
    [ndir, batch, length, dt_rank], dt_w [ndir, dt_rank, channels], A, B, C, D, bias as `vjp.scan`'s.
    -> out [batch, length, channels]."""
    return _scan(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static)


@functools.partial(jax.custom_vjp, nondiff_argnums=(11,))
def _scan(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static):
    return _forward(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static)


def _operands(conv_w, conv_b, dt_low, dt_w, A, B, C, D, bias):
    """The plain scan's operands (`vjp._operands`) with dt_low appended to the `[B | C]` rows
    (zero-padded to RANK_MULTIPLE columns) and the prologue's parameter rows (conv taps, conv
    bias, W_dt) appended to the per-channel parameters."""
    bc, params = vjp._operands(A, B, C, D, bias)
    rows = jnp.concatenate([bc, vjp._pad_last(dt_low.astype(jnp.float32), RANK_MULTIPLE)], -1)
    own = jnp.concatenate([conv_w, conv_b[:, None], dt_w], 1).astype(jnp.float32)
    return rows, jnp.concatenate([params, vjp._pad_channels(own)], 1)


def _forward(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static):
    if len(static.revs) == 2 and not static.fused:
        def one(k, single):
            pick = lambda a: None if a is None else a[k:k + 1]
            return _forward(x, pick(conv_w), pick(conv_b), pick(dt_low), pick(dt_w), pick(A), pick(B), pick(C),
                            pick(D), None, pick(bias), single)

        return vjp.combine_directions(one, z, static, x.dtype)
    rows, params = _operands(conv_w, conv_b, dt_low, dt_w, A, B, C, D, bias)
    p = vjp._pad_channels
    out = scan_forward(p(x), None, p(z), rows, params, state=A.shape[-1], static=static)
    return out[..., :x.shape[-1]]


def _recompute(x, conv_w, conv_b, dt_low, dt_w, *, revs):
    """u, delta [ndir, batch, length, channels], as the composition computes them."""
    return conv_prologue(x, conv_w, conv_b, dt_low, dt_w, tuple(revs))


def _through_backend(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static):
    """The same call as the composition through the fallback backends (differentiable there)."""
    from vim_jax.ops import conv_selective_scan, conv_selective_scan_bidirectional

    if len(static.revs) == 2:
        return conv_selective_scan_bidirectional(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static.scale,
                                                 backend=vjp.BACKWARD_BACKENDS)
    pick = lambda a: None if a is None else a[0]
    return conv_selective_scan(x, conv_w[0], conv_b[0], dt_low[0], dt_w[0], A[0], B[0], C[0], pick(D), z, pick(bias),
                               static.revs[0], backend=vjp.BACKWARD_BACKENDS)


def _fwd_rule(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias, static):
    args = (x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias)
    if backward.supported((len(static.revs),) + x.shape, A.shape[-1], static):
        return _forward(*args, static), args
    out, fallback_vjp = jax.vjp(functools.partial(_through_backend, static=static), *args)
    return out, (fallback_vjp,)


def _bwd_rule(static, res, dout):
    if len(res) == 1:
        return res[0](dout)
    x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, bias = res
    (u, delta), prologue_vjp = jax.vjp(functools.partial(_recompute, revs=static.revs), x, conv_w, conv_b, dt_low, dt_w)
    du, ddelta, *rest = vjp._bwd_rule(dataclasses.replace(static, prologue=None), (u, delta, A, B, C, D, z, bias), dout)
    return (*prologue_vjp((du, ddelta)), *rest)


_scan.defvjp(_fwd_rule, _bwd_rule)
