"""Trains the paper's ablation grids on Fashion-MNIST with several seeds and tabulates them.

    python experiments/ablate.py --grid bidirectional              # the paper's Table 4 study
    python experiments/ablate.py --grid classification             # Table 5 (class token / pooling)
    python experiments/ablate.py --grid scan_orders                # raster, column, zigzag, windows, cross
    python experiments/ablate.py --grid vim_vs_deit                # Vim-Ti vs DeiT-Ti, 3 seeds each
    python experiments/ablate.py --grid all --epochs 10 --seeds 3  # every grid
    python experiments/ablate.py --smoke --results-dir /tmp/abl    # 2 tiny configs x 1 seed x 3 steps

Every run is the trainer's (`vim_jax.train.train.train`) on the Fashion-MNIST recipe
(`experiments/configs/fashion_mnist.py`); only the model, the seed and the budget change. Budget
flags: `--epochs` (passes over the training images; the cosine schedule and warm-up shrink with
it), `--train-subset` (a fixed random subset, the same for every run, written as IDX files the
trainer reads through `dataset.data_dir`), `--seeds`, `--embed-dim` / `--depth` (model size) and
`--dtype` (for CPU). Evaluation is always on the full test split.
Writes `experiments/results/ablation_<grid>[_<tag>].{json,md,png}`: mean +- std test top-1,
parameters and training throughput per variant, the paper's ImageNet top-1 beside ours, and how
far the two rankings agree. A run whose `result.json` exists in its workdir is not trained again.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import ablation_grids
import plots

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECIPE = HERE / "configs" / "fashion_mnist.py"
SUBSET_SEED = 20240117  # one data subset for every run of every grid
FULL_TRAIN = 60000

# Tiny models and a few steps: exercises the trainer for both model families in seconds.
SMOKE = dict(grid="vim_vs_deit", epochs=None, steps=3, seeds=1, train_subset=256, embed_dim=32, depth=2,
             dtype="float32", scan_backend="reference", batch_size=32, tag="smoke")


# Data subsets -----------------------------------------------------------------------------------
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_train_subset(directory: Path, count: int) -> Path:
    """A Fashion-MNIST directory whose training split is a fixed random subset of `count` images.

    The data loader accepts only the full split sizes, so the subset is tiled to 60000 images
    (each subset image equally often, up to one extra copy); the test split is linked unchanged.
    """
    from vim_jax.data import fashion_mnist

    directory.mkdir(parents=True, exist_ok=True)
    images, labels = fashion_mnist.load_fashion_mnist("train")
    keep = np.random.default_rng(SUBSET_SEED).choice(len(labels), count, replace=False)
    tiled = np.resize(keep, len(labels))
    image_file, label_file, _ = fashion_mnist._FILES["train"]
    _write_idx(directory / image_file, images[tiled])
    _write_idx(directory / label_file, labels[tiled].astype(np.uint8))
    source = fashion_mnist.fashion_mnist_dir()
    for name in fashion_mnist._FILES["test"][:2]:
        link = directory / name
        if not link.exists():
            link.symlink_to(source / name)
    return directory


# One run ------------------------------------------------------------------------------------------
def run_config(args, grid, variant, seed: int, data_dir: Path | None):
    """The recipe with this run's model, seed and budget."""
    import ml_collections

    from vim_jax.train.config_file import load_config

    c = load_config(str(RECIPE))
    budget = {k: v for k, v in (("embed_dim", args.embed_dim), ("depth", args.depth), ("dtype", args.dtype))
              if v is not None}
    if args.scan_backend:  # Vim only: `deit_class_of` keeps the fields DeiT shares
        budget["scan_backend"] = args.scan_backend
    if args.smoke:
        budget.update(d_state=4, drop_path_rate=0.0)
    c.model_name = variant.model_name
    c.model = ml_collections.ConfigDict(ablation_grids.model_overrides(c.model.to_dict(), grid, variant, budget))
    c.seed = seed
    if args.batch_size:
        c.global_batch_size = args.batch_size
    # The trainer counts epochs of 60000 images (a tiled subset included); --epochs counts passes
    # over the subset. Warm-up and cosine keep the recipe's shape, scaled to the run's length.
    if args.steps:
        c.num_train_steps = args.steps
        trainer_epochs = args.steps * c.global_batch_size / FULL_TRAIN
    else:
        trainer_epochs = args.epochs * (args.train_subset or FULL_TRAIN) / FULL_TRAIN
        c.num_epochs = trainer_epochs
    c.optim.warmup_epochs = c.optim.warmup_epochs * trainer_epochs / c.optim.schedule_epochs
    c.optim.schedule_epochs = trainer_epochs
    if data_dir is not None:
        c.dataset.data_dir = str(data_dir)
    c.eval_every_steps = 10**9  # only the final evaluation (the trainer always runs it at the end)
    c.checkpoint_every_steps = 10**9
    c.keep_checkpoints = 1
    c.log_every_steps = max(1, min(c.log_every_steps, 20))
    c.tensorboard = False
    c.progress_bar = False
    return c


def train_one(config, workdir: Path, keep_checkpoints: bool) -> dict:
    """Trains (or reads back) one run: final test top-1/loss, training img/s, wall time. An
    interrupted run is the trainer's to resume."""
    done = workdir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    from vim_jax.train.metrics import read_metrics
    from vim_jax.train.train import train

    start = time.perf_counter()
    evaluation = train(config, workdir)
    wall = time.perf_counter() - start
    if "top1" not in evaluation:  # the trainer stopped early (SIGTERM): it saved a checkpoint
        raise SystemExit(f"{workdir}: training stopped before its end; rerun the same command to resume")
    speeds = [row["train/images_per_second"] for row in read_metrics(workdir) if "train/images_per_second" in row]
    result = {"seed": config.seed, "top1": evaluation["top1"], "loss": evaluation["loss"],
              "eval_count": evaluation["count"], "train_images_per_s": statistics.median(speeds) if speeds else None,
              "wall_s": wall}
    if not keep_checkpoints:
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    done.write_text(json.dumps(result, indent=2))
    return result


def count_params(model_name: str, overrides: dict) -> int:
    import jax
    from flax import nnx

    import vim_jax

    model = nnx.eval_shape(lambda: vim_jax.create_model(model_name, **overrides))
    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


# Ranking agreement --------------------------------------------------------------------------------
def _average_ranks(values) -> np.ndarray:
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # ties share their mean rank
        ranks[values == v] = ranks[values == v].mean()
    return ranks


def ranking_agreement(paper, ours) -> dict:
    """Spearman's rho, Kendall's tau-b and the fraction of variant pairs ordered alike."""
    paper, ours = np.asarray(paper, float), np.asarray(ours, float)
    n = len(paper)
    rp, ro = _average_ranks(paper), _average_ranks(ours)
    spearman = float(np.corrcoef(rp, ro)[0, 1]) if np.std(rp) > 0 and np.std(ro) > 0 else float("nan")
    i, j = np.triu_indices(n, 1)
    sp, so = np.sign(paper[i] - paper[j]), np.sign(ours[i] - ours[j])
    ties_p, ties_o = np.sum(sp == 0), np.sum(so == 0)
    pairs = len(i)
    denom = math.sqrt((pairs - ties_p) * (pairs - ties_o))
    kendall = float(np.sum(sp * so) / denom) if denom else float("nan")
    both = (sp != 0) & (so != 0)
    return {"spearman": spearman, "kendall_tau_b": kendall, "pairs_agreeing": int(np.sum(sp[both] == so[both])),
            "pairs_compared": int(np.sum(both)), "best_paper": int(np.argmax(paper)), "best_ours": int(np.argmax(ours))}


# Reports ------------------------------------------------------------------------------------------
def _versions() -> dict:
    import flax
    import jax
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__}


def summarize(grid, rows: list[dict], budget: dict, wall_s: float, command: str) -> dict:
    import jax

    for row in rows:
        top1 = [r["top1"] for r in row["runs"]]
        row["top1_mean"] = statistics.fmean(top1)
        row["top1_std"] = statistics.stdev(top1) if len(top1) > 1 else 0.0
        speeds = [r["train_images_per_s"] for r in row["runs"] if r["train_images_per_s"]]
        row["train_images_per_s"] = statistics.median(speeds) if speeds else None
    with_paper = [r for r in rows if r["paper_top1"] is not None]
    ranking = None
    if len(with_paper) >= 2:
        ranking = ranking_agreement([r["paper_top1"] for r in with_paper], [r["top1_mean"] for r in with_paper])
        ranking["variants"] = [r["key"] for r in with_paper]
    return {"grid": grid.name, "title": grid.title, "note": grid.note, "budget": budget,
            "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
            "versions": _versions(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command, "wall_s": wall_s, "variants": rows, "ranking": ranking}


def markdown(result: dict) -> str:
    b = result["budget"]
    lines = [f"# Ablation: {result['title']}", "",
             f"Command: `{result['command']}`  ",
             f"Date: {result['date']}; device: {result['device']} ({result['platform']}); total wall {result['wall_s']:.0f} s  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
             f"Budget: {b['schedule']} (over the training images), training images "
             f"{b['train_subset'] or 'all 60000'}, the full 10000-image test split, seeds {b['seeds']}, "
             f"model overrides {b['model']}. "
             "Recipe: experiments/configs/fashion_mnist.py (AdamW, cosine, label smoothing 0.1, crop + flip).", "",
             "| variant | model | params | paper top-1 (ImageNet) | ours top-1 (Fashion-MNIST test) | seeds | train img/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["variants"]:
        paper = f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-"
        speed = f"{r['train_images_per_s']:,.0f}" if r["train_images_per_s"] else "-"
        lines.append(f"| {r['label']} | {r['model_name']} | {r['params']:,} | {paper} | "
                     f"{100 * r['top1_mean']:.2f} ± {100 * r['top1_std']:.2f} | {len(r['runs'])} | {speed} |")
    lines += ["", result["note"]]
    ranking = result["ranking"]
    if ranking:
        names = dict((r["key"], r["label"]) for r in result["variants"])
        lines += ["", "Ranking agreement with the paper (over the variants with a paper number): "
                  f"Spearman rho {ranking['spearman']:.2f}, Kendall tau-b {ranking['kendall_tau_b']:.2f}, "
                  f"{ranking['pairs_agreeing']} of {ranking['pairs_compared']} pairs ordered alike; best in the "
                  f"paper: {names[ranking['variants'][ranking['best_paper']]]}, best here: "
                  f"{names[ranking['variants'][ranking['best_ours']]]}. With this few variants and seeds, "
                  "differences smaller than about two standard deviations do not rank reliably."]
    return "\n".join(lines) + "\n"


# Main ---------------------------------------------------------------------------------------------
def run_grid(args, grid, data_dir: Path | None, command: str) -> dict:
    from vim_jax.train.config_file import load_config

    recipe_model = load_config(str(RECIPE)).model.to_dict()
    start = time.perf_counter()
    rows = []
    for variant in grid.variants[: args.max_variants]:
        row = {"key": variant.key, "label": variant.label, "model_name": variant.model_name,
               "paper_top1": variant.paper_top1, "runs": []}
        for seed in range(args.seeds):
            config = run_config(args, grid, variant, seed, data_dir)
            row["overrides"] = config.model.to_dict()
            workdir = Path(args.workdir) / f"{grid.name}{'_' + args.tag if args.tag else ''}" / f"{variant.key}_seed{seed}"
            result = train_one(config, workdir, args.keep_checkpoints)
            row["runs"].append(result)
            print(f"[{grid.name}] {variant.key} seed {seed}: top1 {100 * result['top1']:.2f} "
                  f"({result['wall_s']:.0f} s)", flush=True)
        row["params"] = count_params(variant.model_name, row["overrides"])
        rows.append(row)
    schedule = f"{args.steps} steps" if args.steps else f"{args.epochs:g} epoch(s)"
    budget = {"schedule": schedule, "train_subset": args.train_subset,
              "seeds": args.seeds, "model": {k: v for k, v in {**grid.model, "embed_dim": args.embed_dim,
                                                               "depth": args.depth, "dtype": args.dtype,
                                                               "scan_backend": args.scan_backend}.items()
                                             if v is not None},
              "recipe_model": recipe_model}
    return summarize(grid, rows, budget, time.perf_counter() - start, command)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="bidirectional", choices=[*ablation_grids.GRIDS, "all"])
    p.add_argument("--epochs", type=float, default=10.0, help="training epochs per run (recipe: 30)")
    p.add_argument("--steps", type=int, default=None, help="train this many steps instead of --epochs")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per variant")
    p.add_argument("--train-subset", type=int, default=None, help="train on this many images (default: all)")
    p.add_argument("--embed-dim", type=int, default=None, help="Vim width for every variant (DeiT follows)")
    p.add_argument("--depth", type=int, default=None, help="Vim depth for every variant (DeiT: half)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="compute dtype (recipe: bfloat16, which CPUs emulate slowly)")
    p.add_argument("--scan-backend", default=None,
                   help="Vim's selective-scan backend (default: the op's choice; on CPU 'reference' trains "
                        "~3x faster than 'associative' at these 50-token sequences)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (recipe: 256)")
    p.add_argument("--max-variants", type=int, default=None, help="only the first N variants of each grid")
    p.add_argument("--tag", default="", help="suffix of the result files and run directories")
    p.add_argument("--workdir", default="workdirs/ablate", help="run directories go under here")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--smoke", action="store_true", help="2 tiny configs x 1 seed x 3 steps on data subsets")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.depth is not None and args.depth % 2:
        p.error("--depth must be even (bidirectional layers pair the blocks; DeiT takes half)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python experiments/ablate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from vim_jax.models import deit_presets  # noqa: F401  (registers the DeiT models)

    data_dir = None
    if args.train_subset:
        data_dir = write_train_subset(Path(args.workdir) / f"fashion_mnist_train{args.train_subset}", args.train_subset)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    grids = list(ablation_grids.GRIDS.values()) if args.grid == "all" else [ablation_grids.GRIDS[args.grid]]
    for grid in grids:
        result = run_grid(args, grid, data_dir, command)
        stem = results_dir / f"ablation_{grid.name}{'_' + args.tag if args.tag else ''}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        stem.with_suffix(".md").write_text(markdown(result))
        plots.plot_ablation(result, stem.with_suffix(".png"))
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
