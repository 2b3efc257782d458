"""The selective-scan kernels in Triton language: forward, backward and both segment summaries.

The same algorithm and memory layouts as the Pallas kernels (`pallas_kernels/selective_scan`,
whose docstrings explain them), written directly against Triton: one program = one batch row x one
channel block x one segment, a `[S, BLOCK_C]` float32 state tile with one channel column per
thread (the channel offset adds `zero`, an int32 0 read from memory, so that Triton's coalescer
cannot see its alignment and keeps that layout), `CHUNK` unrolled steps per loop iteration, and in
the backward a chunk recomputed forward with its states held in a tuple of registers.

Every array is flat; offsets are int32 (the caller checks sizes). Arguments are inputs then
outputs (jax-triton's order), then compile-time constants. `ON_GPU` selects the PTX inline
assembly (`ex2.approx.ftz`, `shfl.sync.bfly`, and with `FAST` `lg2/rcp.approx`) and libdevice's
log1pf; Triton's interpreter, which runs neither, takes `ON_GPU=False`: `tl.exp2`, log1p from
`tl.log` (Kahan's form, exact up to rounding) and a gather that emulates the warp shuffle over the
same element-to-lane map.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

LN2 = tl.constexpr(0.6931471805599453)
WARP = tl.constexpr(32)


@triton.jit
def _exp2(x, ON_GPU: tl.constexpr):
    if ON_GPU:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def _approx(x, OP: tl.constexpr):
    """`lg2.approx.ftz` (OP == 0) or `rcp.approx.ftz` (OP == 1)."""
    if OP == 0:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def _softplus(x, FAST: tl.constexpr, ON_GPU: tl.constexpr):
    """log(1 + e^x), and x past 20. FAST as `kernel_ops.softplus`: log1p(e) = log(u) * e / (u - 1)
    with u = 1 + e (Kahan's trick) on `lg2.approx` and `rcp.approx`, without libdevice's branches."""
    e = tl.exp(tl.minimum(x, 20.0))
    u = 1.0 + e
    if FAST:
        log1p = tl.where(u == 1.0, e, _approx(u, 0) * LN2 * e * _approx(u - 1.0, 1))
    elif ON_GPU:
        log1p = libdevice.log1p(e)
    else:
        log1p = tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _sigmoid(x, FAST: tl.constexpr):
    d = 1.0 + tl.exp(-x)
    if FAST:
        return _approx(d, 1)
    else:
        return 1.0 / d


@triton.jit
def _delta(raw, bias, live, SOFTPLUS: tl.constexpr, FAST: tl.constexpr, ON_GPU: tl.constexpr):
    """(delta, d delta / d raw) of one step, both 0 on padded lanes and steps."""
    x = raw + bias
    if SOFTPLUS:
        dt = _softplus(x, FAST, ON_GPU)
        dgrad = _sigmoid(x, FAST)
    else:
        dt = x
        dgrad = tl.full(x.shape, 1.0, tl.float32)
    return tl.where(live, dt, 0.0), tl.where(live, dgrad, 0.0)


@triton.jit
def _gate(z, FAST: tl.constexpr):
    """(silu(z), d silu / dz)."""
    sg = _sigmoid(z, FAST)
    return z * sg, sg * (1.0 + z * (1.0 - sg))


@triton.jit
def _token(step, seg_start, seg_len, rev, LENGTH: tl.constexpr):
    """(token, valid) of scan step `step`; invalid steps clamp to a real token."""
    valid = step < seg_len
    t = tl.where(rev, seg_start + seg_len - 1 - step, seg_start + step)
    return tl.minimum(tl.maximum(t, 0), LENGTH - 1), valid


@triton.jit
def _step(step, seg_start, seg_len, rev, kd, b, cols, cmask, u_ptr, d_ptr, bias, BATCH: tl.constexpr,
          LENGTH: tl.constexpr, CHANNELS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr,
          ON_GPU: tl.constexpr):
    """One scan step's token and inputs: (t, valid, live, row in the per-direction arrays, row in
    the shared ones, u, delta, d delta / d raw)."""
    t, valid = _token(step, seg_start, seg_len, rev, LENGTH)
    live = cmask & valid
    row = (kd * BATCH + b) * LENGTH + t
    u = _load_vec(u_ptr, row, cols, live, CHANNELS)
    dt, dgrad = _delta(_load_vec(d_ptr, row, cols, live, CHANNELS), bias, live, SOFTPLUS, FAST, ON_GPU)
    return t, valid, live, row, b * LENGTH + t, u, dt, dgrad


@triton.jit
def _program(zero_ptr, CHANNELS: tl.constexpr, LENGTH: tl.constexpr, BLOCK_C: tl.constexpr,
             N_CBLOCKS: tl.constexpr, SEG_LEN: tl.constexpr):
    """(batch row, channel block, segment, channel indices, channel mask, segment start, length)."""
    b = tl.program_id(0)
    pid = tl.program_id(1)
    cb = pid % N_CBLOCKS
    s = pid // N_CBLOCKS
    cols = cb * BLOCK_C + tl.load(zero_ptr) + tl.arange(0, BLOCK_C)
    seg_start = s * SEG_LEN
    return b, cb, s, cols, cols < CHANNELS, seg_start, tl.minimum(SEG_LEN, LENGTH - seg_start)


@triton.jit
def _tile_offsets(index, cols, S: tl.constexpr, CH_PAD: tl.constexpr):
    """Offsets of tile `index` of a [tiles, S, CH_PAD] array: [S, BLOCK_C]."""
    return (index * S + tl.arange(0, S)[:, None]) * CH_PAD + cols[None, :]


@triton.jit
def _load_tile(ptr, index, cols, cmask, S: tl.constexpr, CH_PAD: tl.constexpr):
    mask = cmask[None, :] & (tl.arange(0, S)[:, None] >= 0)
    return tl.load(ptr + _tile_offsets(index, cols, S, CH_PAD), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_vec(ptr, row, cols, mask, WIDTH: tl.constexpr):
    return tl.load(ptr + row * WIDTH + cols, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_vec(ptr, row, cols, value, mask, WIDTH: tl.constexpr):
    tl.store(ptr + row * WIDTH + cols, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _state_row(ptr, row, S: tl.constexpr):
    return tl.load(ptr + row * S + tl.arange(0, S)).to(tl.float32)


@triton.jit
def _lane_xor(v, m: tl.constexpr, ON_GPU: tl.constexpr):
    """The value of lane `lane ^ m` of the same warp, elementwise (element i lives in lane i % 32)."""
    if ON_GPU:
        return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, $2, 31, 0xffffffff;", "=f,f,r",
                                         [v, tl.full(v.shape, m, tl.int32)], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        if len(v.shape) == 2:
            idx = tl.arange(0, v.shape[1]) ^ m
            return tl.gather(v, tl.broadcast_to(idx[None, :], v.shape), 1)
        else:
            return tl.gather(v, tl.arange(0, v.shape[0]) ^ m, 0)


@triton.jit
def _fold(x, lane, m: tl.constexpr, ON_GPU: tl.constexpr):
    """One reduce-scatter round: lanes with bit m keep the upper half of the rows and send the
    lower half to lane ^ m (the others the reverse), adding what they receive."""
    R: tl.constexpr = x.shape[0]
    W: tl.constexpr = x.shape[1]
    lo, hi = tl.split(tl.permute(tl.reshape(x, [2, R // 2, W]), [1, 2, 0]))
    upper = ((lane & m) != 0)[None, :]
    return tl.where(upper, hi, lo) + _lane_xor(tl.where(upper, lo, hi), m, ON_GPU)


@triton.jit
def _store_channel_sums(ptr, row, x, valid, S: tl.constexpr, LOG_S: tl.constexpr, SHFL: tl.constexpr,
                        NUM_WARPS: tl.constexpr, ON_GPU: tl.constexpr):
    """`ptr[row * S + n] = sum over the block's channels of x[n]` where `valid` (see
    `pallas_kernels/selective_scan/reductions.py` for the reduce-scatter's lane arithmetic)."""
    W: tl.constexpr = x.shape[1]
    if SHFL:
        lane = tl.arange(0, W) % WARP
        for i in tl.static_range(LOG_S):
            x = _fold(x, lane, 16 >> i, ON_GPU)
        v = tl.reshape(x, [W])
        for i in tl.static_range(5 - LOG_S):
            v = v + _lane_xor(v, 16 >> (LOG_S + i), ON_GPU)
        if NUM_WARPS > 1:
            v = tl.sum(tl.reshape(v, [NUM_WARPS, WARP]), axis=0)
            lane = tl.arange(0, WARP)
        # Lanes sharing a row hold the same total and store it to the same address.
        tl.store(ptr + row * S + (lane >> (5 - LOG_S)), v.to(ptr.dtype.element_ty), mask=valid & (lane >= 0))
    else:
        n = tl.arange(0, S)
        tl.store(ptr + row * S + n, tl.sum(x, axis=1).to(ptr.dtype.element_ty), mask=valid & (n >= 0))


@triton.jit
def _forward_direction(kd: tl.constexpr, rev: tl.constexpr, zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, C_ptr,
                       D_ptr, bias_ptr, z_ptr, h0_ptr, out_ptr, stage_ptr, ck_ptr,
                       BATCH: tl.constexpr, LENGTH: tl.constexpr, CHANNELS: tl.constexpr,
                       S: tl.constexpr, CH_PAD: tl.constexpr, BLOCK_C: tl.constexpr,
                       CHUNK: tl.constexpr, N_CBLOCKS: tl.constexpr, SEG_LEN: tl.constexpr,
                       N_SEGMENTS: tl.constexpr, N_CHUNKS: tl.constexpr, NDIR: tl.constexpr,
                       HAS_Z: tl.constexpr, HAS_H0: tl.constexpr, SAVE: tl.constexpr,
                       SOFTPLUS: tl.constexpr, SCALE: tl.constexpr, FAST: tl.constexpr,
                       ON_GPU: tl.constexpr):
    b, cb, s, cols, cmask, seg_start, seg_len = _program(zero_ptr, CHANNELS, LENGTH, BLOCK_C, N_CBLOCKS, SEG_LEN)
    A2 = _load_tile(A2_ptr, kd, cols, cmask, S, CH_PAD)
    D = _load_vec(D_ptr, kd, cols, cmask, CHANNELS)
    bias = _load_vec(bias_ptr, kd, cols, cmask, CHANNELS)
    seg_row = (kd * BATCH + b) * N_SEGMENTS + s
    if HAS_H0:
        h = _load_tile(h0_ptr, seg_row, cols, cmask, S, CH_PAD)
    else:
        h = tl.zeros((S, BLOCK_C), tl.float32)
    # With two directions the first parks SCALE * y in `stage`; the second adds its own and gates.
    first_of_two: tl.constexpr = NDIR == 2 and kd == 0
    second_of_two: tl.constexpr = NDIR == 2 and kd == 1
    for k in range(N_CHUNKS):
        if SAVE:
            tl.store(ck_ptr + _tile_offsets(seg_row * N_CHUNKS + k, cols, S, CH_PAD), h)
        for j in tl.static_range(CHUNK):
            t, valid, live, row, srow, u, dt, _ = _step(k * CHUNK + j, seg_start, seg_len, rev, kd, b, cols, cmask,
                                                        u_ptr, d_ptr, bias, BATCH, LENGTH, CHANNELS, SOFTPLUS,
                                                        FAST, ON_GPU)
            Bt = _state_row(B_ptr, row, S)
            Ct = _state_row(C_ptr, row, S)
            h = _exp2(dt[None, :] * A2, ON_GPU) * h + (dt * u)[None, :] * Bt[:, None]
            y = tl.sum(h * Ct[:, None], axis=0) + D * u
            if first_of_two:
                _store_vec(stage_ptr, srow, cols, SCALE * y, live, CHANNELS)
            else:
                if second_of_two:
                    y = _load_vec(stage_ptr, srow, cols, live, CHANNELS) + SCALE * y
                elif SCALE != 1.0:
                    y = SCALE * y
                if HAS_Z:
                    silu, _ = _gate(_load_vec(z_ptr, srow, cols, live, CHANNELS), FAST)
                    y = y * silu
                _store_vec(out_ptr, srow, cols, y, live, CHANNELS)


@triton.jit
def forward_kernel(zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr, h0_ptr,
                   out_ptr, stage_ptr, ck_ptr,
                   BATCH: tl.constexpr, LENGTH: tl.constexpr, CHANNELS: tl.constexpr, S: tl.constexpr,
                   CH_PAD: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
                   N_CBLOCKS: tl.constexpr, SEG_LEN: tl.constexpr, N_SEGMENTS: tl.constexpr,
                   N_CHUNKS: tl.constexpr, NDIR: tl.constexpr, REV0: tl.constexpr, HAS_Z: tl.constexpr,
                   HAS_H0: tl.constexpr, SAVE: tl.constexpr, SOFTPLUS: tl.constexpr,
                   SCALE: tl.constexpr, FAST: tl.constexpr, ON_GPU: tl.constexpr):
    """The scan over one program's tokens, one direction (REV0 says which) or both (NDIR == 2:
    forwards, then backwards, combined through `stage`). Grid (batch, segments * channel blocks)."""
    if NDIR == 1:
        _forward_direction(0, REV0, zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr,
                           h0_ptr, out_ptr, stage_ptr, ck_ptr, BATCH, LENGTH, CHANNELS, S, CH_PAD,
                           BLOCK_C, CHUNK, N_CBLOCKS, SEG_LEN, N_SEGMENTS, N_CHUNKS, NDIR, HAS_Z,
                           HAS_H0, SAVE, SOFTPLUS, SCALE, FAST, ON_GPU)
    else:
        _forward_direction(0, False, zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr,
                           h0_ptr, out_ptr, stage_ptr, ck_ptr, BATCH, LENGTH, CHANNELS, S, CH_PAD,
                           BLOCK_C, CHUNK, N_CBLOCKS, SEG_LEN, N_SEGMENTS, N_CHUNKS, NDIR, HAS_Z,
                           HAS_H0, SAVE, SOFTPLUS, SCALE, FAST, ON_GPU)
        # Order this program's `stage` writes before the second direction reads them back.
        tl.debug_barrier()
        _forward_direction(1, True, zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, z_ptr,
                           h0_ptr, out_ptr, stage_ptr, ck_ptr, BATCH, LENGTH, CHANNELS, S, CH_PAD,
                           BLOCK_C, CHUNK, N_CBLOCKS, SEG_LEN, N_SEGMENTS, N_CHUNKS, NDIR, HAS_Z,
                           HAS_H0, SAVE, SOFTPLUS, SCALE, FAST, ON_GPU)


@triton.jit
def _direction(NDIR: tl.constexpr, REV0: tl.constexpr):
    """(direction index, scans in reverse) where the direction is grid axis 2."""
    kd = tl.program_id(2)
    if NDIR == 1:
        return kd, REV0 | (kd < 0)
    else:
        return kd, kd == 1


@triton.jit
def summary_kernel(zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, bias_ptr, hend_ptr, dsum_ptr,
                   BATCH: tl.constexpr, LENGTH: tl.constexpr, CHANNELS: tl.constexpr, S: tl.constexpr,
                   CH_PAD: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
                   N_CBLOCKS: tl.constexpr, SEG_LEN: tl.constexpr, N_SEGMENTS: tl.constexpr,
                   N_CHUNKS: tl.constexpr, NDIR: tl.constexpr, REV0: tl.constexpr,
                   SOFTPLUS: tl.constexpr, FAST: tl.constexpr, ON_GPU: tl.constexpr):
    """Per segment: the state reached from zero and the sum of delta. Grid (batch, segments *
    channel blocks, directions)."""
    kd, rev = _direction(NDIR, REV0)
    b, cb, s, cols, cmask, seg_start, seg_len = _program(zero_ptr, CHANNELS, LENGTH, BLOCK_C, N_CBLOCKS, SEG_LEN)
    A2 = _load_tile(A2_ptr, kd, cols, cmask, S, CH_PAD)
    bias = _load_vec(bias_ptr, kd, cols, cmask, CHANNELS)
    h = tl.zeros((S, BLOCK_C), tl.float32)
    dsum = tl.zeros((BLOCK_C,), tl.float32)
    for k in range(N_CHUNKS):
        for j in tl.static_range(CHUNK):
            t, valid, live, row, srow, u, dt, _ = _step(k * CHUNK + j, seg_start, seg_len, rev, kd, b, cols, cmask,
                                                        u_ptr, d_ptr, bias, BATCH, LENGTH, CHANNELS, SOFTPLUS,
                                                        FAST, ON_GPU)
            h = _exp2(dt[None, :] * A2, ON_GPU) * h + (dt * u)[None, :] * _state_row(B_ptr, row, S)[:, None]
            dsum += dt
    seg_row = (kd * BATCH + b) * N_SEGMENTS + s
    tl.store(hend_ptr + _tile_offsets(seg_row, cols, S, CH_PAD), h)
    tl.store(dsum_ptr + seg_row * CH_PAD + cols, dsum)


@triton.jit
def adjoint_summary_kernel(zero_ptr, d_ptr, A2_ptr, C_ptr, bias_ptr, dout_ptr, z_ptr, out_ptr,
                           BATCH: tl.constexpr, LENGTH: tl.constexpr, CHANNELS: tl.constexpr,
                           S: tl.constexpr, CH_PAD: tl.constexpr, BLOCK_C: tl.constexpr,
                           CHUNK: tl.constexpr, N_CBLOCKS: tl.constexpr, SEG_LEN: tl.constexpr,
                           N_SEGMENTS: tl.constexpr, N_CHUNKS: tl.constexpr, NDIR: tl.constexpr,
                           REV0: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
                           SCALE: tl.constexpr, FAST: tl.constexpr, ON_GPU: tl.constexpr):
    """Per segment: `a_first * lam_first` of the adjoint run backwards over it from zero. Grid
    (batch, segments * channel blocks, directions)."""
    kd, rev = _direction(NDIR, REV0)
    b, cb, s, cols, cmask, seg_start, seg_len = _program(zero_ptr, CHANNELS, LENGTH, BLOCK_C, N_CBLOCKS, SEG_LEN)
    A2 = _load_tile(A2_ptr, kd, cols, cmask, S, CH_PAD)
    bias = _load_vec(bias_ptr, kd, cols, cmask, CHANNELS)
    lam = tl.zeros((S, BLOCK_C), tl.float32)
    for i in range(N_CHUNKS):
        k = N_CHUNKS - 1 - i
        for jj in tl.static_range(CHUNK):
            t, valid = _token(k * CHUNK + CHUNK - 1 - jj, seg_start, seg_len, rev, LENGTH)
            live = cmask & valid
            row = (kd * BATCH + b) * LENGTH + t
            srow = b * LENGTH + t
            dt, _ = _delta(_load_vec(d_ptr, row, cols, live, CHANNELS), bias, live, SOFTPLUS, FAST, ON_GPU)
            dy = _load_vec(dout_ptr, srow, cols, live, CHANNELS) * SCALE
            if HAS_Z:
                silu, _ = _gate(_load_vec(z_ptr, srow, cols, live, CHANNELS), FAST)
                dy = dy * silu
            lam = _exp2(dt[None, :] * A2, ON_GPU) * (lam + dy[None, :] * _state_row(C_ptr, row, S)[:, None])
    seg_row = (kd * BATCH + b) * N_SEGMENTS + s
    tl.store(out_ptr + _tile_offsets(seg_row, cols, S, CH_PAD), lam)


@triton.jit
def backward_kernel(zero_ptr, u_ptr, d_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dout_ptr, ck_ptr,
                    z_ptr, lam0_ptr, stage_ptr,
                    du_ptr, dd_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, db_ptr, dz_ptr,
                    BATCH: tl.constexpr, LENGTH: tl.constexpr, CHANNELS: tl.constexpr, S: tl.constexpr,
                    LOG_S: tl.constexpr, CH_PAD: tl.constexpr, BLOCK_C: tl.constexpr,
                    CHUNK: tl.constexpr, N_CBLOCKS: tl.constexpr, SEG_LEN: tl.constexpr,
                    N_SEGMENTS: tl.constexpr, N_CHUNKS: tl.constexpr, NDIR: tl.constexpr,
                    REV0: tl.constexpr, HAS_Z: tl.constexpr, HAS_LAM0: tl.constexpr,
                    SOFTPLUS: tl.constexpr, SCALE: tl.constexpr, FAST: tl.constexpr,
                    SHFL: tl.constexpr, NUM_WARPS: tl.constexpr, ON_GPU: tl.constexpr):
    """Chunk by chunk, last to first: reload the chunk's entry state, re-run the chunk forward
    keeping its states in registers, then walk it back with the adjoint (the equations are in
    `pallas_kernels/selective_scan/backward.py`). Grid (batch, segments * channel blocks,
    directions). dB, dC leave as one partial per channel block; dA, dD, d delta_bias as one
    partial per batch row and segment."""
    kd, rev = _direction(NDIR, REV0)
    b, cb, s, cols, cmask, seg_start, seg_len = _program(zero_ptr, CHANNELS, LENGTH, BLOCK_C, N_CBLOCKS, SEG_LEN)
    A2 = _load_tile(A2_ptr, kd, cols, cmask, S, CH_PAD)
    D = _load_vec(D_ptr, kd, cols, cmask, CHANNELS)
    bias = _load_vec(bias_ptr, kd, cols, cmask, CHANNELS)
    seg_row = (kd * BATCH + b) * N_SEGMENTS + s
    # dz needs both directions' outputs: the last direction adds its own to the parked first one.
    writes_dz = kd == NDIR - 1
    if HAS_LAM0:
        lam_next = _load_tile(lam0_ptr, seg_row, cols, cmask, S, CH_PAD)
    else:
        lam_next = tl.zeros((S, BLOCK_C), tl.float32)
    dA_acc = tl.zeros((S, BLOCK_C), tl.float32)
    dD_acc = tl.zeros((BLOCK_C,), tl.float32)
    db_acc = tl.zeros((BLOCK_C,), tl.float32)
    for i in range(N_CHUNKS):
        k = N_CHUNKS - 1 - i
        h = _load_tile(ck_ptr, seg_row * N_CHUNKS + k, cols, cmask, S, CH_PAD)
        # Forward over the chunk: the states before each step (a tuple: registers), dz and dC.
        # The step vectors are kept too (tuples, unrolled: registers) for the walk back.
        h_before = ()
        us = ()
        dts = ()
        dgrads = ()
        dys = ()
        for j in tl.static_range(CHUNK):
            t, valid, live, row, srow, u, dt, dgrad = _step(k * CHUNK + j, seg_start, seg_len, rev, kd, b, cols,
                                                            cmask, u_ptr, d_ptr, bias, BATCH, LENGTH, CHANNELS,
                                                            SOFTPLUS, FAST, ON_GPU)
            h_before = h_before + (h,)
            h = _exp2(dt[None, :] * A2, ON_GPU) * h + (dt * u)[None, :] * _state_row(B_ptr, row, S)[:, None]
            dout = _load_vec(dout_ptr, srow, cols, live, CHANNELS)
            dy = dout * SCALE
            if HAS_Z:
                silu, dsilu = _gate(_load_vec(z_ptr, srow, cols, live, CHANNELS), FAST)
                y = tl.sum(h * _state_row(C_ptr, row, S)[:, None], axis=0) + D * u
                if NDIR == 2:
                    y_total = SCALE * y + _load_vec(stage_ptr, srow, cols, live & writes_dz, CHANNELS)
                else:
                    y_total = SCALE * y
                _store_vec(dz_ptr, srow, cols, dout * y_total * dsilu, live & writes_dz, CHANNELS)
                dy = dy * silu
            us = us + (u,)
            dts = dts + (dt,)
            dgrads = dgrads + (dgrad,)
            dys = dys + (dy,)
            part_row = ((kd * N_CBLOCKS + cb) * BATCH + b) * LENGTH + t
            _store_channel_sums(dC_ptr, part_row, dy[None, :] * h, valid, S, LOG_S, SHFL, NUM_WARPS, ON_GPU)
        # Backward over the chunk. B_t and C_t are read again where used (every thread holds
        # whole rows: keeping them would cost 2 * S * CHUNK registers); they hit L1.
        for j in tl.static_range(CHUNK - 1, -1, -1):
            t, valid = _token(k * CHUNK + j, seg_start, seg_len, rev, LENGTH)
            live = cmask & valid
            row = (kd * BATCH + b) * LENGTH + t
            u = us[j]
            dt = dts[j]
            dgrad = dgrads[j]
            dy = dys[j]
            Bt = _state_row(B_ptr, row, S)
            Ct = _state_row(C_ptr, row, S)
            a = _exp2(dt[None, :] * A2, ON_GPU)
            lam = lam_next + dy[None, :] * Ct[:, None]
            sa = lam * a * h_before[j]  # d loss / d (delta_t A), per state
            lam_B = tl.sum(lam * Bt[:, None], axis=0)
            _store_vec(du_ptr, row, cols, dt * lam_B + D * dy, live, CHANNELS)
            dd = (u * lam_B + tl.sum(sa * A2, axis=0) * LN2) * dgrad
            _store_vec(dd_ptr, row, cols, dd, live, CHANNELS)
            part_row = ((kd * N_CBLOCKS + cb) * BATCH + b) * LENGTH + t
            _store_channel_sums(dB_ptr, part_row, lam * (dt * u)[None, :], valid, S, LOG_S, SHFL, NUM_WARPS,
                                ON_GPU)
            dA_acc += sa * dt[None, :]
            dD_acc += dy * u
            db_acc += dd
            lam_next = a * lam
    tl.store(dA_ptr + _tile_offsets(seg_row, cols, S, CH_PAD), dA_acc)
    tl.store(dD_ptr + seg_row * CH_PAD + cols, dD_acc)
    tl.store(db_ptr + seg_row * CH_PAD + cols, db_acc)
