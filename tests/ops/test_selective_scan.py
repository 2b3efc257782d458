"""The pure-JAX backends against the shared test base, plus the public op's own behaviour."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.ops.scan_test_base import SelectiveScanTestBase, oracle, random_scan_inputs, rel_err
from vim_jax.ops import associative, list_backends, selective_scan, sequential

registry = importlib.import_module("vim_jax.ops.selective_scan")  # the module, not the function


class TestReference(SelectiveScanTestBase):
    backend = "reference"


class TestAssociative(SelectiveScanTestBase):
    backend = "associative"


class TestSequential(SelectiveScanTestBase):
    backend = "sequential"


def numpy_scan(u, delta, A, B, C, D, z, delta_bias, reverse=False):
    """The recurrence written out token by token in float64 numpy: an oracle for the oracle."""
    delta = np.logaddexp(0.0, delta + delta_bias)
    batch, length, channels = u.shape
    h = np.zeros((batch, channels, A.shape[1]))
    y = np.zeros_like(u)
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        h = np.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = np.einsum("bcn,bn->bc", h, C[:, t]) + D * u[:, t]
    return y * z / (1 + np.exp(-z))


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_matches_token_by_token_numpy(reverse):
    inputs = random_scan_inputs(7, 2, 21, 6, 4)
    ref, _ = oracle(inputs, reverse)
    assert rel_err(ref, numpy_scan(**inputs, reverse=reverse)) < 1e-12


# Chunks of 1 are the costliest programs (one chunk per token): the full suite's.
@pytest.mark.parametrize("chunk", [pytest.param(1, marks=pytest.mark.slow), 7, 16])
def test_associative_chunk_sizes_agree(chunk, monkeypatch):
    """Chunks that divide the length, that do not, and that are longer than it."""
    monkeypatch.setattr(associative.selective_scan, "__defaults__", (chunk,))
    inputs = random_scan_inputs(8, 2, 13, 7, 5)
    ref, ref_g = oracle(inputs, True, wrt=("u", "A", "B"))
    with jax.enable_x64(True):
        args = {k: jnp.asarray(v) for k, v in inputs.items()}
        f = lambda d: selective_scan(**{**args, **d}, reverse=True, backend="associative")
        out = f({})
        cot = np.random.default_rng(123).standard_normal(out.shape)
        grads = jax.grad(lambda d: jnp.sum(f(d) * cot))({k: args[k] for k in ("u", "A", "B")})
    assert rel_err(out, ref) < 1e-12
    for k in grads:
        assert rel_err(grads[k], ref_g[k]) < 1e-12


@pytest.mark.parametrize("chunk", [pytest.param(1, marks=pytest.mark.slow), 7, 16, 64])
def test_sequential_chunk_sizes_agree(chunk):
    """A state saved every token, every few tokens (the last chunk padded), or only the first."""
    inputs = random_scan_inputs(14, 2, 13, 7, 5)
    ref, ref_g = oracle(inputs, True, wrt=("u", "delta", "A", "B", "C"))
    with jax.enable_x64(True):
        args = {k: jnp.asarray(v) for k, v in inputs.items()}
        order = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
        f = lambda d: sequential.selective_scan(*({**args, **d}[k] for k in order), True, True, chunk=chunk)
        out = f({})
        cot = np.random.default_rng(123).standard_normal(out.shape)
        grads = jax.grad(lambda d: jnp.sum(f(d) * cot))({k: args[k] for k in ref_g})
    assert rel_err(out, ref) < 1e-12
    for k in grads:
        assert rel_err(grads[k], ref_g[k]) < 1e-12, k


def test_backend_none_runs_and_matches():
    inputs = random_scan_inputs(9, 1, 19, 3, 2)
    ref, _ = oracle(inputs)
    out = selective_scan(**{k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()})
    assert rel_err(out, ref) < 1e-5


def test_unavailable_backend_falls_through():
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in random_scan_inputs(11, 1, 9, 3, 2).items()}
    if jax.default_backend() == "cpu":
        with pytest.raises(NotImplementedError, match="pallas"):
            selective_scan(**inputs, backend="pallas")
    out = selective_scan(**inputs, backend=("pallas", "reference"))
    assert out.shape == inputs["u"].shape


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(u=np.zeros((2, 9))), "u must be"),
        (dict(A=np.zeros((4, 2))), "A has shape"),
        (dict(B=np.zeros((1, 9, 3))), "B has shape"),
        (dict(z=np.zeros((1, 8, 3))), "z has shape"),
        (dict(D=np.zeros((2,))), "D has shape"),
        (dict(u=np.zeros((1, 9, 3), np.int32)), "floating point"),
    ],
)
def test_bad_inputs_give_clear_errors(change, message):
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in random_scan_inputs(12, 1, 9, 3, 2).items()}
    inputs.update({k: jnp.asarray(v) for k, v in change.items()})
    with pytest.raises((ValueError, TypeError), match=message):
        selective_scan(**inputs, backend="reference")


def test_unknown_backend_is_named():
    inputs = {k: jnp.asarray(v, jnp.float32) for k, v in random_scan_inputs(13, 1, 9, 3, 2).items()}
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        selective_scan(**inputs, backend="cuda")
    assert {"reference", "associative", "pallas"} <= set(list_backends())



def test_registration_order_sets_preference(monkeypatch):
    """A backend registered for a platform comes first there; of two, the last registered."""
    registry.list_backends()  # the kernel packages register into the real table, not the copy
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    monkeypatch.setattr(registry, "_PREFERENCE", {"cpu": ("reference",)})
    registry.register_backend("first", associative, platforms=("cpu",))
    registry.register_backend("newest", sequential, platforms=("cpu",))
    registry.register_backend("by_name_only", sequential)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert registry.candidate_backends() == ("newest", "first", "reference")


def test_gpu_order_is_mosaic_pallas_triton_then_xla(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert registry.candidate_backends() == ("mosaic", "pallas", "triton", "associative", "reference")
