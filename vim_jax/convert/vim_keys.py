"""The key table between official Vim state dicts and vim_jax parameters, both directions.

Official layouts are PyTorch's (Conv2d `[out, in, kh, kw]`, Linear `[out, in]`, depthwise Conv1d
`[E, 1, K]`); ours are channels-last (`[kh, kw, in, out]`, `[in, out]`, `[K, E]`) with the 24
blocks stacked on a leading axis and the two directions on the next one (`""` -> 0, `"_b"` -> 1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from vim_jax.config import VimConfig

Path = tuple  # a path into the nested parameter dict, optionally ending in integer indices


@dataclasses.dataclass(frozen=True)
class KeyRule:
    official: str
    path: Path  # (name, name, ..., layer, direction): integer suffixes index stacked arrays
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_official: Callable[[np.ndarray], np.ndarray]
    official_shape: tuple[int, ...]


def _same(x):
    return x


def _t(x):
    return np.swapaxes(x, -1, -2)


def official_rules(cfg: VimConfig) -> list[KeyRule]:
    """One rule per official key of a model with this config."""
    if len(cfg.directions) > 2 or cfg.scan_orders not in (None, ("raster", "reversed_raster"), ("raster",)):
        raise ValueError("only models with the official scan orders (raster, reversed_raster) have an "
                         f"official checkpoint layout; this one scans {cfg.directions}")
    d, e, n, r, k, p, c = (cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank_, cfg.d_conv,
                           cfg.patch_size, cfg.in_chans)
    rules = [
        KeyRule("patch_embed.proj.weight", ("patch_embed", "kernel"), lambda w: w.transpose(2, 3, 1, 0),
                lambda w: w.transpose(3, 2, 0, 1), (d, c, p, p)),
        KeyRule("patch_embed.proj.bias", ("patch_embed", "bias"), _same, _same, (d,)),
        KeyRule("norm_f.weight", ("norm_f", "scale"), _same, _same, (d,)),
    ]
    if cfg.norm == "layernorm":
        rules.append(KeyRule("norm_f.bias", ("norm_f", "bias"), _same, _same, (d,)))
    if cfg.abs_pos_embed:
        rules.append(KeyRule("pos_embed", ("pos_embed",), _same, _same, (1, cfg.seq_len, d)))
    if cfg.cls_token == "head_tail":
        rules += [KeyRule("cls_token_head", ("cls_token", 0, 0), lambda x: x[0, 0], lambda x: x[None, None], (1, 1, d)),
                  KeyRule("cls_token_tail", ("cls_token", 0, 1), lambda x: x[0, 0], lambda x: x[None, None], (1, 1, d))]
    elif cfg.cls_token != "none":
        rules.append(KeyRule("cls_token", ("cls_token",), _same, _same, (1, 1, d)))
    if cfg.num_classes:
        rules += [KeyRule("head.weight", ("head", "kernel"), _t, _t, (cfg.num_classes, d)),
                  KeyRule("head.bias", ("head", "bias"), _same, _same, (cfg.num_classes,))]

    own = ["", "_b"] if cfg.bimamba == "v2" else [""]
    a_names = ["A_log", "A_b_log"] if cfg.bimamba != "none" else ["A_log"]
    for i in range(cfg.depth):
        m, b = f"layers.{i}.mixer.", ("blocks", "mixer")
        rules.append(KeyRule(f"layers.{i}.norm.weight", ("blocks", "norm", "scale", i), _same, _same, (d,)))
        if cfg.norm == "layernorm":
            rules.append(KeyRule(f"layers.{i}.norm.bias", ("blocks", "norm", "bias", i), _same, _same, (d,)))
        rules += [KeyRule(m + "in_proj.weight", b + ("in_proj", i), _t, _t, (2 * e, d)),
                  KeyRule(m + "out_proj.weight", b + ("out_proj", i), _t, _t, (d, e))]
        for j, s in enumerate(own):
            rules += [
                KeyRule(m + f"conv1d{s}.weight", b + ("conv_kernel", i, j), lambda w: w[:, 0, :].T,
                        lambda w: w.T[:, None, :], (e, 1, k)),
                KeyRule(m + f"conv1d{s}.bias", b + ("conv_bias", i, j), _same, _same, (e,)),
                KeyRule(m + f"x_proj{s}.weight", b + ("x_proj", i, j), _t, _t, (r + 2 * n, e)),
                KeyRule(m + f"dt_proj{s}.weight", b + ("dt_proj_kernel", i, j), _t, _t, (e, r)),
                KeyRule(m + f"dt_proj{s}.bias", b + ("dt_proj_bias", i, j), _same, _same, (e,)),
                KeyRule(m + f"D{s}", b + ("D", i, j), _same, _same, (e,)),
            ]
        for j, name in enumerate(a_names):
            rules.append(KeyRule(m + name, b + ("A_log", i, j), _same, _same, (e, n)))
        if cfg.layer_scale_init is not None:
            rules.append(KeyRule(m + "gamma", b + ("gamma", i), _same, _same, (d,)))
    return rules


def _split_path(path: Path):
    names = tuple(x for x in path if isinstance(x, str))
    return names, tuple(x for x in path if not isinstance(x, str))


def official_to_ours(state_dict: dict[str, np.ndarray], cfg: VimConfig, shapes: dict) -> dict:
    """Fills a nested dict of arrays with the `shapes` of our parameter tree (nested dict of
    shape tuples) from a complete, shape-checked official state dict."""
    out = {}
    for rule in official_rules(cfg):
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


def ours_to_official(params: dict, cfg: VimConfig) -> dict[str, np.ndarray]:
    """Our nested parameter dict -> an official state dict (numpy float32)."""
    out = {}
    for rule in official_rules(cfg):
        names, index = _split_path(rule.path)
        node = params
        for name in names:
            node = node[name]
        value = np.asarray(node, np.float32)[index] if index else np.asarray(node, np.float32)
        out[rule.official] = np.ascontiguousarray(rule.to_official(value))
    return out
