"""Loading checkpoints into a model of any registered family, and exporting one back to an
official state dict.

`load_into(abstract_model, path)` accepts an official `.pth` file (a full training dict or a bare
state dict), a directory written by `vim-jax convert`, or an orbax `CheckpointManager` directory
of the trainer (its latest step); see `orbax_io` for that layout. Before anything is converted,
the checkpoint is checked against the model: missing, unexpected and mis-shaped entries are
reported together in one `CheckpointMismatchError`. Only the position embedding may differ in
length; it is resized to the model's patch grid. With `new_head=True` the checkpoint's classifier
(of any width, or none) is not read and the model keeps its own: fine-tuning to another number of
classes, or features without a head (`num_classes=0`). What differs between families (official
key table, config fields a checkpoint may differ in, class-token layout) is the model class's
`checkpoint_keys` (`vim_jax.models.checkpoint_keys.CheckpointKeys`), kept beside each model.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx, traverse_util

from vim_jax.convert import orbax_io
from vim_jax.convert.mismatch import (CheckpointMismatchError, check_config, check_entries, describe_model,
                                      pos_embed_resizable)
from vim_jax.convert.pos_embed import resize_pos_embed
from vim_jax.convert.pth_reader import StoredTensor, materialize, open_pth
from vim_jax.models.checkpoint_keys import HEAD, CheckpointKeys

log = logging.getLogger(__name__)

WHICH = ("model", "model_ema")
_ORBAX_ITEMS = {"model": orbax_io.PARAMS_ITEM, "model_ema": orbax_io.EMA_PARAMS_ITEM}
__all__ = ["HEAD", "WHICH", "CheckpointMismatchError", "LoadedParams", "checkpoint_num_classes", "export_official",
           "fill_abstract", "load_into", "read_params"]


@dataclasses.dataclass(frozen=True)
class LoadedParams:
    """Parameters read from a checkpoint, in the model's tree layout, and what was done to them."""

    params: dict  # nested like nnx.to_pure_dict(nnx.state(model, nnx.Param))
    path: Path
    kind: str  # "pth" or "orbax"
    entries: int  # official keys mapped, or arrays restored
    pos_embed_resized: tuple[tuple[int, ...], tuple[int, ...]] | None  # (from, to) shapes


def read_params(path: str | os.PathLike, abstract_model: nnx.Module, *, which: str = "model",
                new_head: bool = False, may_differ: frozenset[str] = frozenset()) -> LoadedParams:
    """Reads and checks a checkpoint for `abstract_model` (a model or `nnx.eval_shape` of one).

    Args:
      path: an official `.pth` file or a vim_jax orbax directory.
      abstract_model: a model (VisionMamba, DeiT, ...) whose `cfg` and parameter shapes the
        checkpoint must fit.
      which: "model" or "model_ema" (the EMA weights of a training dict / `ema_params`).
      new_head: leave the classifier out on both sides: the checkpoint's head (any number of
        classes, or none) is not read, and the returned parameters have no `head` entry.
      may_differ: config fields, besides the family's runtime fields, in which the model a vim_jax
        checkpoint records may differ from `abstract_model` (a `.pth` records no config).
    Raises:
      FileNotFoundError, `CheckpointFormatError` (not a readable checkpoint) or
      `CheckpointMismatchError` (it does not fit the model).
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    expected = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param)))
    cfg, keys = abstract_model.cfg, type(abstract_model).checkpoint_keys
    if new_head:  # checked and converted as the same model without a classifier
        cfg = dataclasses.replace(cfg, num_classes=0)
        expected = {k: v for k, v in expected.items() if k[0] != HEAD}
    if path.is_dir():
        return _read_orbax(path, cfg, keys, expected, which, new_head, may_differ)
    return _read_pth(path, cfg, keys, expected, which, new_head)


def checkpoint_num_classes(path: str | os.PathLike, *, which: str = "model") -> int:
    """The number of classes of a checkpoint's classifier (official `.pth` or ours); 0 if it has none."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        head = orbax_io.saved_shapes(path, _ORBAX_ITEMS[which]).get(HEAD)
        return 0 if head is None else head["kernel"].shape[-1]
    state, _ = _pick_state_dict(open_pth(path), path, which)
    weight = state.get(f"{HEAD}.weight")
    return weight.shape[0] if isinstance(weight, StoredTensor) else 0


def load_into(model: nnx.Module, path: str | os.PathLike, *, which: str = "model",
              rngs: nnx.Rngs | None = None, new_head: bool = False) -> nnx.Module:
    """Fills a model with a checkpoint's weights; returns it.

    `model` is normally abstract (from `nnx.eval_shape`): then no parameter is initialised
    randomly, all are set from the checkpoint (see `read_params` for what `path` and `which`
    accept). With `new_head`, the checkpoint's classifier is not read and the model keeps its own,
    so `model` must be a built one (its head initialised), e.g. `create_model(name, num_classes=10)`.
    Abstract RNG streams (present when dropout or drop path is on) are seeded from `rngs`, stream
    by stream, like `nnx.reseed` (from `nnx.Rngs(0)` when none is given).
    """
    if new_head and _is_abstract(getattr(model, HEAD, None)):
        raise ValueError("new_head=True keeps the model's own classifier, but this model's head is abstract "
                         "(nnx.eval_shape): build the model, e.g. create_model(name, num_classes=N), "
                         "or pass the checkpoint to create_model(name, checkpoint=path, num_classes=N)")
    loaded = read_params(path, model, which=which, new_head=new_head)
    if loaded.pos_embed_resized:
        log.info("%s: resized pos_embed %s -> %s", loaded.path, *loaded.pos_embed_resized)
    return fill_abstract(model, loaded.params, rngs=rngs)


def _is_abstract(module) -> bool:
    return module is not None and any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(module)))


def fill_abstract(abstract_model: nnx.Module, params: dict, *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """Sets a model's parameters from `params` (its `nnx.to_pure_dict` layout, e.g.
    `read_params(...).params`; parameters it leaves out keep their values) and seeds its abstract
    RNG streams (see `load_into`); returns it."""
    state = nnx.state(abstract_model, nnx.Param)
    nnx.replace_by_pure_dict(state, jax.tree.map(jax.device_put, params))
    nnx.update(abstract_model, state)
    _seed_abstract_streams(abstract_model, rngs or nnx.Rngs(0))
    return abstract_model


def export_official(model: nnx.Module, path: str | os.PathLike) -> Path:
    """Writes the model's weights as an official checkpoint, `torch.save({"model": state_dict})`
    (the entry the official code's `--resume` / `--finetune` read). Needs torch."""
    try:
        import torch
    except ImportError:
        raise ImportError("export_official writes a PyTorch file and needs torch: "
                          "pip install 'vim-jax[torch]'") from None
    keys = type(model).checkpoint_keys
    params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    state_dict = collections.OrderedDict(
        (k, torch.tensor(v)) for k, v in keys.ours_to_official(params, model.cfg).items())
    path = Path(path)
    torch.save({"model": state_dict}, path)
    return path


# --- official .pth -------------------------------------------------------------------------
def official_state_keys(path: str | os.PathLike, *, which: str = "model") -> list[str]:
    """The keys of an official `.pth` file's state dict (`which` of a training dict)."""
    path = Path(path)
    return list(_pick_state_dict(open_pth(path), path, which)[0])


def _read_pth(path: Path, cfg, keys: CheckpointKeys, expected: dict, which: str, new_head: bool) -> LoadedParams:
    state, described = _pick_state_dict(open_pth(path), path, which)
    rules = keys.official_rules(cfg)
    wanted = {r.official: tuple(r.official_shape) for r in rules}
    got = {k: tuple(v.shape) if isinstance(v, StoredTensor) else type(v).__name__ for k, v in state.items()
           if not (new_head and k.startswith(HEAD + "."))}
    resizable = {"pos_embed"} if pos_embed_resizable(got.get("pos_embed"), wanted.get("pos_embed")) else set()
    check_entries(wanted, got, resizable, described, describe_model(cfg, keys), keys.describe_official(got))
    values = materialize({k: state[k] for k in wanted})
    resized = None
    if "pos_embed" in resizable and got["pos_embed"] != wanted["pos_embed"]:
        values["pos_embed"] = resize_pos_embed(values["pos_embed"], cfg.grid_size, cls_token=keys.cls_layout(cfg))
        resized = (got["pos_embed"], wanted["pos_embed"])
    shapes = traverse_util.unflatten_dict({k: v.shape for k, v in expected.items()})
    return LoadedParams(keys.official_to_ours(values, cfg, shapes), path, "pth", len(rules), resized)


def _pick_state_dict(obj: Any, path: Path, which: str) -> tuple[dict, str]:
    """The state dict in a training dict (`obj[which]`) or the bare state dict `obj`, and how to
    name it in messages."""
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{path} holds a {type(obj).__name__}, not a state dict or a training dict")
    if any(k in obj for k in WHICH):
        if which not in obj or not isinstance(obj[which], dict):
            raise CheckpointMismatchError(f"{path} is a training dict without a '{which}' state dict "
                                          f"(its entries: {', '.join(map(str, obj))})")
        return obj[which], f"{path} (entry '{which}')"
    if obj and all(isinstance(v, StoredTensor) for v in obj.values()):
        if which != "model":
            raise CheckpointMismatchError(f"{path} is a bare state dict: it has no '{which}' weights")
        return obj, str(path)
    raise CheckpointMismatchError(
        f"{path} is neither a training dict with a 'model' entry nor a state dict of tensors "
        f"(its entries: {', '.join(map(str, list(obj)[:20])) or 'none'})")


# --- vim_jax orbax -------------------------------------------------------------------------
def recorded_config(path: str | os.PathLike, config_class: type):
    """The model config a vim_jax checkpoint records (as a `config_class`), or None if it records
    none; `CheckpointMismatchError` if it was written for another model family."""
    step = orbax_io.find_step_directory(path)
    return _config_of(step, orbax_io.read_metadata(step), config_class)


def _config_of(step: Path, metadata: dict, config_class: type):
    if not metadata:
        return None
    try:
        return orbax_io.config_from_metadata(metadata, config_class)
    except ValueError as error:  # another model family's checkpoint (a Vim's into a DeiT, ...)
        raise CheckpointMismatchError(f"checkpoint {step} was written for model {metadata.get('model')!r}, "
                                      f"not a {config_class.__name__} model: {error}") from None


def _read_orbax(path: Path, cfg, keys: CheckpointKeys, expected: dict, which: str, new_head: bool,
                may_differ: frozenset[str]) -> LoadedParams:
    step = orbax_io.find_step_directory(path)
    metadata = orbax_io.read_metadata(step)
    described = f"{step} ('{_ORBAX_ITEMS[which]}')"
    source_cfg = _config_of(step, metadata, type(cfg))
    if source_cfg is not None:
        free = keys.runtime_fields | may_differ | ({"num_classes"} if new_head else set())
        check_config(source_cfg, cfg, described, metadata.get("model"), free)
    saved = traverse_util.flatten_dict(orbax_io.saved_shapes(step, _ORBAX_ITEMS[which]))
    if new_head:
        saved = {k: v for k, v in saved.items() if k[0] != HEAD}
    wanted = {"/".join(k): tuple(v.shape) for k, v in expected.items()}
    got = {"/".join(map(str, k)): tuple(v.shape) for k, v in saved.items()}
    resizable = {"pos_embed"} if pos_embed_resizable(got.get("pos_embed"), wanted.get("pos_embed")) else set()
    hint = f"it was written for model {metadata.get('model')!r}" if metadata else ""
    check_entries(wanted, got, resizable, described, describe_model(cfg, keys), hint)
    params = {k: v for k, v in traverse_util.flatten_dict(orbax_io.restore_params(step, item=_ORBAX_ITEMS[which])).items()
              if k in saved}
    resized = None
    if "pos_embed" in resizable and got["pos_embed"] != wanted["pos_embed"]:
        source_grid = source_cfg.grid_size if source_cfg else None
        params[("pos_embed",)] = resize_pos_embed(np.asarray(params[("pos_embed",)]), cfg.grid_size,
                                                  cls_token=keys.cls_layout(cfg), source_grid=source_grid)
        resized = (got["pos_embed"], wanted["pos_embed"])
    return LoadedParams(traverse_util.unflatten_dict(params), step, "orbax", len(params), resized)


# --- non-parameter state -------------------------------------------------------------------
def _seed_abstract_streams(model: nnx.Module, rngs: nnx.Rngs) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngStream) and isinstance(node.key.get_value(), jax.ShapeDtypeStruct):
            node.key.set_value(rngs[node.key.tag]())
            node.count.set_value(np.zeros((), np.uint32))
