"""Confusion matrix and scores against float64 loops written out by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vim_jax.segmentation.metrics import confusion_matrix, segmentation_scores


def reference_confusion(pred, label, num_classes, ignore_index=255):
    conf = np.zeros((num_classes, num_classes), np.int64)
    for p, t in zip(np.ravel(pred), np.ravel(label)):
        if t != ignore_index and 0 <= t < num_classes and 0 <= p < num_classes:
            conf[t, p] += 1
    return conf


def reference_scores(conf):
    """Per class by explicit loops, the way the definitions read."""
    n = len(conf)
    iou, acc = [], []
    for c in range(n):
        tp = float(conf[c, c])
        fn = float(sum(conf[c, j] for j in range(n) if j != c))
        fp = float(sum(conf[i, c] for i in range(n) if i != c))
        iou.append(tp / (tp + fp + fn) if tp + fp + fn > 0 else float("nan"))
        acc.append(tp / (tp + fn) if tp + fn > 0 else float("nan"))
    present = [v for v in iou if v == v]
    labelled = [v for v in acc if v == v]
    total = float(sum(sum(row) for row in conf))
    return {"miou": sum(present) / len(present), "mean_accuracy": sum(labelled) / len(labelled),
            "pixel_accuracy": sum(float(conf[c, c]) for c in range(n)) / total,
            "iou_per_class": np.array(iou), "accuracy_per_class": np.array(acc)}


def test_confusion_matrix_matches_a_pixel_loop_and_skips_ignored_pixels():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 6, (2, 9, 7))
    label[0, :3] = 255
    pred = rng.integers(0, 6, (2, 9, 7))
    conf = jax.jit(confusion_matrix, static_argnums=2)(jnp.asarray(pred), jnp.asarray(label), 6)
    assert conf.dtype == jnp.int32 and conf.shape == (6, 6)
    np.testing.assert_array_equal(conf, reference_confusion(pred, label, 6))
    assert int(conf.sum()) == 2 * 9 * 7 - 3 * 7


def test_confusion_matrix_drops_out_of_range_values_and_invalid_examples():
    label = np.array([[0, 1, 2, 7], [1, 1, 0, 2]])
    pred = np.array([[0, 1, 9, 1], [2, 1, 0, 2]])
    conf = confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 3)
    np.testing.assert_array_equal(conf, reference_confusion(pred, label, 3))
    only_first = confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 3, valid=jnp.array([[True], [False]]))
    np.testing.assert_array_equal(only_first, reference_confusion(pred[:1], label[:1], 3))


def test_batches_sum_to_the_whole_evaluation():
    rng = np.random.default_rng(1)
    label, pred = rng.integers(0, 4, (6, 5, 5)), rng.integers(0, 4, (6, 5, 5))
    total = sum(np.asarray(confusion_matrix(jnp.asarray(pred[i:i + 2]), jnp.asarray(label[i:i + 2]), 4), np.int64)
                for i in range(0, 6, 2))
    np.testing.assert_array_equal(total, reference_confusion(pred, label, 4))


def test_scores_match_the_definitions_with_absent_classes_skipped():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 4, (40, 40))   # classes 4 and 5 never labelled
    pred = rng.integers(0, 5, (40, 40))    # class 4 predicted but never labelled; 5 nowhere
    pred[label == 1] = 1                   # make scores uneven
    conf = reference_confusion(pred, label, 6)
    got, want = segmentation_scores(conf), reference_scores(conf)
    for key in ("miou", "mean_accuracy", "pixel_accuracy"):
        assert got[key] == pytest.approx(want[key], rel=1e-12)
    np.testing.assert_allclose(got["iou_per_class"], want["iou_per_class"], rtol=1e-12)
    np.testing.assert_allclose(got["accuracy_per_class"], want["accuracy_per_class"], rtol=1e-12)
    assert np.isnan(got["iou_per_class"][5]) and got["iou_per_class"][4] == 0.0
    assert np.isnan(got["accuracy_per_class"][4])


def test_perfect_prediction_scores_one():
    label = np.array([[0, 0, 2], [2, 2, 255]])
    scores = segmentation_scores(confusion_matrix(jnp.asarray(np.where(label == 255, 0, label)), jnp.asarray(label), 3))
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0
    assert np.isnan(scores["iou_per_class"][1])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(jnp.zeros((2, 3), jnp.int32), jnp.zeros((3, 2), jnp.int32), 4)
    with pytest.raises(ValueError, match="square"):
        segmentation_scores(np.zeros((3, 4)))
