"""ADE20K scene parsing (150 classes) as a TFDS dataset read by random access.

The official Vim segmentation recipe (hustvl/Vim ``seg/``, through mmsegmentation) trains on
``ADEChallengeData2016``: ``images/{training,validation}/ADE_*.jpg`` with single-channel label
PNGs ``annotations/{training,validation}/ADE_*.png`` holding 0 ("other") and the 150 classes
1..150; 20210 training and 2000 validation images. TFDS's own ``scene_parse150`` is *not* that
data: its builder downloads ``annotations_instance.tar`` of the 2017 instance-segmentation
challenge, RGB PNGs whose red channel is one of 100 object categories and whose green channel is
an instance id, without the stuff classes (wall, sky, floor, ...). So this module defines the
TFDS builder ``ade20k_scene_parsing`` over the official ``ADEChallengeData2016.zip``, placed in a
manual directory (http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip).

Prepare once with :func:`prepare_ade20k`; then :class:`Ade20k` gives records
``{"image": uint8 [H, W, 3], "mask": uint8 [H, W]}`` with mmseg's ``reduce_zero_label``: ADE's 0
becomes the ignore label 255 and class ``c`` becomes ``c - 1`` (names in ``ade20k_classes``).
``fake_ade20k.py`` writes a tiny archive in the official layout for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vim_jax.data.ade20k_classes import NUM_CLASSES
from vim_jax.data.seg_transforms import IGNORE_INDEX

ARCHIVE = "ADEChallengeData2016.zip"
ROOT = "ADEChallengeData2016"
SPLITS = {"train": "training", "validation": "validation"}
FILE_FORMAT = "array_record"  # random access, as for ImageNet


class Ade20kSceneParsing(tfds.core.GeneratorBasedBuilder):
    """ADEChallengeData2016 (MIT Scene Parsing benchmark) from its official zip."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images and 150-class label maps of ADEChallengeData2016."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {ARCHIVE} from http://data.csail.mit.edu/places/ADEchallenge/{ARCHIVE} "
        "into the manual directory.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "annotation": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "annotation"),
            homepage="http://sceneparsing.csail.mit.edu/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archive = Path(dl_manager.manual_dir) / ARCHIVE
        if not archive.is_file():
            raise FileNotFoundError(f"{archive} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        root = Path(dl_manager.extract(os.fspath(archive))) / ROOT
        return {split: self._generate_examples(root, subset) for split, subset in SPLITS.items()}

    def _generate_examples(self, root: Path, subset: str):
        images = sorted((root / "images" / subset).glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"no images under {root / 'images' / subset}: not the official layout")
        for image in images:
            annotation = root / "annotations" / subset / f"{image.stem}.png"
            if not annotation.is_file():
                raise FileNotFoundError(f"{image.name} has no label map {annotation}")
            yield image.stem, {"image": os.fspath(image), "annotation": os.fspath(annotation),
                               "file_name": image.name}


def ade20k_builder(data_dir: str | os.PathLike) -> Ade20kSceneParsing:
    """The builder over ``data_dir``, in the random-access file format."""
    return Ade20kSceneParsing(data_dir=os.fspath(data_dir), file_format=FILE_FORMAT)


def prepare_ade20k(data_dir: str | os.PathLike, manual_dir: str | os.PathLike) -> Ade20kSceneParsing:
    """Prepares (if not yet prepared) the dataset from ``manual_dir/ADEChallengeData2016.zip``; offline."""
    builder = ade20k_builder(data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return builder


def reduce_zero_label(annotation: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 -> 255 (ignored), c -> c - 1; uint8 out."""
    annotation = np.asarray(annotation)
    if annotation.size and annotation.max() > NUM_CLASSES:
        raise ValueError(f"ADE20K labels are 0..{NUM_CLASSES}, found {annotation.max()}")
    return np.where(annotation == 0, IGNORE_INDEX, annotation.astype(np.int64) - 1).astype(np.uint8)


class Ade20k:
    """Random-access ADE20K records of a prepared ``data_dir`` (see :func:`prepare_ade20k`).

    Args:
      split: 'train' or 'validation' (or any TFDS slice of them, e.g. 'train[:1%]').
      data_dir: where the TFDS dataset was prepared.
    """

    def __init__(self, split: str, data_dir: str | os.PathLike):
        self.split = split
        self._source = ade20k_builder(data_dir).as_data_source(split)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        example = self._source[int(i)]
        return {"image": np.asarray(example["image"]), "mask": reduce_zero_label(example["annotation"][..., 0])}

    def file_name(self, i: int) -> str:
        """The image's name in the archive (``ADE_val_00000001.jpg``)."""
        name = self._source[int(i)]["file_name"]
        return name.decode() if isinstance(name, bytes) else str(name)
