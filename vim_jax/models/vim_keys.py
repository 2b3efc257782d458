"""The key table between official Vim state dicts and vim_jax parameters (`VIM_KEYS`).

Official layouts are PyTorch's (Conv2d `[out, in, kh, kw]`, Linear `[out, in]`, depthwise Conv1d
`[E, 1, K]`); ours are channels-last (`[kh, kw, in, out]`, `[in, out]`, `[K, E]`) with the 24
blocks stacked on a leading axis and the two directions on the next one (`""` -> 0, `"_b"` -> 1).
"""

from __future__ import annotations

import re

from vim_jax.config import VimConfig
from vim_jax.models.checkpoint_keys import COMMON_RUNTIME_FIELDS, CheckpointKeys, KeyRule, shape_facts
from vim_jax.models.checkpoint_keys import same as _same
from vim_jax.models.checkpoint_keys import swap_last as _t


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


def describe_official(got: dict) -> str:
    """What an official state dict (key -> shape) that does not fit looks like."""
    layers = [int(m.group(1)) for k in got if (m := re.match(r"layers\.(\d+)\.mixer\.", k))]
    if not layers:
        deit = any(re.match(r"blocks\.\d+\.attn\.", k) for k in got)
        return ("it has no 'layers.{i}.mixer.*' entries: it is not a Vim checkpoint"
                + (" (its 'blocks.{i}.attn.*' entries are a DeiT's: load it into a deit_* model)" if deit else ""))
    return "the checkpoint looks like a Vim with " + shape_facts(got, max(layers) + 1)


def official_cls_layout(keys) -> str:
    """The class-token layout of an official Vim state dict with these keys. Two tokens
    (`cls_token_head`, `cls_token_tail`) lead and end the sequence; a single `cls_token` sits in
    the middle: upstream's default (`use_middle_cls_token=True`) and every released model's."""
    keys = set(keys)
    if {"cls_token_head", "cls_token_tail"} <= keys:
        return "head_tail"
    return "middle" if "cls_token" in keys else "none"


VIM_KEYS = CheckpointKeys(
    runtime_fields=COMMON_RUNTIME_FIELDS | {"scan_backend", "dt_min", "dt_max", "dt_init_floor", "dt_scale",
                                            "fix_backward_dt_init", "unroll_blocks", "fused_conv_scan"},
    cls_layout=lambda cfg: cfg.cls_token,
    describe=lambda cfg: f"bimamba={cfg.bimamba!r}",
    with_cls_layout=lambda cfg, layout: cfg.replace(cls_token=layout),
    # The official segmentors pool no class token, keep Vim-Ti's residual stream in the compute
    # dtype and add RoPE (no parameters) to Vim-S, all over classifiers trained otherwise.
    backbone_fields=frozenset({"pool", "residual_in_fp32", "rope", "rope_residual", "rope_pt_grid"}),
    official_rules=official_rules,
    describe_official=describe_official,
    official_cls_layout=official_cls_layout,
)
