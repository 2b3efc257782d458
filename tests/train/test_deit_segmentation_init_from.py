"""`--config.init_from` with an official DeiT-Ti `.pth` (timm's layout) starts the DeiT segmentor of
`fmnist_scenes.py:512,deit` (here at 64 px crops): the trainer's initial state has the classifier's
blocks in its backbone, the position embedding at the crop's grid, and fresh neck and heads."""

from __future__ import annotations

import jax
import numpy as np
from flax import traverse_util

from tests.convert.checkpoint_files import write_bare_state_dict
from tests.timm_deit_torch import TimmDeiT, randomize, state_dict_numpy
from tests.train.helpers import REPO
from vim_jax.models.segmentation import Segmentor
from vim_jax.train import train_state
from vim_jax.train.config_file import apply_overrides, load_config, split_overrides
from vim_jax.train.mesh import make_mesh


def flat(tree) -> dict:
    return {tuple(map(str, k)): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def test_the_deit_segmentor_starts_from_an_official_deit_tiny_file(tmp_path):
    state_dict = state_dict_numpy(randomize(TimmDeiT(), seed=9))
    path = write_bare_state_dict(tmp_path / "deit_tiny_patch16_224.pth", state_dict)
    config = load_config(f"{REPO / 'experiments' / 'configs' / 'fmnist_scenes.py'}:512,deit")
    overrides, _ = split_overrides([f"--config.init_from={path}", "--config.model.crop_size=64",
                                    "--config.model.slide_stride=48",
                                    "--config.model.backbone_overrides=(('num_classes', 0), ('img_size', 64))"])
    apply_overrides(config, overrides)
    setup = train_state.model_setup(config, make_mesh(config.mesh.to_dict()))
    fresh = train_state.init_state(config, setup)
    fresh_params, started = flat(fresh.params), flat(train_state.load_pretrained(fresh, config, setup).params)
    prefix = Segmentor.BACKBONE_PATH
    assert started.keys() == fresh_params.keys()
    for key, value in started.items():
        if key[:2] != prefix:  # neck, UperNet, auxiliary head keep their own initialisation
            np.testing.assert_array_equal(value, fresh_params[key], err_msg=str(key))
    backbone = {key[2:]: value for key, value in started.items() if key[:2] == prefix}
    np.testing.assert_array_equal(backbone[("blocks", "attn", "qkv_kernel")][3],
                                  state_dict["blocks.3.attn.qkv.weight"].T.reshape(192, 3, 3, 64))
    np.testing.assert_array_equal(backbone[("cls_token",)], state_dict["cls_token"])
    # The class row and the 14 x 14 patch rows resized to the 4 x 4 grid of a 64 px crop.
    assert backbone[("pos_embed",)].shape == (1, 17, 192)
    np.testing.assert_array_equal(backbone[("pos_embed",)][:, 0], state_dict["pos_embed"][:, 0])
