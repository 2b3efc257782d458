"""`fashion_mnist.py:smoke` end to end: training, evaluation, logs, plots, checkpoints, resuming."""

from __future__ import annotations

import json

import pytest

from tests.train.helpers import SMOKE, checkpoint_steps, losses, train
from vim_jax import cli
from vim_jax.train.metrics import read_metrics

CHECKPOINT_ITEMS = {"params", "opt_state", "train_state", "data_iterator", "config", "vim_jax"}


@pytest.mark.slow  # 44 training steps and five evaluations of the 10,000 test images
def test_smoke_config_trains_evaluates_logs_and_resumes(tmp_path):
    assert train(tmp_path) == 0

    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(5, 41, 5))
    for row in train_rows[1:]:
        assert {"train/lr", "train/grad_norm", "train/images_per_second", "epoch"} <= set(row)
        assert row["train/images_per_second"] > 0
    assert train_rows[-1]["train/loss"] < train_rows[0]["train/loss"] - 0.2  # it learns
    evals = [r for r in rows if "eval/top1" in r]
    assert [r["step"] for r in evals] == [20, 40]
    assert evals[-1]["eval/count"] == 10000
    assert evals[-1]["eval/top1"] > 0.35  # chance is 0.1
    assert evals[-1]["eval/top5"] >= evals[-1]["eval/top1"]

    for name in ("loss", "lr", "accuracy"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "config.json").read_text())["model"]["embed_dim"] == 32
    assert checkpoint_steps(tmp_path) == [20, 40]
    for step in (20, 40):
        assert CHECKPOINT_ITEMS <= {p.name for p in (tmp_path / "checkpoints" / str(step)).iterdir()}

    # The same command again: the run is complete, so it only evaluates the final state again.
    assert train(tmp_path) == 0
    again = read_metrics(tmp_path)
    assert [r for r in again if "train/loss" in r] == train_rows
    assert again[-1]["step"] == 40 and again[-1]["eval/top1"] == evals[-1]["eval/top1"]

    # A longer run on the same workdir continues from the saved step 40.
    assert train(tmp_path, "--config.num_train_steps=44") == 0
    assert sorted(losses(tmp_path)) == [*range(5, 41, 5), 44]
    assert checkpoint_steps(tmp_path) == [40, 44]  # keep_checkpoints=2
    data_state = json.loads((tmp_path / "checkpoints" / "44" / "data_iterator" / "metadata").read_text())
    assert data_state["step"] == 44

    # `vim-jax eval` reads the latest checkpoint and agrees with the trainer's own evaluation.
    assert cli.main(["eval", "--config", SMOKE, "--workdir", str(tmp_path), "--config.progress_bar=False"]) == 0
    result = json.loads((tmp_path / "eval_test.json").read_text())
    assert result["count"] == 10000
    assert result["top1"] == read_metrics(tmp_path)[-1]["eval/top1"]
