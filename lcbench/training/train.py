"""The one training loop every method runs on.

Per epoch: train (the method's loss hook, AMP, clipping, the per-step lr schedule, callbacks between
steps), `method.on_epoch_end`, evaluate, log, checkpoint. The checkpoint (`Checkpointer`, holding this
trainer's `state_dict()`) is everything needed to continue bit for bit on CPU; a restarted run resumes
from it automatically, mid-epoch included.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..core.config import RunConfig
from ..core.durations import format_duration
from ..core.errors import TrainingDiverged
from ..zoo.loaders import make_loader
from ..zoo.measure import count_macs
from . import distributed
from .checkpoint import Checkpointer
from .control import tunables
from .cost import flops_per_sample, forward_flops
from .evaluation import AMP_DTYPES
from .optim import build_optimizer, build_scheduler, lr_factor
from .phases import Phases
from .rng import rng_state, set_rng_state
from .tasks import TASKS

if TYPE_CHECKING:
    from ..methods import Method
    from .tracking import Tracker

log = logging.getLogger("lcbench")

# What `lcbench tune` may change: the run config fields declared tunable, plus the method's own (its Params).
TRAINER_TUNABLE = tunables(RunConfig)


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
    epoch_correct: float = 0  # samples right (a language model: the fraction of each sample's tokens)
    epoch_seen: int = 0
    epoch_seconds: float = 0.0


class Callback:
    """Something done between optimizer steps (`callbacks.py`: replay, live tuning).

    `wants_step(trainer)` is asked after every step and must be cheap (a comparison, a clock read); when
    it says yes, the trainer brings its counters up to date (a checkpoint taken now resumes at exactly this
    step) and calls `on_step(trainer)`. Time spent there is not counted as training time.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once the trainer has started or resumed, before the first step it takes."""

    def wants_step(self, trainer: Trainer) -> bool:
        return False

    def on_step(self, trainer: Trainer) -> None:
        """Called between two steps when `wants_step` said yes."""


class Trainer:
    """Trains `model` with `method`'s hooks for `cfg.epochs` on the method's run context (data, device,
    run folder), resuming from the run's checkpoint when there is one."""

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        callbacks: tuple[Callback, ...] = (),
        tracker: Tracker | None = None,
        progress_bar: bool = True,
    ) -> None:
        ctx = method.ctx
        self.cfg, self.run, self.device = ctx.cfg, ctx.run, ctx.device
        self.model, self.method, self.callbacks, self.tracker = model, method, list(callbacks), tracker
        self.progress_bar, self.input_shape = progress_bar, ctx.input_shape
        self.task, self.quality = TASKS[ctx.task], ctx.quality
        self.world = distributed.current()  # a DDP run: this rank trains on its share of each batch
        self.generator = torch.Generator().manual_seed(self.cfg.seed)  # the same order on every rank
        self.epoch_start_generator = self.generator.get_state()
        self.train_loader = make_loader(
            ctx.data.train,
            self.cfg.batch_size,
            True,
            self.cfg.workers,
            self.generator,
            self.device,
            self.world.rank,
            self.world.size,
        )
        self.batches = self.train_loader.batch_sampler
        self.steps_per_epoch = len(self.train_loader)
        self.amp = AMP_DTYPES[self.cfg.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.precision == "fp16")
        self.forward_model: nn.Module = model  # the model, or its DDP wrapper (gradients all-reduced)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.progress = Progress()
        self.live: dict[str, float] = {}  # values changed by `lcbench tune` (they outlive a resume)
        # resumes at another number of processes than the checkpoint's (they outlive a resume too)
        self.world_size_changes: list[dict] = []
        self.resumed_at_another_world_size = False
        self.tunable = {**TRAINER_TUNABLE, **tunables(type(method.params))}
        self.checkpointer = Checkpointer(self.run)
        self.phases = Phases()  # evaluations and checkpoints between epochs (`cost.phases`)
        self.forward_flops = 0.0
        self.original_flops = 0.0  # forward FLOPs of the original model, for a method that runs it (KD)
        if method.original_forward_passes:
            self.original_flops = forward_flops(count_macs(ctx.original, ctx.input_shape)["gmacs"])

    # -- the loop ---------------------------------------------------------------------------------------

    def fit(self) -> nn.Module:
        """Train to `cfg.epochs` (resuming if a checkpoint exists) and return the trained model."""
        if self.checkpointer.resume(self):
            p = self.progress
            self.run.log("resume", epoch=p.epoch, step=p.step, batch=p.batch)
            if self.resumed_at_another_world_size:
                self.run.log("world_size_changed", **self.world_size_changes[-1])
        else:  # a fresh start: events of an earlier attempt without a checkpoint go
            self.run.truncate_metrics(0)
            self.rebuild_optimizer()
            self.run.log("initial", epoch=0, step=0, **self.method.epoch_metrics(self.model))  # e.g. slopes
        for callback in self.callbacks:
            callback.on_fit_start(self)
        fit_started, first_epoch = time.perf_counter(), self.progress.epoch
        while self.progress.epoch < self.cfg.epochs:
            train_loss, train_top1, seconds = self.train_epoch()
            self.progress.epoch += 1
            start = time.perf_counter()
            if self.method.on_epoch_end(self.progress.epoch, self.model):  # the structure changed
                self.rebuild_optimizer()
            seconds += time.perf_counter() - start
            self.progress.train_seconds += seconds
            with self.phases.timed("evaluate"):
                val = self.method.ctx.evaluate(self.model)
                method_metrics = self.method.epoch_metrics(self.model)
            metrics = dict(
                epoch=self.progress.epoch,
                step=self.progress.step,
                lr=self.optimizer.param_groups[0]["lr"],
                train_loss=train_loss,
                train_top1=train_top1,
                **{f"val_{key}": value for key, value in val.items() if key not in ("samples", "tokens")},
                samples_seen=self.progress.samples,
                train_flops=self.progress.train_flops,  # cumulative, a KD teacher's forward included
                epoch_seconds=seconds,
                **method_metrics,
            )
            self.run.log("epoch", **metrics)
            per_epoch = (time.perf_counter() - fit_started) / (self.progress.epoch - first_epoch)
            if self.world.main:  # one line per epoch, not one per rank
                log.info(self._epoch_line(metrics, eta=per_epoch * (self.cfg.epochs - self.progress.epoch)))
            if self.tracker:
                self.tracker.log_epoch(metrics, set(method_metrics))
            with self.phases.timed("checkpoint"):
                self.save_checkpoint()
        return self.model

    def train_epoch(self) -> tuple[float, float | None, float]:
        """One epoch (or what is left of it after a mid-epoch resume): (train loss, train top-1, seconds
        spent training in it, across resumes)."""
        self.model.train()
        p = self.progress
        self.epoch_start_generator = self.generator.get_state()  # (a resume set it to this epoch's start)
        self.batches.skip = p.batch * self.cfg.batch_size  # the batches already trained on
        # this rank's running sums, on the device (no sync per step); a resumed epoch's sums count once
        self._loss_sum = torch.tensor(p.epoch_loss_sum if self.world.main else 0.0, device=self.device)
        self._correct = torch.tensor(
            p.epoch_correct if self.world.main else 0, dtype=self.task.correct_dtype, device=self.device
        )
        per_sample = flops_per_sample(
            self.forward_flops, self.original_flops, self.method.original_forward_passes
        )
        self._clock = time.perf_counter()
        for inputs, targets in self._with_progress_bar(self.train_loader):
            targets = targets.to(self.device, non_blocking=True)
            loss, logits = self.train_step(inputs, targets)
            batch = self.batches.global_batch(p.batch)  # every rank's samples of this step
            p.step, p.batch, p.samples, p.epoch_seen = (
                p.step + 1,
                p.batch + 1,
                p.samples + batch,
                p.epoch_seen + batch,
            )
            p.train_flops += per_sample * batch
            if self.method.on_step_end(p.step, self.steps_per_epoch * self.cfg.epochs, self.model):
                self.rebuild_optimizer()  # a fold mid-epoch (Layer Folding's post-fold phase in steps)
                per_sample = flops_per_sample(
                    self.forward_flops, self.original_flops, self.method.original_forward_passes
                )
            self._loss_sum += loss.detach() * len(targets)  # (a language model's loss is per token)
            correct = self.task.correct(logits, targets)
            if correct is not None:
                self._correct += correct
            due = [callback for callback in self.callbacks if callback.wants_step(self)]
            if due:
                self._bring_epoch_counters_up_to_date()
                for callback in due:
                    callback.on_step(self)
                self._clock = time.perf_counter()  # their time is not training time
        self._bring_epoch_counters_up_to_date()
        if self.world.size == 1:
            loss = (self._loss_sum / p.epoch_seen).item()  # (in the device's precision, as logged before)
        else:
            loss = p.epoch_loss_sum / p.epoch_seen
            distributed.sync_buffers(self.model)  # every rank evaluates (and rank 0 saves) rank 0's
        accuracy = 100.0 * p.epoch_correct / p.epoch_seen if self.task.has_accuracy else None
        result = loss, accuracy, p.epoch_seconds
        p.batch, p.epoch_loss_sum, p.epoch_correct, p.epoch_seen, p.epoch_seconds = 0, 0.0, 0, 0, 0.0
        return result

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch (targets already on the device): forward under AMP, the method's
        loss, backward, clipping, step, the method's after-step hook, the schedule. Returns loss, logits."""
        inputs = inputs.to(self.device, non_blocking=True)
        if self.cfg.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.forward_model(inputs)
            task_loss = self.task.loss(logits, targets, self.cfg.label_smoothing)
            loss = self.method.loss(task_loss, logits, inputs, targets, self.model)
        if not distributed.all_true(bool(torch.isfinite(loss)), self.device):  # all ranks stop together
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {self.progress.epoch + 1}, "
                f"step {self.progress.step} (lr {self.optimizer.param_groups[0]['lr']:.3g}); "
                "lower lr, enable grad_clip, or use fp32"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.world.size > 1:  # DDP averages gradients over ranks: weigh each by its share of the batch
            share = len(targets) * self.world.size / self.batches.global_batch(self.progress.batch)
            self.scaler.scale(loss * share).backward()
        else:
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

    def _bring_epoch_counters_up_to_date(self) -> None:
        """Copy the epoch's running sums into `progress` and bank the time since the last call (so what
        callbacks spend between steps is not training time, and a checkpoint now resumes exactly)."""
        p, now = self.progress, time.perf_counter()
        p.epoch_loss_sum, p.epoch_correct = self._loss_sum.item(), self._correct.item()
        if self.world.size > 1:  # the sums over every rank (rank 0's include the resumed part)
            loss_sum, correct = distributed.all_reduce_sum([p.epoch_loss_sum, p.epoch_correct], self.device)
            whole = self.task.correct_dtype == torch.long
            p.epoch_loss_sum, p.epoch_correct = loss_sum, round(correct) if whole else correct
        p.epoch_seconds += now - self._clock
        self._clock = now

    def _with_progress_bar(self, loader):
        """tqdm's own rate, in images/s (batches x batch size)."""
        return tqdm(
            loader,
            desc=f"epoch {self.progress.epoch + 1}/{self.cfg.epochs}",
            leave=False,
            disable=not self.progress_bar or not self.world.main,
            mininterval=1.0,
            unit="img",
            unit_scale=self.cfg.batch_size,
        )

    def _epoch_line(self, m: dict, eta: float) -> str:
        """One line per epoch whatever the output (terminal, queue log, SLURM log), as timm's train.py."""
        return (
            f"{self.run.run_id} epoch {m['epoch']}/{self.cfg.epochs}  lr {m['lr']:.3g}  "
            f"train loss {m['train_loss']:.4f}  {self._score_text(m[f'val_{self.quality}'])}  "
            f"{m['epoch_seconds']:.1f}s  "
            f"ETA {format_duration(eta)}"
        )

    def _score_text(self, score: float) -> str:
        return f"val top-1 {score:.2f}%" if self.quality == "top1" else f"val {self.quality} {score:.2f}"

    # -- state ------------------------------------------------------------------------------------------

    def rebuild_optimizer(self) -> None:
        """A fresh optimizer and schedule for the model as it is now (at the start, and after a method
        changed its structure), with the live-tuned values; its forward FLOPs counted again."""
        cfg = replace(self.cfg, **{k: v for k, v in self.live.items() if k in TRAINER_TUNABLE})
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch, self.progress.step)
        self.forward_model = self.model
        if self.world.size > 1:  # wrapped again for the current parameters (a method may change them)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids)
        self.forward_flops = forward_flops(count_macs(self.model, self.input_shape)["gmacs"])

    def save_checkpoint(self) -> None:
        self.checkpointer.save(self)

    def state_dict(self) -> dict:
        mid_epoch = self.progress.batch > 0  # then the loader restarts this epoch's order and skips ahead
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "rng": rng_state(),
            **({"rng_ranks": distributed.gather(rng_state())} if self.world.size > 1 else {}),
            "loader_generator": self.epoch_start_generator if mid_epoch else self.generator.get_state(),
            "method": self.method.state_dict(),
            "live": dict(self.live),
            "world_size": self.world.size,
            "world_size_changes": list(self.world_size_changes),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the method re-applies its structural changes first, so the
        model's weights, then the optimizer built for that structure, can load."""
        self.model = self.method.load_state_dict(state["method"], self.model)
        self.model.load_state_dict(state["model"])
        self.progress = Progress(**state["progress"])
        self.live = dict(state.get("live", {}))
        self._set_method_values(self.live)
        self.rebuild_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("rng_ranks")  # a DDP run's every rank (a different world size: rank 0's for all)
        set_rng_state(ranks[self.world.rank] if ranks and len(ranks) == self.world.size else state["rng"])
        self.generator.set_state(state["loader_generator"])
        self.world_size_changes = list(state.get("world_size_changes", []))
        saved = state.get("world_size", len(ranks) if ranks else 1)
        self.resumed_at_another_world_size = saved != self.world.size
        if (
            self.resumed_at_another_world_size
        ):  # the batches split otherwise from here: not the uninterrupted numbers
            p = self.progress
            change = {
                "epoch": p.epoch,
                "step": p.step,
                "batch": p.batch,
                "from": saved,
                "to": self.world.size,
            }
            self.world_size_changes.append(change)  # (logged by `fit`, once the resume's events are)

    # -- values changed while training (live tuning, replay) --------------------------------------------

    def current_value(self, key: str) -> float:
        if key in self.live:
            return self.live[key]
        return getattr(self.cfg, key) if key in TRAINER_TUNABLE else getattr(self.method.params, key)

    def set_value(self, key: str, value: float, requester: str) -> dict:
        """Apply one checked value of a tunable key in place, record it as a `tune` event, and return
        the change (step, epoch, key, old, new)."""
        old = self.current_value(key)
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
        elif key != "grad_clip":  # read at every step
            self._set_method_values({key: value})
        change = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "key": key,
            "old": old,
            "new": value,
        }
        self.run.log("tune", **change, requester=requester)
        if self.tracker:
            self.tracker.log({f"tune/{key}": value}, step=self.progress.step)
        return change

    def _set_method_values(self, values: dict) -> None:
        method_values = {k: v for k, v in values.items() if k not in TRAINER_TUNABLE}
        if method_values:
            self.method.params = replace(self.method.params, **method_values)
