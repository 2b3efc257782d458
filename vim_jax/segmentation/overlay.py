"""Colour palettes for label maps and overlays of them on images (numpy + PIL only).

``overlay`` blends a label map's colours into an image; ``save_overlay`` writes it as a PNG,
optionally with a legend of the classes present. Palettes: ``ADE20K_PALETTE`` (the 150 colours
mmsegmentation uses for ADE20K, so pictures compare with published ones; it gives "road" and
"skyscraper" the same grey), ``SCENES_PALETTE`` for the 11 Fashion-MNIST scene classes (black
background, then the Tableau 10 colours), and :func:`distinct_palette` for any other count.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vim_jax.data.seg_transforms import IGNORE_INDEX

ADE20K_PALETTE = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
], np.uint8)

SCENES_PALETTE = np.array([
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], np.uint8)


def distinct_palette(num_classes: int) -> np.ndarray:
    """uint8 [num_classes, 3]: hues a golden-ratio step apart, alternating two brightness levels."""
    colours = [colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.75, 0.95 if k % 2 else 0.7)
               for k in range(num_classes)]
    return np.round(np.array(colours) * 255).astype(np.uint8).reshape(num_classes, 3)


def palette_for(num_classes: int) -> np.ndarray:
    """ADE20K's palette for 150 classes, the scenes' for 11, a generated one otherwise."""
    if num_classes == len(ADE20K_PALETTE):
        return ADE20K_PALETTE
    if num_classes == len(SCENES_PALETTE):
        return SCENES_PALETTE
    return distinct_palette(num_classes)


def _check(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, ignore_index: int) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    labels = mask[mask != ignore_index]
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise ValueError(f"labels {labels.min()}..{labels.max()} outside the palette's {len(palette)} colours")


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """uint8 [H, W, 3]: each label's palette colour, black where the label is ``ignore_index``."""
    mask = np.asarray(mask)
    colours = np.zeros((*mask.shape, 3), np.uint8)
    keep = mask != ignore_index
    colours[keep] = palette[mask[keep]]
    return colours


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, palette: np.ndarray | None = None,
            ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """uint8 [H, W, 3]: ``(1 - alpha) * image + alpha * colour(label)``; ignored pixels keep the image.

    ``palette`` defaults to :func:`palette_for` the number of labels the mask could hold
    (11 or 150 when its largest label fits, else a generated one).
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if palette is None:
        palette = _default_palette(mask, ignore_index)
    palette = np.asarray(palette, np.uint8)
    _check(image, mask, palette, ignore_index)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, palette, ignore_index)
    blended = np.where((mask == ignore_index)[..., None], image, np.rint(blended))
    return blended.astype(np.uint8)


def _default_palette(mask: np.ndarray, ignore_index: int) -> np.ndarray:
    labels = mask[mask != ignore_index]
    largest = int(labels.max()) if labels.size else 0
    for palette in (SCENES_PALETTE, ADE20K_PALETTE):
        if largest < len(palette):
            return palette
    return distinct_palette(largest + 1)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _legend(mask: np.ndarray, palette: np.ndarray, class_names: Sequence[str] | None, height: int,
            ignore_index: int) -> Image.Image:
    # The classes present, most pixels first, as far as the panel's height allows.
    labels, counts = np.unique(mask[mask != ignore_index], return_counts=True)
    labels = labels[np.argsort(-counts, kind="stable")]
    row = 18
    font = _font(13)
    names = [class_names[k] if class_names is not None else str(k) for k in labels]
    width = 34 + max([int(font.getlength(n)) for n in names] + [60])
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    fits = max(1, (height - 8) // row)
    shown = labels[:fits - 1] if len(labels) > fits else labels
    for i, (label, name) in enumerate(zip(shown, names)):
        y = 4 + i * row
        draw.rectangle((6, y + 2, 20, y + 14), fill=tuple(int(c) for c in palette[label]), outline=(0, 0, 0))
        draw.text((26, y + 1), name, fill=(0, 0, 0), font=font)
    if len(shown) < len(labels):
        draw.text((26, 4 + len(shown) * row + 1), f"+{len(labels) - len(shown)} more", fill=(0, 0, 0), font=font)
    return panel


def save_overlay(path: str | os.PathLike, image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5,
                 palette: np.ndarray | None = None, class_names: Sequence[str] | None = None,
                 legend: bool = True, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Writes the overlay as a PNG, with a legend panel on the right (class names, or label
    numbers without ``class_names``) unless ``legend=False``; returns the pixels written."""
    mask = np.asarray(mask)
    if palette is None:
        palette = _default_palette(mask, ignore_index)
    labels = mask[mask != ignore_index]
    if class_names is not None and labels.size and labels.max() >= len(class_names):
        raise ValueError(f"{len(class_names)} class names for labels up to {labels.max()}")
    picture = Image.fromarray(overlay(image, mask, alpha, palette, ignore_index))
    if legend:
        panel = _legend(mask, np.asarray(palette, np.uint8), class_names, picture.height, ignore_index)
        combined = Image.new("RGB", (picture.width + panel.width, picture.height), (255, 255, 255))
        combined.paste(picture, (0, 0))
        combined.paste(panel, (picture.width, 0))
        picture = combined
    picture.save(os.fspath(path), format="PNG")
    return np.asarray(picture)
