"""`MosaicScan`: the Mosaic GPU kernels as a selective-scan backend object, options as fields."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from pallas_kernels.mosaic_scan import availability, forward, segments, vjp
from pallas_kernels.mosaic_scan.config import STATE_MULTIPLE, MosaicScanConfig, Static


@dataclasses.dataclass(frozen=True)
class MosaicScan:
    """Backend "mosaic" of `vim_jax.ops.selective_scan`, with its options as fields.

    Hashable: pass an instance as `backend=` (or a model config's `scan_backend`); a jitted
    function taking it as a static argument is traced again for other options.

    config: tiles, ring and segments of the kernels (`MosaicScanConfig`).
    interpret: run the kernels in the Mosaic GPU interpreter (any platform, slow): the CPU tests.
    """

    config: MosaicScanConfig = MosaicScanConfig()
    interpret: bool = False

    def selective_scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        """See `vim_jax.ops.selective_scan`: u, delta, z [batch, length, channels]; A [channels, state];
        B, C [batch, length, state]; D, delta_bias [channels] (D, z, delta_bias may be None)."""
        availability.check_runnable((u, delta, A, B, C, D, z, delta_bias), self.interpret)
        add = lambda x: None if x is None else x[None]
        seg_len, _ = self._plan(u.shape, A.shape[-1], u.dtype, z is not None, ndir=1)
        static = Static(revs=(bool(reverse),), delta_softplus=bool(delta_softplus), scale=1.0,
                        has_z=z is not None, cfg=self.config, interpret=self.interpret, seg_len=seg_len)
        return vjp.scan(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(delta_bias), static)

    def selective_scan_bidirectional(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale):
        """See `vim_jax.ops.selective_scan_bidirectional`: both directions in one launch where the
        parked first direction fits in shared memory for a segment (up to about 350 tokens in
        float32), else two one-direction launches combined."""
        availability.check_runnable((u, delta, A, B, C, D, z, delta_bias), self.interpret)
        seg_len, fused = self._plan(u.shape[1:], A.shape[-1], u.dtype, z is not None, ndir=2)
        static = Static(revs=(False, True), delta_softplus=bool(delta_softplus), scale=float(out_scale),
                        has_z=z is not None, cfg=self.config, interpret=self.interpret, fused=fused,
                        seg_len=seg_len)
        return vjp.scan(u, delta, A, B, C, D, z, delta_bias, static)

    def _plan(self, shape, state, dtype, has_z, ndir):
        """(tokens per segment, fused) for inputs [batch, length, channels] (`segments.plan`)."""
        cfg = self.config
        batch, length, channels = shape
        itemsize = jnp.dtype(dtype).itemsize
        smem_of = lambda rows, dirs: forward.smem_bytes(
            rows, dirs, 2 * -(-state // STATE_MULTIPLE) * STATE_MULTIPLE, itemsize, itemsize, has_z, cfg.tile, cfg.stages,
            itemsize if cfg.park_in_output_dtype else 4, rings=2 if cfg.two_warpgroups and dirs == 2 and rows == length else 1)
        return segments.plan(length, batch, channels, ndir, cfg, smem_of)
