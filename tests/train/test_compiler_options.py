"""The steps' compiler options: the CPU's YNNPACK setting where XLA knows it, none elsewhere."""

import jax
import jax.numpy as jnp
import numpy as np

from vim_jax.train import compiler_options


def test_cpu_steps_compile_with_the_options_and_compute_the_same():
    options = compiler_options.step_compiler_options("cpu")
    assert options == compiler_options.CPU_OPTIONS

    def f(x, w):
        return jnp.sum(jnp.tanh(x @ w) ** 2, axis=-1)

    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)
    np.testing.assert_allclose(jax.jit(f, compiler_options=options)(x, w), jax.jit(f)(x, w), rtol=1e-6)


def test_other_platforms_get_no_options():
    assert compiler_options.step_compiler_options("gpu") == {}


def test_an_option_this_xla_does_not_know_is_left_out(monkeypatch):
    monkeypatch.setattr(compiler_options, "CPU_OPTIONS", {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_TYPE"})
    compiler_options._accepted.cache_clear()
    try:
        assert compiler_options.step_compiler_options("cpu") == {}
    finally:
        compiler_options._accepted.cache_clear()
