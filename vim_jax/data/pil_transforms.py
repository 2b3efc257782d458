"""The evaluation transform for single images with PIL + numpy (no TF), e.g. for ``vim-jax predict``.

It is torchvision's ``Resize(int(224 / 0.875), BICUBIC)`` + ``CenterCrop(224)`` + ``ToTensor`` +
``Normalize`` (the official Vim/DeiT evaluation transform), which itself resizes with PIL, so the
pixels here are the ones the released checkpoints were evaluated on. Output is channels-last.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vim_jax.data.constants import IMAGENET_EVAL_CROP_PCT, IMAGENET_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD

_INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS}


def eval_transform_pil(image: Image.Image | np.ndarray | str | os.PathLike, image_size: int = IMAGENET_IMAGE_SIZE,
                       crop_pct: float = IMAGENET_EVAL_CROP_PCT, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       interpolation: str = "bicubic") -> np.ndarray:
    """One image (PIL image, uint8 HWC array or file path) -> float32 [image_size, image_size, 3].

    Shorter side -> int(image_size / crop_pct) (the longer one -> int(that * long / short), as
    torchvision computes it), centre crop (offsets int(round((H - size) / 2))), scale to [0, 1],
    subtract ``mean`` and divide by ``std``.
    """
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as f:
            image = f.convert("RGB")
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    width, height = image.size
    size = int(image_size / crop_pct)
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), _INTERPOLATION[interpolation])
    top = int(round((new_h - image_size) / 2.0))
    left = int(round((new_w - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    pixels = np.asarray(image, np.float32) / 255.0
    return (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
