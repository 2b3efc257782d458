"""Host cost of the segmentation training pipeline per crop, stage by stage, before and after its
speed-ups, at the Fashion-MNIST scenes' 512 and 1024 px presets (``configs/fmnist_scenes.py``):

    python experiments/bench_seg_pipeline.py [--crops 16]

writes experiments/results/seg_pipeline_cpu.{json,md}. Both variants run in this one process on
the same scenes and the same per-crop seeds, alternating crop by crop, and are timed in CPU
seconds of this process (``time.process_time``), which stays comparable when other work shares
the machine. ``full`` is the pipeline as mmseg runs it: rescale the whole scene, crop (with
``cat_max_ratio``'s retries), flip, photometric distortion in numpy, pad. ``window`` resamples only
the chosen crop (``seg_transforms.rescaled_crop``, bitwise the same crop) and only draws the
distortion, which the training step then applies on the device (``data.device_photometric``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vim_jax.data import seg_transforms as st
from vim_jax.data.fmnist_scenes import FashionMnistScenes

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = (512, 1024)


def _timed(times: dict, stage: str, fn, *args):
    start = time.process_time()
    out = fn(*args)
    times[stage] = times.get(stage, 0.0) + time.process_time() - start
    return out


def full_pipeline(record, rng, config, times):
    image, mask = _timed(times, "rescale", st.rescale, record["image"], record["mask"],
                         st.sample_scale(rng, config.scale, config.ratio_range))
    image, mask = _timed(times, "crop", st.random_crop, image, mask, rng, config.crop_size, config.cat_max_ratio)
    image, mask = _timed(times, "flip", st.random_flip, image, mask, rng, config.flip_prob)
    params = _timed(times, "photometric draw", st.sample_photometric, rng)
    image = _timed(times, "photometric apply", st.apply_photometric, image, params)
    return _timed(times, "pad", st.pad_to, image, mask, config.crop_size)


def window_pipeline(record, rng, config, times):
    scale = st.sample_scale(rng, config.scale, config.ratio_range)
    image, mask = _timed(times, "rescale + crop", st.rescaled_crop, record["image"], record["mask"], rng, scale,
                         config.crop_size, config.cat_max_ratio)
    image, mask = _timed(times, "flip", st.random_flip, image, mask, rng, config.flip_prob)
    params = _timed(times, "photometric draw", st.sample_photometric, rng)
    _timed(times, "photometric columns", st.photometric_columns, params, *mask.shape)
    return _timed(times, "pad", st.pad_to, image, mask, config.crop_size)


def measure(crop: int, crops: int, batch: int = 16) -> dict:
    scenes = FashionMnistScenes("train", size=(crop // 2, crop), num_scenes=crops, seed=0)
    config = st.SegTrainConfig(scale=(4 * crop, crop), crop_size=(crop, crop))
    times = {"full": {}, "window": {}}
    outputs = {"full": [], "window": []}
    scene_time = 0.0
    for i in tqdm(range(crops), desc=f"{crop} px", leave=False):
        start = time.process_time()
        record = scenes[i]
        scene_time += time.process_time() - start
        for name, pipeline in (("full", full_pipeline), ("window", window_pipeline)):
            outputs[name].append(pipeline(record, st.example_rng(0, i), config, times[name]))
    for name in times:
        times[name] = {"scene": scene_time, **times[name]}
        images = [image for image, _ in outputs[name]][:batch]
        _timed(times[name], "batch stack", np.stack, images)
        times[name]["batch stack"] *= crops / len(images)
    same = all(np.array_equal(a[1], b[1]) for a, b in zip(outputs["full"], outputs["window"]))
    per_crop = {name: {stage: 1000 * t / crops for stage, t in stages.items()} for name, stages in times.items()}
    return {"crop": crop, "crops": crops, "labels_equal": same, "ms_per_crop": per_crop,
            "crops_per_cpu_s": {name: 1000 / sum(stages.values()) for name, stages in per_crop.items()}}


def report(results: list[dict]) -> str:
    lines = ["# Segmentation pipeline: host CPU time per crop", "",
             f"`python experiments/bench_seg_pipeline.py --crops {results[0]['crops']}` on {platform.machine()} "
             f"({os.cpu_count()} CPUs, possibly shared), one process; both variants on the same scenes and seeds, "
             "in CPU milliseconds per crop (`time.process_time`). `full` rescales the whole scene and "
             "distorts on the host; `window` resamples only the crop and leaves the distortion to the "
             "device.", ""]
    for r in results:
        stages = list(dict.fromkeys([*r["ms_per_crop"]["full"], *r["ms_per_crop"]["window"]]))
        lines += [f"## {r['crop']} px crops ({r['crops']} crops; label crops equal: {r['labels_equal']})", "",
                  "| stage | full (ms) | window (ms) |", "|---|---|---|"]
        for stage in stages:
            cells = [f"{r['ms_per_crop'][v][stage]:.1f}" if stage in r["ms_per_crop"][v] else "-"
                     for v in ("full", "window")]
            lines.append(f"| {stage} | {cells[0]} | {cells[1]} |")
        full, window = r["crops_per_cpu_s"]["full"], r["crops_per_cpu_s"]["window"]
        lines += [f"| **crops per CPU-second** | **{full:.1f}** | **{window:.1f}** ({window / full:.1f}x) |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=16, help="crops per preset")
    parser.add_argument("--out", type=Path, default=RESULTS / "seg_pipeline_cpu")
    args = parser.parse_args(argv)
    results = [measure(crop, args.crops) for crop in PRESETS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    text = report(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
