"""Sums over a program's channels of a [state_pad, block_c] tile: the backward's dB_t and dC_t.

"tree": `jnp.sum(x, axis=1)`. Triton reduces each of the thread's state_pad values with its own
  5-round butterfly: 16 states cost 80 shuffles and 80 adds per thread and step, a quarter of the
  backward's instructions.
"shfl": a reduce-scatter across the warp. Each round a lane keeps one half of its rows, hands the
  other half to lane `lane ^ m` and adds what it receives, so the work halves every round (8+4+2+1
  shuffles for 16 states, +1 to finish) and lane L ends holding the total of row L >> 1; one
  scattered store writes them all. It needs one channel per thread (`block_c == 32 * num_warps`),
  so that element i of a channel vector lives in lane i % 32 of warp i // 32; interpret mode
  emulates the shuffle with a gather over that same element <-> lane map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

WARP = 32


def shfl_supported(block_c: int, num_warps: int, state_pad: int) -> bool:
    return block_c == WARP * num_warps and state_pad <= WARP


def lane_xor(v, m: int, interpret: bool):
    """The value held by lane `lane ^ m` of the same warp (`shfl.sync.bfly`), elementwise."""
    if interpret:
        lanes = jnp.arange(v.shape[-1], dtype=jnp.int32)
        return jnp.take(v, lanes ^ m, axis=v.ndim - 1)
    [y] = plgpu.elementwise_inline_asm(
        f"shfl.sync.bfly.b32 $0, $1, {m}, 31, 0xffffffff;", args=[v], constraints="=f,f", pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(v.shape, v.dtype)])
    return y


def store_channel_sums(ref, row, x, valid, *, mode: str, num_warps: int, interpret: bool):
    """`ref[row * state_pad + n] = sum over the block's channels of x[n]` for every row n of `x`
    ([state_pad, block_c] float32), where `valid` (a scalar); `ref` is a flat [rows, state_pad]."""
    rows, width = x.shape
    if mode == "tree":
        plgpu.store(ref.at[pl.ds(row * rows, rows)], jnp.sum(x, axis=1).astype(ref.dtype),
                    mask=jnp.broadcast_to(valid, (rows,)))
        return
    lane = jnp.arange(width, dtype=jnp.int32) % WARP
    m = WARP // 2
    while x.shape[0] > 1:
        lo, hi = jnp.split(x, 2, axis=0)
        upper = ((lane & m) != 0)[None, :]  # these lanes keep the upper rows, send the lower
        x = jnp.where(upper, hi, lo) + lane_xor(jnp.where(upper, lo, hi), m, interpret)
        m //= 2
    v = x.reshape(width)
    while m >= 1:  # lanes sharing a row finish its sum between themselves
        v = v + lane_xor(v, m, interpret)
        m //= 2
    if num_warps > 1:  # each warp holds its own 32 channels' sums: add the warps up
        v = jnp.sum(v.reshape(num_warps, WARP), axis=0)
        lane = jnp.arange(WARP, dtype=jnp.int32)
    # Lanes sharing a row hold the same total and store it to the same address, so none needs a
    # mask (nor does the interpreter, which scatters, see conflicting duplicates).
    row_of_lane = lane >> (5 - (rows.bit_length() - 1))
    plgpu.store(ref.at[row * rows + row_of_lane], v.astype(ref.dtype),
                mask=jnp.broadcast_to(valid, row_of_lane.shape))
