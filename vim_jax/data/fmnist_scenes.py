"""Fashion-MNIST scenes: a small semantic-segmentation dataset built from real Fashion-MNIST images.

Each scene is a canvas (by default 256 to 1024 px a side, height and width drawn separately) with
a smooth random colour background and several Fashion-MNIST items pasted at random sizes and
positions, each tinted with a random colour; later items cover earlier ones. A pixel is labelled
``k + 1`` (Fashion-MNIST class ``k``) where the visible item's foreground is (its resized grey
value at least ``threshold``), and 0 (background) elsewhere: 11 classes. Train scenes use only
the Fashion-MNIST train split, test scenes only its test split, so no item is shared.

Scenes are not stored: scene ``i`` is drawn from a generator seeded by (seed, split, i), so a
source is random access and the same on every machine. Records are
``{"image": uint8 [H, W, 3], "mask": uint8 [H, W]}``. See docs/fmnist_scenes.md; its picture is

    python -m vim_jax.data.fmnist_scenes docs/fmnist_scenes_example.png --size 288 --index 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
from PIL import Image

from vim_jax.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from vim_jax.data.fashion_mnist import load_fashion_mnist

CLASS_NAMES = ("background",) + FASHION_MNIST_CLASSES
NUM_CLASSES = len(CLASS_NAMES)
_SPLIT_KEYS = {"train": 0, "test": 1}
_MIN_ITEM = 8  # px: smaller items would be a few pixels of noise


@dataclasses.dataclass(frozen=True)
class Placement:
    """One pasted item: Fashion-MNIST ``index`` of the split (class ``label``) at a square box."""

    index: int
    label: int
    top: int
    left: int
    size: int
    colour: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class SceneLayout:
    """Everything random about one scene; :meth:`FashionMnistScenes.render` turns it into pixels."""

    height: int
    width: int
    background_grid: np.ndarray  # uint8 [gh, gw, 3], upsampled smoothly to the canvas
    noise_seed: int
    placements: tuple[Placement, ...]


def _as_range(value, name: str) -> tuple:
    low, high = (value, value) if np.isscalar(value) else tuple(value)
    if low > high:
        raise ValueError(f"{name}: lower bound {low} is above upper bound {high}")
    return low, high


class FashionMnistScenes:
    """Random-access Fashion-MNIST scenes for one split.

    Args:
      split: 'train' (items from the 60000 train images) or 'test' (from the 10000 test images).
      size: canvas side in px: an int for square canvases, or (low, high) to draw height and width
        independently and uniformly in that range.
      num_scenes: length of the source.
      seed: scene ``i`` is a pure function of (seed, split, i).
      items: (low, high) number of items per scene.
      item_scale: (low, high) item side as a fraction of the canvas's shorter side.
      threshold: grey value (0-255, after resizing the item) from which an item pixel is foreground.
      noise_std: std of the per-pixel noise added to the background.
      data_dir: Fashion-MNIST IDX directory (default: see ``fashion_mnist.fashion_mnist_dir``).
    """

    def __init__(self, split: str = "train", size: int | tuple[int, int] = (256, 1024), num_scenes: int = 10000,
                 seed: int = 0, *, items: tuple[int, int] = (3, 8), item_scale: tuple[float, float] = (0.1, 0.4),
                 threshold: int = 32, noise_std: float = 6.0, data_dir: str | os.PathLike | None = None):
        if split not in _SPLIT_KEYS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_KEYS)}, got {split!r}")
        self.size = _as_range(size, "size")
        self.items = _as_range(items, "items")
        self.item_scale = _as_range(item_scale, "item_scale")
        if self.size[0] < 32:
            raise ValueError(f"canvas side must be at least 32 px, got {size}")
        if self.items[0] < 1:
            raise ValueError(f"a scene needs at least one item, got items={items}")
        if not (0 < self.item_scale[0] and self.item_scale[1] <= 1):
            raise ValueError(f"item_scale must lie in (0, 1], got {item_scale}")
        if not 0 < threshold < 256:
            raise ValueError(f"threshold must be a grey value in 1..255, got {threshold}")
        if num_scenes < 1:
            raise ValueError(f"num_scenes must be positive, got {num_scenes}")
        self.split = split
        self.num_scenes = int(num_scenes)
        self.seed = int(seed)
        self.threshold = int(threshold)
        self.noise_std = float(noise_std)
        self.images, self.labels = load_fashion_mnist(split, data_dir)

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.render(self.layout(i))

    def layout(self, i: int) -> SceneLayout:
        """Draws scene ``i``'s canvas size, background and item placements."""
        i = int(i)
        if not 0 <= i < self.num_scenes:
            raise IndexError(f"scene {i} out of range for {self.num_scenes} scenes")
        rng = np.random.default_rng([self.seed, _SPLIT_KEYS[self.split], i])
        height, width = (int(v) for v in rng.integers(self.size[0], self.size[1] + 1, 2))
        cells = rng.integers(2, 7, 2)
        base = rng.uniform(40, 200, 3)
        background_grid = np.clip(base + rng.normal(0, 35, (*cells, 3)), 0, 255).astype(np.uint8)
        short = min(height, width)
        placements = []
        for _ in range(int(rng.integers(self.items[0], self.items[1] + 1))):
            index = int(rng.integers(len(self.images)))
            size = max(_MIN_ITEM, int(round(rng.uniform(*self.item_scale) * short)))
            placements.append(Placement(
                index=index, label=int(self.labels[index]), size=size,
                top=int(rng.integers(height - size + 1)), left=int(rng.integers(width - size + 1)),
                colour=tuple(int(c) for c in rng.integers(60, 256, 3))))
        return SceneLayout(height, width, background_grid, int(rng.integers(2**31)), tuple(placements))

    def item_foreground(self, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
        """(grey uint8 [s, s], foreground bool [s, s]) of one placement's resized item."""
        item = Image.fromarray(np.asarray(self.images[placement.index]))
        grey = np.asarray(item.resize((placement.size, placement.size), Image.BILINEAR))
        return grey, grey >= self.threshold

    def render(self, layout: SceneLayout) -> dict[str, np.ndarray]:
        """The image and label mask of a layout."""
        grid = Image.fromarray(layout.background_grid)
        image = np.asarray(grid.resize((layout.width, layout.height), Image.BICUBIC), np.float32)
        noise = np.random.default_rng(layout.noise_seed).normal(0, self.noise_std, image.shape)
        image = image + noise.astype(np.float32)
        mask = np.zeros((layout.height, layout.width), np.uint8)
        for p in layout.placements:
            grey, foreground = self.item_foreground(p)
            # Shade the tint by the item's grey value so its texture stays visible.
            shaded = np.asarray(p.colour, np.float32) * (0.35 + 0.65 * grey[..., None] / 255.0)
            box = (slice(p.top, p.top + p.size), slice(p.left, p.left + p.size))
            image[box] = np.where(foreground[..., None], shaded, image[box])
            mask[box] = np.where(foreground, p.label + 1, mask[box])
        return {"image": np.clip(np.rint(image), 0, 255).astype(np.uint8), "mask": mask}


def main(argv: list[str] | None = None) -> None:
    """Writes one scene as a PNG: the image, and its labels coloured with a legend."""
    from vim_jax.segmentation.overlay import save_overlay

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("--split", default="train", choices=sorted(_SPLIT_KEYS))
    parser.add_argument("--size", type=int, nargs="+", default=[256, 1024], help="side, or low high")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, nargs=2, default=[4, 7])
    args = parser.parse_args(argv)
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    scenes = FashionMnistScenes(args.split, size, args.index + 1, args.seed, items=tuple(args.items))
    record = scenes[args.index]
    labels = save_overlay(args.out, record["image"], record["mask"], alpha=1.0, class_names=CLASS_NAMES)
    gap = np.full((record["image"].shape[0], 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([record["image"], gap, labels], axis=1)).save(args.out, optimize=True)
    print(f"wrote {args.out}: {args.split} scene {args.index}, {record['mask'].shape[1]}x{record['mask'].shape[0]} px")


if __name__ == "__main__":
    main()
