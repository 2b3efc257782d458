"""A tiny ``ADEChallengeData2016.zip`` in the official layout, for testing the real TFDS builder.

The archive holds ``ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_%08d.jpg``
and, for each, a single-channel PNG label map under ``annotations/`` with values 0 ("other") to
150. Each label map is a few random rectangles of random classes on a random class (some pixels
0); the image paints each class its own colour with noise, so image and labels agree. Usage::

    python -m vim_jax.data.fake_ade20k DIR [--train 6 --val 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from vim_jax.data.ade20k import ARCHIVE, ROOT, SPLITS
from vim_jax.data.ade20k_classes import NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class FakeAde20kSpec:
    """What to write; each image draws its (width, height) between the bounds."""

    num_train: int = 6
    num_val: int = 4
    min_size: tuple[int, int] = (48, 40)
    max_size: tuple[int, int] = (96, 80)
    seed: int = 0


def fake_example(rng: np.random.Generator, size: tuple[int, int]) -> tuple[bytes, np.ndarray]:
    """(JPEG bytes, label map uint8 [h, w] in 0..150) of the given (width, height)."""
    width, height = size
    labels = np.full((height, width), rng.integers(1, NUM_CLASSES + 1), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        top, left = int(rng.integers(height - 4)), int(rng.integers(width - 4))
        labels[top:top + int(rng.integers(4, height // 2)), left:left + int(rng.integers(4, width // 2))] = \
            rng.integers(0, NUM_CLASSES + 1)
    colours = np.random.default_rng(12345).integers(0, 256, (NUM_CLASSES + 1, 3))  # fixed per class
    pixels = colours[labels] + rng.normal(0, 8, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue(), labels


def _png(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(labels, mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(2016, 1, 1, 0, 0, 0))  # reproducible archives
    archive.writestr(info, data)


def write_fake_ade20k(manual_dir: str | os.PathLike, spec: FakeAde20kSpec = FakeAde20kSpec()) -> dict:
    """Writes ``ADEChallengeData2016.zip`` into ``manual_dir``; returns each split's label maps by
    file name (``{"train": {"ADE_train_00000001.jpg": uint8 [h, w]}, ...}``)."""
    manual_dir = Path(manual_dir)
    manual_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    written: dict[str, dict[str, np.ndarray]] = {}
    with zipfile.ZipFile(manual_dir / ARCHIVE, "w") as archive:
        for split, count, prefix in (("train", spec.num_train, "train"), ("validation", spec.num_val, "val")):
            subset = SPLITS[split]
            written[split] = {}
            for k in range(count):
                size = (int(rng.integers(spec.min_size[0], spec.max_size[0] + 1)),
                        int(rng.integers(spec.min_size[1], spec.max_size[1] + 1)))
                jpeg, labels = fake_example(rng, size)
                stem = f"ADE_{prefix}_{k + 1:08d}"
                _add(archive, f"{ROOT}/images/{subset}/{stem}.jpg", jpeg)
                _add(archive, f"{ROOT}/annotations/{subset}/{stem}.png", _png(labels))
                written[split][f"{stem}.jpg"] = labels
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manual_dir")
    parser.add_argument("--train", type=int, default=FakeAde20kSpec.num_train)
    parser.add_argument("--val", type=int, default=FakeAde20kSpec.num_val)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_fake_ade20k(args.manual_dir, FakeAde20kSpec(num_train=args.train, num_val=args.val, seed=args.seed))
    print(f"wrote {args.train} training and {args.val} validation examples to {Path(args.manual_dir) / ARCHIVE}")


if __name__ == "__main__":
    main()
