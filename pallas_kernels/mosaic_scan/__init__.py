"""Pallas Mosaic GPU selective scan (Mamba's S6) for Hopper GPUs: backend "mosaic".

Forward kernels for one direction and for both directions fused (`forward.py`); under
differentiation the call runs through the Triton kernels, forward and backward (`vjp.py`). Importing this package registers the backend
with `vim_jax.ops.selective_scan` (not as a default: see pallas_kernels/NOTES.md for where it is
faster). The kernels raise `NotImplementedError`, so the op falls through to the next backend,
off Hopper GPUs unless interpreted (`interpret=True` or env VIM_JAX_MOSAIC_INTERPRET=1) and for
dtypes other than float32 and bfloat16.
"""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels.mosaic_scan import availability, forward, vjp
from pallas_kernels.mosaic_scan.config import MosaicScanConfig, Static
from vim_jax.ops.selective_scan import register_backend

__all__ = ["selective_scan", "selective_scan_bidirectional", "MosaicScanConfig"]

register_backend("mosaic", __name__)


def selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, *,
                   config: MosaicScanConfig | None = None, interpret: bool | None = None):
    """See `vim_jax.ops.selective_scan`: u, delta, z [batch, length, channels]; A [channels, state];
    B, C [batch, length, state]; D, delta_bias [channels] (D, z, delta_bias may be None)."""
    interpret = availability.check_runnable((u, delta, A, B, C, D, z, delta_bias), interpret)
    add = lambda x: None if x is None else x[None]
    static = Static(revs=(bool(reverse),), delta_softplus=bool(delta_softplus), scale=1.0,
                    has_z=z is not None, cfg=config or MosaicScanConfig(), interpret=interpret)
    return vjp.scan(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(delta_bias), static)


def selective_scan_bidirectional(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale, *,
                                 config: MosaicScanConfig | None = None, interpret: bool | None = None):
    """See `vim_jax.ops.selective_scan_bidirectional`: both directions in one launch where the
    parked first direction fits in shared memory (up to about 350 tokens in float32), else two."""
    interpret = availability.check_runnable((u, delta, A, B, C, D, z, delta_bias), interpret)
    cfg = config or MosaicScanConfig()
    length, state = u.shape[2], A.shape[-1]
    itemsize = jnp.dtype(u.dtype).itemsize
    fused = forward.fits(length, 2, 2 * (state + state % 2), itemsize, itemsize, z is not None,
                         cfg.tile, cfg.stages, itemsize if cfg.park_in_output_dtype else 4)
    static = Static(revs=(False, True), delta_softplus=bool(delta_softplus), scale=float(out_scale),
                    has_z=z is not None, cfg=cfg, interpret=interpret, fused=fused)
    return vjp.scan(u, delta, A, B, C, D, z, delta_bias, static)
