"""Pallas GPU selective scan (Mamba's S6), forward and backward, one direction or both fused.

Backend "pallas" of `vim_jax.ops.selective_scan`. Kernels are lowered through Triton; they raise
`NotImplementedError` (so the op falls through to the next backend) off CUDA GPUs unless interpret
mode is on (`set_interpret(True)` or env `VIM_JAX_PALLAS_INTERPRET=1`), and for dtypes other than
float32 and bfloat16. See NOTES.md beside this package for the design and the measurements.
"""

from __future__ import annotations

from pallas_kernels.selective_scan import api
from pallas_kernels.selective_scan.api import interpret_enabled, set_config, set_interpret
from pallas_kernels.selective_scan.bidirectional import selective_scan_bidirectional
from pallas_kernels.selective_scan.tiling import ScanConfig

__all__ = ["selective_scan", "selective_scan_bidirectional", "set_interpret", "interpret_enabled",
           "set_config", "ScanConfig"]


def selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    """See `vim_jax.ops.selective_scan`: u, delta, z [batch, length, channels]; A [channels, state];
    B, C [batch, length, state]; D, delta_bias [channels] (D, z, delta_bias may be None)."""
    interpret = api.check_runnable(u, delta, A, B, C, D, z, delta_bias)
    add = lambda x: None if x is None else x[None]
    return api.run(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(delta_bias),
                   delta_softplus, (bool(reverse),), 1.0, interpret,
                   config=api.config_override())
