"""Tiny ImageNet-2012 archives in the official layout, for testing the real TFDS builder.

The TFDS ``imagenet2012`` builder (tensorflow_datasets/datasets/imagenet2012) reads, from its
manual directory:

* ``ILSVRC2012_img_train.tar``: one inner tar per synset (``n01440764.tar``), each holding JPEGs
  named ``n01440764_<k>.JPEG``; the label is the inner tar's name without ``.tar``.
* ``ILSVRC2012_img_val.tar``: flat JPEGs ``ILSVRC2012_val_00000001.JPEG`` ...; their labels come
  from the builder's own bundled ``validation_labels.txt``, zipped with the *sorted* member names,
  so image ``i`` (1-based) gets line ``i`` of that file.
* ``ILSVRC2012_img_test.tar`` is optional (the builder skips a missing split with a warning), so
  none is written.

Images are random but seeded. Each class gets its own mean colour, so a model trained on the fake
data has something to learn; a validation image uses the colour of the label the builder will
give it. Usage::

    python -m vim_jax.data.fake_imagenet DIR [--classes 5 --train-per-class 4 --val 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from vim_jax.data.imagenet_labels import tfds_synsets, tfds_validation_synsets

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"


@dataclasses.dataclass(frozen=True)
class FakeImageNetSpec:
    """What to write. Sizes are (width, height) ranges; each image draws its own size."""

    num_classes: int = 5
    train_per_class: int = 4
    num_val: int = 10
    min_size: tuple[int, int] = (40, 32)
    max_size: tuple[int, int] = (96, 80)
    noise_std: float = 10.0
    jpeg_quality: int = 90
    seed: int = 0


def _class_colour(label: int) -> np.ndarray:
    # Deterministic, well spread colours: golden-ratio hue steps on a fixed saturation/value.
    hue = (label * 0.61803398875) % 1.0
    rgb = Image.new("HSV", (1, 1), (int(hue * 255), 200, 200)).convert("RGB").getpixel((0, 0))
    return np.asarray(rgb, np.float32)


def fake_jpeg(rng: np.random.Generator, label: int, size: tuple[int, int], spec: FakeImageNetSpec) -> bytes:
    """One JPEG of the given (width, height): a smooth random field around the class colour, plus
    pixel noise, so that it compresses about as well as a photograph does."""
    width, height = size
    coarse = rng.normal(0.0, 40.0, (max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
    smooth = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
        np.float32,
    ) - 128
    pixels = _class_colour(label) + smooth + rng.normal(0.0, spec.noise_std, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=spec.jpeg_quality)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible archives
    tar.addfile(info, io.BytesIO(data))


def _random_size(rng: np.random.Generator, spec: FakeImageNetSpec) -> tuple[int, int]:
    return (int(rng.integers(spec.min_size[0], spec.max_size[0] + 1)),
            int(rng.integers(spec.min_size[1], spec.max_size[1] + 1)))


def write_fake_imagenet(manual_dir: str | os.PathLike, spec: FakeImageNetSpec = FakeImageNetSpec()) -> dict:
    """Writes ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar`` into ``manual_dir``.

    Train classes are the first ``spec.num_classes`` wnids of TFDS's labels.txt (labels
    0..num_classes-1). Returns a summary: the synsets, per-split counts and the validation labels
    (integer ids) the builder will assign.
    """
    manual_dir = Path(manual_dir)
    manual_dir.mkdir(parents=True, exist_ok=True)
    synsets = tfds_synsets()
    label_of = {wnid: i for i, wnid in enumerate(synsets)}
    train_synsets = synsets[: spec.num_classes]
    rng = np.random.default_rng(spec.seed)

    with tarfile.open(manual_dir / TRAIN_TAR, "w") as outer:
        for wnid in train_synsets:
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for k in range(spec.train_per_class):
                    jpeg = fake_jpeg(rng, label_of[wnid], _random_size(rng, spec), spec)
                    _add_bytes(inner, f"{wnid}_{k + 1}.JPEG", jpeg)
            _add_bytes(outer, f"{wnid}.tar", inner_bytes.getvalue())

    val_synsets = tfds_validation_synsets()[: spec.num_val]
    with tarfile.open(manual_dir / VAL_TAR, "w") as tar:
        for i, wnid in enumerate(val_synsets):
            jpeg = fake_jpeg(rng, label_of[wnid], _random_size(rng, spec), spec)
            _add_bytes(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg)

    return {
        "train_synsets": train_synsets,
        "num_train": spec.num_classes * spec.train_per_class,
        "num_val": spec.num_val,
        "val_labels": [label_of[w] for w in val_synsets],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manual_dir")
    parser.add_argument("--classes", type=int, default=FakeImageNetSpec.num_classes)
    parser.add_argument("--train-per-class", type=int, default=FakeImageNetSpec.train_per_class)
    parser.add_argument("--val", type=int, default=FakeImageNetSpec.num_val)
    parser.add_argument("--min-size", type=int, nargs=2, default=FakeImageNetSpec.min_size, metavar=("W", "H"))
    parser.add_argument("--max-size", type=int, nargs=2, default=FakeImageNetSpec.max_size, metavar=("W", "H"))
    parser.add_argument("--noise-std", type=float, default=FakeImageNetSpec.noise_std,
                        help="pixel noise; 24 gives ~105 KB per 500x375 JPEG, about ImageNet's average file")
    parser.add_argument("--quality", type=int, default=FakeImageNetSpec.jpeg_quality)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = write_fake_imagenet(args.manual_dir, FakeImageNetSpec(
        num_classes=args.classes, train_per_class=args.train_per_class, num_val=args.val,
        min_size=tuple(args.min_size), max_size=tuple(args.max_size), noise_std=args.noise_std,
        jpeg_quality=args.quality, seed=args.seed))
    print(f"wrote {summary['num_train']} train images in {len(summary['train_synsets'])} synsets and "
          f"{summary['num_val']} validation images to {args.manual_dir}")


if __name__ == "__main__":
    main()
