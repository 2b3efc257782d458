"""Fashion-MNIST scenes: determinism, split separation, masks that are the items' foreground."""

from __future__ import annotations

import numpy as np
import pytest

from vim_jax.data import fashion_mnist as fm
from vim_jax.data.fmnist_scenes import CLASS_NAMES, NUM_CLASSES, FashionMnistScenes

pytestmark = pytest.mark.skipif(not fm.fashion_mnist_dir().is_dir(),
                                reason="apt-get install dataset-fashion-mnist")


def test_records_have_the_documented_format_and_sizes():
    scenes = FashionMnistScenes("train", num_scenes=6, seed=0)
    assert len(scenes) == 6 and NUM_CLASSES == 11 and CLASS_NAMES[0] == "background"
    for i in range(len(scenes)):
        record = scenes[i]
        image, mask = record["image"], record["mask"]
        assert image.dtype == np.uint8 and mask.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3 and mask.shape == image.shape[:2]
        assert all(256 <= side <= 1024 for side in mask.shape)
        assert mask.max() < NUM_CLASSES and (mask == 0).any()
    assert len({scenes[i]["mask"].shape for i in range(len(scenes))}) > 1  # sizes vary


def test_a_scene_is_a_pure_function_of_seed_split_and_index():
    a, b = FashionMnistScenes("train", size=64, num_scenes=4, seed=3), FashionMnistScenes("train", size=64, seed=3)
    for i in (0, 3):
        for key in ("image", "mask"):
            np.testing.assert_array_equal(a[i][key], b[i][key])
    assert not np.array_equal(a[0]["image"], a[1]["image"])
    other_seed = FashionMnistScenes("train", size=64, seed=4)
    assert not np.array_equal(a[0]["image"], other_seed[0]["image"])


def test_train_and_test_scenes_draw_items_from_their_own_split_only():
    train_images, _ = fm.load_fashion_mnist("train")
    test_images, test_labels = fm.load_fashion_mnist("test")
    scenes = FashionMnistScenes("test", size=96, num_scenes=20, seed=0, items=(1, 1), item_scale=(1 / 3.43, 1 / 3.43))
    train_scenes = FashionMnistScenes("train", size=96, num_scenes=20, seed=0, items=(1, 1))
    assert scenes.images is test_images and train_scenes.images is train_images
    for i in range(len(scenes)):
        (placement,) = scenes.layout(i).placements
        assert placement.size == 28  # native size: the pasted grey values are the test image's own
        assert placement.label == test_labels[placement.index]
        record = scenes[i]
        box = (slice(placement.top, placement.top + 28), slice(placement.left, placement.left + 28))
        foreground = test_images[placement.index] >= scenes.threshold
        np.testing.assert_array_equal(record["mask"][box], np.where(foreground, placement.label + 1, 0))
    # The same (seed, index) in the two splits gives different scenes.
    assert not np.array_equal(scenes[0]["image"], train_scenes[0]["image"])


def test_each_labelled_pixel_is_the_foreground_of_the_top_item_covering_it():
    scenes = FashionMnistScenes("train", size=(200, 300), num_scenes=5, seed=7, items=(4, 6))
    for i in range(len(scenes)):
        layout, record = scenes.layout(i), scenes[i]
        expected = np.zeros((layout.height, layout.width), np.uint8)
        drawn = np.zeros_like(expected, bool)
        for p in layout.placements:  # later items cover earlier ones
            _, foreground = scenes.item_foreground(p)
            box = (slice(p.top, p.top + p.size), slice(p.left, p.left + p.size))
            expected[box][foreground] = p.label + 1
            drawn[box] |= foreground
        np.testing.assert_array_equal(record["mask"], expected)
        labels = {p.label + 1 for p in layout.placements}
        assert set(np.unique(record["mask"])) <= labels | {0}
        # Item pixels are the item's tint, not the background: they differ from the background
        # rendered alone.
        bare = scenes.render(type(layout)(layout.height, layout.width, layout.background_grid,
                                          layout.noise_seed, ()))
        changed = (record["image"] != bare["image"]).any(axis=-1)
        assert changed[drawn].mean() > 0.95 and not changed[~drawn].any()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split"):
        FashionMnistScenes("validation")
    with pytest.raises(ValueError, match="at least 32"):
        FashionMnistScenes(size=16)
    with pytest.raises(ValueError, match="lower bound"):
        FashionMnistScenes(size=(512, 256))
    with pytest.raises(IndexError):
        FashionMnistScenes(num_scenes=3)[3]


def test_the_example_command_writes_image_and_labels_side_by_side(tmp_path):
    from PIL import Image

    from vim_jax.data.fmnist_scenes import main
    main([str(tmp_path / "scene.png"), "--size", "64", "--index", "2", "--split", "test"])
    picture = np.asarray(Image.open(tmp_path / "scene.png").convert("RGB"))
    record = FashionMnistScenes("test", size=64, num_scenes=3, items=(4, 7))[2]
    assert picture.shape[0] == 64 and picture.shape[1] > 2 * 64 + 8
    np.testing.assert_array_equal(picture[:, :64], record["image"])
