"""The quiet latency pass: interleaved timing, medians with distribution-free intervals, latency.json."""

import torch
from torch import nn

from lcbench.core.store import RunDir, read_json
from lcbench.measurement.latency import LATENCY_FILE, interleaved, measure_run, median_ci
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from tests.conftest import fast_overrides


def test_median_interval_is_made_of_order_statistics():
    values = list(range(1, 101))  # median 50.5; 95% ranks about 40 and 61
    median, low, high = median_ci(values)
    assert median == 50.5 and 38 <= low <= 42 and 59 <= high <= 63
    assert median_ci([5.0] * 30) == (5.0, 5.0, 5.0)


def test_a_smaller_model_is_measurably_faster_and_equal_models_are_not():
    torch.set_num_threads(1)
    big = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512))
    small = nn.Linear(512, 512)
    x = torch.randn(1, 512)
    faster = interleaved(lambda: big(x), lambda: small(x), torch.device("cpu"), max_seconds=5)
    assert faster["speedup"] > 2 and faster["ci_low"] > 1 and not faster["spans_one"]
    assert faster["original_ci"][0] <= faster["original_ms"] <= faster["original_ci"][1]
    same = interleaved(lambda: small(x), lambda: small(x), torch.device("cpu"), max_seconds=5)
    assert 0.8 < same["speedup"] < 1.25 and len(same["ratios"]) == same["rounds"] >= 20


def test_measure_run_writes_latency_json_beside_the_record(tmp_path):
    cfg = make_config(
        {},
        [
            "stage=compress",
            "method=layercollapse",
            "k=2",
            "allow_unfolded=true",
            "pretrain.epochs=1",
            *fast_overrides(tmp_path, model="digits_mlp", epochs=1),
        ],
    )
    record = execute(cfg, progress_bar=False)
    result = measure_run(tmp_path, record, [1], torch.device("cpu"), 1)
    saved = read_json(RunDir(tmp_path, record["run_id"]).path / LATENCY_FILE)
    assert saved["batches"]["1"]["speedup"] == result["batches"]["1"]["speedup"] > 0
    assert saved["threads"] == 1 and "device" in saved

    # the second backend: both models in ONNX Runtime, and the final one against eager PyTorch
    ort = measure_run(tmp_path, record, [1, 4], torch.device("cpu"), 1, backend="onnxruntime")
    saved = read_json(RunDir(tmp_path, record["run_id"]).path / "latency_onnxruntime.json")
    assert saved["backend"] == "onnxruntime" and saved["onnxruntime"] and set(saved["batches"]) == {"1", "4"}
    versus = saved["versus_eager"]["4"]
    assert versus["eager_ms"] > 0 and versus["onnxruntime_ms"] > 0
    assert versus["speedup"] == ort["versus_eager"]["4"]["speedup"]
    assert (
        read_json(RunDir(tmp_path, record["run_id"]).path / LATENCY_FILE)["batches"]["1"]["speedup"]
        == (result["batches"]["1"]["speedup"])
    )  # the eager record is left as it was
