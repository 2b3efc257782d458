"""`conv_selective_scan`: the shared base for the reference composition and for the Mosaic kernel
with the conv prologue (run by the Mosaic GPU interpreter), and the op's own behaviour: backends
without a fused kernel, fall-through, validation."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import pallas_kernels.mosaic_scan as ms
from pallas_kernels.mosaic_scan import backward, conv_vjp, forward
from tests.ops.conv_scan_test_base import (CONV_ARG_NAMES, SLOW, ConvScanTestBase, conv_oracle, evaluate,
                                          random_conv_scan_inputs)
from tests.ops.scan_test_base import matmul_precisions, rel_err
from vim_jax import ops
from vim_jax.ops import conv_selective_scan, conv_selective_scan_bidirectional


class TestReferenceConvScan(ConvScanTestBase):
    backend = "reference"


def interpreted(**config):
    """The interpreted kernels, tiles of 4 tokens (ragged last tiles), the Mosaic backward on
    whatever the (tiny) number of CTAs."""
    return ms.MosaicScan(ms.MosaicScanConfig(**{"tile": 4, "bwd_min_ctas": 0, **config}), interpret=True)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts of the traced Mosaic kernels: the forward with the conv prologue, and the backward."""
    calls = {"prologue_forward": 0, "backward": 0}
    real_forward, real_backward = conv_vjp.scan_forward, backward.scan_backward

    def forward_(*args, static, **kwargs):
        calls["prologue_forward"] += static.prologue is not None
        return real_forward(*args, static=static, **kwargs)

    def backward_(*args, **kwargs):
        calls["backward"] += 1
        return real_backward(*args, **kwargs)

    monkeypatch.setattr(conv_vjp, "scan_forward", forward_)
    monkeypatch.setattr(backward, "scan_backward", backward_)
    return calls


@pytest.mark.usefixtures("release_after_each_test")
class TestMosaicConvScan(ConvScanTestBase):
    """The fused kernel, checked to have run (a fall-through to the composition would pass the
    same checks): its forward in every test, the Mosaic backward wherever gradients are asked for."""

    backend = interpreted()

    @pytest.fixture(autouse=True)
    def _kernels_ran(self, kernel_calls):
        self.calls = kernel_calls
        yield
        assert kernel_calls["prologue_forward"], "the prologue kernel did not run"

    def check(self, inputs, *args, **kwargs):
        super().check(inputs, *args, **kwargs)
        asked = bool(kwargs.get("wrt", CONV_ARG_NAMES))
        assert bool(self.calls["backward"]) == asked, "the Mosaic backward ran iff gradients were asked for"


def _on_hopper() -> bool:
    return jax.default_backend() == "gpu" and str(getattr(jax.devices()[0], "compute_capability", "")).startswith("9.")


@pytest.mark.skipif(not _on_hopper(), reason="the compiled kernels need a Hopper GPU (the interpreted ones run above)")
class TestMosaicConvScanOnHopper(TestMosaicConvScan):
    """The same base through the compiled kernels, on a Hopper GPU: the float64 check of the
    prologue kernel on the device (`pytest tests/ops/test_conv_selective_scan.py -k Hopper`)."""

    backend = ms.MosaicScan(ms.MosaicScanConfig(tile=4, bwd_min_ctas=0))


def _mosaic_values(inputs, backend, reverse=False, bidirectional=False):
    ref, _ = conv_oracle(inputs, reverse, bidirectional)
    out, _ = evaluate({k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}, backend, reverse, bidirectional)
    assert rel_err(out, ref) < 1e-5


@SLOW
@pytest.mark.usefixtures("release_after_each_test")
@pytest.mark.parametrize("tile,segments", [(4, 2), (1, 19)])
def test_segments_carry_the_conv_history(tile, segments, kernel_calls):
    """Segments along the grid (summary and output passes): each loads the conv's history from
    the tokens before it in its scan order, both directions fused; segments of 12 and 7 tokens,
    or of 1 token (the history reaching three segments back)."""
    inputs = random_conv_scan_inputs(70, 1, 19, 5, 3, 2, lead=(2,))
    _mosaic_values(inputs, interpreted(tile=tile, stages=2, segments=segments), bidirectional=True)
    assert kernel_calls["prologue_forward"]


@SLOW
@pytest.mark.usefixtures("release_after_each_test")
def test_two_warpgroups_convolve_both_directions_at_once(kernel_calls):
    """The fused kernel's two-warpgroup form: each direction convolves x in its own order."""
    inputs = random_conv_scan_inputs(74, 1, 9, 5, 3, 2, lead=(2,))
    _mosaic_values(inputs, interpreted(stages=2, two_warpgroups=True), bidirectional=True)
    assert kernel_calls["prologue_forward"]


@SLOW
@pytest.mark.usefixtures("release_after_each_test")
def test_long_bidirectional_runs_as_two_launches(monkeypatch, kernel_calls):
    """Where the parked first direction does not fit (here: none does), one launch per direction."""
    monkeypatch.setattr(forward, "SMEM_BYTES", 0)
    _mosaic_values(random_conv_scan_inputs(71, 1, 9, 5, 3, 2, lead=(2,)), interpreted(), bidirectional=True)
    assert kernel_calls["prologue_forward"] == 2


@SLOW
@pytest.mark.usefixtures("release_after_each_test")
def test_few_ctas_differentiate_the_composition(kernel_calls):
    """Where the Mosaic backward should not run (fewer CTAs than `bwd_min_ctas`), the gradients
    are the composition's through the fallback backends."""
    inputs = random_conv_scan_inputs(72, 1, 9, 5, 3, 2)
    wrt = ("x", "conv_w", "dt_w", "B")
    _, ref_g = conv_oracle(inputs, True, wrt=wrt)
    args = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
    _, got = evaluate(args, interpreted(bwd_min_ctas=2), True, wrt=wrt)
    for name in wrt:
        assert rel_err(got[name], ref_g[name]) < 1e-4, name
    assert not kernel_calls["backward"]


def _small(lead=()):
    return {k: jnp.asarray(v, jnp.float32) for k, v in random_conv_scan_inputs(73, 1, 5, 3, 2, 2, lead=lead).items()}


@dataclasses.dataclass(frozen=True)
class _ScanOnly:
    """A backend with a selective scan (the reference's) and no fused conv kernel; it records
    the calls."""

    calls: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def selective_scan(self, *args):
        self.calls.append("selective_scan")
        return ops.selective_scan(*args[:-1], reverse=args[-1], backend="reference")


@dataclasses.dataclass(frozen=True)
class _CannotFuse(_ScanOnly):
    """A backend whose fused kernel cannot run this call."""

    def conv_selective_scan(self, *args):
        self.calls.append("conv_selective_scan")
        raise NotImplementedError("not this shape")


@pytest.mark.parametrize("backend_type", [_ScanOnly, _CannotFuse])
def test_backends_without_a_fused_kernel_scan_the_prologue_outputs(backend_type):
    """A backend with no fused kernel, or one that raises NotImplementedError, runs the
    composition with its own selective scan."""
    backend = backend_type()
    inputs = _small()
    out = conv_selective_scan(**inputs, reverse=True, backend=backend)
    ref = conv_selective_scan(**inputs, reverse=True, backend="reference")
    assert rel_err(out, ref) < 1e-6
    assert backend.calls[-1] == "selective_scan" and len(backend.calls) == (2 if backend_type is _CannotFuse else 1)


def test_kernels_that_cannot_run_here_fall_through():
    """Off Hopper (and not interpreted) the Mosaic kernel and its scan raise, and the next backend runs."""
    inputs = _small(lead=(2,))
    if jax.default_backend() != "gpu":
        with pytest.raises(NotImplementedError, match="Hopper"):
            conv_selective_scan_bidirectional(**inputs, backend="mosaic")
    out = conv_selective_scan_bidirectional(**inputs, backend=("mosaic", "reference"))
    assert rel_err(out, conv_selective_scan_bidirectional(**inputs, backend="reference")) < 1e-6


@pytest.mark.parametrize("name,bad,error,match", [
    ("conv_w", lambda a: a["conv_w"][:, :2], ValueError, r"conv_w has shape \(4, 2\), expected \(4, 3\)"),
    ("conv_b", lambda a: a["conv_b"][None], ValueError, "conv_b has shape"),
    ("dt_w", lambda a: a["dt_w"][:1], ValueError, r"dt_w has shape \(1, 3\), expected \(2, 3\)"),
    ("dt_low", lambda a: a["dt_low"][0], ValueError, r"dt_low must be \['batch', 'length', 'dt_rank'\]"),
    ("B", lambda a: a["B"][:, :4], ValueError, "conv_selective_scan: B has shape"),
    ("x", lambda a: a["x"].astype(jnp.int32), TypeError, "x must be floating point"),
])
def test_bad_inputs_are_refused_with_the_argument_named(name, bad, error, match):
    inputs = _small()
    with pytest.raises(error, match=match):
        conv_selective_scan(**{**inputs, name: bad(inputs)}, backend="reference")


def test_bidirectional_inputs_need_the_direction_axis():
    inputs = _small(lead=(2,))
    with pytest.raises(ValueError, match=r"conv_w must be \[2, 'd_conv', 'channels'\]"):
        conv_selective_scan_bidirectional(**{**inputs, "conv_w": inputs["conv_w"][0]}, backend="reference")


def test_ops_modules_import_nothing_from_models():
    """Dependencies run one way: the models use the ops (the conv included), never the reverse."""
    package = Path(ops.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("vim_jax.models")], path.name


@pytest.mark.parametrize("length", [5, 40])  # the banded conv's form and the shifted sum's
def test_the_recomputed_prologue_multiplies_in_full_float32(length):
    """`conv_prologue`, which the Mosaic backward recomputes u and delta with, asks for HIGHEST
    precision in every matmul: the forward kernel computes delta in float32 on the CUDA cores,
    and at a GPU's default precision (TF32) the float32 gradients were 3e-4 off float64 (H200)."""
    args = {k: jnp.asarray(v, jnp.float32) for k, v in random_conv_scan_inputs(75, 1, length, 3, 2, 2, lead=(2,)).items()}
    names = ("x", "conv_w", "conv_b", "dt_low", "dt_w")
    f = lambda *a: jnp.stack(ops.conv_prologue(*a, (False, True)))
    precisions = matmul_precisions(f, *(args[k] for k in names))
    assert len(precisions) >= 3
    assert all(p == (jax.lax.Precision.HIGHEST,) * 2 for p in precisions), precisions
