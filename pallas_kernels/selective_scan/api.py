"""Availability checks, the interpret switch and argument preparation shared by both entry points."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from pallas_kernels.selective_scan import vjp
from pallas_kernels.selective_scan.tiling import Geometry, ScanConfig, default_config

_SUPPORTED = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
_interpret_override: bool | None = None
_config_override: ScanConfig | None = None


def set_interpret(flag: bool | None) -> None:
    """Runs the kernels in Pallas interpret mode (any platform, slow) when True; None defers to the
    environment variable VIM_JAX_PALLAS_INTERPRET ('1' enables)."""
    global _interpret_override
    _interpret_override = None if flag is None else bool(flag)


def interpret_enabled() -> bool:
    if _interpret_override is not None:
        return _interpret_override
    return os.environ.get("VIM_JAX_PALLAS_INTERPRET", "").strip().lower() in ("1", "true", "yes")


def set_config(config: ScanConfig | None) -> None:
    """Forces one tiling for every call (benchmarks, tests); None restores the per-shape default."""
    global _config_override
    _config_override = config


def config_override() -> ScanConfig | None:
    """The tiling `set_config` forced, or None."""
    return _config_override


def check_runnable(*arrays) -> bool:
    """Raises NotImplementedError unless the kernels can run here; returns the interpret flag."""
    interpret = interpret_enabled()
    if not interpret:
        require_cuda_gpu("pallas", "set VIM_JAX_PALLAS_INTERPRET=1 to interpret it")
    require_dtypes("pallas", arrays)
    return interpret


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


def run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, revs, scale, interpret, *,
        config: ScanConfig | None = None, kernels: vjp.Kernels = vjp.PALLAS, name: str = "pallas"):
    """Direction-stacked inputs (leading axis len(revs)) -> out [batch, length, channels].

    config: the tiling (None: the per-shape default); kernels: the launchers
    (the Pallas ones, or another backend's with the same layouts); name: for error messages."""
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
    cfg = default_config(batch, length, channels, config)
    for c in (cfg, cfg.backward()):
        if Geometry(batch, length, channels, A.shape[-1], c).max_elements(ndir) >= 2**31:
            raise NotImplementedError(f"{name} selective scan: arrays too large for int32 offsets")
    static = vjp.Static(revs=tuple(revs), delta_softplus=bool(delta_softplus), scale=float(scale),
                        has_z=has_z, cfg=cfg, interpret=interpret, kernels=kernels)
    return vjp.scan(u, delta, A, B, C, D, z, delta_bias, static)
