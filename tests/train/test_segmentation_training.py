"""`fmnist_scenes.py:cpu` through `vim-jax train`: a segmentor trains end to end (losses, mIoU,
metrics.jsonl, plots, TensorBoard, checkpoints with the BatchNorm statistics), a run stopped and
resumed equals one never interrupted, `vim-jax eval` agrees with the trainer, and `vim-jax
predict --task segment` writes an overlay of the image's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from tests.conftest import FAST_COMPILE_FLAG
from tests.train.helpers import REPO, checkpoint_steps, losses, subprocess_env, train
from vim_jax import cli
from vim_jax.convert import restore_params
from vim_jax.data import fashion_mnist as fm
from vim_jax.data.fmnist_scenes import FashionMnistScenes
from vim_jax.train import train_state
from vim_jax.train.checkpoint import Checkpointer
from vim_jax.train.config_file import apply_overrides, load_config, split_overrides
from vim_jax.train.mesh import make_mesh
from vim_jax.train.metrics import read_metrics

# Compiling a segmentor's training and sliding-window steps is most of the time: six steps and
# eight evaluation scenes run sooner than XLA's optimisations would pay back, here and in the
# mesh test's child.
pytestmark = [pytest.mark.skipif(not fm.fashion_mnist_dir().is_dir(), reason="apt-get install dataset-fashion-mnist"),
              pytest.mark.slow, pytest.mark.usefixtures("unoptimised_training_steps")]

SCENES_CPU = f"{REPO / 'experiments' / 'configs' / 'fmnist_scenes.py'}:cpu"
STEPS = 6
RUN = ("--config.checkpoint_every_steps=2", "--config.log_every_steps=1", "--config.eval_every_steps=3",
       "--config.dataset.num_eval_scenes=8", "--config.eval_batch_size=8", "--config.optim.poly_warmup_steps=2",
       f"--config.num_train_steps={STEPS}")


def scenes_train(workdir, *overrides: str) -> int:
    return train(workdir, *RUN, *overrides, config=SCENES_CPU)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("scenes_reference")
    assert scenes_train(workdir) == 0
    return workdir


def flat(workdir, item: str) -> dict:
    """{path of str: array} of a checkpoint item (orbax gives list indices back as strings)."""
    return by_str_path(restore_params(workdir / "checkpoints", item=item))


def by_str_path(tree) -> dict:
    return {tuple(map(str, k)): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def test_scenes_config_trains_evaluates_logs_and_checkpoints(reference):
    rows = read_metrics(reference)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    for row in train_rows:
        assert np.isfinite([row["train/loss"], row["train/decode_loss"], row["train/aux_loss"]]).all()
        np.testing.assert_allclose(row["train/loss"], row["train/decode_loss"] + 0.4 * row["train/aux_loss"],
                                   rtol=1e-5)
    evals = [r for r in rows if "eval/miou" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for row in evals:
        assert row["eval/count"] == 8
        assert 0 <= row["eval/miou"] <= row["eval/mean_accuracy"] <= 1 and 0 <= row["eval/pixel_accuracy"] <= 1
        assert np.isfinite(row["eval/loss"])
    for name in ("loss", "lr", "miou"):
        assert (reference / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((reference / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpoint_steps(reference) == [4, 6]  # keep_checkpoints=2
    assert {"params", "opt_state", "batch_stats", "train_state", "data_iterator", "config", "vim_jax"} <= {
        p.name for p in (reference / "checkpoints" / "6").iterdir()}


def test_training_moves_the_batchnorm_statistics_and_restores_them(reference):
    config = load_config(SCENES_CPU)
    overrides, _ = split_overrides(list(RUN))
    apply_overrides(config, overrides)
    setup = train_state.model_setup(config, make_mesh(config.mesh.to_dict()))
    fresh = by_str_path(train_state.init_state(config, setup).batch_stats)
    saved = flat(reference, "batch_stats")
    assert saved.keys() == fresh.keys() and any(key[-1] == "mean" for key in saved)
    assert all(not np.array_equal(saved[key], fresh[key]) for key in saved)  # every BatchNorm moved
    checkpointer = Checkpointer(reference, keep=None, asynchronous=False)
    state, data_state = checkpointer.restore(setup.abstract_state)
    checkpointer.close()
    assert int(state.step) == STEPS and data_state["step"] == STEPS
    for key, value in by_str_path(state.batch_stats).items():
        np.testing.assert_array_equal(value, saved[key])


def test_stopped_and_resumed_run_equals_the_uninterrupted_one(reference, tmp_path):
    assert scenes_train(tmp_path, "--config.stop_after_steps=4") == 0
    assert checkpoint_steps(tmp_path) == [2, 4] and sorted(losses(tmp_path)) == [1, 2, 3, 4]
    assert scenes_train(tmp_path) == 0
    assert losses(tmp_path) == losses(reference)  # exactly: same programs, same batches, same dropout
    assert read_metrics(tmp_path)[-1] == read_metrics(reference)[-1]
    for item in ("params", "batch_stats"):
        ours, theirs = flat(tmp_path, item), flat(reference, item)
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{item} {key}")


def test_eval_command_agrees_with_the_trainer(reference):
    assert cli.main(["eval", "--config", SCENES_CPU, "--workdir", str(reference), "--config.progress_bar=False",
                     *RUN]) == 0
    result = json.loads((reference / "eval_test.json").read_text())
    final = read_metrics(reference)[-1]
    assert result["count"] == 8
    for key in ("miou", "pixel_accuracy", "mean_accuracy"):
        assert result[key] == final[f"eval/{key}"]


def test_predict_writes_an_overlay_of_the_image_size(reference, tmp_path, capsys):
    scene = FashionMnistScenes("test", size=(70, 90), num_scenes=1, seed=5)[0]["image"]
    image = tmp_path / "scene.png"
    Image.fromarray(scene).save(image)
    out = tmp_path / "overlay.png"
    assert cli.main(["predict", "--task", "segment", "--checkpoint", str(reference / "checkpoints"), str(image),
                     "--out", str(out)]) == 0
    with Image.open(out) as written:
        assert written.format == "PNG" and written.height == scene.shape[0]
        assert written.width > scene.shape[1]  # the image, then the legend panel
        pixels = np.asarray(written.convert("RGB"))[:, :scene.shape[1]]
    assert not np.array_equal(pixels, scene)  # the label colours are blended in
    assert f"{image}: {scene.shape[1]}x{scene.shape[0]} px -> {out}" in capsys.readouterr().out


def test_a_data_parallel_mesh_trains_like_one_device(tmp_path, compilation_cache):
    flags = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG} --xla_force_host_platform_device_count=2".strip()
    child = subprocess.run([sys.executable, str(REPO / "tests" / "train" / "segmentation_mesh_runs.py"), str(tmp_path)],
                           env=subprocess_env(compilation_cache, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"),
                           capture_output=True, text=True, cwd=REPO, timeout=900)
    assert child.returncode == 0, child.stdout + child.stderr
    runs = json.loads(child.stdout.strip().splitlines()[-1])
    # float32 sums in another order (the loss mean and BatchNorm's batch statistics are summed per
    # device first): 1e-6 apart after two steps; a wrongly sharded batch is off by far more.
    np.testing.assert_allclose(runs["data2"]["losses"], runs["one"]["losses"], rtol=1e-5)
    assert len(runs["one"]["losses"]) == 3
    # Another reduction order may flip the arg-max of a near-tie pixel or two (of tens of thousands).
    np.testing.assert_allclose(runs["data2"]["miou"], runs["one"]["miou"], atol=1e-4)
