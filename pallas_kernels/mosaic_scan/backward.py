"""The backward kernel: one warpgroup per (direction, batch row, 128 channels), one channel per
thread, states recomputed rather than stored.

Pass 1 scans the sequence forwards and writes the state entering every segment of
`ckpt_chunks` chunks of `bwd_chunk` tokens to an HBM scratch output (each thread reads back only
what it wrote itself, so no synchronisation is needed). Pass 2 takes the segments last to first:
it rescans the segment, putting each chunk's entry state in shared memory (again each thread its
own column), then takes the segment's chunks last to first: it recomputes the chunk's states
from its entry state, keeping them in registers, then runs the adjoint back through the chunk,

    lam_t    = dy_t C_t + exp(delta_{t+1} A) lam_{t+1}      (per state, lam after the last = 0)
    du_t     = delta_t (lam_t . B_t) + D dy_t
    ddelta_t = [u_t (lam_t . B_t) + sum_n A_n s_t,n] softplus'(raw_t),   s_t = lam_t a_t h_{t-1}
    dA      += delta_t s_t      dD += dy_t u_t      d bias += ddelta_t
    dB_t     = sum_c lam_t delta_t u_t                dC_t = sum_c dy_t h_t

with dy_t = scale dout_t silu(z_t) and dz_t = scale dout_t y_t silu'(z_t) for this direction's
y_t = C_t . h_t + D u_t (two directions' dz add up in XLA). Per-channel sums (dA, dD, d bias)
stay in registers until the end. dB and dC are sums over the channels, i.e. over the threads:
each thread writes its chunk's 2 N terms per token into its own column of a shared-memory tile
`[rows, 129]` (row = token x term), and after a barrier thread i sums rows i, i + 128, ... by
reading them column by column (the row pitch of 129 words puts the 32 lanes of a warp in 32
banks). One partial per channel block leaves the kernel; XLA adds them up.

Inputs are read straight from global memory, token by token (one coalesced row of 128 channels,
and B_t, C_t as scalars every thread loads at one address), and outputs written the same way.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.mosaic_scan import scan_math
from pallas_kernels.mosaic_scan.config import CHANNELS_PER_CTA, SMEM_BYTES, Static
from pallas_kernels.mosaic_scan.forward import _interpreter

F32 = jnp.float32
W = CHANNELS_PER_CTA
LN2 = math.log(2.0)
SUM_UNROLL = 8  # columns added per iteration of the channel-sum loop


def reduction_rows(chunk: int, state: int) -> int:
    """Rows of the channel-sum tile: 2 N terms per token of a chunk, rounded up to whole
    thread counts (each thread sums rows i, i + 128, ...)."""
    return -(-chunk * 2 * state // W) * W


def supported(u_shape, state: int, static: Static) -> bool:
    """Whether the kernel should run this call, u being [ndir, batch, length, channels] (else the
    VJP falls back to another backend's)."""
    cfg = static.cfg
    ndir, batch, _, channels = u_shape
    ctas = ndir * batch * -(-channels // W)
    smem = (reduction_rows(cfg.bwd_chunk, state) * (W + 1) + cfg.ckpt_chunks * state * W) * 4
    return cfg.mosaic_backward and ctas >= cfg.bwd_min_ctas and smem <= SMEM_BYTES


def scan_backward(u, delta, z, dout, bc, params, *, state: int, static: Static):
    """Gradients of one Mosaic scan call with respect to its kernel-side operands.

    Args:
      u, delta: [ndir, batch, length, channels_pad] (channels_pad a multiple of 128).
      z: [batch, length, channels_pad] or None; dout: [batch, length, channels_pad].
      bc: [ndir, batch, length, 2 * state_pad] float32, B in columns [0, state) and C in
        [state_pad, state_pad + state) (the forward's operand).
      params: [ndir, state + 2, channels_pad] float32: `A * log2(e)` (transposed), D, delta_bias.

    Returns:
      du, ddelta [ndir, batch, length, channels_pad] in u's and delta's dtypes; dz
      [batch, length, channels_pad] float32 (both directions' terms added) or None;
      [dB | dC] [ndir, batch, length, 2 * state] float32; [dA; dD; d delta_bias]
      [ndir, state + 2, channels_pad] float32 (dA with respect to A itself, not A * log2(e)).
    """
    ndir, batch, length, channels = u.shape
    cfg = static.cfg
    chunk = min(cfg.bwd_chunk, length)
    n_chunks = -(-length // chunk)
    rows = reduction_rows(chunk, state)
    ckpt = min(cfg.ckpt_chunks, n_chunks)
    n_segs = -(-n_chunks // ckpt)
    cblocks = channels // W
    act = lambda dtype: jax.ShapeDtypeStruct((ndir, batch, length, channels), dtype)
    out_type = [act(u.dtype), act(delta.dtype)]
    if static.has_z:  # two directions' terms are added in XLA, so in float32
        out_type.append(act(z.dtype if ndir == 1 else F32))
    out_type += [jax.ShapeDtypeStruct((ndir, cblocks, batch, n_chunks, rows), F32),
                 jax.ShapeDtypeStruct((ndir, batch, state + 2, channels), F32),
                 # scratch: the state entering every segment (pass 1 writes, pass 2 reads)
                 jax.ShapeDtypeStruct((ndir, batch, n_segs, state, channels), F32)]
    body = functools.partial(_kernel, static=static, state=state, state_pad=bc.shape[-1] // 2,
                             chunk=chunk, n_chunks=n_chunks, rows=rows)
    kernel = plgpu.kernel(
        body,
        out_type=tuple(out_type),
        scratch_types=dict(red=plgpu.SMEM((rows, W + 1), F32), entries=plgpu.SMEM((ckpt, state, W), F32)),
        grid=(ndir, batch, cblocks),
        grid_names=("dir", "batch", "cblock"),
        compiler_params=plgpu.CompilerParams(
            approx_math=cfg.approx_math and not static.interpret,
            # Every thread touches only its own column of `red` except in the channel sums,
            # which have their barriers (`commit_smem`) on both sides.
            unsafe_no_auto_barriers=True,
            lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=_interpreter() if static.interpret else None,
    )
    args = [u, delta] + ([z] if static.has_z else []) + [dout, bc, params]
    outs = list(kernel(*args))
    du, dd = outs.pop(0), outs.pop(0)
    dz = outs.pop(0).sum(0, dtype=F32) if static.has_z else None
    dbc, dp, _ = outs
    # Rows back to tokens: chunk-major scan positions, the ragged end cut, reversed scans flipped.
    terms = dbc.sum(1)[..., :chunk * 2 * state].reshape(ndir, batch, n_chunks * chunk, 2 * state)
    terms = jnp.stack([terms[i, :, length - 1::-1] if rev else terms[i, :, :length]
                       for i, rev in enumerate(static.revs)])
    return du, dd, dz, terms, dp.sum(1)


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _kernel(*refs, static: Static, state, state_pad, chunk, n_chunks, rows, red, entries):
    refs = list(refs)
    u_g, d_g = refs.pop(0), refs.pop(0)
    z_g = refs.pop(0) if static.has_z else None
    dout_g, bc_g, p_g = refs.pop(0), refs.pop(0), refs.pop(0)
    du_g, dd_g = refs.pop(0), refs.pop(0)
    dz_g = refs.pop(0) if static.has_z else None
    dbc_g, dp_g, ck_g = refs
    length = u_g.shape[2]
    S = state
    K = entries.shape[0]  # chunks per segment
    n_segs = -(-n_chunks // K)
    k = jax.lax.axis_index("dir")
    b = jax.lax.axis_index("batch")
    cb = jax.lax.axis_index("cblock")
    cols = pl.ds(cb * W, W)
    A2 = [p_g[k, n, cols] for n in range(S)]
    D = p_g[k, S, cols]
    bias = p_g[k, S + 1, cols]
    zero = D * 0.0  # a zero vector in the layout of the loaded rows (a constant would be a splat)

    def token(p):
        """Token index of scan position p (direction 1 of a pair scans last to first)."""
        if len(static.revs) == 2:
            return p + k * (length - 1 - 2 * p)
        return length - 1 - p if static.revs[0] else p

    def inputs(p, adjoint=True):
        """Scan position p's token and per-channel values (only those of the state's recurrence
        unless `adjoint`)."""
        t = token(p)
        raw = d_g[k, b, t, cols].astype(F32) + bias
        v = dict(t=t, u=u_g[k, b, t, cols].astype(F32))
        v["dt"] = scan_math.softplus(raw) if static.delta_softplus else raw
        if not adjoint:
            return v
        v["dgrad"] = _sigmoid(raw) if static.delta_softplus else None
        v["dout"] = v["dy"] = dout_g[b, t, cols].astype(F32) * static.scale
        if static.has_z:
            zz = z_g[b, t, cols].astype(F32)
            sig = _sigmoid(zz)
            v["dy"] = v["dout"] * zz * sig
            v["dsilu"] = sig * (1.0 + zz * (1.0 - sig))
        return v

    B_of = lambda t: [bc_g[k, b, t, n] for n in range(S)]
    C_of = lambda t: [bc_g[k, b, t, state_pad + n] for n in range(S)]

    def advance(h, v, Bt):
        """h_t from h_{t-1}."""
        dtu = v["dt"] * v["u"]
        return [jnp.exp2(v["dt"] * A2[n]) * h[n] + dtu * Bt[n] for n in range(S)]

    # Pass 1: the state entering every segment of `ckpt_chunks` chunks (HBM). Only the last
    # chunk in scan order can be ragged, and the last segment's own steps are not needed here.
    def run_chunk(c, h):
        for j in range(chunk):
            v = inputs(c * chunk + j, adjoint=False)
            h = advance(h, v, B_of(v["t"]))
        return h

    def save_entry(g, h):
        for n in range(S):
            ck_g[k, b, g, n, cols] = h[n]

    def entry_segment(g, h):
        save_entry(g, h)
        return jax.lax.fori_loop(g * K, (g + 1) * K, run_chunk, h)

    h = jax.lax.fori_loop(0, n_segs - 1, entry_segment, [zero] * S)
    save_entry(n_segs - 1, h)

    # Pass 2: segments last to first; in each, the chunks' entry states go to shared memory
    # (each thread its own column), then the chunks are walked last to first.
    def chunk_back(c, steps, h, carry):
        lam, dA, dD, db = carry
        vs = [inputs(c * chunk + j) for j in range(steps)]  # the loads first, ahead of the stores
        h_before = []
        for j, v in enumerate(vs):  # recompute the chunk: states, dz, dC terms
            h_before.append(h)
            h = advance(h, v, B_of(v["t"]))
            if static.has_z:  # dz needs this direction's y_t
                y = D * v["u"]
                for n, c_n in enumerate(C_of(v["t"])):
                    y = y + h[n] * c_n
                dz_g[k, b, v["t"], cols] = (v["dout"] * y * v["dsilu"]).astype(dz_g.dtype)
            for n in range(S):
                red[j * 2 * S + S + n, pl.ds(0, W)] = v["dy"] * h[n]
        for j in reversed(range(steps)):  # the adjoint back through it
            v = vs[j]
            t, dt, uu, dy = v["t"], v["dt"], v["u"], v["dy"]
            Bt, Ct = B_of(t), C_of(t)
            a = [jnp.exp2(dt * A2[n]) for n in range(S)]
            lam = [lam[n] + dy * Ct[n] for n in range(S)]
            s = [lam[n] * a[n] * h_before[j][n] for n in range(S)]
            lam_B, s_A = zero, zero
            for n in range(S):
                lam_B = lam_B + lam[n] * Bt[n]
                s_A = s_A + s[n] * A2[n]
            du_g[k, b, t, cols] = (dt * lam_B + D * dy).astype(du_g.dtype)
            ddt = uu * lam_B + s_A * LN2
            dd = ddt * v["dgrad"] if v["dgrad"] is not None else ddt
            dd_g[k, b, t, cols] = dd.astype(dd_g.dtype)
            dtu = dt * uu
            for n in range(S):
                red[j * 2 * S + n, pl.ds(0, W)] = lam[n] * dtu
            dA = [dA[n] + s[n] * dt for n in range(S)]
            dD = dD + dy * uu
            db = db + dd
            lam = [a[n] * lam[n] for n in range(S)]
        _channel_sums(red, rows, dbc_g.at[k, cb, b, c], zero)
        return lam, dA, dD, db

    def segment_back(g, n_ch, last_steps, carry):
        """Segment g of n_ch chunks, the last of which has last_steps steps (all static)."""
        def put(i, h):
            for n in range(S):
                entries[i, n, pl.ds(0, W)] = h[n]

        def entry(i, h):
            h = run_chunk(g * K + i, h)
            put(i + 1, h)
            return h

        h = [ck_g[k, b, g, n, cols] for n in range(S)]
        put(0, h)
        jax.lax.fori_loop(0, n_ch - 1, entry, h)
        back = lambda i, steps, cr: chunk_back(g * K + i, steps, [entries[i, n, pl.ds(0, W)] for n in range(S)], cr)
        full = n_ch if last_steps == chunk else n_ch - 1
        if full < n_ch:
            carry = back(n_ch - 1, last_steps, carry)
        return jax.lax.fori_loop(0, full, lambda i, cr: back(full - 1 - i, chunk, cr), carry)

    carry = ([zero] * S, [zero] * S, zero, zero)
    carry = segment_back(n_segs - 1, n_chunks - (n_segs - 1) * K, length - (n_chunks - 1) * chunk, carry)
    carry = jax.lax.fori_loop(0, n_segs - 1, lambda i, cr: segment_back(n_segs - 2 - i, K, chunk, cr), carry)
    _, dA, dD, db = carry
    for n in range(S):
        dp_g[k, b, n, cols] = dA[n]
    dp_g[k, b, S, cols] = dD
    dp_g[k, b, S + 1, cols] = db


def _channel_sums(red, rows, out, zero):
    """out[r] = sum over the columns of row r of `red`, for every row r (thread i sums rows
    i, i + 128, ...)."""
    plgpu.commit_smem()  # every thread's rows are written (a warpgroup barrier)
    for q in range(rows // W):
        block = pl.ds(q * W, W)

        def add(g, acc):
            for i in range(SUM_UNROLL):
                acc = acc + red[block, g * SUM_UNROLL + i]
            return acc

        out[block] = jax.lax.fori_loop(0, W // SUM_UNROLL, add, zero)
    plgpu.commit_smem()  # every thread has read them before the next chunk overwrites them
