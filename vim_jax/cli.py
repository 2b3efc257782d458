"""`vim-jax`: train | eval | convert | predict.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args)`; it is
imported only when used, so `vim-jax predict` never imports the trainer (or TensorFlow).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vim_jax import huge_pages
from vim_jax.train.config_file import split_overrides

COMMANDS = {
    "train": ("vim_jax.train.command", "train a model from a config file"),
    "eval": ("vim_jax.train.eval_command", "evaluate a checkpoint on a dataset split"),
    "convert": ("vim_jax.convert.command", "convert an official .pth checkpoint to a vim_jax checkpoint"),
    "predict": ("vim_jax.predict", "print the top-5 ImageNet classes of images, or write segmentation overlays"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The subcommand's arguments; ``--config.<key>=<value>`` ones in ``args.config_overrides``."""
    parser = argparse.ArgumentParser(prog="vim-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    # Only the chosen subcommand's module is imported; the others get a stub parser for --help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(run=module.run)
    # argparse has no wildcard options: the config overrides are what it leaves over, and
    # vim_jax.train.config_file hands them to ml_collections.config_flags.
    args, extras = parser.parse_known_args(argv)
    overrides, unknown = split_overrides(extras)
    if unknown or (overrides and not hasattr(args, "config_overrides")):
        parser.error("unrecognized arguments: " + " ".join(unknown or extras))
    if hasattr(args, "config_overrides"):
        args.config_overrides = overrides
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; started as a program (`argv` None), first starts itself again with
    huge pages for XLA's host buffers where that helps (`vim_jax.huge_pages`)."""
    if argv is None:
        huge_pages.relaunch()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.run(args) or 0)

if __name__ == "__main__":
    sys.exit(main())
