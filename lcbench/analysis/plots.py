"""Plots (matplotlib, PNG and PDF): top-1 against compression, GMACs, latency and training cost (one line
per method over its levels, error bars over seeds, the original marked); LayerCollapse slope trajectories;
accuracy against blocks folded beside the paper's vit_tiny row.

Each function returns its figure so tests can read the data behind the axes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from ..store import RunDir  # noqa: E402

# one colour per method in every panel and every figure
METHOD_COLORS = {
    "finetune": "C0",
    "kd": "C1",
    "layercollapse": "C2",
    "magnitude_pruning": "C3",
    "layer_fusion": "C4",
}
# (wall seconds and in-sweep latency are left out: they were taken while other runs shared the cores)
AXES = {
    "compression": ("compression (original / remaining parameters, ×)", True),
    "gmacs": ("GMACs per image", False),
    "train_flops": ("training FLOPs (counted)", True),
}


def save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)
    plt.close(fig)
    return paths


def top1_against(agg: pd.DataFrame, x: str):
    """One panel per (data set, model); one line per method through its levels; the original as a star."""
    label, log = AXES[x]
    panels = list(agg.groupby(["dataset", "model"], sort=False).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        rows = agg[(agg["dataset"] == dataset) & (agg["model"] == model)]
        for method, group in rows[rows["method"] != "original"].groupby("method", sort=True):
            group = group.sort_values(f"{x}_mean")
            ax.errorbar(
                group[f"{x}_mean"],
                group["top1_mean"],
                xerr=group[f"{x}_std"].fillna(0),
                yerr=group["top1_std"].fillna(0),
                marker="o",
                capsize=3,
                label=method,
                color=METHOD_COLORS.get(method),
            )
        original = rows[rows["method"] == "original"]
        if len(original):
            ax.plot(original[f"{x}_mean"], original["top1_mean"], "k*", markersize=12, label="original")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.set_title(f"{model} ({dataset})")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
    return fig


def slope_trajectories(frame: pd.DataFrame, output_root: Path):
    """Per LayerCollapse run (seed 0, each model's highest level): each converted block's slope per epoch."""
    lc = (frame["method"] == "layercollapse") & (frame["status"] == "completed")
    runs = frame[lc & (frame["seed"] == 0)]
    runs = runs.sort_values("level").groupby("model", sort=False).tail(1)
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(4.2 * max(len(runs), 1), 3.4), squeeze=False)
    for ax, (_, run) in zip(axes[0], runs.iterrows()):
        epochs = RunDir(output_root, run["run_id"]).events("epoch")
        blocks = sorted({k for e in epochs for k in e if k.startswith("slope/")})
        for key in blocks:
            points = [(e["epoch"], e[key]) for e in epochs if key in e]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, marker=".", label=key.removeprefix("slope/"))
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(f"{run['model']}, k={run['level_label'] or run['level']}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("PReLU slope a")
        if blocks:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def blocks_folded_vs_paper(agg: pd.DataFrame, paper: pd.DataFrame, model: str = "digits_vit"):
    """Top-1 against blocks folded: ours (LayerCollapse, mean ± std) beside the paper's vit_tiny row."""
    fig, (ours_ax, paper_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    ours = agg[(agg["model"] == model) & (agg["method"] == "layercollapse")].sort_values("level")
    original = agg[(agg["model"] == model) & (agg["method"] == "original")]
    xs = [0, *ours["level"].astype(int)] if len(original) else list(ours["level"].astype(int))
    ys = [*original["top1_mean"], *ours["top1_mean"]]
    es = [*original["top1_std"].fillna(0), *ours["top1_std"].fillna(0)]
    ours_ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3)
    ours_ax.set_title(f"lcbench: {model}")
    tiny = paper[paper["model"] == "vit_tiny_patch16_224"].sort_values("paper_blocks")
    paper_ax.plot(tiny["paper_blocks"], tiny["top1"], marker="s", color="C3")
    paper_ax.set_title("paper: vit_tiny_patch16_224 (ImageNet)")
    for ax in (ours_ax, paper_ax):
        ax.set_xlabel("blocks folded")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def top1_vs_train_flops(curves: pd.DataFrame):
    """Held-out top-1 after each epoch against cumulative training FLOPs (mean over seeds), one panel per
    (model, level), one line per variant; LayerCollapse's final top-1 as a dashed line."""
    leveled = curves[curves["level"].notna()]
    panels = list(leveled.groupby(["dataset", "model", "level"], sort=False).groups)
    cols = min(len(panels), 4) or 1
    rows = -(-len(panels) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (_, model, level) in zip(axes.flat, panels):
        here = curves[(curves["model"] == model) & ((curves["level"] == level) | curves["level"].isna())]
        for i, (variant, runs) in enumerate(here.groupby("variant", sort=True)):
            mean = runs.groupby("epoch")[["train_flops", "top1"]].mean()
            method = runs["method"].iloc[0]
            ax.plot(
                mean["train_flops"],
                mean["top1"],
                marker=".",
                label=variant,
                color=METHOD_COLORS.get(method),
                ls=["-", "--", ":", "-."][i % 4],
            )
            if variant == "layercollapse":
                ax.axhline(mean["top1"].iloc[-1], color=METHOD_COLORS["layercollapse"], lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_title(f"{model}, k={int(level)}")
        ax.set_xlabel("cumulative training FLOPs")
        ax.set_ylabel("held-out top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
