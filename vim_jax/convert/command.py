"""`vim-jax convert`: an official `.pth` checkpoint -> a vim_jax orbax checkpoint, or back.

    vim-jax convert --model vim_small vim_s_midclstok_80p5acc.pth ckpt/vim_small
    vim-jax convert --model vim_small --to-pth ckpt/vim_small vim_small_export.pth
    vim-jax convert --model deit_tiny deit_tiny_patch16_224-a1311bcf.pth ckpt/deit_tiny    # timm's / DeiT's layout

The orbax directory stores the parameters and a JSON of the model name and config, and loads
without torch: `create_model("vim_small", checkpoint="ckpt/vim_small")`.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
from flax import nnx

from vim_jax.convert.checkpoint import WHICH, CheckpointMismatchError, export_official, fill_abstract, read_params
from vim_jax.convert.orbax_io import model_metadata, save_params
from vim_jax.convert.pth_reader import CheckpointFormatError
from vim_jax.registry import get_config, list_models, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `convert` subcommand's arguments."""
    parser.add_argument("--model", required=True, help=f"registered model name ({', '.join(list_models())})")
    parser.add_argument("source", help="official .pth file (or, with --to-pth, any checkpoint vim_jax reads)")
    parser.add_argument("destination", help="new orbax checkpoint directory (or, with --to-pth, a .pth file)")
    parser.add_argument("--which", choices=WHICH, default="model",
                        help="weights of a training dict to convert: 'model' (default) or the EMA 'model_ema'")
    parser.add_argument("--img-size", type=int, default=None,
                        help="image size of the converted model (the position embedding is resized)")
    parser.add_argument("--to-pth", action="store_true",
                        help="export to an official PyTorch state dict instead (needs torch)")


def run(args: argparse.Namespace) -> int:
    """Converts, printing what was read and written; expected failures exit with one message."""
    try:
        return _convert(args)
    except (FileNotFoundError, FileExistsError, ImportError, CheckpointFormatError, CheckpointMismatchError,
            ValueError) as err:
        raise SystemExit(f"vim-jax convert: error: {err}") from None


def _convert(args) -> int:
    entry = resolve(args.model)
    overrides = {"img_size": args.img_size} if args.img_size else {}
    config = get_config(entry.name, **overrides)
    abstract = nnx.eval_shape(lambda r: entry.build(config, r), nnx.Rngs(0))
    start = time.perf_counter()
    loaded = read_params(args.source, abstract, which=args.which)
    leaves = jax.tree.leaves(loaded.params)
    count = sum(math.prod(x.shape) for x in leaves)
    mapped = f"{loaded.entries} official keys" if loaded.kind == "pth" else f"{loaded.entries} arrays"
    print(f"read {loaded.path} ({loaded.kind}, '{args.which}'): {mapped} -> {len(leaves)} arrays, "
          f"{count:,} parameters of {entry.name} ({time.perf_counter() - start:.1f} s)")
    if loaded.pos_embed_resized:
        before, after = loaded.pos_embed_resized
        print(f"resized pos_embed {list(before)} -> {list(after)} for img_size={config.img_size}, "
              f"stride={config.stride}")
    start = time.perf_counter()
    if args.to_pth:
        path = export_official(fill_abstract(abstract, loaded.params), args.destination)
        print(f"wrote {path}: official state dict under 'model' ({time.perf_counter() - start:.1f} s)")
    else:
        metadata = model_metadata(config, entry.name, source=str(loaded.path), which=args.which)
        path = save_params(args.destination, loaded.params, metadata)
        print(f"wrote {path} ({time.perf_counter() - start:.1f} s); load it without torch with "
              f"create_model({entry.name!r}, checkpoint={str(path)!r})")
    return 0
