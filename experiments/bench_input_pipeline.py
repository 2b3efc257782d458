"""Input-pipeline throughput: images/s per CPU core of the ImageNet (TFDS + tf.data) and Fashion-MNIST pipelines.

    python experiments/bench_input_pipeline.py

writes experiments/results/input_pipeline.{json,md}. ImageNet runs on generated archives in the
official layout (``vim_jax.data.fake_imagenet``) of 500x375 JPEGs of about ImageNet's average file
size, prepared by the real TFDS builder. Each measurement runs in a fresh process pinned to 1 core,
then to all cores (``os.sched_setaffinity``), and reports both wall-clock images/s and images per
CPU-second of the process (user + system time), which stays meaningful when other work shares the
machine.
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
    "imagenet_train": ("ImageNet train: RRC 224 + flip + RandAugment m9-mstd0.5-inc1 + normalise + erasing 0.25", {}),
    "imagenet_train_no_randaugment": ("ImageNet train without RandAugment", {"rand_augment": None}),
    "imagenet_eval": ("ImageNet eval: resize 256 + centre crop 224 + normalise", {}),
    "fashion_mnist_train_28x28x1": ("Fashion-MNIST train (numpy): pad-4 crop + flip, 28x28x1", {}),
    "fashion_mnist_train_224x224x3": ("Fashion-MNIST train (numpy): pad-4 crop + flip, resized to 224x224x3", {}),
}


def _measure(iterator, batch_size: int, warmup: int, batches: int, min_seconds: float) -> dict:
    for _ in range(warmup):  # pipeline start-up, tracing, autotuning
        next(iterator)
    # process_time: user + system CPU time of all the process's threads.
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = 0
    while done < batches or time.perf_counter() - wall0 < min_seconds:
        next(iterator)
        done += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    images = done * batch_size
    return {"images": images, "wall_s": wall, "cpu_s": cpu, "images_per_s": images / wall,
            "images_per_cpu_s": images / cpu}


def measure(case: str, cores: int, data_dir: str, batch_size: int, warmup: int, batches: int,
            min_seconds: float) -> dict:
    """Runs in a child process: pin to ``cores`` cores, build the pipeline, time it."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    if case.startswith("imagenet"):
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(cores)
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        from vim_jax.data.imagenet import imagenet_iterator

        split = "validation" if case == "imagenet_eval" else "train"
        it = imagenet_iterator(data_dir, split, batch_size, train=split == "train", **CASES[case][1])
        if split == "validation":  # one pass is short: cycle the split
            it.num_steps = None
    else:
        from vim_jax.data.fashion_mnist import FashionMnistPreprocess, fashion_mnist_iterator

        size, channels = (224, 3) if case.endswith("224x224x3") else (28, 1)
        spec = FashionMnistPreprocess(image_size=size, channels=channels)
        it = fashion_mnist_iterator("train", batch_size, spec=spec)
    result = _measure(it, batch_size, warmup, batches, min_seconds)
    it.close()
    return {**result, "cores": cores, "images_per_s_per_core": result["images_per_s"] / cores}


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


def _markdown(report: dict) -> str:
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
        f"Fake ImageNet: {report['fake_imagenet']['train_images']} train JPEGs of 500x375, "
        f"{report['fake_imagenet']['mean_jpeg_kb']} KB on average (real ImageNet: ~110 KB); "
        f"TFDS prepare took {report['fake_imagenet']['tfds_prepare_s']} s. Batch {report['batch_size']}, "
        f"{report['warmup']} warm-up batches, then at least {report['batches']} batches and "
        f"{report['min_seconds']} s timed per measurement.",
        "",
        "Each row is a fresh process pinned to that many cores. *img/s per core* = wall-clock images/s "
        "divided by cores; *img per CPU-s* = images per second of CPU time the process used (robust to "
        "other load on the machine).",
        "",
        "| pipeline | cores | img/s | img/s per core | img per CPU-s |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, runs in report["results"].items():
        for run in runs:
            lines.append(f"| {CASES[case][0]} | {run['cores']} | {run['images_per_s']:.1f} | "
                         f"{run['images_per_s_per_core']:.1f} | {run['images_per_cpu_s']:.1f} |")
    lines += ["", "Notes:", *[f"- {note}" for note in report["notes"]], ""]
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
    parser.add_argument("--cores", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.measure, args.cores, args.data_dir, args.batch_size, args.warmup, args.batches,
                                 args.min_seconds)))
        return

    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    report = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": _machine(), "versions": _versions(), "batch_size": args.batch_size,
              "warmup": args.warmup, "batches": args.batches, "min_seconds": args.min_seconds,
              "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(args.work_dir or tmp)
        if any(c.startswith("imagenet") for c in args.cases):
            report["fake_imagenet"] = _write_fake_imagenet(work_dir, args.classes, args.per_class, args.val)
            print("fake ImageNet:", report["fake_imagenet"], flush=True)
        all_cores = len(os.sched_getaffinity(0))
        for case in args.cases:
            report["results"][case] = []
            for cores in sorted({1, all_cores}):
                child = [sys.executable, __file__, "--measure", case, "--cores", str(cores),
                         "--data-dir", str(work_dir / "data"), "--batch-size", str(args.batch_size),
                         "--warmup", str(args.warmup), "--batches", str(args.batches),
                         "--min-seconds", str(args.min_seconds)]
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu",
                       # The numpy pipeline runs on one thread; extra BLAS threads would only spin.
                       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
                out = subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                report["results"][case].append(result)
                print(f"{case:32s} cores={cores} {result['images_per_s']:8.1f} img/s "
                      f"{result['images_per_cpu_s']:8.1f} img/CPU-s", flush=True)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["notes"] = [
        "A load average above the core count means other work shared the machine: the wall-clock columns are then "
        "lower bounds, and *img per CPU-s* is the per-core throughput to plan with.",
        "ImageNet reads the TFDS array_record files through a Python generator (batched ArrayRecord reads) and "
        "decodes/augments in a deterministic parallel tf.data map; JPEGs are decoded with the accurate IDCT "
        "(PIL's pixels) and only the random-resized-crop window is decoded.",
        "Fashion-MNIST runs in numpy on the calling thread (no worker threads, BLAS pinned to 1 thread), so a second "
        "core adds nothing; the 224x224x3 variant is dominated by the resize matmuls and its 600 KB/image output "
        "(augment_on_device=True ships the 784-byte raw images instead and resizes on the accelerator).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
