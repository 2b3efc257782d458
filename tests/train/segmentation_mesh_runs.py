"""Three steps of `fmnist_scenes.py:cpu` on one device and on a data-parallel mesh of two.

`python tests/train/segmentation_mesh_runs.py OUT_DIR`, with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (set before JAX starts, hence a separate
process), trains in `OUT_DIR/one` and `OUT_DIR/data2` and prints, as JSON, each run's training
losses and final mIoU. The BatchNorm statistics are over the global batch on both (SyncBN).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.train.helpers import REPO
from vim_jax.train.config_file import apply_overrides, load_config
from vim_jax.train.metrics import read_metrics
from vim_jax.train.train import train

SCENES_CPU = f"{REPO / 'experiments' / 'configs' / 'fmnist_scenes.py'}:cpu"
MESHES = {"one": {"data": 1, "fsdp": 1}, "data2": {"data": 2, "fsdp": 1}}
RUN = [("num_train_steps", "3"), ("log_every_steps", "1"), ("eval_every_steps", "3"), ("checkpoint_every_steps", "3"),
       ("dataset.num_eval_scenes", "8"), ("eval_batch_size", "8"), ("progress_bar", "false")]


def main(out: Path) -> dict:
    results = {}
    for name, mesh in MESHES.items():
        config = load_config(SCENES_CPU)
        apply_overrides(config, RUN + [(f"mesh.{axis}", str(size)) for axis, size in mesh.items()])
        train(config, out / name)
        rows = read_metrics(out / name)
        results[name] = {"losses": [r["train/loss"] for r in rows if "train/loss" in r],
                         "miou": [r["eval/miou"] for r in rows if "eval/miou" in r][-1]}
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
