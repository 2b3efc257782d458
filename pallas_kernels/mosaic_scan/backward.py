"""The backward kernel: one warpgroup per (direction, batch row, 128 channels[, segment]), one
channel per thread, states recomputed rather than stored.

Pass 1 scans the sequence forwards and writes the state entering every checkpoint group of
`ckpt_chunks` chunks of `bwd_chunk` tokens to an HBM scratch output (each thread reads back only
what it wrote itself, so no synchronisation is needed). Pass 2 takes the groups last to first:
it rescans the group, putting each chunk's entry state in shared memory (again each thread its
own column), then takes the group's chunks last to first: it recomputes the chunk's states
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

Long sequences with few CTAs can be cut into segments along the grid (`bwd_segments`), in two
launches. The summary launch scans every segment from zero twice: forwards for its end state,
backwards for the adjoint it hands to the segment before it, and sums its delta (the decay over a
segment is `exp2(A2 * sum(delta))` for both). The main launch chains the summaries of the
segments before its own into its entry state and of those after it into its incoming adjoint,
then runs both passes over its segment; its per-channel sums are partials that XLA adds up.

Inputs are read straight from global memory, token by token (one coalesced row of 128 channels,
and B_t, C_t as scalars every thread loads at one address), and outputs written the same way.
With `bwd_stage_bc` each chunk's B and C rows are first staged in shared memory by one coalesced
load (an element per thread), between two warpgroup barriers, and read from there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.mosaic_scan import scan_math, segments
from pallas_kernels.mosaic_scan.config import CHANNELS_PER_CTA, SMEM_BYTES, Static
from pallas_kernels.mosaic_scan.forward import _interpreter

F32 = jnp.float32
W = CHANNELS_PER_CTA
LN2 = math.log(2.0)
SUM_UNROLL = 8  # columns added per iteration of the channel-sum loop


def stage_rows(chunk: int, state_pad: int, cfg) -> int:
    """Floats of one chunk's `[B | C]` rows staged in shared memory (`bwd_stage_bc`), or 0 where
    they are read from global memory (off, or a block that is not whole thread counts)."""
    rows = chunk * 2 * state_pad
    return rows if cfg.bwd_stage_bc and rows % W == 0 else 0


def reduction_rows(chunk: int, state: int) -> int:
    """Rows of the channel-sum tile: 2 N terms per token of a chunk, rounded up to whole
    thread counts (each thread sums rows i, i + 128, ...)."""
    return -(-chunk * 2 * state // W) * W


def segment_len(length: int, ctas: int, quantum: int, cfg) -> int:
    """Tokens per backward segment (a multiple of `quantum`, or the whole sequence), for a call of
    `ctas` CTAs before cutting: `cfg.bwd_segments`, or with 0 as many as `segments.count` plans."""
    n_seg = cfg.bwd_segments or segments.count(length, ctas, cfg)
    return segments.segment_len(length, n_seg, quantum)


def _plan(length: int, ctas: int, cfg):
    """(chunk, chunks per checkpoint group, tokens per segment) of a call."""
    chunk = min(cfg.bwd_chunk, length)
    group = min(cfg.ckpt_chunks, -(-length // chunk))
    return chunk, group, segment_len(length, ctas, chunk * group, cfg)


def supported(u_shape, state: int, static: Static) -> bool:
    """Whether the kernel should run this call, u being [ndir, batch, length, channels] (else the
    VJP falls back to another backend's)."""
    cfg = static.cfg
    ndir, batch, length, channels = u_shape
    ctas = ndir * batch * -(-channels // W)
    _, _, seg_len = _plan(length, ctas, cfg)
    smem = (reduction_rows(cfg.bwd_chunk, state) * (W + 1) + cfg.ckpt_chunks * state * W) * 4
    return cfg.mosaic_backward and ctas * -(-length // seg_len) >= cfg.bwd_min_ctas and smem <= SMEM_BYTES


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
    cblocks = channels // W
    chunk, group, seg_len = _plan(length, ndir * batch * cblocks, cfg)
    n_chunks = -(-length // chunk)
    n_seg = -(-length // seg_len)
    rows = reduction_rows(chunk, state)
    act = lambda dtype: jax.ShapeDtypeStruct((ndir, batch, length, channels), dtype)
    out_type = [act(u.dtype), act(delta.dtype)]
    if static.has_z:  # two directions' terms are added in XLA, so in float32
        out_type.append(act(z.dtype if ndir == 1 else F32))
    out_type += [jax.ShapeDtypeStruct((ndir, cblocks, batch, n_chunks, rows), F32),
                 jax.ShapeDtypeStruct((ndir, batch, n_seg, state + 2, channels), F32),
                 # scratch: the state entering every checkpoint group (pass 1 writes, pass 2 reads)
                 jax.ShapeDtypeStruct((ndir, batch, -(-n_chunks // group), state, channels), F32)]
    state_pad = bc.shape[-1] // 2
    shape = dict(static=static, state=state, state_pad=state_pad, chunk=chunk, seg_len=seg_len, n_seg=n_seg)
    staged = stage_rows(chunk, state_pad, cfg)
    grid = dict(grid=(ndir, batch, cblocks) + ((n_seg,) if n_seg > 1 else ()),
                grid_names=("dir", "batch", "cblock") + (("seg",) if n_seg > 1 else ()))
    args = [u, delta] + ([z] if static.has_z else []) + [dout, bc, params]
    if n_seg > 1:
        summary = plgpu.kernel(
            functools.partial(_summary_kernel, **shape),
            out_type=jax.ShapeDtypeStruct((ndir, batch, n_seg, 2 * state + 1, channels), F32),
            **grid, **_compiler(static))
        args.append(summary(*args))
    scratch = dict(red=plgpu.SMEM((rows, W + 1), F32), entries=plgpu.SMEM((group, state, W), F32))
    if staged:  # token rows flattened, `chunk` zero rows either side: every chunk's block is in bounds
        args.append(jnp.pad(bc, ((0, 0), (0, 0), (chunk, chunk), (0, 0))).reshape(ndir, batch, -1))
        scratch["stage"] = plgpu.SMEM((staged,), F32)
    kernel = plgpu.kernel(
        functools.partial(_kernel, **shape, n_chunks=n_chunks, rows=rows, staged=staged),
        out_type=tuple(out_type), scratch_types=scratch, **grid, **_compiler(static))
    outs = list(kernel(*args))
    du, dd = outs.pop(0), outs.pop(0)
    dz = outs.pop(0).sum(0, dtype=F32) if static.has_z else None
    dbc, dp, _ = outs
    # Rows back to tokens: chunk-major scan positions, the ragged end cut, reversed scans flipped.
    terms = dbc.sum(1)[..., :chunk * 2 * state].reshape(ndir, batch, n_chunks * chunk, 2 * state)
    terms = jnp.stack([terms[i, :, length - 1::-1] if rev else terms[i, :, :length]
                       for i, rev in enumerate(static.revs)])
    return du, dd, dz, terms, dp.sum((1, 2))


def _compiler(static: Static) -> dict:
    return dict(
        compiler_params=plgpu.CompilerParams(
            approx_math=static.cfg.approx_math and not static.interpret,
            # Every thread touches only its own column of `red` except in the channel sums,
            # which have their barriers (`commit_smem`) on both sides.
            unsafe_no_auto_barriers=True,
            lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=_interpreter() if static.interpret else None)


class _Lanes:
    """One CTA's view of the inputs: its direction k, batch row b and 128 channels (one per
    thread), the per-channel parameters in registers, and the recurrence of the states."""

    def __init__(self, static: Static, state: int, state_pad: int, u_g, d_g, z_g, dout_g, bc_g, p_g):
        self.static, self.S, self.state_pad = static, state, state_pad
        self.u_g, self.d_g, self.z_g, self.dout_g, self.bc_g = u_g, d_g, z_g, dout_g, bc_g
        self.length = u_g.shape[2]
        self.k = jax.lax.axis_index("dir")
        self.b = jax.lax.axis_index("batch")
        self.cb = jax.lax.axis_index("cblock")
        self.cols = pl.ds(self.cb * W, W)
        self.A2 = [p_g[self.k, n, self.cols] for n in range(state)]
        self.D = p_g[self.k, state, self.cols]
        self.bias = p_g[self.k, state + 1, self.cols]
        self.zero = self.D * 0.0  # a zero vector in the layout of the loaded rows (a constant would be a splat)
        self.fn = scan_math.Funcs.of(static.cfg)
        self.stage = None  # B and C read from global memory (see `stage_from`)
        # The "bc_once" ablation: the first token's B and C, loaded once, serve every token.
        self.bc_first = None
        if static.cfg.ablation == "bc_once":
            self.bc_first = [bc_g[self.k, self.b, 0, col] for col in list(range(state)) +
                             list(range(state_pad, state_pad + state))]  # B then C

    def token(self, p):
        """Token index of scan position p (direction 1 of a pair scans last to first)."""
        revs, last = self.static.revs, self.length - 1
        if len(revs) == 2:
            return p + self.k * (last - 2 * p)
        return last - p if revs[0] else p

    def inputs(self, p, state=True, adjoint=True):
        """Scan position p's token and per-channel values: those of the state's recurrence (u,
        delta) if `state`, those of the adjoint's (dy and the derivatives) if `adjoint`."""
        t, k, b, cols, static = self.token(p), self.k, self.b, self.cols, self.static
        raw = self.d_g[k, b, t, cols].astype(F32) + self.bias
        v = dict(t=t, dt=self.fn.softplus(raw) if static.delta_softplus else raw)
        if state:
            v["u"] = self.u_g[k, b, t, cols].astype(F32)
        if not adjoint:
            return v
        v["dgrad"] = self.fn.sigmoid(raw) if static.delta_softplus else None
        v["dout"] = v["dy"] = self.dout_g[b, t, cols].astype(F32) * static.scale
        if static.has_z:
            zz = self.z_g[b, t, cols].astype(F32)
            sig = self.fn.sigmoid(zz)
            v["dy"] = v["dout"] * zz * sig
            v["dsilu"] = sig * (1.0 + zz * (1.0 - sig))
        return v

    def stage_from(self, flat_g, stage, chunk):
        """Reads B and C from `stage` (shared memory), filled per chunk by `load_chunk` from
        `flat_g` ([ndir, batch, (chunk + length + chunk) * 2 state_pad], the rows flattened)."""
        self.flat_g, self.stage, self.chunk, self.t_lo = flat_g, stage, chunk, None

    def load_chunk(self, c):
        """Stages chunk c's `[B | C]` rows (in token order; the chunk at scan positions
        c * chunk, ...): one coalesced load of one element per thread and block of 128."""
        if self.stage is None:
            return
        first = self.token(c * self.chunk)
        revs = self.static.revs
        backwards = self.k if len(revs) == 2 else int(revs[0])  # its tokens run down from `first`
        self.t_lo = first - backwards * (self.chunk - 1)
        start = (self.t_lo + self.chunk) * 2 * self.state_pad
        plgpu.commit_smem()  # every thread has read the previous chunk's rows
        for q in range(self.stage.shape[0] // W):
            self.stage[pl.ds(q * W, W)] = self.flat_g[self.k, self.b, pl.ds(start + q * W, W)]
        plgpu.commit_smem()  # and every thread's element of this chunk's is written

    def _bc(self, t, col):
        if self.bc_first is not None:
            return self.bc_first[col if col < self.S else self.S + col - self.state_pad]
        if self.stage is not None:
            return self.stage[(t - self.t_lo) * (2 * self.state_pad) + col]
        return self.bc_g[self.k, self.b, t, col]

    def B_of(self, t):
        return [self._bc(t, n) for n in range(self.S)]

    def C_of(self, t):
        return [self._bc(t, self.state_pad + n) for n in range(self.S)]

    def decay(self, v):
        return [self.fn.decay(v["dt"] * self.A2[n], n) for n in range(self.S)]

    def advance(self, h, v):
        """h_t from h_{t-1}."""
        return self.advance_with_decay(h, v)[0]

    def advance_with_decay(self, h, v):
        """(h_t from h_{t-1}, the decays exp2(delta_t A) it applied)."""
        dtu = v["dt"] * v["u"]
        a, Bt = self.decay(v), self.B_of(v["t"])
        return [a[n] * h[n] + dtu * Bt[n] for n in range(self.S)], a

    def chain(self, summ_g, segs, row):
        """Summaries `row` (the end states, or the adjoints) of segments `segs(i)`, i = 0, 1, ...,
        chained from zero: x <- exp2(A2 * sum(delta)) x + x_end, one segment at a time."""
        S, k, b, cols = self.S, self.k, self.b, self.cols

        def add(i, x):
            r = segs(i)
            delta_sum = summ_g[k, b, r, 2 * S, cols]
            return [self.fn.exp2(self.A2[n] * delta_sum) * x[n] + summ_g[k, b, r, row + n, cols] for n in range(S)]
        return add


def _split_refs(refs, static: Static):
    """The input refs of both kernels, in `scan_backward`'s order, and what follows them."""
    refs = list(refs)
    u_g, d_g = refs.pop(0), refs.pop(0)
    z_g = refs.pop(0) if static.has_z else None
    dout_g, bc_g, p_g = refs.pop(0), refs.pop(0), refs.pop(0)
    return (u_g, d_g, z_g, dout_g, bc_g, p_g), refs


def _by_segment(run, *, length, seg_len, n_seg, seg):
    """run(rows) for this CTA's segment (`rows` its static token count: only the last segment
    in scan order can be shorter)."""
    last_rows = length - (n_seg - 1) * seg_len
    if n_seg == 1 or last_rows == seg_len:
        run(last_rows)
    else:
        pl.when(seg < n_seg - 1)(lambda: run(seg_len))
        pl.when(seg == n_seg - 1)(lambda: run(last_rows))


def _summary_kernel(*refs, static: Static, state, state_pad, chunk, seg_len, n_seg):
    """Per segment, from zero: the end state of a forward scan, the adjoint carried out of its
    first position by a backward scan (`lam` after its `exp2(delta A)`), and the sum of delta."""
    ins, (summ_g,) = _split_refs(refs, static)
    lanes = _Lanes(static, state, state_pad, *ins)
    S, k, b, cols = state, lanes.k, lanes.b, lanes.cols
    seg = jax.lax.axis_index("seg")

    def run(rows):
        p0 = seg * seg_len

        def forwards(lo, steps, carry):
            h, delta_sum = carry
            for j in range(steps):
                v = lanes.inputs(p0 + lo + j, adjoint=False)
                h, delta_sum = lanes.advance(h, v), delta_sum + v["dt"]
            return h, delta_sum

        def backwards(hi, steps, lam):
            for j in range(steps):
                v = lanes.inputs(p0 + hi - 1 - j, state=False)
                a, Ct = lanes.decay(v), lanes.C_of(v["t"])
                lam = [a[n] * (lam[n] + v["dy"] * Ct[n]) for n in range(S)]
            return lam

        full, tail = rows // chunk, rows % chunk
        carry = jax.lax.fori_loop(0, full, lambda i, c: forwards(i * chunk, chunk, c), ([lanes.zero] * S, lanes.zero))
        h, delta_sum = forwards(full * chunk, tail, carry)
        lam = backwards(rows, tail, [lanes.zero] * S)
        lam = jax.lax.fori_loop(0, full, lambda i, c: backwards((full - i) * chunk, chunk, c), lam)
        for n in range(S):
            summ_g[k, b, seg, n, cols] = h[n]
            summ_g[k, b, seg, S + n, cols] = lam[n]
        summ_g[k, b, seg, 2 * S, cols] = delta_sum

    _by_segment(run, length=lanes.length, seg_len=seg_len, n_seg=n_seg, seg=seg)


def _kernel(*refs, static: Static, state, state_pad, chunk, seg_len, n_seg, n_chunks, rows, staged, red, entries,
            stage=None):
    ins, outs = _split_refs(refs, static)
    summ_g = outs.pop(0) if n_seg > 1 else None  # the summary launch's output
    flat_g = outs.pop(0) if staged else None  # [B | C] rows flattened, for the stage
    du_g, dd_g = outs.pop(0), outs.pop(0)
    dz_g = outs.pop(0) if static.has_z else None
    dbc_g, dp_g, ck_g = outs
    lanes = _Lanes(static, state, state_pad, *ins)
    if staged:
        lanes.stage_from(flat_g, stage, chunk)
    S, k, b, cols, zero, D = state, lanes.k, lanes.b, lanes.cols, lanes.zero, lanes.D
    A2 = lanes.A2
    K = entries.shape[0]  # chunks per checkpoint group
    seg = jax.lax.axis_index("seg") if n_seg > 1 else 0
    chunks_per_seg = seg_len // chunk

    def run_chunk(c, h):
        lanes.load_chunk(c)
        for j in range(chunk):
            h = lanes.advance(h, lanes.inputs(c * chunk + j, adjoint=False))
        return h

    def save_entry(g, h):
        for n in range(S):
            ck_g[k, b, g, n, cols] = h[n]

    def chunk_back(c, steps, h, carry):
        lam, dA, dD, db = carry
        lanes.load_chunk(c)
        vs = [lanes.inputs(c * chunk + j) for j in range(steps)]  # the loads first, ahead of the stores
        h_before, decays = [], []
        for j, v in enumerate(vs):  # recompute the chunk: states, dz, dC terms
            h_before.append(h)
            h, a = lanes.advance_with_decay(h, v)
            decays.append(a if static.cfg.bwd_keep_decays else None)
            if static.has_z:  # dz needs this direction's y_t
                y = D * v["u"]
                for n, c_n in enumerate(lanes.C_of(v["t"])):
                    y = y + h[n] * c_n
                dz_g[k, b, v["t"], cols] = (v["dout"] * y * v["dsilu"]).astype(dz_g.dtype)
            for n in range(S):
                red[j * 2 * S + S + n, pl.ds(0, W)] = v["dy"] * h[n]
        for j in reversed(range(steps)):  # the adjoint back through it
            v = vs[j]
            t, dt, uu, dy = v["t"], v["dt"], v["u"], v["dy"]
            Bt, Ct = lanes.B_of(t), lanes.C_of(t)
            a = decays[j] or lanes.decay(v)
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
        if static.cfg.ablation != "no_sums":
            _channel_sums(red, rows, dbc_g.at[k, lanes.cb, b, c], zero)
        return lam, dA, dD, db

    def run(seg_rows):
        """The segment's two passes (seg_rows tokens, static)."""
        n_ch = -(-seg_rows // chunk)
        last_steps = seg_rows - (n_ch - 1) * chunk
        n_groups = -(-n_ch // K)
        c0 = seg * chunks_per_seg  # the segment's first chunk, and its first checkpoint group
        g0 = seg * (chunks_per_seg // K)

        # Pass 1: the state entering every checkpoint group of `K` chunks (HBM), from the
        # segment's entry state. Only the last chunk in scan order can be ragged, and the last
        # group's own steps are not needed here.
        if summ_g is None:
            h = [zero] * S
        else:  # the end states of the segments before this one, chained
            h = jax.lax.fori_loop(0, seg, lanes.chain(summ_g, lambda i: i, 0), [zero] * S)

        def entry_group(i, h):
            save_entry(g0 + i, h)
            return jax.lax.fori_loop(0, K, lambda j, h: run_chunk(c0 + i * K + j, h), h)

        h = jax.lax.fori_loop(0, n_groups - 1, entry_group, h)
        save_entry(g0 + n_groups - 1, h)

        # Pass 2: groups last to first; in each, the chunks' entry states go to shared memory
        # (each thread its own column), then the chunks are walked last to first.
        def group_back(g, n_ch_g, steps_g, carry):
            """Group g (of the segment) of n_ch_g chunks, the last of which has steps_g steps (static)."""
            first = c0 + g * K

            def put(i, h):
                for n in range(S):
                    entries[i, n, pl.ds(0, W)] = h[n]

            def entry(i, h):
                h = run_chunk(first + i, h)
                put(i + 1, h)
                return h

            h = [ck_g[k, b, g0 + g, n, cols] for n in range(S)]
            if n_ch_g == 1:  # the entry state is the chunk's: no round trip through shared memory
                return chunk_back(first, steps_g, h, carry)
            put(0, h)
            jax.lax.fori_loop(0, n_ch_g - 1, entry, h)
            back = lambda i, steps, cr: chunk_back(first + i, steps, [entries[i, n, pl.ds(0, W)] for n in range(S)], cr)
            full = n_ch_g if steps_g == chunk else n_ch_g - 1
            if full < n_ch_g:
                carry = back(n_ch_g - 1, steps_g, carry)
            return jax.lax.fori_loop(0, full, lambda i, cr: back(full - 1 - i, chunk, cr), carry)

        if summ_g is None:
            lam = [zero] * S
        else:  # the adjoints of the segments after this one, chained from the last
            lam = jax.lax.fori_loop(0, n_seg - 1 - seg, lanes.chain(summ_g, lambda i: n_seg - 1 - i, S), [zero] * S)
        carry = (lam, [zero] * S, zero, zero)
        carry = group_back(n_groups - 1, n_ch - (n_groups - 1) * K, last_steps, carry)
        carry = jax.lax.fori_loop(0, n_groups - 1, lambda i, cr: group_back(n_groups - 2 - i, K, chunk, cr), carry)
        _, dA, dD, db = carry
        for n in range(S):
            dp_g[k, b, seg, n, cols] = dA[n]
        dp_g[k, b, seg, S, cols] = dD
        dp_g[k, b, seg, S + 1, cols] = db

    _by_segment(run, length=lanes.length, seg_len=seg_len, n_seg=n_seg, seg=seg)


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
