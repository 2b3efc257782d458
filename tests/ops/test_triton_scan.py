"""The Triton selective-scan kernels (`pallas_kernels.triton_scan`) in Triton's interpreter on CPU.

The interpreter runs the kernel bodies themselves (the GPU-only inline assembly aside: `tl.exp2`
for `ex2.approx`, a gather for the warp shuffle, see `kernels.py`) through the backend's real
custom VJP, so the shared base checks values and all eight gradients against the float64
reference. The shapes keep the interpreter quick while staying awkward: tails shorter than a
chunk, channel counts that are not multiples of the block, several blocks. Triton decides between
interpreter and compiler when it is first imported, so this module turns the interpreter on
before importing it.
"""

from __future__ import annotations

import os
import sys

import pytest

if "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="the triton package is not installed (pip install triton)")
pytest.importorskip("torch", reason="Triton's interpreter runs on torch CPU tensors")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pallas_kernels.selective_scan.tiling import ScanConfig  # noqa: E402
from pallas_kernels.triton_scan import TritonScan  # noqa: E402
from tests.ops.scan_test_base import (ARG_NAMES, SelectiveScanTestBase, oracle,  # noqa: E402
                                      random_scan_inputs, rel_err)
from vim_jax.ops import selective_scan  # noqa: E402

# The Pallas tests' tiling: forward blocks of 16 channels (24 and 48 channels span 2 and 3 of
# them), backward blocks of 32 (the warp reduce-scatter), 2 tokens per chunk (the interpreter's
# time grows with the unrolling).
SMALL = ScanConfig(block_c=16, chunk=2, bwd_block_c=32, bwd_num_warps=1)
INTERPRETED = TritonScan(config=SMALL, interpret=True)


@pytest.fixture(autouse=True, scope="module")
def interpreter_on():
    from pallas_kernels.triton_scan import launch

    try:
        launch.interpreted_kernels()
    except NotImplementedError as e:  # triton came in before this module: run the file on its own
        pytest.skip(str(e))


@pytest.mark.slow  # Triton's interpreter over the whole shared base takes minutes
class TestTritonInterpreted(SelectiveScanTestBase):
    backend = INTERPRETED
    # Lengths 11, 13 and 9 leave a 1-token tail after chunks of 2 (the interpreter's time grows
    # with the tokens and programs).
    shapes = [(2, 11, 5, 3), (1, 13, 24, 4), (2, 9, 48, 5)]


def _check(config, inputs, reverse=False, bidirectional=False):
    """Values and the eight gradients of one call against the float64 reference."""
    scan = TritonScan(config=config, interpret=True)
    ref, ref_g = oracle(inputs, reverse, bidirectional=bidirectional, wrt=ARG_NAMES)
    args = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}

    def f(diff):
        x = [{**args, **diff}[k] for k in ARG_NAMES]
        if bidirectional:
            return scan.selective_scan_bidirectional(*x, True, 0.5)
        return scan.selective_scan(*x, True, reverse)

    out = f({})
    cot = jnp.asarray(np.random.default_rng(123).standard_normal(out.shape), jnp.float32)
    got = jax.grad(lambda d: jnp.sum(f(d) * cot))({k: args[k] for k in ARG_NAMES})
    assert rel_err(out, ref) < 1e-5
    for name in ARG_NAMES:
        assert rel_err(got[name], ref_g[name]) < 1e-4, name


@pytest.mark.slow  # the fast tier interprets the fused, segmented kernels below
def test_default_chunk_with_tail_reverse():
    """Chunks of 8 (the GPU default): 2 chunks and a tail of 5, scanned in reverse."""
    _check(ScanConfig(chunk=8, block_c=32, bwd_block_c=32), random_scan_inputs(60, 1, 21, 40, 4), reverse=True)


def test_segments_bidirectional_two_warp_shuffle_sums():
    """Segments (summary kernels + XLA chaining), both directions fused, a ragged last segment,
    and a backward block of 64 channels over 2 warps (the reduce-scatter adds the warps up)."""
    _check(ScanConfig(block_c=32, chunk=4, seg_len=8, bwd_block_c=64, bwd_num_warps=2),
           random_scan_inputs(70, 1, 11, 40, 3, lead=(2,)), bidirectional=True)


@pytest.mark.slow
def test_segments_reverse_tree_reduction():
    _check(ScanConfig(block_c=32, chunk=2, seg_len=12, reduce="tree"), random_scan_inputs(71, 1, 23, 5, 4),
           reverse=True)


def test_float64_falls_through():
    with jax.enable_x64(True):
        inputs = {k: jnp.asarray(v) for k, v in random_scan_inputs(74, 1, 9, 3, 2).items()}
        with pytest.raises(NotImplementedError, match="float32 and bfloat16"):
            selective_scan(**inputs, backend=INTERPRETED)
        out = selective_scan(**inputs, backend=(INTERPRETED, "reference"))
    assert out.dtype == jnp.float64
