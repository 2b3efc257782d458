"""ImageNet-2012 through the real TFDS ``imagenet2012`` builder, read by a resumable tf.data pipeline.

Preparation (once): :func:`prepare_imagenet` runs ``tfds.builder('imagenet2012', data_dir=...)
.download_and_prepare(...)`` on a manual directory holding ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar``. It writes the ``array_record`` file format, which allows random access:
the index order then comes from :class:`~vim_jax.data.iterators.IndexSampler` (seeded shuffling,
repeated augmentation, per-host slices), so the iterator's state is just the global step.

Reading: a Python generator fetches each host-local batch of serialised records (ArrayRecord
reads a batch of keys in parallel), tf.data parses, decodes and augments them with a parallel
deterministic ``map`` (stateless random ops seeded per example, see ``transforms.py``), and
batches again. Output batches: ``image`` float32 [local_batch, 224, 224, 3], ``label`` int32,
``mask`` bool. Call ``close()`` (or use the iterator in a ``with`` block) when done with it.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vim_jax.data import transforms
from vim_jax.data.constants import IMAGENET_EVAL_CROP_PCT, IMAGENET_IMAGE_SIZE
from vim_jax.data.iterators import Batch, IndexSampler, ResumableIterator
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


class TFDSImageIterator(ResumableIterator):
    """Host-local batches of (augmented) images from a random-access TFDS split.

    Args:
      builder: a prepared TFDS builder in a random-access format (see :func:`imagenet_builder`).
      split: e.g. 'train', 'validation', or any TFDS split slice ('train[:1%]').
      sampler: the index order; its ``num_examples`` must equal the split's size.
      train: apply :func:`transforms.train_transform` (else :func:`transforms.eval_transform`).
      train_config: the training augmentation; ``image_size`` also sets the evaluation size.
      eval_crop_pct: evaluation resize = int(image_size / eval_crop_pct).
      num_steps: None for endless training; ``sampler.steps_per_epoch`` for one evaluation pass.
      num_parallel_calls: tf.data map parallelism (default: autotune).
    """

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str, sampler: IndexSampler, *, train: bool,
                 train_config: transforms.TrainTransformConfig = transforms.TrainTransformConfig(),
                 eval_crop_pct: float = IMAGENET_EVAL_CROP_PCT, num_steps: int | None = None,
                 num_parallel_calls: int = tf.data.AUTOTUNE):
        super().__init__(sampler, num_steps)
        self.source = _raw_source(builder, split)
        if len(self.source) != sampler.num_examples:
            raise ValueError(f"split {split!r} has {len(self.source)} examples, sampler expects {sampler.num_examples}")
        self.feature_spec = builder.info.features.tf_example_spec
        self.train = train
        self.train_config = train_config
        self.eval_crop_pct = eval_crop_pct
        self.num_parallel_calls = num_parallel_calls

    def _records(self, start_step: int, stop: threading.Event) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        step = start_step
        while (self.num_steps is None or step < self.num_steps) and not stop.is_set():
            indices = self.sampler.local_indices(step)
            valid = indices >= 0
            # Padding (only in an evaluation pass's last batch) re-reads record 0, masked out.
            records = self.source.__getitems__(np.where(valid, indices, 0).tolist())
            seeds = example_seeds(self.sampler.seed, self.sampler.local_positions(step))
            yield np.array(records, dtype=object), seeds, valid
            step += 1

    def _example_fn(self):
        spec, config, train = self.feature_spec, self.train_config, self.train
        size, crop_pct = config.image_size, self.eval_crop_pct

        def fn(record, seed, valid):
            example = tf.io.parse_single_example(record, spec)
            if train:
                image = transforms.train_transform(example["image"], seed, config)
            else:
                image = transforms.eval_transform(example["image"], size, crop_pct, config.mean, config.std)
            return {"image": image, "label": tf.cast(example["label"], tf.int32), "mask": valid}

        return fn

    def make_dataset(self, start_step: int, stop: threading.Event | None = None) -> tf.data.Dataset:
        """The tf.data pipeline producing batches for steps start_step, start_step + 1, ...

        Setting ``stop`` makes the record generator end at its next call.
        """
        stop = stop or threading.Event()
        local = self.sampler.local_batch_size
        signature = (tf.TensorSpec([local], tf.string), tf.TensorSpec([local, 2], tf.int64),
                     tf.TensorSpec([local], tf.bool))
        ds = tf.data.Dataset.from_generator(lambda: self._records(start_step, stop), output_signature=signature)
        ds = ds.prefetch(2)  # keep reading while the map works on the previous batch
        ds = ds.unbatch()
        ds = ds.map(self._example_fn(), num_parallel_calls=self.num_parallel_calls, deterministic=True)
        ds = ds.batch(local, drop_remainder=True)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_optimization.map_parallelization = True
        return ds.with_options(options)

    def _batches_from(self, start_step: int) -> Iterator[Batch]:
        stop = threading.Event()
        return _DrainingIterator(self.make_dataset(start_step, stop), stop)


class _DrainingIterator:
    """A tf.data numpy iterator that is run to its end before it is dropped.

    Destroying a tf.data iterator while its ``from_generator`` source is mid-call can hang (we saw
    the destructor wait forever on the generator's function). So :meth:`close` tells the generator
    to stop, reads out what is already in flight (a few batches), and only then lets TF destroy
    an iterator that has nothing running.
    """

    _live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, dataset: tf.data.Dataset, stop: threading.Event):
        self._iterator = iter(dataset.as_numpy_iterator())
        self._stop = stop
        _DrainingIterator._live.add(self)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            raise StopIteration
        return next(self._iterator)

    def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            self._stop.set()
            for _ in iterator:
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to protect
            pass


@atexit.register
def _close_live_iterators() -> None:
    # Before interpreter teardown, while Python can still run the generators' last calls.
    for iterator in list(_DrainingIterator._live):
        iterator.close()


def imagenet_iterator(data_dir: str | os.PathLike, split: str, global_batch_size: int, *, train: bool | None = None,
                      seed: int = 0, image_size: int = IMAGENET_IMAGE_SIZE, num_repeats: int = 1,
                      num_replicas: int = 1, rand_augment: str | None = "rand-m9-mstd0.5-inc1",
                      random_erasing: float = 0.25, eval_crop_pct: float = IMAGENET_EVAL_CROP_PCT,
                      process_index: int | None = None, process_count: int | None = None,
                      num_parallel_calls: int = tf.data.AUTOTUNE) -> TFDSImageIterator:
    """Resumable host-local ImageNet batches from a prepared ``data_dir`` (see :func:`prepare_imagenet`).

    Training (default for split 'train'): seeded shuffle per epoch, endless, random-resized crop +
    flip + RandAugment + normalise + random erasing, optional repeated augmentation
    (``num_repeats=3``, ``num_replicas`` = data-parallel size). Evaluation: one pass in order,
    resize-256 / centre-crop-224 / normalise, last batch padded (``mask`` False).
    """
    train = split.startswith("train") if train is None else train
    builder = imagenet_builder(data_dir)
    num_examples = len(_raw_source(builder, split))
    sampler = IndexSampler(num_examples, global_batch_size, seed=seed, shuffle=train, drop_remainder=train,
                           num_repeats=num_repeats, num_replicas=num_replicas,
                           process_index=process_index, process_count=process_count)
    config = transforms.TrainTransformConfig(image_size=image_size, rand_augment=rand_augment,
                                             random_erasing=random_erasing)
    return TFDSImageIterator(builder, split, sampler, train=train, train_config=config, eval_crop_pct=eval_crop_pct,
                             num_steps=None if train else sampler.steps_per_epoch,
                             num_parallel_calls=num_parallel_calls)
