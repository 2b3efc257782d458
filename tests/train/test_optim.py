"""Weight-decay exclusions and the learning-rate schedule of the official recipe."""

from __future__ import annotations

import math

import ml_collections
import numpy as np
import pytest
from flax import nnx, traverse_util

import vim_jax
from vim_jax.models.vim_keys import official_rules
from vim_jax.train import optim
from vim_jax.train.defaults import default_config
from vim_jax.train.mesh import logical_axes_of


def _mask(model_name: str, decay_A_log: bool, **overrides) -> tuple[dict, object]:
    model = nnx.eval_shape(lambda: vim_jax.create_model(model_name, **overrides))
    params = nnx.state(model, nnx.Param)
    mask = optim.weight_decay_mask(nnx.to_pure_dict(params), logical_axes_of(params), decay_A_log=decay_A_log)
    return mask, model.cfg


@pytest.mark.parametrize("bimamba", ["v2", "v1"])
@pytest.mark.parametrize("decay_A_log", [True, False])
def test_decay_mask_is_timm_rule_on_the_official_layout(bimamba, decay_A_log):
    """Every official tensor: decayed iff it is >= 2-D there and not pos_embed / cls_token (timm's
    param_groups_weight_decay with Vim's no_weight_decay list); A_log / A_b_log per the switch."""
    mask, cfg = _mask("vim_test", decay_A_log, bimamba=bimamba)
    checked = set()
    for rule in official_rules(cfg):
        names = tuple(p for p in rule.path if isinstance(p, str))
        name = rule.official.rsplit(".", 1)[-1]
        if name in ("A_log", "A_b_log"):
            expected = decay_A_log
        else:
            expected = len(rule.official_shape) >= 2 and name not in ("pos_embed", "cls_token")
        assert mask_at(mask, names) is expected, rule.official
        checked.add(names)
    assert checked == set(traverse_util.flatten_dict(mask))  # every parameter has an official tensor


def mask_at(mask: dict, names: tuple[str, ...]) -> bool:
    for name in names:
        mask = mask[name]
    return mask


def test_decay_mask_of_a_released_model_lists_exactly_the_excluded_tensors():
    mask, _ = _mask("vim_small", decay_A_log=True)
    excluded = {"/".join(k) for k, v in traverse_util.flatten_dict(mask).items() if not v}
    assert excluded == {"blocks/mixer/D", "blocks/mixer/conv_bias", "blocks/mixer/dt_proj_bias", "blocks/norm/scale",
                        "cls_token", "pos_embed", "head/bias", "norm_f/scale", "patch_embed/bias"}


def _optim(**changes) -> ml_collections.ConfigDict:
    config = default_config().optim
    config.update(changes)
    return config


def test_official_schedule_per_epoch_with_upstreams_one_epoch_lag():
    """Vim-Ti: base 5e-4 at batch 1024 -> peak 1e-3; warm-up from 1e-6 over 5 epochs, cosine
    over 300 epochs to 1e-5; epoch e trains at the value timm computes for max(e - 1, 0)."""
    schedule = optim.learning_rate_schedule(_optim(), global_batch_size=1024, steps_per_epoch=10)
    peak = 1e-3

    def timm(epoch):
        if epoch < 5:
            return 1e-6 + epoch * (peak - 1e-6) / 5
        return 1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * epoch / 300))

    for step, epoch in [(0, 0), (9, 0), (10, 0), (19, 0), (20, 1), (35, 2), (60, 5), (61, 5), (1500, 149), (2999, 298)]:
        np.testing.assert_allclose(float(schedule(step)), timm(epoch), rtol=1e-5, err_msg=f"step {step}")
    assert float(schedule(10 ** 6)) == pytest.approx(1e-5)


def test_per_step_schedule_and_finetune_recipe_is_constant():
    smooth = optim.learning_rate_schedule(_optim(per_step=True, upstream_epoch_lag=False), 512, steps_per_epoch=4)
    np.testing.assert_allclose(float(smooth(2)), 1e-6 + 0.5 * (5e-4 - 1e-6) / 5, rtol=1e-5)
    finetune = optim.learning_rate_schedule(_optim(base_lr=5e-6, warmup_lr=1e-5, min_lr=1e-5, schedule_epochs=30),
                                            1024, steps_per_epoch=3)
    np.testing.assert_allclose([float(finetune(s)) for s in range(0, 90, 7)], 1e-5, rtol=1e-6)


def test_poly_schedule_is_chosen_by_the_config_over_the_runs_steps():
    from vim_jax.train.segmentation_optim import poly_schedule

    config = _optim(schedule="poly", base_lr=1e-4, scale_lr_by_batch=False, min_lr=0.0, poly_warmup_steps=10)
    schedule = optim.learning_rate_schedule(config, 16, steps_per_epoch=7, total_steps=100)
    expected = poly_schedule(1e-4, 100, warmup_steps=10, warmup_ratio=1e-6)
    for step in (0, 5, 10, 50, 100):
        assert float(schedule(step)) == float(expected(step))
    with pytest.raises(ValueError, match="total number of steps"):
        optim.learning_rate_schedule(config, 16, steps_per_epoch=7)
    with pytest.raises(ValueError, match="expected one of"):
        optim.learning_rate_schedule(_optim(schedule="step"), 16, steps_per_epoch=7)
