"""Plots (matplotlib, PNG and PDF, each at text width and at column width): the headline metric (top-1,
perplexity) against compression, MACs and training cost (one line per method variant over its levels,
error bars over seeds, the original marked); the metric after each epoch against cumulative training
FLOPs; LayerCollapse slope trajectories; the accuracy change against blocks folded beside the paper's
vit_tiny row. The look of methods and variants, the layouts and the axis text live in `style.py`.

Each function returns its figure so tests can read the data behind the axes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..core.store import RunDir, temp_file_beside  # noqa: E402
from ..training.tasks import QUALITIES, Quality  # noqa: E402
from ..zoo.data import DATASETS  # noqa: E402
from .best import counted  # noqa: E402
from .names import variant_label  # noqa: E402
from .style import FULL, LAYOUTS, Layout, Looks, log_axis, method_color, method_marker, quality_label, rc  # noqa: E402, F401
from .tables import si_prefix  # noqa: E402

# (wall seconds and in-sweep latency are left out: they were taken while other runs shared the cores)
# axis -> (label, log scale, counted unit whose prefix is chosen per panel, stored scale of that unit)
AXES = {
    "compression": ("compression (×)", True, None, 1.0),
    "gmacs": ("dense {}MACs per image", False, "MACs", 1e9),
    "train_flops": ("training {}FLOPs (counted)", True, "FLOPs", 1.0),
}
# A point this far from its panel's best is drawn on the axes' edge with its value, and the axis is fitted
# to the rest: the comparisons a figure is for (a few points apart) are not squashed by one collapsed run.
OFF_SCALE_PP = 5.0  # higher is better (points of top-1, F1, ...): below the best by this much
OFF_SCALE_RELATIVE = 0.15  # lower is better (perplexity): above the best by this fraction


def _positive_errors(mean: pd.Series, std: pd.Series) -> list[list[float]]:
    """Error bars of a non-negative quantity: the lower bar never crosses 0."""
    std = std.fillna(0)
    return [list(std.where(mean - std > 0, mean).clip(lower=0)), list(std)]


# no creation date (nor software version) in the files: the same data gives the same bytes
STABLE_METADATA = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "Producer": None}}
DPI = 300  # a column-width PNG is 990 px wide


def save(fig, stem: Path) -> list[Path]:
    """`stem`.png and `stem`.pdf at the figure's own size (no tight crop: the width is the print width).
    Each is written to a temp file of a random name created exclusively (a name planted in advance, a link
    among them, is never opened) and renamed over its destination (a link there is replaced, not followed)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    try:
        for path in paths:
            fd, tmp = temp_file_beside(path)
            try:
                with os.fdopen(fd, "wb") as file:
                    fig.savefig(file, format=path.suffix[1:], dpi=DPI, metadata=STABLE_METADATA[path.suffix])
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)  # a write that failed (full disk) leaves no temp file
    finally:
        plt.close(fig)
    return paths


def save_layouts(draw: Callable[[Layout], object], stem: Path) -> list[Path]:
    """The figure at text width (`stem`) and at column width (`stem`_column), each drawn at its size."""
    paths = []
    for layout in LAYOUTS:
        with plt.rc_context(rc(layout)):
            paths += save(draw(layout), stem.with_name(stem.name + layout.suffix))
    return paths


KEY_HANDLE = 2.6  # em: long enough to show a variant's line style beside its marker


def _grid(panels: int, layout: Layout, key: list[str] | None = None):
    """A figure of `panels` axes at the layout's width, room below for a shared key with these labels."""
    cols = max(1, min(panels, layout.columns))
    rows = max(1, -(-panels // cols))
    key = key or []
    key_rows = math.ceil(len(key) / _key_columns(layout, key)) if key else 0
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(
            layout.width,
            layout.row_height * rows + key_rows * layout.font * 1.45 / 72 + 0.1 * bool(key),
        ),
        squeeze=False,
        layout="constrained",
    )
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:panels]


def _key_columns(layout: Layout, labels: list[str]) -> int:
    """As many key columns as the longest label lets fit across the figure (at most 4)."""
    if not labels:
        return 1
    column = (max(map(len, labels)) * 0.55 + KEY_HANDLE + 2.5) * layout.font  # points
    return max(1, min(4, len(labels), int(layout.width * 72 // column)))


def _shared_key(fig, axes, layout: Layout) -> None:
    """One key below the panels, each label once (a variant looks the same in every panel)."""
    handles = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncol=_key_columns(layout, list(handles)),
            handlelength=KEY_HANDLE,
            frameon=False,
        )


def _key_labels(frame: pd.DataFrame) -> list[str]:
    """The key's labels of a figure over `frame`'s method variants (and the original)."""
    pairs = frame[frame["method"] != "original"][["method", "variant"]].drop_duplicates()
    return ["original", *(variant_label(m, v) for m, v in zip(pairs["method"], pairs["variant"]))]


def off_scale(
    scores: pd.Series, quality: Quality, groups: pd.Series | None = None, reference: pd.Series | None = None
) -> pd.Series:
    """True for a point so far from the best of its group (its compression level; rows without one, the
    original and the fine-tune control, form their own) that it is drawn on the axes' edge with its
    value, so one collapsed run does not squash the comparison the panel is for. The best is taken
    among the `reference` rows (those that count: not an unmatched, infeasible or unfolded point) where
    a group has any."""
    keys = groups.fillna(-1) if groups is not None else pd.Series(0, index=scores.index)
    reference = reference if reference is not None else pd.Series(True, index=scores.index)
    past = pd.Series(False, index=scores.index)
    for _, index in scores.groupby(keys).groups.items():
        best_of = scores[index][reference[index]] if reference[index].any() else scores[index]
        past[index] = _past(scores[index], _off_scale_limit(best_of, quality), quality)
    return past.fillna(False).astype(bool)


def _fit_y(ax, values: pd.Series, beyond: pd.Series, quality: Quality, room: float = 4) -> None:
    """The y range of the points on scale with a margin, and `room` margins at the edge that holds the
    off-scale markers (or the note saying they are left out)."""
    shown = values[~beyond].dropna()
    if not len(shown):
        return
    low, high = shown.min(), shown.max()
    pad = max((high - low) * 0.08, 0.2 if high - low < 2 else 0.5)
    edge = room if beyond.any() else 1
    below, above = (edge, 1) if quality.higher_is_better else (1, edge)
    ax.set_ylim(low - below * pad, high + above * pad)


def score_against(
    agg: pd.DataFrame,
    x: str,
    quality: Quality = QUALITIES["top1"],
    layout: Layout = FULL,
    looks: Looks | None = None,
):
    """The headline metric (`score`: top-1, perplexity, ...) against `x`. One panel per (data set, model);
    one line per method variant through its levels (a single level: a point); the original as a hollow
    star beneath them. Counted units are scaled per panel (MMACs for a tiny model, GMACs for a ViT); a
    point far from the best is drawn at the panel's edge with its value, so it does not squash the rest."""
    looks = looks or Looks(zip(agg["method"], agg["variant"]))
    label, log, count, stored = AXES[x]
    panels = list(agg.groupby(["dataset", "model"], sort=False).groups)
    fig, axes = _grid(len(panels), layout, _key_labels(agg))
    for ax, (dataset, model) in zip(axes, panels):
        rows = agg[(agg["dataset"] == dataset) & (agg["model"] == model)].copy()
        xlabel = label.replace("per image", "per sequence") if DATASETS.get(dataset).is_text else label
        if count:  # one unit per panel
            prefix, factor = si_prefix(rows[f"{x}_mean"] * stored)
            for part in ("mean", "std"):
                rows[f"{x}_{part}"] = rows[f"{x}_{part}"] * stored / factor
            xlabel = xlabel.format(prefix)
        beyond = off_scale(rows["score_mean"], quality, rows["level"], counted(rows))
        _draw_original(ax, rows[rows["method"] == "original"], x)
        compressed = rows[rows["method"] != "original"]
        edges, flagged = [], []  # drawn once the axes have their limits
        for (method, variant), group in compressed.groupby(["method", "variant"], sort=True):
            group = group.sort_values(f"{x}_mean")
            look = looks(method, variant)
            score = group["score_mean"]
            out = beyond[group.index]
            ax.errorbar(
                group[f"{x}_mean"],
                score.where(~out),  # the line joins the points on scale; the others sit at the edge
                xerr=_positive_errors(group[f"{x}_mean"], group[f"{x}_std"]),
                yerr=_positive_errors(score, group["score_std"]),
                marker=look.marker,
                ls=look.linestyle if len(group) > 1 else "none",  # a single level is a point
                markerfacecolor=look.color if look.filled else "white",
                label=variant_label(method, variant),
                color=look.color,
                lw=1.2,
                elinewidth=0.8,
                zorder=3,
            )
            edges += [(xv, yv, look) for xv, yv, o in zip(group[f"{x}_mean"], score, out) if o]
            if "flag" in group:
                flagged += [
                    (xv, yv, f) for xv, yv, f in zip(group[f"{x}_mean"], score, group["flag"].fillna("")) if f
                ]
        _fit_y(ax, rows["score_mean"], beyond, quality)
        if log:
            log_axis(ax, rows[f"{x}_mean"])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        labels = Labels(ax)
        _draw_edges(ax, edges, quality, labels)
        _label_points(ax, flagged, labels)
        ax.set_title(f"{model} ({dataset})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(quality_label(quality))
        ax.grid(alpha=0.3)
    _shared_key(fig, axes, layout)
    return fig


def _draw_original(ax, original: pd.DataFrame, x: str) -> None:
    """The original model as a hollow black star, beneath the compressed points."""
    if len(original):
        ax.plot(
            original[f"{x}_mean"],
            original["score_mean"],
            "*",
            color="k",
            markersize=10,
            markerfacecolor="none",
            zorder=1,
            label="original",
        )


class Labels:
    """Small texts placed in a panel without overlapping each other: a label whose box meets one already
    placed moves away from its point (up, or down at a ceiling) until it is free."""

    STEP = 8.0  # points

    def __init__(self, ax) -> None:
        self.ax = ax
        self.placed = []

    def add(self, text: str, xy: tuple[float, float], dx: float, dy: float, **kw) -> None:
        sign = 1 if dy >= 0 else -1
        for _ in range(12):
            annotation = self.ax.annotate(
                text, xy, textcoords="offset points", xytext=(dx, dy), fontsize=7, **kw
            )
            box = annotation.get_tightbbox(self.ax.figure.canvas.get_renderer())  # (with its ground)
            if not any(box.overlaps(other) for other in self.placed):
                break
            annotation.remove()
            dy += sign * self.STEP
        self.placed.append(box)


def _draw_edges(ax, edges: list, quality: Quality, labels: Labels) -> None:
    """Off-scale points: a triangle on the axes' edge (the bottom where higher is better) pointing where
    the value lies,
    labelled with it (to the left of a point in the right half of the panel, so the label stays inside)."""
    if not edges:
        return
    at_floor = quality.higher_is_better
    low, high = ax.get_ylim()
    edge = low if at_floor else high
    left, right = ax.get_xlim()
    middle = (left * right) ** 0.5 if ax.get_xscale() == "log" else (left + right) / 2
    unit = "%" if quality.key == "top1" else ""
    for x, y, look in sorted(edges, key=lambda e: e[0]):
        ax.plot(
            [x],
            [edge],
            marker="v" if at_floor else "^",
            color=look.color,
            markersize=6,
            zorder=4,
            clip_on=False,
        )
        on_right = x > middle
        labels.add(
            f"{y:.1f}{unit}",
            (x, edge),
            -5 if on_right else 5,
            4 if at_floor else -10,
            ha="right" if on_right else "left",
            color=look.color,
        )


def _label_points(ax, flagged: list, labels: Labels) -> None:
    """A point's label beside it (`infeasible`, `not folded`, `forced fold`): such a point is no
    method's win and a reader of the figure alone must see it (at the edge where it is off scale)."""
    low, high = ax.get_ylim()
    for x, y, flag in flagged:
        if pd.isna(y):
            continue
        y = min(max(y, low), high)
        ax.plot(
            [x], [y], marker="o", markersize=9, markerfacecolor="none", color="0.3", zorder=4, clip_on=False
        )
        text = re.sub(r" in (\d+) of (\d+)", r" \1/\2", flag)  # `not folded 3/5`: in 3 of its 5 seeds
        labels.add(
            text,
            (x, y),
            0,
            -12 if y > low + 0.8 * (high - low) else 7,
            ha="center",
            color="0.3",
            zorder=6,  # above the markers, on a white ground: readable where points crowd
            bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )


def slope_trajectories(frame: pd.DataFrame, output_root: Path, layout: Layout = FULL):
    """Per LayerCollapse run (seed 0, each model's highest level): each converted MLP's PReLU slope from
    epoch 0 (its initial value) on, with the fold band around 1. A series is named by its module path
    (numbered MLPs in a plain Sequential) and "not folded" where its slope stayed outside the band; the
    panel says how many of its MLPs folded."""
    lc = (frame["method"] == "layercollapse") & (frame["status"] == "completed")
    runs = frame[lc & (frame["seed"] == 0)]
    runs = runs.sort_values("level").groupby("model", sort=False).tail(1)
    fig, axes = _grid(max(len(runs), 1), layout)
    for ax, (_, run) in zip(axes, runs.iterrows()):
        folder = RunDir(output_root, run["run_id"])
        events = [e for e in folder.events() if e["event"] in ("initial", "epoch")]
        result = folder.result() or {}
        report = result.get("method_report") or {}
        not_folded = set(report.get("not_folded") or [])
        threshold = result.get("config", {}).get("method_args", {}).get("threshold", 0.05)
        blocks = sorted({k for e in events for k in e if k.startswith("slope/")})
        for i, key in enumerate(blocks):
            points = [(e["epoch"], e[key]) for e in events if key in e]
            name = key.removeprefix("slope/")
            label = (name if "." in name else f"MLP {i + 1}") + (
                " (not folded)" if name in not_folded else ""
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
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
        folded = len(blocks) - len(not_folded & {b.removeprefix("slope/") for b in blocks})
        state = f"{folded} of {len(blocks)} folded" if folded else "not folded"
        ax.set_title(f"{run['model']}, {level}: {state}", color="k" if folded == len(blocks) else "C3")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("PReLU slope a")
        ax.legend(fontsize=7, handlelength=1.5, frameon=False, loc="center right")
    return fig


def blocks_folded_vs_paper(
    agg: pd.DataFrame, paper: pd.DataFrame, model: str = "digits_vit", layout: Layout = FULL
):
    """The change in top-1 from the original against the blocks LayerCollapse actually folded (mean ±
    std over seeds; a level whose blocks did not all fold sits at what it folded) beside the paper's
    vit_tiny row, both in percentage points on one shared scale, so a wobble inside the error bars does
    not look like the paper's curve."""
    fig, (ours_ax, paper_ax) = plt.subplots(
        1 if layout.columns > 1 else 2,
        2 if layout.columns > 1 else 1,
        figsize=(layout.width, layout.row_height * (1 if layout.columns > 1 else 2)),
        sharey=True,
        layout="constrained",
        squeeze=True,
    )
    lc = agg[(agg["model"] == model) & (agg["method"] == "layercollapse")]
    variant = "layercollapse" if (lc["variant"] == "layercollapse").any() else lc["variant"].iloc[0]
    ours = lc[lc["variant"] == variant].sort_values("blocks_folded_mean")
    original = agg[(agg["model"] == model) & (agg["method"] == "original")]
    base = original["top1_mean"].iloc[0] if len(original) else np.nan
    xs = pd.concat([original["top1_mean"] * 0, ours["blocks_folded_mean"]])
    xerr = pd.concat([original["top1_mean"] * 0, ours["blocks_folded_std"].fillna(0)])
    ys = pd.concat([original["top1_mean"], ours["top1_mean"]]) - base
    yerr = pd.concat([original["top1_std"], ours["top1_std"]]).fillna(0)
    ours_ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", color=method_color("layercollapse"), lw=1.2)
    for level, x, y in zip(ours["level"], ours["blocks_folded_mean"], ours["top1_mean"] - base):
        ours_ax.annotate(f"asked {level:g}", (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7)
    ours_ax.set_title(f"lcbench: {model}", loc="left")
    tiny = paper[paper["model"] == "vit_tiny_patch16_224"].sort_values("paper_blocks")
    paper_base = tiny.loc[tiny["paper_blocks"] == 0, "top1"]
    paper_ax.plot(
        tiny["paper_blocks"],
        tiny["top1"] - (paper_base.iloc[0] if len(paper_base) else np.nan),
        marker="s",
        color="0.3",
    )
    paper_ax.set_title("paper: vit_tiny (ImageNet)", loc="left")
    for ax in (ours_ax, paper_ax):
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("blocks folded")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ours_ax.set_ylabel("Δ top-1 from the original (pp)")
    if layout.columns == 1:
        paper_ax.set_ylabel("Δ top-1 from the original (pp)")
    return fig


def _off_scale_limit(scores: pd.Series, quality: Quality) -> float:
    """A panel's edge: the best minus OFF_SCALE_PP (higher is better), or times 1 + OFF_SCALE_RELATIVE."""
    if quality.higher_is_better:
        return scores.max() - OFF_SCALE_PP
    return scores.min() * (1 + OFF_SCALE_RELATIVE)


def _past(scores: pd.Series, limit: float, quality: Quality) -> pd.Series:
    return (scores < limit) if quality.higher_is_better else (scores > limit)


def score_vs_train_flops(
    curves: pd.DataFrame,
    reference: str = "layercollapse",
    quality: Quality = QUALITIES["top1"],
    layout: Layout = FULL,
    looks: Looks | None = None,
):
    """The held-out headline metric after each epoch against cumulative training FLOPs (mean over seeds),
    one panel per (model, level), one line per variant; the reference variant's final value as a thin
    line (in the key); a point far from the best drawn at the edge and the panel saying so."""
    looks = looks or Looks(zip(curves["method"], curves["variant"]))
    leveled = curves[curves["level"].notna()]
    panels = list(leveled.groupby(["dataset", "model", "level"], sort=False).groups)
    fig, axes = _grid(len(panels), layout, [*_key_labels(curves), "LayerCollapse: final"])
    for ax, (_, model, level) in zip(axes, panels):
        here = curves[(curves["model"] == model) & ((curves["level"] == level) | curves["level"].isna())]
        means = {
            key: runs.groupby("epoch")[["train_flops", "score"]].mean()
            for key, runs in here.groupby(["method", "variant"], sort=True)
        }
        scores = pd.concat([m["score"] for m in means.values()])
        limit = _off_scale_limit(scores, quality)
        prefix, factor = si_prefix(pd.concat([m["train_flops"] for m in means.values()]))
        for (method, variant), mean in means.items():
            look = looks(method, variant)
            ax.plot(
                mean["train_flops"] / factor,
                mean["score"].where(~_past(mean["score"], limit, quality)),
                marker=look.marker,
                markersize=3,
                markerfacecolor=look.color if look.filled else "white",
                label=variant_label(method, variant),
                color=look.color,
                ls=look.linestyle,
                lw=1.1,
            )
            if variant == reference:
                ax.axhline(
                    mean["score"].iloc[-1],
                    color=look.color,
                    lw=0.7,
                    ls=(0, (1, 1)),
                    label=f"{variant_label(method, variant)}: final",
                )
        beyond = _past(scores, limit, quality)
        _fit_y(ax, scores, beyond, quality, room=2)
        if beyond.any():  # left out, and said so
            edge = f"{'below' if quality.higher_is_better else 'above'} {limit:.1f}"
            ax.text(
                0.02,
                0.02 if quality.higher_is_better else 0.92,
                f"epochs {edge} not drawn",
                transform=ax.transAxes,
                fontsize=7,
                color="0.3",
            )
        log_axis(ax, pd.concat([m["train_flops"] for m in means.values()]) / factor)
        ax.set_xlabel(f"cumulative training {prefix}FLOPs")
        ax.set_title(f"{model}, k={int(level)}")
        ax.set_ylabel(quality_label(quality, "held-out "))
        ax.grid(alpha=0.3)
    _shared_key(fig, axes, layout)
    return fig
