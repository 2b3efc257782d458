"""How a model family's parameters appear in checkpoints: what the generic loader in
`vim_jax.convert` needs to know about it. Each family keeps its table beside its model
(`vim_keys.VIM_KEYS`, `deit_keys.DEIT_KEYS`) and names it in the model class's `checkpoint_keys`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import numpy as np

HEAD = "head"  # the classifier's parameters in every family (official keys `head.weight`, `head.bias`)
CLS_TOKEN = "cls_token"  # the class token(s) in every family that has one
Path = tuple  # a path into the nested parameter dict, optionally ending in integer indices

# Config fields a checkpoint may differ in from the model it is loaded into, in every family: the
# patch grid (the position embedding is resized), regularisation, precision and execution.
COMMON_RUNTIME_FIELDS = frozenset({"img_size", "stride", "drop_rate", "drop_path_rate", "dtype", "remat"})


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One official state-dict entry: its key, where it goes in our tree, the layout changes both
    ways and its official shape."""

    official: str
    path: Path  # (name, name, ..., layer, direction): integer suffixes index stacked arrays
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_official: Callable[[np.ndarray], np.ndarray]
    official_shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class CheckpointKeys:
    """A family's checkpoint description.

    runtime_fields: config fields a checkpoint may differ in from the model it is loaded into.
    cls_layout: cfg -> where the position embedding's class-token rows are ("head", "middle", ...).
    describe: cfg -> the family's distinguishing config fields, for error messages.
    official_rules: cfg -> the `KeyRule`s of the official `.pth` state dict.
    describe_official: official keys -> shapes -> what the checkpoint looks like, for error messages.
    with_cls_layout: (cfg, layout) -> the same model with that class-token layout: the classifier
      whose checkpoint a class-token-free backbone (a segmentor's) starts from.
    backbone_fields: config fields without parameters that such a backbone may set otherwise
      than the classifier it starts from (pooling, residual precision, ...).
    official_cls_layout: official state-dict keys -> the class-token layout they were saved with.
    """

    runtime_fields: frozenset[str]
    cls_layout: Callable[[Any], str]
    describe: Callable[[Any], str]
    with_cls_layout: Callable[[Any, str], Any]
    official_rules: Callable[[Any], list[KeyRule]]
    describe_official: Callable[[dict], str]
    official_cls_layout: Callable[[Iterable[str]], str]
    backbone_fields: frozenset[str] = frozenset()

    def official_to_ours(self, state_dict: dict[str, np.ndarray], cfg, shapes: dict) -> dict:
        """Fills a nested dict of arrays with the `shapes` of our parameter tree (nested dict of
        shape tuples) from a complete, shape-checked official state dict."""
        out = {}
        for rule in self.official_rules(cfg):
            names, index = _split_path(rule.path)
            node, shape_node = out, shapes
            for name in names[:-1]:
                node, shape_node = node.setdefault(name, {}), shape_node[name]
            if names[-1] not in node:
                node[names[-1]] = np.zeros(shape_node[names[-1]], np.float32)
            value = rule.to_ours(np.asarray(state_dict[rule.official], np.float32))
            if index:
                node[names[-1]][index] = value
            else:
                node[names[-1]] = np.array(value, np.float32)
        return out

    def ours_to_official(self, params: dict, cfg) -> dict[str, np.ndarray]:
        """Our nested parameter dict -> an official state dict (numpy float32)."""
        out = {}
        for rule in self.official_rules(cfg):
            names, index = _split_path(rule.path)
            node = params
            for name in names:
                node = node[name]
            value = np.asarray(node, np.float32)[index] if index else np.asarray(node, np.float32)
            out[rule.official] = np.ascontiguousarray(rule.to_official(value))
        return out


def same(x):
    """A layout that is the same on both sides."""
    return x


def swap_last(x):
    """PyTorch's Linear `[out, in]` <-> our `[in, out]` (on the last two axes)."""
    return np.swapaxes(x, -1, -2)


def shape_facts(got: dict, depth: int) -> str:
    """What an official state dict's shapes (key -> shape) say about its model of `depth` blocks:
    `embed_dim` and `patch_size` from the patch embedding, `num_classes` from the classifier
    (those it has)."""
    facts = [f"depth={depth}"]
    patch = got.get("patch_embed.proj.weight")
    if isinstance(patch, tuple) and len(patch) == 4:
        facts = [f"embed_dim={patch[0]}", f"patch_size={patch[2]}"] + facts
    head = got.get(f"{HEAD}.weight")
    if isinstance(head, tuple) and head:
        facts.append(f"num_classes={head[0]}")
    return ", ".join(facts)


def _split_path(path: Path):
    names = tuple(x for x in path if isinstance(x, str))
    return names, tuple(x for x in path if not isinstance(x, str))
