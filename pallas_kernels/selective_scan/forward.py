"""Forward kernels: the scan itself (one or both directions per program) and the segment summary.

Inputs carry a leading direction axis (size 1, or 2 for the fused bidirectional scan) except `z`.
One program = one batch row x one channel block x one segment; it walks the segment chunk by chunk
(`fori_loop`), and inside a chunk the `chunk` steps are unrolled with the per-channel loads of the
whole chunk issued first, so that memory latency overlaps the exponentials of earlier steps.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels.selective_scan import kernel_ops as ko
from pallas_kernels.selective_scan.tiling import Geometry, flat, launch, shape_dtype

F32 = jnp.float32


def scan_forward(zero, u, delta, A2, B, C, D, z, bias, h0, *, g: Geometry, revs, delta_softplus,
                 scale, save_states, interpret):
    """Runs the forward kernel.

    Args:
      zero: int32 [1] holding 0 (see `kernel_ops`).
      u, delta: [ndir, batch, length, channels]; A2: A * log2(e), [ndir, state_pad, channels_pad]
        float32; B, C: [ndir, batch, length, state_pad] float32 (zero-padded); D, bias: [ndir,
        channels]; z: [batch, length, channels] or None; h0: the state entering each segment,
        [ndir, batch, segments, state_pad, channels_pad], or None.
      revs: per direction, whether it scans last-to-first.
      scale: the factor on the sum of directions (bidirectional) or 1.
      save_states: also return the state entering every chunk (for the backward).

    Returns:
      (out [batch, length, channels] in u's dtype, stage or None, states or None). With two
      directions `stage` is `scale * y_fwd` in float32: the first direction's output, parked in
      memory until the second direction reaches the same token (the backward reuses it for dz).
    """
    ndir = len(revs)
    batch, length, channels = u.shape[1:]
    tokens = batch * length * channels
    out_shapes = [shape_dtype((tokens,), u.dtype)]
    if ndir == 2:
        out_shapes.append(shape_dtype((tokens,), F32))
    states_shape = (ndir, batch, g.n_segments, g.n_chunks, g.state_pad, g.channels_pad)
    if save_states:
        out_shapes.append(shape_dtype((math.prod(states_shape),), F32))
    kernel = functools.partial(
        _forward_kernel, g=g, revs=tuple(revs), has_z=z is not None, has_h0=h0 is not None,
        save_states=save_states, delta_softplus=delta_softplus, scale=scale, interpret=interpret)
    args = [zero] + flat(u, delta, A2, B, C, D, bias) + [x for x in flat(z, h0) if x is not None]
    outs = launch(kernel, grid=(batch, g.n_cblocks * g.n_segments), out_shape=out_shapes,
                  cfg=g.cfg, interpret=interpret, name="selective_scan_fwd")(*args)
    out = outs[0].reshape(batch, length, channels)
    stage = outs[1].reshape(batch, length, channels) if ndir == 2 else None
    states = outs[-1].reshape(states_shape) if save_states else None
    return out, stage, states


def _forward_kernel(*refs, g, revs, has_z, has_h0, save_states, delta_softplus, scale, interpret):
    refs = list(refs)
    zero_ref, u_ref, d_ref, A2_ref, B_ref, C_ref, D_ref, bias_ref = refs[:8]
    rest = refs[8:]
    z_ref = rest.pop(0) if has_z else None
    h0_ref = rest.pop(0) if has_h0 else None
    out_ref = rest.pop(0)
    stage_ref = rest.pop(0) if len(revs) == 2 else None
    ck_ref = rest.pop(0) if save_states else None
    T = g.cfg.chunk
    fast = g.cfg.fast_math and not interpret

    for d, rev in enumerate(revs):
        kd = jnp.int32(d)
        blk = ko.locate(g, rev, zero_ref)
        A2, D, bias = ko.load_params(blk, kd, A2_ref, D_ref, bias_ref)
        if has_h0:
            h = ko.load_tile(h0_ref, blk.seg_row(kd), blk)
        else:
            h = jnp.zeros((g.state_pad, g.cfg.block_c), F32)
        # With two directions the first parks scale*y in `stage`; the second adds its own and gates.
        first_of_two = len(revs) == 2 and d == 0
        second_of_two = len(revs) == 2 and d == 1

        def chunk_body(k, h, kd=kd, blk=blk, A2=A2, D=D, bias=bias,
                       first_of_two=first_of_two, second_of_two=second_of_two):
            steps = []
            # The chunk's per-channel loads first (B_t and C_t rows are loaded where they are
            # used: every thread holds whole rows, 2 * state_pad registers a step).
            for j in range(T):
                t, valid = blk.token(k * T + j)
                live = blk.cmask & valid
                row, srow = blk.tok_row(kd, t), blk.shared_row(t)
                ld = dict(row=row, srow=srow, live=live,
                          u=ko.load(blk.vec(u_ref, row), live),
                          d=ko.load(blk.vec(d_ref, row), live))
                if has_z and not first_of_two:
                    ld["z"] = ko.load(blk.vec(z_ref, srow), live)
                if second_of_two:
                    ld["stage"] = ko.load(blk.vec(stage_ref, srow), live)
                steps.append(ld)
            if save_states:
                ko.store_tile(ck_ref, blk.seg_row(kd) * g.n_chunks + k, blk, h)
            for ld in steps:
                Bt = ko.load(blk.state_row(B_ref, ld["row"]))
                Ct = ko.load(blk.state_row(C_ref, ld["row"]))
                dt, _ = ko.delta_of(ld["d"], bias, ld["live"], delta_softplus, fast)
                a = ko.exp2(dt[None, :] * A2, interpret)
                h = a * h + (dt * ld["u"])[None, :] * Bt[:, None]
                y = jnp.sum(h * Ct[:, None], axis=0) + D * ld["u"]
                if first_of_two:
                    ko.store(blk.vec(stage_ref, ld["srow"]), scale * y, ld["live"])
                    continue
                if second_of_two:
                    y = ld["stage"] + scale * y
                elif scale != 1.0:
                    y = scale * y
                if has_z:
                    y = y * ko.gate(ld["z"], fast)[0]
                ko.store(blk.vec(out_ref, ld["srow"]), y, ld["live"])
            return h

        jax.lax.fori_loop(0, g.n_chunks, chunk_body, h)
        if first_of_two and not interpret:
            # Order this program's `stage` writes before the second direction reads them back.
            plgpu.debug_barrier()


def segment_summary(zero, u, delta, A2, B, bias, *, g: Geometry, revs, delta_softplus, interpret):
    """Per segment and direction, the state reached from a zero state, and the sum of delta.

    Returns (h_end [ndir, batch, segments, state_pad, channels_pad], delta_sum [ndir, batch,
    segments, channels_pad]), both float32; `segments.entry_states` turns them into entry states.
    """
    ndir = len(revs)
    batch = u.shape[1]
    shapes = [(ndir, batch, g.n_segments, g.state_pad, g.channels_pad),
              (ndir, batch, g.n_segments, g.channels_pad)]
    kernel = functools.partial(_summary_kernel, g=g, revs=tuple(revs),
                               delta_softplus=delta_softplus, interpret=interpret)
    outs = launch(kernel, grid=(batch, g.n_cblocks * g.n_segments, ndir),
                  out_shape=[shape_dtype((math.prod(s),), F32) for s in shapes],
                  cfg=g.cfg, interpret=interpret, name="selective_scan_fwd_summary")(
                      zero, *flat(u, delta, A2, B, bias))
    return [o.reshape(s) for o, s in zip(outs, shapes)]


def _summary_kernel(zero_ref, u_ref, d_ref, A2_ref, B_ref, bias_ref, hend_ref, dsum_ref, *, g, revs,
                    delta_softplus, interpret):
    kd = pl.program_id(2)  # the direction is a grid axis here: nothing to combine
    rev = revs[0] if len(revs) == 1 else kd == 1
    blk = ko.locate(g, rev, zero_ref)
    A2, _, bias = ko.load_params(blk, kd, A2_ref, bias_ref, bias_ref)
    T = g.cfg.chunk
    fast = g.cfg.fast_math and not interpret

    def chunk_body(k, carry):
        h, dsum = carry
        steps = []
        for j in range(T):
            t, valid = blk.token(k * T + j)
            live = blk.cmask & valid
            row = blk.tok_row(kd, t)
            steps.append((row, live, ko.load(blk.vec(u_ref, row), live), ko.load(blk.vec(d_ref, row), live)))
        for row, live, u, d in steps:
            Bt = ko.load(blk.state_row(B_ref, row))
            dt, _ = ko.delta_of(d, bias, live, delta_softplus, fast)
            h = ko.exp2(dt[None, :] * A2, interpret) * h + (dt * u)[None, :] * Bt[:, None]
            dsum = dsum + dt
        return h, dsum

    init = (jnp.zeros((g.state_pad, g.cfg.block_c), F32), jnp.zeros((g.cfg.block_c,), F32))
    h, dsum = jax.lax.fori_loop(0, g.n_chunks, chunk_body, init)
    ko.store_tile(hend_ref, blk.seg_row(kd), blk, h)
    ko.store(blk.vec(dsum_ref, blk.seg_row(kd), g.channels_pad), dsum)
