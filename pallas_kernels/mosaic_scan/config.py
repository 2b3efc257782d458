"""Static settings of one Mosaic GPU scan call (hashable: they key the custom VJP)."""

from __future__ import annotations

import dataclasses

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E): ex2 is the special-function instruction
CHANNELS_PER_CTA = 128  # one warpgroup, one channel per thread
# Shared memory a block may use on Hopper (the launch refuses more), less a margin for the
# pipeline's barriers and the compiler's own scratch.
SMEM_BYTES = 232_448 - 8_192
# B and C are padded to a multiple of this many states: a TMA copy of any number of `[B | C]`
# rows must move a multiple of 128 bytes (Mosaic GPU splits it over the warpgroup's threads).
STATE_MULTIPLE = 16
# With the conv prologue, dt_low follows [B | C] in the same float32 rows, padded to this many
# columns (128 bytes) for the same reason.
RANK_MULTIPLE = 32
# The timing-only ablations (see `MosaicScanConfig.ablation`).
ABLATIONS = ("", "no_exp", "bc_once", "no_sums")


@dataclasses.dataclass(frozen=True)
class MosaicScanConfig:
    """tile: tokens per TMA copy (rows of u, delta, z, B, C per pipeline step).
    stages: token tiles in flight in the shared-memory ring (`emit_pipeline`'s
      `max_concurrent_steps`).
    approx_math: `ex2.approx` and friends (`CompilerParams(approx_math=True)`).
    auto_barriers: let Pallas put a warpgroup barrier around every shared-memory store (two per
      token). The kernel needs none: each thread reads and writes only its own column of the
      parked output, and every hand-over of a slot (TMA to threads, threads to TMA, a slot
      refilled) already has its barrier.
    park_in_output_dtype: the fused kernel parks `scale * y_0` in the output's dtype (bf16: half
      the shared memory, so twice the CTAs per SM at 197 tokens, for one more bf16 rounding of
      half the sum) instead of float32.
    mosaic_backward: differentiate with the Mosaic backward kernel (`backward.py`, checked
      against float64 on an H200: `experiments/results/bench_scan_h200_campaign3_*`); False
      runs the differentiated call through the fallback backends instead (`vjp.py`).
    bwd_segments: cut the backward's sequence into at most this many segments along the grid
      (0: as many as `segments` would plan for the backward's CTAs; 1: never). Segments cost a
      summary launch (two passes of exponentials: the states and the adjoints of every segment
      from zero) and give that many times the CTAs: at (8, 6085, 384) one direction (11
      segments) fwd+bwd took 1.31 ms against 2.93 with the fallback's backward (H200,
      `experiments/results/bench_scan_h200_campaign4_seg_timings.md`).
    bwd_chunk: tokens per chunk of the backward: their states stay in registers
      (16 x bwd_chunk per thread at N = 16), and their dB, dC terms are summed over the
      channels together (`2 N bwd_chunk` rows of shared memory, rounded up to 128).
    ckpt_chunks: chunks per checkpoint group of the backward: the state entering each group is
      kept in HBM, those entering its chunks in shared memory (`ckpt_chunks * N * 512` bytes). 1 keeps
      every chunk's in HBM (more traffic, one pass of exponentials less).
    bwd_stage_bc: the backward stages each chunk's rows of B and C in shared memory, one
      coalesced load of one element per thread, and reads them from there, instead of loading
      every B_t and C_t as a scalar from global memory (5 N loads per token and thread over its
      passes). Needs `bwd_chunk * 2 * state_pad` to be a multiple of 128 (else off). Measured
      10-11% off the backward at (128, 197, 768) and (8, 6085, 384), one direction (H200,
      `experiments/results/bench_scan_h200_campaign5_options.md`): on by default.
    bwd_keep_decays: the backward keeps each chunk's decays `exp2(delta A)` in registers from
      the chunk's recompute to its adjoint (16 x bwd_chunk more per thread at N = 16) instead of
      computing them again: one of its three passes of exponentials. Measured within noise of
      off (-2% to +2% of the backward, same file), so off: the exponentials are not what bounds
      the backward (`ablation="no_exp"` saved 8-15% of it).
    bwd_min_ctas: fewest CTAs (directions x batch x channel blocks) for which the Mosaic backward
      runs (segments counted); below, the fallback's backward does. One CTA scans a whole
      segment, so few CTAs over long sequences leave most SMs idle, where the Triton kernels
      split the sequence.
    two_warpgroups: the fused kernel scans both directions at once, one warpgroup each (two per
      CTA, one ring each); each parks `scale * y` for the first half of its tiles, they meet at
      a barrier, then each writes the half the other parked (calls of one segment only). Off:
      direction 0, then direction 1.
    segments: cut the sequence into at most this many segments along the grid (0: choose from
      the CTA count, `segments.plan`; 1: never). Segments cost a second pass of exponentials
      (the summary pass) and give that many times the CTAs.
    ctas_per_sm: with `segments=0`, a call whose batch x channel blocks gives fewer CTAs than
      this many per multiprocessor is cut into enough segments to reach it.
    min_segment: with `segments=0`, no segment shorter than this many tokens.
    poly_exp_states: of the N decays `exp2(delta A_n)` per token and thread, how many run as a
      polynomial on the FMA units (`scan_math.exp2_fma`, as accurate as `ex2.approx`) instead of
      on the special-function units, whose `ex2` rate bounds an exponential-bound kernel: a share
      moved balances the two pipes (0: all on the special-function units). 4 states made the
      forward 8% (197 tokens) and 32% (6085) slower and the backward 1-5% faster (same file):
      the forward is not bound by the special-function units.
    ablation: timing only, wrong values: "" (off) or one part of the work taken out, to measure
      what bounds the kernels by how much each removal moves the time. "no_exp": every special
      function (`exp2`, and the `exp`/`log` of softplus, SiLU and the sigmoid) becomes a
      multiply-add; "bc_once": B_t and C_t are read once per tile (forward) or once per CTA
      (backward) instead of every token; "no_sums": the backward skips its dB/dC channel sums.
    """

    tile: int = 16
    stages: int = 3
    approx_math: bool = True
    auto_barriers: bool = False
    park_in_output_dtype: bool = False
    mosaic_backward: bool = True
    bwd_segments: int = 0
    bwd_chunk: int = 4
    ckpt_chunks: int = 1
    bwd_stage_bc: bool = True
    bwd_keep_decays: bool = False
    bwd_min_ctas: int = 128
    two_warpgroups: bool = False
    segments: int = 0
    ctas_per_sm: int = 2
    min_segment: int = 128
    poly_exp_states: int = 0
    ablation: str = ""

    def __post_init__(self):
        if self.tile < 1 or self.stages < 1 or self.bwd_chunk < 1 or self.ckpt_chunks < 1:
            raise ValueError(f"MosaicScanConfig: tile, stages, bwd_chunk and ckpt_chunks must be positive, got {self}")
        if self.poly_exp_states < 0:
            raise ValueError(f"MosaicScanConfig: poly_exp_states must be >= 0, got {self.poly_exp_states}")
        if self.segments < 0 or self.bwd_segments < 0 or self.ctas_per_sm < 1 or self.min_segment < 1:
            raise ValueError(f"MosaicScanConfig: segments and bwd_segments must be >= 0, ctas_per_sm and min_segment "
                             f"positive, got {self}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"MosaicScanConfig: ablation must be one of {ABLATIONS}, got {self.ablation!r}")


@dataclasses.dataclass(frozen=True)
class ConvPrologue:
    """The forward computes u = silu(conv(x)) and delta = dt_low . W_dt itself, per token and
    thread, from x and dt_low (`prologue.py`), instead of reading u and delta."""

    d_conv: int  # conv taps, the last on the current token
    dt_rank: int  # columns of dt_low (rows of W_dt)


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything about one call that is not an array."""

    revs: tuple  # per direction, whether it scans last-to-first
    delta_softplus: bool
    scale: float
    has_z: bool
    cfg: MosaicScanConfig
    interpret: bool
    fused: bool = True  # two directions in one launch (else two launches, see `vjp`)
    seg_len: int = 0  # tokens per segment (0: the whole sequence, no summary pass)
    prologue: ConvPrologue | None = None  # the forward's inputs are x and dt_low, not u and delta
