"""Segmentation batches over a random-access source: shapes, padding, resume, host slices."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.resume_checks import assert_resumes_with_identical_batches
from vim_jax.data import fashion_mnist as fm
from vim_jax.data import seg_transforms as st
from vim_jax.data.fmnist_scenes import FashionMnistScenes
from vim_jax.data.segmentation_batches import SegmentationLoader, segmentation_iterator

pytestmark = pytest.mark.skipif(not fm.fashion_mnist_dir().is_dir(),
                                reason="apt-get install dataset-fashion-mnist")

CONFIG = st.SegTrainConfig(scale=(256, 64), crop_size=(48, 48))


def scenes(split="train", num_scenes=10):
    return FashionMnistScenes(split, size=(64, 96), num_scenes=num_scenes, seed=0)


def test_train_batches_are_augmented_crops_keyed_on_stream_position():
    source = scenes()
    it = segmentation_iterator(source, 4, train=True, seed=1, config=CONFIG)
    batch = next(it)
    assert batch["image"].shape == (4, 48, 48, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4, 48, 48) and batch["label"].dtype == np.uint8
    assert batch["mask"].tolist() == [True] * 4
    index = int(it.sampler.local_indices(0)[2])
    alone = st.train_transform(source[index]["image"], source[index]["mask"], st.example_rng(1, 2), CONFIG)
    np.testing.assert_array_equal(batch["image"][2], alone["image"])
    np.testing.assert_array_equal(batch["label"][2], alone["mask"])


def test_training_resumes_with_identical_batches():
    make = lambda: segmentation_iterator(scenes(), 4, train=True, seed=2, config=CONFIG)  # noqa: E731
    assert_resumes_with_identical_batches(make, before=2, after=2)  # crosses into epoch 1 (2 steps per epoch)


def test_hosts_read_slices_that_make_the_single_host_batch():
    whole = segmentation_iterator(scenes(), 4, train=True, seed=3, config=CONFIG, process_index=0, process_count=1)
    hosts = [segmentation_iterator(scenes(), 4, train=True, seed=3, config=CONFIG, process_index=h, process_count=2)
             for h in range(2)]
    global_batch, parts = next(whole), [next(h) for h in hosts]
    for key in ("image", "label"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), global_batch[key])


def test_evaluation_is_one_padded_pass_in_order():
    source = scenes("test", num_scenes=5)
    it = segmentation_iterator(source, 2, train=False, config=CONFIG, eval_pad_size=(96, 96))  # short side 64, long <= 96
    batches = list(it)
    assert len(batches) == 3 and [b["mask"].tolist() for b in batches][-1] == [True, False]
    first = batches[0]
    assert first["image"].shape == (2, 96, 96, 3) and first["label"].shape == (2, 96, 96)
    image, label = st.rescale(source[1]["image"], source[1]["mask"], CONFIG.scale)
    h, w = label.shape
    np.testing.assert_array_equal(first["image"][1, :h, :w], image)
    np.testing.assert_array_equal(first["label"][1, :h, :w], label)
    assert (first["label"][1, h:] == 255).all() and (first["label"][1, :, w:] == 255).all()
    assert min(h, w) == 64 and max(h, w) > 64


def test_evaluation_without_a_pad_size_refuses_mixed_sizes():
    loader = SegmentationLoader(scenes("test"), 0, train=False, config=CONFIG)
    with pytest.raises(ValueError, match="eval_pad_size"):
        loader(np.arange(4), np.arange(4))


def test_device_photometric_batches_give_the_host_pipelines_crops():
    from vim_jax.data.device_photometric import photometric_distortion

    source = scenes()
    host = next(segmentation_iterator(source, 4, train=True, seed=4, config=CONFIG))
    device = next(segmentation_iterator(source, 4, train=True, seed=4, config=CONFIG, device_photometric=True))
    assert device["photometric"].shape == (4, len(st.PHOTOMETRIC_COLUMNS))
    np.testing.assert_array_equal(device["label"], host["label"])
    distorted = np.asarray(photometric_distortion(device["image"], device["photometric"]))
    np.testing.assert_array_equal(distorted, host["image"])


def test_device_photometric_training_resumes_with_identical_batches():
    make = lambda: segmentation_iterator(scenes(), 4, train=True, seed=2, config=CONFIG,  # noqa: E731
                                         device_photometric=True)
    assert_resumes_with_identical_batches(make, before=2, after=1)
