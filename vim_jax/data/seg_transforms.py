"""The official ADE20K segmentation pipeline (mmsegmentation, as hustvl/Vim's ``seg/`` configures it)
as small numpy ops on uint8 images [H, W, 3] and integer masks [H, W].

Training, in mmseg's order: ``Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))`` keeping the
aspect ratio, ``RandomCrop(512, cat_max_ratio=0.75)``, ``RandomFlip(0.5)``,
``PhotoMetricDistortion()``, then ``Pad(512)`` with 255 in the mask. Evaluation: the keep-ratio
resize to (2048, 512) alone; the mask stays at full resolution (predictions are resized back to
it, as mmseg scores them). Images stay uint8 (normalisation happens on the device).

Resizing follows OpenCV's rules, which mmcv uses: bilinear with half-pixel centres and no
antialiasing for images, nearest with ``floor(x * in / out)`` for masks. mmseg pads *after*
normalising, with 0, so its padded pixels are the mean colour; here the image is still uint8, so
it is padded with the mean colour rounded to uint8 (which normalises to within 0.01 of 0).

Every random choice comes from a ``numpy.random.Generator`` passed in, in mmseg's draw order;
:func:`example_rng` keys one on (seed, example position) so a pipeline resumes identically.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vim_jax.data.constants import IMAGENET_MEAN

IGNORE_INDEX = 255
MEAN_COLOUR_UINT8 = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)  # (124, 116, 104)


@dataclasses.dataclass(frozen=True)
class SegTrainConfig:
    """The training pipeline's settings; the defaults are the official ADE20K 512x512 recipe.

    Attributes:
      scale: (long, short) edge bounds of the keep-ratio resize before the random ratio.
      ratio_range: the random factor on ``scale``, uniform in this range.
      crop_size: (height, width) of the random crop, and the padded output size.
      cat_max_ratio: retry the crop (10 times at most) while one class covers this share or more
        of its labelled pixels; 1 turns the check off.
      flip_prob: horizontal flip probability.
      photometric: apply mmseg's ``PhotoMetricDistortion``.
      ignore_index: the mask label for padding (and ignored by ``cat_max_ratio``).
      pad_colour: the image's padding colour.
    """

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = IGNORE_INDEX
    pad_colour: tuple[int, int, int] = MEAN_COLOUR_UINT8


def example_rng(seed: int, position: int) -> np.random.Generator:
    """The generator for the example at ``position`` of a seeded stream (see ``seeding.py``)."""
    return np.random.default_rng([int(seed), int(position)])


# --- resizing ------------------------------------------------------------------------------


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio target (height, width): the largest size within (long, short) edge bounds."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # OpenCV INTER_LINEAR: source coordinate (i + 0.5) * n_in / n_out - 0.5, clamped to the edges.
    source = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    low = np.floor(source).astype(np.int64)
    weight = (source - low).astype(np.float32)
    weight = np.where(low < 0, 0.0, weight)
    low = np.clip(low, 0, n_in - 1)
    weight = np.where(low >= n_in - 1, 0.0, weight).astype(np.float32)
    return low, np.minimum(low + 1, n_in - 1), weight


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 [H, W, C] to [height, width, C], as OpenCV's INTER_LINEAR."""
    return resize_bilinear_window(image, height, width, (0, 0), (height, width))


def resize_bilinear_window(image: np.ndarray, height: int, width: int, corner: tuple[int, int],
                           window: tuple[int, int]) -> np.ndarray:
    """The ``window`` (height, width) at ``corner`` (top, left) of :func:`resize_bilinear`'s
    [height, width] output, bitwise, computed from only the source pixels it reads."""
    top, left = corner
    r0, r1, wr = (a[top:top + window[0]] for a in _linear_taps(image.shape[0], height))
    c0, c1, wc = (a[left:left + window[1]] for a in _linear_taps(image.shape[1], width))
    first = int(r0.min(initial=0))
    x = image[first:int(r1.max(initial=0)) + 1]
    r0, r1 = r0 - first, r1 - first
    # The plain expression's float32 arithmetic, faster: gathers of the uint8 pixels, in-place
    # products, and [rows, columns * channels] views with the weights repeated per channel, so
    # that numpy's inner loops run over contiguous memory.
    channels = image.shape[2]
    wc = np.repeat(wc, channels)
    cols = np.take(x, c0, axis=1).astype(np.float32).reshape(len(x), -1)
    cols *= 1 - wc
    right = np.take(x, c1, axis=1).astype(np.float32).reshape(len(x), -1)
    right *= wc
    cols += right
    out = np.take(cols, r0, axis=0)
    out *= (1 - wr)[:, None]
    lower = np.take(cols, r1, axis=0)
    lower *= wr[:, None]
    out += lower
    np.clip(np.rint(out, out=out), 0, 255, out=out)
    return out.astype(np.uint8).reshape(len(r0), len(c0), channels)


def _nearest_source(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest resize of a label map [H, W], as OpenCV's INTER_NEAREST (source = floor(x * in / out))."""
    return mask[_nearest_source(mask.shape[0], height)[:, None], _nearest_source(mask.shape[1], width)[None, :]]


def sample_scale(rng: np.random.Generator, scale: tuple[int, int], ratio_range: tuple[float, float]
                 ) -> tuple[int, int]:
    """mmseg's ``Resize`` with ``ratio_range``: ``scale`` times a ratio uniform in the range."""
    low, high = ratio_range
    ratio = rng.random() * (high - low) + low
    return int(scale[0] * ratio), int(scale[1] * ratio)


def rescale(image: np.ndarray, mask: np.ndarray | None, scale: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep-ratio resize of the image (bilinear) and mask (nearest) to fit ``scale``."""
    height, width = rescale_size(image.shape[0], image.shape[1], scale)
    return (resize_bilinear(image, height, width),
            None if mask is None else resize_nearest(mask, height, width))


# --- crop, flip, pad -----------------------------------------------------------------------


def _crop_box(rng: np.random.Generator, shape: tuple[int, ...], crop_size: tuple[int, int]) -> tuple[int, int]:
    top = int(rng.integers(0, max(shape[0] - crop_size[0], 0) + 1))
    left = int(rng.integers(0, max(shape[1] - crop_size[1], 0) + 1))
    return top, left


def _mixed_enough(window: np.ndarray, cat_max_ratio: float, ignore_index: int) -> bool:
    # At least two classes, none covering cat_max_ratio of the labelled pixels (labels are >= 0).
    counts = np.bincount(window.ravel(), minlength=ignore_index + 1)
    counts[ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def _choose_crop(rng: np.random.Generator, shape: tuple[int, int], crop_size: tuple[int, int],
                 cat_max_ratio: float, ignore_index: int, mask_window) -> tuple[int, int]:
    # mmseg's RandomCrop draws: `mask_window(top, left)` is the label window a box would cut.
    top, left = _crop_box(rng, shape, crop_size)
    if cat_max_ratio < 1.0:
        for _ in range(10):
            if _mixed_enough(mask_window(top, left), cat_max_ratio, ignore_index):
                break
            top, left = _crop_box(rng, shape, crop_size)
    return top, left


def random_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop_size: tuple[int, int],
                cat_max_ratio: float = 1.0, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """mmseg's ``RandomCrop``: a random window of at most ``crop_size``.

    With ``cat_max_ratio < 1`` a window is redrawn, up to 10 times, unless it holds at least two
    classes and none covers ``cat_max_ratio`` or more of its non-ignored pixels; after 10 failed
    checks the 11th window is taken unchecked.
    """

    def window(a, t, l):
        return a[t:t + crop_size[0], l:l + crop_size[1]]

    top, left = _choose_crop(rng, mask.shape, crop_size, cat_max_ratio, ignore_index,
                             lambda t, l: window(mask, t, l))
    return window(image, top, left), window(mask, top, left)


def rescaled_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale: tuple[int, int],
                  crop_size: tuple[int, int], cat_max_ratio: float = 1.0, ignore_index: int = IGNORE_INDEX
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``random_crop(*rescale(image, mask, scale), rng, ...)``, bitwise, without the full resize.

    The crop boxes are drawn on the rescaled size alone; each candidate's label window is read
    through the nearest-resize index maps, and only the chosen window of the image is resampled
    (its bilinear taps are the full resize's, in the full image's coordinates).
    """
    height, width = rescale_size(image.shape[0], image.shape[1], scale)
    rows = _nearest_source(mask.shape[0], height)
    cols = _nearest_source(mask.shape[1], width)

    def mask_window(t, l):
        return np.take(np.take(mask, rows[t:t + crop_size[0]], axis=0), cols[l:l + crop_size[1]], axis=1)

    top, left = _choose_crop(rng, (height, width), crop_size, cat_max_ratio, ignore_index, mask_window)
    window = (min(crop_size[0], height - top), min(crop_size[1], width - left))
    return resize_bilinear_window(image, height, width, (top, left), window), mask_window(top, left)


def random_flip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, prob: float = 0.5
                ) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of image and mask together with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], mask[:, ::-1]
    return image, mask


def pad_to(image: np.ndarray, mask: np.ndarray, size: tuple[int, int], pad_colour=MEAN_COLOUR_UINT8,
           ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Pads at the bottom and right to ``size`` (height, width): image with ``pad_colour``, mask with
    ``ignore_index``; inputs of that size already come back as they are. Larger inputs are an
    error (crop first)."""
    height, width = image.shape[:2]
    if height > size[0] or width > size[1]:
        raise ValueError(f"image {height}x{width} is larger than the pad size {size[0]}x{size[1]}")
    if (height, width) == tuple(size):
        return image, mask
    padded_image = np.empty((size[0], size[1], image.shape[2]), image.dtype)
    padded_image[...] = np.asarray(pad_colour, image.dtype)
    padded_image[:height, :width] = image
    padded_mask = np.full(size, ignore_index, mask.dtype)
    padded_mask[:height, :width] = mask
    return padded_image, padded_mask


# --- photometric distortion ----------------------------------------------------------------


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg's PhotoMetricDistortion.convert: float32 affine map, clip, then truncate to uint8.
    return np.clip(values.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 HSV in OpenCV's 8-bit ranges: H in [0, 180) (degrees / 2), S and V in [0, 255]."""
    x = image.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(axis=-1)
    diff = value - x.min(axis=-1)
    safe = np.where(diff > 0, diff, 1)
    hue = np.where(value == r, (g - b) / safe, np.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = np.where(diff > 0, hue * 30.0, 0.0)  # 60 degrees per unit, halved for 8 bits
    hue = np.rint(np.where(hue < 0, hue + 180, hue)) % 180
    saturation = np.rint(np.where(value > 0, 255 * diff / np.where(value > 0, value, 1), 0))
    return np.stack([hue, saturation, value], axis=-1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_hsv` (OpenCV's 8-bit HSV -> RGB), rounded to uint8."""
    h = hsv[..., 0].astype(np.float32) / 30.0  # sectors of 60 degrees
    s = hsv[..., 1].astype(np.float32) / 255.0
    v = hsv[..., 2].astype(np.float32)
    sector = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # Per sector 0..5, which of (v, p, q, t) each channel takes.
    red = np.choose(sector, [v, q, p, p, t, v])
    green = np.choose(sector, [t, v, v, q, p, p])
    blue = np.choose(sector, [p, p, t, v, v, q])
    return np.clip(np.rint(np.stack([red, green, blue], axis=-1)), 0, 255).astype(np.uint8)


def adjust_brightness(image: np.ndarray, delta: float) -> np.ndarray:
    return _convert(image, beta=delta)


def adjust_contrast(image: np.ndarray, alpha: float) -> np.ndarray:
    return _convert(image, alpha=alpha)


def adjust_saturation(image: np.ndarray, alpha: float) -> np.ndarray:
    hsv = rgb_to_hsv(image)
    hsv[..., 1] = _convert(hsv[..., 1], alpha=alpha)
    return hsv_to_rgb(hsv)


def adjust_hue(image: np.ndarray, delta: int) -> np.ndarray:
    hsv = rgb_to_hsv(image)
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + delta) % 180
    return hsv_to_rgb(hsv)


@dataclasses.dataclass(frozen=True)
class PhotometricParams:
    """One draw of mmseg's ``PhotoMetricDistortion``; None = that step skipped."""

    brightness: float | None
    contrast_first: bool
    contrast: float | None
    saturation: float | None
    hue: int | None


def sample_photometric(rng: np.random.Generator, brightness_delta: float = 32,
                       contrast_range: tuple[float, float] = (0.5, 1.5),
                       saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18
                       ) -> PhotometricParams:
    """Draws the parameters in mmseg's order; each step happens with probability 1/2.

    Brightness adds U(-32, 32); contrast multiplies by U(0.5, 1.5), before the colour steps or
    after them with equal odds; saturation multiplies S by U(0.5, 1.5); hue adds an integer in
    [-18, 18) (numpy's ``randint(-18, 18)``, as mmseg draws it) to H, modulo 180.
    """
    brightness = rng.uniform(-brightness_delta, brightness_delta) if rng.integers(2) else None
    contrast_first = bool(rng.integers(2))  # mmseg's ``mode == 1``
    contrast = None
    if contrast_first and rng.integers(2):
        contrast = rng.uniform(*contrast_range)
    saturation = rng.uniform(*saturation_range) if rng.integers(2) else None
    hue = int(rng.integers(-hue_delta, hue_delta)) if rng.integers(2) else None
    if not contrast_first and rng.integers(2):
        contrast = rng.uniform(*contrast_range)
    return PhotometricParams(brightness, contrast_first, contrast, saturation, hue)


def apply_photometric(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
    """Applies one draw: brightness, [contrast], saturation, hue, [contrast]."""
    if params.brightness is not None:
        image = adjust_brightness(image, params.brightness)
    if params.contrast_first and params.contrast is not None:
        image = adjust_contrast(image, params.contrast)
    if params.saturation is not None:
        image = adjust_saturation(image, params.saturation)
    if params.hue is not None:
        image = adjust_hue(image, params.hue)
    if not params.contrast_first and params.contrast is not None:
        image = adjust_contrast(image, params.contrast)
    return image


# --- whole pipelines -----------------------------------------------------------------------


# Columns of :func:`photometric_columns`: the four steps' parameters (NaN: step skipped), whether
# contrast goes first, and the crop's extent before padding (the distortion stops there).
PHOTOMETRIC_COLUMNS = ("brightness", "contrast", "saturation", "hue", "contrast_first", "height", "width")


def photometric_columns(params: PhotometricParams, height: int, width: int) -> np.ndarray:
    """One draw and the crop's unpadded (height, width) as float32 [len(PHOTOMETRIC_COLUMNS)], for
    applying the draw on the device (``vim_jax.data.device_photometric``)."""
    steps = (params.brightness, params.contrast, params.saturation, params.hue)
    return np.asarray([np.nan if v is None else v for v in steps] + [params.contrast_first, height, width],
                      np.float32)


def train_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
               config: SegTrainConfig = SegTrainConfig()
               ) -> tuple[np.ndarray, np.ndarray, PhotometricParams | None]:
    """The training pipeline up to the photometric distortion: the flipped, unpadded crop (image,
    mask) and the distortion's draw (None without ``config.photometric``), in mmseg's draw order."""
    _check_pair(image, mask)
    image, mask = rescaled_crop(image, mask, rng, sample_scale(rng, config.scale, config.ratio_range),
                                config.crop_size, config.cat_max_ratio, config.ignore_index)
    image, mask = random_flip(image, mask, rng, config.flip_prob)
    return image, mask, sample_photometric(rng) if config.photometric else None


def train_transform(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    config: SegTrainConfig = SegTrainConfig(), photometric_on_device: bool = False
                    ) -> dict[str, np.ndarray]:
    """The official training pipeline: {"image": uint8 [crop_h, crop_w, 3], "mask": [crop_h, crop_w]}.
    With ``photometric_on_device`` the distortion is only drawn: the dict also holds
    "photometric" (:func:`photometric_columns`) for the training step to apply."""
    image, mask, photometric = train_crop(image, mask, rng, config)
    drawn = {}
    if photometric is not None and photometric_on_device:
        drawn["photometric"] = photometric_columns(photometric, *mask.shape)
    elif photometric is not None:
        image = apply_photometric(image, photometric)
    image, mask = pad_to(image, mask, config.crop_size, config.pad_colour, config.ignore_index)
    return {"image": image, "mask": mask, **drawn}


def eval_transform(image: np.ndarray, scale: tuple[int, int] = (2048, 512)) -> np.ndarray:
    """The official evaluation resize: keep-ratio bilinear to fit ``scale`` (the mask is not resized)."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}")
    return rescale(image, None, scale)[0]


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
