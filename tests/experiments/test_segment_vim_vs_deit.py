"""experiments/segment_vim_vs_deit.py: the smoke trains both backbones, each in its own process,
and writes the result files; the config it builds keeps the recipe's schedule shape."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import segment_vim_vs_deit  # noqa: E402


@pytest.mark.slow
def test_smoke_trains_both_backbones_in_subprocesses_and_writes_its_results(tmp_path):
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / "segment_vim_vs_deit.py"), "--smoke", "--results-dir",
                           str(tmp_path), "--workdir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=600, cwd=EXPERIMENTS.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stem = tmp_path / "segment_vim_vs_deit_cpu_smoke"
    for suffix in (".json", ".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["platform"] == "cpu" and set(result["versions"]) >= {"jax", "flax", "optax"}
    assert [(r["backbone"], r["seed"]) for r in result["runs"]] == [("vim", 0), ("deit", 0)]
    for run in result["runs"]:
        assert "error" not in run, run
        assert math.isfinite(run["miou"]) and 0.0 <= run["miou"] <= 1.0 and 0.0 <= run["pixel_accuracy"] <= 1.0
        assert run["eval_scenes"] == 8 and run["images_seen"] == 3 * run["batch"]
        assert run["train_images_per_s"] > 0 and run["eval_s"] > 0 and run["compile_s"] > 0
        assert run["peak_bytes"] is None  # the CPU backend keeps no memory statistics
        assert "--run-one" in run["command"]
    assert {r["model_name"] for r in result["runs"]} == {"upernet_vim_tiny", "upernet_deit_tiny"}
    assert [g["finished"] for g in result["groups"]] == [1, 1]
    # Both processes shared one compilation cache; the checkpoints were removed, the numbers kept.
    assert any((tmp_path / "runs" / "jax_cache").iterdir())
    assert not (tmp_path / "runs" / "64_vim_seed0" / "checkpoints").exists()
    assert "no ImageNet weights" in stem.with_suffix(".md").read_text()


def test_config_scales_the_warmup_with_the_steps_and_keeps_the_preset():
    config = segment_vim_vs_deit.run_config(512, "deit", seed=1, steps=800, eval_scenes=200, data_dir="/data",
                                            smoke=False)
    assert config.model_name == "upernet_deit_tiny" and config.model.crop_size == 512
    assert config.num_train_steps == 800 and config.optim.poly_warmup_steps == 20  # 1500 / 60000 of the run
    assert config.optim.schedule == "poly" and config.optim.min_lr == 0.0
    assert config.dataset.num_eval_scenes == 200 and config.dataset.data_dir == "/data" and config.seed == 1
    vim = segment_vim_vs_deit.run_config(1024, "vim", seed=0, steps=100, eval_scenes=50, data_dir=None, smoke=False)
    assert vim.model_name == "upernet_vim_tiny" and vim.model.crop_size == 1024 and vim.dataset.data_dir is None
    assert vim.global_batch_size == config.global_batch_size  # the same images per step for both


def test_bad_sizes_are_refused():
    with pytest.raises(SystemExit):
        segment_vim_vs_deit.parse_args(["--sizes", "384"])
    with pytest.raises(SystemExit):
        segment_vim_vs_deit.parse_args(["--sizes", "512,x"])


def test_a_run_cut_short_keeps_its_last_step_and_throughput(tmp_path):
    rows = [{"step": 25, "train/images_per_second": 7.0}, {"step": 50, "train/images_per_second": 95.0},
            {"step": 60, "eval/miou": 0.1}, {"step": 75, "train/images_per_second": 110.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    progress = segment_vim_vs_deit.partial_progress(tmp_path)
    assert progress["steps_reached"] == 75
    assert progress["logged_images_per_s"] == [7.0, 95.0, 110.0]
    assert progress["partial_images_per_s"] == 102.5  # the first interval (compilation) left out
    assert segment_vim_vs_deit.partial_progress(tmp_path / "missing")["steps_reached"] == 0
