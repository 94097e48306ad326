"""Plots (matplotlib, PNG and PDF): the headline metric (top-1, perplexity) against compression, GMACs
and training cost (one line per method over its levels, error bars over seeds, the original marked);
LayerCollapse slope trajectories; accuracy against blocks folded beside the paper's vit_tiny row.

Each function returns its figure so tests can read the data behind the axes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from ..data import DATASETS  # noqa: E402
from ..methods import method_order  # noqa: E402
from ..store import RunDir  # noqa: E402
from ..tasks import QUALITIES, Quality  # noqa: E402
from .names import variant_label  # noqa: E402
from .tables import si_prefix  # noqa: E402

# one colour and marker per method in every panel and figure, by the method's place in the registry
# (discovery order: stable, and a new method takes the next free one)
PALETTE = [f"C{i}" for i in range(10)]
MARKERS = ["s", "o", "^", "v", "D", "P", "X", "*", "h", "<"]
LINESTYLES = ["-", "--", ":", "-."]
# (wall seconds and in-sweep latency are left out: they were taken while other runs shared the cores)
# axis -> (label, log scale, counted unit whose prefix is chosen per panel, stored scale of that unit)
AXES = {
    "compression": ("compression (original / remaining parameters, ×)", True, None, 1.0),
    "gmacs": ("dense MACs per image", False, "MACs", 1e9),
    "train_flops": ("training FLOPs (counted)", True, "FLOPs", 1.0),
}
OFF_SCALE_PP = 25.0  # a point this far below its panel's best is drawn at the floor, flagged with its value


def _method_index(method: str) -> int:
    """The method's place among the registered compression methods (`none` left out); an id not
    installed here takes a place from its name, the same in every figure."""
    order = [m for m in method_order() if m != "none"]
    return order.index(method) if method in order else len(order) + sum(map(ord, method))


def method_color(method: str) -> str:
    return PALETTE[_method_index(method) % len(PALETTE)]


def method_marker(method: str) -> str:
    return MARKERS[_method_index(method) % len(MARKERS)]


def _positive_errors(mean: pd.Series, std: pd.Series) -> list[list[float]]:
    """Error bars of a non-negative quantity: the lower bar never crosses 0."""
    std = std.fillna(0)
    return [list(std.where(mean - std > 0, mean).clip(lower=0)), list(std)]


# no creation date (nor software version) in the files: the same data gives the same bytes
STABLE_METADATA = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "Producer": None}}


def save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    try:
        for path in paths:
            tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
            try:
                fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata=STABLE_METADATA[path.suffix])
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)  # a write that failed (full disk) leaves no temp file
    finally:
        plt.close(fig)
    return paths


def _axis_label(quality: Quality, prefix: str = "") -> str:
    text = (
        "top-1 (%)"
        if quality.key == "top1"
        else quality.label.lower()
        if quality.key != "score"
        else quality.label
    )
    return f"{prefix}{text}"


def score_against(agg: pd.DataFrame, x: str, quality: Quality = QUALITIES["top1"]):
    """The headline metric (`score`: top-1, perplexity, ...) against `x`. One panel per (data set, model);
    one line per method variant through its levels; the original as a hollow star beneath them. Counted
    units are scaled per panel (MMACs for a tiny model, GMACs for a ViT); where higher is better, a point
    far below the rest is drawn at the panel's floor with its value, so it does not flatten the others."""
    label, log, count, stored = AXES[x]
    panels = list(agg.groupby(["dataset", "model"], sort=False).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        rows = agg[(agg["dataset"] == dataset) & (agg["model"] == model)].copy()
        xlabel = label.replace("per image", "per sequence") if DATASETS.get(dataset).is_text else label
        if count:  # one unit per panel
            prefix, factor = si_prefix(rows[f"{x}_mean"] * stored)
            for part in ("mean", "std"):
                rows[f"{x}_{part}"] = rows[f"{x}_{part}"] * stored / factor
            xlabel = f"{label} ({prefix}{count})"
        floor = _off_scale_floor(rows["score_mean"]) if quality.higher_is_better else None
        _draw_original(ax, rows[rows["method"] == "original"], x)
        compressed = rows[rows["method"] != "original"]
        for method, by_method in compressed.groupby("method", sort=True):
            for i, (variant, group) in enumerate(by_method.groupby("variant", sort=True)):
                group = group.sort_values(f"{x}_mean")
                ax.errorbar(
                    group[f"{x}_mean"],
                    group["score_mean"],
                    xerr=_positive_errors(group[f"{x}_mean"], group[f"{x}_std"]),
                    yerr=_positive_errors(group["score_mean"], group["score_std"]),
                    marker=method_marker(method),
                    ls=LINESTYLES[i % len(LINESTYLES)],
                    markerfacecolor="white" if i % 2 else method_color(method),  # variants apart in the key
                    capsize=3,
                    label=variant_label(method, variant),
                    color=method_color(method),
                    zorder=3,
                )
                _flag_off_scale(
                    ax,
                    group[f"{x}_mean"],
                    group["score_mean"],
                    floor,
                    method_color(method),
                    rows[f"{x}_mean"],
                )
                _label_points(ax, group, x, floor)
        if floor is not None:
            ax.set_ylim(bottom=floor - 1.5, top=rows["score_mean"].max() + 1.5)
        if log:
            _log_axis(ax, rows[f"{x}_mean"])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.set_title(f"{model} ({dataset})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_axis_label(quality))
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=min(len(handles), 5),
        fontsize=8,
        handlelength=3.5,  # long enough to show a variant's line style beside its marker
    )
    return fig


def _draw_original(ax, original: pd.DataFrame, x: str) -> None:
    """The original model as a hollow black star, beneath the compressed points."""
    if len(original):
        ax.plot(
            original[f"{x}_mean"],
            original["score_mean"],
            "*",
            color="k",
            markersize=15,
            markerfacecolor="none",
            zorder=1,
            label="original",
        )


def _off_scale_floor(top1: pd.Series) -> float | None:
    """The y floor of a panel when some point lies more than OFF_SCALE_PP below its best, else None."""
    best = top1.max()
    return best - OFF_SCALE_PP if (top1 < best - OFF_SCALE_PP).any() else None


def _flag_off_scale(ax, xs: pd.Series, ys: pd.Series, floor: float | None, color: str, panel_xs) -> None:
    """Points below the floor: a downward triangle at the floor, labelled with the true value (to the
    left of a point in the right half of the panel, so the label stays inside)."""
    if floor is None:
        return
    middle = (
        (np.nanmin(panel_xs) * np.nanmax(panel_xs)) ** 0.5
        if np.nanmin(panel_xs) > 0
        else np.nanmean(panel_xs)
    )
    for x, y in zip(xs, ys):
        if y < floor:
            right = x > middle
            ax.plot([x], [floor - 0.5], marker="v", color=color, markersize=8, zorder=4, clip_on=False)
            ax.annotate(
                f"{y:.1f}%",
                (x, floor - 0.5),
                textcoords="offset points",
                xytext=(-6 if right else 6, 2),
                ha="right" if right else "left",
                fontsize=7,
                color=color,
            )


def _label_points(ax, group: pd.DataFrame, x: str, floor: float | None) -> None:
    """A point's label beside it (`infeasible`, `not folded`, `forced fold`): such a point is no
    method's win and a reader of the figure alone must see it."""
    if "flag" not in group:
        return
    for xv, yv, flag in zip(group[f"{x}_mean"], group["score_mean"], group["flag"].fillna("")):
        if flag and pd.notna(yv):
            y = max(yv, floor - 0.5) if floor is not None else yv
            ax.plot([xv], [y], marker="o", markersize=13, markerfacecolor="none", color="0.3", zorder=4)
            ax.annotate(
                flag,
                (xv, y),
                textcoords="offset points",
                xytext=(0, 10),
                ha="center",
                fontsize=7,
                color="0.3",
            )


def _log_axis(ax, xs: pd.Series) -> None:
    """A log x axis with plain-number ticks that never crowd: linear-spaced ticks within a decade,
    2 and 5 labelled within a few decades, decades only beyond."""
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    finite = xs[np.isfinite(xs) & (xs > 0)]
    decades = np.log10(finite.max() / finite.min()) if len(finite) else 3.0
    if decades < 1:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(plain)
    two_five = FuncFormatter(lambda v, _: f"{v:g}" if decades < 2.5 and f"{v:g}"[0] in "25" else "")
    ax.xaxis.set_minor_formatter(two_five)


def slope_trajectories(frame: pd.DataFrame, output_root: Path):
    """Per LayerCollapse run (seed 0, each model's highest level): each converted block's PReLU slope from
    epoch 0 (its initial value) on, with the fold threshold's band around 1; legends name the layers."""
    lc = (frame["method"] == "layercollapse") & (frame["status"] == "completed")
    runs = frame[lc & (frame["seed"] == 0)]
    runs = runs.sort_values("level").groupby("model", sort=False).tail(1)
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(4.2 * max(len(runs), 1), 3.4), squeeze=False)
    for ax, (_, run) in zip(axes[0], runs.iterrows()):
        folder = RunDir(output_root, run["run_id"])
        events = [e for e in folder.events() if e["event"] in ("initial", "epoch")]
        report = (folder.result() or {}).get("method_report") or {}
        layers = {b["block"]: b.get("layers", b["block"]) for b in report.get("blocks", [])}
        threshold = (folder.result() or {}).get("config", {}).get("method_args", {}).get("threshold", 0.05)
        blocks = sorted({k for e in events for k in e if k.startswith("slope/")})
        for key in blocks:
            points = [(e["epoch"], e[key]) for e in events if key in e]
            name = key.removeprefix("slope/")
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=layers.get(name, name))
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.axhspan(
            1 - threshold,
            1 + threshold,
            color="k",
            alpha=0.08,
            lw=0,
            label=f"fold band |a-1| < {threshold:g}",
        )
        level = run["level_label"] or f"k={run['level']:g}"  # e.g. "level=2" or "blocks=1"
        ax.set_title(f"{run['model']}, {level}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("PReLU slope a")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def blocks_folded_vs_paper(agg: pd.DataFrame, paper: pd.DataFrame, model: str = "digits_vit"):
    """Top-1 against the blocks LayerCollapse actually folded (mean ± std over seeds; a level whose blocks
    did not all fold sits at what it folded, not at what it asked for) beside the paper's vit_tiny row."""
    fig, (ours_ax, paper_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    lc = agg[(agg["model"] == model) & (agg["method"] == "layercollapse")]
    variant = "layercollapse" if (lc["variant"] == "layercollapse").any() else lc["variant"].iloc[0]
    ours = lc[lc["variant"] == variant].sort_values("blocks_folded_mean")
    original = agg[(agg["model"] == model) & (agg["method"] == "original")]
    xs = pd.concat([original["top1_mean"] * 0, ours["blocks_folded_mean"]])
    xerr = pd.concat([original["top1_mean"] * 0, ours["blocks_folded_std"].fillna(0)])
    ys = pd.concat([original["top1_mean"], ours["top1_mean"]])
    yerr = pd.concat([original["top1_std"], ours["top1_std"]])
    ours_ax.errorbar(
        xs,
        ys,
        xerr=xerr,
        yerr=_positive_errors(ys, yerr),
        marker="o",
        capsize=3,
        color=method_color("layercollapse"),
    )
    for level, x, y in zip(ours["level"], ours["blocks_folded_mean"], ours["top1_mean"]):
        ours_ax.annotate(f"asked {level:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ours_ax.set_title(f"lcbench: {model} ({variant_label('layercollapse', variant)})")
    tiny = paper[paper["model"] == "vit_tiny_patch16_224"].sort_values("paper_blocks")
    paper_ax.plot(tiny["paper_blocks"], tiny["top1"], marker="s", color="C3")
    paper_ax.set_title("paper: vit_tiny_patch16_224 (ImageNet)")
    for ax in (ours_ax, paper_ax):
        ax.set_xlabel("blocks folded")
        ax.set_ylabel("top-1 (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def score_vs_train_flops(
    curves: pd.DataFrame, reference: str = "layercollapse", quality: Quality = QUALITIES["top1"]
):
    """The held-out headline metric after each epoch against cumulative training FLOPs (mean over seeds),
    one panel per (model, level), one line per variant; the reference variant's final value dashed."""
    leveled = curves[curves["level"].notna()]
    panels = list(leveled.groupby(["dataset", "model", "level"], sort=False).groups)
    cols = min(len(panels), 4) or 1
    rows = -(-len(panels) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (_, model, level) in zip(axes.flat, panels):
        here = curves[(curves["model"] == model) & ((curves["level"] == level) | curves["level"].isna())]
        for i, (variant, runs) in enumerate(here.groupby("variant", sort=True)):
            mean = runs.groupby("epoch")[["train_flops", "score"]].mean()
            method = runs["method"].iloc[0]
            ax.plot(
                mean["train_flops"],
                mean["score"],
                marker=".",
                label=variant_label(method, variant),
                color=method_color(method),
                ls=["-", "--", ":", "-."][i % 4],
            )
            if variant == reference:
                ax.axhline(mean["score"].iloc[-1], color=method_color(method), lw=0.8, ls="--")
        floor = _off_scale_floor(here["score"]) if quality.higher_is_better else None
        if floor is not None:  # clipped, and said so
            ax.set_ylim(bottom=floor, top=here["score"].max() + 1.5)
            ax.text(
                0.02, 0.02, f"clipped below {floor:.0f}%", transform=ax.transAxes, fontsize=7, color="0.3"
            )
        ax.set_xscale("log")
        ax.set_title(f"{model}, k={int(level)}")
        ax.set_xlabel("cumulative training FLOPs")
        ax.set_ylabel(_axis_label(quality, "held-out "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
