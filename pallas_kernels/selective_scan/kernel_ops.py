"""In-kernel building blocks shared by the forward, backward and summary kernels.

A program's state is a `[state_pad, block_c]` float32 tile: state index on the slow axis, its
`block_c` channels on the fast one. The layout is the point. Triton's default blocked layout for
such a tile gives each thread whole columns (one channel, all its states), so sums over the state
stay in registers and only the backward's sums over channels cross lanes. But Triton's coalescing
pass re-lays out every load and store for vector width, spreading 4 consecutive channels over one
thread and the state axis over 4 threads; that layout then wins for the arithmetic too, with
shuffles every step. So every channel offset here is `block * block_c + zero`, `zero` being an
int32 0 read from memory: unknown alignment makes the coalescer keep one element per thread, which
matches the default layout, and the remaining layout conversions compile to nothing. (Accesses
stay coalesced: a warp still covers 32 consecutive channels.)

Every array reaches the kernels flattened to one dimension, and every access is one `pl.ds`
(or one integer-array index for 2D tiles) at a scalar offset: Pallas lowers each indexed
dimension to a handful of tensor ops, and Triton's coalescing pass costs time quadratic in the
kernel's size (a 4-d index per access made the backward take a minute to compile).

Masks: blocks are powers of two (Triton's requirement) and a segment's last chunk may run past
the sequence. Padded channels, states and steps are exact no-ops rather than skipped: their delta
is 0 (and A, B, C are 0 on padded states), so the decay is exp(0) = 1 and the input term 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels.selective_scan.tiling import Geometry

F32 = jnp.float32


def exp2(x, interpret: bool):
    """2**x. On the GPU the bare `ex2.approx.ftz` instruction (2 ulp): libdevice's exp2f adds
    denormal handling around it, and this exponential is the kernels' bottleneck."""
    if interpret:
        return jnp.exp2(x)
    [y] = plgpu.elementwise_inline_asm(
        "ex2.approx.ftz.f32 $0, $1;", args=[x], constraints="=f,f", pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])
    return y


def _asm(op, x):
    [y] = plgpu.elementwise_inline_asm(
        f"{op} $0, $1;", args=[x], constraints="=f,f", pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, x.dtype)])
    return y


def softplus(x, fast: bool):
    """log(1 + e^x), to float32 rounding, and x itself past 20.

    `fast` (GPU only) avoids libdevice's log1pf and IEEE division, whose special-case branches cut
    every unrolled step into its own basic block: log1p(e) = log(u) * e / (u - 1) with u = 1 + e
    (exact to a few ulp, Kahan's trick) on the `lg2.approx` and `rcp.approx` instructions.
    """
    e = jnp.exp(jnp.minimum(x, 20.0))
    if fast:
        u = 1.0 + e
        lg = _asm("lg2.approx.ftz.f32", u) * 0.6931471805599453
        log1p = jnp.where(u == 1.0, e, lg * e * _asm("rcp.approx.ftz.f32", u - 1.0))
    else:
        log1p = jnp.log1p(e)
    return jnp.where(x > 20.0, x, log1p)


def sigmoid(x, fast: bool):
    """1 / (1 + e^-x); `fast`: `rcp.approx.ftz` rather than a division (see `softplus`)."""
    d = 1.0 + jnp.exp(-x)
    return _asm("rcp.approx.ftz.f32", d) if fast else 1.0 / d


@dataclasses.dataclass(frozen=True)
class Block:
    """Where one program sits: batch row `b`, channel block `cb` starting at `c0`, segment `s`.

    `seg_len` is the number of real tokens in this segment (traced); `rev` says whether steps walk
    the segment from its last token to its first (a Python bool, or a traced one in kernels whose
    direction is a grid axis).
    """

    g: Geometry
    b: jax.Array
    cb: jax.Array
    c0: jax.Array
    s: jax.Array
    seg_start: jax.Array
    seg_len: jax.Array
    rev: object
    cmask: jax.Array  # [block_c]: channel < channels

    def token(self, step):
        """(token index, valid) of scan step `step` of this segment; invalid steps are clamped to
        a real token so that even unmasked address arithmetic stays inside the arrays."""
        valid = step < self.seg_len
        fwd = self.seg_start + step
        bwd = self.seg_start + self.seg_len - 1 - step
        if isinstance(self.rev, bool):
            t = bwd if self.rev else fwd
        else:
            t = jnp.where(self.rev, bwd, fwd)
        return jnp.clip(t, 0, self.g.length - 1), valid

    # Flat row indices of the arrays' layouts (leading axes folded into one).
    def tok_row(self, kd, t):
        """Row of token t in a per-direction [ndir, batch, length, ...] array."""
        return (kd * self.g.batch + self.b) * self.g.length + t

    def shared_row(self, t):
        """Row of token t in a [batch, length, ...] array (z, dout, out)."""
        return self.b * self.g.length + t

    def seg_row(self, kd):
        """Row of this program's segment in a [ndir, batch, segments, ...] array."""
        return (kd * self.g.batch + self.b) * self.g.n_segments + self.s

    def part_row(self, kd, t):
        """Row of token t in a [ndir, channel blocks, batch, length, ...] partial-sum array."""
        g = self.g
        return ((kd * g.n_cblocks + self.cb) * g.batch + self.b) * g.length + t

    # Views of flattened arrays. `row` is a flat row index, the layout's leading axes folded.
    def vec(self, ref, row, width=None):
        """The channel block of row `row` of a [rows, width] array (width: channels by default)."""
        width = self.g.channels if width is None else width
        return ref.at[pl.ds(row * width + self.c0, self.g.cfg.block_c)]

    def state_row(self, ref, row):
        """Row `row` of a [rows, state_pad] array (B_t, C_t)."""
        return ref.at[pl.ds(row * self.g.state_pad, self.g.state_pad)]

    def tile(self, ref, index):
        """Tile `index` of a [tiles, state_pad, channels_pad] array: a [state_pad, block_c] view."""
        g = self.g
        n = jnp.arange(g.state_pad, dtype=jnp.int32)[:, None]
        c = jnp.arange(g.cfg.block_c, dtype=jnp.int32)[None, :]
        return ref.at[(index * g.state_pad + n) * g.channels_pad + self.c0 + c]


def locate(g: Geometry, rev, zero_ref) -> Block:
    """The `Block` of the running program: grid axis 0 is batch, axis 1 is (segment, channel block)."""
    b = pl.program_id(0)
    pid = pl.program_id(1)
    cb = pid % g.n_cblocks
    s = pid // g.n_cblocks
    zero = _scalar_zero(zero_ref)
    c0 = cb * g.cfg.block_c + zero
    seg_start = s * g.seg_len
    seg_len = jnp.minimum(g.seg_len, g.length - seg_start)
    cmask = (c0 + jnp.arange(g.cfg.block_c, dtype=jnp.int32)) < g.channels
    return Block(g, b, cb, c0, s, seg_start, seg_len, rev, cmask)


def _scalar_zero(zero_ref):
    """0, of an alignment the compiler cannot see (loaded from memory)."""
    return plgpu.load(zero_ref.at[jnp.int32(0)])


def load(ref_view, mask=None, other=0.0):
    """Load cast to float32 (masked elements read `other`)."""
    if mask is None:
        return plgpu.load(ref_view).astype(F32)
    return plgpu.load(ref_view, mask=mask, other=other).astype(F32)


def store(ref_view, value, mask=None):
    plgpu.store(ref_view, value.astype(ref_view.dtype), mask=mask)


def load_tile(ref, index, blk: Block):
    """Tile `index` of an internal (padded) state array; 0 past the real channels, which a pass
    with another channel block may have left unwritten."""
    mask = jnp.broadcast_to(blk.cmask[None, :], (blk.g.state_pad, blk.g.cfg.block_c))
    return load(blk.tile(ref, index), mask)


def store_tile(ref, index, blk: Block, tile):
    store(blk.tile(ref, index), tile)


def load_params(blk: Block, kd, A2_ref, D_ref, bias_ref):
    """Per-direction parameters: A * log2(e) as a [state_pad, block_c] tile (so that exp(delta*A)
    is one ex2; prepared transposed and padded outside), D and delta_bias as [block_c] vectors."""
    A2 = load_tile(A2_ref, kd, blk)
    D = load(blk.vec(D_ref, kd), blk.cmask)
    bias = load(blk.vec(bias_ref, kd), blk.cmask)
    return A2, D, bias


def delta_of(raw, bias, live, delta_softplus: bool, fast: bool):
    """(delta, d delta / d raw) for one step; both 0 where `live` is False (padded lane or step)."""
    x = raw + bias
    if delta_softplus:
        dt, dgrad = softplus(x, fast), sigmoid(x, fast)
    else:
        dt, dgrad = x, jnp.ones_like(x)
    return jnp.where(live, dt, 0.0), jnp.where(live, dgrad, 0.0)


def gate(z, fast: bool):
    """(silu(z), d silu / dz)."""
    sg = sigmoid(z, fast)
    return z * sg, sg * (1.0 + z * (1.0 - sg))
