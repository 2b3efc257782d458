"""Where training numbers go: a progress bar, ``metrics.jsonl``, TensorBoard, and PNG plots.

* tqdm bar: step, loss, learning rate, images/s and the ETA;
* ``<workdir>/metrics.jsonl``: one JSON object per logged step (``step``, ``train/loss``,
  ``train/lr``, ``train/images_per_second``, ``eval/top1`` ... when evaluated). A resumed run
  first drops the rows after the step it resumes from (written by the interrupted run after its
  last checkpoint), so the file always describes one run;
* TensorBoard event files under ``<workdir>/tensorboard`` (tensorboardX, imported lazily; without
  it the run goes on with a warning);
* at the end, ``<workdir>/plots/{loss,lr,accuracy}.png`` from ``metrics.jsonl`` (which plots,
  and which keys each shows, is the task's: segmentation draws ``miou.png`` instead of accuracy).

Only the first host writes; the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``<workdir>/metrics.jsonl`` (empty if none)."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _truncate_after(path: Path, step: int) -> None:
    rows = [row for row in read_metrics(path.parent) if row["step"] <= step]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def log_to_console() -> None:
    """INFO messages of vim_jax, warnings of everything else (orbax is chatty at INFO)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("vim_jax").setLevel(logging.INFO)


class MetricsWriter:
    """Writes scalars to the progress bar, ``metrics.jsonl`` and TensorBoard.

    Args:
      workdir: the run's directory.
      start_step: the step the run starts (or resumes) from.
      total_steps: the last step, for the bar and the ETA.
      active: False on all hosts but the first.
      tensorboard: write TensorBoard event files.
      progress_bar: show the tqdm bar.
      plots: plot name -> the ``metrics.jsonl`` keys it draws (see :data:`PLOTS`).
    """

    def __init__(self, workdir: str | os.PathLike, *, start_step: int, total_steps: int, active: bool = True,
                 tensorboard: bool = True, progress_bar: bool = True, plots: dict | None = None):
        self.workdir = Path(workdir)
        self.active = active
        self.plots = PLOTS if plots is None else plots
        self._tb = None
        self._bar = None
        if not active:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        if self.path.exists():
            _truncate_after(self.path, start_step)
        if tensorboard:
            self._tb = _tensorboard_writer(self.workdir / "tensorboard")
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             desc="train", smoothing=0.1)

    def progress(self, step: int, loss: float, lr: float, images_per_second: float | None) -> None:
        """Moves the bar to ``step`` and shows the latest loss, learning rate and throughput."""
        if self._bar is None:
            return
        postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}"}
        if images_per_second is not None:
            postfix["img/s"] = f"{images_per_second:,.0f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def message(self, text: str) -> None:
        """A line of text that does not break the bar."""
        if not self.active:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            log.info(text)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Appends one row to ``metrics.jsonl`` and the scalars to TensorBoard."""
        if not self.active:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self, plot: bool = True) -> None:
        if not self.active:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if plot:
            plot_metrics(self.workdir, self.plots)


class LogWindow:
    """The steps since the last logged one: their mean loss, and images per second.

    Timing starts at the end of the first step the window sees, which includes compilation.
    """

    def __init__(self, global_batch_size: int):
        self.global_batch_size = global_batch_size
        self.losses: list[float] = []
        self.start: tuple[int, float] | None = None  # (step, time) the throughput counts from

    def add(self, step: int, loss: float) -> float | None:
        """Records a finished step; returns images/s since the window's start (None at first)."""
        self.losses.append(loss)
        now = time.perf_counter()
        if self.start is None:
            self.start = (step, now)
            return None
        start_step, start_time = self.start
        return (step - start_step) * self.global_batch_size / max(now - start_time, 1e-9)

    def restart_clock(self, step: int) -> None:
        """Excludes the time until now (an evaluation, a checkpoint) from the throughput."""
        if self.start is not None:
            self.start = (step, time.perf_counter())

    def flush(self, step: int) -> float:
        """Mean finite loss of the window; starts a new window at ``step``."""
        finite = [x for x in self.losses if math.isfinite(x)]
        self.losses = []
        self.start = (step, time.perf_counter())
        return sum(finite) / len(finite) if finite else float("nan")


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the row parseable
    return value


def _tensorboard_writer(directory: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        warnings.warn("tensorboardX is not installed: no TensorBoard event files (pip install tensorboardX)",
                      stacklevel=2)
        return None
    return SummaryWriter(str(directory))


# Which metrics.jsonl keys go on which plot.
PLOTS = {
    "loss": ("train/loss", "eval/loss", "eval/ema_loss"),
    "lr": ("train/lr",),
    "accuracy": ("eval/top1", "eval/top5", "eval/ema_top1"),
}


def plot_metrics(workdir: str | os.PathLike, plots: dict | None = None) -> list[Path]:
    """Draws ``<workdir>/plots/<name>.png`` for each of ``plots`` (default :data:`PLOTS`: loss, lr,
    accuracy) from ``metrics.jsonl``; returns the files."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    out_dir = Path(workdir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keys in (PLOTS if plots is None else plots).items():
        series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key, points in series.items():
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=key, marker="o" if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if name == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
