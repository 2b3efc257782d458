"""The forward kernel: one warpgroup per (batch row, 128 channels), one channel per thread.

Each thread keeps its channel's states and `A` in registers. Token tiles of u, delta, z and of B
and C (one float32 row of `[B | C]` per token) come into a ring of `stages` shared-memory slots by
TMA, each slot completing on its own barrier, so the token loop reads only shared memory:
`B_t` and `C_t` are scalar loads every thread makes at the same address (a broadcast). Outputs go
back through a shared-memory tile and TMA. TMA fills rows past the sequence's end with zeros and
clips the stores, so a ragged last tile needs no masking: a zero `u` and `B` leave a zero state
zero, which is all the reverse direction sees before its first real token.

With two directions the CTA scans direction 0 first, parking `scale * y_0` for every token in
shared memory (float32, `L * 512` bytes), then direction 1, which adds its own, applies the gate
and writes `y` once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.mosaic_scan import scan_math
from pallas_kernels.mosaic_scan.config import CHANNELS_PER_CTA, SMEM_BYTES, Static

F32 = jnp.float32
W = CHANNELS_PER_CTA


def smem_bytes(length: int, ndir: int, state_cols: int, act_itemsize: int, out_itemsize: int,
               has_z: bool, tile: int, stages: int, park_itemsize: int = 4) -> int:
    """Shared memory one CTA takes: the pipeline ring and, with two directions, the parked y_0."""
    tile = min(tile, length)
    n_vec = 2 + int(has_z)
    ring = stages * tile * (n_vec * W * act_itemsize + state_cols * 4 + W * out_itemsize)
    park = (-(-length // tile) * tile * W * park_itemsize) if ndir == 2 else 0
    return ring + park


def fits(*args, **kwargs) -> bool:
    """Whether `smem_bytes(*args, **kwargs)` is within what a block may use."""
    return smem_bytes(*args, **kwargs) <= SMEM_BYTES


def scan_forward(u, delta, z, bc, params, *, state: int, static: Static):
    """out [batch, length, channels_pad] in u's dtype.

    Args:
      u, delta: [ndir, batch, length, channels_pad] (channels_pad a multiple of 128).
      z: [batch, length, channels_pad] or None.
      bc: [ndir, batch, length, 2 * state_pad] float32, `B` in columns [0, state_pad) and `C` in
        [state_pad, 2 * state_pad) (zero-padded: TMA rows must be multiples of 16 bytes).
      params: [ndir, state + 2, channels_pad] float32: `A * log2(e)` (transposed), `D`, delta_bias.
      state: N, the number of states scanned (the columns of bc beyond it are padding).
    """
    ndir, batch, length, channels = u.shape
    cfg = static.cfg
    tile = min(cfg.tile, length)
    n_tiles = -(-length // tile)
    stages = min(cfg.stages, n_tiles)
    state_pad = bc.shape[-1] // 2
    ring = lambda cols, dtype: plgpu.SMEM((stages, tile, cols), dtype)
    scratch = dict(
        u=ring(W, u.dtype), d=ring(W, delta.dtype), bc=ring(2 * state_pad, F32), o=ring(W, u.dtype),
        z=ring(W, z.dtype) if static.has_z else None,
        park=plgpu.SMEM((n_tiles * tile, W), u.dtype if cfg.park_in_output_dtype else F32)
        if ndir == 2 else None,
        # One barrier per slot and direction; every copy into a slot arrives on it once.
        bars=[plgpu.Barrier(num_arrivals=3 + int(static.has_z and k == ndir - 1), num_barriers=stages)
              for k in range(ndir)],
    )
    body = functools.partial(_kernel, static=static, state=state, state_pad=state_pad, tile=tile,
                             n_tiles=n_tiles, stages=stages)
    kernel = plgpu.kernel(
        body,
        out_type=jax.ShapeDtypeStruct((batch, length, channels), u.dtype),
        scratch_types=scratch,
        grid=(batch, channels // W),
        grid_names=("batch", "cblock"),
        compiler_params=plgpu.CompilerParams(
            approx_math=cfg.approx_math and not static.interpret,
            unsafe_no_auto_barriers=not cfg.auto_barriers,
            lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=_interpreter() if static.interpret else None,
    )
    args = [u, delta] + ([z] if static.has_z else []) + [bc, params]
    return kernel(*args)


def _interpreter():
    """The Mosaic GPU interpreter (simulated SMEM, TMA and barriers); jax exports it nowhere
    public, and the plain `interpret=True` discharge interpreter cannot run TMA copies."""
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

    return InterpretGPUParams()


def _kernel(*refs, static: Static, state, state_pad, tile, n_tiles, stages, **smem):
    refs = list(refs)
    u_g, d_g = refs.pop(0), refs.pop(0)
    z_g = refs.pop(0) if static.has_z else None
    bc_g, p_g, out_g = refs
    length = u_g.shape[2]
    tail = length - (n_tiles - 1) * tile  # rows of the last tile in token order (static)
    b = jax.lax.axis_index("batch")
    cols = pl.ds(jax.lax.axis_index("cblock") * W, W)
    ndir = len(static.revs)

    for k, rev in enumerate(static.revs):
        _direction(k, rev, k == ndir - 1, static=static, state=state, state_pad=state_pad,
                   tile=tile, tail=tail, n_tiles=n_tiles, stages=stages, b=b, cols=cols,
                   u_g=u_g, d_g=d_g, z_g=z_g, bc_g=bc_g, p_g=p_g, out_g=out_g, smem=smem)
    plgpu.wait_smem_to_gmem(0)


def _direction(k, rev, last, *, static, state, state_pad, tile, tail, n_tiles, stages, b, cols,
               u_g, d_g, z_g, bc_g, p_g, out_g, smem):
    """Scans direction k over all tiles. Tiles are taken in scan order; the ragged tile (the last
    in token order) is peeled off the loop with its static row count, since the interpreter
    allows no out-of-bounds TMA and stale rows must never enter the state."""
    ndir = len(static.revs)
    gate = static.has_z and last
    bars = smem["bars"][k]
    A2 = [p_g[k, n, cols] for n in range(state)]
    D = p_g[k, state, cols]
    bias = p_g[k, state + 1, cols]
    tail_step = 0 if rev else n_tiles - 1  # the step (scan order) that meets the ragged tile

    def first_row(i):
        return (n_tiles - 1 - i if rev else i) * tile

    def copy_in(i, slot, nrows):
        rows, dst = pl.ds(first_row(i), nrows), pl.ds(0, nrows)
        bar = bars.at[slot]
        plgpu.copy_gmem_to_smem(u_g.at[k, b, rows, cols], smem["u"].at[slot, dst], bar)
        plgpu.copy_gmem_to_smem(d_g.at[k, b, rows, cols], smem["d"].at[slot, dst], bar)
        if gate:
            plgpu.copy_gmem_to_smem(z_g.at[b, rows, cols], smem["z"].at[slot, dst], bar)
        plgpu.copy_gmem_to_smem(bc_g.at[k, b, rows, :], smem["bc"].at[slot, dst], bar)

    def fetch(i, slot):
        """Starts the copies of step i's tile into `slot` (none past the last step)."""
        if isinstance(i, int):
            if i < n_tiles:
                copy_in(i, slot, tail if i == tail_step else tile)
            return
        pl.when((i < n_tiles) & (i != tail_step))(lambda: copy_in(i, slot, tile))
        if tail != tile:
            pl.when(i == tail_step)(lambda: copy_in(i, slot, tail))

    def step(i, h, nrows):
        """Scans step i's tile (its first `nrows` rows are real) and refills its slot."""
        slot = i % stages if isinstance(i, int) else jax.lax.rem(i, stages)
        plgpu.barrier_wait(bars.at[slot])
        if last:  # the output slot's previous TMA store must have read it
            plgpu.wait_smem_to_gmem(stages - 1, wait_read_only=True)
        u_s, d_s, bc_s = smem["u"].at[slot], smem["d"].at[slot], smem["bc"].at[slot]
        h = list(h)
        row0 = first_row(i)
        for j in (range(nrows - 1, -1, -1) if rev else range(nrows)):
            uu = u_s[j].astype(F32)
            dt = d_s[j].astype(F32) + bias
            if static.delta_softplus:
                dt = scan_math.softplus(dt)
            dtu = dt * uu
            y = D * uu
            for n in range(state):
                h[n] = jnp.exp2(dt * A2[n]) * h[n] + dtu * bc_s[j, n]
                y = y + h[n] * bc_s[j, state_pad + n]
            if not last:  # first of two directions: park scale * y for the second
                smem["park"][row0 + j] = (static.scale * y).astype(smem["park"].dtype)
                continue
            if ndir == 2:
                y = smem["park"][row0 + j].astype(F32) + static.scale * y
            elif static.scale != 1.0:
                y = static.scale * y
            if gate:
                y = y * scan_math.silu(smem["z"][slot, j].astype(F32))
            smem["o"][slot, j] = y.astype(out_g.dtype)
        # Every thread is done with the slot (and its output writes are visible to TMA) before
        # the slot is stored and refilled.
        plgpu.commit_smem()
        if last:
            plgpu.copy_smem_to_gmem(smem["o"].at[slot, pl.ds(0, nrows)],
                                    out_g.at[b, pl.ds(row0, nrows), cols])
        fetch(i + stages, slot)
        return tuple(h)

    for i in range(stages):
        fetch(i, i)
    # A zero state in the strided layout of the loaded rows (a constant would be a splat, and
    # the loop carry's layout must not change).
    h = tuple(D * 0.0 for _ in range(state))
    if rev:
        h = step(0, h, tail)
        h = jax.lax.fori_loop(1, n_tiles, lambda i, h: step(i, h, tile), h)
    else:
        h = jax.lax.fori_loop(0, n_tiles - 1, lambda i, h: step(i, h, tile), h)
        step(n_tiles - 1, h, tail)
