"""Data-parallel and FSDP scaling of the trainer's step over 1, 2, 4, 8 devices.

Measures, for Vim at 224 on synthetic data with the official ImageNet recipe's train step (AdamW,
mixup/cutmix, EMA), the throughput per device with the mesh as pure data parallel
(`{'data': n}`) and as FSDP (`{'fsdp': n}`), the scaling efficiency
`img/s at n / (n * img/s at 1)`, peak memory per device, and whether the first steps' losses of
every mesh agree with one device's for the same global batch. Timing: warm-up steps, then the
median of device-synchronised steps (`jax.block_until_ready`); random inputs.

    python experiments/bench_scaling.py --model small --per-device-batch 128      # on a GPU host
    python experiments/bench_scaling.py --smoke --fake-devices 8                  # CPU, seconds

Writes `experiments/results/bench_scaling_<device>.{json,md}` (device, date, versions, command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small", choices=["tiny", "small", "base"], help="imagenet_vim.py recipe")
    p.add_argument("--per-device-batch", type=int, default=128)
    p.add_argument("--devices", default="1,2,4,8", help="device counts to try (those available)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--agreement-steps", type=int, default=3)
    p.add_argument("--fake-devices", type=int, default=0, help="CPU only: XLA host devices to fake")
    p.add_argument("--smoke", action="store_true", help="a tiny Vim on 32x32 images, for CPU tests")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def make_config(args, mesh_shape, global_batch):
    sys.path.insert(0, str(Path(__file__).resolve().parent / "configs"))
    import imagenet_vim

    config = imagenet_vim.get_config(args.model)
    config.global_batch_size = global_batch
    config.mesh = dict(mesh_shape)
    config.augment.mix_groups = 1
    if args.smoke:
        config.model_name = "vim_test"
        config.model.update(img_size=32, depth=2, embed_dim=32, num_classes=10)
        config.dataset.update(image_size=32, num_classes=10)
    return config


def run_configuration(args, mesh_shape, global_batch, steps, warmup):
    """Step times and losses of the trainer's jitted step on one mesh."""
    import jax
    import numpy as np

    from vim_jax.train import mesh as mesh_lib
    from vim_jax.train import train_state
    from vim_jax.train.train import jit_train_step

    config = make_config(args, mesh_shape, global_batch)
    mesh = mesh_lib.make_mesh(config.mesh)
    setup = train_state.model_setup(config, mesh)
    state = train_state.init_state(config, setup)
    step_fn = jit_train_step(config, setup, mesh, steps_per_epoch=1000)
    size, classes = config.dataset.image_size, config.dataset.num_classes
    rng = np.random.default_rng(0)
    batches = [jax.device_put({"image": rng.integers(0, 256, (global_batch, size, size, 3), np.uint8),  # as fed
                               "label": rng.integers(0, classes, global_batch).astype(np.int32),
                               "mask": np.ones(global_batch, bool)}, mesh_lib.batch_sharding(mesh))
               for _ in range(3)]
    losses, times = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = step_fn(state, batches[i % len(batches)])
        loss = float(jax.block_until_ready(metrics["loss"]))
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss)
    peaks = [d.memory_stats().get("peak_bytes_in_use", 0) if d.memory_stats() else 0 for d in mesh.devices.flat]
    return {"median_step_s": statistics.median(times) if times else None, "losses": losses,
            "peak_bytes_per_device": max(peaks) if peaks else 0}


def main(argv=None):
    args = parse_args(argv)
    if args.fake_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.fake_devices}").strip()
    import flax
    import jax


    available = jax.device_count()
    counts = [n for n in map(int, args.devices.split(",")) if n <= available]
    if args.smoke:
        args.per_device_batch, args.steps, args.warmup, args.agreement_steps = 4, 2, 1, 2
    rows = []
    for n in counts:
        for layout in ("data", "fsdp"):
            if n == 1 and layout == "fsdp":
                continue
            result = run_configuration(args, {layout: n}, args.per_device_batch * n, args.steps, args.warmup)
            ips = args.per_device_batch * n / result["median_step_s"]
            rows.append({"devices": n, "mesh": {layout: n}, "global_batch": args.per_device_batch * n,
                         "img_per_s": ips, "img_per_s_per_device": ips / n,
                         "peak_gib_per_device": result["peak_bytes_per_device"] / 2**30})
            print(f"{n} device(s) {layout:4s}: {ips:9.1f} img/s ({ips / n:8.1f} per device), "
                  f"peak {rows[-1]['peak_gib_per_device']:.2f} GiB/device", flush=True)
    base = next(r["img_per_s"] for r in rows if r["devices"] == 1)
    for r in rows:
        r["scaling_efficiency"] = r["img_per_s"] / (r["devices"] * base)

    # Same global batch on every mesh: the losses of the first steps must agree with one device's.
    agreement_batch = args.per_device_batch * max(counts)
    reference = run_configuration(args, {"data": 1}, agreement_batch, 0, args.agreement_steps)["losses"]
    agreement = []
    for n in counts[1:]:
        for layout in ("data", "fsdp"):
            losses = run_configuration(args, {layout: n}, agreement_batch, 0, args.agreement_steps)["losses"]
            diff = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
            agreement.append({"devices": n, "mesh": {layout: n}, "losses": losses, "max_rel_diff": diff})

    device = jax.devices()[0]
    info = {"device": f"{available} x {device.device_kind}", "platform": device.platform,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version()},
            "command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]),
            "model": "vim_test (smoke)" if args.smoke else f"vim_{args.model}",
            "per_device_batch": args.per_device_batch, "rows": rows,
            "reference_losses": reference, "agreement": agreement}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("cpu_smoke" if args.smoke else device.device_kind.lower().replace(" ", "_"))
    (out / f"bench_scaling_{tag}.json").write_text(json.dumps(info, indent=2))
    lines = [f"# Scaling of the train step: {info['model']}, {args.per_device_batch} images per device",
             "", f"{info['device']}, {info['date']}, jax {jax.__version__}, flax {flax.__version__}. "
             f"Command: `{info['command']}`", "",
             "| devices | mesh | img/s | img/s per device | scaling efficiency | peak GiB / device |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['devices']} | {r['mesh']} | {r['img_per_s']:.1f} | {r['img_per_s_per_device']:.1f} | "
              f"{r['scaling_efficiency']:.1%} | {r['peak_gib_per_device']:.2f} |" for r in rows]
    lines += ["", f"Loss agreement at a global batch of {agreement_batch} (first {args.agreement_steps} steps, "
              "relative to one device):", ""]
    lines += [f"- {a['devices']} devices {a['mesh']}: max relative difference {a['max_rel_diff']:.2e}" for a in agreement]
    (out / f"bench_scaling_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
