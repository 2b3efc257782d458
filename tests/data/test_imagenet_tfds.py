"""The real TFDS imagenet2012 builder on generated official-layout archives, and its Grain pipelines."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from tests.lazy_import import LazyModule, skip_module_without

skip_module_without("tensorflow_datasets")

from tests.data.conftest import FAKE_SPEC  # noqa: E402
from tests.data.resume_checks import assert_resumes_with_identical_batches  # noqa: E402
from vim_jax.data.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from vim_jax.data.device_ops import normalize  # noqa: E402
from vim_jax.data.fake_imagenet import TRAIN_TAR, VAL_TAR, FakeImageNetSpec, main, write_fake_imagenet  # noqa: E402
from vim_jax.data.imagenet_labels import tfds_synsets, tfds_validation_synsets  # noqa: E402
from vim_jax.data.pil_transforms import eval_transform_pil  # noqa: E402

imagenet = LazyModule("vim_jax.data.imagenet")
NUM_TRAIN = FAKE_SPEC.num_classes * FAKE_SPEC.train_per_class


def test_fake_archives_have_the_official_layout(tmp_path):
    summary = write_fake_imagenet(tmp_path, FakeImageNetSpec(num_classes=2, train_per_class=3, num_val=4))
    with tarfile.open(tmp_path / TRAIN_TAR) as outer:
        assert outer.getnames() == ["n01440764.tar", "n01443537.tar"]
        inner = tarfile.open(fileobj=outer.extractfile("n01443537.tar"))
        assert inner.getnames() == [f"n01443537_{k}.JPEG" for k in (1, 2, 3)]
        Image.open(io.BytesIO(inner.extractfile("n01443537_2.JPEG").read())).verify()
    with tarfile.open(tmp_path / VAL_TAR) as val:
        assert val.getnames() == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)]
    assert summary["val_labels"] == [tfds_synsets().index(w) for w in tfds_validation_synsets()[:4]]


def test_fake_archives_are_reproducible_and_the_cli_writes_them(tmp_path):
    main([str(tmp_path / "a"), "--classes", "2", "--train-per-class", "1", "--val", "2", "--seed", "4"])
    write_fake_imagenet(tmp_path / "b", FakeImageNetSpec(num_classes=2, train_per_class=1, num_val=2, seed=4))
    for name in (TRAIN_TAR, VAL_TAR):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_tfds_prepares_the_splits_with_the_right_labels(fake_imagenet):
    data_dir, summary = fake_imagenet
    builder = imagenet.imagenet_builder(data_dir)
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    assert builder.info.splits["validation"].num_examples == FAKE_SPEC.num_val
    assert builder.info.features["label"].num_classes == 1000
    train = builder.as_data_source("train")
    names_and_labels = {(train[i]["file_name"].decode(), int(train[i]["label"])) for i in range(NUM_TRAIN)}
    assert {label for _, label in names_and_labels} == set(range(FAKE_SPEC.num_classes))
    assert all(name.startswith(tfds_synsets()[label]) for name, label in names_and_labels)
    val = builder.as_data_source("validation")
    by_name = {val[i]["file_name"].decode(): int(val[i]["label"]) for i in range(FAKE_SPEC.num_val)}
    assert [by_name[f"ILSVRC2012_val_{i + 1:08d}.JPEG"] for i in range(FAKE_SPEC.num_val)] == summary["val_labels"]


def test_train_pipeline_batches(fake_imagenet):
    data_dir, _ = fake_imagenet
    it = imagenet.imagenet_iterator(data_dir, "train", 8, seed=0, image_size=64)
    batches = [next(it) for _ in range(4)]  # 3 steps per epoch: crosses into epoch 1
    for batch in batches:
        assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8  # what crosses
        normalised = np.asarray(normalize(batch["image"], IMAGENET_MEAN, IMAGENET_STD))
        assert np.isfinite(normalised).all() and -3 < normalised.mean() < 3
        assert batch["label"].dtype == np.int32 and batch["mask"].all()
        assert 0 <= batch["label"].min() and batch["label"].max() < FAKE_SPEC.num_classes
    epoch0 = np.concatenate([b["label"] for b in batches[:3]])
    np.testing.assert_array_equal(np.bincount(epoch0), [FAKE_SPEC.train_per_class] * FAKE_SPEC.num_classes)
    it.close()


def test_eval_pipeline_matches_the_pil_transform_and_pads(fake_imagenet):
    data_dir, summary = fake_imagenet
    it = imagenet.imagenet_iterator(data_dir, "validation", 4)
    batches = list(it)
    assert len(batches) == 3 and [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    source = imagenet.imagenet_builder(data_dir).as_data_source("validation")
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, [int(source[i]["label"]) for i in range(FAKE_SPEC.num_val)])
    assert sorted(labels.tolist()) == sorted(summary["val_labels"])
    reference = eval_transform_pil(source[5]["image"])
    normalised = np.asarray(normalize(batches[1]["image"][1], IMAGENET_MEAN, IMAGENET_STD))
    assert np.abs((normalised - reference) * np.array(IMAGENET_STD)).max() * 255 <= 2.01


def test_train_pipeline_resumes_with_identical_batches(fake_imagenet):
    data_dir, _ = fake_imagenet
    make = lambda: imagenet.imagenet_iterator(data_dir, "train", 6, seed=1, image_size=48)  # noqa: E731
    assert_resumes_with_identical_batches(make, before=2, after=3)  # crosses into epoch 1 (4 steps per epoch)


def test_hosts_read_disjoint_slices_that_make_the_single_host_batch(fake_imagenet):
    data_dir, _ = fake_imagenet
    # RandAugment off only to keep the test quick: what is tested is the per-example seeding.
    kwargs = dict(seed=2, image_size=32, num_repeats=3, num_replicas=4, rand_augment=None)
    whole = imagenet.imagenet_iterator(data_dir, "train", 8, process_index=0, process_count=1, **kwargs)
    hosts = [imagenet.imagenet_iterator(data_dir, "train", 8, process_index=h, process_count=2, **kwargs)
             for h in range(2)]
    global_batches = [next(whole) for _ in range(2)]
    for global_batch in global_batches:
        parts = [next(h) for h in hosts]
        for key in ("image", "label"):
            # Augmentation is keyed on stream positions, so even the augmented pixels agree.
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), global_batch[key])
    # Repeated augmentation: copies of an image sit on different replicas, augmented differently.
    indices = whole.sampler.global_indices(0)
    copies = np.nonzero(indices == indices[0])[0]
    assert len(copies) >= 2 and len(set(copies // 2)) == len(copies)  # 2 examples per replica
    images = global_batches[0]["image"]
    assert not np.array_equal(images[copies[0]], images[copies[1]])
    for it in [whole, *hosts]:
        it.close()


def test_worker_processes_build_the_same_batches_and_resume_with_another_worker_count(fake_imagenet):
    data_dir, _ = fake_imagenet
    # RandAugment off only to keep the test quick (each worker process compiles its own transform).
    make = lambda workers: imagenet.imagenet_iterator(data_dir, "train", 6, seed=1, image_size=32,  # noqa: E731
                                                      rand_augment=None, num_workers=workers)
    with make(0) as in_process:
        expected = [next(in_process) for _ in range(5)]  # crosses into epoch 1 (4 steps per epoch)
    with make(2) as two_workers:
        got = [next(two_workers) for _ in range(3)]
        state = json.loads(json.dumps(two_workers.get_state()))
    with make(0) as resumed:
        resumed.set_state(state)
        got += [next(resumed) for _ in range(2)]
    for want, batch in zip(expected, got, strict=True):
        for key in want:
            np.testing.assert_array_equal(batch[key], want[key])
