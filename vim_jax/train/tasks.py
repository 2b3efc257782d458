"""What the one training loop does differently per task: the loss, the evaluation, the metrics.

``vim_jax.train.train`` runs every task through the same steps, checkpoints and logs; a
:class:`Task`, chosen by ``config.task`` (:func:`make_task`), supplies the rest:

* ``batch_to_targets`` and ``loss``: on the device, inside the jitted training step, the batch's
  model inputs and targets, then the loss of the model (train mode) and its named parts;
* ``eval_sums``: on the device, what one evaluation batch contributes; ``accumulate`` adds these
  up over the split and ``summarize`` turns the totals into the numbers logged as ``eval/*``;
* ``plots``: which ``metrics.jsonl`` keys go on which plot.

Tasks:

* ``classification``: soft-target cross-entropy after mixup/cutmix and label smoothing;
  evaluation sums cross-entropy, top-1 and top-5 hits.
* ``segmentation``: the photometric distortion applied to the uint8 crops before normalisation
  when the batch carries its host-drawn parameters (``dataset.photometric_on_device``); the
  decode head's cross-entropy with ignore label 255 plus 0.4 x the auxiliary head's
  (``segmentation_loss``); evaluation by sliding windows (the model config's ``crop_size`` and
  ``slide_stride``), one confusion matrix summed over the whole split on the
  host in int64, and from it mIoU, pixel and mean accuracy (``vim_jax.segmentation.metrics``), as
  mmseg scores a split; also the mean cross-entropy of the labelled pixels.

The model family comes from the registry (``config.model_name``); a task only checks that the
registered config fits it and calls the model's public methods.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vim_jax import registry
from vim_jax.data.device_photometric import photometric_distortion
from vim_jax.data.seg_transforms import IGNORE_INDEX
from vim_jax.models.segmentation import SegmentorConfig, registered_segmentors, slide_inference
from vim_jax.segmentation.metrics import confusion_matrix, segmentation_scores
from vim_jax.train import input_pipeline, metrics, steps
from vim_jax.train.segmentation_loss import segmentation_loss


class Task(abc.ABC):
    """The task-specific pieces of training and evaluation (see the module docstring)."""

    name: ClassVar[str]
    plots: ClassVar[dict[str, tuple[str, ...]]]

    @abc.abstractmethod
    def batch_to_targets(self, key: jax.Array, batch: dict) -> tuple[jax.Array, Any]:
        """(key, batch) -> (model inputs, targets), jit-able; ``key`` drives batch augmentation."""

    @abc.abstractmethod
    def loss(self, model: nnx.Module, inputs: jax.Array, targets: Any,
             mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss of ``model`` (train mode) over the valid (``mask``) examples, and its parts."""

    @abc.abstractmethod
    def eval_sums(self, model: nnx.Module, batch: dict) -> dict[str, jax.Array]:
        """What one evaluation batch adds to the split's totals, jit-able (``model`` in eval mode)."""

    def accumulate(self, totals: dict | None, sums: dict) -> dict:
        """``totals + sums`` (``totals`` None at the first batch); on the device by default."""
        return sums if totals is None else jax.tree.map(jnp.add, totals, sums)

    @abc.abstractmethod
    def summarize(self, totals: dict) -> dict[str, float]:
        """The split's totals (on the host) -> the evaluation's numbers, with ``count`` examples."""


class ClassificationTask(Task):
    """Image classification: the ImageNet / Fashion-MNIST recipe."""

    name = "classification"
    plots = metrics.PLOTS

    def __init__(self, config: ml_collections.ConfigDict):
        self._to_targets = input_pipeline.batch_to_targets(config)
        self._model_inputs = input_pipeline.model_inputs(config)

    def batch_to_targets(self, key, batch):
        return self._to_targets(key, batch)

    def loss(self, model, inputs, targets, mask):
        return steps.classification_loss(model, inputs, targets, mask)

    def eval_sums(self, model, batch):
        return steps.classification_eval_sums(model, batch, model_inputs=self._model_inputs)

    def summarize(self, totals):
        return steps.summarize_eval(totals)


class SegmentationTask(Task):
    """Semantic segmentation with a registered segmentor (``SegmentorConfig``): the mmseg recipe."""

    name = "segmentation"
    plots = {
        "loss": ("train/loss", "train/decode_loss", "train/aux_loss", "eval/loss"),
        "lr": ("train/lr",),
        "miou": ("eval/miou", "eval/pixel_accuracy", "eval/mean_accuracy"),
    }

    def __init__(self, config: ml_collections.ConfigDict, model_config: SegmentorConfig):
        self.num_classes = model_config.num_classes
        self.crop, self.stride = model_config.crop_size, model_config.slide_stride
        self._model_inputs = input_pipeline.model_inputs(config)

    def batch_to_targets(self, key, batch):
        del key  # the augmentation was drawn on the host (seg_transforms)
        images = batch["image"]
        if "photometric" in batch:  # drawn on the host, applied here
            images = photometric_distortion(images, batch["photometric"])
        return self._model_inputs(images), batch["label"].astype(jnp.int32)

    def loss(self, model, inputs, targets, mask):
        logits, aux_logits = model.forward_train(inputs)
        return segmentation_loss(logits, aux_logits, targets, mask=mask)

    def eval_sums(self, model, batch):
        logits = slide_inference(model, self._model_inputs(batch["image"]), self.num_classes, self.crop, self.stride)
        labels = batch["label"].astype(jnp.int32)
        valid = batch["mask"][:, None, None]
        labelled = (labels != IGNORE_INDEX) & valid
        picked = jnp.take_along_axis(logits, jnp.where(labelled, labels, 0)[..., None], axis=-1)[..., 0]
        pixel_loss = jax.nn.logsumexp(logits, axis=-1) - picked
        return {"confusion": confusion_matrix(jnp.argmax(logits, axis=-1), labels, self.num_classes, valid=valid),
                "loss": jnp.sum(jnp.where(labelled, pixel_loss, 0.0)), "pixels": jnp.sum(labelled),
                "count": jnp.sum(batch["mask"])}

    def accumulate(self, totals, sums):
        # One batch's counts fit int32; a split's need not (ADE20K's validation has ~5e8 pixels).
        wide = {k: np.asarray(v, np.float64 if k == "loss" else np.int64) for k, v in jax.device_get(sums).items()}
        return wide if totals is None else {k: totals[k] + wide[k] for k in wide}

    def summarize(self, totals):
        scores = segmentation_scores(totals["confusion"])
        return {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
                "mean_accuracy": scores["mean_accuracy"],
                "loss": float(totals["loss"]) / max(int(totals["pixels"]), 1), "count": int(totals["count"])}


TASKS = ("classification", "segmentation")


def make_task(config: ml_collections.ConfigDict) -> Task:
    """The task of ``config.task``, checked against the registered model and the dataset."""
    if config.task not in TASKS:
        raise ValueError(f"config.task={config.task!r}; expected one of {TASKS}")
    model_config = registry.get_config(config.model_name, **config.model.to_dict())
    segmentor = isinstance(model_config, SegmentorConfig)
    segmentation_data = config.dataset.name in input_pipeline.SEGMENTATION_DATASETS
    if config.task == "classification":
        if segmentor or segmentation_data:
            raise ValueError(f"config.task='classification' with model {config.model_name!r} and dataset "
                             f"{config.dataset.name!r}: set --config.task=segmentation for a segmentor on "
                             f"{'/'.join(input_pipeline.SEGMENTATION_DATASETS)}")
        return ClassificationTask(config)
    if not segmentor:
        raise ValueError(f"config.task='segmentation' needs a segmentation model "
                         f"({', '.join(registered_segmentors())}); {config.model_name!r} is a "
                         f"{type(model_config).__name__}")
    if not segmentation_data:
        raise ValueError(f"config.task='segmentation' needs a segmentation dataset "
                         f"({', '.join(input_pipeline.SEGMENTATION_DATASETS)}), not {config.dataset.name!r}")
    return SegmentationTask(config, model_config)
