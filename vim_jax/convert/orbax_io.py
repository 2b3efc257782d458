"""Orbax save/restore of a model's parameters, shared by `vim-jax convert` and the trainer.

The contract (one "step directory" holds these orbax items, each in its own sub-directory):

- `params`: `nnx.to_pure_dict(nnx.state(model, nnx.Param))`, saved with orbax's standard
  handler (`ocp.args.StandardSave`);
- `ema_params` (optional): the same tree for the EMA weights;
- `vim_jax` (optional): JSON (`ocp.args.JsonSave`) from `model_metadata`: the model name and
  its full `VimConfig`, so a checkpoint can be rebuilt and checked without guessing.

`vim-jax convert` writes one step directory. The trainer's `ocp.CheckpointManager` writes one per
step (`<dir>/<step>/params`, ...), with any further items of its own (optimizer state, ...);
given its `<dir>`, readers take the latest step.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from vim_jax.config import VimConfig

PARAMS_ITEM = "params"
EMA_PARAMS_ITEM = "ema_params"
METADATA_ITEM = "vim_jax"
METADATA_FORMAT = "vim_jax.params.v1"


def model_metadata(config: VimConfig, model_name: str | None = None, **extra) -> dict:
    """The JSON stored under `vim_jax`: format tag, registry name, full config, and `extra`."""
    return {"format": METADATA_FORMAT, "model": model_name, "config": dataclasses.asdict(config), **extra}


def config_from_metadata(metadata: dict, config_class: type = VimConfig):
    """The config recorded by `model_metadata`, as a `config_class` (the family of the model it is
    loaded into: `VimConfig`, `DeiTConfig`; JSON lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    stored = metadata["config"]
    unknown = set(stored) - fields
    if unknown:
        raise ValueError(f"checkpoint metadata has config fields that {config_class.__name__} does not know: "
                         f"{sorted(unknown)}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


def save_params(directory: str | os.PathLike, params: Any, metadata: dict, *, ema_params: Any = None) -> Path:
    """Writes a step directory (`params`, optional `ema_params`, `vim_jax` metadata); returns its
    absolute path. Refuses to overwrite an existing directory."""
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; choose a new directory for the checkpoint")
    items = {PARAMS_ITEM: ocp.args.StandardSave(params), METADATA_ITEM: ocp.args.JsonSave(metadata)}
    if ema_params is not None:
        items[EMA_PARAMS_ITEM] = ocp.args.StandardSave(ema_params)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(directory, ocp.args.Composite(**items))
    return directory


def is_step_directory(path: str | os.PathLike) -> bool:
    """Whether `path` holds a `params` item (a converted checkpoint or one trainer step)."""
    return (Path(path) / PARAMS_ITEM).is_dir()


def find_step_directory(path: str | os.PathLike) -> Path:
    """`path` itself if it is a step directory, else its latest finished step `<path>/<step>`."""
    path = Path(path).absolute()
    if is_step_directory(path):
        return path
    # Orbax writes a step under a temporary name and renames it to the bare number when finished.
    steps = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit() and is_step_directory(p)) \
        if path.is_dir() else []
    if not steps:
        raise FileNotFoundError(
            f"{path} is not a vim_jax checkpoint: it has no '{PARAMS_ITEM}' item and no finished step "
            f"directories (<step>/{PARAMS_ITEM})")
    return steps[-1][1]


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The `vim_jax` JSON of a step directory (or of the latest step), or None if it has none."""
    return read_json_item(path, METADATA_ITEM)


def read_json_item(path: str | os.PathLike, item: str) -> dict | None:
    """A JSON item of a step directory (or of the latest step), e.g. the trainer's `config`, or
    None if it has none."""
    step = find_step_directory(path)
    if not (step / item).is_dir():
        return None
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        return checkpointer.restore(step / item)


def saved_shapes(path: str | os.PathLike, item: str = PARAMS_ITEM) -> Any:
    """The stored tree of `item` as `jax.ShapeDtypeStruct`s (read from orbax's metadata only)."""
    # The handler reads the item's own tree metadata (a Checkpointer would also look for a
    # step-level metadata file, which items inside a CheckpointManager step do not have).
    tree = ocp.StandardCheckpointHandler().metadata(_item_directory(path, item)).tree
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree,
                        is_leaf=lambda m: hasattr(m, "shape"))


def restore_params(path: str | os.PathLike, abstract_params: Any = None, *, item: str = PARAMS_ITEM) -> Any:
    """Restores `item` of a step directory (or of the latest step) as jax arrays.

    Args:
      path: a step directory or a `CheckpointManager` directory.
      abstract_params: the tree to restore into (`jax.ShapeDtypeStruct`s or arrays; their
        shardings are used, single-device on the default device where none is given). None
        restores the stored shapes on the default device.
      item: `params` or `ema_params`.
    """
    target = saved_shapes(path, item) if abstract_params is None else abstract_params
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or default), target)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(_item_directory(path, item), target)


def _item_directory(path, item: str) -> Path:
    step = find_step_directory(path)
    if not (step / item).is_dir():
        present = sorted(p.name for p in step.iterdir() if p.is_dir())
        raise FileNotFoundError(f"checkpoint {step} has no '{item}' item (it has: {', '.join(present) or 'none'})")
    return step / item
