"""The four kernel launchers of `vjp.Kernels`, on the Triton kernels of `kernels.py`.

Same signatures, arguments and result layouts as the Pallas launchers (`pallas_kernels/
selective_scan/forward.py` and `backward.py`, whose docstrings give every shape), so that the
custom VJP, the segment chaining and the partial sums of `pallas_kernels.selective_scan.vjp` run
unchanged. `interpret=True` runs the kernels in Triton's interpreter instead of on a GPU.
Absent optional arrays travel as 1-element placeholders that the kernels never touch.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from pallas_kernels.selective_scan import reductions
from pallas_kernels.selective_scan.backward import output_layout
from pallas_kernels.selective_scan.tiling import Geometry, flat, shape_dtype
from pallas_kernels.triton_scan import launch

F32 = jnp.float32
_PLACEHOLDER = shape_dtype((1,), F32)


def _placeholder(x):
    return jnp.zeros((1,), F32) if x is None else x.reshape(-1)


def _call(kernel_name, args, out_shapes, g: Geometry, grid, interpret, **meta):
    call = launch.interpret_call if interpret else launch.triton_call
    return call(kernel_name, args, out_shapes, grid=grid, num_warps=g.cfg.num_warps,
                num_stages=g.cfg.num_stages, **meta)


def _meta(g: Geometry, revs, delta_softplus):
    """The compile-time constants every kernel takes."""
    return dict(BATCH=g.batch, LENGTH=g.length, CHANNELS=g.channels, S=g.state_pad, CH_PAD=g.channels_pad,
                BLOCK_C=g.cfg.block_c, CHUNK=g.cfg.chunk, N_CBLOCKS=g.n_cblocks, SEG_LEN=g.seg_len,
                N_SEGMENTS=g.n_segments, N_CHUNKS=g.n_chunks, NDIR=len(revs), REV0=bool(revs[0]),
                SOFTPLUS=bool(delta_softplus), FAST=bool(g.cfg.fast_math))


def scan_forward(zero, u, delta, A2, B, C, D, z, bias, h0, *, g: Geometry, revs, delta_softplus,
                 scale, save_states, interpret):
    """As `pallas_kernels.selective_scan.forward.scan_forward`."""
    ndir = len(revs)
    batch, length, channels = u.shape[1:]
    tokens = batch * length * channels
    states_shape = (ndir, batch, g.n_segments, g.n_chunks, g.state_pad, g.channels_pad)
    out_shapes = [shape_dtype((tokens,), u.dtype),
                  shape_dtype((tokens,), F32) if ndir == 2 else _PLACEHOLDER,
                  shape_dtype((math.prod(states_shape),), F32) if save_states else _PLACEHOLDER]
    args = [zero] + flat(u, delta, A2, B, C, D, bias) + [_placeholder(z), _placeholder(h0)]
    out, stage, states = _call(
        "forward_kernel", args, out_shapes, g, (batch, g.n_cblocks * g.n_segments), interpret,
        **_meta(g, revs, delta_softplus), HAS_Z=z is not None, HAS_H0=h0 is not None,
        SAVE=bool(save_states), SCALE=float(scale))
    return (out.reshape(batch, length, channels),
            stage.reshape(batch, length, channels) if ndir == 2 else None,
            states.reshape(states_shape) if save_states else None)


def segment_summary(zero, u, delta, A2, B, bias, *, g: Geometry, revs, delta_softplus, interpret):
    """As `pallas_kernels.selective_scan.forward.segment_summary`."""
    ndir, batch = len(revs), u.shape[1]
    shapes = [(ndir, batch, g.n_segments, g.state_pad, g.channels_pad), (ndir, batch, g.n_segments, g.channels_pad)]
    outs = _call("summary_kernel", [zero] + flat(u, delta, A2, B, bias),
                 [shape_dtype((math.prod(s),), F32) for s in shapes], g,
                 (batch, g.n_cblocks * g.n_segments, ndir), interpret, **_meta(g, revs, delta_softplus))
    return [o.reshape(s) for o, s in zip(outs, shapes)]


def scan_backward(zero, u, delta, A2, B, C, D, z, bias, dout, states, lam0, stage, *, g: Geometry,
                  revs, delta_softplus, scale, interpret):
    """As `pallas_kernels.selective_scan.backward.scan_backward`."""
    ndir, batch = len(revs), u.shape[1]
    shapes, dtypes = output_layout(u, delta, z, g, ndir)
    out_shapes = [shape_dtype((math.prod(s),), d) for s, d in zip(shapes, dtypes)]
    if z is None:
        out_shapes.append(_PLACEHOLDER)
    args = [zero] + flat(u, delta, A2, B, C, D, bias, dout, states)
    args += [_placeholder(z), _placeholder(lam0), _placeholder(stage)]
    shfl = g.cfg.reduce == "shfl" and reductions.shfl_supported(g.cfg.block_c, g.cfg.num_warps, g.state_pad)
    outs = _call("backward_kernel", args, out_shapes, g, (batch, g.n_cblocks * g.n_segments, ndir), interpret,
                 **_meta(g, revs, delta_softplus), LOG_S=g.state_pad.bit_length() - 1,
                 HAS_Z=z is not None, HAS_LAM0=lam0 is not None, SCALE=float(scale), SHFL=shfl,
                 NUM_WARPS=g.cfg.num_warps)
    du, dd, dBp, dCp, dAp, dDp, dbp = [o.reshape(s) for o, s in zip(outs[:7], shapes)]
    dz = outs[7].reshape(z.shape) if z is not None else None
    return du, dd, dz, dBp, dCp, dAp, dDp, dbp


def adjoint_summary(zero, delta, A2, C, z, bias, dout, *, g: Geometry, revs, delta_softplus, scale,
                    interpret):
    """As `pallas_kernels.selective_scan.backward.adjoint_summary`."""
    ndir, batch = len(revs), delta.shape[1]
    shape = (ndir, batch, g.n_segments, g.state_pad, g.channels_pad)
    [out] = _call("adjoint_summary_kernel", [zero] + flat(delta, A2, C, bias, dout) + [_placeholder(z)],
                  [shape_dtype((math.prod(shape),), F32)], g, (batch, g.n_cblocks * g.n_segments, ndir),
                  interpret, **_meta(g, revs, delta_softplus), HAS_Z=z is not None, SCALE=float(scale))
    return out.reshape(shape)
