"""When the Mosaic GPU kernels can run: a Hopper GPU (TMA, sm_90), or the Pallas interpreter."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_SUPPORTED = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def check_runnable(arrays, interpret: bool) -> None:
    """Raises NotImplementedError unless the kernels can run here (or are interpreted)."""
    if not interpret:
        if jax.default_backend() != "gpu":
            raise NotImplementedError(
                f"mosaic selective scan needs a Hopper GPU (default backend is {jax.default_backend()!r}); "
                "use MosaicScan(interpret=True) to interpret it")
        capability = getattr(jax.devices()[0], "compute_capability", "")
        if not str(capability).startswith("9."):
            raise NotImplementedError(
                f"mosaic selective scan is written for Hopper (sm_90), found compute capability {capability!r}")
    for x in arrays:
        if x is not None and jnp.dtype(x.dtype) not in _SUPPORTED:
            raise NotImplementedError(f"mosaic selective scan supports float32 and bfloat16, got {x.dtype}")


# Hopper's H100 and H200 (SXM): the count planned for where no GPU is present (interpreted runs).
DEFAULT_MULTIPROCESSORS = 132


def multiprocessor_count() -> int:
    """Streaming multiprocessors of the default device (132 where it reports none, as on CPU)."""
    device = jax.devices()[0]
    count = getattr(device, "core_count", None) if device.platform == "gpu" else None
    return int(count) if count else DEFAULT_MULTIPROCESSORS
