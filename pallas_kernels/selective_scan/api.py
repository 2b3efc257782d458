"""The backend object, its availability checks and the argument preparation of both entry points."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from pallas_kernels.selective_scan import vjp
from pallas_kernels.selective_scan.tiling import Geometry, ScanConfig, default_config

_SUPPORTED = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


@dataclasses.dataclass(frozen=True)
class PallasScan:
    """Backend "pallas" of `vim_jax.ops.selective_scan`, with its options as fields.

    Pass an instance as `backend=` (or as a model config's `scan_backend`); it is hashable, so a
    jitted function taking it as a static argument is traced again for other options.

    config: the tiling of every call; None picks one per shape (`tiling.default_config`).
    interpret: run the kernels in the Pallas interpreter (any platform, slow): the CPU tests.
    """

    config: ScanConfig | None = None
    interpret: bool = False
    # Not fields: a subclass running other kernels with the same layouts (such as
    # `pallas_kernels.triton_scan.TritonScan`) sets its launchers and its name for messages.
    kernels: ClassVar[vjp.Kernels] = vjp.PALLAS
    name: ClassVar[str] = "pallas"

    def selective_scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        """See `vim_jax.ops.selective_scan`: u, delta, z [batch, length, channels]; A [channels, state];
        B, C [batch, length, state]; D, delta_bias [channels] (D, z, delta_bias may be None)."""
        self.check_runnable(u, delta, A, B, C, D, z, delta_bias)
        add = lambda x: None if x is None else x[None]
        return self.run(add(u), add(delta), add(A), add(B), add(C), add(D), z, add(delta_bias),
                        delta_softplus, (bool(reverse),), 1.0)

    def selective_scan_bidirectional(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale):
        """See `vim_jax.ops.selective_scan_bidirectional`; inputs but z carry a leading axis of 2.

        Both directions run in one launch, combined in-kernel: each forward program runs direction
        0 over its tokens, parks `out_scale * y_fwd` in a float32 buffer, then runs direction 1 over
        the same tokens and writes `(parked + out_scale * y_bwd) * silu(z)`: one output write, one
        read of z, no flipped copies. The backward is one launch with the direction as a grid axis.
        """
        self.check_runnable(u, delta, A, B, C, D, z, delta_bias)
        return self.run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, (False, True), float(out_scale))

    def check_runnable(self, *arrays) -> None:
        """Raises NotImplementedError unless the kernels can run here."""
        if not self.interpret:
            require_cuda_gpu(self.name, f"use {type(self).__name__}(interpret=True) to interpret it")
        require_dtypes(self.name, arrays)

    def run(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, revs, scale):
        """Direction-stacked inputs (leading axis len(revs)) -> out [batch, length, channels]."""
        ndir = len(revs)
        channels = u.shape[-1]
        if D is None:
            D = jnp.zeros((ndir, channels), jnp.float32)
        if delta_bias is None:
            delta_bias = jnp.zeros((ndir, channels), jnp.float32)
        has_z = z is not None
        if not has_z:
            z = jnp.zeros((1,), u.dtype)  # placeholder: the kernels never read it
        batch, length = u.shape[1:3]
        cfg = default_config(batch, length, channels, self.config)
        for c in (cfg, cfg.backward()):
            if Geometry(batch, length, channels, A.shape[-1], c).max_elements(ndir) >= 2**31:
                raise NotImplementedError(f"{self.name} selective scan: arrays too large for int32 offsets")
        static = vjp.Static(revs=tuple(revs), delta_softplus=bool(delta_softplus), scale=float(scale),
                            has_z=has_z, cfg=cfg, interpret=self.interpret, kernels=self.kernels)
        return vjp.scan(u, delta, A, B, C, D, z, delta_bias, static)


def require_cuda_gpu(name: str, hint: str) -> None:
    """NotImplementedError unless jax runs on a CUDA GPU (the kernels emit PTX)."""
    if jax.default_backend() != "gpu":
        raise NotImplementedError(
            f"{name} selective scan needs a CUDA GPU (default backend is {jax.default_backend()!r}); {hint}")
    version = getattr(jax.devices()[0].client, "platform_version", "").lower()
    if "rocm" in version or "hip" in version:
        raise NotImplementedError(f"{name} selective scan emits PTX: CUDA GPUs only")


def require_dtypes(name: str, arrays) -> None:
    """NotImplementedError for arrays other than float32 and bfloat16 (None is skipped)."""
    for x in arrays:
        if x is not None and jnp.dtype(x.dtype) not in _SUPPORTED:
            raise NotImplementedError(f"{name} selective scan supports float32 and bfloat16, got {x.dtype}")
