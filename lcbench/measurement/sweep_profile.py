"""Where a sweep's time goes (`make bench` -> `results/bench/sweep_profile.{json,md}`).

A bundled spec is run exactly as `make reproduce` runs it (launch on the local queue of warm workers, wait,
the quiet latency pass, the report: each the `lcbench` command, timed from outside), into a fresh output
root. Then:

- per run, from its record's `cost.phases` (`training/phases.py`): setup (data, the starting model),
  prepare, training steps, evaluations between epochs, checkpoints, the rest of the loop, the final
  evaluation, the in-run measurement (parameters, MACs, latency), saving the model; and from the queue's
  own clock, what each run spends outside them (the worker's hand-over, its folder, lock, records);
- per sweep: the queue's start (its supervisor and fork server importing torch), the time its workers sat
  idle (waiting on an original, or the last runs' tail), the quiet latency pass and the report;
- the training's achieved FLOP/s (counted FLOPs over training-step seconds) beside the best rate one core
  reaches on the same models' matmuls (`matmul_rate`: the forward and backward GEMMs of every Linear and
  convolution at the run's batch size, timed bare): the distance to the limit as one number per model.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..core.store import atomic_write_text, read_json
from ..execution.queue_server import QUEUE_FILE
from ..zoo.models import create_model

RUN_PHASES = (
    "setup",
    "prepare",
    "train_steps",
    "evaluate",
    "checkpoint",
    "fit_other",
    "final_evaluation",
    "measure",
    "save",
)
PHASE_WORDS = {
    "setup": "setup (data, starting model, method)",
    "prepare": "method's prepare (prune, factorise, convert) and the trainer",
    "train_steps": "training steps",
    "evaluate": "evaluations between epochs",
    "checkpoint": "checkpoints",
    "fit_other": "rest of the training loop (logging, schedule)",
    "final_evaluation": "fold and final evaluation",
    "measure": "in-run measurement (parameters, MACs, latency)",
    "save": "saving the model and per-example records",
    "outside": "outside the run's code (hand-over, folder, lock, result)",
}


def _lcbench(*args: str) -> float:
    """Seconds one `lcbench` command takes (it must succeed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lcbench", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def _queue_runs(root: Path, name: str) -> list[dict]:
    """Every run of the sweep's local queues (started, ended, pid), newest queue last."""
    runs: list[dict] = []
    for folder in sorted((root / ".sweeps" / name).glob("*-local")):
        queue = read_json(folder / QUEUE_FILE) or {"runs": []}
        runs.extend(queue["runs"])
    return runs


def run_sweep(spec: str, root: Path, overrides: list[str], parallel: int) -> dict:
    """Launch, wait, measure and report `spec` into `root` as `make reproduce` does; each one's seconds."""
    items = [spec, f"output_root={root}", *overrides]
    timings = {"plan": _lcbench("plan", *items)}
    launched = time.time()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lcbench", "launch", *items, "--executor", "local", "--cpu"]
        + ["--max-parallel", str(parallel)],
        check=True,
        capture_output=True,
    )
    name = Path(spec).stem
    while True:
        runs = _queue_runs(root, name)
        if runs and all(r["state"] == "done" for r in runs):
            break
        time.sleep(0.5)
    timings["launch_to_done"] = time.perf_counter() - start
    timings["measure"] = _lcbench("measure", *items, "--threads", "1")
    timings["report"] = _lcbench("report", *items, "--out", str(root / "report"))
    return {"timings": timings, "queue": runs, "launched": launched, "parallel": parallel}


def breakdown(root: Path, sweep: dict) -> dict:
    """Per-run phases summed over the sweep, what the queue spent around them, and the sweep's idle time."""
    totals: dict[str, float] = defaultdict(float)
    by_model: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    queue = sweep["queue"]
    walls = []
    for entry in queue:
        record = read_json(root / entry["run_id"] / "result.json") or {}
        cost = record.get("cost") or {}
        phases = cost.get("phases") or {}
        in_queue = entry["ended"] - entry["started"]
        for phase in RUN_PHASES:
            totals[phase] += phases.get(phase, 0.0)
        totals["outside"] += max(in_queue - sum(phases.get(p, 0.0) for p in RUN_PHASES), 0.0)
        walls.append(in_queue)
        model = by_model[record.get("model", "?")]
        model["train_flops"] += cost.get("train_flops", 0.0)
        model["train_seconds"] += phases.get("train_steps", 0.0)
        model["runs"] += 1
        model["batch_size"] = (record.get("config") or {}).get("batch_size", 0)
        if record.get("input_shape"):
            model["input_shape"] = list(record["input_shape"])  # as the model sees it
    first = min(e["started"] for e in queue)
    last = max(e["ended"] for e in queue)
    slots = sweep["parallel"] * (last - first)
    return {
        "runs": len(queue),
        "workers": len({e["pid"] for e in queue}),
        "run_seconds": sum(walls),
        "run_seconds_median": statistics.median(walls),
        "phases": dict(totals),
        "queue_start_seconds": first - sweep["launched"],
        "runs_span_seconds": last - first,
        "idle_worker_seconds": max(slots - sum(walls), 0.0),
        "models": {k: dict(v) for k, v in by_model.items()},
        **{f"{k}_seconds": v for k, v in sweep["timings"].items()},
    }


def _gemm_seconds(m: int, k: int, n: int, repeats: int) -> float:
    """Best of `repeats` of one (m x k) @ (k x n) product, float32, on this thread."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(model: nn.Module, batch: int, input_shape: tuple[int, ...], repeats: int = 30) -> dict:
    """FLOP/s one core reaches on the model's own GEMMs at `batch`: for every Linear (and convolution, as
    its im2col product), the forward product and the two backward ones, each timed bare (best of
    `repeats`); total FLOPs over total seconds."""
    shapes: list[tuple[int, int, int]] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            rows = inputs[0].numel() // module.in_features
            shapes.append((rows, module.in_features, module.out_features))
        elif isinstance(module, nn.Conv2d):
            out_h, out_w = output.shape[-2:]
            rows = output.shape[0] * out_h * out_w
            depth = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            shapes.append((rows, depth, module.out_channels))

    hooks = [
        m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    example = (  # a language model reads token ids
        torch.randint(0, embedding.num_embeddings, (batch, *input_shape))
        if embedding is not None
        else torch.randn(batch, *input_shape)
    )
    with torch.no_grad():
        model.eval()(example)
    for hook in hooks:
        hook.remove()
    flops = seconds = 0.0
    for m, k, n in shapes:  # forward X W; backward dY W^T and X^T dY
        for shape in ((m, k, n), (m, n, k), (k, m, n)):
            flops += 2.0 * shape[0] * shape[1] * shape[2]
            seconds += _gemm_seconds(*shape, repeats)
    return {
        "gemms": 3 * len(shapes),
        "flops": flops,
        "seconds": seconds,
        "gflops_per_s": flops / seconds / 1e9,
    }


def peak_rate(size: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of one core on a large square float32 product: the machine's ceiling for one thread."""
    return 2.0 * size**3 / _gemm_seconds(size, size, size, repeats) / 1e9


def roofline(models: dict[str, dict]) -> dict:
    """Per model: the sweep's achieved training rate beside one core's rate on the same GEMMs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every sweep run computes on one thread
    try:
        out = {"peak_gflops_per_s_1024": peak_rate()}
        for name, totals in models.items():
            shape = tuple(totals.get("input_shape") or ())
            if not shape or not totals["train_seconds"]:
                continue
            model = create_model(name, 10, shape[0])
            rate = matmul_rate(model, int(totals["batch_size"]), shape)
            achieved = totals["train_flops"] / totals["train_seconds"] / 1e9
            out[name] = {
                "achieved_gflops_per_s": achieved,
                "gemm_gflops_per_s": rate["gflops_per_s"],
                "achieved_over_gemm": achieved / rate["gflops_per_s"],
                "batch_size": int(totals["batch_size"]),
                "runs": int(totals["runs"]),
            }
        return out
    finally:
        torch.set_num_threads(threads)


def markdown(result: dict) -> str:
    """The profile as a Markdown page: every sweep's breakdown, then the roofline."""
    lines = ["# Where a sweep's time goes", ""]
    lines += [
        "Written by `make bench` (`lcbench/measurement/sweep_profile.py`). Each sweep ran as "
        "`make reproduce` runs it, alone on the machine, into a fresh output root. Seconds are summed "
        "over runs (each run on one core); percentages are of the runs' summed time.",
        "",
    ]
    env = result.get("environment", {})
    if env:
        lines += [f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores.", ""]
    for label, sweep in result["sweeps"].items():
        total = sweep["run_seconds"]
        lines += [f"## {label}", ""]
        lines += [
            f"{sweep['runs']} runs in {sweep['workers']} worker processes (2 at a time); launch to last run "
            "done "
            f"{sweep['launch_to_done_seconds']:.1f} s (the queue's start "
            f"{sweep['queue_start_seconds']:.1f} s; "
            f"workers idle {sweep['idle_worker_seconds']:.1f} worker-s of "
            f"{sweep['runs_span_seconds'] * sweep.get('parallel', 2):.1f}); quiet latency pass "
            f"{sweep['measure_seconds']:.1f} s; report {sweep['report_seconds']:.1f} s.",
            "",
            "| phase | seconds | share |",
            "|:--|--:|--:|",
        ]
        for phase, seconds in sorted(sweep["phases"].items(), key=lambda kv: -kv[1]):
            lines.append(
                f"| {PHASE_WORDS.get(phase, phase)} | {seconds:.1f} | {100 * seconds / total:.1f}% |"
            )
        lines += [f"| all runs | {total:.1f} | 100% |", ""]
    roof = result.get("roofline", {})
    if roof:
        lines += [
            "## Training rate against the machine's",
            "",
            "Achieved: counted training FLOPs (3 x forward, plus a KD teacher's forward) over the "
            "training-step seconds of the sweep's runs. GEMM rate: one core on the same model's forward and "
            "backward matrix products at the run's batch size, each timed bare (best of 30). Peak: one core "
            "on a 1024^3 "
            f"product, {roof['peak_gflops_per_s_1024']:.1f} GFLOP/s.",
            "",
            "| model | batch | runs | achieved GFLOP/s | GEMM GFLOP/s | achieved / GEMM |",
            "|:--|--:|--:|--:|--:|--:|",
        ]
        for name, row in roof.items():
            if isinstance(row, dict):
                lines.append(
                    f"| {name} | {row['batch_size']} | {row['runs']} | {row['achieved_gflops_per_s']:.2f} | "
                    f"{row['gemm_gflops_per_s']:.2f} | {row['achieved_over_gemm']:.2f} |"
                )
        lines.append("")
    return "\n".join(lines)


def dump(result: dict, folder: Path) -> None:
    """`sweep_profile.md` beside the benchmark's JSON."""
    atomic_write_text(folder / "sweep_profile.md", markdown(result))
