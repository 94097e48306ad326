"""The one training loop every method runs on.

Per epoch: train (method loss hook, AMP, clipping, per-step lr schedule), `method.on_epoch_end`, evaluate,
log, checkpoint. A checkpoint holds everything needed to continue bit for bit on CPU (model, optimizer,
scheduler, scaler, RNG and loader states, the method's state, and the length of metrics.jsonl at that
moment); a restarted run resumes from it automatically.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from .config import RunConfig
from .control import TRIGGERS, ControlChannel, tunables
from .cost import flops_per_sample, forward_flops
from .durations import format_duration
from .errors import CheckpointError, ConfigError, LcbenchError, RunStopped, TrainingDiverged
from .evaluation import AMP_DTYPES, evaluate
from .measure import count_macs
from .store import RunDir, atomic_torch_save

if TYPE_CHECKING:
    from .methods import Method
    from .tracking import Tracker

log = logging.getLogger("lcbench")


# --------------------------------------------------------------------------------------------------------
# Building blocks


class ResumableRandomSampler(Sampler[int]):
    """A random permutation per epoch (from `generator`) that can start part-way through, so a run
    resumed from a mid-epoch checkpoint sees exactly the batches it had not seen yet."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator, self.skip = size, generator, 0

    def __iter__(self):
        order = torch.randperm(self.size, generator=self.generator).tolist()
        start, self.skip = self.skip, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.size - self.skip


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> DataLoader:
    sampler = ResumableRandomSampler(len(dataset), generator) if shuffle and generator is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=device is not None and device.type == "cuda",
        drop_last=False,
        persistent_workers=workers > 0,
    )


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay on matrices and kernels only (not biases, norms or PReLU slopes)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, cfg: RunConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at `step`: linear warm-up, then cosine to zero, step decay or constant.

    With `lr_cycle_epochs` the warm-up and cosine restart every that many epochs.
    """
    cycle = (cfg.lr_cycle_epochs or cfg.epochs) * steps_per_epoch
    pos = step % cycle if cfg.lr_cycle_epochs else step
    warmup = cfg.warmup_epochs * steps_per_epoch
    if pos < warmup:
        return (pos + 1) / warmup
    if cfg.lr_schedule == "cosine":
        total = max(cycle - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(pos - warmup, total) / total))
    if cfg.lr_schedule == "step":
        return cfg.step_gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int, step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR positioned at `step` (torch's own resume convention: last_epoch = step - 1)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg, steps_per_epoch), last_epoch=step - 1
    )


@torch.no_grad()
def _first_line(error: BaseException, limit: int = 160) -> str:
    """An error's first line, shortened (state-dict errors list every key over many lines)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class Progress:
    """Counters that survive a resume."""

    epoch: int = 0  # epochs completed
    step: int = 0
    samples: int = 0
    train_flops: float = 0.0
    train_seconds: float = 0.0
    batch: int = 0  # batches done in the current epoch (a mid-epoch checkpoint resumes after them)
    epoch_loss_sum: float = 0.0
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0


# What `lcbench tune` may change: the run config fields declared tunable, plus the method's own (its Params).
# Bounded: a value that is finite but absurd (lr=1e308) would be checkpointed and fail every resume.
TRAINER_TUNABLE = tunables(RunConfig)


class Trainer:
    """Trains `model` for `cfg.epochs` with `method`'s hooks, resuming from the run folder's checkpoint.

    Between steps it serves `lcbench tune` requests (at most one look at the control folder per second)
    and, for `lcbench replay`, applies recorded changes at their recorded steps.
    """

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        method: Method,
        train_set: Dataset,
        val_loader: DataLoader,
        run: RunDir,
        device: torch.device,
        input_shape: tuple[int, ...],
        progress_bar: bool = True,
        tracker: Tracker | None = None,
        scheduled_changes: list[dict] | None = None,
    ) -> None:
        self.cfg, self.model, self.method, self.run, self.tracker = cfg, model, method, run, tracker
        self.device, self.input_shape, self.progress_bar = device, input_shape, progress_bar
        self.val_loader = val_loader
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.train_loader = make_loader(train_set, cfg.batch_size, True, cfg.workers, self.generator, device)
        self.steps_per_epoch = len(self.train_loader)
        self.amp = AMP_DTYPES[cfg.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.progress = Progress()
        self.optimizer = self.scheduler = None
        self.forward_flops = 0.0
        self.original_flops = 0.0  # forward FLOPs of the original model, for a method that runs it (KD)
        if method.original_forward_passes:
            self.original_flops = forward_flops(count_macs(method.ctx.original, input_shape)["gmacs"])
        self.epoch_start_generator = self.generator.get_state()
        self.live: dict[str, float] = {}  # values changed by `lcbench tune` (they outlive a resume)
        self.tunable = {**TRAINER_TUNABLE, **tunables(type(method.params))}
        self.scheduled = sorted(scheduled_changes or [], key=lambda c: c["step"])  # replay
        self.control = ControlChannel(run.path)

    # -- state ------------------------------------------------------------------------------------------

    def rebuild_optimizer(self) -> None:
        """A fresh optimizer and schedule for the model as it is now (at the start, and after a method
        changed its structure), with the live-tuned values; its forward FLOPs counted again."""
        cfg = replace(self.cfg, **{k: v for k, v in self.live.items() if k in TRAINER_TUNABLE})
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch, self.progress.step)
        self.forward_flops = forward_flops(count_macs(self.model, self.input_shape)["gmacs"])

    def save_checkpoint(self) -> None:
        mid_epoch = self.progress.batch > 0  # then the loader restarts this epoch's order and skips ahead
        atomic_torch_save(
            self.run.checkpoint_path,
            {
                "run_id": self.run.run_id,  # a checkpoint copied into another run's folder is refused
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "progress": asdict(self.progress),
                "rng": rng_state(),
                "loader_generator": self.epoch_start_generator if mid_epoch else self.generator.get_state(),
                "method": self.method.state_dict(),
                "live": dict(self.live),
                "metrics_size": self.run.metrics_size(),
            },
        )

    def _resume(self) -> bool:
        path = self.run.checkpoint_path
        if not path.exists():
            return False
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure means the file is unusable
            raise CheckpointError(
                f"the run's checkpoint {path} cannot be read ({e}); delete it to restart the run from scratch"
            ) from e
        written_by = ckpt.get("run_id") if isinstance(ckpt, dict) else None
        if written_by is not None and written_by != self.run.run_id:
            raise CheckpointError(
                f"the checkpoint {path} was written by run {written_by}, not by run {self.run.run_id} whose "
                "folder holds it (copied?); delete it to restart this run from scratch"
            )
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError, LcbenchError) as e:  # not this run's state
            why = f"{type(e).__name__}: {_first_line(e)}"
            raise CheckpointError(
                f"the checkpoint {path} does not fit run {self.run.run_id} ({why}); "
                "delete it to restart the run from scratch"
            ) from e
        self.run.log("resume", epoch=self.progress.epoch, step=self.progress.step, batch=self.progress.batch)
        return True

    def _restore(self, ckpt: dict) -> None:
        self.model = self.method.load_state_dict(ckpt["method"], self.model)
        self.model.load_state_dict(ckpt["model"])
        self.progress = Progress(**ckpt["progress"])
        self.live = dict(ckpt.get("live", {}))
        self._apply_method_values(self.live)
        self.rebuild_optimizer()
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["loader_generator"])
        self.run.truncate_metrics(ckpt["metrics_size"])

    # -- loop -------------------------------------------------------------------------------------------

    def fit(self) -> nn.Module:
        """Train to `cfg.epochs` (resuming if a checkpoint exists) and return the trained model."""
        if not self._resume():  # a fresh start: events of an earlier attempt without a checkpoint go
            self.run.truncate_metrics(0)
            self.rebuild_optimizer()
            self.run.log("initial", epoch=0, step=0, **self.method.epoch_metrics(self.model))  # e.g. slopes
        self.scheduled = [c for c in self.scheduled if c["step"] > self.progress.step]
        fit_started, first_epoch = time.perf_counter(), self.progress.epoch
        while self.progress.epoch < self.cfg.epochs:
            train_loss, train_top1, elapsed = self.train_epoch()
            self.progress.epoch += 1
            start = time.perf_counter()
            if self.method.on_epoch_end(self.progress.epoch, self.model):
                self.rebuild_optimizer()
            elapsed += time.perf_counter() - start
            self.progress.train_seconds += elapsed
            val = evaluate(self.model, self.val_loader, self.device, self.cfg.precision)
            method_metrics = self.method.epoch_metrics(self.model)
            metrics = dict(
                epoch=self.progress.epoch,
                step=self.progress.step,
                lr=self.optimizer.param_groups[0]["lr"],
                train_loss=train_loss,
                train_top1=train_top1,
                val_top1=val["top1"],
                val_top5=val["top5"],
                val_loss=val["loss"],
                samples_seen=self.progress.samples,
                train_flops=self.progress.train_flops,  # cumulative, a KD teacher's forward included
                epoch_seconds=elapsed,
                **method_metrics,
            )
            self.run.log("epoch", **metrics)
            per_epoch = (time.perf_counter() - fit_started) / (self.progress.epoch - first_epoch)
            log.info(self._epoch_line(metrics, eta=per_epoch * (self.cfg.epochs - self.progress.epoch)))
            if self.tracker:
                self.tracker.log_epoch(metrics, set(method_metrics))
            self.save_checkpoint()
        return self.model

    def _epoch_line(self, m: dict, eta: float) -> str:
        """One line per epoch whatever the output (terminal, queue log, SLURM log), as timm's train.py."""
        done, total = m["epoch"], self.cfg.epochs
        return (
            f"{self.run.run_id} epoch {done}/{total}  lr {m['lr']:.3g}  train loss {m['train_loss']:.4f}  "
            f"val top-1 {m['val_top1']:.2f}%  {m['epoch_seconds']:.1f}s  ETA {format_duration(eta)}"
        )

    def train_epoch(self) -> tuple[float, float, float]:
        """(train loss, train top-1, seconds spent training this epoch, across resumes)."""
        self.model.train()
        p = self.progress
        self.epoch_start_generator = self.generator.get_state()  # (a resume set it to this epoch's start)
        if p.batch:  # resumed mid-epoch: skip the batches already trained on
            self.train_loader.sampler.skip = p.batch * self.cfg.batch_size
        loss_sum = torch.tensor(p.epoch_loss_sum, device=self.device)
        correct = torch.tensor(p.epoch_correct, device=self.device, dtype=torch.long)
        per_sample = flops_per_sample(
            self.forward_flops, self.original_flops, self.method.original_forward_passes
        )
        bar = tqdm(  # tqdm's own rate, in images/s (batches x batch size)
            self.train_loader,
            desc=f"epoch {p.epoch + 1}/{self.cfg.epochs}",
            leave=False,
            disable=not self.progress_bar,
            mininterval=1.0,
            unit="img",
            unit_scale=self.cfg.batch_size,
        )
        start = time.perf_counter()
        for inputs, targets in bar:
            targets = targets.to(self.device, non_blocking=True)
            loss, logits = self.train_step(inputs, targets)
            batch = targets.numel()
            p.step += 1
            p.batch += 1
            p.samples += batch
            p.train_flops += per_sample * batch
            loss_sum += loss.detach() * batch
            correct += (logits.argmax(1) == targets).sum()
            p.epoch_seen += batch
            if self.progress_bar:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if (self.scheduled and self.scheduled[0]["step"] == p.step) or self.control.due():
                p.epoch_loss_sum, p.epoch_correct = loss_sum.item(), int(correct.item())
                p.epoch_seconds += time.perf_counter() - start
                start = time.perf_counter()
                self._between_steps()
        seen, seconds = p.epoch_seen, p.epoch_seconds + time.perf_counter() - start
        p.batch, p.epoch_loss_sum, p.epoch_correct, p.epoch_seen, p.epoch_seconds = 0, 0.0, 0, 0, 0.0
        return (loss_sum / seen).item(), 100.0 * correct.item() / seen, seconds

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch (targets already on the device): forward under AMP, the method's
        loss, backward, clipping, step, the method's after-step hook, the schedule. Returns loss, logits."""
        inputs = inputs.to(self.device, non_blocking=True)
        if self.cfg.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.model(inputs)
            task_loss = F.cross_entropy(logits, targets, label_smoothing=self.cfg.label_smoothing)
            loss = self.method.loss(task_loss, logits, inputs, targets, self.model)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {self.progress.epoch + 1}, "
                f"step {self.progress.step} (lr {self.optimizer.param_groups[0]['lr']:.3g}); "
                "lower lr, enable grad_clip, or use fp32"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.live.get("grad_clip", self.cfg.grad_clip)
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.method.after_step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss, logits

    # -- live control -----------------------------------------------------------------------------------

    def _between_steps(self) -> None:
        """Apply the recorded changes due at this step (replay), then serve every pending tune request
        with one checkpoint for all of them (requests are coalesced per look)."""
        while self.scheduled and self.scheduled[0]["step"] == self.progress.step:
            change = self.scheduled.pop(0)
            self._set(change["key"], change["new"], change.get("requester", "replay"))
        accepted, stop = [], None
        for path, request, problem in self.control.pending():
            ack = self._serve(path, request, problem)
            if ack is not None:
                accepted.append((path, request, ack))
                if request.get("trigger") == "stop":
                    stop = f"stopped on request at step {self.progress.step} ({ack['requester']})"
                    break  # later requests wait for the resumed run
        if accepted:  # one checkpoint makes every accepted change durable (a killed run resumes with them)
            self.save_checkpoint()
            for path, request, ack in accepted:
                self.control.answer(path, request, {**ack, "checkpoint": str(self.run.checkpoint_path)})
        self.control.clean_acks()
        if stop:
            raise RunStopped(stop)

    def _serve(self, path, request: dict | None, problem: str) -> dict | None:
        """Apply one request; returns its ack, or None when it was refused (and answered). Any error
        while serving refuses that request alone: a request can never kill the run."""
        who = str((request or {}).get("requester", "?"))[:200]
        if not problem:
            try:
                return self._apply_request(request, who)
            except ConfigError as e:  # nothing is applied when any value is refused
                problem = str(e)
            except Exception as e:  # noqa: BLE001 - whatever a request holds, the run goes on
                problem = f"{type(e).__name__}: {e}"[:500]
        self.run.log("tune_rejected", step=self.progress.step, reason=problem, requester=who, file=path.name)
        self.control.answer(path, request, {"accepted": False, "reason": problem})
        return None

    def _apply_request(self, request: dict, who: str) -> dict:
        values = request.get("set") or {}
        checked = {key: self._check(key, value) for key, value in values.items()}
        changes = [self._set(key, value, who) for key, value in checked.items()]
        ack = {
            "accepted": True,
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "changes": changes,
            "requester": who,
        }
        trigger = request.get("trigger")
        if trigger == "eval":
            ack["eval"] = self._eval_now()
        if trigger:
            self.run.log(
                "trigger", step=self.progress.step, epoch=self.progress.epoch, trigger=trigger, requester=who
            )
        return ack

    def _check(self, key: str, value) -> float:
        if key not in self.tunable:
            raise ConfigError(
                f"{key} is not live-tunable here; tunable: {', '.join(sorted(self.tunable))} "
                f"(triggers: {', '.join(TRIGGERS)})"
            )
        if key == "momentum" and self.cfg.optimizer != "sgd":
            raise ConfigError("momentum is live-tunable with optimizer=sgd only")
        return self.tunable[key].coerce(key, value)

    def _current(self, key: str) -> float:
        if key in self.live:
            return self.live[key]
        if key in TRAINER_TUNABLE:
            return getattr(self.cfg, key)
        return getattr(self.method.params, key)

    def _set(self, key: str, value: float, who: str) -> dict:
        """Apply one checked value in place, record it, and return the change."""
        old = self._current(key)
        self.live[key] = value
        if key == "lr":  # the new base lr; the schedule's factor at this step still applies
            factor = lr_factor(self.scheduler.last_epoch, self.cfg, self.steps_per_epoch)
            for i, group in enumerate(self.optimizer.param_groups):
                group["initial_lr"] = value
                self.scheduler.base_lrs[i] = value
                group["lr"] = value * factor
        elif key == "weight_decay":  # the decayed group only: biases, norms and slopes stay at 0
            self.optimizer.param_groups[0]["weight_decay"] = value
        elif key == "momentum":
            for group in self.optimizer.param_groups:
                group["momentum"] = value
        elif key != "grad_clip":
            self._apply_method_values({key: value})
        change = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "key": key,
            "old": old,
            "new": value,
        }
        self.run.log("tune", **change, requester=who)
        if self.tracker:
            self.tracker.log({f"tune/{key}": value}, step=self.progress.step)
        return change

    def _apply_method_values(self, values: dict) -> None:
        method_values = {k: v for k, v in values.items() if k not in TRAINER_TUNABLE}
        if method_values:
            self.method.params = replace(self.method.params, **method_values)

    def _eval_now(self) -> dict:
        """Evaluate on the held-out set without disturbing the training RNG (replays stay exact)."""
        state = rng_state()
        result = evaluate(self.model, self.val_loader, self.device, self.cfg.precision)
        set_rng_state(state)
        self.run.log("eval", step=self.progress.step, epoch=self.progress.epoch, **result)
        return result
