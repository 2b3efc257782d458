"""The forward kernels: one warpgroup per (batch row, 128 channels, segment), one channel per thread.

Each thread keeps its channel's states and `A` in registers. Token tiles of u, delta, z and of B
and C (one float32 row of `[B | C]` per token) come into a ring of `stages` shared-memory slots by
TMA, each slot completing on its own barrier, so the token loop reads only shared memory:
`B_t` and `C_t` are scalar loads every thread makes at the same address (a broadcast). Outputs go
back through a shared-memory tile and TMA. Every copy has a static row count: the ragged last
tile (of the sequence, or of the last segment) is peeled off the loop, since the interpreter
allows no out-of-bounds TMA and stale rows must never enter the state.

With two directions the CTA scans direction 0 first, parking `scale * y_0` for every token of its
segment in shared memory (float32, `rows * 512` bytes), then direction 1, which adds its own,
applies the gate and writes `y` once. With `two_warpgroups` the two directions run at once in two
warpgroups, each parking the first half of its tiles and writing the half the other parked.

Long sequences are cut into segments along the grid (`segments.plan`), in two launches: the
summary pass scans every segment from a zero state and writes only its end state and its sum of
delta per channel (a segment's decay is `exp2(A2 * sum(delta))` per state); the output pass
chains the summaries of the segments before its own (in scan order) into its entry state, in
registers, then rescans its segment from there, writing `y`. Twice the exponentials, S times the
CTAs.

With a conv prologue (`Static.prologue`, the op `conv_selective_scan`) the ring brings rows of x
(shared by both directions) instead of u and delta, and dt_low at the end of each `[B | C]` row;
each thread computes its channel's u and delta per token (`prologue.py`), carrying the conv's
history across tiles. Everything else is the same kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.mosaic_scan import prologue as conv_prologue
from pallas_kernels.mosaic_scan import scan_math
from pallas_kernels.mosaic_scan.config import CHANNELS_PER_CTA, SMEM_BYTES, STATE_MULTIPLE, Static

F32 = jnp.float32
W = CHANNELS_PER_CTA


def smem_bytes(length: int, ndir: int, row_cols: int, act_itemsize: int, out_itemsize: int,
               has_z: bool, tile: int, stages: int, park_itemsize: int = 4, rings: int = 1,
               act_rows: int = 2) -> int:
    """Shared memory one CTA of the output pass takes for a segment of `length` tokens: the
    pipeline ring (one per warpgroup) and, with two directions, the parked halves of y.
    `row_cols`: float32 columns of a token's broadcast row; `act_rows`: 128-channel rows per token
    besides z (u and delta, or x alone with the conv prologue)."""
    tile = min(tile, length)
    n_vec = act_rows + int(has_z)
    ring = stages * tile * (n_vec * W * act_itemsize + row_cols * 4 + W * out_itemsize)
    park = (-(-length // tile) * tile * W * park_itemsize) if ndir == 2 else 0
    return rings * ring + park


def fits(*args, **kwargs) -> bool:
    """Whether `smem_bytes(*args, **kwargs)` is within what a block may use."""
    return smem_bytes(*args, **kwargs) <= SMEM_BYTES


def scan_forward(u, delta, z, bc, params, *, state: int, static: Static):
    """out [batch, length, channels_pad] in u's dtype.

    Args:
      u, delta: [ndir, batch, length, channels_pad] (channels_pad a multiple of 128); with
        `static.prologue`, u is x [batch, length, channels_pad] (both directions convolve it) and
        delta is None.
      z: [batch, length, channels_pad] or None.
      bc: [ndir, batch, length, 2 * state_pad] float32, `B` in columns [0, state_pad) and `C` in
        [state_pad, 2 * state_pad) (zero-padded: a copy of any row count is a multiple of 128 bytes);
        with the prologue, dt_low follows in [2 * state_pad, 2 * state_pad + rank_pad).
      params: [ndir, state + 2, channels_pad] float32: `A * log2(e)` (transposed), `D`, delta_bias;
        with the prologue, its taps, conv bias and W_dt rows follow (`prologue.py`).
      state: N, the number of states scanned (the columns of bc beyond it are padding).
      static: the call's settings; `static.seg_len` tokens per segment (0: the whole sequence).
    """
    length = u.shape[-2]
    seg_len = min(static.seg_len or length, length)
    n_seg = -(-length // seg_len)
    launch = functools.partial(_launch, u, delta, z, bc, params, state=state, static=static,
                               seg_len=seg_len, n_seg=n_seg)
    summary = launch(None, summary=True) if n_seg > 1 else None
    return launch(summary, summary=False)


def _launch(u, delta, z, bc, params, summary_in, *, state, static, seg_len, n_seg, summary):
    """One launch over the grid (batch, channel blocks[, segments]): the summary pass (`summary`:
    out [ndir, batch, segments, state + 1, channels_pad] float32, end states then sum of delta)
    or the output pass (entry states chained from `summary_in` when there are segments)."""
    ndir = len(static.revs)
    batch, length, channels = u.shape[-3:]
    cfg = static.cfg
    tile = min(cfg.tile, seg_len)
    stages = min(cfg.stages, -(-seg_len // tile))
    state_pad = -(-state // STATE_MULTIPLE) * STATE_MULTIPLE
    gate = static.has_z and not summary
    # Two warpgroups only without segments (with them the fused kernel is not the plan's choice).
    two_wg = cfg.two_warpgroups and ndir == 2 and not summary and n_seg == 1
    rings = 2 if two_wg else 1
    ring = lambda cols, dtype: tuple(plgpu.SMEM((stages, tile, cols), dtype) for _ in range(rings))
    park_dtype = u.dtype if cfg.park_in_output_dtype else F32
    scratch = dict(
        u=ring(W, u.dtype), d=None if delta is None else ring(W, delta.dtype), bc=ring(bc.shape[-1], F32),
        o=None if summary else ring(W, u.dtype),
        z=ring(W, z.dtype) if gate else None,
        meet=plgpu.Barrier(num_arrivals=2) if two_wg else None,  # both warpgroups parked their half
        park=plgpu.SMEM((-(-seg_len // tile) * tile, W), park_dtype) if ndir == 2 and not summary else None,
        summ=plgpu.SMEM((ndir, state + 1, W), F32) if summary else None,
        # One barrier per slot and direction; every copy into a slot arrives on it once.
        bars=[plgpu.Barrier(num_arrivals=2 + int(delta is not None) + int(gate and (two_wg or k == ndir - 1)),
                            num_barriers=stages)
              for k in range(ndir)],
    )
    if summary:
        out_type = jax.ShapeDtypeStruct((ndir, batch, n_seg, state + 1, channels), F32)
    else:
        out_type = jax.ShapeDtypeStruct((batch, length, channels), u.dtype)
    segmented = n_seg > 1
    body = functools.partial(_kernel, static=static, state=state, state_pad=state_pad, tile=tile,
                             seg_len=seg_len, n_seg=n_seg, stages=stages, summary=summary, gate=gate,
                             two_wg=two_wg)
    kernel = plgpu.kernel(
        body,
        out_type=out_type,
        scratch_types=scratch,
        grid=(batch, channels // W) + ((n_seg,) if segmented else ()),
        grid_names=("batch", "cblock") + (("seg",) if segmented else ()),
        compiler_params=plgpu.CompilerParams(
            approx_math=cfg.approx_math and not static.interpret,
            unsafe_no_auto_barriers=not cfg.auto_barriers,
            lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=_interpreter() if static.interpret else None,
        **(dict(num_threads=2, thread_name="wg") if two_wg else {}),
    )
    args = [u] + ([] if delta is None else [delta]) + ([z] if gate else []) + [bc, params]
    args += [summary_in] if segmented and not summary else []
    return kernel(*args)


def _interpreter():
    """The Mosaic GPU interpreter (simulated SMEM, TMA and barriers); jax exports it nowhere
    public, and the plain `interpret=True` discharge interpreter cannot run TMA copies."""
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

    return InterpretGPUParams()


def _kernel(*refs, static: Static, state, state_pad, tile, seg_len, n_seg, stages, summary, gate,
            two_wg, **smem):
    refs = list(refs)
    u_g = refs.pop(0)
    d_g = None if static.prologue else refs.pop(0)
    z_g = refs.pop(0) if gate else None
    bc_g, p_g = refs.pop(0), refs.pop(0)
    sum_g = refs.pop(0) if n_seg > 1 and not summary else None
    (out_g,) = refs
    length = u_g.shape[-2]
    seg = jax.lax.axis_index("seg") if n_seg > 1 else 0
    where = dict(b=jax.lax.axis_index("batch"), cols=pl.ds(jax.lax.axis_index("cblock") * W, W),
                 seg=seg, seg_start=seg * seg_len)
    ndir = len(static.revs)

    def run(rows):
        """The whole CTA for a segment of `rows` tokens (static)."""
        n_tiles = -(-rows // tile)
        shape = dict(n_tiles=n_tiles, tail=rows - (n_tiles - 1) * tile)
        for k, rev in enumerate(static.revs):
            scan = functools.partial(
                _direction, k, rev, _park_steps(k, n_tiles, ndir, summary, two_wg), static=static,
                state=state, state_pad=state_pad, tile=tile, stages=stages, n_seg=n_seg,
                summary=summary, gate=gate, ring=k if two_wg else 0, meet=two_wg, **shape, **where,
                u_g=u_g, d_g=d_g, z_g=z_g, bc_g=bc_g, p_g=p_g, sum_g=sum_g, out_g=out_g, smem=smem)
            if summary and n_seg > 1:  # the last segment in scan order: its summary is never used
                pl.when(seg != (0 if rev else n_seg - 1))(scan)
            elif two_wg:
                pl.when(jax.lax.axis_index("wg") == k)(scan)
            else:
                scan()

    last_rows = length - (n_seg - 1) * seg_len
    if n_seg == 1 or last_rows == seg_len:
        run(last_rows)
    else:  # the last segment is shorter: a second static body
        pl.when(seg < n_seg - 1)(lambda: run(seg_len))
        pl.when(seg == n_seg - 1)(lambda: run(last_rows))
    plgpu.wait_smem_to_gmem(0)


def _park_steps(k, n_tiles, ndir, summary, two_wg):
    """How many tiles direction k scans (in its order) before the ones it writes: in turn, all of
    direction 0 then none of direction 1; at once in two warpgroups, each its first half (split
    at a tile boundary, the same token for both)."""
    if summary or ndir == 1:
        return 0
    if two_wg:
        return n_tiles // 2 if k == 0 else n_tiles - n_tiles // 2
    return n_tiles if k == 0 else 0


def _entry_state(k, rev, A2, *, state, n_seg, b, cols, seg, sum_g, zero, fn):
    """The state entering segment `seg` of direction k: the summaries of the segments scanned
    before it, chained in scan order (`h <- exp2(A2 * sum(delta)) * h + h_end`)."""
    if sum_g is None:
        return tuple(zero for _ in range(state))

    def add(r, h):
        decay_sum = sum_g[k, b, r, state, cols]
        return tuple(fn.exp2(A2[n] * decay_sum) * h[n] + sum_g[k, b, r, n, cols] for n in range(state))

    h = tuple(zero for _ in range(state))
    if rev:  # segments n_seg - 1, ..., seg + 1
        return jax.lax.fori_loop(0, n_seg - 1 - seg, lambda i, h: add(n_seg - 1 - i, h), h)
    return jax.lax.fori_loop(0, seg, add, h)


def _direction(k, rev, park_steps, *, static, state, state_pad, tile, stages, n_seg, summary, gate,
               ring, meet, n_tiles, tail, b, cols, seg, seg_start, u_g, d_g, z_g, bc_g, p_g, sum_g, out_g,
               smem):
    """Scans direction k over the segment's tiles, in scan order: the first `park_steps` tiles
    park `scale * y` for the other direction, the rest write y (with the other's park added when
    there are two). The ragged tile (the last in token order) is peeled off the loop with its
    static row count."""
    ndir = len(static.revs)
    fn = scan_math.Funcs.of(static.cfg)
    bc_once = static.cfg.ablation == "bc_once"
    gate = gate and (meet or park_steps < n_tiles)  # z copied (as the slot barriers count it)
    bars = smem["bars"][k]
    ring_of = lambda name: smem[name][ring]
    A2 = [p_g[k, n, cols] for n in range(state)]
    D = p_g[k, state, cols]
    bias = p_g[k, state + 1, cols]
    pro = None if static.prologue is None else conv_prologue.Prologue(
        static.prologue, p_g, k, cols, first_row=state + 2, dt_col=2 * state_pad, fn=fn)
    tail_step = 0 if rev else n_tiles - 1  # the step (scan order) that meets the ragged tile

    def local_row(i):  # the tile's first row, counted from the segment's start
        return (n_tiles - 1 - i if rev else i) * tile

    def copy_in(i, slot, nrows):
        rows, dst = pl.ds(seg_start + local_row(i), nrows), pl.ds(0, nrows)
        bar = bars.at[slot]
        # With the prologue the "u" ring holds x, which both directions read.
        plgpu.copy_gmem_to_smem(u_g.at[b, rows, cols] if pro is not None else u_g.at[k, b, rows, cols],
                                ring_of("u").at[slot, dst], bar)
        if d_g is not None:
            plgpu.copy_gmem_to_smem(d_g.at[k, b, rows, cols], ring_of("d").at[slot, dst], bar)
        if gate:
            plgpu.copy_gmem_to_smem(z_g.at[b, rows, cols], ring_of("z").at[slot, dst], bar)
        plgpu.copy_gmem_to_smem(bc_g.at[k, b, rows, :], ring_of("bc").at[slot, dst], bar)

    def fetch(i, slot):
        """Starts the copies of step i's tile into `slot` (none past the last step)."""
        if isinstance(i, int):
            if i < n_tiles:
                copy_in(i, slot, tail if i == tail_step else tile)
            return
        if tail == tile:
            pl.when(i < n_tiles)(lambda: copy_in(i, slot, tile))
            return
        pl.when((i < n_tiles) & (i != tail_step))(lambda: copy_in(i, slot, tile))
        pl.when(i == tail_step)(lambda: copy_in(i, slot, tail))

    def step(i, carry, nrows, park):
        """Scans step i's tile (its first `nrows` rows are real) and refills its slot; `park`:
        y goes to the park instead of the output."""
        emit = not (summary or park)
        slot = i % stages if isinstance(i, int) else jax.lax.rem(i, stages)
        plgpu.barrier_wait(bars.at[slot])
        if emit:  # the output slot's previous TMA store must have read it
            plgpu.wait_smem_to_gmem(stages - 1, wait_read_only=True)
        u_s, bc_s = ring_of("u").at[slot], ring_of("bc").at[slot]
        d_s = None if pro is not None else ring_of("d").at[slot]
        h, delta_sum, hist = list(carry[0]), carry[1], carry[2]
        row0 = local_row(i)
        bc_at = lambda j, col: bc_s[j, col]
        if bc_once:  # the ablation: the tile's first row of B and C, loaded once, serves all its tokens
            first = {col: bc_s[0, col] for n in range(state) for col in (n, state_pad + n)}
            bc_at = lambda j, col: first[col]
        for j in (range(nrows - 1, -1, -1) if rev else range(nrows)):
            if pro is None:
                uu, raw = u_s[j].astype(F32), d_s[j].astype(F32)
            else:
                uu, raw, hist = pro.token(u_s[j].astype(F32), hist, lambda col: bc_s[j, col])
            dt = raw + bias
            if static.delta_softplus:
                dt = fn.softplus(dt)
            dtu = dt * uu
            if summary:  # end state and sum of delta only
                delta_sum = delta_sum + dt
                for n in range(state):
                    h[n] = fn.decay(dt * A2[n], n) * h[n] + dtu * bc_at(j, n)
                continue
            y = D * uu
            for n in range(state):
                h[n] = fn.decay(dt * A2[n], n) * h[n] + dtu * bc_at(j, n)
                y = y + h[n] * bc_at(j, state_pad + n)
            if park:  # for the other direction, which adds it
                smem["park"][row0 + j] = (static.scale * y).astype(smem["park"].dtype)
                continue
            if ndir == 2:
                y = smem["park"][row0 + j].astype(F32) + static.scale * y
            elif static.scale != 1.0:
                y = static.scale * y
            if gate:
                y = y * fn.silu(ring_of("z")[slot, j].astype(F32))
            ring_of("o")[slot, j] = y.astype(out_g.dtype)
        # Every thread is done with the slot (and its output writes are visible to TMA) before
        # the slot is stored and refilled.
        plgpu.commit_smem()
        if emit:
            plgpu.copy_smem_to_gmem(ring_of("o").at[slot, pl.ds(0, nrows)],
                                    out_g.at[b, pl.ds(seg_start + row0, nrows), cols])
        fetch(i + stages, slot)
        return tuple(h), delta_sum, hist

    for i in range(stages):
        fetch(i, i)
    # A zero in the strided layout of the loaded rows (a constant would be a splat, and the loop
    # carry's layout must not change).
    zero = D * 0.0
    h = _entry_state(k, rev, A2, state=state, n_seg=n_seg, b=b, cols=cols, seg=seg, sum_g=sum_g, zero=zero, fn=fn)
    hist = ()  # the conv's last inputs in scan order
    if pro is not None and n_seg == 1:
        hist = pro.zero_history(zero)
    elif pro is not None:  # the tokens before the segment's first in scan order
        rows = (n_tiles - 1) * tile + tail
        hist = pro.history(u_g, b, cols, seg_start + rows - 1 if rev else seg_start, -1 if rev else 1,
                           u_g.shape[-2])

    def steps(lo, hi, carry, park):
        """Steps [lo, hi) in scan order, the ragged one peeled."""
        if lo < hi and rev and lo == 0:
            carry, lo = step(0, carry, tail, park), 1
        end = hi - 1 if (not rev and hi == n_tiles and lo < hi) else hi
        if lo < end:
            carry = jax.lax.fori_loop(lo, end, lambda i, c: step(i, c, tile, park), carry)
        return step(n_tiles - 1, carry, tail, park) if end < hi else carry

    carry = steps(0, park_steps, (h, zero, hist), True)
    if meet:  # at once with the other direction: its park must be complete
        plgpu.barrier_arrive(smem["meet"])
        plgpu.barrier_wait(smem["meet"])
    carry = steps(park_steps, n_tiles, carry, False)
    if summary:  # end state, then sum of delta, to the summary rows of this segment
        h, delta_sum, _ = carry
        out = smem["summ"].at[k]
        for n in range(state):
            out[n] = h[n]
        out[state] = delta_sum
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(out, out_g.at[k, b, seg, :, cols])
