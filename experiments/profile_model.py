"""Where a Vim's time goes on the GPU: kernel time by kind, from a JAX profiler trace.

    python experiments/profile_model.py                          # Vim-S 224 px: inference b256, training b128
    python experiments/profile_model.py --models vim_tiny vim_small --remat
    python experiments/profile_model.py --smoke --out /tmp/prof  # tiny model on CPU (checks the plumbing)

Each job (the compiled forward pass or AdamW step of `bench_models.py`, same models and inputs) is
warmed up, then `--calls` calls are traced with `jax.profiler.trace(create_perfetto_trace=True)`.
The trace's device events (GPU kernels; on CPU, the XLA ops of the host threads) are summed by
name and sorted into kinds: the selective-scan kernels, matmuls, XLA fusions (elementwise work,
reductions, layout changes), copies/memsets, other. For the heaviest fusions the compiled HLO
gives the JAX operation and source line they came from (HLO metadata), so a fusion can be
traced to its line of model code. Wall time per call is measured around the traced calls too, so kernel time
can be compared with it (gaps = launch overhead or idle device).
Writes profile_<device>.{json,md} under --out (default experiments/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import bench_models

HERE = Path(__file__).resolve().parent

KINDS = (  # first match wins; names are lower-cased
    # Pallas Triton kernels carry their function's name; Mosaic GPU kernels are all anonymous,
    # and the scan is the only one the models launch.
    ("selective scan", ("selective_scan", "mosaic_gpu")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "dot", "matmul")),
    ("attention", ("flash", "fmha", "cudnn", "attention")),
    ("convolution", ("convolution",)),
    ("copy / memset", ("memcpy", "memset", "copy")),
    ("XLA fusion", ("fusion", "reduce", "transpose", "loop", "slice", "concatenate", "pad", "scatter",
                    "gather", "select", "broadcast", "convert")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def device_events(trace: dict) -> list[dict]:
    """Complete events ('X') of the trace's device processes (GPU streams; or the host's XLA ops
    when no device process exists, as on CPU)."""
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in trace["traceEvents"]
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    gpu = {pid for pid, n in names.items() if "/device:gpu" in n.lower()}
    pids = gpu or {pid for pid, n in names.items() if "/host:cpu" in n.lower() or "cpu" in n.lower()}
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("pid") in pids and e.get("dur")]
    if not gpu:  # host threads also hold Python and runtime spans: keep what looks like XLA ops
        events = [e for e in events if kind_of(e["name"]) != "other" or "hlo_op" in e.get("args", {})]
    return events


def fusion_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the JAX op it came from (`metadata op_name`). A fusion without its
    own metadata takes its fused computation's: the root's, else the most common one inside."""
    own, calls, inside, root = {}, {}, defaultdict(list), {}
    computation = None
    for line in hlo_text.splitlines():
        text = line.strip()
        if text.endswith("{") and " = " not in text:  # a computation's header
            computation = text.removeprefix("ENTRY ").split()[0].lstrip("%")
            continue
        if " = " not in text:
            continue
        name = text.split(" = ")[0].removeprefix("ROOT ").strip().lstrip("%")
        op = re.search(r'op_name="([^"]+)"(?:[^}]*source_file="([^"]+)"[^}]*source_line=(\d+))?', text)
        called = re.search(r"calls=%?([\w.\-]+)", text)
        if op:
            where = f"{op.group(1).split('/')[-1]} ({Path(op.group(2)).name}:{op.group(3)})" if op.group(2) else op.group(1)
            own[name] = where
            inside[computation].append(where)
            if text.startswith("ROOT "):
                root[computation] = where
        if called:
            calls[name] = called.group(1)
    sources = dict(own)
    for name, comp in calls.items():
        if name not in sources and (comp in root or inside.get(comp)):
            sources[name] = root.get(comp) or max(set(inside[comp]), key=inside[comp].count)
    return sources


def profile_job(job: bench_models.Job, calls: int, top: int) -> dict:
    import jax

    call, info, compiled = (bench_models.compile_training if job.train else bench_models.compile_inference)(job)
    for _ in range(2):
        jax.block_until_ready(call())
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(calls):
                out = call()
            jax.block_until_ready(out)
            wall = (time.perf_counter() - start) / calls
        path = next(Path(logdir).rglob("perfetto_trace.json.gz"))
        with gzip.open(path) as f:
            trace = json.load(f)
    events = device_events(trace)
    # GPU kernels are named after their HLO instruction with "." spelled "_".
    sources = {name.replace(".", "_"): src for name, src in fusion_sources(compiled.as_text()).items()}
    by_name: dict[str, list[float]] = defaultdict(list)
    hlo_op = {}  # GPU kernel events name their HLO instruction in args
    for e in events:
        by_name[e["name"]].append(e["dur"] / 1e3)  # microseconds -> ms
        hlo_op.setdefault(e["name"], e.get("args", {}).get("hlo_op", e["name"].split(":")[0]))
    total = sum(sum(v) for v in by_name.values()) / calls
    kinds: dict[str, float] = defaultdict(float)
    for name, durs in by_name.items():
        kinds[kind_of(name)] += sum(durs) / calls
    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
    first_args = {}  # one event's args per kernel: what the trace says of it, beside the HLO's name
    for e in events:
        first_args.setdefault(e["name"], e.get("args", {}))
    kernels = [{"name": name, "kind": kind_of(name), "ms_per_call": sum(durs) / calls,
                "launches_per_call": len(durs) / calls, "source": sources.get(hlo_op[name].replace(".", "_"), ""),
                "trace_args": first_args[name]}
               for name, durs in ranked[:top]]
    return {"job": {"model": job.model, "img_size": job.img_size, "batch": job.batch, "train": job.train,
                    "overrides": dict(job.overrides)},
            **info, "wall_ms_per_call": wall * 1e3, "device_ms_per_call": total,
            "images_per_s": job.batch / wall, "xla_bytes": bench_models._xla_bytes(compiled), "kinds_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "launches_per_call": len(events) / calls, "top_kernels": kernels}, compiled.as_text()


def markdown(result: dict) -> str:
    lines = [f"# Where the time goes: {result['device']}", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}; versions: {result['versions']}", "",
             "Kernel time per call from a `jax.profiler` trace (device events summed by name), beside the "
             "wall time per call of the same traced calls.", ""]
    for r in result["jobs"]:
        j = r["job"]
        mode = "training step (AdamW)" if j["train"] else "inference"
        extra = ", ".join(f"{k}={v}" for k, v in j["overrides"].items())
        lines += [f"## {j['model']} {mode}, batch {j['batch']}, {j['img_size']} px{' (' + extra + ')' if extra else ''}",
                  "", f"Wall {r['wall_ms_per_call']:.2f} ms per call ({r['images_per_s']:,.0f} img/s); kernels "
                  f"{r['device_ms_per_call']:.2f} ms in {r['launches_per_call']:.0f} launches; XLA's memory plan "
                  f"(arguments + outputs + temporaries) {(r['xla_bytes'] or 0) / 2**30:.2f} GiB.", "",
                  "| kind | ms per call | share of kernel time |", "|---|---:|---:|"]
        for kind, ms in r["kinds_ms"].items():
            lines.append(f"| {kind} | {ms:.2f} | {100 * ms / max(r['device_ms_per_call'], 1e-9):.0f}% |")
        lines += ["", "| kernel | kind | ms per call | launches | from (JAX op) |", "|---|---|---:|---:|---|"]
        for k in r["top_kernels"]:
            lines.append(f"| `{k['name'][:60]}` | {k['kind']} | {k['ms_per_call']:.3f} | "
                         f"{k['launches_per_call']:.0f} | {k['source'][-90:]} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vim_small"])
    p.add_argument("--batch", type=int, default=256, help="inference batch")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--remat", action="store_true", help="also profile training with remat=True")
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--unroll-blocks", action="store_true",
                   help="also profile every job with the blocks unrolled instead of a scan over layers")
    p.add_argument("--dump-hlo", action="store_true",
                   help="write each job's optimised HLO beside the results (<stem>_<job>.hlo.txt.gz)")
    p.add_argument("--smoke", action="store_true", help="a tiny Vim on CPU")
    args = p.parse_args(argv)
    import jax

    size, batch, train_batch = (32, 2, 2) if args.smoke else (224, args.batch, args.train_batch)
    tiny = (("embed_dim", 32), ("depth", 2), ("d_state", 4), ("scan_backend", "reference")) if args.smoke else ()
    jobs = []
    for model in args.models:
        jobs += [bench_models.Job("224", model, model, size, batch, overrides=tiny),
                 bench_models.Job("224", model, model, size, train_batch, train=True, overrides=tiny)]
        if args.remat:
            jobs.append(bench_models.Job("224", model, model, size, train_batch, train=True,
                                         overrides=tiny + (("remat", True),)))
    if args.unroll_blocks:
        jobs = [variant for job in jobs for variant in
                (job, dataclasses.replace(job, overrides=job.overrides + (("unroll_blocks", True),)))]
    device = jax.devices()[0].device_kind
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"profile_{device.lower().replace(' ', '_')}{'_smoke' if args.smoke else ''}"
    results = []
    for job in jobs:
        result, hlo = profile_job(job, args.calls, args.top)
        results.append(result)
        if args.dump_hlo:
            tags = [job.model, "train" if job.train else "infer"] + [k for k, v in job.overrides if v is True]
            with gzip.open(f"{stem}_{'_'.join(tags)}.hlo.txt.gz", "wt") as f:
                f.write(hlo)
        print(f"{job.model} train={job.train} {dict(job.overrides)}: wall {result['wall_ms_per_call']:.2f} ms, "
              f"kernels {result['device_ms_per_call']:.2f} ms, {result['kinds_ms']}", flush=True)
        # Rewritten after every job, so that a run cut short keeps what it measured.
        summary = {"command": "python experiments/profile_model.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "device": device, "versions": bench_models._versions(), "jobs": results}
        stem.with_suffix(".json").write_text(json.dumps(summary, indent=2))
        stem.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
