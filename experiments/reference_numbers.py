"""The measured numbers of other systems that the benchmarks print beside vim_jax's.

They live in one result file, `results/reference_h200_2026-12-01.json` (its markdown twin says
how they were measured): the official Vim (hustvl/Vim with its own CUDA kernels) and timm's DeiT
on one NVIDIA H200, 2026-12-01. The benchmarks read them from there rather than keeping copies.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REFERENCE_FILE = Path(__file__).resolve().parent / "results" / "reference_h200_2026-12-01.json"
DEVICE = "H200"  # the GPU the reference numbers were measured on, for table captions


@lru_cache(maxsize=None)
def load() -> dict:
    """The whole reference file as a dict."""
    return json.loads(REFERENCE_FILE.read_text())


def official_scan_ms() -> dict[tuple[int, int, int, int], tuple[float, float]]:
    """(batch, length, channels, N) -> the official kernel's (forward, forward + backward) ms."""
    return {tuple(row["shape"]): tuple(row["official"]) for row in load()["kernel_ms"]}


def exp_rate() -> float:
    """Exponentials per second on the reference GPU's special-function units (the scan's floor)."""
    return float(load()["exp_rate_per_s"])


def official_224() -> dict[str, tuple[int, int, int]]:
    """Registered model name -> (inference img/s, training img/s, training peak MiB) of the
    official Vim (vim_tiny, vim_small) and timm's DeiT (deit_tiny, deit_small) at 224 px."""
    models = load()["models_224"]
    return {name: (row["inference_img_per_s"], row["training_img_per_s"], row["training_peak_MiB"])
            for system in ("official", "timm") for name, row in models[system].items()}


def official_highres() -> dict[str, dict[int, tuple[int, int]]]:
    """Label -> {px: (img/s, peak MiB)} at batch 8 for the official Vim-Ti and timm's DeiT-Ti
    (fused SDPA and plain attention); vim_jax's own rows of the file are left out."""
    table = load()["highres_batch8_img_per_s_and_peak_MiB"]
    return {label: {int(px): tuple(v) for px, v in rows.items()}
            for label, rows in table.items() if not label.startswith("vim_jax")}
