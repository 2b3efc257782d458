"""DeiT checkpoints in timm's / the official DeiT layout: our DeiT, filled from real `.pth` files of
timm's architecture (`tests/timm_deit_torch.py`) with random weights, gives its logits at 224 and,
with the position embedding resized, at 288; export writes that layout back; files of other DeiT
variants, or of another family, are refused saying what they are."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import vim_jax
from tests.convert.checkpoint_files import relative_error, torch_state_dict, write_bare_state_dict
from tests.official_torch import random_official_state_dict
from tests.timm_deit_torch import TimmDeiT, randomize, state_dict_numpy
from vim_jax import cli
from vim_jax.convert import CheckpointMismatchError, export_official, load_into
from vim_jax.registry import get_config

# deit_test's architecture as timm would build it (32 px, 8 px patches, 2 blocks of width 32).
TEST_DIMS = dict(img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def deit_tiny_file(tmp_path_factory):
    """(timm's deit_tiny_patch16_224 with random weights in float64, its file as the official DeiT
    repository saves it: the state dict under "model")."""
    reference = randomize(TimmDeiT(), seed=0)
    path = tmp_path_factory.mktemp("deit") / "deit_tiny_patch16_224.pth"
    torch.save({"model": torch_state_dict(state_dict_numpy(reference))}, path)
    reference.load_state_dict(torch.load(path, weights_only=True)["model"])  # the float32 values, in float64
    return reference.double().eval(), path


def torch_logits(model, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).double().permute(0, 3, 1, 2)).numpy()


def our_logits(model, images_nhwc: np.ndarray) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(images_nhwc)))


def test_deit_tiny_gives_timms_logits_at_224(deit_tiny_file):
    reference, path = deit_tiny_file
    images = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    model = vim_jax.create_model("deit_tiny", checkpoint=str(path))
    expected = torch_logits(reference, images)
    # float32 against float64 through 12 blocks: rounding alone (a layout mistake is of order 1).
    assert relative_error(our_logits(model, images), expected) < 1e-5


def test_deit_tiny_at_288_resizes_the_position_embedding_as_timm(deit_tiny_file):
    reference, path = deit_tiny_file
    model = vim_jax.create_model("deit_tiny", checkpoint=str(path), img_size=288)
    # timm's model at 288 with the position embedding resized as the official DeiT repository's
    # fine-tuning does (and ours): class row kept, the 14 x 14 patch rows bicubic to 18 x 18,
    # align_corners=False. (timm's own `resample_abs_pos_embed` passes antialias=True, which in
    # PyTorch is another cubic filter even when enlarging.)
    at_288 = TimmDeiT(img_size=288).double().eval()
    state = reference.state_dict()
    cls_row, patches = state["pos_embed"][:, :1], state["pos_embed"][:, 1:]
    grid = torch.nn.functional.interpolate(patches.reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=(18, 18),
                                           mode="bicubic", align_corners=False)
    state["pos_embed"] = torch.cat([cls_row, grid.permute(0, 2, 3, 1).reshape(1, 18 * 18, -1)], dim=1)
    at_288.load_state_dict(state)
    images = np.random.default_rng(1).standard_normal((1, 288, 288, 3)).astype(np.float32)
    assert relative_error(our_logits(model, images), torch_logits(at_288, images)) < 1e-5


def test_export_writes_timms_state_dict(tmp_path):
    ours = vim_jax.create_model("deit_test", seed=4)
    path = export_official(ours, tmp_path / "exported.pth")
    reference = TimmDeiT(**TEST_DIMS).double().eval()
    reference.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)  # every key, no extra
    images = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    assert relative_error(our_logits(ours, images), torch_logits(reference, images)) < 1e-5


def test_convert_command_reads_a_bare_timm_state_dict(tmp_path):
    state_dict = state_dict_numpy(randomize(TimmDeiT(**TEST_DIMS), seed=5))
    source = write_bare_state_dict(tmp_path / "timm.pth", state_dict)  # torch.save(model.state_dict())
    cli.main(["convert", "--model", "deit_test", str(source), str(tmp_path / "converted")])
    converted = vim_jax.create_model("deit_test", checkpoint=str(tmp_path / "converted"))
    params = jax.device_get(nnx.to_pure_dict(nnx.state(converted, nnx.Param)))
    np.testing.assert_array_equal(params["blocks"]["attn"]["qkv_kernel"][1],
                                  state_dict["blocks.1.attn.qkv.weight"].T.reshape(32, 3, 2, 16))
    np.testing.assert_array_equal(params["patch_embed"]["kernel"], state_dict["patch_embed.proj.weight"].transpose(2, 3, 1, 0))


def mismatch(state_dict: dict, tmp_path, name: str = "deit_test") -> str:
    path = write_bare_state_dict(tmp_path / "other.pth", state_dict)
    with pytest.raises(CheckpointMismatchError) as error:
        load_into(nnx.eval_shape(lambda: vim_jax.create_model(name)), path)
    return str(error.value)


def test_a_distilled_deit_is_refused_as_such(tmp_path):
    state_dict = state_dict_numpy(randomize(TimmDeiT(**TEST_DIMS), seed=6))
    state_dict |= {"dist_token": np.zeros((1, 1, 32), np.float32), "head_dist.weight": np.zeros((10, 32), np.float32),
                   "head_dist.bias": np.zeros(10, np.float32),
                   "pos_embed": np.zeros((1, 18, 32), np.float32)}  # two prefix rows
    message = mismatch(state_dict, tmp_path)
    assert "unexpected (3): dist_token, head_dist.weight, head_dist.bias" in message
    assert "a distilled DeiT" in message and "use the non-distilled weights" in message


def test_a_deit3_is_refused_as_such(tmp_path):
    state_dict = state_dict_numpy(randomize(TimmDeiT(**TEST_DIMS), seed=6))
    state_dict |= {f"blocks.{i}.ls{j}.gamma": np.ones(32, np.float32) for i in range(2) for j in (1, 2)}
    message = mismatch(state_dict, tmp_path)
    assert "unexpected (4): blocks.{0-1}.ls1.gamma, blocks.{0-1}.ls2.gamma" in message
    assert "a DeiT III (layer scale" in message


def test_a_wider_deit_lists_its_shapes_grouped_by_block(tmp_path):
    state_dict = state_dict_numpy(randomize(TimmDeiT(**TEST_DIMS | dict(embed_dim=64, num_heads=4)), seed=6))
    message = mismatch(state_dict, tmp_path)
    assert "blocks.{0-1}.attn.qkv.weight: expected [96, 32], got [192, 64]" in message
    assert "the checkpoint looks like a DeiT with embed_dim=64, patch_size=8, depth=2, num_classes=10" in message


def test_a_vim_checkpoint_is_not_a_deit(tmp_path):
    message = mismatch(random_official_state_dict(get_config("vim_test"), 0), tmp_path)
    assert "it has 'layers.{i}.mixer.*' entries: it is a Vim checkpoint, not a DeiT one" in message


def test_another_layernorm_eps_has_no_official_layout(tmp_path):
    with pytest.raises(ValueError, match="only DeiTs with timm's LayerNorm eps 1e-06"):
        export_official(vim_jax.create_model("deit_test", norm_eps=1e-5), tmp_path / "eps.pth")
