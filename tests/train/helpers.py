"""Helpers for the trainer tests: the smoke config, running the CLI, reading a run's results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vim_jax import cli
from vim_jax.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
FASHION_MNIST = REPO / "experiments" / "configs" / "fashion_mnist.py"
SMOKE = f"{FASHION_MNIST}:smoke"
QUIET = ("--config.progress_bar=False",)
# Every piece of training state that a resumed run must bring back: the dropout RNG (drop path),
# the Mixup/CutMix draws and the EMA. The tests that train with these options (at the same number
# of steps) run the same compiled programs, which the session's compilation cache then holds.
FULL_STATE = ("--config.model.drop_path_rate=0.2", "--config.augment.mixup_alpha=0.8",
              "--config.augment.cutmix_alpha=1.0", "--config.ema_decay=0.9", "--config.eval_ema=True",
              "--config.eval_batch_size=1000")


def subprocess_env(cache_dir: str, **extra: str) -> dict[str, str]:
    """Environment for a `python -m vim_jax.cli` child sharing the session's compilation cache."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def cli_command(command: str, workdir: Path, *overrides: str, config: str = SMOKE) -> list[str]:
    return [sys.executable, "-m", "vim_jax.cli", command, "--config", config, "--workdir", str(workdir),
            *QUIET, *overrides]


def train(workdir: Path, *overrides: str, config: str = SMOKE) -> int:
    """`vim-jax train` in this process (the real command line, parsed by the real CLI)."""
    return cli.main(["train", "--config", config, "--workdir", str(workdir), *QUIET, *overrides])


def losses(workdir: Path) -> dict[int, float]:
    """step -> logged training loss, from metrics.jsonl."""
    return {row["step"]: row["train/loss"] for row in read_metrics(workdir) if "train/loss" in row}


def checkpoint_steps(workdir: Path) -> list[int]:
    directory = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []
