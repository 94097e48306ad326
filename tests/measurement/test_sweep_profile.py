"""The sweep profile (`make bench`): a run records where its time went, the breakdown sums it per sweep with
what the queue spent around the runs, and the GEMM rate counts the model's own products."""

import pytest
import torch
from torch import nn

from lcbench.core.store import atomic_write_json
from lcbench.measurement.sweep_profile import RUN_PHASES, breakdown, markdown, matmul_rate
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from tests.conftest import fast_overrides


def test_a_runs_record_splits_its_wall_time_into_phases(tmp_path):
    cfg = make_config({}, ["stage=pretrain", *fast_overrides(tmp_path, model="digits_mlp", epochs=2)])
    cost = execute(cfg, progress_bar=False)["cost"]
    phases = cost["phases"]
    assert set(phases) == set(RUN_PHASES)
    assert phases["train_steps"] == pytest.approx(cost["train_seconds"], abs=1e-5)
    assert all(seconds >= 0 for seconds in phases.values()) and phases["evaluate"] > 0
    assert sum(phases.values()) <= cost["wall_seconds"] * 1.001  # parts of one clock, never more


def _run(root, run_id, model, phases):
    cost = {"phases": phases, "train_flops": 6e9, "train_seconds": phases["train_steps"]}
    record = {"model": model, "config": {"batch_size": 32}, "input_shape": [1, 8, 8], "cost": cost}
    atomic_write_json(root / run_id / "result.json", record)


def test_the_breakdown_sums_phases_and_counts_the_queues_time_around_them(tmp_path):
    one = dict.fromkeys(RUN_PHASES, 0.0) | {"setup": 0.5, "train_steps": 2.0, "evaluate": 0.5}
    for run_id in ("a", "b"):
        (tmp_path / run_id).mkdir()
        _run(tmp_path, run_id, "digits_mlp", one)
    queue = [  # two workers: a runs 10-14 s, b 11-15 s; the queue launched at 0
        {"run_id": "a", "started": 10.0, "ended": 14.0, "pid": 1, "state": "done"},
        {"run_id": "b", "started": 11.0, "ended": 15.0, "pid": 2, "state": "done"},
    ]
    timings = {"plan": 1.0, "launch_to_done": 15.0, "measure": 2.0, "report": 3.0}
    out = breakdown(tmp_path, {"queue": queue, "launched": 0.0, "parallel": 2, "timings": timings})
    assert out["run_seconds"] == 8.0 and out["workers"] == 2 and out["queue_start_seconds"] == 10.0
    assert out["phases"]["train_steps"] == 4.0 and out["phases"]["outside"] == pytest.approx(2.0)
    assert out["idle_worker_seconds"] == pytest.approx(2 * 5.0 - 8.0)
    assert out["models"]["digits_mlp"]["train_flops"] == 12e9 and out["report_seconds"] == 3.0
    page = markdown({"sweeps": {"digits": {**out, "parallel": 2}}, "roofline": {}})
    assert "| training steps | 4.0 | 50.0% |" in page and "outside the run's code" in page


def test_the_gemm_rate_counts_every_forward_and_backward_product_of_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    rate = matmul_rate(model, 16, (1, 8, 8), repeats=3)
    assert rate["gemms"] == 6
    assert rate["flops"] == 3 * 2.0 * 16 * (64 * 32 + 32 * 10)
    assert rate["seconds"] > 0 and rate["gflops_per_s"] > 0
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))
    assert matmul_rate(conv, 2, (1, 8, 8), repeats=1)["flops"] == 3 * 2.0 * (2 * 64 * 9 * 4 + 2 * 256 * 10)
