"""The run record's summary metrics: read by path, NaN when absent, one name in every view."""

from __future__ import annotations

import math

from lcbench.core.record import SUMMARY, RunRecord, number_at, summary_paths

RECORD = {
    "run_id": "r1",
    "status": "completed",
    "config": {"stage": "compress", "method": "layercollapse", "model": "m", "dataset": "d", "seed": 0},
    "final": {"top1": 91.5, "params_nonzero": 1000, "gmacs": 0.5, "latency_ms_b1": 1.25},
    "original": {"top1": 92.0},
    "delta_top1": -0.5,
    "compression": 2.0,
    "method_report": {"folded": ["blocks.0.mlp", "blocks.1.mlp"], "regularized": {"top1": 91.9}},
    "cost": {"train_seconds": 3.0, "epochs": 2, "train_flops": 1e12},
    "match": None,
}


def test_values_are_read_by_path_and_absent_ones_are_nan():
    record = RunRecord(RECORD)
    assert record.value("top1") == 91.5 and record.value("base_top1") == 92.0
    assert record.value("mlps_folded") == 2.0  # a list's length
    assert record.value("top1_prefold") == 91.9
    assert math.isnan(record.value("match_target"))  # `match` is None: nothing to match
    assert math.isnan(RunRecord({"status": "failed"}).value("top1"))
    assert math.isnan(number_at({"final": {"top1": True}}, "final.top1"))  # a bool is not a number


def test_summary_leaves_out_what_the_record_lacks_and_identity_falls_back_to_the_config():
    record = RunRecord(RECORD)
    summary = record.summary()
    assert summary["compression"] == 2.0 and "top5" not in summary and "speedup_b1" not in summary
    assert set(record.summary(headline_only=True)) <= {n for n, m in SUMMARY.items() if m.headline}
    assert record.identity() == {"run_id": "r1", "status": "completed", **RECORD["config"]}


def test_every_summary_metric_has_its_own_path():
    paths = [m.path for m in SUMMARY.values()]
    assert len(paths) == len(set(paths))
    assert "final.top1" in summary_paths() and "method_report.folded" not in summary_paths(False)


def test_a_language_models_headline_summary_holds_its_perplexity():
    record = RunRecord(
        {
            "status": "completed",
            "metric": "perplexity",
            "final": {"perplexity": 16.5, "top1": 40.0},
            "original": {"perplexity": 16.7},
            "delta_perplexity": -0.2,
        }
    )
    headline = record.summary(headline_only=True)
    assert (
        headline["perplexity"] == 16.5 and headline["delta_perplexity"] == -0.2 and headline["top1"] == 40.0
    )
    assert "base_perplexity" not in headline and record.summary()["base_perplexity"] == 16.7
    assert "perplexity" not in RunRecord(RECORD).summary(headline_only=True)  # an image run: top-1 only
