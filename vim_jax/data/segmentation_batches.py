"""Batches of segmentation examples from any random-access source, resumable and host-sharded.

A source is anything with ``len`` and ``source[i] -> {"image": uint8 [H, W, 3], "mask": [H, W]}``
(``FashionMnistScenes``, ``Ade20k``). :class:`SegmentationLoader` turns the examples at given
indices into one batch, keying every example's augmentation on its global stream position, so a
batch is a pure function of its step: the project's seeded ``IndexSampler`` then gives order,
per-host slices and exact resume. Batches hold ``image`` uint8 [n, h, w, 3], ``label`` (the
label maps) [n, h, w] and ``mask`` bool [n] (False for the padding of an evaluation pass's last
batch, as in the classification batches).

Training examples go through the official pipeline (``seg_transforms.train_transform``: fixed
crop size). With ``device_photometric`` the photometric distortion is only drawn here: batches
then also hold ``photometric`` float32 [n, 7] (``seg_transforms.photometric_columns``: the draw and
the unpadded crop size) and the training step applies it (``device_photometric``), which leaves
the host the cheap part of the pipeline. Evaluation examples get the keep-ratio resize, image bilinear and labels nearest,
then are padded (mean colour / ignore label) to one ``eval_pad_size`` so they stack; mmseg instead
scores predictions resized back to each image's original size, which differs from this only at
resampled label borders.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vim_jax.data import seg_transforms as st
from vim_jax.data.pipeline import Batch, DataIterator
from vim_jax.data.sampler import IndexSampler


@dataclasses.dataclass(frozen=True)
class SegmentationLoader:
    """``loader(indices, positions) -> batch`` over a random-access source (picklable if it is).

    Args:
      source: random-access records (see the module docstring).
      seed: augmentation seed; example at stream position ``p`` uses ``example_rng(seed, p)``.
      train: the training pipeline; otherwise the evaluation resize and pad.
      config: the training pipeline's settings (its ``scale``, ``pad_colour`` and
        ``ignore_index`` serve evaluation too).
      eval_pad_size: (height, width) every evaluation example is padded to; None requires the
        resized examples of a batch to share one size already.
      device_photometric: training batches carry the photometric draws instead of applying them.
    """

    source: Any
    seed: int
    train: bool
    config: st.SegTrainConfig = st.SegTrainConfig()
    eval_pad_size: tuple[int, int] | None = None
    device_photometric: bool = False

    def example(self, index: int, position: int) -> dict[str, np.ndarray]:
        record = self.source[int(index)]
        image, label = record["image"], record["mask"]
        if self.train:
            return st.train_transform(image, label, st.example_rng(self.seed, position), self.config,
                                      photometric_on_device=self.device_photometric)
        image, label = st.rescale(image, label, self.config.scale)
        if self.eval_pad_size is not None:
            image, label = st.pad_to(image, label, self.eval_pad_size, self.config.pad_colour,
                                     self.config.ignore_index)
        return {"image": image, "mask": label}

    def __call__(self, indices: np.ndarray, positions: np.ndarray) -> Batch:
        examples = [self.example(i, p) for i, p in zip(indices, positions)]
        shapes = {e["image"].shape for e in examples}
        if len(shapes) > 1:
            raise ValueError(f"evaluation examples of different sizes {sorted(shapes)} cannot stack: "
                             "give eval_pad_size (at least the largest resized size)")
        batch = {"image": np.stack([e["image"] for e in examples]),
                 "label": np.stack([e["mask"] for e in examples])}
        if "photometric" in examples[0]:
            batch["photometric"] = np.stack([e["photometric"] for e in examples])
        return batch


def segmentation_iterator(source: Any, global_batch_size: int, *, train: bool, seed: int = 0,
                          config: st.SegTrainConfig = st.SegTrainConfig(),
                          eval_pad_size: tuple[int, int] | None = None, device_photometric: bool = False,
                          process_index: int | None = None, process_count: int | None = None,
                          num_workers: int = 0, num_threads: int = 1) -> DataIterator:
    """Resumable batches of ``source``: training shuffles per epoch, endlessly, dropping the last
    partial batch; evaluation is one pass in order with the last batch padded (``mask`` False).
    ``num_workers`` Grain worker processes (0: threads of this process) build the batches;
    ``device_photometric``: see :class:`SegmentationLoader`."""
    sampler = IndexSampler(len(source), global_batch_size, seed=seed, shuffle=train, drop_remainder=train,
                           process_index=process_index, process_count=process_count)
    loader = SegmentationLoader(source, seed, train, config, eval_pad_size, device_photometric)
    return DataIterator(sampler, loader, num_steps=None if train else sampler.steps_per_epoch,
                        num_workers=num_workers, num_threads=num_threads)
