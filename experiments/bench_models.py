"""Vim vs DeiT speed and memory: the paper's efficiency figure, plus 224-px inference and training.

    python experiments/bench_models.py                      # one GPU; stops starting work after 5 min
    python experiments/bench_models.py --max-batch          # + the largest batch per resolution (slower)
    python experiments/bench_models.py --sections 224       # one part only
    python experiments/bench_models.py --scan-backend associative
    python experiments/bench_models.py --smoke --results-dir /tmp/bench   # tiny shapes on CPU, ~1 min

Sections (bf16 compute, float32 parameters, random bf16 images, 1000 classes):
* high resolution, inference, batch 8: Vim-Ti, DeiT-Ti with flash attention (cuDNN where it can
  run, else XLA) and DeiT-Ti with plain XLA attention, at 512, 640, 738, 1024 and 1248 px;
* 224 px: inference at batch 256 and training at batch 128 (cross-entropy, `jax.grad`, a real
  optax AdamW update, donated state) of Vim-Ti/S/B and DeiT-Ti/S/B.

Timing: each function is compiled once per shape (ahead of time), called twice to warm up, then
timed as the median of repeats; a repeat runs enough back-to-back calls to last >= 20 ms and ends
with `jax.block_until_ready`, and the number of repeats fills about `--target-s` seconds (3 to 20).

Peak memory: `device.memory_stats()['peak_bytes_in_use']`, which JAX cannot reset, so each group
of measurements runs in a fresh worker process, in an order where memory should only grow (one
model over increasing resolutions; at 224 px a family's inference Ti, S, B, then its training Ti,
S, B); the peak after a job is then that job's, and a peak that did not rise is flagged as an upper
bound. It counts everything on the device: parameters (and optimizer state), inputs, activations
and workspace. XLA's own plan for each executable (`memory_analysis()`: arguments + outputs +
temporaries) is recorded beside it in the JSON.

Writes experiments/results/bench_models_<device>.{json,md} and .._highres.png / .._224.png, with
the official PyTorch / timm numbers of the reference measurement (one H200,
`results/reference_h200_2026-12-01.md`) drawn beside ours (dashed).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import reference_numbers

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RESULT_PREFIX = "BENCH_RESULT "

HIGHRES = (512, 640, 738, 1024, 1248)
SIZES = ("tiny", "small", "base")

# The official Vim-Ti and timm DeiT-Ti at batch 8 (label -> px -> img/s, peak MiB) and at 224 px
# (model -> inference img/s, training img/s, training peak MiB), from the reference result file.
OFFICIAL_HIGHRES = reference_numbers.official_highres()
OFFICIAL_224 = reference_numbers.official_224()


@dataclasses.dataclass(frozen=True)
class Job:
    """One measurement: `model` (registered name) at `img_size`, inference or one training step."""

    section: str  # "highres" | "224"
    label: str
    model: str
    img_size: int
    batch: int
    train: bool = False
    overrides: tuple = ()  # extra config fields, as (name, value) pairs


# Plan -------------------------------------------------------------------------------------------
def plan(args) -> list[list[Job]]:
    """Groups of jobs; each group runs in its own process, its jobs in increasing memory order.

    `--smoke` keeps the structure with tiny models and shapes, and leaves out Vim's training step
    (compiling its backward pass alone takes most of a minute on a 2-core CPU; the step's code is
    the same for both models and DeiT's runs).
    """
    scan = (("scan_backend", args.scan_backend),) if args.scan_backend else ()
    unroll = (("unroll_blocks", True),) if args.unroll_blocks else ()
    fused = (("fused_conv_scan", True),) if args.fused_conv_scan else ()
    tiny = args.smoke
    vim_cfg = scan + unroll + fused + ((("embed_dim", 32), ("depth", 2), ("d_state", 4)) if tiny else ())
    deit_cfg = unroll + ((("embed_dim", 32), ("depth", 2), ("num_heads", 2)) if tiny else ())
    resolutions, batch = ((32,), 2) if tiny else (HIGHRES, 8)
    families = [("Vim-Ti", "vim_tiny", vim_cfg), ("DeiT-Ti flash", "deit_tiny", deit_cfg + (("attention", "flash"),)),
                ("DeiT-Ti xla", "deit_tiny", deit_cfg + (("attention", "xla"),))]
    groups = [[Job("highres", label, model, r, batch, overrides=o) for r in resolutions] for label, model, o in families]
    # 224 px: per family, inference Ti -> S, then training Ti -> S (each larger than the last, as
    # far as the official numbers go; a peak that does not rise is flagged anyway); both families'
    # B models come last, so that a budget spent early still leaves Vim and DeiT side by side.
    size, infer_batch, train_batch = (32, 4, 4) if tiny else (224, 256, 128)
    families = (("vim", vim_cfg), ("deit", deit_cfg + (("attention", "flash"),)))
    for sizes in ((SIZES[:1],) if tiny else (SIZES[:2], SIZES[2:])):
        for family, extra in families:
            models = [f"{family}_{s}" for s in sizes]
            group = [Job("224", m, m, size, infer_batch, overrides=extra) for m in models]
            if not (tiny and family == "vim"):
                group += [Job("224", m, m, size, train_batch, train=True, overrides=extra) for m in models]
            groups.append(group)
    return groups


# Worker side ------------------------------------------------------------------------------------
def _build(job: Job):
    import vim_jax
    from vim_jax.models import deit_presets  # noqa: F401  (registers DeiT)

    return vim_jax.create_model(job.model, img_size=job.img_size, dtype="bfloat16", **dict(job.overrides))


def time_calls(call, target_s: float, min_repeats: int = 3, max_repeats: int = 20) -> dict:
    """Median seconds per call of `call()` (which returns something to block on); see the module
    docstring for the method."""
    import jax

    jax.block_until_ready(call())
    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    inner = max(1, math.ceil(0.02 / max(first, 1e-6)))  # calls per repeat, to amortise dispatch
    repeats = int(min(max_repeats, max(min_repeats, target_s / max(first * inner, 1e-6))))
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = call()
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - start) / inner)
    return {"seconds": statistics.median(per_call), "repeats": repeats, "calls_per_repeat": inner,
            "spread": (min(per_call), max(per_call))}


def scan_backend_used(model, images) -> str:
    """The selective-scan backend a Vim's configured choice runs here: the first of the op's
    candidates that traces the whole model, which is what the op's fall-through picks."""
    import jax
    from flax import nnx

    from vim_jax.ops import candidate_backends

    graphdef, state = nnx.split(model)
    refusals = []
    for name in candidate_backends(model.cfg.scan_backend):
        probe = nnx.merge(graphdef, state)
        for _, module in nnx.iter_graph(probe):  # the model's config and its mixers' copies
            if hasattr(module, "cfg"):
                module.cfg = module.cfg.replace(scan_backend=name)
        probe_graphdef, probe_state = nnx.split(probe)
        try:
            jax.eval_shape(lambda s, x: nnx.merge(probe_graphdef, s)(x), probe_state, images)
            return name
        except NotImplementedError as e:
            refusals.append(f"{name}: {e}")
    raise NotImplementedError("no selective-scan backend traces this model: " + "; ".join(refusals))


def _xla_bytes(compiled) -> int | None:
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
               - analysis.alias_size_in_bytes)


def compile_inference(job: Job):
    """(call, info, compiled): `call()` runs one compiled forward pass on random images."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = _build(job)
    model.eval()
    images = jax.random.normal(jax.random.key(0), (job.batch, job.img_size, job.img_size, 3), jnp.bfloat16)
    info = _model_info(model, images)
    graphdef, state = nnx.split(model)
    compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, images).compile()
    return (lambda: compiled(state, images)), info, compiled


def compile_training(job: Job):
    """(call, info, compiled): `call()` runs one AdamW step (cross-entropy on random labels,
    gradients, update) with the state donated, and returns the loss."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    model = _build(job)
    model.train()
    images = jax.random.normal(jax.random.key(0), (job.batch, job.img_size, job.img_size, 3), jnp.bfloat16)
    labels = jax.random.randint(jax.random.key(1), (job.batch,), 0, model.cfg.num_classes)
    info = _model_info(model, images)  # before the first step donates the model's arrays
    if "attention" in info:
        info["attention"] = "xla"  # DeiT differentiates through XLA attention (flash_forward_attention)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(1e-3, weight_decay=0.05)

    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p, rest)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, tx.init(params)]
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*state, images, labels).compile()

    def call():
        state[0], state[1], loss = compiled(state[0], state[1], images, labels)
        return loss

    return call, info, compiled


def measure(job: Job, target_s: float) -> dict:
    """Timing, throughput and XLA's memory plan of one job."""
    call, info, compiled = (compile_training if job.train else compile_inference)(job)
    timing = time_calls(call, target_s)
    return {**info, **timing, "images_per_s": job.batch / timing["seconds"], "xla_bytes": _xla_bytes(compiled)}


def _model_info(model, images) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vim_jax.models.deit import DeiT, attention_implementation

    cfg = model.cfg
    info = {"params": int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))),
            "tokens": cfg.seq_len}
    if isinstance(model, DeiT):
        info["attention"] = attention_implementation(cfg, cfg.seq_len, jnp.bfloat16)
    else:
        info["scan_backend"] = scan_backend_used(model, images)
    return info


def run_worker(jobs: list[Job], target_s: float) -> None:
    """Runs `jobs` in order in this process, printing one result line per job. After a failure,
    larger batches of the same model and resolution are not tried."""
    import jax

    device = jax.devices()[0]
    failed: dict[tuple[str, int, bool], int] = {}
    for job in jobs:
        gc.collect()
        start = time.perf_counter()
        key = (job.label, job.img_size, job.train)
        if key in failed and job.batch > failed[key]:
            result = {"error": f"not tried: batch {failed[key]} already failed"}
        else:
            try:
                result = measure(job, target_s)
            except Exception as error:  # noqa: BLE001  (an OOM or a refused shape: report it, go on)
                result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                failed[key] = job.batch
        stats = device.memory_stats() or {}
        result.update(job=dataclasses.asdict(job), wall_s=time.perf_counter() - start,
                      peak_bytes=stats.get("peak_bytes_in_use"), bytes_limit=stats.get("bytes_limit"))
        print(RESULT_PREFIX + json.dumps(result), flush=True)


# Parent side ------------------------------------------------------------------------------------
def run_group(jobs: list[Job], target_s: float, timeout_s: float) -> list[dict]:
    """Runs one group in a fresh process; a crashed or timed-out worker leaves error rows."""
    spec = json.dumps({"jobs": [dataclasses.asdict(j) for j in jobs], "target_s": target_s})
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True,
                              timeout=timeout_s)
        out, err, failure = proc.stdout, proc.stderr, f"worker exited with {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        out, err, failure = e.stdout or "", e.stderr or "", f"worker timed out after {timeout_s:.0f} s"
        out, err = (out.decode() if isinstance(out, bytes) else out), (err.decode() if isinstance(err, bytes) else err)
    rows = [json.loads(line[len(RESULT_PREFIX):]) for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
    for job in jobs[len(rows):]:
        rows.append({"job": dataclasses.asdict(job), "error": f"{failure}: {err.strip()[-400:]}"})
    previous = None
    for row in rows:  # the peak is a running maximum: flag a job whose peak did not rise
        peak = row.get("peak_bytes")
        row["peak_from_earlier_job"] = peak is not None and peak == previous
        previous = peak
    return rows


def _versions() -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "flax": flax.__version__, "optax": optax.__version__}


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def _cell(row: dict | None) -> str:
    if row is None:
        return "skipped"
    if "error" in row:
        return "error"
    star = "*" if row.get("peak_from_earlier_job") else ""
    return f"{row['images_per_s']:,.0f} ({_mib(row.get('peak_bytes'))}{star})"


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["# Vim vs DeiT: inference and training speed, peak memory", "",
             f"Command: `{result['command']}`  ",
             f"Date: {result['date']}; device: {result['device']} ({result['platform']}); wall {result['wall_s']:.0f} s  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + "  ",
             f"Vim selective-scan backend that ran: {', '.join(sorted(result['scan_backends'])) or '-'}; "
             f"DeiT flash inference resolved to: {', '.join(sorted(result['flash_attention'])) or '-'} "
             "(DeiT training differentiates through XLA attention)", "",
             "Method: bf16 compute, float32 parameters, random bf16 inputs; compiled once per shape, two "
             "warm-up calls, median of repeats (each >= 20 ms of back-to-back calls, ended by "
             "`jax.block_until_ready`). Peak memory = `memory_stats()['peak_bytes_in_use']` in a fresh "
             "process per group, jobs in increasing-memory order (* = did not rise above the previous job's "
             "peak, so it is an upper bound). Cells: img/s (peak MiB).", ""]
    highres = [r for r in rows if r["job"]["section"] == "highres"]
    if highres:
        lines += _highres_table(highres)
    if any(r["job"]["section"] == "224" for r in rows):
        lines += _table_224(rows)
    return "\n".join(lines + _notes(result))


def _highres_table(highres: list[dict]) -> list[str]:
    lines = ["## High resolution, inference", ""]
    labels = list(dict.fromkeys(r["job"]["label"] for r in highres))
    sizes = sorted({r["job"]["img_size"] for r in highres})
    batch = highres[0]["job"]["batch"] if highres else "-"
    official = list(OFFICIAL_HIGHRES)
    lines += [f"Batch {batch}.", "", "| px | tokens | " + " | ".join(labels) + " | " + " | ".join(official) + " |",
              "|---:|---:|" + "---:|" * (len(labels) + len(official))]
    for s in sizes:
        by = {r["job"]["label"]: r for r in highres if r["job"]["img_size"] == s}
        tokens = next((r.get("tokens") for r in by.values() if r.get("tokens")), "-")
        ours = " | ".join(_cell(by.get(l)) for l in labels)
        theirs = " | ".join(f"{v[0]:,} ({v[1]:,})" if (v := OFFICIAL_HIGHRES[o].get(s)) else "-" for o in official)
        lines.append(f"| {s} | {tokens} | {ours} | {theirs} |")
    return lines + [""]


def _table_224(rows: list[dict]) -> list[str]:
    lines = ["## 224 px: inference and training", "",
              "| model | params | inference img/s (batch) | peak MiB | training img/s (batch, AdamW) | peak MiB | "
              f"official/timm inference ({reference_numbers.DEVICE}) | official/timm training (peak MiB) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model in dict.fromkeys(r["job"]["model"] for r in rows if r["job"]["section"] == "224"):
        inf = next((r for r in rows if r["job"]["section"] == "224" and r["job"]["model"] == model
                    and not r["job"]["train"]), None)
        trn = next((r for r in rows if r["job"]["section"] == "224" and r["job"]["model"] == model
                    and r["job"]["train"]), None)
        ref = OFFICIAL_224.get(model)

        def speed(r):
            if r is None:
                return "-"
            return "error" if "error" in r else f"{r['images_per_s']:,.0f} ({r['job']['batch']})"

        def peak(r):
            return "-" if r is None or "error" in r else _mib(r.get("peak_bytes")) + ("*" if r.get("peak_from_earlier_job") else "")

        params = next((f"{r['params']:,}" for r in (inf, trn) if r and "params" in r), "-")
        lines.append(f"| {model} | {params} | {speed(inf)} | {peak(inf)} | {speed(trn)} | {peak(trn)} | "
                     f"{f'{ref[0]:,}' if ref else '-'} | {f'{ref[1]:,} ({ref[2]:,})' if ref else '-'} |")
    return lines


def _notes(result: dict) -> list[str]:
    rows, lines = result["rows"], []
    notes = [f"- {r['job']['label']} {r['job']['img_size']} px{' training' if r['job']['train'] else ''}: {r['error']}"
             for r in rows if "error" in r and r["job"]["section"] != "max_batch"]
    largest = [r for r in rows if r["job"]["section"] == "max_batch"]
    if largest:
        lines += ["", "## Largest batch that ran (doubling search)", "", "| model | px | batch | img/s |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['job']['label']} | {r['job']['img_size']} | {r['job']['batch']} | {r['images_per_s']:,.0f} |"
                  for r in largest]
    if result["skipped_max_batch"]:
        notes.append("- Largest batch per resolution: not measured (pass --max-batch; every doubling compiles "
                     "and runs, several minutes on an H100).")
    lines += ["", "Notes:"] + (notes or ["- none"])
    lines += [f"- Official / timm numbers: {reference_numbers.REFERENCE_FILE.with_suffix('.md').name} (one "
              f"{reference_numbers.DEVICE}, PyTorch 2.11, bf16 autocast, CUDA events), not measured by this run."]
    return lines + [""]


def measure_max_batch(highres_groups: list[list[Job]], target_s: float, cap: int, timeout_s: float) -> list[dict]:
    """The largest batch that runs, per family and resolution: doublings from the base batch up to
    `cap`, one worker per family (a failure, usually out-of-memory, ends that resolution's search)."""
    rows = []
    for group in highres_groups:
        jobs = [dataclasses.replace(job, section="max_batch", batch=b) for job in group
                for b in (job.batch * 2 ** k for k in range(1, 32)) if b <= cap]
        done = [r for r in run_group(jobs, target_s, timeout_s) if "error" not in r]
        for label, size in dict.fromkeys((job.label, job.img_size) for job in group):
            fitted = [r for r in done if (r["job"]["label"], r["job"]["img_size"]) == (label, size)]
            if fitted:
                rows.append(max(fitted, key=lambda r: r["job"]["batch"]))
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scan-backend", default=None, help="Vim's selective-scan backend (default: the op's choice)")
    p.add_argument("--unroll-blocks", action="store_true",
                   help="both families with their blocks unrolled instead of a scan over layers")
    p.add_argument("--fused-conv-scan", action="store_true",
                   help="Vim with VimConfig.fused_conv_scan (the conv prologue inside the scan's forward)")
    p.add_argument("--target-s", type=float, default=1.0, help="seconds of timed repeats per measurement")
    p.add_argument("--budget-s", type=float, default=300.0,
                   help="groups not started by then are skipped (reported); a running group gets 60 s more")
    p.add_argument("--sections", nargs="+", default=["highres", "224"], choices=["highres", "224"],
                   help="which parts to run (e.g. only 224 when a first run spent its budget)")
    p.add_argument("--max-batch", action="store_true", help="also find the largest batch per resolution")
    p.add_argument("--max-batch-cap", type=int, default=512)
    p.add_argument("--group-timeout-s", type=float, default=240.0, help="a worker running longer is stopped")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--smoke", action="store_true", help="tiny models and shapes (CPU, seconds)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        run_worker([Job(**{**j, "overrides": tuple(tuple(o) for o in j["overrides"])}) for j in spec["jobs"]],
                   spec["target_s"])
        return 0
    if args.smoke:
        args.target_s = 0.05
        args.scan_backend = args.scan_backend or "reference"  # the quickest to compile on CPU

    import jax

    start = time.perf_counter()
    groups = [g for g in plan(args) if g[0].section in args.sections]
    highres_groups = [g for g in groups if g[0].section == "highres"]
    if args.smoke:  # one process each: on CPU there is no device memory to isolate
        groups = [[job for group in groups for job in group]]
        highres_groups = [[job for group in highres_groups for job in group]]
    rows = []
    for group in groups:
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            rows += [{"job": dataclasses.asdict(j), "error": f"skipped: the {args.budget_s:.0f} s budget was spent"}
                     for j in group]
            continue
        rows += run_group(group, args.target_s, min(args.group_timeout_s, args.budget_s + 60 - elapsed))
        print(f"{group[0].label} ...: done ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.max_batch:
        rows += measure_max_batch(highres_groups, args.target_s, args.max_batch_cap, args.group_timeout_s)
    device = jax.devices()[0].device_kind
    result = {
        "command": "python experiments/bench_models.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "platform": jax.default_backend(), "versions": _versions(),
        "wall_s": time.perf_counter() - start, "rows": rows, "skipped_max_batch": not args.max_batch,
        "scan_backends": sorted({r["scan_backend"] for r in rows if r.get("scan_backend")}),
        "flash_attention": sorted({r["attention"] for r in rows if r.get("attention") and not r["job"]["train"]
                                   and dict(map(tuple, r["job"]["overrides"])).get("attention") == "flash"}),
        "official_highres": OFFICIAL_HIGHRES, "official_224": OFFICIAL_224,
    }
    import plots

    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = "" if set(args.sections) == {"highres", "224"} else "_" + "_".join(args.sections)
    parts += "".join(f"_{flag}" for flag in ("unroll_blocks", "fused_conv_scan") if getattr(args, flag))
    stem = out / f"bench_models_{device.lower().replace(' ', '_')}{parts}{'_smoke' if args.smoke else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(markdown(result))
    if "highres" in args.sections:
        plots.plot_bench_highres(result, Path(f"{stem}{'' if parts else '_highres'}.png"))
    if "224" in args.sections:
        plots.plot_bench_224(result, Path(f"{stem}{'' if parts else '_224'}.png"))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
