"""The Mosaic GPU selective-scan kernels, run by the Mosaic GPU interpreter on CPU.

The interpreter simulates shared memory, TMA copies and barriers, so these tests run the real
kernel body with its ring of slots. Shapes stay small (the interpreter executes every op of every
thread) but awkward: lengths that leave a ragged last tile, channel counts off the 128-channel CTA
width, more than one CTA along channels, an odd state count. The backward goes through the
fallback backends (`vjp.py`), so the gradient tests check that wiring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import pallas_kernels.mosaic_scan as ms
from pallas_kernels.mosaic_scan import availability
from tests.ops.scan_test_base import SelectiveScanTestBase, oracle, random_scan_inputs, rel_err
from vim_jax.ops import selective_scan, selective_scan_bidirectional


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv(availability.INTERPRET_ENV, "1")


class TestMosaic(SelectiveScanTestBase):
    backend = "mosaic"
    shapes = [(2, 33, 5, 3), (1, 21, 24, 4), (2, 17, 130, 5)]


def _f32(inputs):
    return {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}


@pytest.mark.parametrize("tile,stages", [(1, 1), (4, 2), (8, 3)])
@pytest.mark.parametrize("reverse", [False, True])
def test_ring_sizes_give_the_same_scan(tile, stages, reverse):
    """A ring of 1 to 3 slots, tiles of 1 to 8 tokens over 13 tokens (a ragged tile of 1 or 5)."""
    inputs = random_scan_inputs(80, 2, 13, 7, 4)
    ref, _ = oracle(inputs, reverse)
    a = _f32(inputs)
    out = ms.selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"],
                            True, reverse, config=ms.MosaicScanConfig(tile=tile, stages=stages))
    assert rel_err(out, ref) < 1e-5


def test_single_token():
    inputs = random_scan_inputs(81, 1, 1, 6, 2, lead=(2,))
    ref, _ = oracle(inputs, bidirectional=True)
    assert rel_err(selective_scan_bidirectional(**_f32(inputs), backend="mosaic"), ref) < 1e-5


def test_fused_bidirectional_refuses_what_does_not_fit_in_shared_memory():
    """Long sequences fall through to two one-direction launches (same values)."""
    inputs = _f32(random_scan_inputs(82, 1, 2000, 3, 2, lead=(2,)))
    with pytest.raises(NotImplementedError, match="shared memory"):
        ms.selective_scan_bidirectional(*(inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
                                        True, 0.5)


def test_not_runnable_without_hopper_or_interpret(monkeypatch):
    monkeypatch.setenv(availability.INTERPRET_ENV, "0")
    inputs = _f32(random_scan_inputs(83, 1, 9, 3, 2))
    if jax.default_backend() != "gpu":
        with pytest.raises(NotImplementedError, match="Hopper"):
            selective_scan(**inputs, backend="mosaic")
    assert selective_scan(**inputs, backend=("mosaic", "reference")).shape == (1, 9, 3)


def test_float64_falls_through():
    with jax.enable_x64(True):
        inputs = {k: jnp.asarray(v) for k, v in random_scan_inputs(84, 1, 9, 3, 2).items()}
        with pytest.raises(NotImplementedError, match="float32 and bfloat16"):
            selective_scan(**inputs, backend="mosaic")
        assert selective_scan(**inputs, backend=("mosaic", "reference")).dtype == jnp.float64


def test_not_a_default_backend():
    """Registered by name only, until a benchmark shows it faster (pallas_kernels/NOTES.md)."""
    from vim_jax.ops.selective_scan import candidate_backends, list_backends

    assert "mosaic" in list_backends()
    assert "mosaic" not in candidate_backends(None)
