"""Semantic-segmentation metrics: a confusion matrix in JAX, scores from it in numpy float64.

Evaluation sums one confusion matrix over all batches and computes the scores once at the end,
as mmsegmentation does: per class, IoU = intersection / union and accuracy = intersection /
labelled pixels, with a class that appears in neither prediction nor label (union 0) NaN and left
out of the means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vim_jax.data.seg_transforms import IGNORE_INDEX


def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int, ignore_index: int = IGNORE_INDEX,
                     valid: jax.Array | None = None) -> jax.Array:
    """int32 [num_classes, num_classes]: entry (i, j) counts pixels labelled i and predicted j.

    Jit-able (``num_classes`` and ``ignore_index`` static). ``pred`` and ``label`` are integer
    arrays of one shape (e.g. [batch, height, width]). Pixels whose label is ``ignore_index``, or
    whose label or prediction lies outside [0, num_classes), are not counted, nor are pixels where
    ``valid`` (broadcastable to ``label``, e.g. [batch, 1, 1] for padded examples) is False.

    One batch's counts fit int32; sum the matrices of a whole evaluation on the host in int64
    (``total += np.asarray(conf, np.int64)``) so that millions of images cannot overflow.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred {pred.shape} and label {label.shape} must have the same shape")
    pred = pred.astype(jnp.int32)
    label = label.astype(jnp.int32)
    counted = (label != ignore_index) & (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    if valid is not None:
        counted = counted & jnp.broadcast_to(valid, label.shape)
    index = jnp.where(counted, label * num_classes + pred, 0)
    counts = jnp.bincount(index.reshape(-1), weights=counted.reshape(-1).astype(jnp.int32),
                          length=num_classes * num_classes)
    return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def segmentation_scores(conf) -> dict:
    """Scores of a summed confusion matrix (rows = labels, columns = predictions), in float64.

    Returns ``miou`` and ``mean_accuracy`` (NaN-skipping means over classes), ``pixel_accuracy``
    (correct / counted pixels), and per class ``iou_per_class`` and ``accuracy_per_class``: IoU is
    NaN for a class absent from both label and prediction, accuracy NaN for a class absent from the
    label (a class only predicted has IoU 0 and no accuracy).
    """
    conf = np.asarray(conf, np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"a confusion matrix is square, got shape {conf.shape}")
    intersection = np.diag(conf)
    labelled = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    union = labelled + predicted - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
        accuracy = np.where(labelled > 0, intersection / labelled, np.nan)
    total = conf.sum()
    return {
        "miou": _nanmean(iou),
        "mean_accuracy": _nanmean(accuracy),
        "pixel_accuracy": float(intersection.sum() / total) if total > 0 else float("nan"),
        "iou_per_class": iou,
        "accuracy_per_class": accuracy,
    }


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")
