"""ImageNet per-image augmentations as small TensorFlow ops, with timm/DeiT semantics (stateless).

Each op takes one image (HWC) and, if random, a ``seed``: an int64 tensor of shape [2] for TF's
stateless random ops, so the same seed always gives the same output (tf.data may run them in any
thread order). The official training transform (DeiT ``build_transform`` -> timm
``create_transform``) is, in order:

1. :func:`decode_and_random_resized_crop` (scale 0.08-1, ratio 3/4-4/3, bicubic) to 224x224;
2. :func:`random_horizontal_flip` (p = 0.5);
3. :func:`~vim_jax.data.rand_augment.rand_augment` ``rand-m9-mstd0.5-inc1`` on uint8 pixels;
4. normalisation with the ImageNet mean/std, then
5. random erasing (p = 0.25, 'pixel' mode) of the normalised image.

Steps 1-3 are here and end in uint8, the format images cross to the accelerator in; steps 4-5 run
there, in the jitted step (``device_ops.py``). The evaluation transform (:func:`eval_transform`)
resizes the shorter side to 256 (bicubic) and takes the centre 224x224 crop, like torchvision's
``Resize(256)`` + ``CenterCrop(224)``, also in uint8.
Resizes use ``tf.image.resize(..., antialias=True)``, whose bicubic (Keys, a = -0.5) kernel widens
when shrinking the way PIL's does, and round back to uint8 as PIL does.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from vim_jax.data.constants import IMAGENET_EVAL_CROP_PCT, IMAGENET_IMAGE_SIZE, IMAGENET_MEAN
from vim_jax.data.rand_augment import rand_augment

_ATTEMPTS = 10  # timm draws up to 10 candidate boxes
# TF's default JPEG IDCT ("INTEGER_FAST") is off by up to 4 levels on most pixels from what PIL
# (libjpeg's default, ISLOW) decodes, which the official pipeline used; the accurate one agrees.
JPEG_DCT_METHOD = "INTEGER_ACCURATE"


def decode_jpeg(jpeg: tf.Tensor) -> tf.Tensor:
    """JPEG bytes -> uint8 [H, W, 3], the pixels PIL would give (grey JPEGs become RGB)."""
    return tf.io.decode_jpeg(jpeg, channels=3, dct_method=JPEG_DCT_METHOD)


def sub_seed(seed: tf.Tensor, salt: int) -> tf.Tensor:
    """An independent stateless seed derived from ``seed`` for one purpose (salt)."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)


def _first_true(mask: tf.Tensor) -> tf.Tensor:
    return tf.argmax(tf.cast(mask, tf.int32), output_type=tf.int32)


def _randint_inclusive(seed: tf.Tensor, shape, high: tf.Tensor) -> tf.Tensor:
    """Integers uniform in [0, high] (Python's random.randint(0, high)); high may vary per draw."""
    u = tf.random.stateless_uniform(shape, seed, dtype=tf.float32)
    return tf.minimum(tf.cast(tf.floor(u * tf.cast(high + 1, tf.float32)), tf.int32), high)


def random_resized_crop_box(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tf.Tensor:
    """timm ``RandomResizedCropAndInterpolation.get_params``: int32 [top, left, crop_h, crop_w].

    Ten candidates (area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``,
    sides rounded); the first that fits is placed uniformly. If none fits, the centre crop of the
    whole image clamped to the ratio range.
    """
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    s_area, s_ratio, s_top, s_left = (sub_seed(seed, i) for i in range(4))
    target_area = tf.random.stateless_uniform([_ATTEMPTS], s_area, scale[0], scale[1]) * h_f * w_f
    aspect = tf.exp(tf.random.stateless_uniform([_ATTEMPTS], s_ratio, math.log(ratio[0]), math.log(ratio[1])))
    # tf.round rounds half to even, like Python's round().
    crop_w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (crop_w <= width) & (crop_h <= height)
    i = _first_true(fits)
    top = _randint_inclusive(s_top, [_ATTEMPTS], height - crop_h)[i]
    left = _randint_inclusive(s_left, [_ATTEMPTS], width - crop_w)[i]

    in_ratio = w_f / h_f
    fb_w = tf.where(in_ratio > ratio[1], tf.cast(tf.round(h_f * ratio[1]), tf.int32), width)
    fb_h = tf.where(in_ratio < ratio[0], tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)
    fallback = tf.stack([(height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w])
    chosen = tf.stack([top, left, crop_h[i], crop_w[i]])
    return tf.where(tf.reduce_any(fits), chosen, fallback)


def resize_to_uint8(image: tf.Tensor, size, method: str = "bicubic") -> tf.Tensor:
    """Antialiased resize to ``size`` (height, width), rounded and clipped back to uint8 like PIL."""
    resized = tf.image.resize(image, size, method=method, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: int = IMAGENET_IMAGE_SIZE,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), method: str = "bicubic") -> tf.Tensor:
    """Random-resized crop of a decoded uint8 image, resized to size x size."""
    shape = tf.shape(image)
    box = random_resized_crop_box(seed, shape[0], shape[1], scale, ratio)
    crop = tf.image.crop_to_bounding_box(image, box[0], box[1], box[2], box[3])
    return resize_to_uint8(crop, [size, size], method)


def decode_and_random_resized_crop(jpeg: tf.Tensor, seed: tf.Tensor, size: int = IMAGENET_IMAGE_SIZE,
                                   scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), method: str = "bicubic") -> tf.Tensor:
    """The same from JPEG bytes, decoding only the crop window (``tf.image.decode_and_crop_jpeg``).

    Several times cheaper than decoding whole photos; pixels along the crop's edges can differ by a
    few levels from a full decode (libjpeg upsamples chroma at the cut differently).
    """
    shape = tf.image.extract_jpeg_shape(jpeg)
    box = random_resized_crop_box(seed, shape[0], shape[1], scale, ratio)
    crop = tf.image.decode_and_crop_jpeg(jpeg, box, channels=3, dct_method=JPEG_DCT_METHOD)
    return resize_to_uint8(crop, [size, size], method)


def random_horizontal_flip(image: tf.Tensor, seed: tf.Tensor, p: float = 0.5) -> tf.Tensor:
    """Mirror left-right with probability ``p``."""
    flip = tf.random.stateless_uniform([], seed) < p
    return tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)


def resize_shorter_side(image: tf.Tensor, size: int, method: str = "bicubic") -> tf.Tensor:
    """torchvision ``Resize(size)``: shorter side -> size, longer side -> int(size * long / short)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.minimum(height, width)
    scale = tf.cast(size, tf.float64) / tf.cast(short, tf.float64)
    new_h = tf.where(height == short, size, tf.cast(tf.cast(height, tf.float64) * scale, tf.int32))
    new_w = tf.where(width == short, size, tf.cast(tf.cast(width, tf.float64) * scale, tf.int32))
    return resize_to_uint8(image, tf.stack([new_h, new_w]), method)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision ``CenterCrop(size)``: offsets int(round((H - size) / 2)) (half to even)."""
    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float64) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2), tf.int32)
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def eval_resize_size(image_size: int = IMAGENET_IMAGE_SIZE, crop_pct: float = IMAGENET_EVAL_CROP_PCT) -> int:
    """The shorter-side size before the centre crop: int(224 / 0.875) = 256 (DeiT's rule)."""
    return int(image_size / crop_pct)


def eval_transform(image_or_jpeg: tf.Tensor, image_size: int = IMAGENET_IMAGE_SIZE,
                   crop_pct: float = IMAGENET_EVAL_CROP_PCT) -> tf.Tensor:
    """Evaluation transform: bicubic shorter side -> int(size / crop_pct), centre crop.

    Accepts JPEG bytes (scalar string) or a decoded uint8 HWC image. Returns uint8 [size, size, 3].
    """
    image = image_or_jpeg
    if image.dtype == tf.string:
        image = decode_jpeg(image)
    image = resize_shorter_side(image, eval_resize_size(image_size, crop_pct))
    return tf.ensure_shape(center_crop(image, image_size), [image_size, image_size, 3])


@dataclasses.dataclass(frozen=True)
class TrainTransformConfig:
    """The DeiT/Vim training recipe's per-image augmentation on the host (defaults = the official run).

    ``mean`` is the normalisation mean, whose colour fills the geometric RandAugment ops.
    """

    image_size: int = IMAGENET_IMAGE_SIZE
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    hflip: float = 0.5
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    mean: tuple[float, ...] = IMAGENET_MEAN


def rand_augment_fill(mean=IMAGENET_MEAN) -> tuple[int, int, int]:
    """timm fills geometric RandAugment ops with the mean colour in uint8: (124, 116, 104)."""
    return tuple(min(255, round(255 * m)) for m in mean)


def train_transform(jpeg: tf.Tensor, seed: tf.Tensor,
                    config: TrainTransformConfig = TrainTransformConfig()) -> tf.Tensor:
    """The host part of the training transform of one JPEG: uint8 [size, size, 3]."""
    image = decode_and_random_resized_crop(jpeg, sub_seed(seed, 10), config.image_size, config.scale,
                                           config.ratio, config.interpolation)
    if config.hflip > 0:
        image = random_horizontal_flip(image, sub_seed(seed, 11), config.hflip)
    if config.rand_augment:
        # DeiT passes its train interpolation (bicubic) and input size to timm's RandAugment:
        # translate_const = int(0.45 * size) (unused by the Rel ops), fill = the mean colour.
        image = rand_augment(image, sub_seed(seed, 12), config.rand_augment, fill=rand_augment_fill(config.mean))
    return tf.ensure_shape(image, [config.image_size, config.image_size, 3])
