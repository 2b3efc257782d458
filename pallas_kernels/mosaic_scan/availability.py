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
