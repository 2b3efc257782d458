"""`MosaicScan`: the Mosaic GPU kernels as a selective-scan backend object, options as fields."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from pallas_kernels.mosaic_scan import availability, conv_vjp, forward, segments, vjp
from pallas_kernels.mosaic_scan.config import (RANK_MULTIPLE, STATE_MULTIPLE, ConvPrologue, MosaicScanConfig,
                                               Static)


@dataclasses.dataclass(frozen=True)
class MosaicScan:
    """Backend "mosaic" of `vim_jax.ops.selective_scan` (and of `vim_jax.ops.conv_selective_scan`,
    whose conv prologue the forward kernel computes in registers), with its options as fields.

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
        static = self._static(u.shape, A.shape[-1], u.dtype, z, (bool(reverse),), 1.0, delta_softplus)
        return vjp.scan(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(delta_bias), static)

    def selective_scan_bidirectional(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale):
        """See `vim_jax.ops.selective_scan_bidirectional`: both directions in one launch where the
        parked first direction fits in shared memory for a segment (up to about 350 tokens in
        float32), else two one-direction launches combined."""
        availability.check_runnable((u, delta, A, B, C, D, z, delta_bias), self.interpret)
        static = self._static(u.shape[1:], A.shape[-1], u.dtype, z, (False, True), out_scale, delta_softplus)
        return vjp.scan(u, delta, A, B, C, D, z, delta_bias, static)

    def conv_selective_scan(self, x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias, reverse):
        """See `vim_jax.ops.conv_selective_scan`: x, z [batch, length, channels]; conv_w [d_conv,
        channels]; conv_b [channels]; dt_low [batch, length, dt_rank]; dt_w [dt_rank, channels];
        the rest as `selective_scan`'s. The forward computes u and delta per token in registers."""
        availability.check_runnable((x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias), self.interpret)
        add = lambda a: None if a is None else a[None]
        static = self._static(x.shape, A.shape[-1], x.dtype, z, (bool(reverse),), 1.0, True,
                              ConvPrologue(conv_w.shape[0], dt_low.shape[-1]))
        return conv_vjp.scan(x, *map(add, (conv_w, conv_b, dt_low, dt_w, A, B, C, D)), z, add(delta_bias), static)

    def conv_selective_scan_bidirectional(self, x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias,
                                          out_scale):
        """See `vim_jax.ops.conv_selective_scan_bidirectional`: fused or two launches as
        `selective_scan_bidirectional`, both directions convolving the same x."""
        availability.check_runnable((x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias), self.interpret)
        static = self._static(x.shape, A.shape[-1], x.dtype, z, (False, True), out_scale, True,
                              ConvPrologue(conv_w.shape[1], dt_low.shape[-1]))
        return conv_vjp.scan(x, conv_w, conv_b, dt_low, dt_w, A, B, C, D, z, delta_bias, static)

    def _static(self, shape, state, dtype, z, revs, scale, delta_softplus, prologue=None):
        """The call's settings, segments and fusion planned for inputs [batch, length, channels]."""
        seg_len, fused = self._plan(shape, state, dtype, z is not None, len(revs), prologue)
        return Static(revs=revs, delta_softplus=bool(delta_softplus), scale=float(scale), has_z=z is not None,
                      cfg=self.config, interpret=self.interpret, fused=fused, seg_len=seg_len, prologue=prologue)

    def _plan(self, shape, state, dtype, has_z, ndir, prologue=None):
        """(tokens per segment, fused) for inputs [batch, length, channels] (`segments.plan`)."""
        cfg = self.config
        batch, length, channels = shape
        itemsize = jnp.dtype(dtype).itemsize
        row_cols = 2 * -(-state // STATE_MULTIPLE) * STATE_MULTIPLE
        if prologue is not None:
            row_cols += -(-prologue.dt_rank // RANK_MULTIPLE) * RANK_MULTIPLE
        smem_of = lambda rows, dirs: forward.smem_bytes(
            rows, dirs, row_cols, itemsize, itemsize, has_z, cfg.tile, cfg.stages,
            itemsize if cfg.park_in_output_dtype else 4, rings=2 if cfg.two_warpgroups and dirs == 2 and rows == length else 1,
            act_rows=1 if prologue is not None else 2)
        return segments.plan(length, batch, channels, ndir, cfg, smem_of)
