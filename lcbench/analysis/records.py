"""A sweep's runs as one pandas DataFrame: the plan's coordinates joined with each run's record.

Every planned run has a row, whatever its status: failed and missing runs keep their error and NaN
metrics, so tables and reports can list them instead of silently dropping them.
"""

from __future__ import annotations

import math

import pandas as pd

from ..core.config import replicate_seed
from ..core.record import SUMMARY, RunRecord, number_at
from ..core.store import UNTRUSTED, UnsafeRunFolder, read_json
from ..execution.status import sweep_status
from ..execution.sweep import Plan
from ..measurement.latency import read_latency
from ..zoo.models import mlps_per_block
from .headline import add_scores

# the quiet latency pass (`lcbench measure`, latency.json in the run folder): batch-1 speed-up with its CI
LATENCY = {
    "speedup": "speedup_quiet_b1",
    "ci_low": "speedup_quiet_b1_low",
    "ci_high": "speedup_quiet_b1_high",
}


# the second backend (`lcbench measure --backend onnxruntime`, latency_onnxruntime.json): the speed-up
# in ONNX Runtime and the final model's ONNX Runtime speed over eager PyTorch, both at batch 1
ONNXRUNTIME = {
    "batches.1.speedup": "speedup_onnxruntime_b1",
    "versus_eager.1.speedup": "onnxruntime_vs_eager_b1",
    "versus_eager.1.ci_low": "onnxruntime_vs_eager_b1_low",
    "versus_eager.1.ci_high": "onnxruntime_vs_eager_b1_high",
}


def sweep_frame(plan: Plan) -> pd.DataFrame:
    statuses = sweep_status(plan)
    for status in statuses:  # a record another user could have written never enters a report
        if status.detail.startswith(UNTRUSTED):
            raise UnsafeRunFolder(status.detail.removeprefix(f"{UNTRUSTED}: "))
    rows = []
    for status in statuses:
        run = status.run
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
            "replicate": replicate_seed(run.cfg),  # the seed of its original model (and split)
            "pretrain_id": run.depends_on or "",
            "status": status.status,
            "error": status.detail if status.status != "completed" else "",
        }
        completed = status.status == "completed"
        record = RunRecord(status.record if completed else {})
        row.update({name: record.value(name) for name in SUMMARY})  # NaN for a run without a record
        match = record.data.get("match")
        row["matched"] = bool(match["within_tolerance"]) if match else None  # None: nothing to match
        row["init"] = (record.data.get("method_report") or {}).get("init", "")
        row["flag"] = point_flag(record.data)
        row["outside_range"] = (record.data.get("method_report") or {}).get("outside_range", "")
        if any(f in row["flag"] for f in NOT_COUNTED):  # a point no allocation reaches: never a win
            row["matched"] = False
        row["paper_blocks"] = _paper_blocks(run.cfg.model, row["level"])
        row["blocks_folded"] = _paper_blocks(run.cfg.model, row["mlps_folded"])
        row["cpu"] = _cpu(plan.output_root / run.run_id) if completed else ""
        quiet = read_latency(plan.output_root, run.run_id) if completed else None
        for key, column in LATENCY.items():
            row[column] = number_at(quiet or {}, f"batches.1.{key}")
        onnx = read_latency(plan.output_root, run.run_id, "onnxruntime") if completed else None
        for key, column in ONNXRUNTIME.items():
            row[column] = number_at(onnx or {}, key)
        rows.append(row)
    return add_scores(pd.DataFrame(rows))


# What a run's point is, besides its numbers: labelled in every table, left out of bold, differences and
# claims where it is not a real compressed model at its level.
FLAGS = {
    "infeasible": "infeasible at this compression: no allocation reached it at a useful rank",
    "not folded": "blocks whose slopes did not reach the fold (LayerCollapse's band, Layer Folding's 1/2)",
    "forced fold": "folded whatever the slope (the official BERT protocol)",
    "outside its range": "outside the operating range the method declares (Wanda: per-layer sparsity above "
    "80%): run and shown, never compared",
    "world size changed": "resumed with another number of DDP processes than it started with (the batches "
    "split otherwise from there: not an uninterrupted run's numbers)",
}
NOT_COUNTED = ("infeasible", "not folded", "outside its range")
OUTSIDE = "outside its range"  # not counted and, unlike a missed target, not compared at all
METHOD_FLAGS = [
    (OUTSIDE, "outside_range"),
    ("infeasible", "infeasible"),
    ("not folded", "not_folded"),
    ("forced fold", "forced"),
]


def point_flag(record: dict) -> str:
    """`outside its range`, `infeasible`, `not folded` or `forced fold` from a run record's method report,
    with `world size changed` beside it where the run resumed with another number of processes ('' for
    none)."""
    report = record.get("method_report") or {}
    flags = [
        next((f for f, key in METHOD_FLAGS if report.get(key)), ""),
        "world size changed" if record.get("world_size_changes") else "",
    ]
    return ", ".join(f for f in flags if f)


def _cpu(run_path) -> str:
    """`AMD EPYC 9R14 (AVX512)`: the CPU a run ran on and ATen's dispatch level there (env.json)."""
    cpu = (read_json(run_path / "env.json") or {}).get("cpu") or {}
    return f"{cpu.get('model', '?')} ({cpu.get('capability', '?')})" if cpu else ""


def _paper_blocks(model: str, level: float) -> float:
    """A count of collapsible MLPs in the paper's block unit (a Mixer block is 2 MLPs)."""
    if math.isnan(level):
        return math.nan

    return level / mlps_per_block(model)
