"""Config files with an argument, and typed `--config.a.b=value` overrides on the command line."""

from __future__ import annotations

import math

import pytest

from tests.train.helpers import FASHION_MNIST, REPO, SMOKE
from vim_jax import cli
from vim_jax.train.config_file import apply_overrides, config_from_args, load_config, split_overrides


def test_overrides_are_typed_like_the_values_they_replace():
    config = load_config(SMOKE)
    apply_overrides(config, [("optim.base_lr", "1e-3"), ("global_batch_size", "128"), ("dataset.flip", "false"),
                             ("init_from", "/ckpt/dir"), ("num_train_steps", "none"), ("mesh.fsdp", "2"),
                             ("optim.grad_clip_norm", "1.0"), ("model.dtype", "bfloat16"),
                             ("optim.min_lr", "nan")])
    assert config.optim.base_lr == 1e-3 and isinstance(config.optim.base_lr, float)
    assert config.global_batch_size == 128 and config.dataset.flip is False
    assert config.init_from == "/ckpt/dir" and config.num_train_steps is None
    assert config.mesh.fsdp == 2 and config.optim.grad_clip_norm == 1.0 and config.model.dtype == "bfloat16"
    assert math.isnan(config.optim.min_lr)


def test_bad_overrides_name_the_field():
    config = load_config(SMOKE)
    with pytest.raises(KeyError, match="did you mean global_batch_size"):
        apply_overrides(config, [("global_batchsize", "8")])
    with pytest.raises(KeyError, match="optim.base_lrr"):
        apply_overrides(config, [("optim.base_lrr", "1")])
    with pytest.raises(ValueError, match="global_batch_size=eight"):
        apply_overrides(config, [("global_batch_size", "eight")])
    with pytest.raises(ValueError, match="boolean"):
        apply_overrides(config, [("dataset.flip", "maybe")])
    with pytest.raises(KeyError, match="model.scan_order"):
        apply_overrides(config, [("model.scan_order", "raster")])


def test_model_overrides_may_add_any_field_of_the_registered_models_config():
    config = load_config(SMOKE)
    assert "remat" not in config.model
    apply_overrides(config, [("model.remat", "true"), ("model.scan_backend", "associative"), ("model.dt_rank", "4")])
    assert config.model.remat is True and config.model.scan_backend == "associative" and config.model.dt_rank == 4
    # The model's name is applied first, whatever the order: DeiT's fields become valid.
    apply_overrides(config, [("model.num_heads", "2"), ("model_name", "deit_tiny")])
    assert config.model_name == "deit_tiny" and config.model.num_heads == 2


def test_config_file_argument_and_errors(tmp_path):
    assert load_config(SMOKE).num_train_steps == 40
    assert load_config(str(FASHION_MNIST)).num_train_steps is None
    for name in ("tiny", "small", "base"):
        config = load_config(f"{REPO}/experiments/configs/imagenet_vim.py:{name}")
        assert config.optim.base_lr * config.global_batch_size / 512 == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="one of"):
        load_config(f"{REPO}/experiments/configs/imagenet_vim.py")
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing.py"))


def test_train_command_line_collects_overrides_in_both_forms():
    args = cli.parse_args(["train", "--config", SMOKE, "--config.optim.base_lr=0.1", "--workdir", "/w",
                              "--config.mesh.fsdp", "4"])
    assert args.workdir == "/w" and args.config == SMOKE
    assert args.config_overrides == [("optim.base_lr", "0.1"), ("mesh.fsdp", "4")]
    config = config_from_args(args)
    assert config.optim.base_lr == 0.1 and config.mesh.fsdp == 4
    assert split_overrides(["--config.a=1=2", "x"]) == ([("a", "1=2")], ["x"])
