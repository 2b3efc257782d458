"""Official checkpoints through real `.pth` files: `create_model(name, checkpoint=path)` must give
the logits of the official forward pass (float64 PyTorch oracle).

The released-size cases are the slowest tests of the suite (one XLA compile of a 24-block model
each, plus the sequential oracle); batches are kept at 1-2 images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax
from tests.convert.checkpoint_files import abstract_vim, relative_error, write_bare_state_dict, write_training_checkpoint
from tests.official_torch import official_logits, random_official_state_dict
from vim_jax.convert import CheckpointMismatchError, load_into
from vim_jax.models.vim_keys import VIM_KEYS
from vim_jax.registry import get_config

TOLERANCE = 1e-4  # float32 on CPU against float64


@nnx.jit
def forward(model, images):
    return model(images)


@pytest.mark.slow
@pytest.mark.parametrize("name, batch", [("vim_tiny", 2), ("vim_tiny_stride8", 1), ("vim_small", 1)])
def test_released_model_from_training_dict(tmp_path, name, batch):
    cfg = get_config(name)
    sd = random_official_state_dict(cfg, seed=11)
    path = write_training_checkpoint(tmp_path / f"{name}.pth", sd, cfg,
                                     ema_state_dict=random_official_state_dict(cfg, seed=12))
    model = vim_jax.create_model(name, checkpoint=str(path))
    model.eval()
    images = np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32)
    assert relative_error(forward(model, jnp.asarray(images)), official_logits(sd, cfg, images)) < TOLERANCE


SMALL = dict(img_size=32, patch_size=8, stride=8, embed_dim=32, depth=2, d_state=8, num_classes=10)
MATRIX = [
    {},
    {"stride": 4},
    {"cls_token": "head"},
    {"cls_token": "head_tail"},
    {"cls_token": "none", "pool": "mean"},
    {"bimamba": "v1"},
    {"bimamba": "none", "bidirectional_layers": True},
    {"norm": "layernorm", "layer_scale_init": 0.5},
    {"divide_out": False, "dt_rank": 3, "expand": 3},
]


@pytest.mark.parametrize("switches", MATRIX, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "released")
def test_config_matrix_through_files(tmp_path, switches):
    """Every official key of each layout comes through the file bit for bit (the key table's
    forward parity is tests/models/test_parity.py's job)."""
    cfg = vim_jax.VimConfig(**{**SMALL, **switches})
    sd = random_official_state_dict(cfg, seed=len(switches))
    model = load_into(abstract_vim(cfg), write_training_checkpoint(tmp_path / "m.pth", sd, cfg))
    back = VIM_KEYS.ours_to_official(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))), cfg)
    assert back.keys() == sd.keys()
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_ema_weights_and_bare_state_dicts(tmp_path):
    cfg = get_config("vim_test")
    sd, ema = random_official_state_dict(cfg, seed=1), random_official_state_dict(cfg, seed=2)
    training = write_training_checkpoint(tmp_path / "t.pth", sd, cfg, ema_state_dict=ema)
    bare = write_bare_state_dict(tmp_path / "b.pth", sd)
    images = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32)
    for path, which, weights in [(training, "model", sd), (training, "model_ema", ema), (bare, "model", sd)]:
        model = vim_jax.create_model("vim_test", checkpoint=str(path)) if which == "model" else \
            load_into(abstract_vim(cfg), path, which=which)
        assert relative_error(forward(model, jnp.asarray(images)), official_logits(weights, cfg, images)) < TOLERANCE
    with pytest.raises(CheckpointMismatchError, match="bare state dict: it has no 'model_ema'"):
        load_into(abstract_vim(cfg), bare, which="model_ema")


def test_drop_path_models_get_concrete_rng_streams(tmp_path):
    """Fine-tuning a checkpoint with drop path: the RNG streams are seeded, training mode runs."""
    cfg = get_config("vim_test", drop_path_rate=0.5)
    path = write_bare_state_dict(tmp_path / "b.pth", random_official_state_dict(cfg, seed=4))
    model = vim_jax.create_model("vim_test", checkpoint=str(path), drop_path_rate=0.5, seed=3)
    model.train()
    images = jnp.ones((4, 32, 32, 3))
    first, second = forward(model, images), forward(model, images)
    assert np.all(np.isfinite(first)) and not np.allclose(first, second)  # fresh drop masks per call
