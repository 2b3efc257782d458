"""Each ImageNet augmentation alone: shape, dtype, range, determinism, and a property per op."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tests.lazy_import import LazyModule, skip_module_without

skip_module_without("tensorflow")

from vim_jax.data.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from vim_jax.data.device_ops import normalize  # noqa: E402
from vim_jax.data.fake_imagenet import FakeImageNetSpec, fake_jpeg  # noqa: E402
from vim_jax.data.pil_transforms import eval_transform_pil  # noqa: E402

tf = LazyModule("tensorflow")
ra = LazyModule("vim_jax.data.rand_augment")
T = LazyModule("vim_jax.data.transforms")
FILL = (124, 116, 104)


def seed(i):
    return tf.constant([7, i], tf.int64)


@pytest.fixture(scope="module")
def jpeg():
    return fake_jpeg(np.random.default_rng(0), 5, (150, 110), FakeImageNetSpec())


@pytest.fixture(scope="module")
def photo(jpeg):
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_decode_jpeg_gives_the_pixels_pil_gives(jpeg, photo):
    np.testing.assert_array_equal(T.decode_jpeg(tf.constant(jpeg)).numpy(), photo)


def test_random_resized_crop_box_within_bounds_area_and_ratio():
    boxes = [T.random_resized_crop_box(seed(i), 375, 500).numpy() for i in range(200)]
    for top, left, h, w in boxes:
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
        assert 0.08 * 0.98 <= h * w / (375 * 500) <= 1.0
        assert 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03
    areas = np.array([h * w for _, _, h, w in boxes]) / (375 * 500)
    assert areas.min() < 0.2 and areas.max() > 0.7  # spans the scale range
    np.testing.assert_array_equal(T.random_resized_crop_box(seed(3), 375, 500), boxes[3])


def test_random_resized_crop_falls_back_to_a_centre_crop_of_the_ratio_limit():
    # 10 x 1000: no candidate fits, so timm takes the whole height and width = round(10 * 4/3).
    top, left, h, w = T.random_resized_crop_box(seed(0), 10, 1000).numpy()
    assert (h, w) == (10, 13) and top == 0 and left == (1000 - 13) // 2


def test_decode_and_crop_matches_crop_of_the_decoded_image(jpeg, photo):
    for i in range(5):
        a = T.decode_and_random_resized_crop(tf.constant(jpeg), seed(i), 64).numpy()
        b = T.random_resized_crop(tf.constant(photo), seed(i), 64).numpy()
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        # Same box; libjpeg upsamples chroma slightly differently along a cropped edge.
        error = np.abs(a.astype(int) - b)
        assert error.max() <= 10 and (error > 1).mean() < 0.01


def test_random_resized_crop_resizes_like_pil_bicubic(photo):
    top, left, h, w = T.random_resized_crop_box(seed(1), *photo.shape[:2]).numpy()
    ours = T.random_resized_crop(tf.constant(photo), seed(1), 48).numpy().astype(int)
    pil = Image.fromarray(photo).crop((left, top, left + w, top + h)).resize((48, 48), Image.BICUBIC)
    assert np.abs(ours - np.asarray(pil, int)).max() <= 2


def test_flip_really_flips_about_half_the_time(photo):
    image = tf.constant(photo)
    flips = 0
    for i in range(100):
        out = T.random_horizontal_flip(image, seed(i)).numpy()
        if np.array_equal(out, photo[:, ::-1]):
            flips += 1
        else:
            np.testing.assert_array_equal(out, photo)
    assert 35 <= flips <= 65
    np.testing.assert_array_equal(T.random_horizontal_flip(image, seed(4)), T.random_horizontal_flip(image, seed(4)))


def test_eval_transform_matches_the_pil_reference(jpeg):
    for size in [(500, 375), (375, 500), (300, 257)]:
        data = fake_jpeg(np.random.default_rng(1), 2, size, FakeImageNetSpec())
        ours = T.eval_transform(tf.constant(data)).numpy()
        reference = eval_transform_pil(Image.open(io.BytesIO(data)))
        assert ours.shape == reference.shape == (224, 224, 3) and ours.dtype == np.uint8
        # Within 2 grey levels of the official torchvision/PIL transform (normalised, as on device).
        normalised = np.asarray(normalize(ours, IMAGENET_MEAN, IMAGENET_STD))
        assert np.abs((normalised - reference) * np.array(IMAGENET_STD)).max() * 255 <= 2.01


def test_eval_transform_pil_geometry():
    # A 512 x 300 (W x H) image: shorter side 300 -> 256, longer int(256 * 512 / 300) = 436, crop centre.
    image = np.zeros((300, 512, 3), np.uint8)
    image[:, 256:] = 255  # right half white: the crop's centre column sits on the edge
    out = eval_transform_pil(image, crop_pct=0.875)
    assert out.shape == (224, 224, 3)
    white = (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert np.isclose(out[0, -1, 0], white, atol=1e-3) and out[0, 0, 0] < 0


def test_train_transform_output(jpeg):
    out = T.train_transform(tf.constant(jpeg), seed(0)).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8  # normalised and erased on device
    np.testing.assert_array_equal(out, T.train_transform(tf.constant(jpeg), seed(0)).numpy())
    assert not np.array_equal(out, T.train_transform(tf.constant(jpeg), seed(1)).numpy())


# --- RandAugment -------------------------------------------------------------------------------

def _close(ours, reference, tolerance=1, fraction=1.0):
    ours, reference = np.asarray(ours, int), np.asarray(reference, int)
    assert ours.shape == reference.shape
    differs = np.abs(ours - reference) > 0
    assert np.abs(ours - reference).max() <= tolerance and differs.mean() <= fraction


PIL_OPS = [  # (our op in rand_augment, argument, the PIL call timm makes)
    ("auto_contrast", None, ImageOps.autocontrast),
    ("equalize", None, ImageOps.equalize),
    ("invert", None, ImageOps.invert),
    ("posterize", 1, lambda im: ImageOps.posterize(im, 1)),
    ("posterize", 3, lambda im: ImageOps.posterize(im, 3)),
    ("solarize", 26, lambda im: ImageOps.solarize(im, 26)),
    ("contrast", 1.7, lambda im: ImageEnhance.Contrast(im).enhance(1.7)),
    ("brightness", 0.3, lambda im: ImageEnhance.Brightness(im).enhance(0.3)),
    ("sharpness", 1.8, lambda im: ImageEnhance.Sharpness(im).enhance(1.8)),
    ("sharpness", 0.2, lambda im: ImageEnhance.Sharpness(im).enhance(0.2)),
]


@pytest.mark.parametrize("op,arg,pil_op", PIL_OPS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_pixel_ops_equal_pil(photo, op, arg, pil_op):
    op = getattr(ra, op)
    ours = op(tf.constant(photo)) if arg is None else op(tf.constant(photo), arg)
    assert ours.dtype == tf.uint8
    np.testing.assert_array_equal(ours.numpy(), np.asarray(pil_op(Image.fromarray(photo))))


def test_color_within_one_level_of_pil(photo):
    for factor in (0.2, 1.8):
        _close(ra.color(tf.constant(photo), factor), ImageEnhance.Color(Image.fromarray(photo)).enhance(factor),
               1, 0.01)


def test_posterize_zero_bits_is_black_and_solarize_add(photo):
    assert not ra.posterize(tf.constant(photo), 0).numpy().any()
    out = ra.solarize_add(tf.constant(photo), 99).numpy().astype(int)
    low = photo < 128
    np.testing.assert_array_equal(out[low], np.minimum(photo[low].astype(int) + 99, 255))
    np.testing.assert_array_equal(out[~low], photo[~low])


AFFINE = [  # (our op in rand_augment, argument, PIL affine matrix or rotation)
    ("rotate", 27.0, "rotate"),
    ("rotate", -13.0, "rotate"),
    ("shear_x", 0.27, (1, 0.27, 0, 0, 1, 0)),
    ("shear_y", -0.2, (1, 0, 0, -0.2, 1, 0)),
    ("translate_x_rel", 0.4, "tx"),
    ("translate_y_rel", -0.3, "ty"),
]


@pytest.mark.parametrize("op,arg,matrix", AFFINE, ids=lambda v: getattr(v, "__name__", str(v)))
def test_geometric_ops_match_pil_bilinear(photo, op, arg, matrix):
    op = getattr(ra, op)
    pil = Image.fromarray(photo)
    kwargs = dict(resample=Image.BILINEAR, fillcolor=FILL)
    if matrix == "rotate":
        reference = pil.rotate(arg, **kwargs)
    else:
        if matrix == "tx":
            matrix = (1, 0, arg * pil.size[0], 0, 1, 0)
        elif matrix == "ty":
            matrix = (1, 0, 0, 0, 1, arg * pil.size[1])
        reference = pil.transform(pil.size, Image.AFFINE, matrix, **kwargs)
    _close(op(tf.constant(photo), arg, FILL), reference, tolerance=1, fraction=0.02)


def test_parse_rand_augment_like_timm():
    config = ra.parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert config.magnitude == 9 and config.magnitude_std == 0.5 and config.num_layers == 2
    assert config.transforms == ra.RAND_INCREASING_TRANSFORMS and config.prob == 0.5
    assert ra.parse_rand_augment("rand-m7-n3-mstd101").magnitude_std == math.inf
    assert ra.parse_rand_augment("rand-m7-n3").transforms == ra.RAND_TRANSFORMS
    with pytest.raises(ValueError):
        ra.parse_rand_augment("rand-q3")


def test_magnitude_is_normal_around_m_and_clipped():
    config = ra.parse_rand_augment("rand-m9-mstd0.5-inc1")
    levels = np.array([ra.sample_magnitude(seed(i), config).numpy() for i in range(400)])
    assert levels.max() <= 10 and abs(levels.mean() - 9) < 0.1 and 0.4 < levels.std() < 0.6


def test_increasing_ops_get_stronger_with_magnitude(photo):
    image = tf.constant(photo)
    s = seed(0)
    weak = ra.apply_op(image, "SolarizeIncreasing", 1.0, s).numpy()
    strong = ra.apply_op(image, "SolarizeIncreasing", 9.0, s).numpy()
    assert (weak != photo).mean() < (strong != photo).mean()
    # PosterizeIncreasing at m = 9 keeps 4 - int(3.6) = 1 bit.
    np.testing.assert_array_equal(ra.apply_op(image, "PosterizeIncreasing", 9.0, s), ra.posterize(image, 1))


def test_rand_augment_deterministic_uint8_and_skips_about_a_quarter(photo):
    image = tf.constant(photo)
    outs = [ra.rand_augment(image, seed(i)).numpy() for i in range(120)]
    assert all(o.dtype == np.uint8 and o.shape == photo.shape for o in outs)
    np.testing.assert_array_equal(outs[5], ra.rand_augment(image, seed(5)).numpy())
    unchanged = np.mean([np.array_equal(o, photo) for o in outs])
    # Both layers skip with probability 0.25 (a few applied ops may also leave the image as is).
    assert 0.12 < unchanged < 0.42
