"""A sweep's runs as one pandas DataFrame: the plan's coordinates joined with each run's record.

Every planned run has a row, whatever its status: failed and missing runs keep their error and NaN
metrics, so tables and reports can list them instead of silently dropping them.
"""

from __future__ import annotations

import math

import pandas as pd

from ..status import sweep_status
from ..sweep import Plan

# record path -> column
METRICS = {
    "original.top1": "base_top1",
    "final.top1": "top1",
    "delta_top1": "delta_top1",
    "compression": "compression",
    "original.gmacs": "gmacs_original",
    "final.gmacs_effective": "gmacs",
    "speedup_theoretical": "speedup_theoretical",
    "speedup_measured_b1": "speedup_b1",
    "final.latency_ms_b1": "latency_ms_b1",
    "final.params_nonzero": "params",
    "final.depth": "depth",
    "cost.train_seconds": "train_seconds",
    "cost.train_flops": "train_flops",
}


def _get(record: dict, path: str) -> float:
    node = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return math.nan
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else math.nan


def sweep_frame(plan: Plan) -> pd.DataFrame:
    rows = []
    for status in sweep_status(plan):
        run = status.run
        record = status.record or {}
        row = {
            "run_id": run.run_id,
            "stage": run.stage,
            "variant": run.variant or ("original" if run.stage == "pretrain" else run.cfg.method),
            "method": run.cfg.method if run.stage == "compress" else "original",
            "level": run.matched_level if run.matched_level is not None else math.nan,
            "level_label": run.level_label,
            "model": run.cfg.model,
            "dataset": run.cfg.dataset,
            "seed": run.cfg.seed,
            "status": status.status,
            "error": status.detail if status.status != "completed" else "",
        }
        completed = status.status == "completed"
        for path, column in METRICS.items():
            row[column] = _get(record, path) if completed else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
