"""The experiment scripts: `--smoke` runs end to end on CPU, and their small pure helpers."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_COMPILE_FLAG

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import ablate  # noqa: E402
import ablation_grids  # noqa: E402
import bench_models  # noqa: E402


def _run(script: str, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=EXPERIMENTS.parent, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_bench_models_smoke_writes_its_results(tmp_path):
    # Its timings are not checked, and its programs each run a few times: they compile unoptimised
    # (the ablation's training steps, run for longer, are left at XLA's default).
    fast_compile = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAG}".strip())
    _run("bench_models.py", "--smoke", "--max-batch", "--max-batch-cap", "4", "--results-dir", str(tmp_path),
         env=fast_compile)
    stem = tmp_path / "bench_models_cpu_smoke"
    for suffix in (".json", ".md", "_highres.png", "_224.png"):
        assert Path(f"{stem}{suffix}").stat().st_size > 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["platform"] == "cpu" and result["scan_backends"] == ["reference"]
    assert result["flash_attention"] == ["xla"]  # no cuDNN on a CPU
    rows = result["rows"]
    assert not [r for r in rows if "error" in r]
    sections = {(r["job"]["section"], r["job"]["label"], r["job"]["train"]) for r in rows}
    assert {("highres", "Vim-Ti", False), ("highres", "DeiT-Ti flash", False), ("highres", "DeiT-Ti xla", False),
            ("224", "vim_tiny", False), ("224", "deit_tiny", False), ("224", "deit_tiny", True)} <= sections
    assert {r["job"]["batch"] for r in rows if r["job"]["section"] == "max_batch"} == {4}
    for r in rows:
        assert r["images_per_s"] > 0 and r["repeats"] >= 3 and r["params"] > 0
        assert r["images_per_s"] == pytest.approx(r["job"]["batch"] / r["seconds"])
    markdown = stem.with_suffix(".md").read_text()
    assert "| 32 | 5 |" in markdown and "Largest batch" in markdown


@pytest.mark.slow
def test_ablate_smoke_trains_both_models_and_writes_its_results(tmp_path):
    _run("ablate.py", "--smoke", "--results-dir", str(tmp_path), "--workdir", str(tmp_path / "runs"))
    stem = tmp_path / "ablation_vim_vs_deit_smoke"
    for suffix in (".json", ".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert [v["model_name"] for v in result["variants"]] == ["vim_tiny", "deit_tiny"]
    for v in result["variants"]:
        (run,) = v["runs"]
        assert 0.0 <= run["top1"] <= 1.0 and run["eval_count"] == 10000 and math.isfinite(run["loss"])
        assert v["params"] > 0 and v["train_images_per_s"] > 0
    deit = result["variants"][1]["overrides"]
    assert deit["depth"] == 1 and deit["embed_dim"] == 32 and "d_state" not in deit  # half the Vim's depth
    assert result["ranking"]["pairs_compared"] == 1
    # A finished run is read back, not trained again.
    assert (tmp_path / "runs" / "vim_vs_deit_smoke" / "vim_seed0" / "result.json").exists()
    assert not (tmp_path / "runs" / "vim_vs_deit_smoke" / "vim_seed0" / "checkpoints").exists()


def test_bench_models_times_both_families_before_the_base_models():
    args = bench_models.parse_args([])
    groups = [[(j.model, j.train) for j in g] for g in bench_models.plan(args) if g[0].section == "224"]
    assert groups == [[(m, t) for t in (False, True) for m in (f"{family}_tiny", f"{family}_small")]
                      for family in ("vim", "deit")] + [[(f"{family}_base", False), (f"{family}_base", True)]
                                                       for family in ("vim", "deit")]


def test_ranking_agreement():
    same = ablate.ranking_agreement([73.2, 70.9, 72.8, 73.9], [0.91, 0.89, 0.90, 0.92])
    assert same["spearman"] == pytest.approx(1.0) and same["kendall_tau_b"] == pytest.approx(1.0)
    assert (same["pairs_agreeing"], same["pairs_compared"]) == (6, 6) and same["best_paper"] == same["best_ours"] == 3
    reversed_ = ablate.ranking_agreement([1, 2, 3], [3, 2, 1])
    assert reversed_["spearman"] == pytest.approx(-1.0) and reversed_["pairs_agreeing"] == 0
    # One swapped pair out of six: tau = (5 - 1) / 6, rho = 1 - 6 * 2 / (4 * 15).
    one_swap = ablate.ranking_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert one_swap["kendall_tau_b"] == pytest.approx(4 / 6) and one_swap["spearman"] == pytest.approx(0.8)
    assert one_swap["pairs_agreeing"] == 5


def test_deit_class_of_gives_the_published_pairs():
    for vim_width, heads in ((192, 3), (384, 6), (768, 12)):
        deit = ablation_grids.deit_class_of({"embed_dim": vim_width, "depth": 24, "d_state": 16, "img_size": 28})
        assert deit == {"embed_dim": vim_width, "depth": 12, "num_heads": heads, "img_size": 28}


def test_grids_hold_the_papers_numbers_and_valid_configs():
    import vim_jax

    grids = ablation_grids.GRIDS
    assert [v.paper_top1 for v in grids["bidirectional"].variants] == [73.2, 70.9, 72.8, 73.9]
    assert [v.paper_top1 for v in grids["classification"].variants] == [73.9, 73.4, 75.2, 74.3, 76.1]
    recipe = {"img_size": 28, "patch_size": 4, "stride": 4, "in_chans": 1, "num_classes": 10, "embed_dim": 128,
              "depth": 6, "d_state": 16, "drop_path_rate": 0.1, "dtype": "bfloat16"}
    from vim_jax.models import deit_presets  # noqa: F401

    for grid in grids.values():
        for variant in grid.variants:  # every variant builds into a valid config
            vim_jax.get_config(variant.model_name, **ablation_grids.model_overrides(recipe, grid, variant))


def test_reference_numbers_name_registered_models_and_the_plotted_systems():
    """The benchmarks look the official / timm numbers up by registered model name and plot them
    by label: a renamed entry in the reference file would only fail on a GPU run."""
    import plots
    import reference_numbers
    import vim_jax
    from vim_jax.models import deit_presets  # noqa: F401

    assert set(reference_numbers.official_224()) <= set(vim_jax.list_models())
    highres = reference_numbers.official_highres()
    assert set(highres) == set(plots._OFFICIAL_STYLE)
    tokens = {int(px): n for px, n in reference_numbers.load()["tokens"].items()}
    assert all(n == (px // 16) ** 2 + 1 for px, n in tokens.items())  # patch 16 + one class token
    for rows in highres.values():
        assert all(px in tokens and img_s > 0 and mib > 0 for px, (img_s, mib) in rows.items())
    for (batch, length, channels, state), (fwd, fwd_bwd) in reference_numbers.official_scan_ms().items():
        assert length in tokens.values() and state == 16 and 0 < fwd < fwd_bwd  # a Vim layer's scan
