"""Triton selective scan (Mamba's S6) on jax-triton: backend "triton" of `vim_jax.ops.selective_scan`.

For CUDA GPUs that cannot run Mosaic GPU (before Hopper), off the deprecated Pallas Triton
lowering: the Pallas backend's algorithm, layouts and tiling (`ScanConfig`) written in Triton
language (`kernels.py`) and called through `jax_triton.triton_call`; the custom VJP, the segment
chaining and the partial sums are the Pallas backend's own (`pallas_kernels.selective_scan.vjp`).
Calls raise `NotImplementedError` (the op then tries the next backend) where jax-triton or triton
is not importable, off CUDA GPUs, and for dtypes other than float32 and bfloat16.
`TritonScan(interpret=True)` runs the same kernels in Triton's interpreter on any machine.
Install with the `triton` extra. Design and measurements: NOTES.md beside this package.
"""

from __future__ import annotations

from pallas_kernels.triton_scan.backend import TritonScan
from vim_jax.ops import register_backend

__all__ = ["TritonScan"]

# Tried behind pallas on GPUs (vim_jax.ops' preference order) until measured there.
register_backend("triton", TritonScan())
