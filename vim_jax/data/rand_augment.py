"""timm's RandAugment in TensorFlow (graph-mode, stateless), for uint8 HWC RGB images.

Semantics of timm ``rand_augment_transform`` (timm/data/auto_augment.py), e.g.
``rand-m9-mstd0.5-inc1``:

* ``n`` ops (default 2) are drawn uniformly *with* replacement from the op list;
* each is applied with probability 0.5;
* each application draws its magnitude from N(m, mstd) (uniform in [0, m] if mstd > 100),
  clipped to [0, mmax] (default 10), and maps it to the op's argument as timm's ``LEVEL_TO_ARG``
  does (signed arguments get a random sign);
* ``inc1`` selects the "increasing" op set, where every op gets stronger as the magnitude grows.

Each op mirrors the PIL call timm makes (``ImageOps``/``ImageEnhance``/``Image.transform``),
including PIL's pixel-centre convention for the affine ops and uint8 truncation after blends.
Known differences: geometric ops interpolate bilinearly (tf.raw_ops.ImageProjectiveTransformV3 has
no bicubic; the official run asks PIL for bicubic); grey levels use
``tf.image.rgb_to_grayscale``'s weights (PIL's integer weights differ by 1 on a few pixels).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable

import tensorflow as tf

LEVEL_DENOM = 10.0  # timm: magnitude M maps to the fraction M / 10 of each op's range
DEFAULT_FILL = (128, 128, 128)


def _seed(seed: tf.Tensor, salt: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), salt)


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    """Clip to [0, 255] and truncate, as PIL does when it writes a float blend back to uint8."""
    return tf.cast(tf.floor(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ``Image.blend(degenerate, image, factor)`` = degenerate + factor * (image - degenerate)."""
    degenerate = tf.cast(degenerate, tf.float32)
    return _to_uint8(degenerate + factor * (tf.cast(image, tf.float32) - degenerate))


def _grey(image: tf.Tensor) -> tf.Tensor:
    """PIL ``convert('L')`` as float, rounded to integers: [H, W, 1]."""
    return tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32)))


# --- pixel ops (no argument) --------------------------------------------------------------------

def auto_contrast(image: tf.Tensor) -> tf.Tensor:
    """``ImageOps.autocontrast``: stretch each channel's [min, max] to [0, 255]."""
    x = tf.cast(image, tf.float64)  # PIL computes the table in double: float32 misses 255 by a hair
    lo = tf.reduce_min(x, axis=[0, 1])
    hi = tf.reduce_max(x, axis=[0, 1])
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = tf.cast(tf.floor(tf.clip_by_value(x * scale - lo * scale, 0.0, 255.0)), tf.uint8)
    return tf.where(hi > lo, stretched, image)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """``ImageOps.equalize``: per-channel histogram equalisation with PIL's lookup table."""
    channels = []
    for c in range(3):
        x = tf.cast(image[:, :, c], tf.int32)
        hist = tf.math.bincount(x, minlength=256, maxlength=256, dtype=tf.int32)
        nonzero = tf.boolean_mask(hist, hist > 0)
        # PIL: step = (number of pixels - count of the last used level) // 255.
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        safe_step = tf.maximum(step, 1)
        lut = (tf.cumsum(hist, exclusive=True) + step // 2) // safe_step
        lut = tf.clip_by_value(lut, 0, 255)
        equalised = tf.gather(lut, x)
        keep = (tf.size(nonzero) <= 1) | (step == 0)
        channels.append(tf.where(keep, x, equalised))
    return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def invert(image: tf.Tensor) -> tf.Tensor:
    """``ImageOps.invert``."""
    return 255 - image


# --- pixel ops with an argument -----------------------------------------------------------------

def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """``ImageOps.posterize``: keep the ``bits`` most significant bits (0 bits -> black)."""
    bits = tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
    mask = tf.cast(255 - (tf.bitwise.left_shift(1, 8 - bits) - 1), tf.uint8)
    return tf.bitwise.bitwise_and(image, mask)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """``ImageOps.solarize``: invert pixels >= threshold (threshold 256 changes nothing)."""
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.where(x < tf.cast(threshold, tf.int32), x, 255 - x), tf.uint8)


def solarize_add(image: tf.Tensor, addition: tf.Tensor, threshold: int = 128) -> tf.Tensor:
    """timm ``solarize_add``: add ``addition`` (capped at 255) to pixels below ``threshold``."""
    x = tf.cast(image, tf.int32)
    return tf.cast(tf.where(x < threshold, tf.minimum(x + tf.cast(addition, tf.int32), 255), x), tf.uint8)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Color``: blend with the grey image (0 = grey, 1 = unchanged)."""
    return _blend(tf.broadcast_to(_grey(image), tf.shape(image)), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Contrast``: blend with a flat image of the mean grey level."""
    mean = tf.floor(tf.reduce_mean(_grey(image)) + 0.5)
    return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return _blend(tf.zeros_like(image, tf.float32), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``ImageEnhance.Sharpness``: blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13),
    whose border pixels PIL leaves unfiltered."""
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.round(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID"))[0]
    interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), x[0])
    return _blend(degenerate, image, factor)


# --- geometric ops ------------------------------------------------------------------------------

def _float64(value) -> tf.Tensor:
    # Python numbers go straight to float64 (tf.cast would pass them through float32 first).
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.cast(value, tf.float64)
    return tf.constant(value, tf.float64)


def pil_affine(image: tf.Tensor, matrix, fill=DEFAULT_FILL) -> tf.Tensor:
    """PIL ``image.transform(size, Image.AFFINE, matrix, Image.BILINEAR, fillcolor=fill)`` in TF.

    ``matrix`` = (a, b, c, d, e, f) maps an output point (x, y) to the input point
    (a x + b y + c, d x + e y + f) in PIL's continuous coordinates (pixel centres at i + 0.5);
    tf.raw_ops.ImageProjectiveTransformV3 maps pixel indices, so the offsets shift by half a pixel.
    Like PIL, an output pixel whose centre maps inside the input interpolates with edge pixels
    repeated (the "NEAREST" fill mode), and one that maps outside takes the fill colour.
    """
    a, b, c, d, e, f = (_float64(v) for v in matrix)
    tf_matrix = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5,
                          tf.constant(0.0, tf.float64), tf.constant(0.0, tf.float64)])
    size = tf.shape(image)[:2]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=tf.cast(tf_matrix, tf.float32)[None],
        output_shape=size, fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")[0]
    # Where each output pixel centre lands, in float64 as PIL computes it.
    height, width = tf.cast(size[0], tf.float64), tf.cast(size[1], tf.float64)
    y = tf.range(height, dtype=tf.float64)[:, None] + 0.5
    x = tf.range(width, dtype=tf.float64)[None, :] + 0.5
    x_in, y_in = a * x + b * y + c, d * x + e * y + f
    inside = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    out = tf.where(inside[:, :, None], warped, tf.constant(fill, tf.float32))
    return _to_uint8(out)  # PIL truncates interpolated values to uint8


def rotate(image: tf.Tensor, degrees: tf.Tensor, fill=DEFAULT_FILL) -> tf.Tensor:
    """PIL ``image.rotate(degrees)``: counter-clockwise about the image centre, same size."""
    shape = tf.cast(tf.shape(image), tf.float64)
    cx, cy = shape[1] / 2.0, shape[0] / 2.0
    angle = -_float64(degrees) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # PIL: matrix [cos, sin, 0, -sin, cos, 0], then offsets making the centre a fixed point.
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return pil_affine(image, (cos, sin, c, -sin, cos, f), fill)


def shear_x(image: tf.Tensor, factor: tf.Tensor, fill=DEFAULT_FILL) -> tf.Tensor:
    """timm ``shear_x``: affine (1, factor, 0, 0, 1, 0) about the top-left corner."""
    return pil_affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0), fill)


def shear_y(image: tf.Tensor, factor: tf.Tensor, fill=DEFAULT_FILL) -> tf.Tensor:
    """timm ``shear_y``: affine (1, 0, 0, factor, 1, 0)."""
    return pil_affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0), fill)


def translate_x_rel(image: tf.Tensor, fraction: tf.Tensor, fill=DEFAULT_FILL) -> tf.Tensor:
    """timm ``translate_x_rel``: content moves left by ``fraction`` of the width (right if negative)."""
    pixels = _float64(fraction) * tf.cast(tf.shape(image)[1], tf.float64)
    return pil_affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), fill)


def translate_y_rel(image: tf.Tensor, fraction: tf.Tensor, fill=DEFAULT_FILL) -> tf.Tensor:
    """timm ``translate_y_rel``: content moves up by ``fraction`` of the height."""
    pixels = _float64(fraction) * tf.cast(tf.shape(image)[0], tf.float64)
    return pil_affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), fill)


# --- magnitude -> argument (timm LEVEL_TO_ARG) ---------------------------------------------------

def _signed(value: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # timm _randomly_negate: -v if random.random() > 0.5 else v
    return tf.where(tf.random.stateless_uniform([], seed) > 0.5, -value, value)


def _enhance_arg(level, seed):
    return level / LEVEL_DENOM * 1.8 + 0.1


def _enhance_increasing_arg(level, seed):
    return tf.maximum(0.1, 1.0 + _signed(level / LEVEL_DENOM * 0.9, seed))


def _posterize_arg(level, seed):
    return tf.floor(level / LEVEL_DENOM * 4)


def _solarize_arg(level, seed):
    return tf.floor(level / LEVEL_DENOM * 256)


OpFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tuple], tf.Tensor]

# name -> fn(image, level, seed, fill): every op of timm's RandAugment lists.
OPS: dict[str, OpFn] = {
    "AutoContrast": lambda im, lv, s, fill: auto_contrast(im),
    "Equalize": lambda im, lv, s, fill: equalize(im),
    "Invert": lambda im, lv, s, fill: invert(im),
    "Rotate": lambda im, lv, s, fill: rotate(im, _signed(lv / LEVEL_DENOM * 30.0, s), fill),
    "Posterize": lambda im, lv, s, fill: posterize(im, _posterize_arg(lv, s)),
    "PosterizeIncreasing": lambda im, lv, s, fill: posterize(im, 4 - _posterize_arg(lv, s)),
    "Solarize": lambda im, lv, s, fill: solarize(im, _solarize_arg(lv, s)),
    "SolarizeIncreasing": lambda im, lv, s, fill: solarize(im, 256 - _solarize_arg(lv, s)),
    "SolarizeAdd": lambda im, lv, s, fill: solarize_add(im, tf.floor(lv / LEVEL_DENOM * 110)),
    "Color": lambda im, lv, s, fill: color(im, _enhance_arg(lv, s)),
    "ColorIncreasing": lambda im, lv, s, fill: color(im, _enhance_increasing_arg(lv, s)),
    "Contrast": lambda im, lv, s, fill: contrast(im, _enhance_arg(lv, s)),
    "ContrastIncreasing": lambda im, lv, s, fill: contrast(im, _enhance_increasing_arg(lv, s)),
    "Brightness": lambda im, lv, s, fill: brightness(im, _enhance_arg(lv, s)),
    "BrightnessIncreasing": lambda im, lv, s, fill: brightness(im, _enhance_increasing_arg(lv, s)),
    "Sharpness": lambda im, lv, s, fill: sharpness(im, _enhance_arg(lv, s)),
    "SharpnessIncreasing": lambda im, lv, s, fill: sharpness(im, _enhance_increasing_arg(lv, s)),
    "ShearX": lambda im, lv, s, fill: shear_x(im, _signed(lv / LEVEL_DENOM * 0.3, s), fill),
    "ShearY": lambda im, lv, s, fill: shear_y(im, _signed(lv / LEVEL_DENOM * 0.3, s), fill),
    "TranslateXRel": lambda im, lv, s, fill: translate_x_rel(im, _signed(lv / LEVEL_DENOM * 0.45, s), fill),
    "TranslateYRel": lambda im, lv, s, fill: translate_y_rel(im, _signed(lv / LEVEL_DENOM * 0.45, s), fill),
}

# timm _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS, in timm's order.
RAND_TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateXRel", "TranslateYRel")
RAND_INCREASING_TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                              "TranslateXRel", "TranslateYRel")


@dataclasses.dataclass(frozen=True)
class RandAugmentConfig:
    """A parsed timm RandAugment string."""

    magnitude: float = 10.0
    num_layers: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    transforms: tuple[str, ...] = RAND_TRANSFORMS
    prob: float = 0.5  # timm rand_augment_ops: each chosen op applies with probability 0.5


def parse_rand_augment(config: str) -> RandAugmentConfig:
    """Parses e.g. 'rand-m9-mstd0.5-inc1' the way timm's ``rand_augment_transform`` does."""
    sections = config.split("-")
    if sections[0] != "rand":
        raise ValueError(f"not a RandAugment config: {config!r}")
    kwargs: dict = {}
    for section in sections[1:]:
        parts = re.split(r"(\d.*)", section)
        if len(parts) < 2:
            continue
        key, value = parts[:2]
        if key == "mstd":
            std = float(value)
            kwargs["magnitude_std"] = math.inf if std > 100 else std
        elif key == "mmax":
            kwargs["magnitude_max"] = float(int(value))
        elif key == "inc":
            if bool(value):  # timm: any non-empty value, even '0', selects the increasing set
                kwargs["transforms"] = RAND_INCREASING_TRANSFORMS
        elif key == "m":
            kwargs["magnitude"] = float(int(value))
        elif key == "n":
            kwargs["num_layers"] = int(value)
        elif key == "w":
            raise NotImplementedError("weighted op choice ('w') is not implemented")
        else:
            raise ValueError(f"unknown RandAugment section {section!r} in {config!r}")
    return RandAugmentConfig(**kwargs)


def sample_magnitude(seed: tf.Tensor, config: RandAugmentConfig) -> tf.Tensor:
    """timm AugmentOp: N(m, mstd) (uniform in [0, m] if mstd is inf), clipped to [0, mmax]."""
    if config.magnitude_std == math.inf:
        level = tf.random.stateless_uniform([], seed, 0.0, config.magnitude)
    elif config.magnitude_std > 0:
        level = config.magnitude + config.magnitude_std * tf.random.stateless_normal([], seed)
    else:
        level = tf.constant(config.magnitude, tf.float32)
    return tf.clip_by_value(level, 0.0, config.magnitude_max)


def apply_op(image: tf.Tensor, name: str, level, seed, fill=DEFAULT_FILL) -> tf.Tensor:
    """Applies one named op at magnitude ``level`` (0-10); ``seed`` picks the sign of signed args."""
    return OPS[name](image, tf.cast(level, tf.float32), seed, tuple(fill))


@functools.lru_cache(maxsize=None)
def _layer_fn(config: RandAugmentConfig, fill: tuple) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    # One RandAugment layer as a cached tf.function: its graph (a branch per op) is traced once
    # and reused by every layer and every pipeline built afterwards, instead of seconds of
    # tracing per layer per pipeline.
    @tf.function(autograph=False, reduce_retracing=True)
    def layer(image, seed):
        s_choice, s_apply, s_level, s_sign = (_seed(seed, i) for i in range(4))
        index = tf.random.stateless_uniform([], s_choice, 0, len(config.transforms), dtype=tf.int32)
        level = sample_magnitude(s_level, config)
        branches = [lambda name=name: apply_op(image, name, level, s_sign, fill) for name in config.transforms]
        applied = tf.random.stateless_uniform([], s_apply) <= config.prob  # timm skips if rand > prob
        out = tf.cond(applied, lambda: tf.switch_case(index, branches), lambda: image)
        return tf.ensure_shape(out, image.shape)

    return layer


def rand_augment(image: tf.Tensor, seed: tf.Tensor, config: str | RandAugmentConfig = "rand-m9-mstd0.5-inc1",
                 fill=DEFAULT_FILL) -> tf.Tensor:
    """RandAugment of one uint8 [H, W, 3] image; same seed, same result."""
    if isinstance(config, str):
        config = parse_rand_augment(config)
    image = tf.convert_to_tensor(image)
    layer = _layer_fn(config, tuple(int(v) for v in fill))
    for i in range(config.num_layers):
        image = layer(image, _seed(seed, 1000 + i))
    return image
