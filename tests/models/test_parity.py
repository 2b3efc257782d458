"""Every architecture switch against the float64 PyTorch oracle of the official forward pass.

The full-size released models are checked through real .pth files in tests/convert."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.convert.checkpoint_files import abstract_vim
from tests.official_torch import official_logits, random_official_state_dict
from vim_jax.convert import fill_abstract
from vim_jax.models.vim_keys import VIM_KEYS
from vim_jax.registry import get_config


def official_model(state_dict, cfg):
    """The model with the official weights, built abstractly (initialising would only be overwritten,
    and compiling an initialiser for each configuration costs more than the forward pass)."""
    model = abstract_vim(cfg)
    shapes = jax.tree.map(lambda v: v.shape, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return fill_abstract(model, VIM_KEYS.official_to_ours(state_dict, cfg, shapes))


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
    cfg = get_config("vim_test", depth=4, **switches)
    sd = random_official_state_dict(cfg, seed=len(switches))
    model = official_model(sd, cfg)
    images = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ref = official_logits(sd, model.cfg, images)
    assert relative_error(model(jnp.asarray(images)), ref) < 1e-5


@pytest.mark.parametrize("switches", [{}, {"bimamba": "v1"}, {"cls_token": "head_tail", "norm": "layernorm"}])
def test_key_table_round_trips(switches):
    cfg = get_config("vim_test", **switches)
    sd = random_official_state_dict(cfg, seed=5)
    model = official_model(sd, cfg)
    back = VIM_KEYS.ours_to_official(nnx.to_pure_dict(nnx.state(model, nnx.Param)), model.cfg)
    assert set(back) == set(sd)
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
