"""A timm-like model registry: `register_model`, `create_model`, `list_models`.

Models are registered by short name (`vim_small`) with the official long names as aliases, each
with its config and the evaluation transform its released weights were measured with.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import fnmatch
import logging
from typing import Any, Callable

from flax import nnx

from vim_jax.data.constants import IMAGENET_EVAL_CROP_PCT, IMAGENET_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How a model's released weights were evaluated (the official transform by default: the
    shorter side resized to `input_size / crop_pct`, then a centre crop of `input_size`)."""

    input_size: int = IMAGENET_IMAGE_SIZE
    crop_pct: float = IMAGENET_EVAL_CROP_PCT
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    config: Any
    build: Callable[[Any, nnx.Rngs], nnx.Module]
    aliases: tuple[str, ...] = ()
    eval_settings: EvalSettings = EvalSettings()
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, config, build, *, aliases=(), eval_settings=EvalSettings(), description=""):
    """Adds a model under `name` (and `aliases`); `build(config, rngs)` returns the NNX module."""
    for key in (name, *aliases):
        if key in _MODELS or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
    _MODELS[name] = ModelEntry(name, config, build, tuple(aliases), eval_settings, description)
    for alias in aliases:
        _ALIASES[alias] = name


def resolve(name: str) -> ModelEntry:
    """The entry registered under `name` or an alias; unknown names get a message with suggestions."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    key = _ALIASES.get(name, name)
    if key not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS) + list(_ALIASES), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} Known models: {', '.join(list_models())}")
    return _MODELS[key]


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Registered model names matching a glob `pattern`, sorted."""
    names = list(_MODELS) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides):
    """The registered config of `name` with `overrides` applied (e.g. `img_size=448`)."""
    config = resolve(name).config
    unknown = set(overrides) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"{type(config).__name__} has no field(s) {sorted(unknown)}")
    return dataclasses.replace(config, **overrides)


def create_model(name: str, *, checkpoint: str | None = None, seed: int = 0, rngs: nnx.Rngs | None = None,
                 features_only: bool = False, out_indices=None, **overrides) -> nnx.Module:
    """Builds a registered model, optionally loading weights.

    Args:
      name: a name from `list_models()` or an official long name.
      checkpoint: an official `.pth` file (full training dict or bare state dict: hustvl/Vim's for
        Vim, timm's / facebookresearch/deit's for DeiT) or a checkpoint
        written by `vim-jax convert` / the trainer. Position embeddings are resized when the
        checkpoint was trained at another image size or stride. Asking for another `num_classes`
        than the checkpoint's gives a freshly initialised classifier (fine-tuning), and
        `num_classes=0` none (features).
      seed: seeds `rngs` when none is given (parameters and dropout).
      features_only: return a `FeatureExtractor` (no classifier) whose call gives the patch-grid
        maps `[batch, rows, cols, embed_dim]` of blocks `out_indices` (default: the last block of
        each quarter, e.g. (5, 11, 17, 23)), at any image size.
      out_indices: block indices for `features_only` (negative from the end), or an int n for
        the last n blocks.
      **overrides: config fields to change, e.g. `num_classes=10`, `img_size=448`,
        `dtype="bfloat16"`, `drop_path_rate=0.1`.
    """
    if features_only:
        from vim_jax.models.features import FeatureExtractor  # models import the registry, not back

        overrides.setdefault("num_classes", 0)
        backbone = create_model(name, checkpoint=checkpoint, seed=seed, rngs=rngs, **overrides)
        return FeatureExtractor(backbone, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices selects the blocks of a features_only model; pass features_only=True")
    entry = resolve(name)
    config = get_config(name, **overrides)
    if rngs is None:
        rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    if checkpoint is None:
        return _compiled_builder(entry.build, config)(rngs)
    from vim_jax.convert import checkpoint_num_classes, load_into  # converters import torch-format readers lazily

    new_head = "num_classes" in overrides and checkpoint_num_classes(checkpoint) != config.num_classes
    if new_head:  # only the head's initial values are used; the rest comes from the checkpoint
        model = _compiled_builder(entry.build, config)(rngs)
        log.info("%s: the checkpoint's classifier is left out; the model's (%d classes) is new",
                 checkpoint, config.num_classes)
    else:
        model = nnx.eval_shape(lambda r: entry.build(config, r), rngs)
    return load_into(model, checkpoint, rngs=rngs, new_head=new_head)


@functools.lru_cache(maxsize=64)
def _compiled_builder(build, config):
    # Compiling the initialisers is faster than running them op by op (24 stacked blocks), and
    # the compiled builder is reused for every model of the same config.
    return nnx.jit(lambda rngs: build(config, rngs))
