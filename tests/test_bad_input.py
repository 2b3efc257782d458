"""Wrong images and unknown model names get the model's and the registry's clear errors."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax


@pytest.fixture(scope="module")
def model():
    return vim_jax.create_model("vim_test")  # 32x32 RGB, patch 8


@pytest.mark.parametrize("shape, dtype, error, message", [
    ((2, 32, 32, 1), np.float32, ValueError, r"images have 1 channels, expected 3: \[batch, 32, 32, 3\]"),
    ((2, 3, 32, 32), np.float32, ValueError, r"channels-first input\? transpose to \[batch, height, width, channels\]"),
    ((2, 48, 48, 3), np.float32, ValueError, r"image size 48x48 does not fit this model's patch grid, built for 32x32 "
                                             r"\(4x4 patches of 8, stride 8\)"),
    ((2, 32, 32, 3), np.uint8, TypeError, r"images must be floating point .* got uint8; convert uint8 images with "
                                          r"the model's evaluation transform"),
    ((32, 32, 3), np.float32, ValueError, r"images must be a 4-D channels-last array \[batch, 32, 32, 3\], "
                                          r"got shape \(32, 32, 3\)"),
], ids=["one-channel", "channels-first", "wrong-size", "uint8", "no-batch-axis"])
def test_wrong_images(model, shape, dtype, error, message):
    images = jnp.zeros(shape, dtype)
    with pytest.raises(error, match=message):
        model(images)
    with pytest.raises(error, match=message):  # the same message when traced under jit
        nnx.jit(lambda m, x: m(x))(model, images)


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'vim_tinny'; did you mean 'vim_tiny'.*Known models: .*vim_small"):
        vim_jax.create_model("vim_tinny")
    with pytest.raises(TypeError, match="model name must be a string, got int"):
        vim_jax.create_model(3)


def test_unknown_config_override():
    with pytest.raises(ValueError, match=r"VimConfig has no field\(s\) \['embed_size'\]"):
        vim_jax.create_model("vim_test", embed_size=64)
