"""Vim-Ti vs DeiT-Ti backbones under the same UperNet head and budget on the Fashion-MNIST scenes.

    python experiments/segment_vim_vs_deit.py --sizes 512 --seeds 2 --steps 500 --run-timeout-s 240
    python experiments/segment_vim_vs_deit.py --sizes 512,1024 --seeds 2 --steps 2000   # a longer study
    python experiments/segment_vim_vs_deit.py --smoke --results-dir /tmp/seg               # CPU: two tiny runs

The first command fits about 8 minutes of one H200 (2 backbones x 2 seeds at 512 px).

Each run is the trainer's (`vim_jax.train.train.train`) on `experiments/configs/fmnist_scenes.py:<size>[,deit]`,
in a fresh subprocess (its peak device memory is its own), with `--steps` steps of the config's batch
for both backbones: the same number of steps and of training images. The official recipe's
schedule keeps its shape: the linear warm-up takes the same fraction of the run (1500 of 60000
steps, 2.5%) and the poly decay reaches zero at the last step. Both train from scratch (no
ImageNet weights). One evaluation at the end, on the same `--eval-scenes` test scenes for every
run, by sliding window; mIoU and pixel accuracy as mmseg scores them.

Per run: test mIoU and pixel accuracy, training img/s (median of the logged intervals after the
first, which holds compilation), peak device memory (`memory_stats()['peak_bytes_in_use']` of the
run's process after training and evaluation; None where the backend keeps no statistics, e.g.
CPU), compile / train / evaluation wall time. The subprocesses share a compilation cache under
`--workdir`, so later seeds load the first seed's programs. A run that fails or passes
`--run-timeout-s` is recorded as such and the others go on. After every run the script rewrites
`--results-dir`/segment_vim_vs_deit_<device>[_<tag>].{json,md,png}, so a cut-short call keeps what
it measured. A run whose `result.json` exists in its workdir is read back, not trained again.
The scenes are built from the Fashion-MNIST IDX files: `--data-dir`, else `$VIM_JAX_FASHION_MNIST_DIR`,
else the Debian package's folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import plots
from ablate import _versions

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = HERE / "configs" / "fmnist_scenes.py"
BACKBONES = ("vim", "deit")
LABELS = {"vim": "Vim-Ti", "deit": "DeiT-Ti (flash attention)"}
# The official recipe's warm-up: 1500 of its 60000 steps.
WARMUP_FRACTION = 1500 / 60000
# The compile-side events JAX reports: tracing, lowering, and XLA compilation or a cache load.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
EVAL_FUNCTION = "eval_sets"  # the trainer's jitted evaluation (`jit_eval_step`), traced when the evaluation starts

# CPU smoke: the 512 presets shrunk to 32-wide backbones on 64 px crops of small scenes.
SMOKE_SIZE = 64
SMOKE = dict(steps=3, seeds=1, eval_scenes=8, sizes=[SMOKE_SIZE], tag="smoke")


# One run (in its own process) ---------------------------------------------------------------------
def run_config(size: int, backbone: str, seed: int, steps: int, eval_scenes: int, data_dir: str | None,
               smoke: bool):
    """The preset `<size>[,deit]` with this run's seed and budget (and, for the smoke, tiny models)."""
    from vim_jax.train.config_file import load_config
    from vim_jax.train.defaults import backbone_overrides

    preset = "512" if smoke else str(size)
    c = load_config(f"{CONFIG}:{preset}" + (",deit" if backbone == "deit" else ""))
    c.seed = seed
    c.num_train_steps = steps
    c.optim.poly_warmup_steps = max(1, round(WARMUP_FRACTION * steps))
    c.dataset.num_eval_scenes = eval_scenes
    if data_dir is not None:
        c.dataset.data_dir = data_dir
    c.eval_every_steps = 10**9  # only the final evaluation (the trainer always runs it at the end)
    c.checkpoint_every_steps = 10**9
    c.keep_checkpoints = 1
    c.async_checkpoints = False
    c.log_every_steps = max(1, steps // 20)  # ~20 throughput intervals to take the median of
    c.tensorboard = False
    c.progress_bar = False
    if smoke:
        heads = {"num_heads": 2} if backbone == "deit" else {"d_state": 4}
        # The presets' depths stay (their out_indices read blocks of 24 and of 12).
        c.model.update(crop_size=SMOKE_SIZE, slide_stride=48, decode_channels=32, aux_channels=16, dtype="float32",
                       backbone_overrides=backbone_overrides(c.model_name, img_size=SMOKE_SIZE, embed_dim=32,
                                                             dtype="float32", drop_path_rate=0.0, **heads))
        c.dataset.update(scene_size=(64, 96), scene_items=(1, 3), scene_item_scale=(0.35, 0.7), scale=(128, 64),
                         crop_size=(SMOKE_SIZE, SMOKE_SIZE), eval_pad_size=(96, 96), num_train_scenes=256,
                         num_workers=0)
        c.global_batch_size = 4
        c.eval_batch_size = 4
    return c


def run_one(spec: dict) -> int:
    """Trains and evaluates one run in this process; writes its `result.json`."""
    import jax
    from jax import monitoring

    from vim_jax.train.metrics import log_to_console, read_metrics
    from vim_jax.train.train import train

    compile_s, eval_start = [0.0], []

    def on_span(event: str, start: float, end: float, fun_name: str = "", **_) -> None:
        if event in COMPILE_EVENTS:
            compile_s[0] += end - start
        if event == COMPILE_EVENTS[0] and fun_name == EVAL_FUNCTION and not eval_start:
            eval_start.append(start)  # tracing the evaluation program is the evaluation's first act

    monitoring.register_event_time_span_listener(on_span)
    log_to_console()
    workdir = Path(spec["workdir"])
    config = run_config(spec["size"], spec["backbone"], spec["seed"], spec["steps"], spec["eval_scenes"],
                        spec["data_dir"], spec["smoke"])
    start = time.time()  # JAX's time spans are on this clock
    evaluation = train(config, workdir)
    end = time.time()
    wall = end - start
    if "miou" not in evaluation:
        raise SystemExit(f"{workdir}: training stopped before its end")
    rows = read_metrics(workdir)
    speeds = [r["train/images_per_second"] for r in rows if "train/images_per_second" in r]
    eval_s = end - eval_start[0] if eval_start else None
    stats = jax.devices()[0].memory_stats() or {}
    result = {**{k: spec[k] for k in ("size", "backbone", "seed", "steps")},
              "miou": evaluation["miou"], "pixel_accuracy": evaluation["pixel_accuracy"],
              "eval_loss": evaluation["loss"], "eval_scenes": evaluation["count"],
              "batch": config.global_batch_size, "images_seen": config.global_batch_size * config.num_train_steps,
              "warmup_steps": config.optim.poly_warmup_steps, "model_name": config.model_name,
              # The first interval follows the compiled first step but still warms up: left out.
              "train_images_per_s": statistics.median(speeds[1:] or speeds) if speeds else None,
              "logged_images_per_s": speeds, "peak_bytes": stats.get("peak_bytes_in_use"),
              "device": jax.devices()[0].device_kind, "compile_s": compile_s[0], "eval_s": eval_s,
              "train_s": wall - (eval_s or 0.0), "trainer_wall_s": wall}
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    return 0


def launch(args, size: int, backbone: str, seed: int, cache_dir: Path) -> dict:
    """One run in a fresh subprocess; its result, or a record of how it failed."""
    workdir = Path(args.workdir) / f"{size}_{backbone}_seed{seed}"
    done = workdir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    spec = {"size": size, "backbone": backbone, "seed": seed, "steps": args.steps, "eval_scenes": args.eval_scenes,
            "data_dir": args.data_dir, "smoke": args.smoke, "workdir": str(workdir)}
    command = [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(spec)]
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
           # Cache every program, not only those that compile for over a second.
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    failure = None
    with open(workdir / "log.txt", "w") as log:
        # Its own process group, so that a timeout also stops the run's data-loading workers.
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent,
                                start_new_session=True)
        try:
            if proc.wait(timeout=args.run_timeout_s):
                failure = f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            failure = f"timed out after {args.run_timeout_s:g} s"
    wall = time.perf_counter() - start
    recorded = {"command": shlex.join(["python", "experiments/segment_vim_vs_deit.py", "--run-one", json.dumps(spec)]),
                "process_wall_s": wall}
    if failure or not done.exists():
        tail = (workdir / "log.txt").read_text()[-2000:]
        return {"size": size, "backbone": backbone, "seed": seed, "steps": args.steps,
                "error": failure or "no result.json", "log_tail": tail, **partial_progress(workdir), **recorded}
    result = {**json.loads(done.read_text()), **recorded}
    done.write_text(json.dumps(result, indent=2))
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)  # only the numbers are kept
    return result


def partial_progress(workdir: Path) -> dict:
    """How far a run that did not finish got, from its `metrics.jsonl`: the last logged step and
    the logged throughputs (their median after the first, as for a finished run)."""
    path = workdir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    speeds = [r["train/images_per_second"] for r in rows if "train/images_per_second" in r]
    return {"steps_reached": max((r.get("step", 0) for r in rows), default=0), "logged_images_per_s": speeds,
            "partial_images_per_s": statistics.median(speeds[1:] or speeds) if speeds else None}


def probe_device() -> tuple[str, str]:
    """The device kind and platform, asked of a short-lived process: a GPU backend started here
    would hold most of the device's memory for the whole study, away from the runs."""
    probe = "import jax; print(jax.devices()[0].device_kind); print(jax.default_backend())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    device, platform = out.strip().splitlines()[-2:]
    return device, platform


# Reports ------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(args, runs: list[dict], device: str, platform: str, wall_s: float, command: str) -> dict:
    import jaxlib

    groups = []
    for size in args.sizes:
        for backbone in BACKBONES:
            mine = [r for r in runs if r["size"] == size and r["backbone"] == backbone]
            ok = [r for r in mine if "error" not in r]
            miou, miou_std = _mean_std([r["miou"] for r in ok])
            pacc, pacc_std = _mean_std([r["pixel_accuracy"] for r in ok])
            speeds = [r["train_images_per_s"] for r in ok if r["train_images_per_s"]]
            peaks = [r["peak_bytes"] for r in ok if r.get("peak_bytes")]
            groups.append({"size": size, "backbone": backbone, "label": LABELS[backbone], "runs": len(mine),
                           "finished": len(ok), "miou_mean": miou, "miou_std": miou_std, "pixel_accuracy_mean": pacc,
                           "pixel_accuracy_std": pacc_std, "miou_per_seed": [r["miou"] for r in ok],
                           "train_images_per_s": statistics.median(speeds) if speeds else None,
                           "peak_mib": max(peaks) / 2**20 if peaks else None,
                           "model_name": ok[0]["model_name"] if ok else None})
    batch = next((r["batch"] for r in runs if "batch" in r), None) or run_config(
        args.sizes[0], BACKBONES[0], 0, args.steps, args.eval_scenes, args.data_dir, args.smoke).global_batch_size
    return {"title": "Vim-Ti vs DeiT-Ti backbones, UperNet, Fashion-MNIST scenes", "device": device,
            "platform": platform, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {**_versions(), "jaxlib": jaxlib.__version__}, "command": command, "wall_s": wall_s,
            "budget": {"steps": args.steps, "batch": batch, "images": batch * args.steps if batch else None,
                       "warmup_steps": max(1, round(WARMUP_FRACTION * args.steps)), "eval_scenes": args.eval_scenes,
                       "seeds": args.seeds, "sizes": args.sizes, "smoke": args.smoke, "pretrained": False},
            "groups": groups, "runs": runs}


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def markdown(result: dict) -> str:
    b = result["budget"]
    lines = [f"# {result['title']}", "",
             f"Command: `{result['command']}`  ",
             f"Date: {result['date']}; device: {result['device']} ({result['platform']}); total wall "
             f"{result['wall_s']:.0f} s  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
             f"Budget, the same for both backbones: {b['steps']} steps x batch {b['batch']} = {b['images']} training "
             f"crops, from scratch (no ImageNet weights), warm-up {b['warmup_steps']} steps then poly decay to 0; "
             f"one evaluation at the end on {b['eval_scenes']} test scenes (sliding window). Seeds: {b['seeds']}."
             + (" Smoke run: 32-wide backbones on 64 px crops, numbers meaningless." if b["smoke"] else ""),
             "", "| crop | backbone | runs ok | test mIoU (%) | pixel acc. (%) | mIoU per seed | train img/s "
             "| peak MiB |",
             "|---:|---|---:|---:|---:|---|---:|---:|"]
    for g in result["groups"]:
        seeds = ", ".join(f"{100 * m:.2f}" for m in g["miou_per_seed"]) or "-"
        lines.append(f"| {g['size']} | {g['label']} | {g['finished']}/{g['runs']} | "
                     f"{_fmt(g['miou_mean'], '.2f', 100)} ± {_fmt(g['miou_std'], '.2f', 100)} | "
                     f"{_fmt(g['pixel_accuracy_mean'], '.2f', 100)} ± {_fmt(g['pixel_accuracy_std'], '.2f', 100)} | "
                     f"{seeds} | {_fmt(g['train_images_per_s'], ',.1f')} | {_fmt(g['peak_mib'], ',.0f')} |")
    lines += ["", "Per run, wall seconds: train = the trainer's time outside the final evaluation (setup and "
              "the train step's compilation included); eval = from the final "
              "evaluation's start (its tracing) to the trainer's return, its compilation and the final checkpoint "
              "included; "
              "compile = all tracing, lowering and XLA compilation or cache loads of the run (overlaps both).", "",
              "| crop | backbone | seed | mIoU (%) | pixel acc. (%) | img/s | peak MiB | compile s | train s "
              "| eval s |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        if "error" in r:
            speed = r.get("partial_images_per_s")
            reached = f" at step {r['steps_reached']}" if r.get("steps_reached") else ""
            lines.append(f"| {r['size']} | {LABELS[r['backbone']]} | {r['seed']} | {r['error']}{reached} | | "
                         f"{_fmt(speed, ',.0f')} | | | | |")
            continue
        lines.append(f"| {r['size']} | {LABELS[r['backbone']]} | {r['seed']} | {100 * r['miou']:.2f} | "
                     f"{100 * r['pixel_accuracy']:.2f} | {_fmt(r['train_images_per_s'], ',.1f')} | "
                     f"{_fmt(r['peak_bytes'], ',.0f', 2**-20)} | {r['compile_s']:.0f} | {r['train_s']:.0f} | "
                     f"{_fmt(r['eval_s'], '.0f')} |")
    lines += ["", "img/s: median of the trainer's logged intervals after the first. Peak MiB: "
              "`memory_stats()['peak_bytes_in_use']` of the run's own process, over training and evaluation. "
              "DeiT-Ti's attention runs cuDNN flash attention where only its value is needed (evaluation) and "
              "XLA attention under differentiation (training), see `vim_jax.models.deit.flash_forward_attention`; "
              "Vim-Ti's selective scan runs the fastest registered backend the device accepts."]
    return "\n".join(lines) + "\n"


def write_reports(result: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(markdown(result))
    plots.plot_segmentation(result, stem.with_suffix(".png"))


# Main ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512", help="comma-separated crop sizes: 512, 1024")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 per size and backbone")
    p.add_argument("--steps", type=int, default=500, help="training steps per run (both backbones)")
    p.add_argument("--eval-scenes", type=int, default=200, help="test scenes of the final evaluation")
    p.add_argument("--run-timeout-s", type=float, default=1800.0, help="a run taking longer is stopped and recorded")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: $VIM_JAX_FASHION_MNIST_DIR)")
    p.add_argument("--workdir", default="runs/segment_vim_vs_deit", help="one folder per run, and the compile cache")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--tag", default=None, help="suffix of the result files")
    p.add_argument("--smoke", action="store_true", help="CPU check: tiny models, 1 seed, 3 steps, 8 eval scenes")
    p.add_argument("--run-one", default=None, help=argparse.SUPPRESS)  # the subprocess side of one run
    args = p.parse_args(argv)
    if args.run_one:
        return args
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes takes comma-separated integers, got {args.sizes!r}")
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value if key != "tag" else args.tag or value)
    elif bad := [s for s in args.sizes if s not in (512, 1024)]:
        p.error(f"--sizes: the scenes configs exist for 512 and 1024, got {bad}")
    if args.steps < 1 or args.seeds < 1 or args.eval_scenes < 1:
        p.error("--steps, --seeds and --eval-scenes must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_one:
        return run_one(json.loads(args.run_one))
    command = "python experiments/segment_vim_vs_deit.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    device, platform = probe_device()
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / ("segment_vim_vs_deit_" + device.lower().replace(" ", "_").replace("-", "_")
                          + (f"_{args.tag}" if args.tag else ""))
    cache_dir = Path(args.workdir) / "jax_cache"
    start = time.perf_counter()
    runs = []
    for size in args.sizes:
        for seed in range(args.seeds):  # both backbones per seed: a cut-short call still compares
            for backbone in BACKBONES:
                run = launch(args, size, backbone, seed, cache_dir)
                runs.append(run)
                if "error" in run:
                    print(f"[{size} {backbone} seed {seed}] FAILED: {run['error']}\n{run['log_tail'][-800:]}",
                          flush=True)
                else:
                    print(f"[{size} {backbone} seed {seed}] mIoU {100 * run['miou']:.2f}, pixel acc. "
                          f"{100 * run['pixel_accuracy']:.2f}, {_fmt(run['train_images_per_s'], ',.1f')} img/s, peak "
                          f"{_fmt(run['peak_bytes'], ',.0f', 2**-20)} MiB; compile {run['compile_s']:.0f} s, train "
                          f"{run['train_s']:.0f} s, eval {_fmt(run['eval_s'], '.0f')} s "
                          f"(process {run['process_wall_s']:.0f} s)", flush=True)
                write_reports(summarize(args, runs, device, platform, time.perf_counter() - start, command), stem)
    result = summarize(args, runs, device, platform, time.perf_counter() - start, command)
    write_reports(result, stem)
    print(markdown(result))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
