"""Input-pipeline throughput: images/s and images per CPU-second of the Grain ImageNet and Fashion-MNIST pipelines.

    python experiments/bench_input_pipeline.py

writes experiments/results/input_pipeline.{json,md}. ImageNet runs on generated archives in the
official layout (``vim_jax.data.fake_imagenet``) of 500x375 JPEGs of about ImageNet's average file
size, prepared by the real TFDS builder. Each measurement runs in a fresh process with 1, then 2
Grain worker processes (``num_workers``), and reports wall-clock images/s and images per
CPU-second of the process and its workers (user + system time, from /proc), which stays
meaningful when other work shares the machine. The results of the previous run of this script
(if its JSON is there) are kept in the new report, to set the numbers side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CASES = {
    # name: (description, kwargs for the measuring process)
    "imagenet_train": ("ImageNet train: RRC 224 + flip + RandAugment m9-mstd0.5-inc1 (uint8 out)", {}),
    "imagenet_train_no_randaugment": ("ImageNet train without RandAugment", {"rand_augment": None}),
    "imagenet_eval": ("ImageNet eval: resize 256 + centre crop 224 (uint8 out)", {}),
    "fashion_mnist_train_28x28x1": ("Fashion-MNIST train (numpy): pad-4 crop + flip, 28x28x1 uint8", {}),
}
WORKERS = (1, 2)


def _process_tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its descendants alive now (Linux /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")


def _measure(iterator, batch_size: int, warmup: int, batches: int, min_seconds: float) -> dict:
    for _ in range(warmup):  # pipeline and worker start-up, tracing
        next(iterator)
    cpu0, wall0 = _process_tree_cpu_seconds(), time.perf_counter()
    done = 0
    while done < batches or time.perf_counter() - wall0 < min_seconds:
        next(iterator)
        done += 1
    wall, cpu = time.perf_counter() - wall0, _process_tree_cpu_seconds() - cpu0
    images = done * batch_size
    return {"images": images, "wall_s": wall, "cpu_s": cpu, "images_per_s": images / wall,
            "images_per_cpu_s": images / cpu}


def measure(case: str, workers: int, data_dir: str, batch_size: int, warmup: int, batches: int,
            min_seconds: float) -> dict:
    """Runs in a child process: build the pipeline with ``workers`` Grain worker processes, time it."""
    if case.startswith("imagenet"):
        from vim_jax.data.imagenet import imagenet_iterator

        split = "validation" if case == "imagenet_eval" else "train"
        it = imagenet_iterator(data_dir, split, batch_size, train=split == "train", num_workers=workers,
                               **CASES[case][1])
        if split == "validation":  # one pass is short: cycle the split
            it.num_steps = None
    else:
        from vim_jax.data.fashion_mnist import fashion_mnist_iterator

        it = fashion_mnist_iterator("train", batch_size)  # numpy in this process: workers do not apply
    result = _measure(it, batch_size, warmup, batches, min_seconds)
    it.close()
    return {**result, "workers": workers}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("numpy", "jax", "tensorflow-cpu", "tensorflow-datasets", "array-record", "pillow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores_available": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "load_average_at_start": os.getloadavg()}


def _write_fake_imagenet(work_dir: Path, classes: int, per_class: int, num_val: int) -> dict:
    from vim_jax.data.fake_imagenet import FakeImageNetSpec, write_fake_imagenet
    from vim_jax.data.imagenet import prepare_imagenet

    spec = FakeImageNetSpec(num_classes=classes, train_per_class=per_class, num_val=num_val, min_size=(500, 375),
                            max_size=(500, 375), noise_std=24.0, jpeg_quality=90, seed=0)
    t0 = time.perf_counter()
    write_fake_imagenet(work_dir / "manual", spec)
    t1 = time.perf_counter()
    prepare_imagenet(work_dir / "data", work_dir / "manual")
    t2 = time.perf_counter()
    train_tar = (work_dir / "manual" / "ILSVRC2012_img_train.tar").stat().st_size
    return {"train_images": classes * per_class, "val_images": num_val, "image_size_wh": [500, 375],
            "mean_jpeg_kb": round(train_tar / (classes * per_class) / 1e3, 1),
            "write_s": round(t1 - t0, 2), "tfds_prepare_s": round(t2 - t1, 2)}


def _previous_report(path: Path) -> dict | None:
    """The last report's results (its own 'previous' dropped), to show beside the new ones."""
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    old.pop("previous", None)
    old.setdefault("pipeline", "tf.data from_generator")
    old.setdefault("descriptions", {case: case for case in old["results"]})
    return old


def _markdown(report: dict) -> str:
    fake = report.get("fake_imagenet")
    lines = [
        "# Input pipeline throughput",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores_available']} cores available, "
        f"load average {', '.join(f'{x:.1f}' for x in report['machine']['load_average_at_start'])} at start, "
        f"{', '.join(f'{x:.1f}' for x in report['machine']['load_average_at_end'])} at end  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        (f"Fake ImageNet: {fake['train_images']} train JPEGs of 500x375, {fake['mean_jpeg_kb']} KB on average "
         f"(real ImageNet: ~110 KB); TFDS prepare took {fake['tfds_prepare_s']} s. " if fake else "")
        + f"Batch {report['batch_size']}, {report['warmup']} warm-up batches, then at least {report['batches']} "
        f"batches and {report['min_seconds']} s timed per measurement.",
        "",
        "Each row is a fresh process with that many Grain worker processes building batches. *img per "
        "CPU-s* = images per second of CPU time the process and its workers used (robust to other load "
        "on the machine).",
        "",
        "| pipeline | workers | img/s | img per CPU-s |",
        "|---|---:|---:|---:|",
    ]
    for case, runs in report["results"].items():
        for run in runs:
            lines.append(f"| {CASES[case][0]} | {run['workers']} | {run['images_per_s']:.1f} | "
                         f"{run['images_per_cpu_s']:.1f} |")
    lines += ["", "Notes:", *[f"- {note}" for note in report["notes"]], ""]
    previous = report.get("previous")
    if previous:
        lines += [f"## Before: {previous['pipeline']} ({previous['date']})", "",
                  f"Command: `{previous['command']}`, load average "
                  f"{', '.join(f'{x:.1f}' for x in previous['machine']['load_average_at_start'])} at start. "
                  "Each row a fresh process (the tf.data runs were pinned to that many cores).", "",
                  "| pipeline | cores or workers | img/s | img per CPU-s |", "|---|---:|---:|---:|"]
        for case, runs in previous["results"].items():
            for run in runs:
                count, unit = (run["cores"], "core") if "cores" in run else (run["workers"], "worker")
                setting = f"{count} {unit}{'' if count == 1 else 's'}"
                lines.append(f"| {previous['descriptions'][case]} | {setting} | {run['images_per_s']:.1f} | "
                             f"{run['images_per_cpu_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", help="where to write fake ImageNet (default: a temporary directory)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=12, help="timed batches, at least")
    parser.add_argument("--min-seconds", type=float, default=10.0, help="timed seconds, at least")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", default=str(RESULTS / "input_pipeline"), help="path without extension")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: child-process mode
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.measure, args.workers, args.data_dir, args.batch_size, args.warmup, args.batches,
                                 args.min_seconds)))
        return

    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    report = {"command": command, "pipeline": "Grain", "descriptions": {c: CASES[c][0] for c in CASES}, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": _machine(), "versions": _versions(), "batch_size": args.batch_size,
              "warmup": args.warmup, "batches": args.batches, "min_seconds": args.min_seconds,
              "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(args.work_dir or tmp)
        if any(c.startswith("imagenet") for c in args.cases):
            report["fake_imagenet"] = _write_fake_imagenet(work_dir, args.classes, args.per_class, args.val)
            print("fake ImageNet:", report["fake_imagenet"], flush=True)
        for case in args.cases:
            report["results"][case] = []
            for workers in WORKERS if case.startswith("imagenet") else (0,):
                child = [sys.executable, __file__, "--measure", case, "--workers", str(workers),
                         "--data-dir", str(work_dir / "data"), "--batch-size", str(args.batch_size),
                         "--warmup", str(args.warmup), "--batches", str(args.batches),
                         "--min-seconds", str(args.min_seconds)]
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu",
                       # The numpy pipeline runs on one thread; extra BLAS threads would only spin.
                       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
                out = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                report["results"][case].append(result)
                print(f"{case:32s} workers={workers} {result['images_per_s']:8.1f} img/s "
                      f"{result['images_per_cpu_s']:8.1f} img/CPU-s", flush=True)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["notes"] = [
        "A load average above the core count means other work shared the machine: the wall-clock columns are then "
        "lower bounds, and *img per CPU-s* is the per-core throughput to plan with.",
        "ImageNet: Grain reads the TFDS array_record files (one batched ArrayRecord read per batch) and each worker "
        "process decodes and augments with the TF ops as one compiled tf.function per image; JPEGs are decoded with "
        "the accurate IDCT (PIL's pixels) and only the random-resized-crop window is decoded. Images leave as uint8: "
        "normalisation and random erasing run on the accelerator, in the jitted step.",
        "Fashion-MNIST runs in numpy in the calling process (BLAS pinned to 1 thread) and leaves as 28x28x1 uint8; "
        "resizing and normalisation run on the accelerator.",
        "Each image costs the same TF ops as in the tf.data pipeline before (table below), so *img per CPU-s* "
        "compares directly; Grain's worker processes are what spread that work over cores (cores needed = "
        "images/s wanted / img per CPU-s).",
    ]
    report["previous"] = _previous_report(Path(args.out).with_suffix(".json"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
