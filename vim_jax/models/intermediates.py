"""Shared pieces of `forward_intermediates` (timm's API) for the patch-token models.

Both Vim and DeiT return the tokens of chosen blocks as maps on the patch grid, with class tokens
removed wherever they sit, at any input size: the absolute position embedding is resized to the
input's grid at call time (bicubic, class-token rows kept), as a checkpoint's is on load.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

OUTPUT_FORMATS = ("NHWC", "NCHW")


def block_indices(indices: int | Sequence[int] | None, depth: int) -> tuple[int, ...]:
    """timm's `indices`: None -> every block, an int n -> the last n blocks, a sequence -> those
    blocks (negative ones count from the end); returned sorted, non-negative, without repeats."""
    if indices is None:
        return tuple(range(depth))
    if isinstance(indices, (int, np.integer)):
        if not 0 < indices <= depth:
            raise ValueError(f"indices={indices} asks for the last {indices} blocks of {depth}")
        return tuple(range(depth - indices, depth))
    chosen = set()
    for i in indices:
        if not -depth <= i < depth:
            raise ValueError(f"block index {i} is out of range for a model of depth {depth}")
        chosen.add(int(i) % depth)
    if not chosen:
        raise ValueError("indices is empty: give block indices, a count of last blocks, or None")
    return tuple(sorted(chosen))


def grid_of(images, patch_size: int, stride: int) -> tuple[int, int]:
    """The patch grid (rows, cols) a patch embedding gives for `images` `[b, h, w, c]`."""
    h, w = images.shape[1:3]
    if h < patch_size or w < patch_size:
        raise ValueError(f"images of {h}x{w} are smaller than one patch ({patch_size}x{patch_size})")
    return (h - patch_size) // stride + 1, (w - patch_size) // stride + 1


def resize_pos_embed_to_grid(pos_embed, source_grid: tuple[int, int], grid: tuple[int, int],
                             source_cls_rows: Sequence[int], cls_rows: Sequence[int]):
    """`pos_embed` `[1, L, D]` laid out on `source_grid` -> `[1, gh * gw + num_cls, D]` on `grid`.

    The patch rows are resized like `torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False)`, as `vim_jax.convert.resize_pos_embed` does on load (differentiable:
    the resize is two constant matrices); class-token rows move from `source_cls_rows` to
    `cls_rows` unchanged. Returns `pos_embed` itself when the grids are equal.
    """
    if tuple(grid) == tuple(source_grid):
        return pos_embed
    from vim_jax.convert.pos_embed import bicubic_matrix  # the converters' interpolation weights

    source_cls_rows, cls_rows = list(source_cls_rows), list(cls_rows)
    keep = np.setdiff1d(np.arange(pos_embed.shape[1]), source_cls_rows)
    patches = pos_embed[0, keep].reshape(*source_grid, -1)
    rows = jnp.asarray(bicubic_matrix(source_grid[0], grid[0]), pos_embed.dtype)
    cols = jnp.asarray(bicubic_matrix(source_grid[1], grid[1]), pos_embed.dtype)
    resized = jnp.einsum("ih,hwd,jw->ijd", rows, patches, cols).reshape(grid[0] * grid[1], -1)
    out = resized
    for row, src in sorted(zip(cls_rows, source_cls_rows)):  # ascending inserts keep indices valid
        out = jnp.concatenate([out[:row], pos_embed[0, src][None], out[row:]], axis=0)
    return out[None]


def tokens_to_maps(tokens, grid: tuple[int, int], cls_rows: Sequence[int], output_fmt: str):
    """Token sequence `[b, L, D]` -> patch map `[b, gh, gw, D]` (or `[b, D, gh, gw]` for
    "NCHW"), the class-token rows `cls_rows` removed."""
    if output_fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output_fmt={output_fmt!r}; expected one of {OUTPUT_FORMATS}")
    if cls_rows:
        tokens = tokens[:, np.setdiff1d(np.arange(tokens.shape[1]), list(cls_rows))]
    maps = tokens.reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[-1])
    return maps if output_fmt == "NHWC" else jnp.transpose(maps, (0, 3, 1, 2))
