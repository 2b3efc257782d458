"""Palettes, colour overlays and the PNG with its legend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vim_jax.data.ade20k_classes import CLASS_NAMES as ADE20K_CLASSES
from vim_jax.data.fmnist_scenes import CLASS_NAMES as SCENE_CLASSES
from vim_jax.segmentation import overlay as ov


def test_palettes_have_one_colour_per_class():
    assert ov.ADE20K_PALETTE.shape == (len(ADE20K_CLASSES), 3) == (150, 3)
    assert tuple(ov.ADE20K_PALETTE[0]) == (120, 120, 120) and tuple(ov.ADE20K_PALETTE[-1]) == (92, 0, 255)
    assert ov.SCENES_PALETTE.shape == (len(SCENE_CLASSES), 3) and len({tuple(c) for c in ov.SCENES_PALETTE}) == 11
    assert ov.palette_for(150) is ov.ADE20K_PALETTE and ov.palette_for(11) is ov.SCENES_PALETTE
    generated = ov.palette_for(40)
    assert generated.shape == (40, 3) and generated.dtype == np.uint8 and len({tuple(c) for c in generated}) == 40


def test_overlay_blends_label_colours_and_leaves_ignored_pixels():
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255], [2, 2, 1]], np.uint8)
    palette = np.array([[0, 0, 0], [200, 0, 50], [10, 20, 30]], np.uint8)
    got = ov.overlay(image, mask, alpha=0.25, palette=palette)
    want = np.rint(0.75 * 100 + 0.25 * palette[np.where(mask == 255, 0, mask)].astype(np.float64)).astype(np.uint8)
    want[0, 2] = image[0, 2]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ov.overlay(image, mask, alpha=0.0, palette=palette), image)
    np.testing.assert_array_equal(ov.overlay(image, mask, alpha=1.0, palette=palette)[1, 0], palette[2])


def test_default_palette_follows_the_largest_label():
    image = np.zeros((1, 2, 3), np.uint8)
    np.testing.assert_array_equal(ov.overlay(image, np.array([[3, 10]]), 1.0)[0], ov.SCENES_PALETTE[[3, 10]])
    np.testing.assert_array_equal(ov.overlay(image, np.array([[3, 149]]), 1.0)[0], ov.ADE20K_PALETTE[[3, 149]])


def test_saved_png_holds_the_overlay_and_a_legend(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    mask[20:60, 30:90] = 3
    mask[70:, :40] = 9
    written = ov.save_overlay(tmp_path / "o.png", image, mask, class_names=SCENE_CLASSES)
    loaded = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    np.testing.assert_array_equal(loaded, written)
    assert loaded.shape[0] == 120 and loaded.shape[1] > 160  # the legend panel sits on the right
    np.testing.assert_array_equal(loaded[:, :160], ov.overlay(image, mask))
    legend = loaded[:, 160:].reshape(-1, 3)
    for label in (0, 3, 9):  # every present class has its swatch
        assert (legend == ov.SCENES_PALETTE[label]).all(axis=1).any()
    assert not (legend == ov.SCENES_PALETTE[5]).all(axis=1).any()
    plain = ov.save_overlay(tmp_path / "p.png", image, mask, legend=False)
    assert plain.shape == (120, 160, 3)


def test_bad_input_is_refused(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        ov.overlay(image, np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        ov.overlay(image.astype(np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="outside the palette"):
        ov.overlay(image, np.full((4, 4), 5), palette=ov.SCENES_PALETTE[:3])
    with pytest.raises(ValueError, match="class names"):
        ov.save_overlay(tmp_path / "x.png", image, np.full((4, 4), 7), class_names=["a", "b"])
