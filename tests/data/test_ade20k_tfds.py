"""ADE20K: fake ADEChallengeData2016.zip in the official layout, prepared by the real TFDS builder."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.lazy_import import LazyModule, skip_module_without

skip_module_without("tensorflow_datasets")

from vim_jax.data import seg_transforms  # noqa: E402
from vim_jax.data.ade20k_classes import CLASS_NAMES  # noqa: E402

ade20k = LazyModule("vim_jax.data.ade20k")
fake_ade20k = LazyModule("vim_jax.data.fake_ade20k")  # imports ade20k
NUM_TRAIN, NUM_VAL = 5, 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, label maps written per split and file name)."""
    root = tmp_path_factory.mktemp("fake_ade20k")
    spec = fake_ade20k.FakeAde20kSpec(num_train=NUM_TRAIN, num_val=NUM_VAL, seed=1)
    written = fake_ade20k.write_fake_ade20k(root / "manual", spec)
    ade20k.prepare_ade20k(root / "data", root / "manual")
    return root / "data", written


def test_fake_archive_has_the_official_layout(tmp_path):
    written = fake_ade20k.write_fake_ade20k(tmp_path, fake_ade20k.FakeAde20kSpec(num_train=2, num_val=1))
    with zipfile.ZipFile(tmp_path / "ADEChallengeData2016.zip") as archive:
        names = set(archive.namelist())
        for stem, subset in [("ADE_train_00000001", "training"), ("ADE_train_00000002", "training"),
                             ("ADE_val_00000001", "validation")]:
            assert f"ADEChallengeData2016/images/{subset}/{stem}.jpg" in names
            assert f"ADEChallengeData2016/annotations/{subset}/{stem}.png" in names
        label_png = Image.open(io.BytesIO(archive.read("ADEChallengeData2016/annotations/validation/ADE_val_00000001.png")))
        assert label_png.mode == "L"
        np.testing.assert_array_equal(np.asarray(label_png), written["validation"]["ADE_val_00000001.jpg"])
    labels = np.concatenate([m.ravel() for split in written.values() for m in split.values()])
    assert labels.max() <= 150


def test_fake_archive_is_reproducible_and_the_cli_writes_it(tmp_path):
    fake_ade20k.main([str(tmp_path / "a"), "--train", "2", "--val", "1", "--seed", "3"])
    fake_ade20k.write_fake_ade20k(tmp_path / "b", fake_ade20k.FakeAde20kSpec(num_train=2, num_val=1, seed=3))
    assert (tmp_path / "a" / ade20k.ARCHIVE).read_bytes() == (tmp_path / "b" / ade20k.ARCHIVE).read_bytes()


def test_zero_label_becomes_ignore_and_classes_shift_down():
    np.testing.assert_array_equal(ade20k.reduce_zero_label(np.array([[0, 1, 2, 150]], np.uint8)),
                                  [[255, 0, 1, 149]])
    assert len(CLASS_NAMES) == 150 and CLASS_NAMES[0] == "wall" and CLASS_NAMES[149] == "flag"
    with pytest.raises(ValueError, match="0..150"):
        ade20k.reduce_zero_label(np.array([151]))


def test_tfds_prepares_both_splits_with_the_archives_labels(prepared):
    data_dir, written = prepared
    builder = ade20k.ade20k_builder(data_dir)
    assert builder.name == "ade20k_scene_parsing"
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    assert builder.info.splits["validation"].num_examples == NUM_VAL
    for split in ("train", "validation"):
        source = ade20k.Ade20k(split, data_dir)
        assert len(source) == len(written[split])
        seen = set()
        for i in range(len(source)):
            record, name = source[i], source.file_name(i)
            seen.add(name)
            image, mask = record["image"], record["mask"]
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
            np.testing.assert_array_equal(mask, ade20k.reduce_zero_label(written[split][name]))
        assert seen == set(written[split])


def test_records_feed_the_official_train_transform(prepared):
    data_dir, _ = prepared
    source = ade20k.Ade20k("train", data_dir)
    config = seg_transforms.SegTrainConfig(scale=(128, 32), crop_size=(32, 32))
    out = seg_transforms.train_transform(source[0]["image"], source[0]["mask"],
                                         seg_transforms.example_rng(0, 0), config)
    assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
    assert set(np.unique(out["mask"])) <= set(range(150)) | {255}


def test_a_missing_archive_says_where_to_get_it(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "ADEChallengeData2016.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"):
        ade20k.prepare_ade20k(tmp_path / "data", tmp_path / "manual")
