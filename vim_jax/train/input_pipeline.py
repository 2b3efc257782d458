"""The trainer's view of the data: iterators for a config's dataset, and batch-level augmentation.

Datasets (``config.dataset.name``):

* ``fashion_mnist``: numpy only (``vim_jax.data.fashion_mnist``); never imports TensorFlow, so it
  runs where TF is not installed.
* ``imagenet2012``: the TFDS builder's ArrayRecord files read by Grain, ``dataset.num_workers``
  worker processes decoding and augmenting (``vim_jax.data.imagenet``), imported only when asked
  for. ``dataset.manual_dir`` (the official tars) is prepared into ``dataset.data_dir`` on first use.
* ``fmnist_scenes`` (segmentation): Fashion-MNIST scenes generated on demand (numpy only,
  ``vim_jax.data.fmnist_scenes``); ``ade20k`` (segmentation): the TFDS builder
  ``ade20k_scene_parsing`` (``vim_jax.data.ade20k``), prepared from ``dataset.manual_dir`` on first
  use. Both go through ``vim_jax.data.segmentation_batches`` with the mmseg pipeline's settings
  of ``config.dataset``; their ``label`` is a label map.

Iterators yield host-local batches (``image`` uint8, ``label``, ``mask``) for global steps; their
state is the step, which the trainer checkpoints. On device, in the jitted steps, the images
become the model's normalised float32 inputs (:func:`model_inputs`); training then adds ImageNet's
random erasing, Mixup/CutMix and label smoothing (:func:`batch_to_targets`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import ml_collections

from vim_jax.data import device_ops, fashion_mnist, mixup
from vim_jax.data import seg_transforms as st
from vim_jax.data.constants import IMAGENET_MEAN, IMAGENET_STD
from vim_jax.data.pipeline import DataIterator
from vim_jax.data.segmentation_batches import segmentation_iterator

SEGMENTATION_DATASETS = ("fmnist_scenes", "ade20k")
DATASETS = ("fashion_mnist", "imagenet2012", *SEGMENTATION_DATASETS)
_ERASING_SALT = 0x657261  # separates random erasing's key from mixup's


def _check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"config.dataset.name={name!r}; expected one of {DATASETS}")


def _fashion_mnist_spec(config: ml_collections.ConfigDict) -> fashion_mnist.FashionMnistPreprocess:
    data = config.dataset
    return fashion_mnist.FashionMnistPreprocess(image_size=data.image_size, channels=data.channels,
                                                pad=data.crop_padding, flip=data.flip)


def _fashion_mnist(config: ml_collections.ConfigDict, split: str, global_batch_size: int, *, train: bool,
                   num_replicas: int) -> DataIterator:
    data = config.dataset
    return fashion_mnist.fashion_mnist_iterator(
        split, global_batch_size, train=train, seed=config.seed, spec=_fashion_mnist_spec(config),
        num_repeats=data.num_repeats if train else 1, num_replicas=num_replicas, data_dir=data.data_dir)


@functools.lru_cache(maxsize=4)
def _prepared_imagenet(data_dir: str, manual_dir: str | None) -> None:
    from vim_jax.data import imagenet

    if manual_dir:
        imagenet.prepare_imagenet(data_dir, manual_dir)  # a no-op once prepared


def _imagenet(config: ml_collections.ConfigDict, split: str, global_batch_size: int, *, train: bool,
              num_replicas: int) -> DataIterator:
    from vim_jax.data import imagenet

    data = config.dataset
    if not data.data_dir:
        raise ValueError("set --config.dataset.data_dir to the TFDS data directory (and "
                         "--config.dataset.manual_dir to the folder of the ILSVRC2012 tars to prepare it)")
    _prepared_imagenet(data.data_dir, data.manual_dir)
    return imagenet.imagenet_iterator(
        data.data_dir, split, global_batch_size, train=train, seed=config.seed, image_size=data.image_size,
        num_repeats=data.num_repeats if train else 1, num_replicas=num_replicas,
        rand_augment=data.rand_augment or None, eval_crop_pct=data.eval_crop_pct, num_workers=data.num_workers)


def seg_train_config(config: ml_collections.ConfigDict) -> st.SegTrainConfig:
    """The segmentation pipeline's settings in ``config.dataset``."""
    data = config.dataset
    return st.SegTrainConfig(scale=tuple(data.scale), ratio_range=tuple(data.ratio_range),
                             crop_size=tuple(data.crop_size), cat_max_ratio=data.cat_max_ratio,
                             flip_prob=data.flip_prob, photometric=data.photometric)


def _segmentation_source(config: ml_collections.ConfigDict, split: str, *, train: bool):
    data = config.dataset
    if data.name == "fmnist_scenes":
        from vim_jax.data.fmnist_scenes import FashionMnistScenes

        count = data.num_train_scenes if train else data.num_eval_scenes
        return FashionMnistScenes(split, size=tuple(data.scene_size), num_scenes=count, seed=config.seed,
                                  items=tuple(data.scene_items), item_scale=tuple(data.scene_item_scale),
                                  data_dir=data.data_dir)
    from vim_jax.data import ade20k

    if not data.data_dir:
        raise ValueError("set --config.dataset.data_dir to the TFDS data directory (and "
                         "--config.dataset.manual_dir to the folder of ADEChallengeData2016.zip to prepare it)")
    if data.manual_dir:
        ade20k.prepare_ade20k(data.data_dir, data.manual_dir)  # a no-op once prepared
    return ade20k.Ade20k(split, data.data_dir)


def _segmentation(config: ml_collections.ConfigDict, split: str, global_batch_size: int, *, train: bool,
                  num_replicas: int) -> DataIterator:
    del num_replicas  # no repeated augmentation
    data = config.dataset
    return segmentation_iterator(_segmentation_source(config, split, train=train), global_batch_size, train=train,
                                 seed=config.seed, config=seg_train_config(config),
                                 eval_pad_size=tuple(data.eval_pad_size),
                                 device_photometric=data.get("photometric_on_device", False),
                                 num_workers=data.num_workers)


def make_iterator(config: ml_collections.ConfigDict, split: str, *, train: bool) -> DataIterator:
    """Host-local batches of ``split``: endless and augmented if ``train``, else one padded pass."""
    _check_dataset(config.dataset.name)
    batch = config.global_batch_size if train else config.eval_batch_size
    # Repeated augmentation deals copies over DeiT's replicas (its GPUs); a fixed count, not the
    # mesh size, so that the data order does not depend on how the run is sharded.
    replicas = config.dataset.get("repeat_replicas", 1)
    builders = {"fashion_mnist": _fashion_mnist, "imagenet2012": _imagenet}
    build = builders.get(config.dataset.name, _segmentation)
    return build(config, split, batch, train=train, num_replicas=replicas)


def mixup_config(config: ml_collections.ConfigDict) -> mixup.MixupConfig:
    aug = config.augment
    return mixup.MixupConfig(mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha, prob=aug.mix_prob,
                             switch_prob=aug.switch_prob, label_smoothing=aug.label_smoothing,
                             num_classes=config.dataset.num_classes)


def model_inputs(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """``uint8 images -> float32 model inputs``, jit-able, for the device: ImageNet's mean/std
    normalisation (ImageNet, the segmentation datasets), or Fashion-MNIST's (with its resize and
    channel replication)."""
    _check_dataset(config.dataset.name)
    if config.dataset.name == "fashion_mnist":
        return functools.partial(fashion_mnist.fashion_mnist_to_float, spec=_fashion_mnist_spec(config))
    # ImageNet's statistics are also mmseg's ADE20K normalisation (in 0-255 units there).
    return functools.partial(device_ops.normalize, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def batch_to_targets(config: ml_collections.ConfigDict):
    """``(key, batch) -> (images, soft targets)``, jit-able: the model inputs of :func:`model_inputs`,
    randomly erased (ImageNet, ``dataset.random_erasing``), then Mixup/CutMix + label smoothing."""
    mix = mixup_config(config)
    groups = config.augment.mix_groups
    to_float = model_inputs(config)
    erasing = config.dataset.random_erasing if config.dataset.name == "imagenet2012" else 0.0

    def apply(key: jax.Array, batch: dict):
        images = to_float(batch["image"])
        if erasing > 0:
            images = device_ops.random_erasing(jax.random.fold_in(key, _ERASING_SALT), images, erasing)
        return mixup.mixup_cutmix(key, images, batch["label"], mix, num_groups=groups)

    return apply
