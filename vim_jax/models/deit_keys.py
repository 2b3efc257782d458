"""DeiT's checkpoint description (`DEIT_KEYS`): vim_jax checkpoints and the official DeiT state dicts.

The official layout is timm's `VisionTransformer` as `deit_{tiny,small,base}_patch16_224` build it,
which is also what the `.pth` files of facebookresearch/deit hold under their "model" entry:
`cls_token`, `pos_embed` (class-token row first), `patch_embed.proj.*` (Conv2d), per block
`norm1`, `attn.qkv` (one fused Linear, output rows ordered q | k | v, each head by head),
`attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`, then `norm` and `head`. PyTorch Linear weights are
`[out, in]` and ours `[in, out]`; our attention keeps the fused qkv weight as
`[embed, 3, heads, head_dim]` and the output projection as `[heads, head_dim, embed]`, which are
reshapes of the transposed timm weights; the 12 blocks are stacked on a leading axis. Both timm
and the official code use LayerNorm eps 1e-6 (not PyTorch's 1e-5), which a checkpoint does not
record: only DeiTs with that eps have this layout. The distilled models (a second, distillation
token and head) and DeiT III (layer scale, no class row in `pos_embed`) are other architectures,
and their files are refused, saying which they are.
"""

from __future__ import annotations

import re

from vim_jax.models.checkpoint_keys import COMMON_RUNTIME_FIELDS, CheckpointKeys, KeyRule, shape_facts
from vim_jax.models.checkpoint_keys import same as _same
from vim_jax.models.checkpoint_keys import swap_last as _t

TIMM_NORM_EPS = 1e-6
# A DeiT's single class token leads the sequence; it has one exactly when it pools it.
_POOL_OF_LAYOUT = {"head": "token", "none": "mean"}
# Keys of the DeiT variants our DeiT does not implement, and what they say about the checkpoint.
_OTHER_VARIANTS = (
    (("dist_token", "head_dist.weight"), "a distilled DeiT (deit_*_distilled_*: a distillation token and a second "
                                         "head), which this DeiT does not implement; use the non-distilled weights"),
    (("blocks.0.ls1.gamma",), "a DeiT III (layer scale ls1/ls2 in every block), which this DeiT does not implement"),
)


def with_cls_layout(cfg, layout: str):
    """The same DeiT with its class token at `layout` ("head" or "none")."""
    if layout not in _POOL_OF_LAYOUT:
        raise ValueError(f"a DeiT's class token leads the sequence or is absent: cls_token 'head' or 'none', "
                         f"got {layout!r}")
    return cfg.replace(pool=_POOL_OF_LAYOUT[layout])


def official_rules(cfg) -> list[KeyRule]:
    """One rule per key of timm's / the official DeiT state dict for a model with this config."""
    if cfg.norm_eps != TIMM_NORM_EPS:
        raise ValueError(f"only DeiTs with timm's LayerNorm eps {TIMM_NORM_EPS} have the official layout; "
                         f"this one has norm_eps={cfg.norm_eps}")
    d, h, hd, c, p, m = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.in_chans, cfg.patch_size, cfg.mlp_dim
    rules = [
        KeyRule("patch_embed.proj.weight", ("patch_embed", "kernel"), lambda w: w.transpose(2, 3, 1, 0),
                lambda w: w.transpose(3, 2, 0, 1), (d, c, p, p)),
        KeyRule("patch_embed.proj.bias", ("patch_embed", "bias"), _same, _same, (d,)),
        KeyRule("pos_embed", ("pos_embed",), _same, _same, (1, cfg.seq_len, d)),
        KeyRule("norm.weight", ("norm", "scale"), _same, _same, (d,)),
        KeyRule("norm.bias", ("norm", "bias"), _same, _same, (d,)),
    ]
    if cfg.num_cls_tokens:
        rules.append(KeyRule("cls_token", ("cls_token",), _same, _same, (1, 1, d)))
    if cfg.num_classes:
        rules += [KeyRule("head.weight", ("head", "kernel"), _t, _t, (cfg.num_classes, d)),
                  KeyRule("head.bias", ("head", "bias"), _same, _same, (cfg.num_classes,))]
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            rules += [KeyRule(b + f"{norm}.weight", ("blocks", norm, "scale", i), _same, _same, (d,)),
                      KeyRule(b + f"{norm}.bias", ("blocks", norm, "bias", i), _same, _same, (d,))]
        rules += [
            KeyRule(b + "attn.qkv.weight", ("blocks", "attn", "qkv_kernel", i), lambda w: w.T.reshape(d, 3, h, hd),
                    lambda w: w.reshape(d, 3 * d).T, (3 * d, d)),
            KeyRule(b + "attn.proj.weight", ("blocks", "attn", "proj_kernel", i), lambda w: w.T.reshape(h, hd, d),
                    lambda w: w.reshape(d, d).T, (d, d)),
            KeyRule(b + "attn.proj.bias", ("blocks", "attn", "proj_bias", i), _same, _same, (d,)),
        ]
        if cfg.qkv_bias:
            rules.append(KeyRule(b + "attn.qkv.bias", ("blocks", "attn", "qkv_bias", i), _same, _same, (3 * d,)))
        for fc, (din, dout) in (("fc1", (d, m)), ("fc2", (m, d))):
            rules += [KeyRule(b + f"mlp.{fc}.weight", ("blocks", "mlp", fc, "kernel", i), _t, _t, (dout, din)),
                      KeyRule(b + f"mlp.{fc}.bias", ("blocks", "mlp", fc, "bias", i), _same, _same, (dout,))]
    return rules


def describe_official(got: dict) -> str:
    """What an official state dict (key -> shape) that does not fit looks like."""
    for keys, variant in _OTHER_VARIANTS:
        if any(k in got for k in keys):
            return f"the checkpoint is {variant}"
    blocks = [int(m.group(1)) for k in got if (m := re.match(r"blocks\.(\d+)\.attn\.", k))]
    if not blocks:
        if any(re.match(r"layers\.\d+\.mixer\.", k) for k in got):
            return "it has 'layers.{i}.mixer.*' entries: it is a Vim checkpoint, not a DeiT one"
        return "it has no 'blocks.{i}.attn.*' entries: it is not a DeiT checkpoint"
    return "the checkpoint looks like a DeiT with " + shape_facts(got, max(blocks) + 1)


def official_cls_layout(keys) -> str:
    """The class-token layout of an official DeiT state dict with these keys: its one class token
    leads the sequence (timm's `class_token=True`), or it has none."""
    return "head" if "cls_token" in set(keys) else "none"


DEIT_KEYS = CheckpointKeys(
    runtime_fields=COMMON_RUNTIME_FIELDS | {"attention", "unroll_blocks"},
    cls_layout=lambda cfg: "head" if cfg.num_cls_tokens else "none",
    describe=lambda cfg: f"num_heads={cfg.num_heads}",
    with_cls_layout=with_cls_layout,
    backbone_fields=frozenset({"residual_in_fp32"}),
    official_rules=official_rules,
    describe_official=describe_official,
    official_cls_layout=official_cls_layout,
)
