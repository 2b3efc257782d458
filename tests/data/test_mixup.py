"""Mixup / CutMix / label smoothing against timm's semantics."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vim_jax.data.mixup import MixupConfig, box_mask, mix_targets, mixup_cutmix, sample_mix_params, smooth_one_hot

C = 10
MIX = jax.jit(mixup_cutmix, static_argnames=("config", "num_groups"))


def _batch(batch=8, height=12, width=10):
    # Example i is the constant image i: every output pixel says which inputs it came from.
    images = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.float32)[:, None, None, None], (batch, height, width, 3))
    return images, jnp.arange(batch) % C


def test_label_smoothing_values():
    targets = smooth_one_hot(jnp.array([3, 0]), C, 0.1)
    np.testing.assert_allclose(targets[0, 3], 0.9 + 0.01, rtol=1e-6)
    np.testing.assert_allclose(targets[0, 0], 0.01, rtol=1e-6)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    no_mix = MixupConfig(prob=0.0, num_classes=C)
    images, labels = _batch()
    out, soft = MIX(jax.random.key(0), images, labels, no_mix)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_allclose(soft, smooth_one_hot(labels, C, 0.1), rtol=1e-6)


def test_targets_pair_with_the_flipped_batch():
    targets = mix_targets(jnp.array([0, 1, 2, 3]), 0.7, 4, 0.0)
    np.testing.assert_allclose(targets[0], [0.7, 0, 0, 0.3], atol=1e-6)
    np.testing.assert_allclose(targets[1], [0, 0.7, 0.3, 0], atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_mixup_blends_with_the_lambda_of_the_targets(seed):
    config = MixupConfig(cutmix_alpha=0.0, label_smoothing=0.0, num_classes=C)
    images, labels = _batch()
    out, targets = MIX(jax.random.key(seed), images, labels, config)
    lam = float(targets[0, 0])  # example 0 (label 0) paired with example 7 (label 7)
    assert 0 <= lam <= 1 and abs(float(targets[0, 7]) - (1 - lam)) < 1e-6
    np.testing.assert_allclose(out[0], lam * 0 + (1 - lam) * 7, rtol=1e-5)
    np.testing.assert_allclose(out[2], lam * 2 + (1 - lam) * 5, rtol=1e-5)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_cutmix_pastes_a_box_and_lambda_matches_its_area(seed):
    config = MixupConfig(mixup_alpha=0.0, label_smoothing=0.1, num_classes=C)
    images, labels = _batch(height=13, width=7)  # odd sizes: box clipping and rounding matter
    out, targets = MIX(jax.random.key(seed), images, labels, config)
    pasted = np.asarray(out[1, :, :, 0]) == 6  # example 1's pixels taken from example 6
    assert np.all((np.asarray(out[1, :, :, 0]) == 1) | pasted)
    rows, cols = np.nonzero(pasted)
    if len(rows):  # the pasted region is one rectangle
        assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    lam = 1 - pasted.mean()
    off = 0.1 / C
    np.testing.assert_allclose(targets[1, 1], lam * (1 - 0.1) + off, atol=1e-5)
    np.testing.assert_allclose(targets[1, 6], (1 - lam) * (1 - 0.1) + off, atol=1e-5)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-5)


@pytest.fixture(scope="module")
def default_draws():
    keys = jax.random.split(jax.random.key(0), 4000)
    return jax.jit(jax.vmap(lambda k: sample_mix_params(k, 224, 224, MixupConfig())))(keys)


def test_cutmix_box_follows_timm_rand_bbox(default_draws):
    cut = np.asarray(default_draws.use_cutmix)
    for i in np.nonzero(cut)[0][:40]:
        box = default_draws.box[i]
        yl, yh, xl, xh = (int(v) for v in box)
        assert 0 <= yl <= yh <= 224 and 0 <= xl <= xh <= 224
        mask = np.asarray(box_mask(box, 224, 224))
        np.testing.assert_allclose(float(default_draws.lam[i]), 1 - mask.mean(), atol=1e-6)
    # A box's sides are int(224 * sqrt(1 - lam)) before clipping: never larger.
    sides = np.asarray(default_draws.box[cut][:, [1, 3]] - default_draws.box[cut][:, [0, 2]])
    assert sides.max() <= 224 and (sides.min(axis=1) > 100).mean() > 0.2


def test_switch_probability_and_lambda_distributions(default_draws):
    cut = np.asarray(default_draws.use_cutmix)
    assert 0.46 < cut.mean() < 0.54
    lam_mixup = np.asarray(default_draws.lam)[~cut]
    assert abs(lam_mixup.mean() - 0.5) < 0.03  # Beta(0.8, 0.8): mean 0.5, variance 0.25 / 2.6
    assert abs(lam_mixup.var() - 0.25 / 2.6) < 0.01


def test_groups_mix_within_themselves_only():
    images, labels = _batch(batch=8)
    out, targets = MIX(jax.random.key(3), images, labels, MixupConfig(num_classes=C), num_groups=2)
    # Group 0 = examples 0..3 pairs 0<->3, 1<->2; group 1 = 4..7 pairs 4<->7, 5<->6.
    assert set(np.unique(np.asarray(out[0]))) <= {0.0, 3.0} or np.allclose(
        out[0], out[0, 0, 0, 0]) and 0 <= float(out[0, 0, 0, 0]) <= 3
    assert np.all(np.asarray(targets[:4, 4:]) < 0.02) and np.all(np.asarray(targets[4:, :4]) < 0.02)


def test_odd_group_size_is_refused():
    images, labels = _batch(batch=6)
    with pytest.raises(ValueError, match="even"):
        mixup_cutmix(jax.random.key(0), images, labels, MixupConfig(num_classes=C), num_groups=2)
