"""Pallas GPU selective scan (Mamba's S6), forward and backward, one direction or both fused.

Importing this package registers backend "pallas" of `vim_jax.ops.selective_scan` (on GPUs
tried after "mosaic", which runs on Hopper only); `PallasScan(config=..., interpret=...)` is the same backend with other options,
passed as `backend=`. Kernels are lowered through Triton; they raise `NotImplementedError` (so
the op falls through to the next backend) off CUDA GPUs unless `interpret=True`, and for dtypes
other than float32 and bfloat16. See NOTES.md beside this package for the design and the
measurements.
"""

from __future__ import annotations

from pallas_kernels.selective_scan.api import PallasScan
from pallas_kernels.selective_scan.tiling import ScanConfig
from vim_jax.ops import register_backend

__all__ = ["PallasScan", "ScanConfig"]

register_backend("pallas", PallasScan())
