"""Position-embedding resizing: torch's bicubic on the grid rows, class-token rows kept in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.convert.checkpoint_files import abstract_vim, write_bare_state_dict
from tests.official_torch import random_official_state_dict
from vim_jax.config import VimConfig
from vim_jax.convert import load_into
from vim_jax.convert.pos_embed import bicubic_matrix, class_token_rows, resize_pos_embed
from vim_jax.registry import get_config


def torch_bicubic(grid: np.ndarray, size) -> np.ndarray:
    """[h, w, d] -> [H, W, d] with F.interpolate(bicubic, align_corners=False), upstream's call."""
    x = torch.from_numpy(grid).permute(2, 0, 1)[None]
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("src, dst", [((14, 14), (28, 28)), ((14, 14), (27, 27)), ((27, 27), (14, 14)),
                                      ((3, 5), (8, 2)), ((7, 7), (7, 7))])
def test_bicubic_matches_torch(src, dst):
    grid = np.random.default_rng(0).standard_normal((*src, 6))
    ours = np.einsum("ih,hwd,jw->ijd", bicubic_matrix(src[0], dst[0]), grid, bicubic_matrix(src[1], dst[1]))
    np.testing.assert_allclose(ours, torch_bicubic(grid, dst), rtol=0, atol=1e-12)


@pytest.mark.parametrize("src_cfg, dst_cfg", [
    (dict(img_size=224), dict(img_size=448)),            # 14x14 -> 28x28, stride 16
    (dict(img_size=224), dict(img_size=224, stride=8)),  # stride 16 -> 8: 14x14 -> 27x27
    (dict(img_size=224, stride=8), dict(img_size=224)),  # and back
])
@pytest.mark.parametrize("cls_token", ["middle", "head", "head_tail", "none"])
def test_resize_keeps_class_rows_and_interpolates_the_grid(src_cfg, dst_cfg, cls_token):
    pool = {"pool": "mean"} if cls_token == "none" else {}
    src = VimConfig(embed_dim=8, cls_token=cls_token, **pool, **src_cfg)
    dst = VimConfig(embed_dim=8, cls_token=cls_token, **pool, **dst_cfg)
    pos = np.random.default_rng(1).standard_normal((1, src.seq_len, 8)).astype(np.float32)
    out = resize_pos_embed(pos, dst.grid_size, cls_token=cls_token)
    assert out.shape == (1, dst.seq_len, 8) and out.dtype == np.float32
    # Class-token rows: copied from the source's rows to the target's rows.
    np.testing.assert_array_equal(out[0, list(dst.cls_positions)], pos[0, list(src.cls_positions)])
    # Grid rows: the source's patch rows, in order, interpolated like torch.
    src_grid = np.delete(pos[0], list(src.cls_positions), axis=0).reshape(*src.grid_size, 8)
    dst_grid = np.delete(out[0], list(dst.cls_positions), axis=0).reshape(*dst.grid_size, 8)
    np.testing.assert_allclose(dst_grid, torch_bicubic(src_grid.astype(np.float64), dst.grid_size), atol=1e-6)


def test_middle_class_token_index_224_to_448():
    """The released layout: row 98 of 197 (14 x 14 grid) must land on row 392 of 785."""
    pos = np.zeros((1, 197, 4), np.float32)
    pos[0, 98] = 7.0
    out = resize_pos_embed(pos, (28, 28))
    assert np.flatnonzero(out[0, :, 0] == 7.0).tolist() == [392]
    assert np.count_nonzero(out) == 4


@pytest.mark.parametrize("cfg", [VimConfig(), VimConfig(stride=8), VimConfig(img_size=32, patch_size=8, stride=8),
                                 VimConfig(cls_token="head"), VimConfig(cls_token="head_tail"),
                                 VimConfig(cls_token="none", pool="mean")])
def test_class_token_rows_agree_with_the_config(cfg):
    assert class_token_rows(cfg.cls_token, cfg.num_patches) == cfg.cls_positions


def test_rows_that_form_no_square_grid():
    with pytest.raises(ValueError, match="do not form a square grid"):
        resize_pos_embed(np.zeros((1, 21, 4)), (4, 4))
    out = resize_pos_embed(np.ones((1, 21, 4)), (4, 4), source_grid=(4, 5))
    np.testing.assert_allclose(out, np.ones((1, 17, 4)))


def test_loading_a_checkpoint_at_another_size_resizes(tmp_path):
    src = get_config("vim_test")  # 32 px, patch 8: 4 x 4 grid
    dst = src.replace(img_size=64, stride=4)  # 15 x 15 grid
    sd = random_official_state_dict(src, seed=3)
    model = load_into(abstract_vim(dst), write_bare_state_dict(tmp_path / "s.pth", sd))
    want = resize_pos_embed(sd["pos_embed"], dst.grid_size, cls_token=dst.cls_token)
    np.testing.assert_array_equal(np.asarray(model.pos_embed.get_value()), want)
    assert model.pos_embed.get_value()[0, 225 // 2, 0] == sd["pos_embed"][0, 16 // 2, 0]
