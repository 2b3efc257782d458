"""How a call is cut into sequence segments, and whether two directions run fused.

One CTA scans one batch row x 128 channels, so a call of few rows (8 images of 6085 tokens: 24
CTAs for 132 multiprocessors) leaves most of the GPU idle. Cutting the sequence into S segments
gives S times the CTAs for a second pass of exponentials (`forward.py`: a summary pass, then
the output pass), which pays only while the GPU is not full: a call that already has
`ctas_per_sm` CTAs per multiprocessor keeps one segment, and the others take the count whose
waves end together (`count`).
"""

from __future__ import annotations

from pallas_kernels.mosaic_scan import availability, forward
from pallas_kernels.mosaic_scan.config import CHANNELS_PER_CTA, MosaicScanConfig


def segment_len(length: int, n_seg: int, tile: int) -> int:
    """Tokens per segment for about `n_seg` segments: a whole number of tiles, so that only the
    last segment has a ragged tile."""
    seg = -(-length // max(n_seg, 1))
    return min(-(-seg // tile) * tile, length)


def count(length: int, ctas: int, cfg: MosaicScanConfig) -> int:
    """Segments for a call of `ctas` CTAs before cutting; one if the GPU is full already.

    One wave of `cfg.ctas_per_sm` CTAs per multiprocessor runs at once, and each CTA scans its
    segment token after token, so a call takes about (waves) x (tokens per segment): the count
    that minimises that product (fewest on ties), none shorter than `cfg.min_segment` tokens.
    Rounding up to one wave's worth instead left a second, short-handed wave as long as the
    first: both directions' backward at (8, 6085, 384), 48 CTAs in 6 segments (288 CTAs for 264
    slots), took 4.1 ms, one direction in 6 segments 1.9 and in 11 or 22 1.0 (H200,
    `experiments/results/bench_scan_h200{,_campaign5_options}.md`).
    """
    slots = cfg.ctas_per_sm * availability.multiprocessor_count()
    if ctas >= slots:
        return 1
    most = min(max(1, length // cfg.min_segment), 4 * -(-slots // ctas))
    critical_path = lambda n: -(-ctas * n // slots) * -(-length // n)
    return min(range(1, most + 1), key=lambda n: (critical_path(n), n))


def plan(length: int, batch: int, channels: int, ndir: int, cfg: MosaicScanConfig,
         smem_of: callable) -> tuple[int, bool]:
    """(tokens per segment, fused) for a call.

    smem_of(rows, ndir): shared memory of an output-pass CTA for a segment of `rows` tokens.
    Two directions run fused where the parked first direction fits for the segment, else as two
    one-direction launches (each with the same segments) combined in XLA. Shortening segments
    until the park fits was measured slower at (8, 6085, 384): fused in 20 segments 0.805 ms
    (bf16 park, 11 segments: 0.705) against 0.546 for two launches of 11 (H200,
    experiments/results/bench_scan_h200_campaign2_fwd_long.md).
    """
    tile = min(cfg.tile, length)
    ctas = batch * -(-channels // CHANNELS_PER_CTA)
    seg = segment_len(length, cfg.segments or count(length, ctas, cfg), tile)
    return seg, ndir == 1 or smem_of(seg, ndir) <= forward.SMEM_BYTES
