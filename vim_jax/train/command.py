"""``vim-jax train --config FILE.py[:arg] --workdir DIR [--config.key=value ...]``.

Trains the config's model in DIR, or resumes the run found there (rerun the same command after
an interruption). ``--config.<dotted.key>=<value>`` overrides any config field, typed like the
value it replaces, e.g. ``--config.global_batch_size=256 --config.optim.base_lr=1e-3``.
"""

from __future__ import annotations

import argparse
import sys

from vim_jax.train.config_file import accept_overrides, config_from_args
from vim_jax.train.metrics import log_to_console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE.py[:ARG]",
                        help="config file with get_config(arg); ':ARG' is passed to it")
    parser.add_argument("--workdir", required=True, metavar="DIR",
                        help="checkpoints, metrics.jsonl, TensorBoard events and plots go here")
    parser.epilog = "Any config field can be overridden with --config.<dotted.key>=<value>."
    accept_overrides(parser)


def run(args: argparse.Namespace) -> int:
    log_to_console()
    config = config_from_args(args)
    # The trainer (orbax, optax, the input pipelines) is imported only when a run starts.
    from vim_jax.train.train import NonFiniteLossError, train

    try:
        result = train(config, args.workdir)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result:
        print("final evaluation: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in result.items()))
    return 0
