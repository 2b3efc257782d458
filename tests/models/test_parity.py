"""Every architecture switch against the float64 PyTorch oracle of the official forward pass.

The full-size released models are checked through real .pth files in tests/convert."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax
from tests.official_torch import official_logits, random_official_state_dict
from vim_jax.models.vim_keys import VIM_KEYS


def load_official(model, state_dict):
    cfg = model.cfg
    shapes = jax.tree.map(lambda v: v.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    nnx.update(model, VIM_KEYS.official_to_ours(state_dict, cfg, shapes))
    return model


def relative_error(got, ref):
    return float(np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref))


SWITCHES = [
    {},
    {"bimamba": "v1"},
    {"bimamba": "none"},
    {"bimamba": "none", "bidirectional_layers": True},
    {"bidirectional_layers": True},
    {"bimamba": "v1", "bidirectional_layers": True},
    {"cls_token": "head"},
    {"cls_token": "head_tail"},
    {"cls_token": "none", "pool": "mean"},
    {"cls_token": "none", "pool": "max"},
    {"cls_token": "none", "pool": "last"},
    {"cls_token": "none", "pool": "mean", "abs_pos_embed": False},
    {"norm": "layernorm"},
    {"divide_out": False},
    {"layer_scale_init": 0.1},
    {"stride": 4},
    {"cls_token": "head", "rope": True},
    {"cls_token": "head", "rope": True, "rope_residual": True},
    {"cls_token": "head", "rope": True, "rope_residual": True, "bimamba": "none", "bidirectional_layers": True},
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "released")
def test_switch_matches_official(switches):
    model = vim_jax.create_model("vim_test", depth=4, **switches)
    sd = random_official_state_dict(model.cfg, seed=len(switches))
    load_official(model, sd)
    images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ref = official_logits(sd, model.cfg, images)
    assert relative_error(model(jnp.asarray(images)), ref) < 1e-5


@pytest.mark.parametrize("switches", [{}, {"bimamba": "v1"}, {"cls_token": "head_tail", "norm": "layernorm"}])
def test_key_table_round_trips(switches):
    model = vim_jax.create_model("vim_test", **switches)
    sd = random_official_state_dict(model.cfg, seed=5)
    load_official(model, sd)
    back = VIM_KEYS.ours_to_official(nnx.to_pure_dict(nnx.state(model, nnx.Param)), model.cfg)
    assert set(back) == set(sd)
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
