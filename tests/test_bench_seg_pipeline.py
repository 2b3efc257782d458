"""experiments/bench_seg_pipeline.py: both pipeline variants cut the same crops, and the report says so."""

import json
import sys
from pathlib import Path

import pytest

from vim_jax.data import fashion_mnist as fm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import bench_seg_pipeline  # noqa: E402


@pytest.mark.skipif(not fm.fashion_mnist_dir().is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_benchmark_times_every_stage_of_both_variants_on_equal_crops(tmp_path):
    bench_seg_pipeline.main(["--crops", "2", "--out", str(tmp_path / "bench")])
    results = json.loads((tmp_path / "bench.json").read_text())
    assert [r["crop"] for r in results] == [512, 1024]
    for r in results:
        assert r["labels_equal"]
        assert {"rescale", "photometric apply"} <= set(r["ms_per_crop"]["full"])
        assert "rescale + crop" in r["ms_per_crop"]["window"] and "photometric apply" not in r["ms_per_crop"]["window"]
        assert all(v > 0 for v in r["crops_per_cpu_s"].values())
    assert "crops per CPU-second" in (tmp_path / "bench.md").read_text()
