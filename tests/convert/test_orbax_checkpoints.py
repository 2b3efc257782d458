"""vim_jax checkpoints: `vim-jax convert` directories (loadable without torch) and trainer
`CheckpointManager` directories (latest step, EMA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import vim_jax
from tests.convert.checkpoint_files import abstract_vim, random_params, write_training_checkpoint
from tests.official_torch import random_official_state_dict
from vim_jax import cli
from vim_jax.convert import CheckpointMismatchError, load_into, read_metadata, restore_params, save_params
from vim_jax.convert.orbax_io import model_metadata
from vim_jax.registry import get_config

REPO = Path(__file__).resolve().parents[2]


def params_of(model) -> dict:
    return jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def assert_same_params(a: dict, b: dict):
    flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    cfg = get_config("vim_test")
    return write_training_checkpoint(tmp_path_factory.mktemp("pth") / "vim_test.pth",
                                     random_official_state_dict(cfg, seed=5), cfg,
                                     ema_state_dict=random_official_state_dict(cfg, seed=6))


def test_convert_command_then_load_without_torch(tmp_path, official_file, capsys):
    out = tmp_path / "converted"
    assert cli.main(["convert", "--model", "vim_test", str(official_file), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "official keys" in printed and "parameters of vim_test" in printed and f"wrote {out}" in printed
    meta = read_metadata(out)
    assert meta["model"] == "vim_test" and meta["config"]["embed_dim"] == 32 and meta["which"] == "model"
    want = params_of(vim_jax.create_model("vim_test", checkpoint=str(official_file)))
    # A fresh interpreter that loads the directory must never import torch.
    script = (
        "import sys, json, numpy as np, jax\n"
        "from flax import nnx\n"
        "import vim_jax\n"
        f"model = vim_jax.create_model('vim_test', checkpoint={str(out)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "leaves = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))\n"
        f"np.savez({str(tmp_path / 'leaves.npz')!r}, *[np.asarray(x) for x in leaves])\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)
    got = np.load(tmp_path / "leaves.npz")
    for i, leaf in enumerate(jax.tree.leaves(want)):
        np.testing.assert_array_equal(got[f"arr_{i}"], leaf)


def test_convert_ema_at_another_image_size(tmp_path, official_file):
    out = tmp_path / "ema64"
    cli.main(["convert", "--model", "vim_test", "--which", "model_ema", "--img-size", "64", str(official_file), str(out)])
    assert read_metadata(out)["config"]["img_size"] == 64
    model = vim_jax.create_model("vim_test", checkpoint=str(out), img_size=64)
    ema = load_into(abstract_vim(get_config("vim_test", img_size=64)), official_file, which="model_ema")
    assert_same_params(params_of(model), params_of(ema))
    # Back to 32 px: the stored grid (from the metadata) is resized to the model's.
    assert vim_jax.create_model("vim_test", checkpoint=str(out)).pos_embed.get_value().shape == (1, 17, 32)


def test_convert_refuses_to_overwrite(tmp_path, official_file):
    out = tmp_path / "exists"
    out.mkdir()
    with pytest.raises(SystemExit, match="already exists"):
        cli.main(["convert", "--model", "vim_test", str(official_file), str(out)])


def test_trainer_checkpoint_manager_layout(tmp_path):
    """`<dir>/<step>/params` and `ema_params` written by a CheckpointManager: the latest step loads."""
    cfg = get_config("vim_test")
    params = {seed: random_params(cfg, seed) for seed in (1, 2, 3, 4)}
    directory = tmp_path / "checkpoints"
    with ocp.CheckpointManager(directory) as manager:
        for step in (1, 3):
            manager.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params[step]), ema_params=ocp.args.StandardSave(params[step + 1]),
                opt_state=ocp.args.StandardSave({"mu": np.zeros(3)})))
    assert_same_params(params_of(vim_jax.create_model("vim_test", checkpoint=str(directory))), params[3])
    assert_same_params(params_of(load_into(abstract_vim(cfg), directory, which="model_ema")), params[4])
    assert read_metadata(directory) is None


def test_save_and_restore_params_round_trip(tmp_path):
    cfg = get_config("vim_test")
    params = random_params(cfg, seed=9)
    directory = save_params(tmp_path / "p", params, model_metadata(cfg, "vim_test"), ema_params=params)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    assert_same_params(restore_params(directory, abstract), params)
    assert_same_params(restore_params(directory, item="ema_params"), params)


def test_directories_that_are_not_checkpoints(tmp_path):
    abstract = abstract_vim(get_config("vim_test"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a vim_jax checkpoint"):
        load_into(abstract, tmp_path / "empty")
    only_params = save_params(tmp_path / "p", random_params(get_config("vim_test"), 0),
                              model_metadata(get_config("vim_test"), "vim_test"))
    with pytest.raises(FileNotFoundError, match="has no 'ema_params' item"):
        load_into(abstract, only_params, which="model_ema")


def test_metadata_of_another_architecture_is_refused(tmp_path):
    """Same shapes, other meaning: a head-class-token checkpoint must not load into a middle one."""
    head = get_config("vim_test", cls_token="head")
    directory = save_params(tmp_path / "head", random_params(head, 0), model_metadata(head, "vim_test"))
    with pytest.raises(CheckpointMismatchError, match="cls_token: checkpoint 'head', model 'middle'"):
        vim_jax.create_model("vim_test", checkpoint=str(directory))


def test_orbax_params_of_another_size_list_the_mismatches(tmp_path):
    wide = random_params(get_config("vim_test", embed_dim=48), 0)
    with ocp.CheckpointManager(tmp_path / "wide") as manager:
        manager.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(wide)))
    with pytest.raises(CheckpointMismatchError) as err:
        vim_jax.create_model("vim_test", checkpoint=str(tmp_path / "wide"))
    message = str(err.value)
    assert f"{tmp_path / 'wide' / '7'} ('params') does not fit" in message
    assert "wrong shape (16)" in message and "blocks/mixer/in_proj: expected [2, 32, 128], got [2, 48, 192]" in message
    assert "missing" not in message and "unexpected" not in message


def test_deit_checkpoint_round_trip_and_family_mismatch(tmp_path):
    """A DeiT's orbax checkpoint (as the trainer writes it) reloads, also at another image size and
    attention implementation; loading it into a Vim, or a Vim's into a DeiT, is refused clearly."""
    deit = vim_jax.create_model("deit_test", seed=3)
    directory = save_params(tmp_path / "deit", params_of(deit), model_metadata(deit.cfg, "deit_test"))
    assert_same_params(params_of(vim_jax.create_model("deit_test", checkpoint=str(directory))), params_of(deit))
    resized = vim_jax.create_model("deit_test", checkpoint=str(directory), img_size=2 * deit.cfg.img_size,
                                   attention="xla")
    assert resized.pos_embed[...].shape[1] == resized.cfg.seq_len
    np.testing.assert_array_equal(np.asarray(resized.cls_token[...]), np.asarray(deit.cls_token[...]))
    with pytest.raises(CheckpointMismatchError, match="written for model 'deit_test', not a VimConfig model"):
        vim_jax.create_model("vim_test", checkpoint=str(directory))
    vim_cfg = get_config("vim_test")
    vim_dir = save_params(tmp_path / "vim", random_params(vim_cfg, 0), model_metadata(vim_cfg, "vim_test"))
    with pytest.raises(CheckpointMismatchError, match="written for model 'vim_test', not a DeiTConfig model"):
        vim_jax.create_model("deit_test", checkpoint=str(vim_dir))
