"""A DeiT segmentor's backbone started from an official DeiT classifier's `.pth` (timm's layout,
`read_backbone_params`): the class token and its position-embedding row 0 are dropped for a
backbone without one (kept for one with one, as the DeiT UperNet has), the patch rows are resized
to the crop's grid, and every block is the classifier's."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx, traverse_util

import vim_jax
from tests.convert.checkpoint_files import write_bare_state_dict
from tests.timm_deit_torch import TimmDeiT, randomize, state_dict_numpy
from vim_jax.convert import CheckpointMismatchError, checkpoint_cls_layout, load_into, read_backbone_params

TEST_DIMS = dict(img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)  # deit_test's


def flat(tree) -> dict:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def bicubic(patch_rows: np.ndarray, source: int, target: int) -> np.ndarray:
    """The official resize: the patch rows as a `source`-square image, bicubic to `target`, align_corners=False."""
    image = torch.from_numpy(patch_rows.reshape(1, source, source, -1)).permute(0, 3, 1, 2).double()
    resized = torch.nn.functional.interpolate(image, size=(target, target), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, target * target, -1).numpy()


@pytest.fixture
def deit_test_pth(tmp_path):
    """(timm's state dict of deit_test's architecture, the .pth the official DeiT code saves of it)."""
    state_dict = state_dict_numpy(randomize(TimmDeiT(**TEST_DIMS), seed=7))
    path = tmp_path / "deit_test.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state_dict.items()}}, path)
    return state_dict, path


def classifier_params(path) -> dict:
    return flat(nnx.to_pure_dict(nnx.state(load_into(nnx.eval_shape(lambda: vim_jax.create_model("deit_test")), path),
                                           nnx.Param)))


@pytest.mark.parametrize("pool", ["mean", "token"])
def test_the_class_row_goes_or_stays_and_the_grid_is_resized(deit_test_pth, pool):
    state_dict, path = deit_test_pth
    backbone = nnx.eval_shape(lambda: vim_jax.create_model("deit_test", num_classes=0, img_size=48, pool=pool))
    assert checkpoint_cls_layout(path, backbone) == "head"
    loaded = read_backbone_params(path, backbone)
    params, classifier = flat(loaded.params), classifier_params(path)
    patches = bicubic(state_dict["pos_embed"][:, 1:], 4, 6)  # 4 x 4 patches at 32 px -> 6 x 6 at 48 px
    if pool == "mean":  # no class token: row 0 leaves with it
        assert set(params) == {k for k in classifier if k[0] not in ("head", "cls_token")}
        expected_pos = patches
        assert loaded.unused == ("head (10 classes)", "cls_token", "pos_embed row(s) 0 (the class token's, at the "
                                                                   "6x6 grid)")
    else:
        assert set(params) == {k for k in classifier if k[0] != "head"}
        expected_pos = np.concatenate([state_dict["pos_embed"][:, :1], patches], axis=1)
        assert loaded.unused == ("head (10 classes)",)
    np.testing.assert_allclose(params[("pos_embed",)], expected_pos, rtol=1e-5, atol=1e-7)
    assert loaded.pos_embed == ((1, 17, 32), expected_pos.shape)
    for key, value in params.items():
        if key != ("pos_embed",):
            np.testing.assert_array_equal(value, classifier[key], err_msg=str(key))


def test_deit_tiny_weights_fit_the_deit_segmentor(tmp_path):
    state_dict = state_dict_numpy(TimmDeiT())  # deit_tiny_patch16_224's keys and shapes
    path = write_bare_state_dict(tmp_path / "deit_tiny_patch16_224.pth", state_dict)
    segmentor = nnx.eval_shape(lambda: vim_jax.create_model("upernet_deit_tiny"))
    loaded = read_backbone_params(path, segmentor.backbone_model)
    # The DeiT UperNet keeps the class token in the sequence (mmseg's ViT): its row stays, and the
    # 14 x 14 patch rows go to the 32 x 32 grid of a 512 px crop.
    assert loaded.pos_embed == ((1, 197, 192), (1, 1025, 192))
    np.testing.assert_allclose(loaded.params["pos_embed"][:, 1:], bicubic(state_dict["pos_embed"][:, 1:], 14, 32),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.params["blocks"]["mlp"]["fc2"]["kernel"][11],
                                  state_dict["blocks.11.mlp.fc2.weight"].T)


def test_a_distilled_deit_cannot_start_a_backbone(deit_test_pth, tmp_path):
    state_dict, _ = deit_test_pth
    state_dict |= {"dist_token": np.zeros((1, 1, 32), np.float32), "pos_embed": np.zeros((1, 18, 32), np.float32)}
    path = write_bare_state_dict(tmp_path / "distilled.pth", state_dict)
    backbone = nnx.eval_shape(lambda: vim_jax.create_model("deit_test", num_classes=0, pool="mean"))
    with pytest.raises(CheckpointMismatchError, match="unexpected \\(1\\): dist_token(.|\n)*a distilled DeiT"):
        read_backbone_params(path, backbone)
