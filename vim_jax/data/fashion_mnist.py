"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, with numpy only (no TF).

The training machine has no TensorFlow, so this path imports numpy and jax alone. Files are the
original gzip'd IDX files under ``/usr/share/datasets/fashion-mnist`` (override with the
``VIM_JAX_FASHION_MNIST_DIR`` environment variable or a ``data_dir`` argument).

Pipeline: :func:`fashion_mnist_iterator` gives resumable, host-sharded batches (a Grain
pipeline, see ``pipeline.py``) of ``image`` uint8 [batch, 28, 28, 1], ``label`` int32 and ``mask``.
Training batches get a random crop from the zero-padded image and a random horizontal flip,
computed in numpy on the host. The images cross to the accelerator as uint8, where
:func:`fashion_mnist_to_float` normalises, resizes and replicates channels inside the jitted step;
or pass ``augment_on_device=True`` to receive the raw images and call
:func:`fashion_mnist_device_transform` (crop and flip too) there instead.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vim_jax.data.constants import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from vim_jax.data.pipeline import DataIterator, array_iterator
from vim_jax.data.sampler import IndexSampler
from vim_jax.data.seeding import hash_randint, hash_uniform

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "VIM_JAX_FASHION_MNIST_DIR"

# Label i is CLASS_NAMES[i] (zalandoresearch/fashion-mnist README).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_IDX_UBYTE = 0x08


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory to read: the argument, else $VIM_JAX_FASHION_MNIST_DIR, else the Debian path."""
    return Path(data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one (optionally gzip'd) IDX file of unsigned bytes into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {len(data) - header} bytes")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load_cached(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name, count = _FILES[split]
    paths = [Path(directory) / images_name, Path(directory) / labels_name]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST file(s) not found: {', '.join(missing)}. Install them with "
            f"`apt-get install dataset-fashion-mnist`, or point ${ENV_VAR} (or data_dir=) at a "
            "directory holding the gzip'd IDX files.")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise ValueError(f"unexpected Fashion-MNIST {split} shapes {images.shape}, {labels.shape}")
    if labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"Fashion-MNIST {split} labels out of range: max {labels.max()}")
    images.flags.writeable = False  # cached and shared: nobody may modify it in place
    labels = labels.astype(np.int32)
    labels.flags.writeable = False
    return images, labels


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, 28, 28], labels int32 [N]) for split 'train' (60000) or 'test' (10000)."""
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    return _load_cached(str(fashion_mnist_dir(data_dir)), split)


@dataclasses.dataclass(frozen=True)
class FashionMnistPreprocess:
    """How images leave the pipeline.

    Attributes:
      image_size: output height = width; 28 keeps the native size, anything else resizes
        (bilinear, antialiased when shrinking; the same weights as ``jax.image.resize``).
      channels: 1, or 3 to replicate the grey channel (for RGB models).
      pad: training crops 28x28 from the image zero-padded by this much on each side.
      flip: random horizontal flip in training.
      normalize: subtract the train-set mean and divide by its std; otherwise scale to [0, 1].
    """

    image_size: int = 28
    channels: int = 1
    pad: int = 4
    flip: bool = True
    normalize: bool = True

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError("channels must be 1 or 3")


def random_crop_flip_params(seed: int, positions: np.ndarray, pad: int, flip: bool
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example crop offsets in [0, 2 * pad] and flip flags, keyed on stream positions."""
    dy = hash_randint(seed, positions, 2 * pad + 1, stream=1)
    dx = hash_randint(seed, positions, 2 * pad + 1, stream=2)
    flips = (hash_uniform(seed, positions, stream=3) < 0.5) if flip else np.zeros(len(positions), bool)
    return dy, dx, flips


def random_crop_flip_numpy(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, flips: np.ndarray,
                           pad: int) -> np.ndarray:
    """Crops [N, H, W] images at offsets (dy, dx) of their zero-padded versions, then flips rows of
    the examples where ``flips``; same size out as in."""
    n, height, width = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    rows = dy[:, None] + np.arange(height)[None, :]                      # [N, H]
    cols = dx[:, None] + np.arange(width)[None, :]                       # [N, W]
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def fashion_mnist_numpy_transform(batch: dict, positions: np.ndarray, *, seed: int, train: bool,
                                  spec: FashionMnistPreprocess = FashionMnistPreprocess()) -> dict:
    """The host-side transform: uint8 [N, 28, 28] -> uint8 [N, 28, 28, 1] (+ int32 labels), randomly
    cropped and flipped in training. :func:`fashion_mnist_to_float` finishes it on device."""
    images = batch["image"]
    if train:
        dy, dx, flips = random_crop_flip_params(seed, positions, spec.pad, spec.flip)
        images = random_crop_flip_numpy(images, dy, dx, flips, spec.pad)
    return {**batch, "image": np.ascontiguousarray(images[..., None]), "label": batch["label"].astype(np.int32)}


def fashion_mnist_to_float(images: jax.Array, spec: FashionMnistPreprocess = FashionMnistPreprocess()) -> jax.Array:
    """On device: uint8 [N, 28, 28(, 1)] -> float32 [N, S, S, C]: scaled to [0, 1], normalised (if
    ``spec.normalize``), resized (bilinear, antialiased when shrinking) and channel-replicated."""
    if images.ndim == 4:
        images = images[..., 0]
    n, height, _ = images.shape
    images = images.astype(jnp.float32) / 255.0
    if spec.normalize:
        images = (images - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    if spec.image_size != height:
        images = jax.image.resize(images, (n, spec.image_size, spec.image_size), "linear")
    images = images[..., None]
    if spec.channels == 3:
        images = jnp.repeat(images, 3, axis=-1)
    return images


def fashion_mnist_device_transform(key: jax.Array, images: jax.Array, *, train: bool,
                                   spec: FashionMnistPreprocess = FashionMnistPreprocess()) -> jax.Array:
    """The whole transform in JAX, crop and flip included, for raw uint8 [N, 28, 28(, 1)] batches
    on device (``fashion_mnist_iterator(augment_on_device=True)``).

    Jit-able; ``key`` should differ per step (e.g. ``jax.random.fold_in(key, step)``). Returns
    float32 [N, S, S, C].
    """
    if images.ndim == 4:
        images = images[..., 0]
    n, height, width = images.shape
    if train:
        k_y, k_x, k_f = jax.random.split(key, 3)
        dy = jax.random.randint(k_y, (n,), 0, 2 * spec.pad + 1)
        dx = jax.random.randint(k_x, (n,), 0, 2 * spec.pad + 1)
        padded = jnp.pad(images, ((0, 0), (spec.pad, spec.pad), (spec.pad, spec.pad)))
        crop = lambda img, y, x: jax.lax.dynamic_slice(img, (y, x), (height, width))
        images = jax.vmap(crop)(padded, dy, dx)
        if spec.flip:
            flips = jax.random.bernoulli(k_f, 0.5, (n,))
            images = jnp.where(flips[:, None, None], images[:, :, ::-1], images)
    return fashion_mnist_to_float(images, spec)


def fashion_mnist_iterator(split: str, global_batch_size: int, *, train: bool | None = None, seed: int = 0,
                           spec: FashionMnistPreprocess = FashionMnistPreprocess(),
                           augment_on_device: bool = False, num_repeats: int = 1, num_replicas: int = 1,
                           process_index: int | None = None, process_count: int | None = None,
                           data_dir: str | os.PathLike | None = None) -> DataIterator:
    """Resumable host-local batches of Fashion-MNIST.

    Args:
      split: 'train' or 'test'.
      global_batch_size: examples per step over all hosts.
      train: shuffle + augment + drop the last partial batch, endlessly over epochs (default: split
        == 'train'); otherwise one pass in order, the last batch padded (``mask`` False).
      seed: order and augmentation are pure functions of it (and of the step).
      spec: output size, channels, crop padding, flip, normalisation.
      augment_on_device: yield raw uncropped images and leave crop and flip too to
        :func:`fashion_mnist_device_transform` in the jitted step.
      num_repeats, num_replicas: repeated augmentation (see ``IndexSampler``).
      process_index, process_count: host sharding (default: from jax).
      data_dir: directory of the IDX files (default: $VIM_JAX_FASHION_MNIST_DIR or the Debian path).
    """
    train = split == "train" if train is None else train
    images, labels = load_fashion_mnist(split, data_dir)
    sampler = IndexSampler(len(images), global_batch_size, seed=seed, shuffle=train, drop_remainder=train,
                           num_repeats=num_repeats, num_replicas=num_replicas,
                           process_index=process_index, process_count=process_count)
    # On-device augmentation: the host leaves the images as they are.
    transform = functools.partial(fashion_mnist_numpy_transform, seed=seed, train=train and not augment_on_device,
                                  spec=spec)
    return array_iterator({"image": images, "label": labels}, sampler, transform,
                          num_steps=None if train else sampler.steps_per_epoch)
