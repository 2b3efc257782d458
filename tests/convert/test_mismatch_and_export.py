"""Checkpoints that do not fit the model get one message listing everything wrong; exporting back to
an official state dict round-trips bit for bit."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import vim_jax
from tests.convert.checkpoint_files import (
    abstract_vim,
    random_params,
    torch_state_dict,
    write_bare_state_dict,
    write_training_checkpoint,
)
from tests.official_torch import random_official_state_dict
from vim_jax import cli
from vim_jax.convert import CheckpointMismatchError, export_official, fill_abstract, load_into
from vim_jax.models.vim_keys import VIM_KEYS
from vim_jax.registry import get_config


def mismatch_message(abstract, path, **kwargs) -> str:
    with pytest.raises(CheckpointMismatchError) as err:
        load_into(abstract, path, **kwargs)
    return str(err.value)


@pytest.fixture(scope="module")
def vim_small_file(tmp_path_factory):
    cfg = get_config("vim_small")
    return write_bare_state_dict(tmp_path_factory.mktemp("small") / "vim_small.pth", random_official_state_dict(cfg, 0))


def test_vim_small_weights_into_vim_tiny(vim_small_file):
    message = mismatch_message(abstract_vim(get_config("vim_tiny")), vim_small_file)
    assert message.startswith(f"checkpoint {vim_small_file} does not fit this model (embed_dim=192, depth=24")
    assert "wrong shape (414)" in message and "missing" not in message and "unexpected" not in message
    assert "patch_embed.proj.weight: expected [192, 3, 16, 16], got [384, 3, 16, 16]" in message
    assert "layers.{0-23}.mixer.in_proj.weight: expected [768, 192], got [1536, 384]" in message
    assert "looks like a Vim with embed_dim=384, patch_size=16, depth=24, num_classes=1000" in message


def test_deeper_checkpoint_lists_unexpected_layers(tmp_path):
    cfg = get_config("vim_test")
    path = write_bare_state_dict(tmp_path / "deep.pth", random_official_state_dict(cfg.replace(depth=5), 0))
    message = mismatch_message(abstract_vim(cfg), path)
    assert "unexpected (" in message and "layers.{2-4}.mixer.in_proj.weight" in message
    assert "looks like a Vim with embed_dim=32, patch_size=8, depth=5" in message


def test_deit_state_dict_is_not_a_vim(tmp_path):
    d, depth = 192, 2  # timm's deit_tiny_patch16_224 names and shapes (two blocks)
    sd = {"cls_token": np.zeros((1, 1, d)), "pos_embed": np.zeros((1, 197, d)),
          "patch_embed.proj.weight": np.zeros((d, 3, 16, 16)), "patch_embed.proj.bias": np.zeros(d),
          "norm.weight": np.ones(d), "norm.bias": np.zeros(d), "head.weight": np.zeros((1000, d)),
          "head.bias": np.zeros(1000)}
    for i in range(depth):
        sd |= {f"blocks.{i}.norm1.weight": np.ones(d), f"blocks.{i}.attn.qkv.weight": np.zeros((3 * d, d)),
               f"blocks.{i}.attn.proj.weight": np.zeros((d, d)), f"blocks.{i}.mlp.fc1.weight": np.zeros((4 * d, d))}
    path = write_training_checkpoint(tmp_path / "deit.pth", {k: v.astype(np.float32) for k, v in sd.items()},
                                     get_config("vim_tiny"))
    message = mismatch_message(abstract_vim(get_config("vim_tiny")), path)
    assert f"checkpoint {path} (entry 'model') does not fit" in message
    assert "missing (409): norm_f.weight, layers.{0-23}.norm.weight, layers.{0-23}.mixer.in_proj.weight" in message
    assert ("unexpected (10): norm.weight, norm.bias, blocks.{0-1}.norm1.weight, blocks.{0-1}.attn.qkv.weight, "
            "blocks.{0-1}.attn.proj.weight, blocks.{0-1}.mlp.fc1.weight") in message
    assert ("it has no 'layers.{i}.mixer.*' entries: it is not a Vim checkpoint (its 'blocks.{i}.attn.*' entries "
            "are a DeiT's: load it into a deit_* model)") in message


def test_wrong_entries_of_a_training_dict(tmp_path):
    cfg = get_config("vim_test")
    path = tmp_path / "no_ema.pth"
    torch.save({"model": torch_state_dict(random_official_state_dict(cfg, 0)), "epoch": 3}, path)
    message = mismatch_message(abstract_vim(cfg), path, which="model_ema")
    assert "training dict without a 'model_ema' state dict (its entries: model, epoch)" in message
    torch.save({"weights": [1, 2], "epoch": 3}, tmp_path / "odd.pth")
    message = mismatch_message(abstract_vim(cfg), tmp_path / "odd.pth")
    assert "neither a training dict with a 'model' entry nor a state dict of tensors (its entries: weights, epoch)" \
        in message
    with pytest.raises(ValueError, match="which must be one of"):
        load_into(abstract_vim(cfg), path, which="ema")


def test_convert_command_reports_mismatch_in_one_line_of_error(tmp_path, vim_small_file):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "--model", "vim_tiny", str(vim_small_file), str(tmp_path / "out")])
    assert str(exit_info.value.code).startswith("vim-jax convert: error: checkpoint ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("switches", [{}, {"cls_token": "head_tail", "norm": "layernorm"}, {"bimamba": "v1"}])
def test_export_round_trips_bitwise(tmp_path, switches):
    cfg = get_config("vim_test", **switches)
    params = random_params(cfg, seed=3)
    path = export_official(fill_abstract(abstract_vim(cfg), params), tmp_path / "export.pth")
    written = torch.load(path, weights_only=True)["model"]
    want = VIM_KEYS.ours_to_official(params, cfg)
    assert list(written) == list(want)
    for key, value in want.items():
        np.testing.assert_array_equal(written[key].numpy(), value, err_msg=key)
    back = jax.device_get(nnx.to_pure_dict(nnx.state(load_into(abstract_vim(cfg), path), nnx.Param)))
    for (p, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(back)[0],
                              jax.tree_util.tree_flatten_with_path(params)[0]):
        assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(p)


def test_convert_command_to_pth(tmp_path):
    cfg = get_config("vim_test")
    source = write_bare_state_dict(tmp_path / "src.pth", random_official_state_dict(cfg, 8))
    converted, exported = tmp_path / "converted", tmp_path / "exported.pth"
    cli.main(["convert", "--model", "vim_test", str(source), str(converted)])
    cli.main(["convert", "--model", "vim_test", "--to-pth", str(converted), str(exported)])
    original = torch.load(source, weights_only=True)
    round_trip = torch.load(exported, weights_only=True)["model"]
    assert sorted(round_trip) == sorted(original)
    assert all(torch.equal(round_trip[k], original[k]) for k in original)
    assert vim_jax.create_model("vim_test", checkpoint=str(exported)).cfg == cfg
