"""The ablation grids of `ablate.py`: the paper's studies, the scan orders, and Vim vs DeiT.

Each variant is a registered model plus config overrides applied on top of the Fashion-MNIST
recipe (`experiments/configs/fashion_mnist.py`), with the paper's ImageNet-1k top-1 where the
paper reports one (Vim paper, arXiv 2401.09417, Tables 4 and 5, all with Vim-Ti; see
docs/official_model.md).
"""

from __future__ import annotations

import dataclasses

from vim_jax.models.scan_orders import CROSS_SCAN


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a grid: `model_name` built with the recipe's model overrides plus `overrides`."""

    key: str
    label: str
    overrides: dict
    paper_top1: float | None = None
    model_name: str = "vim_tiny"


@dataclasses.dataclass(frozen=True)
class Grid:
    """Variants trained alike; `model` overrides the recipe's model for every variant."""

    name: str
    title: str
    variants: tuple[Variant, ...]
    note: str = ""
    model: dict = dataclasses.field(default_factory=dict)


# The paper's bidirectional study ran without a class token, pooling the mean of the tokens.
_NO_CLS = {"cls_token": "none", "pool": "mean"}

BIDIRECTIONAL = Grid(
    "bidirectional", "Bidirectional design (no class token, mean pool)",
    (
        Variant("none", "None (one direction)", {**_NO_CLS, "bimamba": "none"}, 73.2),
        Variant("bi_layer", "Bidirectional layer", {**_NO_CLS, "bimamba": "none", "bidirectional_layers": True}, 70.9),
        Variant("bi_ssm", "Bidirectional SSM (v1)", {**_NO_CLS, "bimamba": "v1"}, 72.8),
        Variant("bi_ssm_conv", "Bidirectional SSM + Conv1d (v2)", {**_NO_CLS, "bimamba": "v2"}, 73.9),
    ),
    note="Paper: Vim-Ti, ImageNet-1k top-1, Table 4.")

CLASSIFICATION = Grid(
    "classification", "Classification design (bidirectional SSM + Conv1d)",
    (
        Variant("mean_pool", "Mean pool", {"cls_token": "none", "pool": "mean"}, 73.9),
        Variant("max_pool", "Max pool", {"cls_token": "none", "pool": "max"}, 73.4),
        Variant("head_cls", "Head class token", {"cls_token": "head", "pool": "token"}, 75.2),
        Variant("head_tail_cls", "Head + tail class tokens", {"cls_token": "head_tail", "pool": "token"}, 74.3),
        Variant("middle_cls", "Middle class token", {"cls_token": "middle", "pool": "token"}, 76.1),
    ),
    note="Paper: Vim-Ti, ImageNet-1k top-1, Table 5.")


def _orders(*names):
    return {"scan_orders": tuple(names)}


SCAN_ORDERS = Grid(
    "scan_orders", "Scan orders (v2 mixer, middle class token)",
    (
        Variant("raster", "Raster + reversed (paper)", _orders("raster", "reversed_raster")),
        Variant("column", "Column + reversed", _orders("column", "reversed_column")),
        Variant("zigzag_rows", "Zigzag rows + reversed", _orders("zigzag_rows", "reversed_zigzag_rows")),
        Variant("zigzag_columns", "Zigzag columns + reversed", _orders("zigzag_columns", "reversed_zigzag_columns")),
        Variant("window2", "2x2 windows + reversed", _orders("window2", "reversed_window2")),
        Variant("window4", "4x4 windows + reversed", _orders("window4", "reversed_window4")),
        Variant("cross", "Cross scan (4 routes)", _orders(*CROSS_SCAN)),
    ),
    note="The paper scans raster + reversed only; the other orders have no paper number.")

VIM_VS_DEIT = Grid(
    "vim_vs_deit", "Vim-Ti vs DeiT-Ti (same recipe and budget)",
    (
        Variant("vim", "Vim (v2, middle class token)", {}, 76.1),
        Variant("deit", "DeiT (class token)", {}, 72.2, model_name="deit_tiny"),
    ),
    note="Paper: Vim-Ti 76.1 vs DeiT-Ti 72.2 on ImageNet-1k. Both on the recipe's 4x4 patches.",
    model={"embed_dim": 192, "depth": 24})  # Vim-Ti; DeiT-Ti follows by `deit_class_of`

GRIDS = {g.name: g for g in (BIDIRECTIONAL, CLASSIFICATION, SCAN_ORDERS, VIM_VS_DEIT)}

# Fields of the recipe's (Vim) model overrides that DeiT shares; the others (d_state, ...) are Vim's.
DEIT_SHARED_FIELDS = ("img_size", "patch_size", "stride", "in_chans", "num_classes", "embed_dim",
                      "drop_path_rate", "dtype", "remat")
DEIT_HEAD_DIM = 64


def deit_class_of(vim_model: dict) -> dict:
    """DeiT overrides of the same class as a Vim: its width, half its depth, 64-channel heads.

    The rule gives the published pairs: Vim-Ti/S/B (192/384/768 wide, 24 blocks) and DeiT-Ti/S/B
    (12 blocks of 3/6/12 heads).
    """
    deit = {k: v for k, v in vim_model.items() if k in DEIT_SHARED_FIELDS}
    deit["depth"] = max(1, vim_model["depth"] // 2)
    deit["num_heads"] = max(1, vim_model["embed_dim"] // DEIT_HEAD_DIM)
    return deit


def model_overrides(recipe_model: dict, grid: Grid, variant: Variant, budget: dict | None = None) -> dict:
    """The `config.model` overrides of one run: the recipe's model, then the grid's, the variant's
    and the command line's (`budget`: width/depth); translated by `deit_class_of` for DeiT."""
    vim_model = {**recipe_model, **grid.model, **(budget or {})}
    if variant.model_name.startswith("deit"):
        return {**deit_class_of(vim_model), **variant.overrides}
    return {**vim_model, **variant.overrides}
