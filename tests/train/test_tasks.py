"""The segmentation task's pieces: scores from one confusion matrix summed over a split (padding
left out, int64 totals), its evaluation against the model's own logits, and the task follows the
config and refuses models or data of the other task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vim_jax
from tests.train.helpers import REPO
from vim_jax.data.constants import IMAGENET_MEAN, IMAGENET_STD
from vim_jax.data.device_ops import normalize
from vim_jax.train import tasks
from vim_jax.train.config_file import load_config
from vim_jax.train.segmentation_loss import pixel_cross_entropy

SCENES_CPU = f"{REPO / 'experiments' / 'configs' / 'fmnist_scenes.py'}:cpu"


@pytest.fixture(scope="module")
def task_and_model():
    """The :cpu config's task on the registered test segmentor (32 px windows; built as in
    tests/segmentation, so a test run builds it once), its model in eval mode, and the task's
    evaluation jitted (all batches here have one shape: one program)."""
    config = load_config(SCENES_CPU)
    config.model = type(config.model)({"num_classes": 11})
    model = vim_jax.create_model(config.model_name, **config.model.to_dict())
    model.eval()
    task = tasks.make_task(config)
    return task, model, jax.jit(task.eval_sums)


def batch(seed: int, size: int = 32) -> dict:
    """Two random images and label maps (a fifth of the pixels ignored)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 11, (2, size, size)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 255
    return {"image": rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8), "label": labels,
            "mask": np.ones(2, bool)}


@pytest.mark.slow  # building the test segmentor and compiling its evaluation: half a minute on two cores
def test_evaluation_scores_the_models_own_predictions(task_and_model):
    task, model, eval_sums = task_and_model
    data = batch(0)
    summary = task.summarize(task.accumulate(None, eval_sums(model, data)))
    # A 32 px image is one 32 px window: the scores are those of the model's logits on it.
    logits = jax.jit(lambda m, x: m(normalize(x, IMAGENET_MEAN, IMAGENET_STD)))(model, data["image"])
    labelled = data["label"] != 255
    hits = (np.asarray(jnp.argmax(logits, -1)) == data["label"])[labelled]
    assert summary["pixel_accuracy"] == pytest.approx(hits.mean(), abs=1e-12)
    expected_loss = pixel_cross_entropy(logits, jnp.asarray(data["label"]), avg_non_ignore=True)
    assert summary["loss"] == pytest.approx(float(expected_loss), rel=1e-5)
    assert summary["count"] == 2 and 0 <= summary["miou"] <= 1


@pytest.mark.slow  # as above (the same program)
def test_split_totals_are_one_confusion_matrix_without_the_padding(task_and_model):
    task, model, eval_sums = task_and_model
    a, b, c = batch(1), batch(2), batch(3)

    def pick(*examples, padding=None):  # examples as (batch, row); `padding` fills the batch, masked out
        rows = list(examples) + ([padding] if padding else [])
        out = {k: np.stack([source[k][i] for source, i in rows]) for k in ("image", "label")}
        out["mask"] = np.array([True] * len(examples) + [False] * bool(padding))
        return out

    def split_totals(*batches):
        totals = None
        for data in batches:
            totals = task.accumulate(totals, eval_sums(model, data))
        return totals

    # Three images, batched two ways with different padding.
    one = split_totals(pick((a, 0), (a, 1)), pick((b, 0), padding=(c, 0)))
    other = split_totals(pick((b, 0), (a, 1)), pick((a, 0), padding=(c, 1)))
    for key in one:
        np.testing.assert_allclose(one[key], other[key], rtol=1e-6)
    assert one["count"] == 3
    assert one["confusion"].sum() == np.sum(a["label"] != 255) + np.sum(b["label"][0] != 255)
    assert task.summarize(one) == pytest.approx(task.summarize(other))


def test_split_totals_are_int64():
    task = tasks.make_task(load_config(SCENES_CPU))
    near_limit = {"confusion": np.full((11, 11), 2**31 - 10, np.int64), "loss": np.float64(0), "pixels": np.int64(0),
                  "count": np.int64(0)}
    more = {"confusion": jnp.full((11, 11), 100, jnp.int32), "loss": jnp.float32(1), "pixels": jnp.int32(1),
            "count": jnp.int32(1)}
    totals = task.accumulate(near_limit, more)
    assert totals["confusion"].dtype == np.int64 and int(totals["confusion"][0, 0]) == 2**31 + 90


def test_the_task_follows_the_config_and_refuses_mismatches():
    config = load_config(SCENES_CPU)
    assert isinstance(tasks.make_task(config), tasks.SegmentationTask)
    config.task = "classification"
    with pytest.raises(ValueError, match="task=segmentation"):
        tasks.make_task(config)
    config.task = "detection"
    with pytest.raises(ValueError, match="expected one of"):
        tasks.make_task(config)
    config.task = "segmentation"
    config.model_name = "vim_test"
    config.model = type(config.model)({"num_classes": 11})
    with pytest.raises(ValueError, match="needs a segmentation model"):
        tasks.make_task(config)
    smoke = load_config(f"{REPO / 'experiments' / 'configs' / 'fashion_mnist.py'}:smoke")
    assert isinstance(tasks.make_task(smoke), tasks.ClassificationTask)
    smoke.task = "segmentation"
    with pytest.raises(ValueError, match="needs a segmentation model"):
        tasks.make_task(smoke)


@pytest.mark.parametrize("arg", [None, "2048", "512,resnet", "cpu,deit"])
def test_scenes_config_refuses_unknown_arguments(arg):
    from vim_jax.train.config_file import load_config as load

    with pytest.raises(ValueError, match="fmnist_scenes.py takes"):
        load(f"{REPO / 'experiments' / 'configs' / 'fmnist_scenes.py'}" + (f":{arg}" if arg else ""))
