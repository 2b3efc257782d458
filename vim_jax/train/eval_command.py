"""``vim-jax eval --config FILE.py[:arg] --workdir DIR [--split S] [--checkpoint PATH] [--ema]``.

Evaluates a checkpoint on a split of the config's dataset: the task's numbers (classification:
top-1, top-5 and cross-entropy; segmentation: mIoU, pixel and mean accuracy). By default the
latest checkpoint of the run in DIR; ``--checkpoint`` takes an official ``.pth`` or a
classifier's checkpoint of ours instead (position embeddings are resized to the config's model).
The result is printed as JSON and written to ``DIR/eval_<split>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import ml_collections
from flax import nnx

from vim_jax.convert import load_into
from vim_jax.train import tasks, train_state
from vim_jax.train.checkpoint import Checkpointer
from vim_jax.train.config_file import accept_overrides, config_from_args
from vim_jax.train.mesh import batch_sharding, initialize_distributed, make_mesh
from vim_jax.train.metrics import log_to_console
from vim_jax.train.train import evaluate, jit_eval_step


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE.py[:ARG]", help="the run's config file")
    parser.add_argument("--workdir", required=True, metavar="DIR", help="the run's directory")
    parser.add_argument("--split", default=None, help="dataset split (default: the config's eval_split)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="an official .pth or a vim_jax checkpoint (default: latest in DIR/checkpoints)")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA parameters of the run's checkpoint")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step in DIR (default: latest)")
    accept_overrides(parser)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | Path, *, checkpoint: str | None = None,
                        ema: bool = False, step: int | None = None) -> dict[str, float]:
    """Loads parameters (a run's checkpoint in ``workdir``, or ``checkpoint``) and evaluates them
    on ``config.dataset.eval_split``."""
    initialize_distributed(config)
    task = tasks.make_task(config)
    mesh = make_mesh(config.mesh.to_dict())
    setup = train_state.model_setup(config, mesh)
    shardings = setup.state_shardings
    if checkpoint is not None:
        if task.name != "classification":
            raise ValueError(f"--checkpoint reads classifiers; evaluate a {task.name} run from its --workdir")
        model = load_into(setup.abstract_model, checkpoint, which="model_ema" if ema else "model")
        _, params, batch_stats, rngs = nnx.split(model, *train_state.VARIABLE_GROUPS)
        params = train_state.put_global(nnx.to_pure_dict(params), shardings.params)
        batch_stats = train_state.put_global(nnx.to_pure_dict(batch_stats), shardings.batch_stats)
        rngs = train_state.put_global(nnx.to_pure_dict(rngs), shardings.rngs)
    else:
        checkpointer = Checkpointer(workdir, keep=None, asynchronous=False)
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {checkpointer.directory}; pass --checkpoint PATH")
        params, batch_stats, rngs = checkpointer.restore_params(setup.abstract_state, step=step, ema=ema)
        checkpointer.close()
    return evaluate(config, task, jit_eval_step(config, setup, mesh, task=task), {"params": params}, batch_stats,
                    rngs, batch_sharding(mesh))["params"]


def run(args: argparse.Namespace) -> int:
    log_to_console()
    config = config_from_args(args)
    if args.split:
        config.dataset.eval_split = args.split
    result = evaluate_checkpoint(config, args.workdir, checkpoint=args.checkpoint, ema=args.ema, step=args.step)
    result = {"split": config.dataset.eval_split, "checkpoint": args.checkpoint or f"{args.workdir}/checkpoints",
              "ema": args.ema, "step": args.step, **result}
    print(json.dumps(result))
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    split_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.dataset.eval_split)
    Path(args.workdir, f"eval_{split_name}.json").write_text(json.dumps(result, indent=2))
    return 0
