"""XLA compiler options for the jitted training and evaluation steps, per platform.

On a CPU, XLA (jax 0.10.2) hands reductions to YNNPACK fusions by default. The selective scan's
gradient reduces small state tensors at every token, and those reductions ran faster in XLA's own
loops: with YNNPACK kept to single matmuls, the sequential scan's gradient at README's CPU model's
shape (batch 128, 17 tokens, 128 channels, 8 states, both directions) took 38-41 ms of CPU time
instead of 57-63 ms, and the whole training step 1.15x less.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def _accepted(platform: str) -> bool:
    """Whether this jax's XLA compiles with `CPU_OPTIONS` (an experimental option, which other
    XLA versions may name differently or not have)."""
    try:
        x = jax.device_put(np.float32(0), jax.local_devices(backend=platform)[0])
        jax.jit(lambda x: x + 1).lower(x).compile(compiler_options=CPU_OPTIONS)
    except jax.errors.JaxRuntimeError:
        return False
    return True


def step_compiler_options(platform: str) -> dict:
    """Options for `jax.jit(..., compiler_options=...)` of the steps on `platform` ("cpu",
    "gpu", ...): `CPU_OPTIONS` on a CPU whose XLA accepts them, else none."""
    return dict(CPU_OPTIONS) if platform == "cpu" and _accepted(platform) else {}
