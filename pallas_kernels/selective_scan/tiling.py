"""Block sizes, grids and the one `pallas_call` wrapper every selective-scan kernel goes through.

Layout choice (the reason for most numbers here): a program owns `block_c` channels of one batch
row as a `[state, block_c]` tile with one channel column per thread (see `kernel_ops`), so each
thread owns `block_c / (32 * num_warps)` channels and all of their states; sums over the state
never leave a thread, only the backward's sums over channels (dB, dC) cross lanes.

Long sequences with few channels (batch 8 x 384 channels at 6085 tokens is 3072 threads, a fraction
of an H100) are cut into `segments` that run as separate programs; a cheap summary pass and a
segment-level recurrence in XLA (`segments.py`) give each segment its entry state.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from jax.experimental import pallas as pl

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E): ex2 is the one special-function instruction
LN2 = 0.6931471805599453


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    """Static tiling of one call.

    block_c: channels per program (power of two; `32 * num_warps` keeps one channel per thread).
    chunk: tokens per unrolled step group; also the spacing of the states the forward saves for the
      backward, which re-runs one chunk at a time and keeps its `chunk` states in registers.
    num_warps: Triton warps per program.
    seg_len: tokens per segment (a multiple of `chunk`); `None` means one segment.
    reduce: how the backward sums over channels ("shfl" or "tree", see `reductions.py`).
    num_stages: Triton's software pipelining depth for the chunk loop (1 and 2 compile alike:
      Triton 3.6 pipelines none of these loads).
    fast_math: branch-free softplus and sigmoid (`kernel_ops.softplus`); unmeasured on a GPU.
    bwd_block_c, bwd_num_warps: the backward's own channel block and warps (None: the forward's).
    """

    block_c: int = 64
    chunk: int = 8
    num_warps: int = 1
    seg_len: int | None = None
    bwd_block_c: int | None = 32
    bwd_num_warps: int | None = 1
    reduce: str = "shfl"
    num_stages: int = 1
    fast_math: bool = False

    @property
    def pad_unit(self) -> int:
        """Internal arrays pad channels to a multiple of this: both passes' blocks divide it."""
        return max(self.block_c, self.bwd_block_c or self.block_c)

    def backward(self) -> "ScanConfig":
        """The config the backward kernels use (their own channel block and warps, if set). It
        keeps `pad_unit`, so that both passes lay out the internal state arrays alike."""
        return dataclasses.replace(self, block_c=self.bwd_block_c or self.block_c,
                                   num_warps=self.bwd_num_warps or self.num_warps,
                                   bwd_block_c=self.pad_unit)


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# Segments cost a second pass over the inputs (the summaries), so they are used only when the grid
# would leave most of the GPU idle: below `_SPLIT_BELOW_WARPS` warps in flight (an H100 has 132 SMs,
# 8 warps each is about where the exponential units stop starving), split until `_TARGET_WARPS`.
_SPLIT_BELOW_WARPS = 1024
_TARGET_WARPS = 2048
_MIN_SEG_CHUNKS = 8  # a segment shorter than this many chunks costs more in summaries than it saves


def default_config(batch: int, length: int, channels: int, config: ScanConfig | None = None) -> ScanConfig:
    """The config for one call: `config` if given (its segment length fitted to the call), else
    the per-shape default.

    Measured on an H100 (NOTES.md): without segments a forward block of 32 channels (one per
    thread, 130 registers) beat 64 (two per thread, 255 registers) at (128, 197, 768): 0.41 vs
    0.50 ms. With segments only 64 was measured, so grids too small for 32-channel blocks
    without segments use 64 and segments.
    """
    if config is None:
        config = ScanConfig()
        narrow = dataclasses.replace(config, block_c=32)
        if _segments(batch, length, channels, narrow) == 1:
            config = narrow
    if config.seg_len is not None:
        seg = max(config.chunk, cdiv(config.seg_len, config.chunk) * config.chunk)
        return dataclasses.replace(config, seg_len=seg if seg < length else None)
    segments = _segments(batch, length, channels, config)
    if segments <= 1:
        return config
    seg = cdiv(cdiv(length, segments), config.chunk) * config.chunk
    return dataclasses.replace(config, seg_len=seg if seg < length else None)


def _segments(batch, length, channels, config) -> int:
    warps = batch * cdiv(channels, config.block_c) * config.num_warps
    if warps >= _SPLIT_BELOW_WARPS:
        return 1
    return min(cdiv(_TARGET_WARPS, warps), max(1, length // (_MIN_SEG_CHUNKS * config.chunk)))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Derived sizes of one call: padded state, channel blocks, segments and chunks per segment."""

    batch: int
    length: int
    channels: int
    state: int
    cfg: ScanConfig

    @property
    def state_pad(self) -> int:
        return max(2, next_pow2(self.state))

    @property
    def n_cblocks(self) -> int:
        return cdiv(self.channels, self.cfg.block_c)

    @property
    def channels_pad(self) -> int:
        """Channel length of the internal arrays, shared by forward and backward blocks."""
        return cdiv(self.channels, self.cfg.pad_unit) * self.cfg.pad_unit

    @property
    def seg_len(self) -> int:
        return self.cfg.seg_len or cdiv(self.length, self.cfg.chunk) * self.cfg.chunk

    @property
    def n_segments(self) -> int:
        return cdiv(self.length, self.seg_len)

    def max_elements(self, ndir: int) -> int:
        """Elements of the largest flattened array a kernel indexes (offsets are int32)."""
        tokens = ndir * self.batch * self.length * max(self.channels, self.state_pad)
        states = ndir * self.batch * self.n_segments * self.n_chunks * self.state_pad * self.channels_pad
        return max(tokens, states)

    @property
    def n_chunks(self) -> int:
        """Chunks per segment (the last segment may use fewer; its tail steps are masked)."""
        return self.seg_len // self.cfg.chunk


def launch(kernel, *, grid, out_shape, cfg: ScanConfig, interpret: bool, name: str):
    """`pl.pallas_call` on raw (whole-array) refs with Triton compiler params, or the interpreter."""
    kwargs = {}
    if not interpret:
        # Without Triton params JAX >= 0.9 lowers GPU kernels through Mosaic GPU, whose model
        # (warpgroup arrays, SMEM tiles) these pointer-style kernels are not written for.
        from jax.experimental.pallas import triton as plgpu

        kwargs["compiler_params"] = plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return pl.pallas_call(kernel, grid=grid, out_shape=out_shape, interpret=interpret, name=name, **kwargs)


def shape_dtype(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def flat(*xs):
    """Arrays flattened to one dimension (None passes through): see `kernel_ops` for why."""
    return [None if x is None else x.reshape(-1) for x in xs]
