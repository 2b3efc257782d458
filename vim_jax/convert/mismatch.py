"""The one error a checkpoint that does not fit its model raises, listing every difference."""

from __future__ import annotations

import dataclasses
import re

from vim_jax.models.checkpoint_keys import HEAD, CheckpointKeys

_LIST_LIMIT = 12
_BLOCK_KEY = re.compile(r"(layers|blocks)\.(\d+)\.(.*)")  # a per-block key: Vim's `layers.i.*`, DeiT's `blocks.i.*`
NEW_HEAD_HINT = ("only the classifier differs: to start a new one instead of the checkpoint's, pass "
                 "num_classes=N to create_model (or new_head=True to load_into)")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model (every missing, unexpected and mis-shaped entry)."""


def describe_model(cfg, keys: CheckpointKeys) -> str:
    """The config fields that decide a model's parameter shapes, for messages."""
    return (f"embed_dim={cfg.embed_dim}, depth={cfg.depth}, patch_size={cfg.patch_size}, stride={cfg.stride}, "
            f"img_size={cfg.img_size}, num_classes={cfg.num_classes}, {keys.describe(cfg)}, "
            f"cls_token={keys.cls_layout(cfg)!r}")


def pos_embed_resizable(got, wanted) -> bool:
    """Whether a saved position embedding of shape `got` can be resized to `wanted`."""
    return (isinstance(got, tuple) and wanted is not None and len(got) == 3 and got[0] == 1
            and got[2] == wanted[2])


def check_entries(wanted: dict, got: dict, resizable: set, described: str, model: str, hint: str) -> None:
    """Raises one `CheckpointMismatchError` naming every missing, unexpected and mis-shaped entry
    (key -> shape, or a type name for a non-tensor) of the checkpoint `described`; entries in
    `resizable` may differ in shape. `model` describes the model, `hint` the checkpoint."""
    missing = [k for k in wanted if k not in got]
    unexpected = [k for k in got if k not in wanted]
    misshaped = [(k, wanted[k], got[k]) for k in wanted
                 if k in got and got[k] != wanted[k] and k not in resizable]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint {described} does not fit this model ({model}):"]
    if missing:
        lines.append(f"  missing ({len(missing)}): " + _join(_group_layers(missing)))
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): " + _join(_group_layers(unexpected)))
    if misshaped:
        groups: dict[tuple, list[str]] = {}  # layers with the same shapes share a line, in key order
        for k, w, g in misshaped:
            groups.setdefault((_BLOCK_KEY.sub(r"\1.\3", k), w, g), []).append(k)
        items = [f"{name}: expected {_shape(w)}, got {_shape(g)}"
                 for (_, w, g), keys in groups.items() for name in _group_layers(keys)]
        lines.append(f"  wrong shape ({len(misshaped)}):\n    " + "\n    ".join(_limit(items)))
    if hint:
        lines.append(f"  {hint}")
    if all(re.split(r"[./]", k)[0] == HEAD for k in missing + unexpected + [k for k, _, _ in misshaped]):
        lines.append(f"  {NEW_HEAD_HINT}")
    raise CheckpointMismatchError("\n".join(lines))


def config_differences(source, target, ignore: set = frozenset()) -> list[str]:
    """`"field: checkpoint X, model Y"` for each config field (not in `ignore`) where they differ."""
    return [f"{f.name}: checkpoint {getattr(source, f.name)!r}, model {getattr(target, f.name)!r}"
            for f in dataclasses.fields(target)
            if f.name not in ignore and getattr(source, f.name) != getattr(target, f.name)]


def check_config(source, target, described: str, model_name, free: set) -> None:
    """Refuses a checkpoint whose architecture differs in ways the shapes cannot show (class-token
    layout, pooling, /2 of the directions, scan orders, ...); fields in `free` may differ."""
    differ = config_differences(source, target, free)
    if differ:
        hint = [NEW_HEAD_HINT] if len(differ) == 1 and differ[0].startswith("num_classes:") else []
        raise CheckpointMismatchError(
            f"checkpoint {described} was written for {model_name or 'a model'} with another architecture:\n  "
            + "\n  ".join(differ + hint))


def _shape(s) -> str:
    return "[" + ", ".join(map(str, s)) + "]" if isinstance(s, tuple) else f"a {s}"


def _group_layers(keys: list[str]) -> list[str]:
    """`layers.0.x`, ..., `layers.23.x` -> `layers.{0-23}.x` (and `blocks.*` alike; first-seen order)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for key in keys:
        m = _BLOCK_KEY.fullmatch(key)
        groups.setdefault((m.group(1), m.group(3)) if m else ("", key), []).append(int(m.group(2)) if m else 0)
    return [f"{stack}.{_ranges(ix)}.{name}" if stack else name for (stack, name), ix in groups.items()]


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
