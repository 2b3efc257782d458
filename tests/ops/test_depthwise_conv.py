"""The depthwise token conv: causal / anti-causal, one direction or several stacked, as a banded
matmul (short sequences) or a sum of shifted copies (long ones)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vim_jax.ops import depthwise_conv
from vim_jax.ops.depthwise_conv import depthwise_conv1d

# The longest sequence of the banded form, and 0: every sequence takes the shifted sum.
FORMS = {"banded": depthwise_conv.BANDED_CONV_MAX_LENGTH, "shifted": 0}


def naive_conv(x, kernel, bias, reverse):
    """y_t = bias + sum_j kernel[j] * x[t + j - (K-1)] (causal) or x[t + (K-1) - j] (anti-causal)."""
    width, length = kernel.shape[0], x.shape[1]
    y = np.broadcast_to(bias, x.shape).astype(np.float64).copy()
    for t in range(length):
        for j in range(width):
            s = t + (width - 1 - j if reverse else j - (width - 1))
            if 0 <= s < length:
                y[:, t] += kernel[j] * x[:, s]
    return y


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("width", [1, 4])
def test_matches_naive_conv_one_and_stacked(width, form, monkeypatch):
    monkeypatch.setattr(depthwise_conv, "BANDED_CONV_MAX_LENGTH", FORMS[form])
    rng = np.random.default_rng(width)
    x = rng.normal(size=(2, 7, 5)).astype(np.float32)
    kernels = rng.normal(size=(3, width, 5)).astype(np.float32)
    biases = rng.normal(size=(3, 5)).astype(np.float32)
    reverse = (False, True, True)
    stacked = np.asarray(depthwise_conv1d(x, kernels, biases, reverse))
    assert stacked.shape == (3, 2, 7, 5)
    for k, rev in enumerate(reverse):
        expected = naive_conv(x, kernels[k], biases[k], rev)
        np.testing.assert_allclose(np.asarray(depthwise_conv1d(x, kernels[k], biases[k], rev)), expected,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stacked[k], expected, rtol=1e-5, atol=1e-5)


def test_banded_and_shifted_forms_have_the_same_gradients(monkeypatch):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(2, 4, 5)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(2, 2, 9, 5)), jnp.float32)

    def grads():
        loss = lambda *args: jnp.sum(weights * jnp.tanh(depthwise_conv1d(*args, (False, True))))
        return jax.grad(loss, argnums=(0, 1, 2))(x, kernel, bias)

    banded = grads()
    monkeypatch.setattr(depthwise_conv, "BANDED_CONV_MAX_LENGTH", 0)
    for a, b in zip(banded, grads()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_banded_form_multiplies_in_full_float32():
    """The banded matmul and its gradient's two ask for HIGHEST precision, as the shifted sum's
    products are exact (a GPU's default float32 matmul is TF32)."""
    from tests.ops.scan_test_base import matmul_precisions

    x, kernel, bias = jnp.ones((1, 9, 5)), jnp.ones((2, 4, 5)), jnp.ones((2, 5))
    precisions = matmul_precisions(lambda *a: depthwise_conv1d(*a, (False, True)), x, kernel, bias)
    assert len(precisions) >= 2
    assert all(p == (jax.lax.Precision.HIGHEST,) * 2 for p in precisions), precisions
