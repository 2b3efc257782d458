"""Segmenting whole images with a trained segmentor, as mmseg's test mode does it (what
`vim-jax predict --task segment` runs).

An image (uint8 [H, W, 3]) is resized keeping its ratio to fit ``scale`` (long, short edge
bounds; bilinear), normalised with ImageNet's mean and std, segmented by sliding windows of the
model's ``crop_size`` every ``slide_stride`` pixels, and the averaged logits are resized back to
[H, W] (bilinear) before the arg-max: one label per original pixel.

:func:`load_segmentor` rebuilds a segmentor from a trainer checkpoint (its parameters and its
BatchNorm statistics) with the model name and config the checkpoint records, and reads the
evaluation ``scale`` of the run that wrote it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vim_jax.convert import fill_abstract, orbax_io
from vim_jax.data import seg_transforms as st
from vim_jax.data.constants import IMAGENET_MEAN, IMAGENET_STD
from vim_jax.data.device_ops import normalize
from vim_jax.models.segmentation import (SegmentorConfig, registered_segmentors, resize_bilinear,
                                         slide_inference)
from vim_jax.registry import resolve

BATCH_STATS_ITEM = "batch_stats"  # the trainer's item (vim_jax.train.checkpoint)
RUN_CONFIG_ITEM = "config"


def check_segmentor(name: str) -> None:
    """Raises a ValueError naming the segmentors if ``name`` is not one."""
    if not isinstance(resolve(name).config, SegmentorConfig):
        raise ValueError(f"{name!r} is not a segmentation model; use one of {', '.join(registered_segmentors())}")


def default_scale(cfg: SegmentorConfig) -> tuple[int, int]:
    """(4 x crop, crop): the official ADE20K evaluation resize (2048, 512) at the model's crop."""
    return 4 * cfg.crop_size, cfg.crop_size


def class_names_for(num_classes: int) -> tuple[str, ...] | None:
    """The scenes' 11 names, ADE20K's 150, or None (labels are then shown as numbers)."""
    from vim_jax.data import ade20k_classes, fmnist_scenes

    for names in (fmnist_scenes.CLASS_NAMES, ade20k_classes.CLASS_NAMES):
        if len(names) == num_classes:
            return tuple(names)
    return None


def load_segmentor(checkpoint: str | os.PathLike, model_name: str | None = None
                   ) -> tuple[nnx.Module, tuple[int, int]]:
    """(segmentor in eval mode, evaluation scale) from a trainer checkpoint: a run's
    ``checkpoints`` directory (its latest step) or one step directory.

    The model is the one the checkpoint records (its registry name and full ``SegmentorConfig``);
    ``model_name``, if given, must be that name. The scale is the run's ``dataset.scale``, or
    :func:`default_scale` for a checkpoint without the run's config.
    """
    step = orbax_io.find_step_directory(checkpoint)
    metadata = orbax_io.read_metadata(step)
    if metadata is None and model_name is None:
        raise ValueError(f"{step} does not record its model: pass --model")
    name = model_name or metadata["model"]
    if metadata is not None and model_name is not None and metadata["model"] != model_name:
        raise ValueError(f"{step} holds a {metadata['model']!r} model, not {model_name!r}")
    check_segmentor(name)
    entry = resolve(name)
    try:
        cfg = orbax_io.config_from_metadata(metadata, SegmentorConfig) if metadata else entry.config
    except ValueError as error:
        raise ValueError(f"{step} is not a segmentor's checkpoint: {error}") from None
    if not (step / BATCH_STATS_ITEM).is_dir():
        raise ValueError(f"{step} has no '{BATCH_STATS_ITEM}' item: it was not written by the trainer for a "
                         "segmentor (BatchNorm statistics are needed to evaluate)")
    model = nnx.eval_shape(lambda: entry.build(cfg, nnx.Rngs(params=0, dropout=1)))
    params = orbax_io.restore_params(step, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    fill_abstract(model, params)
    stats = nnx.state(model, nnx.BatchStat)
    nnx.replace_by_pure_dict(stats, orbax_io.restore_params(step, nnx.to_pure_dict(stats), item=BATCH_STATS_ITEM))
    nnx.update(model, stats)
    model.eval()
    run = orbax_io.read_json_item(step, RUN_CONFIG_ITEM) or {}
    scale = run.get("dataset", {}).get("scale") or default_scale(cfg)
    return model, (int(scale[0]), int(scale[1]))


class Segmenter:
    """``segmenter(image) -> labels``: uint8 [H, W, 3] -> int32 [H, W] (see the module docstring).

    One program is compiled per resized shape (and kept).
    """

    def __init__(self, model: nnx.Module, scale: Sequence[int]):
        if len(scale) != 2 or min(scale) < 1:
            raise ValueError(f"scale is (long, short) edge bounds, got {scale}")
        model.eval()
        cfg = model.cfg
        self.num_classes = cfg.num_classes
        self.scale = (int(scale[0]), int(scale[1]))
        graphdef, state = nnx.split(model)

        def labels(state, image, size):
            model = nnx.merge(graphdef, state)
            x = normalize(image[None], mean=IMAGENET_MEAN, std=IMAGENET_STD)
            logits = slide_inference(model, x, cfg.num_classes, cfg.crop_size, cfg.slide_stride)
            return jnp.argmax(resize_bilinear(logits, size), axis=-1)[0].astype(jnp.int32)

        compiled = jax.jit(labels, static_argnums=2)
        self._labels = lambda image, size: compiled(state, image, size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        resized = st.eval_transform(image, self.scale)
        return np.asarray(self._labels(resized, image.shape[:2]))
