"""The image ops of the jitted step: normalisation and random erasing (JAX, no TF)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vim_jax.data import device_ops
from vim_jax.data.constants import IMAGENET_MEAN, IMAGENET_STD


def test_normalize_values():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[0, 0, 0] = 255
    out = np.asarray(device_ops.normalize(image, IMAGENET_MEAN, IMAGENET_STD))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], (1 - np.array(IMAGENET_MEAN)) / IMAGENET_STD, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1, 1], -np.array(IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)


def test_random_erasing_touches_about_p_of_images_with_one_noise_box():
    images = np.full((300, 40, 60, 3), 10.0, np.float32)  # far from N(0, 1) noise
    erase = jax.jit(lambda key, x: device_ops.random_erasing(key, x, probability=0.25))
    out = np.asarray(erase(jax.random.key(7), images))
    erased = 0
    for image in out:
        changed = np.any(image != 10.0, axis=-1)
        if changed.any():
            erased += 1
            rows, cols = np.nonzero(changed)
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert changed.sum() == box  # one rectangle
            assert 0.02 * 0.8 <= box / (40 * 60) <= 1 / 3 * 1.15
            assert rows.max() < 40 and cols.max() < 60
            assert abs(image[changed].std() - 1) < 0.35  # per-pixel N(0, 1) ('pixel' mode)
    assert 0.17 < erased / 300 < 0.33
    np.testing.assert_array_equal(out, np.asarray(erase(jax.random.key(7), images)))


@pytest.mark.parametrize("mode", ["rand", "const"])
def test_random_erasing_per_channel_and_zero_fills(mode):
    out = np.asarray(device_ops.random_erasing(jax.random.key(1), np.full((8, 20, 20, 3), 10.0, np.float32),
                                               probability=1.0, mode=mode))
    for image in out:
        changed = np.any(image != 10.0, axis=-1)
        assert changed.any()
        fill = image[changed]
        assert (fill == fill[0]).all() and (mode == "rand" or (fill == 0).all())


def test_random_erasing_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown random erasing mode"):
        device_ops.random_erasing(jax.random.key(0), np.zeros((2, 4, 4, 3), np.float32), mode="blur")
