"""Backward kernels: chunk-by-chunk recompute-and-reverse, and the adjoint's segment summary.

For each chunk, last to first, a program reloads the state saved at the chunk's entry, re-runs the
chunk forward keeping the `chunk` states that precede each step in registers (never in memory),
then walks it backwards with the adjoint `lam_t = dy_t C_t + a_{t+1} lam_{t+1}`:

    du_t     = delta_t (lam_t . B_t) + D dy_t
    ddelta_t = [u_t (lam_t . B_t) + sum_n A lam_t a_t h_{t-1}] * softplus'(raw_t)
    dA      += delta_t lam_t a_t h_{t-1}             dB_t = sum_c lam_t delta_t u_t
    dC_t     = sum_c dy_t h_t                         dD  += dy_t u_t

The decay a_t is recomputed in the reverse walk rather than kept (registers hold the states).
Sums over channels (dB, dC) cross the program's lanes (`reductions.py`) and leave it as one
partial per channel block; sums over tokens and batch (dA, dD, d delta_bias) leave it as one
partial per batch row and segment; XLA adds the partials up (`vjp.py`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.selective_scan import kernel_ops as ko
from pallas_kernels.selective_scan import reductions
from pallas_kernels.selective_scan.tiling import LN2, Geometry, flat, launch, shape_dtype

F32 = jnp.float32


def scan_backward(zero, u, delta, A2, B, C, D, z, bias, dout, states, lam0, stage, *, g: Geometry,
                  revs, delta_softplus, scale, interpret):
    """Runs the backward kernel (one program per batch row, segment x channel block, direction).

    Arguments as `forward.scan_forward`, plus `dout` [batch, length, channels], `states` (the
    forward's chunk entry states), `lam0` (the adjoint entering each segment from the one scanned
    after it; None with one segment) and `stage` (the bidirectional forward's parked
    `scale * y_fwd`; None with one direction). Returns (du, ddelta, dz or None, and float32
    partials of dB, dC [ndir, cblocks, batch, length, state_pad], dA [ndir, batch, segments,
    state_pad, channels_pad], dD and d delta_bias [ndir, batch, segments, channels_pad]).
    """
    ndir = len(revs)
    batch = u.shape[1]
    shapes, dtypes = output_layout(u, delta, z, g, ndir)
    kernel = functools.partial(
        _backward_kernel, g=g, revs=tuple(revs), has_z=z is not None, has_lam0=lam0 is not None,
        delta_softplus=delta_softplus, scale=scale, interpret=interpret)
    args = [zero] + flat(u, delta, A2, B, C, D, bias, dout, states)
    args += [x for x in flat(z, lam0, stage) if x is not None]
    outs = launch(kernel, grid=(batch, g.n_cblocks * g.n_segments, ndir),
                  out_shape=[shape_dtype((math.prod(s),), d) for s, d in zip(shapes, dtypes)],
                  cfg=g.cfg, interpret=interpret, name="selective_scan_bwd")(*args)
    outs = [o.reshape(s) for o, s in zip(outs, shapes)]
    du, dd, dBp, dCp, dAp, dDp, dbp = outs[:7]
    dz = outs[7] if z is not None else None
    return du, dd, dz, dBp, dCp, dAp, dDp, dbp


def output_layout(u, delta, z, g: Geometry, ndir: int):
    """(shapes, dtypes) of the backward kernel's outputs: du, ddelta, the partials of dB, dC, dA,
    dD, d delta_bias (see `scan_backward`), then dz if z is not None."""
    batch, length = u.shape[1:3]
    P = (ndir, batch, g.n_segments)
    shapes = [u.shape, delta.shape,
              (ndir, g.n_cblocks, batch, length, g.state_pad),
              (ndir, g.n_cblocks, batch, length, g.state_pad),
              P + (g.state_pad, g.channels_pad), P + (g.channels_pad,), P + (g.channels_pad,)]
    dtypes = [u.dtype, delta.dtype] + [F32] * 5
    if z is not None:
        shapes.append(z.shape)
        dtypes.append(z.dtype)
    return shapes, dtypes


def _direction(revs):
    kd = pl.program_id(2)
    rev = revs[0] if len(revs) == 1 else kd == 1
    return kd, rev


def _backward_kernel(*refs, g, revs, has_z, has_lam0, delta_softplus, scale, interpret):
    refs = list(refs)
    zero_ref, u_ref, d_ref, A2_ref, B_ref, C_ref, D_ref, bias_ref, dout_ref, ck_ref = refs[:10]
    rest = refs[10:]
    z_ref = rest.pop(0) if has_z else None
    lam0_ref = rest.pop(0) if has_lam0 else None
    stage_ref = rest.pop(0) if len(revs) == 2 else None
    du_ref, dd_ref, dB_ref, dC_ref, dA_ref, dD_ref, db_ref = rest[:7]
    dz_ref = rest[7] if has_z else None

    kd, rev = _direction(revs)
    blk = ko.locate(g, rev, zero_ref)
    A2, D, bias = ko.load_params(blk, kd, A2_ref, D_ref, bias_ref)
    T = g.cfg.chunk
    fast = g.cfg.fast_math and not interpret
    # dz needs both directions' outputs: the last direction adds its own to the parked first one.
    writes_dz = kd == len(revs) - 1
    mode = g.cfg.reduce
    if not reductions.shfl_supported(g.cfg.block_c, g.cfg.num_warps, g.state_pad):
        mode = "tree"
    channel_sums = functools.partial(reductions.store_channel_sums, mode=mode,
                                     num_warps=g.cfg.num_warps, interpret=interpret)

    def chunk_body(i, carry):
        lam_next, dA_acc, dD_acc, db_acc = carry
        k = g.n_chunks - 1 - i
        h = ko.load_tile(ck_ref, blk.seg_row(kd) * g.n_chunks + k, blk)
        steps = []
        for j in range(T):
            t, valid = blk.token(k * T + j)
            live = blk.cmask & valid
            row, srow = blk.tok_row(kd, t), blk.shared_row(t)
            ld = dict(t=t, row=row, srow=srow, valid=valid, live=live,
                      u=ko.load(blk.vec(u_ref, row), live),
                      d=ko.load(blk.vec(d_ref, row), live),
                      dout=ko.load(blk.vec(dout_ref, srow), live))
            if has_z:
                ld["z"] = ko.load(blk.vec(z_ref, srow), live)
            if stage_ref is not None:
                ld["stage"] = ko.load(blk.vec(stage_ref, srow), live & writes_dz)
            steps.append(ld)

        # Forward over the chunk: the states before each step, dy, dz and dC.
        h_before = []
        for ld in steps:
            Bt = ko.load(blk.state_row(B_ref, ld["row"]))
            dt, dgrad = ko.delta_of(ld["d"], bias, ld["live"], delta_softplus, fast)
            ld["dt"], ld["dgrad"] = dt, dgrad
            h_before.append(h)
            h = ko.exp2(dt[None, :] * A2, interpret) * h + (dt * ld["u"])[None, :] * Bt[:, None]
            dy = ld["dout"] * scale
            if has_z:
                silu, dsilu = ko.gate(ld["z"], fast)
                Ct = ko.load(blk.state_row(C_ref, ld["row"]))
                y = jnp.sum(h * Ct[:, None], axis=0) + D * ld["u"]
                y_total = scale * y + ld["stage"] if stage_ref is not None else scale * y
                ko.store(blk.vec(dz_ref, ld["srow"]), ld["dout"] * y_total * dsilu,
                         ld["live"] & writes_dz)
                dy = dy * silu
            ld["dy"] = dy
            channel_sums(dC_ref, blk.part_row(kd, ld["t"]), dy[None, :] * h, ld["valid"])

        # Backward over the chunk. B_t and C_t are read again where used (every thread holds
        # whole rows: keeping them would cost 2 * state_pad * chunk registers); they hit L1.
        for j in reversed(range(T)):
            ld = steps[j]
            Bt = ko.load(blk.state_row(B_ref, ld["row"]))
            Ct = ko.load(blk.state_row(C_ref, ld["row"]))
            dt, u, dy = ld["dt"], ld["u"], ld["dy"]
            a = ko.exp2(dt[None, :] * A2, interpret)
            lam = lam_next + dy[None, :] * Ct[:, None]
            s = lam * a * h_before[j]  # d loss / d (delta_t A), per state
            lam_B = jnp.sum(lam * Bt[:, None], axis=0)
            ko.store(blk.vec(du_ref, ld["row"]), dt * lam_B + D * dy, ld["live"])
            dd = (u * lam_B + jnp.sum(s * A2, axis=0) * LN2) * ld["dgrad"]
            ko.store(blk.vec(dd_ref, ld["row"]), dd, ld["live"])
            channel_sums(dB_ref, blk.part_row(kd, ld["t"]), lam * (dt * u)[None, :], ld["valid"])
            dA_acc = dA_acc + s * dt[None, :]
            dD_acc = dD_acc + dy * u
            db_acc = db_acc + dd
            lam_next = a * lam
        return lam_next, dA_acc, dD_acc, db_acc

    zeros_tile = jnp.zeros((g.state_pad, g.cfg.block_c), F32)
    zeros_vec = jnp.zeros((g.cfg.block_c,), F32)
    lam_in = ko.load_tile(lam0_ref, blk.seg_row(kd), blk) if has_lam0 else zeros_tile
    _, dA_acc, dD_acc, db_acc = jax.lax.fori_loop(
        0, g.n_chunks, chunk_body, (lam_in, zeros_tile, zeros_vec, zeros_vec))
    ko.store_tile(dA_ref, blk.seg_row(kd), blk, dA_acc)
    ko.store(blk.vec(dD_ref, blk.seg_row(kd), g.channels_pad), dD_acc)
    ko.store(blk.vec(db_ref, blk.seg_row(kd), g.channels_pad), db_acc)


def adjoint_summary(zero, delta, A2, C, z, bias, dout, *, g: Geometry, revs, delta_softplus, scale,
                    interpret):
    """Per segment and direction, `a_first * lam_first` of the adjoint run over the segment from
    zero: [ndir, batch, segments, state_pad, channels_pad] float32 (`segments.entry_adjoints`)."""
    ndir = len(revs)
    batch = delta.shape[1]
    shape = (ndir, batch, g.n_segments, g.state_pad, g.channels_pad)
    kernel = functools.partial(_adjoint_summary_kernel, g=g, revs=tuple(revs), has_z=z is not None,
                               delta_softplus=delta_softplus, scale=scale, interpret=interpret)
    args = [zero] + flat(delta, A2, C, bias, dout) + ([z.reshape(-1)] if z is not None else [])
    out = launch(kernel, grid=(batch, g.n_cblocks * g.n_segments, ndir),
                 out_shape=shape_dtype((math.prod(shape),), F32),
                 cfg=g.cfg, interpret=interpret, name="selective_scan_bwd_summary")(*args)
    return out.reshape(shape)


def _adjoint_summary_kernel(*refs, g, revs, has_z, delta_softplus, scale, interpret):
    zero_ref, d_ref, A2_ref, C_ref, bias_ref, dout_ref = refs[:6]
    z_ref = refs[6] if has_z else None
    out_ref = refs[-1]
    kd, rev = _direction(revs)
    blk = ko.locate(g, rev, zero_ref)
    A2, _, bias = ko.load_params(blk, kd, A2_ref, bias_ref, bias_ref)
    T = g.cfg.chunk
    fast = g.cfg.fast_math and not interpret

    def chunk_body(i, lam_next):
        k = g.n_chunks - 1 - i
        steps = []
        for j in reversed(range(T)):
            t, valid = blk.token(k * T + j)
            live = blk.cmask & valid
            row, srow = blk.tok_row(kd, t), blk.shared_row(t)
            steps.append((row, live,
                          ko.load(blk.vec(d_ref, row), live),
                          ko.load(blk.vec(dout_ref, srow), live),
                          ko.load(blk.vec(z_ref, srow), live) if has_z else None))
        for row, live, d, dout, z in steps:
            Ct = ko.load(blk.state_row(C_ref, row))
            dt, _ = ko.delta_of(d, bias, live, delta_softplus, fast)
            dy = dout * scale
            if has_z:
                dy = dy * ko.gate(z, fast)[0]
            lam_next = ko.exp2(dt[None, :] * A2, interpret) * (lam_next + dy[None, :] * Ct[:, None])
        return lam_next

    lam = jax.lax.fori_loop(0, g.n_chunks, chunk_body, jnp.zeros((g.state_pad, g.cfg.block_c), F32))
    ko.store_tile(out_ref, blk.seg_row(kd), blk, lam)
