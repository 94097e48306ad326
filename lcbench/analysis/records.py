"""A sweep's runs as one pandas DataFrame: the plan's coordinates joined with each run's record.

Every planned run has a row, whatever its status: failed and missing runs keep their error and NaN
metrics, so tables and reports can list them instead of silently dropping them.
"""

from __future__ import annotations

import math

import pandas as pd

from ..latency import read_latency
from ..models import mlps_per_block
from ..status import sweep_status
from ..sweep import Plan

# record path -> column
METRICS = {
    "original.top1": "base_top1",
    "final.top1": "top1",
    "delta_top1": "delta_top1",
    "compression": "compression",
    "original.gmacs": "gmacs_original",
    "final.gmacs": "gmacs",  # dense MACs: what dense hardware executes
    "final.gmacs_effective": "gmacs_effective",  # MACs of nonzero weights (pruning's theoretical count)
    "speedup_theoretical": "speedup_theoretical",
    "speedup_measured_b1": "speedup_b1",
    "final.latency_ms_b1": "latency_ms_b1",
    "final.params_nonzero": "params",
    "final.params_dense": "params_dense",
    "final.samples": "val_samples",
    "final.depth": "depth",
    "method_report.regularized.top1": "top1_prefold",  # LayerCollapse: the PReLU model before its fold
    "match.target": "match_target",
    "match.achieved": "match_achieved",
    "cost.epochs": "epochs",
    "cost.train_seconds": "train_seconds",
    "cost.train_flops": "train_flops",
}
# the quiet latency pass (`lcbench measure`, latency.json in the run folder): batch-1 speed-up with its CI
LATENCY = {
    "speedup": "speedup_quiet_b1",
    "ci_low": "speedup_quiet_b1_low",
    "ci_high": "speedup_quiet_b1_high",
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
        match = record.get("match") if completed else None
        row["matched"] = bool(match["within_tolerance"]) if match else None  # None: nothing to match
        row["init"] = (record.get("method_report") or {}).get("init", "") if completed else ""
        row["paper_blocks"] = _paper_blocks(run.cfg.model, row["level"])
        folded = (record.get("method_report") or {}).get("folded") if completed else None
        row["blocks_folded"] = (
            _paper_blocks(run.cfg.model, float(len(folded))) if folded is not None else math.nan
        )
        quiet = read_latency(plan.output_root, run.run_id) if completed else None
        for key, column in LATENCY.items():
            row[column] = _get(quiet or {}, f"batches.1.{key}")
        rows.append(row)
    return pd.DataFrame(rows)


def _paper_blocks(model: str, level: float) -> float:
    """A count of collapsible MLPs in the paper's block unit (a Mixer block is 2 MLPs)."""
    if math.isnan(level):
        return math.nan

    return level / mlps_per_block(model)
