"""`VimConfig`: every switch of the Vision Mamba family, frozen, with derived sizes as properties."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from vim_jax.models import scan_orders

BIMAMBA_TYPES = ("none", "v1", "v2")
CLS_TOKEN_POSITIONS = ("middle", "head", "head_tail", "none")
POOLS = ("token", "mean", "max", "last")
NORMS = ("rmsnorm", "layernorm")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class PatchGrid:
    """The patch grid and widths of a patch-embedding model config, and its token counts (with
    the subclass's `num_cls_tokens`); shared by the Vim and DeiT configs."""

    img_size: int = 224
    patch_size: int = 16
    stride: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192

    @property
    def grid_size(self) -> tuple[int, int]:
        side = (self.img_size - self.patch_size) // self.stride + 1
        return side, side

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def seq_len(self) -> int:
        return self.num_patches + self.num_cls_tokens


@dataclasses.dataclass(frozen=True)
class VimConfig(PatchGrid):
    """Architecture, initialisation and precision of a Vision Mamba model.

    Defaults are those of the released Vim models (bidirectional "v2" mixer, outputs divided by
    two, class token in the middle, absolute position embedding, RMSNorm, float32 residual).
    """

    # Patch grid and widths: those of `PatchGrid`, and
    depth: int = 24
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None: ceil(embed_dim / 16), as upstream's "auto".

    # Mixer. "none": one direction; "v1": the backward direction shares conv, projections and D
    # with the forward one and has its own A; "v2": every direction has its own conv and
    # projections (released models). `bidirectional_layers` pairs blocks 2i and 2i+1 on the
    # sequence and on its reverse (the paper's "Bidirectional Layer").
    bimamba: str = "v2"
    bidirectional_layers: bool = False
    divide_out: bool = True  # v2: average the directions instead of summing them.
    # Token order of each SSM direction (names from `vim_jax.models.scan_orders`); None picks
    # raster (+ reversed raster for v1/v2), the paper's Vim.
    scan_orders: tuple[str, ...] | None = None

    # Tokens and pooling. `pool="token"` reads the class token(s); the others pool all tokens
    # ("max" takes the max over per-token logits, as upstream does).
    cls_token: str = "middle"
    pool: str = "token"
    abs_pos_embed: bool = True
    rope: bool = False
    rope_residual: bool = False
    rope_pt_grid: int = 14  # Pre-training grid size the RoPE frequencies are scaled to.

    # Normalisation and residual stream.
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    layer_scale_init: float | None = None

    # Regularisation.
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    # Initialisation (upstream's by default, quirks included).
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    # Upstream zeroes the backward direction's dt bias after initialising it (only the forward
    # direction keeps its dt init); True gives every direction the dt init.
    fix_backward_dt_init: bool = False

    # Precision and execution. Parameters are always float32; `dtype` is the compute dtype.
    dtype: str = "float32"
    # A backend name, a backend object with its options (e.g. PallasScan(interpret=True)), a tuple
    # of those tried in order, or None: the fastest that runs here (see vim_jax.ops.selective_scan).
    scan_backend: Any = None
    # Where the mixer runs the fused bidirectional scan ("v2", the raster pair), run the conv
    # prologue inside it too (`vim_jax.ops.conv_selective_scan_bidirectional`): a backend with a
    # fused kernel ("mosaic") then reads x and dt_low instead of u and delta. Elsewhere no effect.
    fused_conv_scan: bool = False
    remat: bool = False  # Recompute each block in the backward pass (saves activation memory).
    # Unroll the scan over blocks: compile time grows with depth, but the backward pass reads each
    # block's saved activations where they are instead of from stacked copies (zero-filled, written
    # and sliced every step); on a CPU that made README's CPU model train 1.2x faster.
    unroll_blocks: bool = False

    def __post_init__(self):
        _one_of("bimamba", self.bimamba, BIMAMBA_TYPES)
        _one_of("cls_token", self.cls_token, CLS_TOKEN_POSITIONS)
        _one_of("pool", self.pool, POOLS)
        _one_of("norm", self.norm, NORMS)
        _one_of("dtype", self.dtype, DTYPES)
        if self.pool == "token" and self.cls_token == "none":
            raise ValueError("pool='token' needs a class token; use cls_token='middle'/'head'/'head_tail' "
                             "or pool='mean'/'max'/'last'")
        if self.img_size < self.patch_size:
            raise ValueError(f"img_size {self.img_size} is smaller than patch_size {self.patch_size}")
        if self.stride <= 0 or self.patch_size <= 0:
            raise ValueError("patch_size and stride must be positive")
        if self.bidirectional_layers and self.depth % 2:
            raise ValueError(f"bidirectional_layers pairs blocks: depth must be even, got {self.depth}")
        if self.scan_orders is not None:
            object.__setattr__(self, "scan_orders", tuple(self.scan_orders))
            for name in self.scan_orders:
                scan_orders.check_name(name)
        orders = self.directions
        if self.bimamba == "none" and len(orders) != 1:
            raise ValueError(f"bimamba='none' scans one direction, got scan_orders={orders}")
        if self.bimamba != "none" and len(orders) < 2:
            raise ValueError(f"bimamba={self.bimamba!r} needs at least two scan orders, got {orders}")
        if self.bidirectional_layers and any(not scan_orders.is_raster_family(o) for o in orders):
            raise ValueError("bidirectional_layers reverses the whole sequence; it supports only the "
                             "raster and reversed_raster orders")

    # Derived sizes.
    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def dt_rank_(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.embed_dim / 16)

    @property
    def num_cls_tokens(self) -> int:
        return {"none": 0, "head_tail": 2}.get(self.cls_token, 1)

    @property
    def cls_positions(self) -> tuple[int, ...]:
        """Indices of the class token(s) in the token sequence."""
        return class_token_positions(self.cls_token, self.num_patches)

    @property
    def directions(self) -> tuple[str, ...]:
        if self.scan_orders is not None:
            return self.scan_orders
        return ("raster",) if self.bimamba == "none" else ("raster", "reversed_raster")

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    def replace(self, **changes) -> "VimConfig":
        return dataclasses.replace(self, **changes)


def class_token_positions(cls_token: str, num_patches: int) -> tuple[int, ...]:
    """Indices of the class token(s) among `num_patches` patch tokens: "middle" -> M // 2,
    "head" -> 0, "head_tail" -> 0 and M + 1, "none" -> none."""
    m = num_patches
    return {"none": (), "head": (0,), "middle": (m // 2,), "head_tail": (0, m + 1)}[cls_token]


def _one_of(field: str, value, allowed):
    if value not in allowed:
        raise ValueError(f"VimConfig.{field}={value!r}; expected one of {allowed}")
