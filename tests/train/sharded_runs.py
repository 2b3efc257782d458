"""The smoke run on a given mesh; as a script, on two meshes of 8 fake CPU devices.

`python tests/train/sharded_runs.py OUT_DIR`, with XLA_FLAGS=--xla_force_host_platform_device_count=8
(which must be set before JAX starts, hence a separate process), trains in `OUT_DIR/data8` and
`OUT_DIR/data2_fsdp4` and prints, as JSON, the parameter layouts each mesh chose. Drop path is on,
so the dropout RNG must agree across layouts too. Being a fresh process that only trains on
Fashion-MNIST, it also checks that TensorFlow never loads (the GPU machines have none).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from tests.train.helpers import SMOKE
from vim_jax.train import train_state
from vim_jax.train.config_file import apply_overrides, load_config
from vim_jax.train.mesh import make_mesh
from vim_jax.train.train import train

SHARDED_MESHES = {"data8": {"data": 8, "fsdp": 1}, "data2_fsdp4": {"data": 2, "fsdp": 4}}
RUN = [("num_train_steps", "3"), ("log_every_steps", "1"), ("eval_every_steps", "1000"),
       ("checkpoint_every_steps", "3"), ("eval_batch_size", "400"), ("max_eval_batches", "1"),
       ("progress_bar", "false"), ("model.drop_path_rate", "0.2"), ("ema_decay", "0.9")]


def train_on_mesh(workdir: Path, mesh_shape: dict[str, int]) -> dict:
    """Trains the smoke run on `mesh_shape` in `workdir`; returns the parameters' PartitionSpecs."""
    config = load_config(SMOKE)
    apply_overrides(config, RUN + [(f"mesh.{axis}", str(size)) for axis, size in mesh_shape.items()])
    train(config, workdir)
    setup = train_state.model_setup(config, make_mesh(config.mesh.to_dict()))
    return jax.tree.map(lambda sharding: list(sharding.spec), setup.state_shardings.params)


def main(out_dir: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    layouts = {name: train_on_mesh(Path(out_dir) / name, shape) for name, shape in SHARDED_MESHES.items()}
    assert "tensorflow" not in sys.modules, "the Fashion-MNIST training path imported TensorFlow"
    print(json.dumps(layouts))


if __name__ == "__main__":
    main(sys.argv[1])
