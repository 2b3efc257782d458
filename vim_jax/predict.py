"""`vim-jax predict`: the top-5 ImageNet classes of image files, or their segmentation overlays.

    vim-jax predict --model vim_small --checkpoint vim_s_midclstok_80p5acc.pth photo.jpg more/*.jpg
    vim-jax predict --task segment --checkpoint runs/scenes/checkpoints scene.png --out overlay.png

Classification: images go through the model's evaluation transform (PIL bicubic resize of the
shorter side, centre crop, ImageNet mean/std: the official one), then through one jit-compiled
forward pass per batch; the last batch is padded so that a single shape is compiled.

Segmentation (`--task segment`): a segmentor trained by `vim-jax train` (its checkpoint records
the model and the evaluation resize) labels every pixel of each image by mmseg's sliding-window
test mode (`vim_jax.segment`); a PNG of the image with the labels' colours blended
in and a legend of the classes present is written to `--out` (`vim_jax.segmentation.overlay`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from PIL import Image

from vim_jax.ops import list_backends
from vim_jax.registry import EvalSettings, create_model, list_models, resolve


TASKS = ("classify", "segment")
DEFAULT_MODELS = {"classify": "vim_small", "segment": "upernet_vim_tiny"}
OVERLAY_SUFFIX = "_segmentation.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `predict` subcommand's arguments."""
    parser.add_argument("images", nargs="+", help="image files (anything PIL reads)")
    parser.add_argument("--task", choices=TASKS, default="classify",
                        help="classify: print the top classes; segment: write colour overlays of the labels")
    parser.add_argument("--model", default=None,
                        help=f"registered model name ({', '.join(list_models())}); default: vim_small, or for "
                             "--task segment the checkpoint's model (upernet_vim_tiny without one)")
    parser.add_argument("--checkpoint", default=None,
                        help="official .pth or vim_jax checkpoint directory (--task segment: a segmentation run's "
                             "checkpoints); without one the weights are random")
    parser.add_argument("--out", default=None,
                        help=f"--task segment: the PNG to write for one image, or a directory for several "
                             f"(default: <image name>{OVERLAY_SUFFIX} in the current directory)")
    parser.add_argument("--alpha", type=float, default=0.5, help="--task segment: opacity of the label colours")
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
    if args.task == "segment":
        return _segment(args)
    if args.out is not None:
        raise ValueError("--out is for --task segment; classification prints its results")
    if args.batch_size < 1 or args.top_k < 1:
        raise ValueError("--batch-size and --top-k must be positive")
    entry = resolve(args.model or DEFAULT_MODELS["classify"])
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


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] of an image file (any mode PIL converts to RGB)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:  # missing, unreadable, truncated or not an image
        raise ValueError(f"cannot read image {path}: {err}") from None


def overlay_paths(images: Sequence[str], out: str | None) -> list[Path]:
    """Where each image's overlay goes: ``out`` itself for one image (a file), files in the
    directory ``out`` for several, or the current directory without ``out``."""
    names = [Path(image).stem + OVERLAY_SUFFIX for image in images]
    if len(set(names)) < len(names):
        raise ValueError("images with the same file name would write the same overlay; segment them separately")
    if out is None:
        return [Path(name) for name in names]
    out = Path(out)
    if len(images) == 1 and not out.is_dir():
        if out.suffix.lower() != ".png":
            raise ValueError(f"--out {out}: overlays are PNG files (name it *.png)")
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: directory {out.parent} does not exist")
        return [out]
    if not out.is_dir():
        raise ValueError(f"--out {out} must be an existing directory for {len(images)} images")
    return [out / name for name in names]


def _segment(args) -> int:
    from vim_jax.segment import (Segmenter, check_segmentor, class_names_for, default_scale,
                                                load_segmentor)
    from vim_jax.segmentation.overlay import palette_for, save_overlay

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.backend:
        raise ValueError("--backend applies to --task classify; a segmentor keeps the backend it was trained with")
    outputs = overlay_paths(args.images, args.out)
    images = [read_rgb(path) for path in args.images]
    if args.checkpoint is None:
        name = args.model or DEFAULT_MODELS["segment"]
        check_segmentor(name)
        print(f"warning: no --checkpoint: {name} has random weights, its labels mean nothing", file=sys.stderr)
        model = create_model(name)
        scale = default_scale(model.cfg)
    else:
        model, scale = load_segmentor(args.checkpoint, args.model)
    segmenter = Segmenter(model, scale)
    names = class_names_for(model.cfg.num_classes)
    palette = palette_for(model.cfg.num_classes)
    for path, image, out in zip(args.images, images, outputs):
        tic = time.perf_counter()
        labels = segmenter(image)
        seconds = time.perf_counter() - tic
        save_overlay(out, image, labels, alpha=args.alpha, palette=palette, class_names=names)
        present, counts = np.unique(labels, return_counts=True)
        order = np.argsort(-counts)[:5]
        shares = ", ".join(f"{names[present[i]] if names else present[i]} {100 * counts[i] / labels.size:.1f}%"
                           for i in order)
        print(f"{path}: {image.shape[1]}x{image.shape[0]} px -> {out} ({seconds:.2f} s; {shares})")
    return 0
