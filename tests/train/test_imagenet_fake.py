"""The ImageNet configs on a generated fake ImageNet (the real TFDS builder and tf.data pipeline):
a few training steps, evaluation, checkpoint, `vim-jax eval`, and the fine-tune config's start
from that checkpoint (ours, and exported to an official .pth) at another stride (position
embedding resized) and class count (new head)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx, traverse_util

from tests.lazy_import import skip_module_without  # noqa: E402

skip_module_without("tensorflow_datasets")
pytestmark = pytest.mark.slow  # TFDS preparation, the tf.data pipeline and three trainer runs

import vim_jax  # noqa: E402
from tests.train.helpers import REPO, checkpoint_steps, losses, train  # noqa: E402
from vim_jax import cli  # noqa: E402
from vim_jax.convert import export_official, load_into, restore_params  # noqa: E402
from vim_jax.data.fake_imagenet import FakeImageNetSpec, write_fake_imagenet  # noqa: E402
from vim_jax.train import train_state  # noqa: E402
from vim_jax.train.config_file import apply_overrides, load_config, split_overrides  # noqa: E402
from vim_jax.train.mesh import make_mesh  # noqa: E402
from vim_jax.train.metrics import read_metrics  # noqa: E402

PRETRAIN = f"{REPO / 'experiments' / 'configs' / 'imagenet_vim.py'}:tiny"
FINETUNE = f"{REPO / 'experiments' / 'configs' / 'imagenet_vim_finetune.py'}:tiny"
# The test model (32x32 images, 8x8 patches: a 4x4 grid) in float32.
TINY = ("--config.model_name=vim_test", "--config.model.dtype=float32", "--config.dataset.image_size=32",
        "--config.global_batch_size=8", "--config.eval_batch_size=8", "--config.augment.mix_groups=2",
        "--config.log_every_steps=1")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Three steps of the Vim-Ti recipe on a fake ImageNet of 4 classes x 6 images, 10 for validation."""
    root = tmp_path_factory.mktemp("imagenet")
    summary = write_fake_imagenet(root / "manual", FakeImageNetSpec(num_classes=4, train_per_class=6, num_val=10))
    data = (f"--config.dataset.data_dir={root / 'tfds'}", f"--config.dataset.manual_dir={root / 'manual'}")
    run = root / "run"
    assert train(run, *TINY, *data, "--config.num_train_steps=3", "--config.checkpoint_every_steps=3",
                 config=PRETRAIN) == 0
    return run, data, summary


def test_imagenet_recipe_trains_evaluates_and_checkpoints(pretrained):
    run, data, summary = pretrained
    assert sorted(losses(run)) == [1, 2, 3]
    final = read_metrics(run)[-1]
    assert final["eval/count"] == summary["num_val"]
    assert checkpoint_steps(run) == [3]
    saved = json.loads((run / "checkpoints" / "3" / "config" / "metadata").read_text())
    assert saved["augment"]["mixup_alpha"] == 0.8 and saved["dataset"]["num_repeats"] == 3

    assert cli.main(["eval", "--config", PRETRAIN, "--workdir", str(run), *TINY, *data]) == 0
    result = json.loads((run / "eval_validation.json").read_text())
    assert result["count"] == summary["num_val"] and result["top1"] == final["eval/top1"]


def test_finetune_config_starts_from_the_checkpoint_at_stride_4_with_a_new_head(pretrained, tmp_path):
    run, data, _ = pretrained
    with pytest.raises(ValueError, match="init_from"):  # it refuses to start from random parameters
        train(tmp_path / "finetune", *TINY, *data, config=FINETUNE)
    # Stride 4 on the 32x32 model: a 7x7 grid, pos_embed 17 -> 50 rows; 10 classes instead of 1000.
    finetune = load_config(FINETUNE)
    overrides, _ = split_overrides([*TINY, *data, "--config.model.stride=4", "--config.model.num_classes=10",
                                    f"--config.init_from={run / 'checkpoints'}"])
    apply_overrides(finetune, overrides)
    setup = train_state.model_setup(finetune, make_mesh(finetune.mesh.to_dict()))
    fresh = train_state.init_state(finetune, setup)
    loaded = train_state.load_pretrained(fresh, finetune, setup)

    source = traverse_util.flatten_dict(restore_params(run / "checkpoints"))
    params = traverse_util.flatten_dict(jax.device_get(loaded.params))
    assert params[("pos_embed",)].shape == (1, 50, 32)
    # The class token's row moves from the middle of 16 patches (row 8) to the middle of 49 (row 24).
    np.testing.assert_array_equal(params[("pos_embed",)][0, 24], source[("pos_embed",)][0, 8])
    for key in params:
        if key[0] == "head":  # the freshly initialised 10-class head is kept
            np.testing.assert_array_equal(params[key], jax.device_get(fresh.params["head"][key[1]]))
        elif key != ("pos_embed",):
            np.testing.assert_array_equal(params[key], source[key], err_msg=str(key))
    for ema, param in zip(jax.tree.leaves(loaded.ema_params), jax.tree.leaves(loaded.params), strict=True):
        np.testing.assert_array_equal(ema, param)

    # The same checkpoint exported as an official .pth gives the same start.
    pytest.importorskip("torch")
    pretrained_model = nnx.eval_shape(lambda: vim_jax.create_model("vim_test", num_classes=1000))
    pth = export_official(load_into(pretrained_model, run / "checkpoints"), tmp_path / "pretrained.pth")
    finetune.init_from = str(pth)
    from_pth = traverse_util.flatten_dict(jax.device_get(train_state.load_pretrained(fresh, finetune, setup).params))
    for key in params:
        np.testing.assert_array_equal(from_pth[key], params[key], err_msg=str(key))
