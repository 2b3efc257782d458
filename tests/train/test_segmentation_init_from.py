"""`--config.init_from` for a segmentor: a classifier trained by `vim-jax train` (middle class token,
3 x 3 patches) starts the backbone of `fmnist_scenes.py:cpu` (no class token, a position embedding
of 4 x 4 patches), from
its run directory and from its official-layout export alike; the neck and heads keep their fresh
initialisation; and the segmentation run trains from there end to end."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx, traverse_util

from tests.train.helpers import REPO, SMOKE, losses, train
from vim_jax.convert import export_official, load_into, read_metadata, restore_params
from vim_jax.convert.orbax_io import config_from_metadata
from vim_jax.data import fashion_mnist as fm
from vim_jax.models.segmentation import Segmentor
from vim_jax.models.vim import VisionMamba
from vim_jax.train import train_state
from vim_jax.train.config_file import apply_overrides, load_config, split_overrides
from vim_jax.train.mesh import make_mesh

pytestmark = [pytest.mark.skipif(not fm.fashion_mnist_dir().is_dir(), reason="apt-get install dataset-fashion-mnist"),
              pytest.mark.slow]  # a classifier's and a segmentor's training steps compiled: about two minutes

SCENES_CPU = f"{REPO / 'experiments' / 'configs' / 'fmnist_scenes.py'}:cpu"
# The smoke classifier with the blocks of the scenes segmentor's backbone (vim_test, 4 blocks, 64
# wide, 8 states, 8 px patches, RGB), on 28 px images: 3 x 3 patches and the middle class token.
CLASSIFIER = ("--config.model_name=vim_test", "--config.model.patch_size=8", "--config.model.stride=8",
              "--config.model.in_chans=3", "--config.model.embed_dim=64", "--config.model.depth=4",
              "--config.model.d_state=8", "--config.dataset.channels=3", "--config.num_train_steps=2",
              "--config.eval_every_steps=2", "--config.max_eval_batches=1", "--config.checkpoint_every_steps=2")
SCENES = ("--config.num_train_steps=3", "--config.log_every_steps=1", "--config.eval_every_steps=3",
          "--config.checkpoint_every_steps=3", "--config.dataset.num_eval_scenes=8", "--config.eval_batch_size=8",
          "--config.optim.poly_warmup_steps=1")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A trained classifier's run directory and its official-layout export."""
    run = tmp_path_factory.mktemp("classifier")
    assert train(run, *CLASSIFIER, config=SMOKE) == 0
    cfg = config_from_metadata(read_metadata(run / "checkpoints"))
    assert (cfg.cls_token, cfg.grid_size, cfg.num_classes) == ("middle", (3, 3), 10)
    export_official(load_into(nnx.eval_shape(lambda: VisionMamba(cfg, rngs=nnx.Rngs(0))), run / "checkpoints"),
                    run / "exported.pth")
    return run


def flat(tree) -> dict:
    return {tuple(map(str, k)): np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree)).items()}


def started_from(init_from) -> tuple[dict, dict]:
    """(fresh, initialised) parameters of the scenes segmentor, as the trainer makes them."""
    config = load_config(SCENES_CPU)
    overrides, _ = split_overrides([*SCENES, f"--config.init_from={init_from}"])
    apply_overrides(config, overrides)
    setup = train_state.model_setup(config, make_mesh(config.mesh.to_dict()))
    fresh = train_state.init_state(config, setup)
    fresh_params = flat(fresh.params)
    return fresh_params, flat(train_state.load_pretrained(fresh, config, setup).params)


def test_the_backbone_is_the_classifiers_and_the_rest_is_fresh(classifier):
    weights = flat(restore_params(classifier / "checkpoints"))
    fresh, started = started_from(classifier / "checkpoints")
    _, from_export = started_from(classifier / "exported.pth")
    prefix = Segmentor.BACKBONE_PATH
    assert started.keys() == fresh.keys()
    for key, value in started.items():
        if key[:2] != prefix:  # neck, UperNet, auxiliary head: their own initialisation
            np.testing.assert_array_equal(value, fresh[key], err_msg=str(key))
        elif key[2:] != ("pos_embed",):
            np.testing.assert_array_equal(value, weights[key[2:]], err_msg=str(key))
        np.testing.assert_allclose(from_export[key], value, rtol=1e-6, atol=1e-7, err_msg=str(key))
    # 9 patch rows and the class token's at 9 // 2, the patch rows resized to 4 x 4 (bicubic).
    saved = weights[("pos_embed",)]
    assert saved.shape == (1, 10, 64)
    patches = np.concatenate([saved[:, :4], saved[:, 5:]], axis=1).reshape(1, 3, 3, 64)
    expected = torch.nn.functional.interpolate(torch.from_numpy(patches).permute(0, 3, 1, 2).double(), size=(4, 4),
                                               mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 16, 64)
    np.testing.assert_allclose(started[(*prefix, "pos_embed")], expected.numpy(), rtol=1e-5, atol=1e-7)


def test_a_segmentation_run_trains_from_the_classifier(classifier, tmp_path):
    assert train(tmp_path, *SCENES, f"--config.init_from={classifier / 'checkpoints'}", config=SCENES_CPU) == 0
    assert sorted(losses(tmp_path)) == [1, 2, 3] and np.isfinite(list(losses(tmp_path).values())).all()
    # The saved backbone is the classifier's moved by three Adam updates of at most ~lr (3e-3) each;
    # a fresh initialisation of these weights (uniform within +-1/8) would be ~0.1 away.
    weights = flat(restore_params(classifier / "checkpoints"))
    trained = flat(restore_params(tmp_path / "checkpoints"))
    key = ("blocks", "mixer", "in_proj")
    change = np.abs(trained[(*Segmentor.BACKBONE_PATH, *key)] - weights[key]).max()
    assert 0 < change < 2 * 3 * 3e-3
