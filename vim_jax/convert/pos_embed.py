"""Resizing an absolute position embedding `[1, L, D]` to another patch grid.

A checkpoint trained at one image size or stride has one row per patch of its grid plus the
class-token row(s); a model at another size or stride needs the grid rows interpolated to its
grid while the class-token rows are carried over unchanged. Upstream's resize assumes the class
token is row 0, which is wrong for the released models (the class token sits at row M // 2);
here the rows are found from the class-token layout, in the source and in the target grid.
The grid is interpolated like `torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)` (no antialiasing), as upstream does.
"""

from __future__ import annotations

import math

import numpy as np

from vim_jax.config import class_token_positions

_CUBIC_A = -0.75  # PyTorch's bicubic coefficient


def class_token_rows(cls_token: str, num_patches: int) -> tuple[int, ...]:
    """The rows of the class token(s) in a sequence of `num_patches` patches (as
    `VimConfig.cls_positions`): "middle" -> M // 2, "head" -> 0, "head_tail" -> 0 and M + 1."""
    return class_token_positions(cls_token, num_patches)


def _cubic(x: np.ndarray) -> np.ndarray:
    a, x = _CUBIC_A, np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float64 `[out_size, in_size]` weights of PyTorch's bicubic resize along one axis.

    Output pixel i samples the input at `(i + 0.5) * in / out - 0.5` with the four taps around
    it; taps beyond the border read the edge pixel (their weight is added to it).
    """
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    base = np.floor(source)
    weights = np.zeros((out_size, in_size))
    for tap in range(-1, 3):
        index = np.clip(base + tap, 0, in_size - 1).astype(np.int64)
        np.add.at(weights, (np.arange(out_size), index), _cubic(source - (base + tap)))
    return weights


def resize_pos_embed(pos_embed: np.ndarray, grid: tuple[int, int], *, cls_token: str = "middle",
                     source_grid: tuple[int, int] | None = None) -> np.ndarray:
    """Resizes `pos_embed` `[1, L, D]` to the patch `grid` (rows, cols), keeping class-token rows.

    Args:
      pos_embed: the checkpoint's position embedding.
      grid: the target model's patch grid (`VimConfig.grid_size`).
      cls_token: the class-token layout of both source and target ("middle", "head",
        "head_tail", "none"), which says where the class-token rows are in each.
      source_grid: the checkpoint's grid; by default the square grid that fits L.
    Returns:
      `[1, rows * cols + num_cls, D]` in the input's dtype (interpolated in float64).
    """
    pos_embed = np.asarray(pos_embed)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape [1, tokens, dim], got {pos_embed.shape}")
    num_cls = len(class_token_rows(cls_token, 1))
    source_patches = pos_embed.shape[1] - num_cls
    if source_grid is None:
        side = math.isqrt(max(source_patches, 0))
        if side * side != source_patches:
            raise ValueError(f"pos_embed has {pos_embed.shape[1]} rows: {source_patches} patch rows (after "
                             f"{num_cls} class-token row(s), cls_token={cls_token!r}) do not form a square grid; "
                             "pass source_grid")
        source_grid = (side, side)
    if source_grid[0] * source_grid[1] != source_patches:
        raise ValueError(f"source grid {source_grid} does not match the {source_patches} patch rows of pos_embed")
    src_cls = list(class_token_rows(cls_token, source_patches))
    patch_rows = np.delete(pos_embed[0], src_cls, axis=0).astype(np.float64)
    patches = patch_rows.reshape(*source_grid, -1)
    resized = np.einsum("ih,hwd,jw->ijd", bicubic_matrix(source_grid[0], grid[0]), patches,
                        bicubic_matrix(source_grid[1], grid[1])).reshape(grid[0] * grid[1], -1)
    target_cls = class_token_rows(cls_token, grid[0] * grid[1])
    out = resized
    for row, src in sorted(zip(target_cls, src_cls)):  # inserting in ascending order keeps indices valid
        out = np.insert(out, row, pos_embed[0, src].astype(np.float64), axis=0)
    return out[None].astype(pos_embed.dtype)
