"""Cost to accuracy: held-out top-1 against cumulative training FLOPs, and the FLOPs KD needs to reach
LayerCollapse's final top-1.

Every epoch event in a run's metrics.jsonl carries `train_flops` (cumulative; 3 x the trained model's
forward FLOPs per sample, plus a KD teacher's forward) and `val_top1`. The KD budgets are separate runs
(1x, 2x, 5x LayerCollapse's epochs, each with its own full schedule); the FLOPs KD needs is that of the
cheapest budget whose final top-1 (mean over seeds) reaches LayerCollapse's final mean, as a ratio to
LayerCollapse's own training FLOPs, or "not reached within Nx" with N the largest budget tried.
"""

from __future__ import annotations

import pandas as pd

from ..store import RunDir
from .stats import POINT, is_matched

KEYS = ["run_id", "variant", "method", "init", "dataset", "model", "level", "seed"]


def epoch_curves(frame: pd.DataFrame, output_root) -> pd.DataFrame:
    """One row per (completed compress run, epoch): cumulative training FLOPs and held-out top-1."""
    rows = []
    done = frame[(frame["status"] == "completed") & (frame["stage"] == "compress")]
    for _, run in done.iterrows():
        for event in RunDir(output_root, run["run_id"]).events("epoch"):
            if "train_flops" in event:
                rows.append(
                    {
                        **{k: run[k] for k in KEYS},
                        **{k: event[k] for k in ("epoch", "train_flops")},
                        "top1": event["val_top1"],
                    }
                )
    return pd.DataFrame(rows, columns=[*KEYS, "epoch", "train_flops", "top1"])


def flops_to_reach(frame: pd.DataFrame, reference: str = "layercollapse", method: str = "kd") -> pd.DataFrame:
    """Per point and KD initialisation: the training FLOPs KD needs to reach the reference's final top-1."""
    done = frame[(frame["status"] == "completed") & frame["matched"].map(is_matched).astype(bool)]
    rows = []
    for point, group in done[done["level"].notna()].groupby(POINT, sort=False):
        ref = group[group["variant"] == reference]
        if ref.empty:
            continue
        target, ref_flops = ref["top1"].mean(), ref["train_flops"].mean()
        ref_epochs = ref["epochs"].mean()
        kd = group[group["method"] == method]
        for init, runs in kd.groupby("init", sort=True):
            budgets = (
                runs.groupby("variant")
                .agg(epochs=("epochs", "mean"), flops=("train_flops", "mean"), top1=("top1", "mean"))
                .sort_values("flops")
            )
            reached = budgets[budgets["top1"] >= target]
            largest = budgets["epochs"].max() / ref_epochs
            row = {
                **dict(zip(POINT, point)),
                "init": init,
                "reference_top1": target,
                "budgets": ", ".join(
                    f"{b.epochs / ref_epochs:g}x: {b.top1:.2f}%" for b in budgets.itertuples()
                ),
                "largest_budget": largest,
            }
            if len(reached):
                first = reached.iloc[0]
                row.update(
                    ratio=first["flops"] / ref_flops,
                    reached=True,
                    text=f"{first['flops'] / ref_flops:.2f}x LayerCollapse's FLOPs",
                )
            else:
                most = budgets["flops"].max() / ref_flops
                row.update(
                    ratio=float("nan"),
                    reached=False,
                    text=f"not reached within {largest:g}x epochs ({most:.2f}x LayerCollapse's FLOPs)",
                )
            rows.append(row)
    return pd.DataFrame(rows)
