"""The mixer's conv prologue and selective scan as one op: `u = silu(conv(x))`, `delta = dt_low W_dt`.

Vim's mixer computes, per direction, `u = silu(depthwise_conv1d(x))` and `delta = dt_low @ W_dt`
(both `E` wide per token) and hands them to the selective scan. This op takes `x` and `dt_low`
(`R = ceil(D / 16)` wide) instead, so that a backend can compute the conv taps, the SiLU and the
dt projection per token inside its scan kernel and never write u and delta to memory.

Backends are those of `vim_jax.ops.selective_scan` (the same names and objects, the same
fall-through on `NotImplementedError`): one with a `conv_selective_scan(x, conv_w, conv_b, dt_low,
dt_w, A, B, C, D, z, delta_bias, reverse)` method (and optionally `conv_selective_scan_bidirectional`)
runs it; for the others, and where that method raises `NotImplementedError`, the composition runs:
the prologue in plain JAX (`conv_prologue`, the mixer's own computation), then that backend's
`selective_scan`. `backend="reference"` is therefore the reference composition.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vim_jax.ops import selective_scan as registry
from vim_jax.ops.depthwise_conv import depthwise_conv1d

OP = "conv_selective_scan"


def conv_prologue(x, conv_w, conv_b, dt_low, dt_w, reverse):
    """u = silu(depthwise_conv1d(x, conv_w, conv_b, reverse)) and delta = dt_low @ dt_w, as the
    mixer computes them (in x's and dt_low's dtypes).

    One direction: `conv_w [K, E]`, `conv_b [E]`, `dt_low [b, L, R]`, `dt_w [R, E]`, `reverse` a
    bool -> u, delta `[b, L, E]`. Several over the same x: a leading direction axis on all but x,
    `reverse` a tuple of bools -> `[k, b, L, E]` each.
    """
    u = jax.nn.silu(depthwise_conv1d(x, conv_w, conv_b, reverse))
    spec = "...r,re->...e" if isinstance(reverse, bool) else "k...r,kre->k...e"
    # Full float32 products: the fused kernels compute delta on the CUDA cores, and the backward
    # recomputes it here; at the GPU's default precision (TF32 for float32 matmuls) the
    # gradients of a float32 call came out 3e-4 off float64 (H200), against 1.6e-7 for the output.
    return u, jnp.einsum(spec, dt_low, dt_w.astype(dt_low.dtype), precision=jax.lax.Precision.HIGHEST)


def _validate(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias, lead=()):
    lead = tuple(lead)
    if getattr(x, "ndim", None) != 3:
        raise ValueError(f"{OP}: x must be [batch, length, channels], got shape {getattr(x, 'shape', None)}")
    batch, length, channels = x.shape
    registry._check("x", x, x.shape, OP)
    if getattr(conv_w, "ndim", None) != len(lead) + 2:
        raise ValueError(f"{OP}: conv_w must be {list(lead) + ['d_conv', 'channels']}, "
                         f"got shape {getattr(conv_w, 'shape', None)}")
    if getattr(dt_low, "ndim", None) != len(lead) + 3:
        raise ValueError(f"{OP}: dt_low must be {list(lead) + ['batch', 'length', 'dt_rank']}, "
                         f"got shape {getattr(dt_low, 'shape', None)}")
    d_conv, rank = conv_w.shape[-2], dt_low.shape[-1]
    if d_conv < 1 or rank < 1:
        raise ValueError(f"{OP}: d_conv and dt_rank must be positive, got {d_conv} and {rank}")
    registry._check("conv_w", conv_w, lead + (d_conv, channels), OP)
    registry._check("conv_b", conv_b, lead + (channels,), OP)
    registry._check("dt_low", dt_low, lead + (batch, length, rank), OP)
    registry._check("dt_w", dt_w, lead + (rank, channels), OP)
    registry.validate_state_space(x.shape, A, B, C, D, z, delta_bias, lead, OP)


def _run(entry: str, backend: Any, args: tuple, composition):
    """`entry(*args)` of the first candidate backend that has it and runs, else
    `composition(candidate)` (the prologue in plain JAX, then that candidate's scan)."""
    reasons = []
    for name in registry.candidate_backends(backend):
        try:
            fused = getattr(registry._load(name), entry, None)
            if fused is not None:
                try:
                    return fused(*args)
                except NotImplementedError as e:
                    reasons.append(f"{name} (fused): {e}")
            return composition(name)
        except NotImplementedError as e:
            reasons.append(f"{name}: {e}")
    raise NotImplementedError(f"no backend could run {entry}: " + "; ".join(reasons))


def conv_selective_scan(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D=None, z=None, delta_bias=None,
                        reverse=False, backend=None):
    """One direction of Vim's mixer from its conv input on: the selective scan (softplus on delta,
    see `vim_jax.ops.selective_scan`) of

        u = silu(conv(x) + conv_b),        delta = dt_low @ dt_w

    where `conv` is the depthwise conv of kernel `d_conv` over tokens, causal in the scan's order:
    token t sees `x_{t-K+1..t}`, or `x_{t..t+K-1}` when `reverse` (tap 0 is the oldest in scan order).

    Args:
      x: `[batch, length, channels]`, the conv's input; z (optional gate): same shape.
      conv_w: `[d_conv, channels]`; conv_b: `[channels]`.
      dt_low: `[batch, length, dt_rank]` (the low-rank dt of the x projection); dt_w: `[dt_rank, channels]`.
      A, B, C, D, delta_bias, reverse: as for `selective_scan`.
      backend: as for `selective_scan`; a backend without a fused kernel for this op scans the
        prologue's u and delta (computed in plain JAX).

    Returns:
      `[batch, length, channels]` in x's dtype.
    """
    _validate(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias)
    reverse = bool(reverse)

    def composition(scan_backend):
        u, delta = conv_prologue(x, conv_w, conv_b, dt_low, dt_w, reverse)
        return registry.selective_scan(u, delta, A, B, C, D, z, delta_bias, True, reverse, backend=scan_backend)

    return _run("conv_selective_scan", backend, (x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias, reverse),
                composition)


def conv_selective_scan_bidirectional(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D=None, z=None,
                                      delta_bias=None, out_scale=0.5, backend=None):
    """Both directions of Vim's "v2" mixer from the shared conv input `x` on:
    `out_scale * (y_fwd + y_bwd) * silu(z)`.

    Every input but `x` and `z` carries a leading axis of size 2: index 0 convolves and scans
    first-to-last, index 1 last-to-first (its conv anti-causal), each with its own conv, dt
    projection, A, D and delta_bias, as `conv_selective_scan` and `selective_scan_bidirectional`.
    """
    _validate(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias, lead=(2,))

    def composition(scan_backend):
        u, delta = conv_prologue(x, conv_w, conv_b, dt_low, dt_w, (False, True))
        return registry.selective_scan_bidirectional(u, delta, A, B, C, D, z, delta_bias, True, out_scale,
                                                     backend=scan_backend)

    return _run("conv_selective_scan_bidirectional", backend,
                (x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias, out_scale), composition)
