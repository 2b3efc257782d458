"""Input pipelines on Grain: Fashion-MNIST (numpy), ImageNet via TFDS ArrayRecord, augmentations.

Modules (each importable alone; only ``imagenet``, ``transforms`` and ``rand_augment`` need
TensorFlow, and this package imports none of them until asked):

* ``fashion_mnist``  IDX reader for the Debian ``dataset-fashion-mnist`` files, host/device transforms.
* ``imagenet``       TFDS ``imagenet2012`` preparation and its batch loader (TF ops in Grain workers).
* ``transforms``     random-resized crop, flip, eval resize/crop (TF, uint8 out).
* ``device_ops``     normalisation and random erasing in JAX, inside the jitted step.
* ``rand_augment``   timm RandAugment (``rand-m9-mstd0.5-inc1``) in TF.
* ``pil_transforms`` the evaluation transform with PIL for single images (no TF).
* ``mixup``          Mixup/CutMix + label smoothing in JAX.
* ``sampler``        seeded index order: host sharding, repeated augmentation.
* ``pipeline``       the Grain pipeline: resumable iterators, worker processes, device prefetch.
* ``imagenet_labels`` ImageNet class names from TFDS wnids + WordNet.
* ``fake_imagenet``  tiny official-layout ImageNet archives for tests and benchmarks.

The names below resolve lazily, so ``from vim_jax.data import fashion_mnist_iterator`` does not
import TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FashionMnistPreprocess": "fashion_mnist",
    "load_fashion_mnist": "fashion_mnist",
    "fashion_mnist_iterator": "fashion_mnist",
    "fashion_mnist_device_transform": "fashion_mnist",
    "fashion_mnist_to_float": "fashion_mnist",
    "normalize": "device_ops",
    "random_erasing": "device_ops",
    "IndexSampler": "sampler",
    "DataIterator": "pipeline",
    "array_iterator": "pipeline",
    "prefetch_to_device": "pipeline",
    "MixupConfig": "mixup",
    "mixup_cutmix": "mixup",
    "eval_transform_pil": "pil_transforms",
    "imagenet_class_names": "imagenet_labels",
    "imagenet_wnids": "imagenet_labels",
    "write_fake_imagenet": "fake_imagenet",
    "prepare_imagenet": "imagenet",
    "imagenet_iterator": "imagenet",
    "TrainTransformConfig": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
