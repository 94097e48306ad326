"""A run's result record (result.json) and its summary metrics, declared once.

Every view of a run's figures reads them from `SUMMARY` through `RunRecord`: the W&B run summary, what
`lcbench run` prints, the first columns of `lcbench results`, and the analysis frame behind every table,
plot and claim. A metric added here appears in all of them under one name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

IDENTITY = ("run_id", "status", "stage", "method", "model", "dataset", "seed")


@dataclass(frozen=True)
class Metric:
    path: str  # where it lives in result.json, dotted
    doc: str
    headline: bool = False  # printed by `lcbench run`, shown by `lcbench results` without --all-columns
    count: bool = False  # the path holds a list: the metric is its length


# timed in the run while other runs may share the machine: in the record, never in a W&B summary, where
# a reader would take them for the quiet pass's (`lcbench measure`)
IN_RUN_TIMINGS = ("speedup_b1", "latency_ms_b1")

SUMMARY: dict[str, Metric] = {
    "top1": Metric("final.top1", "top-1 accuracy of the final model on the held-out set (%)", headline=True),
    "top5": Metric("final.top5", "top-5 accuracy of the final model (%)"),
    "base_top1": Metric("original.top1", "top-1 of the model the run started from (%)"),
    "delta_top1": Metric("delta_top1", "top1 - base_top1 (points)", headline=True),
    "compression": Metric("compression", "original / final nonzero parameters", headline=True),
    "params": Metric("final.params_nonzero", "nonzero parameters of the final model", headline=True),
    "params_dense": Metric("final.params_dense", "all parameters of the final model, zeros included"),
    "gmacs": Metric("final.gmacs", "dense GMACs per sample: what dense hardware executes", headline=True),
    "gmacs_original": Metric("original.gmacs", "dense GMACs per sample of the original model"),
    "gmacs_effective": Metric("final.gmacs_effective", "GMACs of the nonzero weights (pruning's count)"),
    "speedup_theoretical": Metric("speedup_theoretical", "original / final dense MACs"),
    "speedup_b1": Metric("speedup_measured_b1", "original / final latency at batch 1, in the run"),
    "latency_ms_b1": Metric("final.latency_ms_b1", "latency per batch of 1, in the run (ms)", headline=True),
    "depth": Metric("final.depth", "layers with weights on the longest path of the final model"),
    "val_samples": Metric("final.samples", "held-out samples evaluated"),
    "top1_prefold": Metric("method_report.regularized.top1", "LayerCollapse: top-1 before the fold (%)"),
    **{  # text tasks' headline metrics (`tasks.QUALITIES`): the final, the original's, the change
        name: metric
        for key, doc in (
            ("perplexity", "perplexity of the final model on the held-out text (exp of the token loss)"),
            ("f1", "F1 of class 1, two-class tasks (%)"),
            ("mcc", "Matthews correlation x 100, two-class tasks"),
            ("pearson", "Pearson correlation x 100 (regression)"),
            ("spearman", "Spearman correlation x 100 (regression)"),
        )
        for name, metric in (
            (key, Metric(f"final.{key}", doc)),
            (f"base_{key}", Metric(f"original.{key}", f"{key} of the model the run started from")),
            (f"delta_{key}", Metric(f"delta_{key}", f"{key} - base_{key}")),
            (
                f"{key}_prefold",
                Metric(f"method_report.regularized.{key}", f"LayerCollapse: {key} before the fold"),
            ),
        )
    },
    "mlps_folded": Metric("method_report.folded", "LayerCollapse: MLPs folded into one layer", count=True),
    "match_target": Metric("match.target", "the compression (or MAC ratio) the method was asked to match"),
    "match_achieved": Metric("match.achieved", "the compression (or MAC ratio) it reached"),
    "epochs": Metric("cost.epochs", "epochs trained"),
    "train_seconds": Metric("cost.train_seconds", "seconds spent training", headline=True),
    "train_flops": Metric("cost.train_flops", "training FLOPs, counted (a KD teacher's forward included)"),
}


def value_at(data: dict, path: str) -> Any:
    """The value at a dotted path of nested dicts, None when any part is missing."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def number_at(data: dict, path: str) -> float:
    """The number at a dotted path, NaN when it is missing or not a number."""
    node = value_at(data, path)
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else math.nan


class RunRecord:
    """One run's result.json: who it is, how it ended, and its summary metrics."""

    def __init__(self, data: dict) -> None:
        self.data = data

    @property
    def status(self) -> str:
        return self.data.get("status", "failed")

    def identity(self) -> dict[str, Any]:
        config = self.data.get("config") or {}
        return {key: self.data.get(key, config.get(key)) for key in IDENTITY}

    def value(self, name: str) -> float:
        """A summary metric; NaN when the record does not hold it (another method's, a failed run)."""
        metric = SUMMARY[name]
        if metric.count:
            node = value_at(self.data, metric.path)
            return float(len(node)) if isinstance(node, list) else math.nan
        return number_at(self.data, metric.path)

    def summary(self, headline_only: bool = False) -> dict[str, float]:
        """The summary metrics this record holds (absent ones left out); the headline ones include the data
        set's own metric (`metric` in the record: perplexity for a language model) and its change."""
        metric = self.data.get("metric")
        own = {metric, f"delta_{metric}"} if metric else set()
        values = {
            name: self.value(name)
            for name, m in SUMMARY.items()
            if m.headline or not headline_only or name in own
        }
        return {name: value for name, value in values.items() if not math.isnan(value)}


def summary_paths(headline_only: bool = True) -> list[str]:
    """The record paths of the summary metrics (flattened table columns: `lcbench results`)."""
    return [m.path for m in SUMMARY.values() if (m.headline or not headline_only) and not m.count]
