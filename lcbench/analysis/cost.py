"""Cost to accuracy: the held-out headline metric (top-1, perplexity: `headline.py`) against cumulative
training FLOPs, and the FLOPs KD needs to reach LayerCollapse's final value.

Every epoch event in a run's metrics.jsonl carries `train_flops` (cumulative; 3 x the trained model's
forward FLOPs per sample, plus a KD teacher's forward) and `val_<metric>`. The KD budgets are separate runs
(1x, 2x, 5x LayerCollapse's epochs, each with its own full schedule); the FLOPs KD needs is that of the
cheapest budget whose final value (mean over seeds) reaches LayerCollapse's final mean, as a ratio to
LayerCollapse's own training FLOPs, or "not reached within Nx" with N the largest budget tried.
"""

from __future__ import annotations

import pandas as pd

from ..core.store import RunDir
from .headline import headline, sign
from .stats import POINT, is_matched

KEYS = ["run_id", "variant", "method", "init", "dataset", "model", "level", "seed"]


def epoch_curves(frame: pd.DataFrame, output_root) -> pd.DataFrame:
    """One row per (completed compress run, epoch): cumulative training FLOPs and the held-out score."""
    rows = []
    done = frame[(frame["status"] == "completed") & (frame["stage"] == "compress")]
    for _, run in done.iterrows():
        for event in RunDir(output_root, run["run_id"]).events("epoch"):
            if "train_flops" in event:
                rows.append(
                    {
                        **{k: run[k] for k in KEYS},
                        **{k: event[k] for k in ("epoch", "train_flops")},
                        "score": event.get(f"val_{run['metric']}"),
                    }
                )
    return pd.DataFrame(rows, columns=[*KEYS, "epoch", "train_flops", "score"])


def flops_to_reach(frame: pd.DataFrame, reference: str = "layercollapse", method: str = "kd") -> pd.DataFrame:
    """Per point and KD initialisation: the training FLOPs KD needs to reach the reference's final score."""
    quality = headline(frame)
    done = frame[(frame["status"] == "completed") & frame["matched"].map(is_matched).astype(bool)]
    rows = []
    for point, group in done[done["level"].notna()].groupby(POINT, sort=False):
        ref = group[group["variant"] == reference]
        if ref.empty:
            continue
        target, ref_flops = ref["score"].mean(), ref["train_flops"].mean()
        ref_epochs = ref["epochs"].mean()
        kd = group[group["method"] == method]
        for init, runs in kd.groupby("init", sort=True):
            budgets = (
                runs.groupby("variant")
                .agg(epochs=("epochs", "mean"), flops=("train_flops", "mean"), score=("score", "mean"))
                .sort_values("flops")
            )
            reached = budgets[sign(quality) * (budgets["score"] - target) >= 0]
            largest = budgets["epochs"].max() / ref_epochs
            row = {
                **dict(zip(POINT, point)),
                "init": init,
                "reference_score": target,
                "budgets": ", ".join(
                    f"{b.epochs / ref_epochs:g}x: {b.score:.2f}{'%' if quality.key == 'top1' else ''}"
                    for b in budgets.itertuples()
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
