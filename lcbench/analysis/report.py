"""`lcbench report runs/X.yaml`: tables, plots and a README that states the findings with their numbers.

Written to `results/<sweep>/` (or `--out`). Failed and missing runs are listed in the README, never
dropped silently; a group's n says how many seeds went into its mean.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..store import atomic_write_text
from ..sweep import Plan
from . import plots
from .records import sweep_frame
from .tables import aggregate, matched_table, per_method_table, write_table

PAPER_CSV = Path(__file__).resolve().parents[2] / "results" / "paper" / "layercollapse_imagenet.csv"


def load_paper(path: Path = PAPER_CSV) -> pd.DataFrame:
    return pd.read_csv(path)


def paper_comparison(agg: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our ImageNet LayerCollapse (and original) top-1 next to the paper's, per model and blocks folded."""
    ours = agg[(agg["dataset"] == "imagenet") & agg["method"].isin(["layercollapse", "original"])].copy()
    if ours.empty:
        return pd.DataFrame()
    ours["blocks_folded"] = ours["level"].fillna(0).astype(int)
    ours.loc[ours["method"] == "original", "blocks_folded"] = 0
    table = ours.merge(paper, on=["model", "blocks_folded"], how="inner", suffixes=("", "_paper"))
    table = table.rename(columns={"top1": "top1_paper"})
    table["difference"] = table["top1_mean"] - table["top1_paper"]
    return table[
        ["model", "blocks_folded", "top1_mean", "top1_std", "n", "top1_paper", "difference", "source"]
    ]


def _pm(row: pd.Series, column: str, decimals: int = 2) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    return f"{mean:.{decimals}f}" + ("" if pd.isna(std) else f" ± {std:.{decimals}f}")


def findings(agg: pd.DataFrame) -> list[str]:
    """One line per (model, level): LayerCollapse against KD (accuracy, cost ratio) and the other methods."""
    lines = []
    wins = ties = total = 0
    cost_ratios = []
    for (dataset, model, level), group in matched_table(agg).groupby(
        ["dataset", "model", "level"], sort=False
    ):
        by = {row["method"]: row for _, row in group.iterrows()}
        lc, kd = by.get("layercollapse"), by.get("kd")
        parts = []
        if lc is not None:
            parts.append(f"LayerCollapse {_pm(lc, 'top1')}% at {lc['compression_mean']:.2f}x (n={lc['n']})")
        matched = lc is not None and kd is not None
        if matched and abs(lc["compression_mean"] - kd["compression_mean"]) > 0.01 * kd["compression_mean"]:
            parts.append(
                f"not matched: LayerCollapse reached {lc['compression_mean']:.2f}x, not the "
                f"{kd['compression_mean']:.2f}x of its target (blocks left unfolded); not counted"
            )
            matched = False
        if matched:
            diff = lc["top1_mean"] - kd["top1_mean"]
            ratio = kd["train_seconds_mean"] / lc["train_seconds_mean"]
            cost_ratios.append(ratio)
            total += 1
            wins += diff > 0
            ties += diff == 0
            parts.append(
                f"KD into the same network {_pm(kd, 'top1')}% ({diff:+.2f} pp for LayerCollapse; "
                f"KD took {ratio:.2f}x LayerCollapse's training time)"
            )
        for method in ("magnitude_pruning", "layer_fusion"):
            if method in by:
                row = by[method]
                parts.append(f"{method} {_pm(row, 'top1')}% at {row['compression_mean']:.2f}x")
        lines.append(f"- **{model}** ({dataset}), level {int(level)}: " + "; ".join(parts) + ".")
    controls = agg[agg["method"] == "finetune"]
    for _, row in controls.iterrows():
        lines.append(
            f"- **{row['model']}** finetune control (no compression): {_pm(row, 'top1')}% (n={row['n']})."
        )
    if total:
        mean_ratio = sum(cost_ratios) / len(cost_ratios)
        lines.insert(
            0,
            f"Against KD into the same collapsed network, LayerCollapse is more accurate at {wins}, equal "
            f"at {ties} and less accurate at {total - wins - ties} of {total} matched (model, level) points; "
            f"KD's training took {mean_ratio:.2f}x LayerCollapse's on average (same epochs; KD adds the "
            "teacher's forward pass).\n",
        )
    return lines


def write_report(plan: Plan, out: Path) -> dict:
    """Everything for one sweep into `out`; returns counts (runs per status) and the paths written."""
    frame = sweep_frame(plan)
    agg = aggregate(frame)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "runs.csv", frame.to_csv(index=False))
    keys = ["model", "method", "level"]
    write_table(
        per_method_table(agg),
        out / "per_method",
        keys,
        ["dataset", "model"],
        f"{plan.name}: every method, mean $\\pm$ std over seeds",
        f"tab:{plan.name}-per-method",
    )
    write_table(
        matched_table(agg),
        out / "matched",
        keys,
        ["dataset", "model", "level"],
        f"{plan.name}: methods at matched compression (level k: LayerCollapse folds k blocks)",
        f"tab:{plan.name}-matched",
    )
    paper = load_paper()
    comparison = paper_comparison(agg, paper)
    if len(comparison):
        atomic_write_text(out / "paper_comparison.csv", comparison.to_csv(index=False))
        atomic_write_text(out / "paper_comparison.md", comparison.to_markdown(index=False) + "\n")
    written = []
    for x in plots.AXES:
        written += plots.save(plots.top1_against(agg, x), out / f"top1_vs_{x}")
    written += plots.save(plots.slope_trajectories(frame, plan.output_root), out / "slopes")
    if (agg["method"] == "layercollapse").any():
        model = "digits_vit" if (agg["model"] == "digits_vit").any() else agg["model"].iloc[0]
        written += plots.save(plots.blocks_folded_vs_paper(agg, paper, model), out / "blocks_folded_vs_paper")

    counts = frame["status"].value_counts().to_dict()
    not_done = frame[frame["status"] != "completed"]
    lines = [
        f"# {plan.name}: accuracy against compression",
        "",
        f"Generated by `lcbench report {plan.source}` on {time.strftime('%Y-%m-%d %H:%M')} from "
        f"{len(frame)} planned runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".",
        "Mean ± sample std over seeds (n seeds); top-1 of the last epoch on the held-out split.",
        "",
        "## Findings",
        "",
        *findings(agg),
        "",
        "## Tables",
        "",
        "- `matched.{csv,md,tex}`: methods side by side at each level (same LayerCollapse target)",
        "- `per_method.{csv,md,tex}`: every method and level, the original model first",
        "- `runs.csv`: every planned run with its status and metrics",
        *(
            ["- `paper_comparison.{csv,md}`: ours next to the paper's ImageNet numbers"]
            if len(comparison)
            else []
        ),
        "",
        (out / "matched.md").read_text(),
        "## Plots",
        "",
        *[f"- `{p.name}`" for p in written if p.suffix == ".png"],
        "",
        "## Failed or missing runs",
        "",
    ]
    if len(not_done):
        table = not_done[["run_id", "model", "variant", "level_label", "seed", "status", "error"]]
        lines.append(table.to_markdown(index=False))
    else:
        lines.append("None: every planned run completed.")
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    return {"counts": counts, "out": str(out), "plots": [str(p) for p in written]}
