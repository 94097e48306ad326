"""`lcbench measure SPEC`: a quiet latency pass over a sweep's completed compress runs, one run at a time.

Latency measured inside a sweep shares the cores with the runs training beside it, so the speed-ups in
the tables come from this pass instead. For each completed compress run it loads the final model and
the original it started from, and times them interleaved (original, final, final, original, ...; each
sample the mean of an inner loop of at least 1 ms) until the 95% confidence interval of both
medians is within `rel` of the median, or a round or time limit is reached (then the wider interval is
reported as it is). The speed-up is the median of the per-round ratios original / final, with its own
95% interval; a speed-up whose interval contains 1 is no measured speed-up. Results go to
`<run>/latency.json` (atomically); `lcbench report` reads them.
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.store import RunDir, atomic_write_json, read_json
from ..training.pipeline import load_model
from ..zoo.measure import _sync, device_name, example_input

log = logging.getLogger("lcbench")
LATENCY_FILE = "latency.json"
Z95 = 1.959964
SAMPLE_SECONDS = 1e-3  # one timing sample lasts at least this long (an inner loop of forward passes)


def median_ci(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """Median and its distribution-free 95% interval (binomial order statistics, normal approximation)."""
    ordered = sorted(values)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return statistics.median(ordered), ordered[low], ordered[high]


def _timer(forward: Callable[[], object], device: torch.device) -> Callable[[int], float]:
    """A function timing `inner` calls of `forward` and returning milliseconds per call."""

    @torch.no_grad()
    def run(inner: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            forward()
        _sync(device)
        return (time.perf_counter() - start) * 1e3 / inner

    return run


def interleaved(
    original: Callable[[], object],
    final: Callable[[], object],
    device: torch.device,
    rel: float = 0.05,
    min_rounds: int = 20,
    max_rounds: int = 2000,
    max_seconds: float = 20.0,
    names: tuple[str, str] = ("original", "final"),
) -> dict:
    """Time two forward calls alternately until both medians' 95% intervals are within `rel` of the median;
    the speed-up is first / second (keys named by `names`)."""
    time_original, time_final = _timer(original, device), _timer(final, device)
    for timer in (time_original, time_final):  # warm-up
        timer(3)
    fastest = min(time_original(3), time_final(3)) / 1e3
    inner = max(1, math.ceil(SAMPLE_SECONDS / max(fastest, 1e-9)))
    originals, finals, ratios = [], [], []
    started, converged = time.perf_counter(), False
    while len(ratios) < max_rounds:
        if len(ratios) % 2 == 0:  # ABBA order: neither model always runs first
            t_original, t_final = time_original(inner), time_final(inner)
        else:
            t_final, t_original = time_final(inner), time_original(inner)
        originals.append(t_original)
        finals.append(t_final)
        ratios.append(t_original / t_final)
        if len(ratios) >= min_rounds and len(ratios) % 10 == 0:
            widths = [(hi - lo) / 2 / med for med, lo, hi in map(median_ci, (originals, finals))]
            if max(widths) <= rel:
                converged = True
                break
        if time.perf_counter() - started > max_seconds:
            break
    o_med, o_low, o_high = median_ci(originals)
    f_med, f_low, f_high = median_ci(finals)
    speedup, s_low, s_high = median_ci(ratios)
    first, second = names
    return {
        f"{first}_ms": o_med,
        f"{first}_ci": [o_low, o_high],
        f"{second}_ms": f_med,
        f"{second}_ci": [f_low, f_high],
        "speedup": speedup,
        "ci_low": s_low,
        "ci_high": s_high,
        "spans_one": s_low <= 1.0 <= s_high,
        "rounds": len(ratios),
        "inner": inner,
        "converged": converged,
        "ratios": ratios,
    }


def _eager(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    model.eval()
    return lambda: model(x)


BACKENDS = ("eager", "onnxruntime")


def latency_file(backend: str) -> str:
    return LATENCY_FILE if backend == "eager" else f"latency_{backend}.json"


def measure_run(
    root,
    record: dict,
    batches: Sequence[int],
    device: torch.device,
    threads: int,
    rel: float = 0.05,
    backend: str = "eager",
) -> dict:
    """Time one completed compress run's final model against its original; write and return latency.json.
    `onnxruntime`: both exported to ONNX (in a temporary folder) and timed in ONNX Runtime, and in the same
    pass the final model in ONNX Runtime against itself in eager PyTorch (`versus_eager`); written to
    latency_onnxruntime.json."""
    run = RunDir(root, record["run_id"])
    original = load_model(RunDir(root, record["pretrain_run_id"]).model_path).to(device)
    final = load_model(run.model_path).to(device)
    shape = record["input_shape"]
    result = {
        "backend": backend,
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": threads,
        "rel_target": rel,
        "batches": {},
    }
    if backend == "eager":
        for batch in batches:
            x = example_input(original, shape, batch)  # images: N(0, 1); text: token ids of the model
            result["batches"][str(batch)] = interleaved(
                _eager(original, x), _eager(final, x), device, rel=rel
            )
    else:
        result.update(_onnxruntime_pass(original, final, shape, batches, device, threads, rel))
    atomic_write_json(run.path / latency_file(backend), result)
    return result


def _onnxruntime_pass(original, final, shape, batches, device, threads: int, rel: float) -> dict:
    """Both models exported to ONNX and timed in ONNX Runtime; the final one also against eager PyTorch."""
    import onnxruntime

    from .export import onnx_export, onnx_session

    out = {"onnxruntime": onnxruntime.__version__, "batches": {}, "versus_eager": {}}
    with tempfile.TemporaryDirectory(prefix="lcbench-onnx-") as folder:
        sessions = {}
        for name, model in (("original", original.eval()), ("final", final.eval())):
            onnx_export(model, example_input(original, shape, 2), Path(folder) / f"{name}.onnx")
            sessions[name] = onnx_session(Path(folder) / f"{name}.onnx", threads)
        for batch in batches:
            x = example_input(original, shape, batch)
            feed = {s: {s_in.name: x.cpu().numpy() for s_in in sessions[s].get_inputs()} for s in sessions}
            run_original = partial(sessions["original"].run, None, feed["original"])
            run_final = partial(sessions["final"].run, None, feed["final"])
            out["batches"][str(batch)] = interleaved(run_original, run_final, device, rel=rel)
            out["versus_eager"][str(batch)] = interleaved(
                _eager(final, x), run_final, device, rel=rel, names=("eager", "onnxruntime")
            )
    return out


def measure_sweep(
    plan,
    batches: Sequence[int] = (1,),
    device: str = "cpu",
    threads: int = 0,
    force: bool = False,
    rel: float = 0.05,
    echo: Callable[[str], None] = print,
    backend: str = "eager",
) -> dict[str, int]:
    """The quiet pass over every completed compress run of `plan` (runs measured before are kept)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        from .export import require_onnx

        require_onnx()
        if torch.device(device).type != "cpu":
            raise ConfigError("--backend onnxruntime times ONNX Runtime's CPU provider: use --device cpu")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    counts = {"measured": 0, "kept": 0, "not_completed": 0}
    runs = plan.stage("compress")
    for i, planned in enumerate(runs, 1):
        rundir = RunDir(plan.output_root, planned.run_id)
        rundir.check_trusted()  # its record and model never read, nothing written beside them
        record = rundir.result()
        if not record or record.get("status") != "completed":
            counts["not_completed"] += 1
            continue
        if (rundir.path / latency_file(backend)).exists() and not force:
            counts["kept"] += 1
            continue
        result = measure_run(plan.output_root, record, batches, dev, torch.get_num_threads(), rel, backend)
        b1 = result["batches"][str(batches[0])]
        versus = result.get("versus_eager", {}).get(str(batches[0]))
        echo(
            f"[{i}/{len(runs)}] {planned.run_id} {planned.cfg.model} {planned.variant}: speed-up "
            f"{b1['speedup']:.2f} [{b1['ci_low']:.2f}, {b1['ci_high']:.2f}] at batch {batches[0]} "
            f"({b1['rounds']} rounds{'' if b1['converged'] else ', not converged'})"
            + (_versus_text(versus) if versus else "")
        )
        counts["measured"] += 1
    return counts


def _versus_text(versus: dict) -> str:
    return f"; ONNX Runtime {versus['speedup']:.2f}x eager [{versus['ci_low']:.2f}, {versus['ci_high']:.2f}]"


def read_latency(root, run_id: str, backend: str = "eager") -> dict | None:
    return read_json(RunDir(root, run_id).path / latency_file(backend))
