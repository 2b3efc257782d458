"""The mmseg ADE20K pipeline ops: OpenCV/mmcv resize rules, crop retries, flip, photometric, pad."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vim_jax.data import seg_transforms as st


def reference_bilinear(image, height, width):
    """Per-pixel float64 loop of OpenCV's INTER_LINEAR (half-pixel centres, edge clamp)."""
    h_in, w_in = image.shape[:2]
    out = np.zeros((height, width, image.shape[2]))

    def taps(i, n_in, n_out):
        s = (i + 0.5) * n_in / n_out - 0.5
        s = min(max(s, 0.0), n_in - 1.0)
        low = int(np.floor(s))
        return low, min(low + 1, n_in - 1), s - low

    for y in range(height):
        y0, y1, fy = taps(y, h_in, height)
        for x in range(width):
            x0, x1, fx = taps(x, w_in, width)
            top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
            bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_keep_ratio_size_follows_mmcv():
    assert st.rescale_size(375, 500, (2048, 512)) == (512, 683)   # short edge bound
    assert st.rescale_size(512, 683, (2048, 512)) == (512, 683)
    assert st.rescale_size(200, 3000, (2048, 512)) == (137, 2048)  # long edge bound: 0.6827 * 200 + 0.5
    assert st.rescale_size(600, 400, (1024, 256)) == (384, 256)


def test_bilinear_resize_matches_the_opencv_rule():
    np.testing.assert_array_equal(st.resize_bilinear(np.array([[[0], [100]]], np.uint8), 1, 4)[0, :, 0],
                                  [0, 25, 75, 100])  # what cv2.resize gives
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
    for size in [(13, 5), (3, 4), (7, 9), (20, 17)]:
        got = st.resize_bilinear(image, *size)
        assert got.dtype == np.uint8 and got.shape == (*size, 3)
        assert np.abs(got.astype(int) - reference_bilinear(image.astype(np.float64), *size)).max() <= 1


def test_nearest_resize_takes_the_floor_source_pixel():
    row = np.array([[0, 1, 2, 3]], np.uint8)
    np.testing.assert_array_equal(st.resize_nearest(row, 1, 2), [[0, 2]])
    np.testing.assert_array_equal(st.resize_nearest(row[:, :2], 1, 3), [[0, 0, 1]])
    mask = np.random.default_rng(1).integers(0, 5, (6, 8)).astype(np.uint8)
    up = st.resize_nearest(mask, 12, 16)
    np.testing.assert_array_equal(up[::2, ::2], mask)  # exact 2x: every label kept, no new values


def test_ratio_range_scales_the_target_uniformly():
    ratios = []
    for seed in range(300):
        long_edge, short_edge = st.sample_scale(np.random.default_rng(seed), (2048, 512), (0.5, 2.0))
        assert 1024 <= long_edge <= 4096 and 256 <= short_edge <= 1024
        ratios.append(short_edge / 512)
    assert min(ratios) < 0.6 and max(ratios) > 1.9 and 1.1 < np.mean(ratios) < 1.4


def checkerboard(height, width):
    return ((np.arange(height)[:, None] + np.arange(width)[None, :]) % 2).astype(np.uint8)


def test_crop_keeps_the_first_window_when_it_is_mixed_enough():
    mask = checkerboard(40, 50)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    image_a, mask_a = st.random_crop(image, mask, np.random.default_rng(5), (16, 16), cat_max_ratio=0.75)
    image_b, mask_b = st.random_crop(image, mask, np.random.default_rng(5), (16, 16), cat_max_ratio=1.0)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert mask_a.shape == (16, 16) and image_a.shape == (16, 16, 3)


def test_crop_takes_the_eleventh_window_when_no_check_passes():
    mask = np.zeros((40, 50), np.uint8)  # one class everywhere: every check fails
    mask[:, 25:] = 255                   # ignored pixels do not count as a second class
    image = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3).astype(np.uint8)
    rng = np.random.default_rng(9)
    got, _ = st.random_crop(image, mask, rng, (16, 16), cat_max_ratio=0.75)
    draws = np.random.default_rng(9)
    boxes = [(int(draws.integers(0, 25)), int(draws.integers(0, 35))) for _ in range(11)]
    top, left = boxes[-1]
    np.testing.assert_array_equal(got, image[top:top + 16, left:left + 16])


def test_crop_retries_favour_windows_without_a_dominant_class():
    mask = np.zeros((64, 64), np.uint8)
    mask[:24, :24] = 1
    def mixed_share(ratio):
        ok = 0
        for seed in range(200):
            _, m = st.random_crop(mask[..., None].repeat(3, -1), mask, np.random.default_rng(seed), (32, 32), ratio)
            counts = np.bincount(m.ravel(), minlength=2)
            ok += counts.min() > 0 and counts.max() / counts.sum() < 0.75
        return ok / 200
    assert mixed_share(0.75) > 2 * mixed_share(1.0)


def test_crop_of_a_small_image_is_the_whole_image():
    image, mask = np.zeros((10, 12, 3), np.uint8), checkerboard(10, 12)
    got_image, got_mask = st.random_crop(image, mask, np.random.default_rng(0), (16, 16), 0.75)
    assert got_image.shape == (10, 12, 3) and got_mask.shape == (10, 12)


def test_flip_moves_image_and_mask_together():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    mask = np.arange(6, dtype=np.uint8).reshape(2, 3)
    flipped_image, flipped_mask = st.random_flip(image, mask, np.random.default_rng(0), prob=1.0)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, mask[:, ::-1])
    same_image, _ = st.random_flip(image, mask, np.random.default_rng(0), prob=0.0)
    np.testing.assert_array_equal(same_image, image)


def test_pad_fills_bottom_right_with_the_mean_colour_and_ignore():
    image, mask = np.full((3, 2, 3), 7, np.uint8), np.ones((3, 2), np.uint8)
    padded_image, padded_mask = st.pad_to(image, mask, (5, 4))
    assert padded_image.shape == (5, 4, 3) and padded_mask.shape == (5, 4)
    np.testing.assert_array_equal(padded_image[:3, :2], image)
    np.testing.assert_array_equal(padded_image[3:, :].reshape(-1, 3), [st.MEAN_COLOUR_UINT8] * 8)
    assert (padded_mask[:3, :2] == 1).all() and (padded_mask[3:] == 255).all() and (padded_mask[:, 2:] == 255).all()
    assert st.MEAN_COLOUR_UINT8 == (124, 116, 104)  # mmseg's mean (123.675, 116.28, 103.53), rounded
    with pytest.raises(ValueError, match="larger than the pad size"):
        st.pad_to(image, mask, (2, 2))


def test_hsv_conversion_uses_opencv_8bit_ranges_and_round_trips():
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [255, 255, 0], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(st.rgb_to_hsv(colours)[0],
                                  [[0, 255, 255], [60, 255, 255], [120, 255, 255], [0, 0, 128], [30, 255, 255],
                                   [0, 0, 0]])
    np.testing.assert_array_equal(st.hsv_to_rgb(st.rgb_to_hsv(colours)), colours)
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    error = np.abs(st.hsv_to_rgb(st.rgb_to_hsv(image)).astype(int) - image)
    # H is kept to 2 degrees: up to 1 degree off, i.e. 255 / 60 = 4.25 levels at full saturation.
    assert error.max() <= 5 and error.mean() < 0.8


def test_photometric_steps_follow_mmseg_arithmetic():
    image = np.array([[[10, 100, 250]]], np.uint8)
    np.testing.assert_array_equal(st.adjust_brightness(image, 10.7), [[[20, 110, 255]]])  # truncate, clip
    np.testing.assert_array_equal(st.adjust_contrast(image, 1.5), [[[15, 150, 255]]])
    np.testing.assert_array_equal(st.adjust_saturation(image, 0.0), [[[250, 250, 250]]])  # grey at V
    red = np.array([[[255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(st.adjust_hue(red, 60), [[[0, 255, 0]]])    # +120 degrees
    np.testing.assert_array_equal(st.adjust_hue(red, -60), [[[0, 0, 255]]])


def test_photometric_draws_cover_mmseg_ranges_and_odds():
    draws = [st.sample_photometric(np.random.default_rng(seed)) for seed in range(2000)]
    brightness = [d.brightness for d in draws if d.brightness is not None]
    hues = [d.hue for d in draws if d.hue is not None]
    contrasts = [d.contrast for d in draws if d.contrast is not None]
    saturations = [d.saturation for d in draws if d.saturation is not None]
    for values in (brightness, hues, contrasts, saturations):
        assert 0.45 < len(values) / len(draws) < 0.55
    assert -32 <= min(brightness) and max(brightness) <= 32 and max(brightness) > 30
    assert set(hues) == set(range(-18, 18))
    assert 0.5 <= min(contrasts) and max(contrasts) <= 1.5 and 0.5 <= min(saturations) and max(saturations) <= 1.5
    assert 0.45 < np.mean([d.contrast_first for d in draws]) < 0.55


def test_contrast_goes_before_or_after_the_colour_steps():
    image = np.random.default_rng(4).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    first = st.PhotometricParams(brightness=5.0, contrast_first=True, contrast=1.3, saturation=0.7, hue=9)
    last = dataclasses.replace(first, contrast_first=False)
    saturate_hue = lambda x: st.adjust_hue(st.adjust_saturation(x, 0.7), 9)  # noqa: E731
    bright = st.adjust_brightness(image, 5.0)
    np.testing.assert_array_equal(st.apply_photometric(image, first), saturate_hue(st.adjust_contrast(bright, 1.3)))
    np.testing.assert_array_equal(st.apply_photometric(image, last), st.adjust_contrast(saturate_hue(bright), 1.3))


def test_train_transform_outputs_a_padded_crop_deterministically():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 90, 3)).astype(np.uint8)
    mask = rng.integers(0, 5, (120, 90)).astype(np.uint8)
    config = st.SegTrainConfig(scale=(256, 64), crop_size=(64, 64))
    outputs = [st.train_transform(image, mask, st.example_rng(3, position), config) for position in range(20)]
    for out in outputs:
        assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (64, 64) and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= set(range(5)) | {255}
    again = st.train_transform(image, mask, st.example_rng(3, 7), config)
    np.testing.assert_array_equal(again["image"], outputs[7]["image"])
    np.testing.assert_array_equal(again["mask"], outputs[7]["mask"])
    # At ratio < 1 the 64-px short side shrinks below the crop: some outputs are padded.
    assert any((out["mask"] == 255).any() for out in outputs)
    assert len({out["image"].tobytes() for out in outputs}) == 20


def test_eval_transform_resizes_keeping_the_ratio():
    image = np.zeros((375, 500, 3), np.uint8)
    assert st.eval_transform(image).shape == (512, 683, 3)
    with pytest.raises(ValueError, match="uint8"):
        st.eval_transform(image.astype(np.float32))
    with pytest.raises(ValueError, match="does not match"):
        st.train_transform(image, np.zeros((10, 10), np.uint8), np.random.default_rng(0))


def test_a_bilinear_window_is_the_cut_of_the_full_resize():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for height, width in ((80, 111), (20, 30), (37, 53)):
        full = st.resize_bilinear(image, height, width)
        for _ in range(10):
            top, left = int(rng.integers(height)), int(rng.integers(width))
            window = (int(rng.integers(1, height - top + 1)), int(rng.integers(1, width - left + 1)))
            got = st.resize_bilinear_window(image, height, width, (top, left), window)
            np.testing.assert_array_equal(got, full[top:top + window[0], left:left + window[1]])


@pytest.mark.parametrize("cat_max_ratio", [1.0, 0.75, 0.3])
def test_rescaled_crop_equals_cropping_the_full_rescale(cat_max_ratio):
    # Bitwise, with the same draws, across ratios that shrink the image below the crop and retries.
    rng = np.random.default_rng(5)
    for position in range(60):
        h, w = (int(v) for v in rng.integers(30, 120, 2))
        image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        mask = np.repeat(rng.integers(0, 4, (h, w // 8 + 1)), 8, axis=1)[:, :w].astype(np.uint8)
        mask[: h // 5] = 255
        scale = st.sample_scale(np.random.default_rng(position), (256, 64), (0.5, 2.0))
        full = st.rescale(image, mask, scale)
        want = st.random_crop(*full, st.example_rng(1, position), (48, 48), cat_max_ratio)
        got = st.rescaled_crop(image, mask, st.example_rng(1, position), scale, (48, 48), cat_max_ratio)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_photometric_columns_hold_the_draw_and_the_crop_size():
    params = st.PhotometricParams(brightness=None, contrast_first=False, contrast=1.25, saturation=None, hue=-3)
    columns = st.photometric_columns(params, 40, 31)
    assert columns.dtype == np.float32 and len(columns) == len(st.PHOTOMETRIC_COLUMNS)
    named = dict(zip(st.PHOTOMETRIC_COLUMNS, columns.tolist()))
    assert np.isnan(named.pop("brightness")) and np.isnan(named.pop("saturation"))
    assert named == {"contrast": 1.25, "hue": -3.0, "contrast_first": 0.0, "height": 40.0, "width": 31.0}
