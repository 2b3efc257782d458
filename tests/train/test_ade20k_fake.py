"""`ade20k_upernet.py` on a generated fake ADE20K (the real TFDS builder from an archive in the
official layout): the recipe's pipeline feeds a few training steps of a tiny segmentor over the
150 classes and its sliding-window evaluation."""

from __future__ import annotations

import pytest

from tests.lazy_import import LazyModule, skip_module_without

skip_module_without("tensorflow_datasets")
pytestmark = pytest.mark.slow  # TFDS preparation and compiling a segmentor's steps

from tests.train.helpers import REPO, checkpoint_steps, losses  # noqa: E402
from vim_jax.train.config_file import load_config  # noqa: E402
from vim_jax.train.metrics import read_metrics  # noqa: E402
from vim_jax.train.train import train  # noqa: E402

fake_ade20k = LazyModule("vim_jax.data.fake_ade20k")  # imports TFDS
ADE20K = f"{REPO / 'experiments' / 'configs' / 'ade20k_upernet.py'}:tiny"


def test_ade20k_recipe_trains_and_evaluates_on_a_fake_archive(tmp_path):
    fake_ade20k.write_fake_ade20k(tmp_path / "manual", fake_ade20k.FakeAde20kSpec(num_train=6, num_val=3, seed=2))
    config = load_config(ADE20K)
    assert config.optim.layer_decay == 0.92 and config.optim.schedule == "poly"
    # The recipe at a tiny scale: the test segmentor over ADE20K's 150 classes, 32 px crops.
    config.model_name = "upernet_vim_test"
    config.model = type(config.model)({"num_classes": 150, "dtype": "float32"})
    config.dataset.update(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"), scale=(128, 32),
                          crop_size=(32, 32), eval_pad_size=(128, 128), num_workers=0)
    config.update(global_batch_size=2, eval_batch_size=3, num_train_steps=3, eval_every_steps=3,
                  checkpoint_every_steps=3, log_every_steps=1, progress_bar=False)
    result = train(config, tmp_path / "run")
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3]
    assert result["count"] == 3 and 0 <= result["miou"] <= 1
    assert read_metrics(tmp_path / "run")[-1]["eval/pixel_accuracy"] == result["pixel_accuracy"]
    assert checkpoint_steps(tmp_path / "run") == [3]
