"""Backend "triton" off a GPU: it refuses every call with NotImplementedError, so the op falls
through to the next backend (with or without triton and jax-triton installed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from tests.ops.scan_test_base import oracle, random_scan_inputs, rel_err
from vim_jax.ops import candidate_backends, list_backends, selective_scan, selective_scan_bidirectional

pytestmark = pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the behaviour off GPUs")


def _inputs(seed, lead=()):
    return random_scan_inputs(seed, 1, 9, 3, 2, lead=lead)


def test_calls_raise_not_implemented_and_fall_through():
    assert "triton" in list_backends() and "triton" not in candidate_backends()
    raw = _inputs(0)
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in raw.items()}
    with pytest.raises(NotImplementedError, match="triton: .*CUDA GPU"):
        selective_scan(**inputs, backend="triton")
    out = selective_scan(**inputs, backend=("triton", "reference"))
    assert rel_err(out, oracle(raw)[0]) < 1e-5


def test_bidirectional_falls_through():
    raw = _inputs(1, lead=(2,))
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in raw.items()}
    with pytest.raises(NotImplementedError, match="triton"):
        selective_scan_bidirectional(**inputs, backend="triton")
    out = selective_scan_bidirectional(**inputs, backend=("triton", "reference"))
    assert rel_err(out, oracle(raw, bidirectional=True)[0]) < 1e-5
