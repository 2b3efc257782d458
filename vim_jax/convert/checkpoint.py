"""Loading checkpoints into a Vim model, and exporting a model back to an official state dict.

`load_into(abstract_model, path)` accepts an official `.pth` file (a full training dict or a bare
state dict), a directory written by `vim-jax convert`, or an orbax `CheckpointManager` directory
of the trainer (its latest step); see `orbax_io` for that layout. Before anything is converted,
the checkpoint is checked against the model: missing, unexpected and mis-shaped entries are
reported together in one `CheckpointMismatchError`. Only the position embedding may differ in
length; it is resized to the model's patch grid. With `new_head=True` the checkpoint's classifier
(of any width, or none) is not read and the model keeps its own: fine-tuning to another number of
classes, or features without a head (`num_classes=0`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx, traverse_util

from vim_jax.config import VimConfig
from vim_jax.convert import orbax_io
from vim_jax.convert.pos_embed import resize_pos_embed
from vim_jax.convert.pth_reader import StoredTensor, materialize, open_pth
from vim_jax.convert.vim_keys import official_rules, official_to_ours, ours_to_official

log = logging.getLogger(__name__)

WHICH = ("model", "model_ema")
HEAD = "head"  # the classifier's parameters in both families (official keys `head.weight`, `head.bias`)
_ORBAX_ITEMS = {"model": orbax_io.PARAMS_ITEM, "model_ema": orbax_io.EMA_PARAMS_ITEM}
# Config fields a checkpoint may differ in from the model it is loaded into: the patch grid
# (the position embedding is resized), regularisation, precision, execution and initialisation.
_RUNTIME_FIELDS = {"img_size", "stride", "drop_rate", "drop_path_rate", "dtype", "scan_backend", "attention", "remat",
                   "dt_min", "dt_max", "dt_init_floor", "dt_scale", "fix_backward_dt_init"}
_LIST_LIMIT = 12
_NEW_HEAD_HINT = ("only the classifier differs: to start a new one instead of the checkpoint's, pass "
                  "num_classes=N to create_model (or new_head=True to load_into)")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model (every missing, unexpected and mis-shaped entry)."""


@dataclasses.dataclass(frozen=True)
class LoadedParams:
    """Parameters read from a checkpoint, in the model's tree layout, and what was done to them."""

    params: dict  # nested like nnx.to_pure_dict(nnx.state(model, nnx.Param))
    path: Path
    kind: str  # "pth" or "orbax"
    entries: int  # official keys mapped, or arrays restored
    pos_embed_resized: tuple[tuple[int, ...], tuple[int, ...]] | None  # (from, to) shapes


def read_params(path: str | os.PathLike, abstract_model: nnx.Module, *, which: str = "model",
                new_head: bool = False) -> LoadedParams:
    """Reads and checks a checkpoint for `abstract_model` (a model or `nnx.eval_shape` of one).

    Args:
      path: an official `.pth` file or a vim_jax orbax directory.
      abstract_model: a VisionMamba (or DeiT) whose `cfg` and parameter shapes the checkpoint must fit.
      which: "model" or "model_ema" (the EMA weights of a training dict / `ema_params`).
      new_head: leave the classifier out on both sides: the checkpoint's head (any number of
        classes, or none) is not read, and the returned parameters have no `head` entry.
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
    cfg = abstract_model.cfg
    if new_head:  # checked and converted as the same model without a classifier
        cfg = dataclasses.replace(cfg, num_classes=0)
        expected = {k: v for k, v in expected.items() if k[0] != HEAD}
    if path.is_dir():
        return _read_orbax(path, cfg, expected, which, new_head)
    return _read_pth(path, cfg, expected, which, new_head)


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
    params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    state_dict = collections.OrderedDict(
        (k, torch.tensor(v)) for k, v in ours_to_official(params, model.cfg).items())
    path = Path(path)
    torch.save({"model": state_dict}, path)
    return path


# --- official .pth -------------------------------------------------------------------------
def _read_pth(path: Path, cfg: VimConfig, expected: dict, which: str, new_head: bool) -> LoadedParams:
    state, described = _pick_state_dict(open_pth(path), path, which)
    rules = official_rules(cfg)
    wanted = {r.official: tuple(r.official_shape) for r in rules}
    got = {k: tuple(v.shape) if isinstance(v, StoredTensor) else type(v).__name__ for k, v in state.items()
           if not (new_head and k.startswith(HEAD + "."))}
    resizable = {"pos_embed"} if _resizable(got.get("pos_embed"), wanted.get("pos_embed")) else set()
    _check(wanted, got, resizable, described, cfg, _describe_official(got))
    values = materialize({k: state[k] for k in wanted})
    resized = None
    if "pos_embed" in resizable and got["pos_embed"] != wanted["pos_embed"]:
        values["pos_embed"] = resize_pos_embed(values["pos_embed"], cfg.grid_size, cls_token=cfg.cls_token)
        resized = (got["pos_embed"], wanted["pos_embed"])
    shapes = traverse_util.unflatten_dict({k: v.shape for k, v in expected.items()})
    return LoadedParams(official_to_ours(values, cfg, shapes), path, "pth", len(rules), resized)


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


def _describe_official(got: dict) -> str:
    layers = [int(m.group(1)) for k in got if (m := re.match(r"layers\.(\d+)\.mixer\.", k))]
    if not layers:
        return "it has no 'layers.{i}.mixer.*' entries: it is not a Vim checkpoint"
    facts = [f"depth={max(layers) + 1}"]
    patch = got.get("patch_embed.proj.weight")
    if isinstance(patch, tuple) and len(patch) == 4:
        facts = [f"embed_dim={patch[0]}", f"patch_size={patch[2]}"] + facts
    head = got.get("head.weight")
    if isinstance(head, tuple) and head:
        facts.append(f"num_classes={head[0]}")
    return "the checkpoint looks like a Vim with " + ", ".join(facts)


# --- vim_jax orbax -------------------------------------------------------------------------
def _read_orbax(path: Path, cfg: VimConfig, expected: dict, which: str, new_head: bool) -> LoadedParams:
    step = orbax_io.find_step_directory(path)
    metadata = orbax_io.read_metadata(step)
    described = f"{step} ('{_ORBAX_ITEMS[which]}')"
    try:
        source_cfg = orbax_io.config_from_metadata(metadata, type(cfg)) if metadata else None
    except ValueError as error:  # another model family's checkpoint (a Vim's into a DeiT, ...)
        raise CheckpointMismatchError(f"checkpoint {described} was written for model {metadata.get('model')!r}, "
                                      f"not a {type(cfg).__name__} model: {error}") from None
    if source_cfg is not None:
        free = _RUNTIME_FIELDS | ({"num_classes"} if new_head else set())
        _check_config(source_cfg, cfg, described, metadata.get("model"), free)
    saved = traverse_util.flatten_dict(orbax_io.saved_shapes(step, _ORBAX_ITEMS[which]))
    if new_head:
        saved = {k: v for k, v in saved.items() if k[0] != HEAD}
    wanted = {"/".join(k): tuple(v.shape) for k, v in expected.items()}
    got = {"/".join(map(str, k)): tuple(v.shape) for k, v in saved.items()}
    resizable = {"pos_embed"} if _resizable(got.get("pos_embed"), wanted.get("pos_embed")) else set()
    hint = f"it was written for model {metadata.get('model')!r}" if metadata else ""
    _check(wanted, got, resizable, described, cfg, hint)
    params = {k: v for k, v in traverse_util.flatten_dict(orbax_io.restore_params(step, item=_ORBAX_ITEMS[which])).items()
              if k in saved}
    resized = None
    if "pos_embed" in resizable and got["pos_embed"] != wanted["pos_embed"]:
        source_grid = source_cfg.grid_size if source_cfg else None
        params[("pos_embed",)] = resize_pos_embed(np.asarray(params[("pos_embed",)]), cfg.grid_size,
                                                  cls_token=_cls_layout(cfg), source_grid=source_grid)
        resized = (got["pos_embed"], wanted["pos_embed"])
    return LoadedParams(traverse_util.unflatten_dict(params), step, "orbax", len(params), resized)


def _check_config(source: VimConfig, target: VimConfig, described: str, model_name, free: set) -> None:
    """Refuses a checkpoint whose architecture differs in ways the shapes cannot show (class-token
    layout, pooling, /2 of the directions, scan orders, ...); fields in `free` may differ."""
    differ = [f"{f.name}: checkpoint {getattr(source, f.name)!r}, model {getattr(target, f.name)!r}"
              for f in dataclasses.fields(target)
              if f.name not in free and getattr(source, f.name) != getattr(target, f.name)]
    if differ:
        hint = [_NEW_HEAD_HINT] if len(differ) == 1 and differ[0].startswith("num_classes:") else []
        raise CheckpointMismatchError(
            f"checkpoint {described} was written for {model_name or 'a model'} with another architecture:\n  "
            + "\n  ".join(differ + hint))


# --- shared checks -------------------------------------------------------------------------
def _resizable(got, wanted) -> bool:
    return (isinstance(got, tuple) and wanted is not None and len(got) == 3 and got[0] == 1
            and got[2] == wanted[2])


def _check(wanted: dict, got: dict, resizable: set, described: str, cfg: VimConfig, hint: str) -> None:
    missing = [k for k in wanted if k not in got]
    unexpected = [k for k in got if k not in wanted]
    misshaped = [(k, wanted[k], got[k]) for k in wanted
                 if k in got and got[k] != wanted[k] and k not in resizable]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint {described} does not fit this model ({_describe_config(cfg)}):"]
    if missing:
        lines.append(f"  missing ({len(missing)}): " + _join(_group_layers(missing)))
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): " + _join(_group_layers(unexpected)))
    if misshaped:
        groups: dict[tuple, list[str]] = {}  # layers with the same shapes share a line, in key order
        for k, w, g in misshaped:
            groups.setdefault((re.sub(r"^layers\.\d+\.", "", k), w, g), []).append(k)
        items = [f"{name}: expected {_shape(w)}, got {_shape(g)}"
                 for (_, w, g), keys in groups.items() for name in _group_layers(keys)]
        lines.append(f"  wrong shape ({len(misshaped)}):\n    " + "\n    ".join(_limit(items)))
    if hint:
        lines.append(f"  {hint}")
    if all(re.split(r"[./]", k)[0] == HEAD for k in missing + unexpected + [k for k, _, _ in misshaped]):
        lines.append(f"  {_NEW_HEAD_HINT}")
    raise CheckpointMismatchError("\n".join(lines))


def _cls_layout(cfg) -> str:
    """Where the class-token rows of the position embedding are: a Vim's `cls_token`; a DeiT's
    single class token leads the sequence."""
    return getattr(cfg, "cls_token", "head" if cfg.num_cls_tokens else "none")


def _describe_config(cfg) -> str:
    family = f"bimamba={cfg.bimamba!r}" if hasattr(cfg, "bimamba") else f"num_heads={cfg.num_heads}"
    return (f"embed_dim={cfg.embed_dim}, depth={cfg.depth}, patch_size={cfg.patch_size}, stride={cfg.stride}, "
            f"img_size={cfg.img_size}, num_classes={cfg.num_classes}, {family}, cls_token={_cls_layout(cfg)!r}")


def _shape(s) -> str:
    return "[" + ", ".join(map(str, s)) + "]" if isinstance(s, tuple) else f"a {s}"


def _group_layers(keys: list[str]) -> list[str]:
    """`layers.0.x`, ..., `layers.23.x` -> `layers.{0-23}.x` (first-seen order)."""
    groups: dict[tuple[bool, str], list[int]] = {}
    for key in keys:
        m = re.match(r"layers\.(\d+)\.(.*)", key)
        groups.setdefault((True, m.group(2)) if m else (False, key), []).append(int(m.group(1)) if m else 0)
    return [f"layers.{_ranges(ix)}.{name}" if layered else name for (layered, name), ix in groups.items()]


def _ranges(indices: list[int]) -> str:
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "{" + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) + "}"


def _limit(items: list[str]) -> list[str]:
    return items if len(items) <= _LIST_LIMIT else items[:_LIST_LIMIT] + [f"... and {len(items) - _LIST_LIMIT} more"]


def _join(items: list[str]) -> str:
    return ", ".join(_limit(items))


# --- non-parameter state -------------------------------------------------------------------
def _seed_abstract_streams(model: nnx.Module, rngs: nnx.Rngs) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.RngStream) and isinstance(node.key.get_value(), jax.ShapeDtypeStruct):
            node.key.set_value(rngs[node.key.tag]())
            node.count.set_value(np.zeros((), np.uint32))
