"""Pallas Mosaic GPU selective scan (Mamba's S6) for Hopper GPUs: backend "mosaic".

Forward kernels for one direction and for both directions fused (`forward.py`), long sequences
cut into segments over the grid where the CTAs would not fill the GPU (`segments.py`), and a
backward kernel that recomputes the states (`backward.py`); where the backward does not run
(`MosaicScanConfig(mosaic_backward=False)`, or too few CTAs for long sequences) the differentiated
call runs through the Triton kernels, forward and backward (`vjp.py`). The forward can also compute
the mixer's conv prologue itself (`prologue.py`): `MosaicScan` implements
`vim_jax.ops.conv_selective_scan`, whose backward recomputes u and delta in XLA for the same
backward kernel (`conv_vjp.py`).
Importing this package registers `MosaicScan()` as backend "mosaic" of `vim_jax.ops.selective_scan`,
tried first on GPUs (`vim_jax.ops.selective_scan`'s preference order): its forward is faster than the Triton kernels' at every benchmarked
shape (pallas_kernels/NOTES.md). The kernels raise `NotImplementedError`, so the op falls through
to the next backend, off Hopper GPUs unless `MosaicScan(interpret=True)`, and for dtypes other
than float32 and bfloat16.
"""

from __future__ import annotations

from pallas_kernels.mosaic_scan.api import MosaicScan
from pallas_kernels.mosaic_scan.config import MosaicScanConfig
from vim_jax.ops.selective_scan import register_backend

__all__ = ["MosaicScan", "MosaicScanConfig"]

register_backend("mosaic", MosaicScan())
