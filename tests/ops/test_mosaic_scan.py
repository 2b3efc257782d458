"""The Mosaic GPU selective-scan kernels, run by the Mosaic GPU interpreter on CPU.

The interpreter simulates shared memory, TMA copies and barriers, so these tests run the real
kernel body with its ring of slots. Shapes stay small (the interpreter executes every op of every
thread) but awkward: lengths that leave a ragged last tile, channel counts off the 128-channel CTA
width, more than one CTA along channels, an odd state count. Gradients run the Mosaic backward
kernel (`backward.py`) unless it is switched off, when they go through the fallback backends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels.mosaic_scan as ms
from tests.ops.scan_test_base import (ARG_NAMES, SelectiveScanTestBase, _evaluate, equations, oracle,
                                     random_scan_inputs, rel_err)
from vim_jax.ops import selective_scan, selective_scan_bidirectional


def interpreted(**config):
    """The interpreted backend with the Mosaic backward on, whatever the (tiny) number of CTAs."""
    return ms.MosaicScan(ms.MosaicScanConfig(**{"mosaic_backward": True, "bwd_min_ctas": 0, **config}), interpret=True)


INTERPRETED = interpreted()
pytestmark = pytest.mark.usefixtures("release_after_each_test")
# The fast tier interprets one kernel per path: one direction, both directions fused, segments,
# the backward (on and switched off); the other tilings and cases of these paths, and the shared
# base, are in the full suite.
SLOW = pytest.mark.slow


@SLOW  # the interpreter runs every op of every thread: minutes for the shared base
class TestMosaic(SelectiveScanTestBase):
    backend = INTERPRETED
    # Interpreting costs seconds per call: a few tiles of 16 tokens, 1 or 2 CTAs of 128 channels.
    shapes = [(2, 19, 5, 3), (1, 33, 24, 4), (1, 17, 130, 5)]


@SLOW
class TestMosaicSegments(SelectiveScanTestBase):
    """The shared base with every sequence cut into 3 segments (summary pass, entry states chained
    in the output pass, a shorter last segment), fused two directions included."""

    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=4, stages=2, segments=3), interpret=True)
    shapes = [(2, 19, 5, 3), (1, 33, 24, 4), (1, 17, 130, 5)]
    # Segments cut the forward pass only: the gradients of these calls are the fallback's (fewer
    # CTAs than `bwd_min_ctas`), or else the backward kernel's, which takes the inputs and no
    # forward state; both are checked elsewhere (the kernel by TestMosaic on the same inputs, the
    # fallbacks in test_selective_scan.py).
    test_gradients_match_float64_reference = None


def _f32(inputs):
    return {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}


@pytest.mark.parametrize("tile,stages,reverse", [pytest.param(1, 1, True, marks=SLOW), (4, 2, False),
                                                 pytest.param(4, 3, True, marks=SLOW)])
def test_ring_sizes_give_the_same_scan(tile, stages, reverse):
    """Rings of 1 to 3 slots, tiles of 1 or 4 tokens over 9 tokens (a ragged tile of 1)."""
    inputs = random_scan_inputs(80, 1, 9, 7, 4)
    ref, _ = oracle(inputs, reverse)
    a = _f32(inputs)
    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=tile, stages=stages), interpret=True)
    out = selective_scan(**a, reverse=reverse, backend=backend)
    assert rel_err(out, ref) < 1e-5


def _gradients_match(inputs, backend, reverse=False, bidirectional=False, wrt=ARG_NAMES, dtype=jnp.float32,
                     tol=1e-4):
    ref, ref_g = oracle(inputs, reverse, bidirectional=bidirectional, wrt=wrt)
    args = {k: jnp.asarray(v, dtype) for k, v in inputs.items()}
    out, got = _evaluate(args, backend, reverse, bidirectional, 0.5, wrt)
    assert rel_err(out, ref) < (1e-5 if dtype == jnp.float32 else 1e-2)
    for name in wrt:
        assert got[name].shape == ref_g[name].shape and got[name].dtype == dtype, name
        assert rel_err(got[name], ref_g[name]) < tol, name


@pytest.mark.parametrize("bwd_chunk,ckpt_chunks,reverse",
                         [(1, 4, False), (2, 3, True), (4, 2, False), (3, 1, True), (16, 4, True)])
@SLOW  # the fast tier's backward is test_switched_off_backward_runs_the_fallback's
def test_backward_chunks_and_segments_give_the_same_gradients(bwd_chunk, ckpt_chunks, reverse):
    """Chunks of 1 to 16 tokens over 9, segments of 1 to 4 chunks: ragged last chunks (of 1 and 3
    tokens) alone in the last segment or behind full ones, a ragged last segment, one chunk
    longer than the sequence; both scan orders, an odd state count."""
    inputs = random_scan_inputs(90 + bwd_chunk, 1, 9, 7, 3)
    _gradients_match(inputs, interpreted(tile=4, bwd_chunk=bwd_chunk, ckpt_chunks=ckpt_chunks), reverse)


@pytest.mark.parametrize("length,bwd_chunk,ckpt_chunks,segments,reverse", [
    (19, 2, 1, 3, False),  # segments of 8, 8 and 3 tokens: a ragged last chunk in a short last segment
    pytest.param(19, 2, 2, 3, True, marks=SLOW),  # two checkpoint groups per segment
    pytest.param(16, 4, 1, 4, False, marks=SLOW),  # one chunk per segment, none ragged
])
def test_segmented_backward_gives_the_same_gradients(length, bwd_chunk, ckpt_chunks, segments, reverse):
    """The backward cut along the sequence: a summary launch (every segment's end state and
    adjoint from zero), then each segment's CTA chains the others' into its entry state and its
    incoming adjoint; its partial sums of dA, dD, d delta_bias add up in XLA."""
    inputs = random_scan_inputs(101 + length, 1, length, 5, 3)
    backend = interpreted(tile=4, bwd_chunk=bwd_chunk, ckpt_chunks=ckpt_chunks, bwd_segments=segments)
    _gradients_match(inputs, backend, reverse)


@pytest.mark.parametrize("length,bwd_chunk,bidirectional,reverse,segments", [
    pytest.param(9, 4, False, True, 0, marks=SLOW),  # a ragged last chunk (of 1 token) at the sequence's start
    pytest.param(19, 8, True, False, 0, marks=SLOW),  # fused: the direction picks the block's end
    pytest.param(19, 4, False, False, 2, marks=SLOW),  # segments: chunks counted over the sequence
])
def test_backward_with_b_and_c_staged_in_shared_memory(length, bwd_chunk, bidirectional, reverse, segments):
    """`bwd_stage_bc`: each chunk's rows of B and C come from shared memory, staged by one load
    per thread (4 or 8 tokens x 2 x 16 padded states: one or two blocks of 128)."""
    lead = (2,) if bidirectional else ()
    inputs = random_scan_inputs(103 + length, 1, length, 5, 3, lead=lead)
    backend = interpreted(tile=4, bwd_chunk=bwd_chunk, bwd_stage_bc=True, bwd_segments=segments or 1)
    _gradients_match(inputs, backend, reverse, bidirectional=bidirectional)


@pytest.mark.parametrize("bidirectional", [pytest.param(False, marks=SLOW), pytest.param(True, marks=SLOW)])
def test_backward_keeping_the_decays_gives_the_same_gradients(bidirectional):
    """`bwd_keep_decays`: the adjoint uses the decays its chunk's recompute computed (a ragged
    last chunk of 1 token included)."""
    lead = (2,) if bidirectional else ()
    inputs = random_scan_inputs(105, 1, 9, 5, 3, lead=lead)
    _gradients_match(inputs, interpreted(tile=4, bwd_keep_decays=True), reverse=True, bidirectional=bidirectional)
    # and the kernels' code computes fewer exponentials
    assert (_exp2_count(inputs, interpreted(tile=4, bwd_keep_decays=True), bidirectional)
            < _exp2_count(inputs, interpreted(tile=4), bidirectional))


def _exp2_count(inputs, backend, bidirectional):
    """How many exp2 operations the code of a scan's value and gradient holds (traced, not run)."""
    scan = selective_scan_bidirectional if bidirectional else selective_scan
    loss = lambda a: jnp.sum(scan(**a, backend=backend))
    return _primitive_count(jax.make_jaxpr(jax.grad(loss))(_f32(inputs)).jaxpr, "exp2")


def _primitive_count(jaxpr, name):
    """Occurrences of primitive `name` in a jaxpr and every jaxpr nested in its equations."""
    return sum(eqn.primitive.name == name for eqn in equations(jaxpr))


@SLOW
def test_fused_bidirectional_segmented_backward():
    inputs = random_scan_inputs(102, 1, 13, 5, 2, lead=(2,))
    _gradients_match(inputs, interpreted(tile=4, bwd_chunk=3, bwd_segments=2), bidirectional=True)


def test_backward_segments_follow_the_cta_count():
    """`bwd_segments=0` (the default) plans as the forward's segments do, for the backward's CTAs (one per
    direction, batch row and channel block) and in whole checkpoint groups of chunks."""
    from pallas_kernels.mosaic_scan import backward

    auto = ms.MosaicScanConfig()
    assert backward.segment_len(6085, 24, 4, auto) == 556  # 11 segments: 2 CTAs per multiprocessor
    # both directions: 11 segments in two full waves, not 6 in one wave and a short-handed second
    assert backward.segment_len(6085, 48, 4, auto) == 556
    assert backward.segment_len(6085, 6, 4, auto) == 140  # 44 segments fill one wave; 47 would need two
    assert backward.segment_len(197, 768, 4, auto) == 197  # the GPU is full already
    assert backward.segment_len(6085, 24, 4, ms.MosaicScanConfig(bwd_segments=1)) == 6085  # never
    assert backward.segment_len(200, 24, 4, auto) == 200  # two segments would be under min_segment
    assert backward.segment_len(6085, 24, 8, ms.MosaicScanConfig(bwd_segments=4)) == 1528


@pytest.mark.parametrize("ablation,changed", [
    # only the channel sums are skipped: every other gradient is exact
    pytest.param("no_sums", {"B", "C"}, marks=SLOW),
    # dD = sum(dy u) never reads B or C
    pytest.param("bc_once", {"out", "u", "delta", "A", "B", "C", "z", "delta_bias"}, marks=SLOW),
    pytest.param("no_exp", {"out", "u", "delta", "A", "B", "C", "D", "z", "delta_bias"}, marks=SLOW),
])
def test_timing_ablations_remove_what_they_name(ablation, changed):
    """The timing-only ablations (wrong values by design) run forward and backward and change
    exactly the results that depend on the work they take out."""
    inputs = _f32(random_scan_inputs(98, 1, 9, 5, 2))
    exact = _evaluate(inputs, interpreted(tile=4), False, False, 1.0, ARG_NAMES)
    ablated = _evaluate(inputs, interpreted(tile=4, ablation=ablation), False, False, 1.0, ARG_NAMES)
    flat = lambda r: {"out": r[0], **r[1]}
    exact, ablated = flat(exact), flat(ablated)
    for name in exact:
        if name in changed:
            assert not np.allclose(ablated[name], exact[name], rtol=1e-3, atol=0), name
        else:
            np.testing.assert_array_equal(ablated[name], exact[name], err_msg=name)


def test_options_off_by_default_give_the_same_gradients_together():
    """The fast tier's case of the non-default settings of `bwd_stage_bc` (off: B and C read
    from global memory), `bwd_keep_decays` and `poly_exp_states` (each has its own cases in the
    full suite): all three, one direction reversed, a ragged last chunk."""
    inputs = random_scan_inputs(106, 1, 9, 5, 3)
    backend = interpreted(tile=4, bwd_stage_bc=False, bwd_keep_decays=True, poly_exp_states=2)
    _gradients_match(inputs, backend, reverse=True)


def test_exp2_on_the_fma_units_is_as_accurate_as_ex2_approx():
    """`exp2_fma` over the decays' whole range (every float32 exponent), within ex2.approx's 2 ulp;
    exactly 1 at 0 (decays near 1 compound over long sequences); clamped outside the normal range."""
    from pallas_kernels.mosaic_scan.scan_math import exp2_fma

    x = np.concatenate([np.linspace(-126, 0, 400_001), -np.geomspace(1e-9, 1e-2, 1000)]).astype(np.float32)
    got = np.asarray(jax.jit(exp2_fma)(x), np.float64)
    want = np.exp2(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.4e-7
    assert float(exp2_fma(jnp.float32(0.0))) == 1.0
    assert float(exp2_fma(jnp.float32(-500.0))) == 2.0 ** -126


@pytest.mark.parametrize("poly_exp_states,bidirectional", [pytest.param(2, False, marks=SLOW),
                                                            pytest.param(5, True, marks=SLOW)])
def test_decays_on_the_fma_units_give_the_same_scan(poly_exp_states, bidirectional):
    """`poly_exp_states`: some (2 of 5) or all of a token's decays by `exp2_fma`, forward and
    backward kernels, against the float64 oracle at the usual float32 tolerances."""
    lead = (2,) if bidirectional else ()
    inputs = random_scan_inputs(104, 1, 9, 5, 5, lead=lead)
    _gradients_match(inputs, interpreted(tile=4, poly_exp_states=poly_exp_states), bidirectional=bidirectional)
    assert (_exp2_count(inputs, interpreted(tile=4, poly_exp_states=poly_exp_states), bidirectional)
            < _exp2_count(inputs, interpreted(tile=4), bidirectional))


def test_unknown_ablation_is_refused():
    with pytest.raises(ValueError, match="ablation"):
        ms.MosaicScanConfig(ablation="no_loads")


@SLOW
def test_backward_over_two_channel_blocks_and_batch_rows():
    """130 channels (two CTAs, the second nearly all padding) and two batch rows: the partial sums
    of dB, dC (over channel blocks) and of dA, dD, d delta_bias (over batch rows)."""
    inputs = random_scan_inputs(95, 2, 4, 130, 2)
    _gradients_match(inputs, interpreted(tile=4), reverse=True)


@SLOW
def test_fused_bidirectional_backward():
    inputs = random_scan_inputs(96, 1, 5, 5, 2, lead=(2,))
    _gradients_match(inputs, interpreted(tile=4, bwd_chunk=2),
                     bidirectional=True)


@SLOW
def test_backward_without_optional_arguments():
    """No D, z or delta_bias (their gradients are not asked for) and no softplus on delta."""
    inputs = random_scan_inputs(97, 1, 6, 5, 2)
    bare = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    bare["delta"] = np.logaddexp(0.0, bare["delta"])  # without softplus, delta must stay positive
    wrt = ("u", "delta", "A", "B", "C")
    with jax.enable_x64(True):
        f = lambda backend, dtype: jax.grad(
            lambda d: jnp.sum(selective_scan(**{k: jnp.asarray(v, dtype) for k, v in bare.items()} | d,
                                             delta_softplus=False, backend=backend) ** 2))(
            {k: jnp.asarray(bare[k], dtype) for k in wrt})
        ref = f("reference", jnp.float64)
    got = f(interpreted(tile=4), jnp.float32)
    for name in wrt:
        assert rel_err(got[name], ref[name]) < 1e-4, name


@SLOW
def test_bfloat16_gradients():
    inputs = random_scan_inputs(98, 1, 9, 7, 4)
    rounded = {k: np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64) for k, v in inputs.items()}
    _gradients_match(rounded, interpreted(tile=4),
                     dtype=jnp.bfloat16, tol=2e-2)


@pytest.fixture
def backward_traces(monkeypatch):
    """A list that gets an entry each time the Mosaic backward kernel is traced."""
    from pallas_kernels.mosaic_scan import backward

    traced = []
    real = backward.scan_backward
    monkeypatch.setattr(backward, "scan_backward", lambda *a, **k: traced.append(1) or real(*a, **k))
    return traced


def test_switched_off_backward_runs_the_fallback(backward_traces):
    """`mosaic_backward=False`: the differentiated call is the fallback's, with the same gradients."""
    inputs = random_scan_inputs(99, 1, 5, 3, 2)
    _gradients_match(inputs, interpreted(tile=4, mosaic_backward=False), wrt=("u", "A", "B"))
    assert not backward_traces
    _gradients_match(inputs, interpreted(tile=4), wrt=("u", "A", "B"))
    assert backward_traces


@SLOW
def test_few_ctas_take_the_fallback_backward(backward_traces):
    """Below `bwd_min_ctas` CTAs (here 2: two batch rows of one channel block) the backward is
    the fallback's."""
    inputs = random_scan_inputs(100, 2, 5, 3, 2)
    _gradients_match(inputs, interpreted(tile=4, bwd_min_ctas=3), wrt=("u", "B"))
    assert not backward_traces
    _gradients_match(inputs, interpreted(tile=4, bwd_min_ctas=2), wrt=("u", "B"))
    assert backward_traces


@SLOW
def test_single_token():
    inputs = random_scan_inputs(81, 1, 1, 6, 2, lead=(2,))
    ref, _ = oracle(inputs, bidirectional=True)
    assert rel_err(selective_scan_bidirectional(**_f32(inputs), backend=INTERPRETED), ref) < 1e-5


@SLOW
def test_long_bidirectional_runs_as_two_launches(monkeypatch):
    """Where the parked first direction would not fit in shared memory (here: none does), both
    directions run as two launches with the same values."""
    from pallas_kernels.mosaic_scan import forward

    monkeypatch.setattr(forward, "SMEM_BYTES", 0)
    inputs = random_scan_inputs(82, 1, 11, 3, 2, lead=(2,))
    ref, _ = oracle(inputs, bidirectional=True)
    assert rel_err(selective_scan_bidirectional(**_f32(inputs), backend=INTERPRETED), ref) < 1e-5


def test_not_runnable_without_hopper_or_interpret():
    inputs = _f32(random_scan_inputs(83, 1, 9, 3, 2))
    if jax.default_backend() != "gpu":
        with pytest.raises(NotImplementedError, match="Hopper"):
            selective_scan(**inputs, backend="mosaic")
    assert selective_scan(**inputs, backend=("mosaic", "reference")).shape == (1, 9, 3)


def test_float64_falls_through():
    with jax.enable_x64(True):
        inputs = {k: jnp.asarray(v) for k, v in random_scan_inputs(84, 1, 9, 3, 2).items()}
        with pytest.raises(NotImplementedError, match="float32 and bfloat16"):
            selective_scan(**inputs, backend=INTERPRETED)
        assert selective_scan(**inputs, backend=(INTERPRETED, "reference")).dtype == jnp.float64


def test_preferred_first_on_gpus_only():
    """Registered on import, first on GPUs (its forward is the fastest measured there; off Hopper
    it raises and the next GPU backend runs), and never tried on CPUs."""
    from vim_jax.ops.selective_scan import _PREFERENCE, list_backends

    assert "mosaic" in list_backends()
    assert _PREFERENCE["gpu"][0] == "mosaic"
    assert "mosaic" not in _PREFERENCE["cpu"]


def test_options_are_fields_of_a_hashable_backend():
    a = interpreted(tile=4)
    assert a == interpreted(tile=4) and hash(a) == hash(
        interpreted(tile=4))
    assert a != ms.MosaicScan(ms.MosaicScanConfig(tile=8), interpret=True)


@pytest.mark.parametrize("length,segments,reverse", [pytest.param(33, 3, True, marks=SLOW), (16, 2, False),
                                                       pytest.param(61, 4, False, marks=SLOW)])
def test_segments_give_the_same_scan(length, segments, reverse):
    """Segments of whole tiles with a shorter last one (33 = 12 + 12 + 9, 61 = 16 x 3 + 13), or
    all equal (16 = 8 + 8, tiles of 4 with more tiles than slots), 200 channels (two CTAs wide)."""
    inputs = random_scan_inputs(85, 1, length, 200, 3)
    ref, _ = oracle(inputs, reverse)
    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=4, stages=2, segments=segments), interpret=True)
    assert rel_err(selective_scan(**_f32(inputs), reverse=reverse, backend=backend), ref) < 1e-5


@pytest.mark.parametrize("drop", [(), pytest.param(("D", "z", "delta_bias"), marks=SLOW)])
def test_fused_two_directions_with_segments(drop):
    """Both directions in one launch per segment, with and without D, z and delta_bias."""
    inputs = {k: v for k, v in random_scan_inputs(86, 1, 33, 200, 3, lead=(2,)).items() if k not in drop}
    ref, _ = oracle(inputs, bidirectional=True)
    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=4, stages=2, segments=3), interpret=True)
    assert rel_err(selective_scan_bidirectional(**_f32(inputs), backend=backend), ref) < 1e-5


@SLOW
def test_two_launches_with_segments(monkeypatch):
    """Where no park fits, two one-direction launches, each with its segments."""
    from pallas_kernels.mosaic_scan import forward

    monkeypatch.setattr(forward, "SMEM_BYTES", 0)
    inputs = random_scan_inputs(87, 2, 21, 5, 2, lead=(2,))
    ref, _ = oracle(inputs, bidirectional=True)
    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=4, stages=2, segments=2), interpret=True)
    assert rel_err(selective_scan_bidirectional(**_f32(inputs), backend=backend), ref) < 1e-5


def _plan(shape, ndir, **cfg):
    return ms.MosaicScan(ms.MosaicScanConfig(**cfg))._plan(shape, 16, jnp.bfloat16, True, ndir)


def test_plan_cuts_only_calls_that_leave_the_gpu_idle():
    """Enough CTAs (Vim-S at batch 128: 768 for 132 multiprocessors): one segment, fused where the
    park fits, else two launches. Batch 8 at 6085 tokens (24 CTAs): 11 segments of whole tiles for
    2 CTAs per multiprocessor, both directions as two launches (a 560-token park does not fit)."""
    assert _plan((128, 197, 768), 1) == (197, True)
    assert _plan((128, 197, 768), 2) == (197, True)
    assert _plan((128, 730, 384), 2) == (730, False)
    assert _plan((8, 6085, 384), 1) == (560, True)
    assert _plan((8, 6085, 384), 2) == (560, False)
    assert _plan((8, 6085, 384), 1, segments=1) == (6085, True)
    assert _plan((8, 6085, 384), 2, segments=22) == (288, True)
    assert _plan((8, 200, 384), 1) == (200, True)  # two segments would be under min_segment


@pytest.mark.parametrize("length,tile,drop,out_scale", [
    pytest.param(33, 4, (), 0.5, marks=SLOW),  # 9 tiles: 4 parked by the forward warpgroup, 5 by the backward one
    (19, 16, ("D", "z", "delta_bias"), 1.0),  # 2 tiles, the backward one's first is ragged
    pytest.param(1, 16, (), 0.5, marks=SLOW),  # one tile: the forward warpgroup parks nothing, the backward one all
])
def test_two_warpgroups_scan_both_directions_at_once(length, tile, drop, out_scale):
    inputs = {k: v for k, v in random_scan_inputs(88, 1, length, 200, 3, lead=(2,)).items() if k not in drop}
    ref, _ = oracle(inputs, bidirectional=True, out_scale=out_scale)
    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=tile, stages=2, two_warpgroups=True), interpret=True)
    out = selective_scan_bidirectional(**_f32(inputs), out_scale=out_scale, backend=backend)
    assert rel_err(out, ref) < 1e-5
