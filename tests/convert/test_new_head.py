"""Fine-tuning to another number of classes: `create_model(name, checkpoint=..., num_classes=N)`
keeps every backbone weight of the checkpoint and starts a new classifier (none for
`num_classes=0`), from official `.pth` files and from our orbax checkpoints alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

import vim_jax
from tests.convert.checkpoint_files import abstract_vim, write_training_checkpoint
from tests.official_torch import random_official_state_dict
from vim_jax import cli
from vim_jax.convert import CheckpointMismatchError, checkpoint_num_classes, load_into
from vim_jax.registry import get_config


def flat_params(model) -> dict:
    return traverse_util.flatten_dict(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same 10-class vim_test weights as an official training dict and as `vim-jax convert` output."""
    directory = tmp_path_factory.mktemp("ckpt")
    cfg = get_config("vim_test")
    pth = write_training_checkpoint(directory / "vim_test.pth", random_official_state_dict(cfg, seed=21), cfg)
    assert cli.main(["convert", "--model", "vim_test", str(pth), str(directory / "orbax")]) == 0
    return {"pth": pth, "orbax": directory / "orbax"}


@pytest.mark.parametrize("kind", ["pth", "orbax"])
def test_other_num_classes_gets_a_fresh_head(checkpoints, kind):
    path = str(checkpoints[kind])
    assert checkpoint_num_classes(path) == 10
    source = flat_params(vim_jax.create_model("vim_test", checkpoint=path))
    model = vim_jax.create_model("vim_test", checkpoint=path, num_classes=3, seed=4)
    got = flat_params(model)
    fresh = flat_params(vim_jax.create_model("vim_test", num_classes=3, seed=4))
    assert set(got) == set(fresh)
    for key, value in got.items():
        if key[0] == "head":  # the new head is the model's own initialisation, not the checkpoint's
            assert value.shape[-1] == 3
            np.testing.assert_array_equal(value, fresh[key], err_msg=str(key))
        else:
            np.testing.assert_array_equal(value, source[key], err_msg=str(key))
    model.eval()
    assert model(jnp.ones((2, 32, 32, 3))).shape == (2, 3)


@pytest.mark.parametrize("kind", ["pth", "orbax"])
def test_num_classes_zero_gives_the_checkpoints_features(checkpoints, kind):
    path = str(checkpoints[kind])
    full = vim_jax.create_model("vim_test", checkpoint=path)
    features = vim_jax.create_model("vim_test", checkpoint=path, num_classes=0)
    assert not hasattr(features, "head")
    full.eval(), features.eval()
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 3)), jnp.float32)
    pooled = features(images)  # no head: the pooled class-token features
    np.testing.assert_allclose(pooled, full.forward_head(full.forward_features(images), pre_logits=True), rtol=1e-6)
    assert pooled.shape == (2, 32)


def test_same_num_classes_asked_for_loads_the_checkpoints_head(checkpoints):
    path = str(checkpoints["pth"])
    np.testing.assert_array_equal(flat_params(vim_jax.create_model("vim_test", checkpoint=path, num_classes=10))[("head", "kernel")],
                                  flat_params(vim_jax.create_model("vim_test", checkpoint=path))[("head", "kernel")])


@pytest.mark.parametrize("kind", ["pth", "orbax"])
def test_head_mismatch_without_asking_says_how_to_start_a_new_head(checkpoints, kind):
    abstract = abstract_vim(get_config("vim_test", num_classes=7))
    with pytest.raises(CheckpointMismatchError, match="only the classifier differs: .* pass num_classes=N"):
        load_into(abstract, checkpoints[kind])


def test_new_head_needs_a_built_head(checkpoints):
    with pytest.raises(ValueError, match="head is abstract"):
        load_into(abstract_vim(get_config("vim_test", num_classes=7)), checkpoints["pth"], new_head=True)
