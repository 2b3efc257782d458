"""A segmentor's class-token-free backbone started from a classifier's checkpoint
(`read_backbone_params`): official `.pth` files with a middle, head, head + tail or no class token,
and our checkpoints, of Vim and DeiT; the class rows leave the position embedding at their real
index before the patch grid is resized, and whatever does not fit is reported."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx, traverse_util

import vim_jax
from tests.convert.checkpoint_files import random_params, write_bare_state_dict, write_training_checkpoint
from tests.official_torch import random_official_state_dict
from vim_jax.convert import (CheckpointMismatchError, checkpoint_cls_layout, orbax_io, read_backbone_params,
                             save_params)
from vim_jax.models.segmentation import Segmentor
from vim_jax.registry import get_config
from vim_jax.train.defaults import backbone_overrides

# upernet_vim_test's backbone is vim_test with four blocks; the classifier is that model with a
# class token and 10 classes, on the same 32 px (4 x 4 patches) images.
CLASSIFIER = dict(depth=4, num_classes=10)
# Hand-written: the 16 patch rows of a pos_embed with the class-token layout's rows taken out.
PATCH_ROWS = {
    "middle": lambda pe: np.concatenate([pe[:, :8], pe[:, 9:]], axis=1),  # row 16 // 2
    "head": lambda pe: pe[:, 1:],
    "head_tail": lambda pe: pe[:, 1:-1],
    "none": lambda pe: pe,
}


def flat(tree) -> dict:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def segmentor_backbone(img_size: int = 32, name: str = "upernet_vim_test", **overrides):
    """The abstract backbone model of a registered segmentor at `img_size` crops."""
    segmentor = nnx.eval_shape(lambda: vim_jax.create_model(
        name, crop_size=img_size, backbone_overrides=backbone_overrides(name, img_size=img_size, **overrides)))
    return segmentor.backbone_model


def official_classifier(tmp_path, cls_token: str, *, training_dict: bool):
    """(classifier config, its official state dict, the .pth file holding it)."""
    cfg = get_config("vim_test", cls_token=cls_token, pool="mean" if cls_token == "none" else "token", **CLASSIFIER)
    state_dict = random_official_state_dict(cfg, seed=3)
    path = tmp_path / f"{cls_token}.pth"
    if training_dict:  # what upstream's main.py saves; its args name a middle-class-token model
        write_training_checkpoint(path, state_dict, cfg)
    else:
        write_bare_state_dict(path, state_dict)
    return cfg, state_dict, path


def assert_blocks_equal(backbone: dict, classifier: dict):
    """Every backbone parameter but the position embedding is the classifier's."""
    assert set(backbone) == {k for k in classifier if k[0] not in ("head", "cls_token")}
    for key, value in backbone.items():
        if key != ("pos_embed",):
            np.testing.assert_array_equal(value, classifier[key], err_msg=str(key))


@pytest.mark.parametrize("cls_token, training_dict", [("middle", True), ("head", False), ("head_tail", False),
                                                      ("none", False)])
def test_official_pth_at_the_same_grid_drops_the_class_rows_only(tmp_path, cls_token, training_dict):
    cfg, state_dict, path = official_classifier(tmp_path, cls_token, training_dict=training_dict)
    # A lone class token reads as upstream's default, the middle: a head one must be named.
    given = "head" if cls_token == "head" else None
    loaded = read_backbone_params(path, segmentor_backbone(), cls_token=given)
    assert loaded.cls_token == cls_token
    params = flat(loaded.params)
    assert_blocks_equal(params, flat(random_params(cfg, seed=3)))
    np.testing.assert_array_equal(params[("pos_embed",)], PATCH_ROWS[cls_token](state_dict["pos_embed"]))
    assert loaded.pos_embed == ((1, cfg.seq_len, 32), (1, 16, 32))
    assert loaded.unused[0] == "head (10 classes)"
    assert ("cls_token" in loaded.unused) == (cls_token != "none")


def test_the_grid_is_resized_after_the_middle_row_is_removed(tmp_path):
    cfg, state_dict, path = official_classifier(tmp_path, "middle", training_dict=True)
    loaded = read_backbone_params(path, segmentor_backbone(img_size=64))
    patches = PATCH_ROWS["middle"](state_dict["pos_embed"]).reshape(1, 4, 4, 32)
    # Upstream's resize: bicubic, align_corners=False, on the patch rows as an image.
    expected = torch.nn.functional.interpolate(torch.from_numpy(patches).permute(0, 3, 1, 2).double(), size=(8, 8),
                                               mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 64, 32).numpy()
    np.testing.assert_allclose(loaded.params["pos_embed"], expected, rtol=1e-5, atol=1e-7)
    assert loaded.pos_embed == ((1, 17, 32), (1, 64, 32))
    assert "pos_embed row(s) 32 (the class token's, at the 8x8 grid)" in loaded.unused
    assert_blocks_equal(flat(loaded.params), flat(random_params(cfg, seed=3)))


def test_our_checkpoint_gives_the_same_backbone_as_its_official_export(tmp_path):
    cfg, _, path = official_classifier(tmp_path, "middle", training_dict=True)
    params = random_params(cfg, seed=3)
    ours = save_params(tmp_path / "ours", params, orbax_io.model_metadata(cfg, "vim_test"))
    backbone = segmentor_backbone(img_size=48)
    from_pth, from_ours = read_backbone_params(path, backbone), read_backbone_params(ours, backbone)
    assert from_ours.cls_token == "middle" and from_ours.unused == from_pth.unused
    # The segmentor pools the mean; the classifier read its class token.
    assert from_ours.config_changes == ("pool: checkpoint 'token', model 'mean'",)
    a, b = flat(from_pth.params), flat(from_ours.params)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=str(key))


def test_the_backbone_path_is_where_the_segmentor_keeps_it():
    segmentor = nnx.eval_shape(lambda: vim_jax.create_model("upernet_vim_test"))
    params = nnx.to_pure_dict(nnx.state(segmentor, nnx.Param))
    below = params
    for key in Segmentor.BACKBONE_PATH:
        below = below[key]
    shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
    assert shapes(below) == shapes(nnx.to_pure_dict(nnx.state(segmentor.backbone_model, nnx.Param)))


def test_a_deit_backbone_starts_from_our_deit_classifier(tmp_path):
    cfg = get_config("deit_test", img_size=32)
    model = vim_jax.create_model("deit_test", seed=1)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    ours = save_params(tmp_path / "deit", params, orbax_io.model_metadata(cfg, "deit_test"))
    # A class-token-free DeiT (mean pooling) at 48 px, and one that keeps its class token.
    for pool, rows in (("mean", 36), ("token", 37)):
        backbone = nnx.eval_shape(lambda: vim_jax.create_model("deit_test", num_classes=0, img_size=48, pool=pool))
        loaded = read_backbone_params(ours, backbone)
        assert loaded.cls_token == "head" and loaded.pos_embed == ((1, 17, 32), (1, rows, 32))
        assert ("cls_token" in loaded.params) == (pool == "token")
        assert_blocks_equal({k: v for k, v in flat(loaded.params).items() if k[0] != "cls_token"}, flat(params))


def test_a_missing_backbone_entry_is_listed(tmp_path):
    cfg = get_config("vim_test", **CLASSIFIER)
    state_dict = random_official_state_dict(cfg, seed=3)
    del state_dict["layers.2.mixer.in_proj.weight"], state_dict["norm_f.weight"]
    path = write_bare_state_dict(tmp_path / "partial.pth", state_dict)
    with pytest.raises(CheckpointMismatchError, match=r"missing \(2\): norm_f.weight, layers.\{2\}.mixer.in_proj.weight"):
        read_backbone_params(path, segmentor_backbone())


def test_a_deeper_classifier_is_refused_with_its_extra_blocks(tmp_path):
    cfg = get_config("vim_test", depth=6, num_classes=10)
    path = write_bare_state_dict(tmp_path / "deep.pth", random_official_state_dict(cfg, seed=3))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected \(\d+\): layers.\{4-5\}"):
        read_backbone_params(path, segmentor_backbone())


def test_a_class_token_cannot_be_given_to_a_backbone_with_another(tmp_path):
    _, _, path = official_classifier(tmp_path, "middle", training_dict=False)
    backbone = nnx.eval_shape(lambda: vim_jax.create_model("vim_test", num_classes=0, depth=4, cls_token="head"))
    with pytest.raises(CheckpointMismatchError, match="its class token \\('middle'\\) cannot become this backbone's"):
        read_backbone_params(path, backbone)


def test_a_segmentors_own_checkpoint_is_not_a_classifier(tmp_path):
    segmentor = nnx.eval_shape(lambda: vim_jax.create_model("upernet_vim_test"))
    zeros = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nnx.to_pure_dict(nnx.state(segmentor, nnx.Param)))
    ours = save_params(tmp_path / "seg", zeros, orbax_io.model_metadata(segmentor.cfg, "upernet_vim_test"))
    with pytest.raises(CheckpointMismatchError, match="written for model 'upernet_vim_test', not a VimConfig model"):
        checkpoint_cls_layout(ours, segmentor.backbone_model)


def test_a_released_vim_ti_file_fits_the_official_segmentor(tmp_path):
    cfg = get_config("vim_tiny")
    state_dict = random_official_state_dict(cfg, seed=5)
    path = write_training_checkpoint(tmp_path / "vim_t_midclstok.pth", state_dict, cfg)
    loaded = read_backbone_params(path, nnx.eval_shape(lambda: vim_jax.create_model("upernet_vim_tiny")).backbone_model)
    assert loaded.pos_embed == ((1, 197, 192), (1, 1024, 192))
    assert "pos_embed row(s) 512 (the class token's, at the 32x32 grid)" in loaded.unused
    # The class token's row is 196 // 2 = 98 of the 14 x 14 grid's 197 rows; the rest go to 32 x 32.
    patches = np.concatenate([state_dict["pos_embed"][:, :98], state_dict["pos_embed"][:, 99:]], axis=1)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(patches.reshape(1, 14, 14, 192)).permute(0, 3, 1, 2).double(), size=(32, 32),
        mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 1024, 192)
    np.testing.assert_allclose(loaded.params["pos_embed"], expected.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(loaded.params["blocks"]["mixer"]["A_log"][23, 1], state_dict["layers.23.mixer.A_b_log"])
