"""The Pallas selective-scan kernels, run by the Pallas interpreter on CPU.

The shared base (the full suite) checks values and gradients against the float64 reference; the
fast tier interprets one kernel per path (one direction, fused with segments). The shapes keep
the interpreter's compile time small (a small state, a chunk of 4) while staying awkward: odd
lengths with a tail shorter than a chunk, channel counts that are not multiples of the channel
block, and several channel blocks. The tests below add the tails, segments, the fused
bidirectional path and the backend selection rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import pallas_kernels.selective_scan as pss
from pallas_kernels.selective_scan import tiling
from tests.ops.scan_test_base import ARG_NAMES, SelectiveScanTestBase, _evaluate, oracle, random_scan_inputs, rel_err
import vim_jax.ops
from vim_jax.ops import selective_scan

# Forward blocks of 16 channels (24 and 48 channels span 2 and 3 of them), backward blocks of 32
# (the warp-shuffle reduction), 2 tokens per chunk (the interpreter compiles a chunk unrolled).
SMALL = pss.ScanConfig(block_c=16, chunk=2, bwd_block_c=32, bwd_num_warps=1)


def interpreted(config=None):
    """The Pallas backend in interpret mode, with `config`'s tiling (None: the per-shape default)."""
    return pss.PallasScan(config=config, interpret=True)


@pytest.mark.slow  # interpreted kernels of every case of the shared base: minutes
class TestPallas(SelectiveScanTestBase):
    backend = interpreted(SMALL)
    # Lengths 33, 37 and 21 all leave a 1-token tail after chunks of 2 (and of 8, below); the
    # interpreter's time grows with the tokens, and more of them exercise no other code path.
    shapes = [(2, 33, 5, 3), (1, 37, 24, 4), (2, 21, 48, 5)]


def _check(backend, inputs, reverse=False, bidirectional=False, wrt=ARG_NAMES, tol=(1e-5, 1e-4)):
    ref, ref_g = oracle(inputs, reverse, bidirectional=bidirectional, wrt=wrt)
    args = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
    out, got = _evaluate(args, backend, reverse, bidirectional, 0.5, wrt)
    assert rel_err(out, ref) < tol[0]
    for name in wrt:
        assert rel_err(got[name], ref_g[name]) < tol[1], name


def test_one_direction_values_and_gradients():
    """The fast tier's one-direction kernels (the shared base runs in the full suite): a tail of
    1 token after chunks of 2, two forward channel blocks and a ragged backward one."""
    _check(interpreted(SMALL), random_scan_inputs(61, 2, 9, 20, 3))


# The two tiling cases below interpret bigger kernels (values and gradients): the slow tier.
@pytest.mark.slow
def test_tail_is_masked_not_skipped():
    """The default tiling (chunks of 8): 2 chunks and a tail of 5, scanned in reverse (so the tail
    is the sequence's first tokens), values and gradients. (A segment shorter than one chunk is
    in `test_segments_bidirectional`.)"""
    _check(interpreted(pss.ScanConfig()), random_scan_inputs(60, 2, 21, 40, 4), reverse=True)


def test_segments_bidirectional():
    """A sequence cut into segments (summaries + XLA chaining), both directions fused: 19 tokens in
    segments of two chunks of 4 and a last one shorter than a chunk, two forward channel blocks,
    and a backward block of 64 channels over 2 warps (cross-warp shuffle sums)."""
    config = pss.ScanConfig(block_c=16, chunk=4, seg_len=8, bwd_block_c=64, bwd_num_warps=2)
    _check(interpreted(config), random_scan_inputs(70, 1, 19, 20, 3, lead=(2,)), bidirectional=True)


@pytest.mark.slow
def test_segments_reverse_tree_reduction():
    _check(interpreted(pss.ScanConfig(block_c=32, chunk=2, seg_len=12, reduce="tree")),
           random_scan_inputs(71, 2, 31, 5, 4), reverse=True)


def test_backend_none_on_cpu_never_picks_pallas(monkeypatch):
    """On CPU the default order is reference then associative: the registered Pallas backend is
    never called."""
    calls = []
    monkeypatch.setattr(pss.PallasScan, "selective_scan", lambda *a: calls.append(a))
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in random_scan_inputs(72, 1, 9, 3, 2).items()}
    selective_scan(**inputs)
    assert not calls


def test_not_runnable_without_gpu_or_interpret():
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in random_scan_inputs(73, 1, 9, 3, 2).items()}
    if jax.default_backend() != "gpu":
        with pytest.raises(NotImplementedError, match="interpret"):
            selective_scan(**inputs, backend="pallas")
    assert selective_scan(**inputs, backend=("pallas", "reference")).shape == (1, 9, 3)


def test_options_are_static_arguments_not_globals():
    """A function jitted with one backend object is traced again for another: interpret mode off
    cannot run on CPU (falls through to the reference), on runs the kernel; both agree."""
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in random_scan_inputs(75, 1, 9, 3, 2).items()}
    traced = []

    def scan(inputs, backend):
        traced.append(backend)
        return selective_scan(**inputs, backend=(backend, "reference"))

    run = jax.jit(scan, static_argnums=1)
    interpreted_out = run(inputs, interpreted(SMALL))
    compiled_out = run(inputs, pss.PallasScan(config=SMALL))
    assert traced == [interpreted(SMALL), pss.PallasScan(config=SMALL)]
    assert rel_err(interpreted_out, compiled_out) < 1e-5
    assert "pallas" in vim_jax.ops.list_backends()


def test_float64_falls_through():
    with jax.enable_x64(True):
        inputs = {k: jnp.asarray(v) for k, v in random_scan_inputs(74, 1, 9, 3, 2).items()}
        with pytest.raises(NotImplementedError, match="float32 and bfloat16"):
            selective_scan(**inputs, backend=interpreted())
        out = selective_scan(**inputs, backend=(interpreted(), "reference"))
    assert out.dtype == jnp.float64


def test_segments_only_when_the_grid_is_small():
    """Vim-S at batch 128 fills the GPU without segments; batch 8 x 384 channels does not."""
    assert tiling.default_config(128, 197, 768).seg_len is None
    long = tiling.default_config(8, 6085, 384)
    assert long.seg_len is not None and long.seg_len % long.chunk == 0 and long.seg_len < 6085
