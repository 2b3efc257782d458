"""Cross-entropy with an ignore label (mmseg's averaging and PyTorch's), the auxiliary weight,
layer-wise learning-rate decay and the poly schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vim_jax.train.optim import make_optimizer
from vim_jax.train.segmentation_loss import pixel_cross_entropy, segmentation_loss
from vim_jax.train.segmentation_optim import layer_decay_scales, poly_schedule, stacked_block_count


def logits_and_labels(b=2, h=5, w=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((b, h, w, k))
    labels = rng.integers(0, k, (b, h, w))
    labels[rng.random((b, h, w)) < 0.3] = 255
    return logits, labels


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_pixel_cross_entropy_against_a_float64_loop(avg_non_ignore):
    logits, labels = logits_and_labels()
    total, labelled = 0.0, 0
    for index in np.ndindex(labels.shape):
        if labels[index] != 255:
            z = logits[index]
            total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[labels[index]]
            labelled += 1
    expected = total / (labelled if avg_non_ignore else labels.size)
    got = pixel_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), avg_non_ignore=avg_non_ignore)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_labelled_pixel_mean_is_torch_cross_entropy():
    logits, labels = logits_and_labels(seed=1)
    expected = F.cross_entropy(torch.from_numpy(logits.transpose(0, 3, 1, 2)), torch.from_numpy(labels),
                               ignore_index=255)
    got = pixel_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), avg_non_ignore=True)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)


def test_masked_examples_are_left_out():
    logits, labels = logits_and_labels()
    got = pixel_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), mask=jnp.asarray([1, 0]))
    first = pixel_cross_entropy(jnp.asarray(logits[:1], jnp.float32), jnp.asarray(labels[:1]))
    np.testing.assert_allclose(float(got), float(first), rtol=1e-6)


def test_total_is_decode_plus_0_4_aux_at_label_resolution():
    logits, labels = logits_and_labels(h=16, w=16)
    low = jnp.asarray(logits[:, ::4, ::4], jnp.float32)
    aux = jnp.asarray(logits[:, ::8, ::8], jnp.float32)
    total, parts = segmentation_loss(low, aux, jnp.asarray(labels))
    up = jax.image.resize(low, (2, 16, 16, 4), "bilinear", antialias=False)
    np.testing.assert_allclose(float(parts["decode_loss"]), float(pixel_cross_entropy(up, jnp.asarray(labels))),
                               rtol=1e-6)
    np.testing.assert_allclose(float(total), float(parts["decode_loss"] + 0.4 * parts["aux_loss"]), rtol=1e-6)
    no_aux, _ = segmentation_loss(low, None, jnp.asarray(labels))
    np.testing.assert_allclose(float(no_aux), float(parts["decode_loss"]), rtol=1e-6)


def test_mismatched_shapes_are_explained():
    with pytest.raises(ValueError, match="share"):
        pixel_cross_entropy(jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 4, 5), jnp.int32))


def params_like_a_segmentor(depth=3):
    return {"backbone": {"backbone": {
        "patch_embed": {"kernel": jnp.ones((2, 2, 3, 4)), "bias": jnp.ones((4,))},
        "pos_embed": jnp.ones((1, 5, 4)),
        "blocks": {"mixer": {"in_proj": jnp.ones((depth, 4, 8))}, "norm": {"scale": jnp.ones((depth, 4))}},
        "norm_f": {"scale": jnp.ones((4,))}}},
        "decode_head": {"classifier": {"kernel": jnp.ones((1, 1, 4, 2))}}}


def test_per_block_layer_decay_is_beits_rule():
    scales = layer_decay_scales(params_like_a_segmentor(), num_layers=3, rate=0.5, rule="per_block")
    bb = scales["backbone"]["backbone"]
    assert bb["patch_embed"]["kernel"] == bb["pos_embed"] == 0.5 ** 4  # group 0 of 5
    np.testing.assert_allclose(bb["blocks"]["mixer"]["in_proj"][:, 0, 0], [0.5 ** 3, 0.5 ** 2, 0.5])
    assert bb["blocks"]["norm"]["scale"].shape == (3, 1)
    assert bb["norm_f"]["scale"] == scales["decode_head"]["classifier"]["kernel"] == 1.0


def test_official_layer_decay_leaves_vim_blocks_at_full_rate():
    scales = layer_decay_scales(params_like_a_segmentor(24), num_layers=24, rate=0.92, rule="official")
    bb = scales["backbone"]["backbone"]
    np.testing.assert_allclose(bb["pos_embed"], 0.92 ** 25)
    assert bb["blocks"]["mixer"]["in_proj"] == 1.0 and scales["decode_head"]["classifier"]["kernel"] == 1.0


def test_layer_decay_scales_the_whole_adamw_update():
    params = params_like_a_segmentor()
    optim = ml_collections.ConfigDict(dict(grad_clip_norm=None, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05))
    mask = jax.tree.map(lambda p: p.ndim > 1, params)
    scales = layer_decay_scales(params, num_layers=3, rate=0.5)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.1), params)
    plain = make_optimizer(optim, mask)
    decayed = make_optimizer(optim, mask, lr_scales=scales)
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_decayed, _ = decayed.update(grads, decayed.init(params), params)
    jax.tree.map(lambda a, b, s: np.testing.assert_allclose(np.asarray(b), np.asarray(a) * s, rtol=1e-6),
                 u_plain, u_decayed, scales)


def test_poly_schedule_is_mmcvs_with_linear_warmup():
    schedule = poly_schedule(1e-4, 1000, warmup_steps=100, warmup_ratio=1e-6)
    for step in (0, 50, 99, 100, 500, 1000):
        regular = 1e-4 * (1 - step / 1000)
        expected = regular * (1 - (1 - step / 100) * (1 - 1e-6)) if step < 100 else regular
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-12)
    assert float(schedule(2000)) == 0.0


def test_the_number_of_layers_is_read_off_the_stacked_blocks():
    assert stacked_block_count(params_like_a_segmentor(depth=5)) == 5
    with pytest.raises(ValueError, match="one stack of blocks"):
        stacked_block_count({"decode_head": {"classifier": {"kernel": jnp.ones((1, 1, 4, 2))}}})
