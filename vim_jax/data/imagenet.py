"""ImageNet-2012 through the real TFDS ``imagenet2012`` builder, read as a random-access Grain source.

Preparation (once): :func:`prepare_imagenet` runs ``tfds.builder('imagenet2012', data_dir=...)
.download_and_prepare(...)`` on a manual directory holding ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar``. It writes the ``array_record`` file format, which allows random access:
the index order then comes from :class:`~vim_jax.data.sampler.IndexSampler` (seeded shuffling,
repeated augmentation, per-host slices), so the iterator's state is just the global step.

Reading (:class:`ImageNetLoader`, run by the Grain pipeline of ``pipeline.py``, in worker
processes when ``num_workers > 0``): each host-local batch's serialised records are fetched from
the ArrayRecord files in one call, then every example is parsed, decoded and augmented by the TF
ops of ``transforms.py`` run as one compiled ``tf.function`` (stateless random ops seeded per
example). Output batches: ``image`` uint8 [local_batch, 224, 224, 3] (normalised, and randomly
erased in training, on the accelerator: see ``device_ops.py``), ``label`` int32, ``mask`` bool. Call ``close()`` (or use the iterator in a ``with`` block) when done with it.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vim_jax.data import transforms
from vim_jax.data.constants import IMAGENET_EVAL_CROP_PCT, IMAGENET_IMAGE_SIZE
from vim_jax.data.pipeline import Batch, DataIterator
from vim_jax.data.sampler import IndexSampler
from vim_jax.data.seeding import example_seeds

DATASET = "imagenet2012"
FILE_FORMAT = "array_record"  # random access: needed for seeded order, per-host slices and resuming


def imagenet_builder(data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """The TFDS ``imagenet2012`` builder over ``data_dir``, in the random-access file format."""
    return tfds.builder(DATASET, data_dir=os.fspath(data_dir), file_format=FILE_FORMAT)


def prepare_imagenet(data_dir: str | os.PathLike, manual_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """Prepares (if not yet prepared) ImageNet from the official tars in ``manual_dir``.

    Offline: no GCS lookup, no statistics pass. Real ImageNet takes hours on one machine; the
    fake archives of ``fake_imagenet.py`` take seconds.
    """
    builder = imagenet_builder(data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), try_download_gcs=False,
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return builder


def _raw_source(builder: tfds.core.DatasetBuilder, split: str):
    # RAW_BYTES: the serialised tf.Example as stored; parsing and decoding happen in tf.data.
    return builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


class ImageNetLoader:
    """A Grain batch loader: reads records of a random-access TFDS split and transforms them.

    Picklable (it holds paths and settings only), so Grain worker processes each open the
    ArrayRecord files and build the TF transform themselves, on first use.

    Args:
      data_dir: a prepared TFDS data directory (see :func:`prepare_imagenet`).
      split: e.g. 'train', 'validation', or any TFDS split slice ('train[:1%]').
      train: apply :func:`transforms.train_transform` (else :func:`transforms.eval_transform`).
      seed: the run's seed; each example's augmentation is keyed on (seed, its stream position).
      train_config: the training augmentation; ``image_size`` also sets the evaluation size.
      eval_crop_pct: evaluation resize = int(image_size / eval_crop_pct).
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, *, train: bool, seed: int = 0,
                 train_config: transforms.TrainTransformConfig = transforms.TrainTransformConfig(),
                 eval_crop_pct: float = IMAGENET_EVAL_CROP_PCT):
        self.data_dir = os.fspath(data_dir)
        self.split = split
        self.train = train
        self.seed = seed
        self.train_config = train_config
        self.eval_crop_pct = eval_crop_pct
        self._opened = None  # (source, per-example tf.function), built in the process that reads

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_opened": None}

    def _open(self):
        if self._opened is None:
            builder = imagenet_builder(self.data_dir)
            spec = builder.info.features.tf_example_spec
            config, train = self.train_config, self.train

            @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64)])
            def example(record, seed):
                parsed = tf.io.parse_single_example(record, spec)
                if train:
                    image = transforms.train_transform(parsed["image"], seed, config)
                else:
                    image = transforms.eval_transform(parsed["image"], config.image_size, self.eval_crop_pct)
                return image, tf.cast(parsed["label"], tf.int32)

            self._opened = (_raw_source(builder, self.split), example)
        return self._opened

    def __len__(self) -> int:
        return len(self._open()[0])

    def __call__(self, indices: np.ndarray, positions: np.ndarray) -> Batch:
        source, example = self._open()
        records = source.__getitems__(indices.tolist())  # ArrayRecord reads a batch of keys in parallel
        seeds = example_seeds(self.seed, positions)
        images, labels = zip(*(example(record, seed) for record, seed in zip(records, seeds)))
        return {"image": np.stack([i.numpy() for i in images]), "label": np.array([int(l) for l in labels], np.int32)}


def imagenet_iterator(data_dir: str | os.PathLike, split: str, global_batch_size: int, *, train: bool | None = None,
                      seed: int = 0, image_size: int = IMAGENET_IMAGE_SIZE, num_repeats: int = 1,
                      num_replicas: int = 1, rand_augment: str | None = "rand-m9-mstd0.5-inc1",
                      eval_crop_pct: float = IMAGENET_EVAL_CROP_PCT,
                      process_index: int | None = None, process_count: int | None = None,
                      num_workers: int = 0, num_threads: int = 2) -> DataIterator:
    """Resumable host-local ImageNet batches from a prepared ``data_dir`` (see :func:`prepare_imagenet`).

    Training (default for split 'train'): seeded shuffle per epoch, endless, random-resized crop +
    flip + RandAugment, optional repeated augmentation (``num_repeats=3``, ``num_replicas`` =
    data-parallel size). Evaluation: one pass in order, resize-256 / centre-crop-224, last batch
    padded (``mask`` False). Images are uint8: normalise them (and, in training, erase randomly) on
    device with ``device_ops``. Batches are built by ``num_workers`` Grain worker processes (0:
    ``num_threads`` threads of this process); they are the same for any number of either.
    """
    train = split.startswith("train") if train is None else train
    config = transforms.TrainTransformConfig(image_size=image_size, rand_augment=rand_augment)
    loader = ImageNetLoader(data_dir, split, train=train, seed=seed, train_config=config, eval_crop_pct=eval_crop_pct)
    sampler = IndexSampler(len(loader), global_batch_size, seed=seed, shuffle=train, drop_remainder=train,
                           num_repeats=num_repeats, num_replicas=num_replicas,
                           process_index=process_index, process_count=process_count)
    return DataIterator(sampler, loader, num_steps=None if train else sampler.steps_per_epoch,
                        num_workers=num_workers, num_threads=num_threads)
