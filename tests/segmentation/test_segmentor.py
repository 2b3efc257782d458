"""The segmentor: presets, shapes at several sizes, BatchNorm modes, sliding-window inference."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vim_jax
from vim_jax.models.segmentation import slide_inference
from vim_jax.models.segmentation.sliding import window_starts


def images(batch, size, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, size, size, 3)), jnp.float32)


@pytest.fixture(scope="module")
def segmentor():
    model = vim_jax.create_model("upernet_vim_test")
    model.eval()
    return model


@pytest.fixture(scope="module")
def predict(segmentor):
    """The segmentor's jitted forward pass, one compile per input shape for the whole module."""
    forward = nnx.jit(lambda m, x: m(x))
    return lambda x: forward(segmentor, x)


def test_official_presets_are_the_official_configs():
    for name, dim, decode, backbone in (("upernet_vim_tiny", 192, 192, "vim_tiny"),
                                        ("upernet_vim_small", 384, 384, "vim_small")):
        cfg = vim_jax.get_config(name)
        bb = cfg.backbone_config
        assert (cfg.backbone, cfg.out_indices, cfg.num_classes, cfg.decode_channels, cfg.aux_channels) == \
            (backbone, (5, 11, 17, 23), 150, decode, 256)
        assert (cfg.pool_scales, cfg.dropout, cfg.aux_in_index, cfg.crop_size, cfg.slide_stride) == \
            ((1, 2, 3, 6), 0.1, 2, 512, 341)
        assert (bb.embed_dim, bb.depth, bb.img_size, bb.cls_token, bb.num_classes, bb.drop_path_rate) == \
            (dim, 24, 512, "none", 0, 0.1)
    assert not vim_jax.get_config("upernet_vim_tiny").backbone_config.residual_in_fp32
    small = vim_jax.get_config("upernet_vim_small").backbone_config
    assert small.rope and small.rope_residual and small.residual_in_fp32
    assert {"upernet_vim_tiny", "upernet_vim_small", "upernet_vim_test"} <= set(vim_jax.list_models("upernet_*"))


@pytest.mark.parametrize("size", [32, 48])
def test_logits_come_at_strides_4_and_16_and_at_the_image_size(segmentor, size):
    forward = nnx.jit(lambda m, x: (m.forward_train(x), m(x)))
    (logits, aux), full = forward(segmentor, images(2, size))
    assert logits.shape == (2, size // 4, size // 4, 11) and aux.shape == (2, size // 16, size // 16, 11)
    assert full.shape == (2, size, size, 11) and full.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(full)))


def test_batch_statistics_move_in_train_mode_only(segmentor):
    model = nnx.clone(segmentor)
    step = nnx.jit(lambda m, x: m.forward_train(x)[0])
    stats = lambda: np.asarray(model.decode_head.fpn_bottleneck.bn.mean[...]).copy()  # noqa: E731
    before = stats()
    model.eval()
    step(model, images(2, 32))
    np.testing.assert_array_equal(stats(), before)
    model.train()
    step(model, images(2, 32))
    assert not np.allclose(stats(), before)


def test_window_starts_are_mmsegs_grid():
    assert window_starts(512, 512, 341) == [0]
    assert window_starts(683, 512, 341) == [0, 171]
    assert window_starts(2048, 512, 341) == [0, 341, 682, 1023, 1364, 1536]
    assert window_starts(300, 512, 341) == [0]


def test_sliding_window_equals_the_direct_forward_when_one_crop_covers_the_image(segmentor, predict):
    x = images(2, 32)
    slid = nnx.jit(lambda m, x: slide_inference(m, x, 11, crop=32, stride=24))(segmentor, x)
    np.testing.assert_allclose(np.asarray(slid), np.asarray(predict(x)), rtol=1e-5, atol=1e-5)


def test_sliding_window_averages_the_crops_covering_each_pixel():
    """Each crop predicts the constant y * w + x of its corner (y, x), read from the image's pixel
    there: a pixel gets the mean of those of the crops over it."""
    h, w, crop, stride = 40, 56, 32, 12
    x = jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.float32).reshape(1, h, w, 1), (2, h, w, 3))
    boxes = [(y, xx) for y in window_starts(h, crop, stride) for xx in window_starts(w, crop, stride)]

    def predict(crops):
        return jnp.broadcast_to(crops[:, :1, :1, :1], (*crops.shape[:3], 1))

    got = np.asarray(slide_inference(predict, x, 1, crop=crop, stride=stride))
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for y, xx in boxes:
        total[y:y + crop, xx:xx + crop] += y * w + xx
        count[y:y + crop, xx:xx + crop] += 1
    assert count.min() >= 1 and count.max() > 1
    np.testing.assert_allclose(got[0, ..., 0], total / count, rtol=1e-6)
    np.testing.assert_allclose(got[1], got[0])


def test_sliding_window_keeps_pixels_in_place():
    x = images(1, 45)
    got = slide_inference(lambda c: c, x, 3, crop=32, stride=20)  # the "logits" are the pixels
    np.testing.assert_allclose(np.asarray(got), np.asarray(x), rtol=1e-6, atol=1e-6)


def test_images_smaller_than_the_crop_are_one_window_of_their_size():
    x = images(2, 32, seed=1)
    got = slide_inference(lambda c: c[..., :1] * 2.0, x, 1, crop=48, stride=32)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(x[..., :1] * 2.0))


def test_images_too_small_for_the_stride_32_map_are_explained(segmentor):
    with pytest.raises(ValueError, match="too small for the pyramid"):
        segmentor.forward_train(images(1, 16))


@pytest.mark.parametrize("change, message", [({"out_indices": (1, 2, 3)}, "four blocks"),
                                             ({"slide_stride": 40}, "slide_stride"),
                                             ({"num_classes": 0}, "num_classes")])
def test_bad_segmentor_configs_are_explained(change, message):
    with pytest.raises(ValueError, match=message):
        vim_jax.get_config("upernet_vim_test", **change)
