"""One test base for every selective-scan backend (subclass it and set `backend`).

The oracle is the sequential reference backend run in float64; the backend under test gets the
same inputs rounded to float32 (or bf16). Inputs are fresh random draws, at awkward shapes.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vim_jax.ops import selective_scan, selective_scan_bidirectional

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def random_scan_inputs(seed, batch, length, channels, state, lead=()):
    """Float64 numpy inputs in the ranges Vim sees (A < 0, delta around softplus's knee)."""
    rng = np.random.default_rng(seed)
    lead = tuple(lead)
    return dict(
        u=rng.standard_normal(lead + (batch, length, channels)),
        delta=rng.standard_normal(lead + (batch, length, channels)) - 1.0,
        A=-np.exp(rng.standard_normal(lead + (channels, state)) * 0.5),
        B=rng.standard_normal(lead + (batch, length, state)),
        C=rng.standard_normal(lead + (batch, length, state)),
        D=rng.standard_normal(lead + (channels,)),
        z=rng.standard_normal((batch, length, channels)),
        delta_bias=rng.standard_normal(lead + (channels,)) * 0.5,
    )


def rel_err(x, ref):
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    assert np.all(np.isfinite(x)), "non-finite values"
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def oracle(inputs, reverse=False, bidirectional=False, out_scale=0.5, wrt=()):
    """Float64 values (and gradients of `sum(out * cotangent)` w.r.t. `wrt`) from the reference,
    as numpy arrays."""
    return float64_answer(inputs, ("selective_scan", reverse, bidirectional, out_scale, tuple(wrt)),
                          lambda args: _evaluate(args, "reference", reverse, bidirectional, out_scale, wrt))


def float64_answer(inputs, settings, evaluate):
    """`evaluate(inputs as float64 arrays)` -> (out, gradients) as numpy arrays. Every backend's
    tests ask for the same inputs, so each answer is computed once per session (keyed by the
    inputs' bytes and the hashable `settings`, not by who asks)."""
    key = (tuple((k, v.shape, hashlib.sha256(np.ascontiguousarray(v)).hexdigest()) for k, v in sorted(inputs.items())),
           settings)
    if key not in _ORACLE_ANSWERS:
        with jax.enable_x64(True):
            out, grads = evaluate({k: jnp.asarray(v, jnp.float64) for k, v in inputs.items()})
            _ORACLE_ANSWERS[key] = np.asarray(out), {k: np.asarray(g) for k, g in grads.items()}
    return _ORACLE_ANSWERS[key]


_ORACLE_ANSWERS: dict = {}


def _evaluate(args, backend, reverse, bidirectional, out_scale, wrt):
    def f(full):
        if bidirectional:
            return selective_scan_bidirectional(**full, out_scale=out_scale, backend=backend)
        return selective_scan(**full, reverse=reverse, backend=backend)

    return value_and_grads(f, args, wrt)


def equations(jaxpr):
    """Every equation of a jaxpr and of every jaxpr nested in its equations' parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def matmul_precisions(f, *args):
    """The precision of every matmul (`dot_general`) in the gradient of `sum(f(*args))`, i.e. in
    f's forward and its VJP, nested jaxprs included. On a GPU, DEFAULT runs float32 matmuls in
    TF32 (10 mantissa bits), which the CPU this test runs on never shows in values."""
    loss = lambda *a: jnp.sum(f(*a))
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=tuple(range(len(args)))))(*args).jaxpr
    return [eqn.params["precision"] for eqn in equations(jaxpr) if eqn.primitive.name == "dot_general"]


def value_and_grads(f, args, wrt):
    """`f(args)`, and the gradients of `sum(f(args) * cotangent)` with respect to the arguments
    named in `wrt` (a fixed random cotangent; bf16 outputs summed in float32)."""
    out = f(args)
    if not wrt:
        return out, {}
    cot = jnp.asarray(np.random.default_rng(123).standard_normal(out.shape), out.dtype)
    loss_dtype = jnp.float32 if out.dtype == jnp.bfloat16 else out.dtype
    grads = jax.grad(lambda d: jnp.sum(f({**args, **d}).astype(loss_dtype) * cot))({k: args[k] for k in wrt})
    return out, grads


# The first shape in both directions is the fast tier's case; the other shapes run the same code
# (one program per shape) and are the full suite's.
OTHER_SHAPES = [pytest.param(i, marks=pytest.mark.slow) for i in (1, 2)]


class SelectiveScanTestBase:
    backend: object = ""  # a registered name or a backend object
    # (batch, length, channels, state): odd lengths, channel counts that are not powers of two.
    # The cost grows with the length; chunking is checked at other chunk sizes in
    # test_selective_scan.py, and the models' tests run the released lengths.
    shapes = [(2, 33, 5, 3), (1, 37, 24, 16), (2, 21, 48, 16)]

    def run_backend(self, inputs, dtype=jnp.float32, reverse=False, bidirectional=False, out_scale=0.5, wrt=()):
        args = {k: jnp.asarray(v, dtype) for k, v in inputs.items()}
        return _evaluate(args, self.backend, reverse, bidirectional, out_scale, wrt)

    @pytest.mark.parametrize("reverse", [False, True])
    @pytest.mark.parametrize("shape_index", [0, *OTHER_SHAPES])
    def test_values_match_float64_reference(self, shape_index, reverse):
        inputs = random_scan_inputs(shape_index, *self.shapes[shape_index])
        ref, _ = oracle(inputs, reverse)
        out, _ = self.run_backend(inputs, reverse=reverse)
        assert out.dtype == jnp.float32 and out.shape == ref.shape
        assert rel_err(out, ref) < 1e-5

    @pytest.mark.parametrize("reverse", [False, True])
    @pytest.mark.parametrize("shape_index", [0, OTHER_SHAPES[0]])
    def test_gradients_match_float64_reference(self, shape_index, reverse):
        inputs = random_scan_inputs(10 + shape_index, *self.shapes[shape_index])
        _, ref = oracle(inputs, reverse, wrt=ARG_NAMES)
        _, got = self.run_backend(inputs, reverse=reverse, wrt=ARG_NAMES)
        for name in ARG_NAMES:
            assert rel_err(got[name], ref[name]) < 1e-4, name

    def test_optional_arguments_left_out(self):
        inputs = random_scan_inputs(20, *self.shapes[0])
        for drop in ("D", "z", "delta_bias"):
            partial = {k: v for k, v in inputs.items() if k != drop}
            ref, _ = oracle(partial)
            out, _ = self.run_backend(partial)
            assert rel_err(out, ref) < 1e-5, drop
        bare = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
        bare["delta"] = np.logaddexp(0.0, bare["delta"])  # without softplus, delta must stay positive
        with jax.enable_x64(True):
            ref = selective_scan(**{k: jnp.asarray(v) for k, v in bare.items()}, delta_softplus=False,
                                 backend="reference")
        out = selective_scan(**{k: jnp.asarray(v, jnp.float32) for k, v in bare.items()},
                             delta_softplus=False, backend=self.backend)
        assert rel_err(out, ref) < 1e-5

    def test_bfloat16_inputs(self):
        inputs = random_scan_inputs(30, *self.shapes[1])
        rounded = {k: np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64) for k, v in inputs.items()}
        ref, _ = oracle(rounded)
        out, _ = self.run_backend(inputs, dtype=jnp.bfloat16)
        assert out.dtype == jnp.bfloat16
        assert rel_err(out, ref) < 1e-2

    @pytest.mark.parametrize("out_scale", [0.5, 1.0])
    def test_bidirectional_values_and_gradients(self, out_scale):
        inputs = random_scan_inputs(40, *self.shapes[0], lead=(2,))
        ref, ref_g = oracle(inputs, bidirectional=True, out_scale=out_scale, wrt=ARG_NAMES)
        out, got_g = self.run_backend(inputs, bidirectional=True, out_scale=out_scale, wrt=ARG_NAMES)
        assert rel_err(out, ref) < 1e-5
        for name in ARG_NAMES:
            assert rel_err(got_g[name], ref_g[name]) < 1e-4, name

    def test_runs_under_jit(self):
        inputs = random_scan_inputs(50, *self.shapes[0])
        args = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
        fn = jax.jit(lambda a: selective_scan(**a, reverse=True, backend=self.backend))
        ref, _ = oracle(inputs, reverse=True)
        assert rel_err(fn(args), ref) < 1e-5
