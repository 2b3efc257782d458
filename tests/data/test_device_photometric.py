"""The photometric distortion on the device against the numpy reference (``seg_transforms``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vim_jax.data import device_photometric as dp
from vim_jax.data import seg_transforms as st


def all_colour_samples(n=60000, seed=0):
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    colours[: 256 * 3] = np.repeat(np.arange(256, dtype=np.uint8), 3)[:, None]  # greys: no hue
    return colours


def test_hsv_conversions_equal_the_reference_exactly():
    colours = all_colour_samples()
    hsv = jax.jit(dp.rgb_to_hsv)(jnp.asarray(colours, jnp.float32))
    np.testing.assert_array_equal(np.asarray(hsv), st.rgb_to_hsv(colours))
    reference_hsv = st.rgb_to_hsv(colours)
    rgb = jax.jit(dp.hsv_to_rgb)(jnp.asarray(reference_hsv, jnp.float32))
    np.testing.assert_array_equal(np.asarray(rgb), st.hsv_to_rgb(reference_hsv))


def test_distortion_equals_the_reference_inside_the_crop_and_keeps_the_padding():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (48, 24, 32, 3)).astype(np.uint8)
    images[:4] = images[:4] // 64 * 64  # flat colours and greys
    columns, want = [], images.copy()
    for i in range(len(images)):
        params = st.sample_photometric(rng)
        h, w = int(rng.integers(8, 25)), int(rng.integers(8, 33))
        want[i, :h, :w] = st.apply_photometric(images[i, :h, :w], params)
        columns.append(st.photometric_columns(params, h, w))
    got = jax.jit(dp.photometric_distortion)(jnp.asarray(images), jnp.asarray(np.stack(columns)))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), want)


def test_every_step_order_is_covered_and_each_changes_the_image():
    image = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    steps = [dict(brightness=20.0), dict(contrast=1.3, contrast_first=True), dict(contrast=0.7),
             dict(saturation=0.6), dict(hue=7)]
    for step in steps:
        params = st.PhotometricParams(**{**dict(brightness=None, contrast_first=False, contrast=None,
                                                saturation=None, hue=None), **step})
        columns = st.photometric_columns(params, 16, 16)[None]
        got = np.asarray(dp.photometric_distortion(jnp.asarray(image), jnp.asarray(columns)))
        np.testing.assert_array_equal(got[0], st.apply_photometric(image[0], params))
        assert (got[0] != image[0]).any(), step


def test_columns_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="photometric columns"):
        dp.photometric_distortion(jnp.zeros((2, 8, 8, 3), jnp.uint8), jnp.zeros((2, 5)))
