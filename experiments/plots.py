"""PNG figures of the experiment results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VIM_COLOR, DEIT_COLOR, DEIT_XLA_COLOR = "tab:red", "tab:blue", "tab:green"


def plot_ablation(result: dict, path: Path) -> None:
    """Ours (mean +- std over seeds, bars, left axis) beside the paper's ImageNet top-1 (diamonds,
    right axis): two datasets, so two scales; the ranking is what compares."""
    rows = result["variants"]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows)), 4.2))
    means = [100 * r["top1_mean"] for r in rows]
    stds = [100 * r["top1_std"] for r in rows]
    ax.bar(x, means, yerr=stds, capsize=4, color="tab:gray", alpha=0.8, label="ours: Fashion-MNIST test top-1")
    low, high = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
    # Headroom above both series keeps the legend (top) clear of bars and diamonds.
    ax.set_ylim(low - 0.6 * (high - low + 0.5), high + 0.5 * (high - low + 0.5))
    ax.set_ylabel("Fashion-MNIST top-1 (%)")
    ax.set_xticks(list(x), [r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    paper = [(i, r["paper_top1"]) for i, r in enumerate(rows) if r["paper_top1"] is not None]
    if paper:
        twin = ax.twinx()
        twin.plot([i for i, _ in paper], [p for _, p in paper], "D", color="tab:orange", label="paper: ImageNet top-1")
        twin.set_ylabel("paper ImageNet-1k top-1 (%)")
        p_low, p_high = min(p for _, p in paper), max(p for _, p in paper)
        twin.set_ylim(p_low - 0.3 * (p_high - p_low + 0.5), p_high + 0.6 * (p_high - p_low + 0.5))
        h, l = twin.get_legend_handles_labels()
        handles, labels = handles + h, labels + l
    ax.legend(handles, labels, loc="upper center", ncol=2, fontsize=8)
    ax.set_title(f"{result['title']}\n{result['budget']['schedule']}, {result['budget']['seeds']} seed(s), "
                 f"{result['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


_OURS_STYLE = {"Vim-Ti": VIM_COLOR, "DeiT-Ti flash": DEIT_COLOR, "DeiT-Ti xla": DEIT_XLA_COLOR}
_OFFICIAL_STYLE = {"official Vim-Ti": VIM_COLOR, "timm DeiT-Ti SDPA": DEIT_COLOR, "timm DeiT-Ti plain": DEIT_XLA_COLOR}


def plot_bench_highres(result: dict, path: Path) -> None:
    """The paper's efficiency figure: img/s and peak memory vs resolution, ours solid, the official
    PyTorch numbers dashed."""
    rows = [r for r in result["rows"] if r["job"]["section"] == "highres" and "error" not in r]
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, color in _OURS_STYLE.items():
        mine = sorted((r["job"]["img_size"], r) for r in rows if r["job"]["label"] == label)
        if not mine:
            continue
        sizes = [s for s, _ in mine]
        speed.plot(sizes, [r["images_per_s"] for _, r in mine], "o-", color=color, label=f"{label} (ours, JAX)")
        peaks = [(s, r["peak_bytes"] / 2**20) for s, r in mine if r.get("peak_bytes")]
        if peaks:
            memory.plot(*zip(*peaks), "o-", color=color, label=f"{label} (ours, JAX)")
    if result["platform"] == "gpu":  # the official numbers are a GPU's (an H200): beside a GPU run only
        for label, color in _OFFICIAL_STYLE.items():
            points = sorted(result["official_highres"][label].items(), key=lambda kv: int(kv[0]))
            sizes = [int(s) for s, _ in points]
            speed.plot(sizes, [v[0] for _, v in points], "s--", color=color, alpha=0.6, label=f"{label} (PyTorch)")
            memory.plot(sizes, [v[1] for _, v in points], "s--", color=color, alpha=0.6, label=f"{label} (PyTorch)")
    batch = rows[0]["job"]["batch"] if rows else "?"
    speed.set(xlabel="resolution (px)", ylabel="images / s", title=f"Inference speed, batch {batch}")
    memory.set(xlabel="resolution (px)", ylabel="peak device memory (MiB)", title=f"Peak memory, batch {batch}")
    if memory.lines:
        memory.set_yscale("log")
    else:
        memory.text(0.5, 0.5, f"no device memory statistics on {result['platform']}", ha="center",
                    transform=memory.transAxes)
    for ax in (speed, memory):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"Vim vs DeiT, {result['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bench_224(result: dict, path: Path) -> None:
    """224 px inference and training img/s per model, ours as bars, the official/timm numbers as
    dashed ticks over them."""
    rows = [r for r in result["rows"] if r["job"]["section"] == "224"]
    models = list(dict.fromkeys(r["job"]["model"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, train, title in ((axes[0], False, "Inference"), (axes[1], True, "Training (AdamW step)")):
        for i, model in enumerate(models):
            row = next((r for r in rows if r["job"]["model"] == model and r["job"]["train"] == train), None)
            if row is None or "error" in row:
                continue
            color = VIM_COLOR if model.startswith("vim") else DEIT_COLOR
            ax.bar(i, row["images_per_s"], color=color, alpha=0.8)
            ax.text(i, row["images_per_s"], f"{row['images_per_s']:,.0f}", ha="center", va="bottom", fontsize=7)
            official = result["official_224"].get(model)
            if official and result["platform"] == "gpu":
                value = official[1] if train else official[0]
                ax.hlines(value, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
        batch = next((r["job"]["batch"] for r in rows if r["job"]["train"] == train), "?")
        ax.set_xticks(range(len(models)), models, rotation=20, fontsize=8)
        ax.set_yscale("log")
        ax.set(ylabel="images / s", title=f"{title}, 224 px, batch {batch} (dashed: official PyTorch / timm)")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Vim vs DeiT at 224 px, {result['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_segmentation(result: dict, path: Path) -> None:
    """Segmentation backbones: test mIoU per crop size and backbone (bars: the mean, points: the
    seeds), training img/s, and peak device memory."""
    groups = result["groups"]
    sizes = list(dict.fromkeys(g["size"] for g in groups))
    colors = {"vim": VIM_COLOR, "deit": DEIT_COLOR}
    fig, (miou, speed, memory) = plt.subplots(1, 3, figsize=(13, 4.2))
    width = 0.38
    for k, backbone in enumerate(colors):
        mine = {g["size"]: g for g in groups if g["backbone"] == backbone}
        xs = [i + (k - 0.5) * width for i in range(len(sizes))]
        rows = [mine.get(s) for s in sizes]
        label = next((g["label"] for g in rows if g), backbone)
        miou.bar(xs, [100 * (g["miou_mean"] or 0) if g else 0 for g in rows], width, color=colors[backbone],
                 alpha=0.5, label=label)
        for x, g in zip(xs, rows):
            if g and g["miou_per_seed"]:
                miou.plot([x] * len(g["miou_per_seed"]), [100 * m for m in g["miou_per_seed"]], "o",
                          color=colors[backbone], markeredgecolor="black")
        for ax, key in ((speed, "train_images_per_s"), (memory, "peak_mib")):
            ax.bar(xs, [(g[key] or 0) if g else 0 for g in rows], width, color=colors[backbone], alpha=0.8,
                   label=label)
    budget = result["budget"]
    for ax, ylabel, title in ((miou, "test mIoU (%)", "Test mIoU (points: seeds)"),
                              (speed, "training images / s", "Training throughput"),
                              (memory, "peak device memory (MiB)", "Peak memory (training + evaluation)")):
        ax.set_xticks(range(len(sizes)), [f"{s} px" for s in sizes])
        ax.set(ylabel=ylabel, title=title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    if not any(g["peak_mib"] for g in groups):
        memory.text(0.5, 0.5, f"no device memory statistics on {result['platform']}", ha="center",
                    transform=memory.transAxes)
    fig.suptitle(f"{result['title']}: {budget['steps']} steps x batch {budget['batch']}, from scratch, "
                 f"{budget['seeds']} seed(s), {result['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
