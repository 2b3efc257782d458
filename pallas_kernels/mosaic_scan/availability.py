"""When the Mosaic GPU kernels can run: a Hopper GPU (TMA, sm_90), or the Pallas interpreter."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

_SUPPORTED = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
INTERPRET_ENV = "VIM_JAX_MOSAIC_INTERPRET"


def interpret_requested(interpret: bool | None) -> bool:
    """`interpret` if given, else env VIM_JAX_MOSAIC_INTERPRET ('1' runs the kernels interpreted)."""
    if interpret is not None:
        return bool(interpret)
    return os.environ.get(INTERPRET_ENV, "").strip().lower() in ("1", "true", "yes")


def check_runnable(arrays, interpret: bool | None) -> bool:
    """Raises NotImplementedError unless the kernels can run here; returns the interpret flag."""
    interpret = interpret_requested(interpret)
    if not interpret:
        if jax.default_backend() != "gpu":
            raise NotImplementedError(
                f"mosaic selective scan needs a Hopper GPU (default backend is {jax.default_backend()!r}); "
                f"set {INTERPRET_ENV}=1 to interpret it")
        capability = getattr(jax.devices()[0], "compute_capability", "")
        if not str(capability).startswith("9."):
            raise NotImplementedError(
                f"mosaic selective scan is written for Hopper (sm_90), found compute capability {capability!r}")
    for x in arrays:
        if x is not None and jnp.dtype(x.dtype) not in _SUPPORTED:
            raise NotImplementedError(f"mosaic selective scan supports float32 and bfloat16, got {x.dtype}")
    return interpret
