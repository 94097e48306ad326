"""`lcbench rehearse SPEC`: a few hundred steps of a spec's real recipe on its real architectures, before
GPU-hours are spent on it.

For every LayerCollapse variant of every model in the spec (its first data set and level): the model with
random weights, synthetic batches of the data set's shape (nothing to download), and lcbench's own trainer
step (`Trainer.train_step`: AMP, the method's loss, clipping, the optimizer, the slope regulariser, the
learning-rate schedule at the real run's steps per epoch). It reports
- throughput: samples/s of that step against a bare PyTorch loop (forward under the same autocast, loss,
  backward, optimizer step) on the same batches, side by side, and peak memory;
- the slopes measured step by step against `slopes.predict` over the same steps, and the prediction for
  the whole run (does the recipe reach the fold band?).
Random weights and labels make the task's gradient noise, not the real one: the slope comparison checks
the regulariser and schedule as they run, not how a trained model's task pulls against them.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.store import RunDir, atomic_write_json
from ..methods import METHODS, RunContext
from ..methods.layercollapse import decoupled_regularizer
from ..training import slopes
from ..training.evaluation import AMP_DTYPES
from ..training.optim import build_optimizer
from ..training.pipeline import data_transforms, resolve_device
from ..training.provenance import cpu_model
from ..training.resolve import method_params
from ..training.tasks import TASKS
from ..zoo.data import DATASETS, DataSplits, model_img_size
from ..zoo.models import create_model
from ..zoo.text_models import vocab_size
from .sweep import Plan

POOL = 4  # distinct synthetic batches, reused in turn
WARMUP = 3  # steps left out of the timing (kernel selection, allocator)


def entries(plan: Plan) -> list[RunConfig]:
    """One LayerCollapse run per (model, variant): the first of the spec's data sets, levels and seeds."""
    chosen: dict[tuple[str, str], RunConfig] = {}
    for run in plan.stage("compress"):
        if run.cfg.method == "layercollapse":
            chosen.setdefault((run.cfg.model, run.variant), run.cfg)
    return list(chosen.values())


def _batches(cfg: RunConfig, model: nn.Module, device: torch.device, batch: int):
    """`POOL` synthetic (inputs, targets) batches of the data set's shape, and one sample's input shape."""
    spec = DATASETS.get(cfg.dataset)
    g = torch.Generator().manual_seed(0)
    if spec.is_text:
        shape = model.input_shape(cfg.seq_len or spec.seq_len)
        vocab = vocab_size(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the model's own form of input (BERT: ids, segments, mask)
            inputs = [model.example_input(batch, shape).cpu() for _ in range(POOL)]
        if spec.task == "language_modeling":
            targets = [torch.randint(vocab, (batch, shape[-1]), generator=g) for _ in range(POOL)]
        elif spec.task == "regression":
            targets = [torch.randn(batch, generator=g) for _ in range(POOL)]
        else:
            targets = [torch.randint(spec.num_classes, (batch,), generator=g) for _ in range(POOL)]
    else:
        size = data_transforms(model, cfg.img_size).img_size if spec.natural_images else spec.img_size
        shape = (spec.in_chans, size, size)
        classes = spec.num_classes or 1000
        inputs = [torch.randn(batch, *shape, generator=g) for _ in range(POOL)]
        targets = [torch.randint(classes, (batch,), generator=g) for _ in range(POOL)]
    move = [(x.to(device), y.to(device)) for x, y in zip(inputs, targets)]
    return move, tuple(shape)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bare_loop(model: nn.Module, cfg: RunConfig, batches, steps: int, device: torch.device) -> float:
    """Seconds of `steps` plain PyTorch steps (the same autocast, loss, clipping and optimizer; no
    schedule, regulariser, divergence check or method hooks)."""
    task, amp = TASKS[DATASETS.get(cfg.dataset).task], AMP_DTYPES[cfg.precision]
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    model.train()
    for i in range(steps + WARMUP):
        if i == WARMUP:
            _sync(device)
            start = time.perf_counter()
        x, y = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = task.loss(model(x), y, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    return time.perf_counter() - start


def rehearse_run(
    cfg: RunConfig, steps: int, device: torch.device, work: Path, batch: int | None = None
) -> dict[str, Any]:
    """One entry of the rehearsal: throughput beside a bare loop, peak memory, slopes against prediction.
    `batch` replaces the recipe's per-step batch (a CPU smoke test of a GPU recipe); the schedule keeps
    the recipe's steps per epoch."""
    from ..training.train import Trainer

    spec = DATASETS.get(cfg.dataset)
    classes = spec.num_classes if spec.num_classes is not None else 1000
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if spec.is_text:
            original = create_model(cfg.model, classes)
        else:
            original = create_model(cfg.model, classes, spec.in_chans, model_img_size(cfg))
    original = original.to(device).eval()
    per_epoch = slopes.steps_per_epoch(cfg) or 1
    steps = max(1, min(steps, cfg.epochs * per_epoch - WARMUP))  # never past the real run's last step
    batch = batch or cfg.batch_size // max(1, cfg.nproc * cfg.nodes)  # one rank's share
    batches, shape = _batches(cfg, original, device, batch)
    data = DataSplits(train=_Dummy(), val=_Dummy(), num_classes=classes, in_chans=spec.in_chans)
    quiet = dataclasses.replace(cfg, workers=0)  # no loader workers: the rehearsal feeds its own batches
    ctx = RunContext(quiet, RunDir(work, "rehearsal"), device, data, original, shape, val_loader=None)
    method = METHODS.get("layercollapse")(method_params(cfg), ctx)
    model = method.prepare(copy.deepcopy(original).train())
    trainer = Trainer(model, method, progress_bar=False)
    trainer.steps_per_epoch = per_epoch  # the real run's schedule, not the synthetic set's
    trainer.rebuild_optimizer()
    name = method.converted[0]
    measured, lrs = [], []
    _peak_reset(device)
    for i in range(steps + WARMUP):
        if i == WARMUP:
            _sync(device)
            start = time.perf_counter()
        lrs.append(trainer.optimizer.param_groups[-1]["lr"])
        trainer.train_step(*batches[i % len(batches)])
        measured.append(float(model.get_submodule(name).weight.detach().reshape(-1)[0]))
    _sync(device)
    seconds = time.perf_counter() - start
    peak = _peak_mib(device)
    del trainer, model, method
    bare = copy.deepcopy(original).train()
    _peak_reset(device)
    bare_seconds = bare_loop(bare, cfg, batches, steps, device)
    bare_peak = _peak_mib(device)
    del bare

    p = method_params(cfg)
    lc = METHODS.get("layercollapse")
    decoupled = decoupled_regularizer(p, cfg.optimizer)
    start_slope = lc.start_slope(p, cfg)
    lr_steps = slopes.learning_rates(cfg, per_epoch)[: steps + WARMUP]
    predicted = [
        1.0 - slopes.distance_after(lr_steps[: i + 1], 1.0 - start_slope, p.lam, decoupled, cfg)
        for i in range(len(lr_steps))
    ]
    every = max(1, len(measured) // 20)
    whole = lc.prediction(p, cfg)
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "block": name,
        "steps": len(measured),
        "batch": batch,
        "precision": cfg.precision,
        "optimizer": cfg.optimizer,
        "regularizer": "decoupled" if decoupled else "coupled",
        "lam": p.lam,
        "samples_per_s": batch * steps / seconds,
        "samples_per_s_bare": batch * steps / bare_seconds,
        "throughput_ratio": bare_seconds / seconds,  # lcbench's step / bare PyTorch's (1 = no overhead)
        "peak_memory_mib": peak,
        "peak_memory_mib_bare": bare_peak,
        "slope_measured": measured[-1],
        "slope_predicted": predicted[-1],
        "slope_difference": measured[-1] - predicted[-1],
        "trajectory": [
            {"step": i + 1, "lr": lrs[i], "measured": measured[i], "predicted": predicted[i]}
            for i in range(0, len(measured), every)
        ],
        "whole_run": {
            "steps": whole.steps if whole else None,
            "slope_predicted": whole.slope if whole else None,
            "folds": whole.folds if whole else None,
            "forced": p.force,
        },
    }


class _Dummy(torch.utils.data.Dataset):
    """Stands in for the data set the trainer's loader is built on (the rehearsal feeds its own batches)."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i):
        return torch.zeros(1), torch.zeros((), dtype=torch.long)


def rehearse(
    plans: list[Plan],
    steps: int = 200,
    device: str = "auto",
    budget_s: float = 480.0,
    batch: int | None = None,
) -> dict:
    """Every entry of every plan (`entries`), each given an equal share of `budget_s` (fewer steps where
    one step is slow, never fewer than min(steps, 10)); the document written to
    results/bench/rehearsal.json."""
    dev = resolve_device(device)
    runs = [(plan.source, cfg) for plan in plans for cfg in entries(plan)]
    if not runs:
        raise ConfigError(f"{', '.join(p.source for p in plans)}: no layercollapse run to rehearse")
    share, results = budget_s / len(runs), []
    with tempfile.TemporaryDirectory(prefix="lcbench-rehearsal-") as work:
        for source, cfg in runs:
            probe = rehearse_run(cfg, 2, dev, Path(work), batch)  # a few steps to size the real one
            per_step = probe["batch"] / probe["samples_per_s"] + probe["batch"] / probe["samples_per_s_bare"]
            fitted = max(min(steps, 10), min(steps, int(0.8 * share / max(per_step, 1e-9))))
            results.append({"spec": source, **rehearse_run(cfg, fitted, dev, Path(work), batch)})
    return {
        "specs": [plan.source for plan in plans],
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model(),
        "torch": torch.__version__,
        "steps_asked": steps,
        "batch": batch or "the recipe's",
        "budget_s": budget_s,
        "runs": results,
    }


def write(document: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, document)
    return path
