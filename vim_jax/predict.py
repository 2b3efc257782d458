"""`vim-jax predict`: the top-5 ImageNet classes of image files.

    vim-jax predict --model vim_small --checkpoint vim_s_midclstok_80p5acc.pth photo.jpg more/*.jpg

Images go through the model's evaluation transform (PIL bicubic resize of the shorter side,
centre crop, ImageNet mean/std: the official one), then through one jit-compiled forward pass per
batch; the last batch is padded so that a single shape is compiled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from PIL import Image

from vim_jax.ops import list_backends
from vim_jax.registry import EvalSettings, create_model, list_models, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `predict` subcommand's arguments."""
    parser.add_argument("images", nargs="+", help="image files (anything PIL reads)")
    parser.add_argument("--model", default="vim_small", help=f"registered model name ({', '.join(list_models())})")
    parser.add_argument("--checkpoint", default=None,
                        help="official .pth or vim_jax checkpoint directory; without one the weights are random")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--backend", choices=list_backends(), default=None,
                        help="selective-scan backend (default: the fastest that runs here)")
    parser.add_argument("--top-k", type=int, default=5, help="classes printed per image (default 5)")


def load_images(sources: Sequence[str | os.PathLike | Image.Image], settings: EvalSettings) -> np.ndarray:
    """float32 `[n, size, size, 3]`: each image file (or PIL image) through the evaluation
    transform of `settings`."""
    from vim_jax.data.pil_transforms import eval_transform_pil

    images = []
    for source in sources:
        try:
            images.append(eval_transform_pil(source, image_size=settings.input_size,
                                             crop_pct=settings.crop_pct,
                                             mean=settings.mean, std=settings.std,
                                             interpolation=settings.interpolation))
        except (OSError, ValueError) as err:  # missing, unreadable, truncated or not an image
            raise ValueError(f"cannot read image {source}: {err}") from None
    return np.stack(images)


def class_names(num_classes: int) -> list[str]:
    """ImageNet names for 1000-class models; `class i` otherwise."""
    if num_classes == 1000:
        from vim_jax.data.imagenet_labels import imagenet_class_names

        return imagenet_class_names()
    return [f"class {i}" for i in range(num_classes)]


def top_k_predictor(model: nnx.Module, batch_shape: tuple[int, ...], k: int):
    """Compiles `images -> (probabilities, classes)` of the top `k` for one batch shape, ahead of
    time; returns the compiled function and the seconds compiling took."""
    model.eval()
    graphdef, state = nnx.split(model)

    def predict(state, images):
        probs = jax.nn.softmax(nnx.merge(graphdef, state)(images), axis=-1)
        return jax.lax.top_k(probs, k)

    start = time.perf_counter()
    compiled = jax.jit(predict).lower(state, jax.ShapeDtypeStruct(batch_shape, np.float32)).compile()
    return (lambda images: compiled(state, images)), time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    """Prints the top-k classes of each image and the timings; bad inputs exit with one message."""
    try:
        return _predict(args)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise SystemExit(f"vim-jax predict: error: {err}") from None


def _predict(args) -> int:
    if args.batch_size < 1 or args.top_k < 1:
        raise ValueError("--batch-size and --top-k must be positive")
    entry = resolve(args.model)
    images = load_images(args.images, entry.eval_settings)
    overrides = {"scan_backend": args.backend} if args.backend else {}
    if args.checkpoint is None:
        print(f"warning: no --checkpoint: {entry.name} has random weights, its predictions mean nothing",
              file=sys.stderr)
    model = create_model(entry.name, checkpoint=args.checkpoint, **overrides)
    names = class_names(model.cfg.num_classes)
    k = min(args.top_k, len(names))
    batch = min(args.batch_size, len(images))
    predict, compile_s = top_k_predictor(model, (batch, *images.shape[1:]), k)

    batch_times, results = [], []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        tic = time.perf_counter()
        probs, classes = jax.device_get(predict(padded))
        batch_times.append(time.perf_counter() - tic)
        results += list(zip(probs[:len(chunk)], classes[:len(chunk)]))

    for path, (probs, classes) in zip(args.images, results):
        print(path)
        for rank, (p, c) in enumerate(zip(probs, classes), 1):
            print(f"  {rank}. {names[c]:<40} {100 * p:6.2f}%")
    per_batch = float(np.mean(batch_times))
    print(f"{entry.name} on {jax.devices()[0].platform}: compile {compile_s:.2f} s, "
          f"{per_batch * 1e3:.1f} ms per batch of {batch} ({batch / per_batch:.1f} images/s) "
          f"over {len(batch_times)} batch(es)")
    return 0
