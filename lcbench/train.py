"""The one training loop every method runs on.

Per epoch: train (method loss hook, AMP, clipping, per-step lr schedule), `method.on_epoch_end`, evaluate,
log, checkpoint. A checkpoint holds everything needed to continue bit for bit on CPU (model, optimizer,
scheduler, scaler, RNG and loader states, the method's state, and the length of metrics.jsonl at that
moment); a restarted run resumes from it automatically.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .config import RunConfig
from .errors import CheckpointError, TrainingDiverged
from .measure import count_macs
from .store import RunDir, atomic_torch_save

if TYPE_CHECKING:
    from .methods import Method
    from .tracking import Tracker

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------------------
# Building blocks


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
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
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "fp32") -> dict:
    """Top-1, top-5 (or top-k for fewer classes) and mean loss on a held-out loader."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    amp = AMP_DTYPES[precision]
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(inputs)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == targets).sum().item()
        correct5 += (top == targets[:, None]).any(dim=1).sum().item()
        total += targets.numel()
    model.train(was_training)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "loss": loss_sum / total}


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


class Trainer:
    """Trains `model` for `cfg.epochs` with `method`'s hooks, resuming from the run folder's checkpoint."""

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

    # -- state ------------------------------------------------------------------------------------------

    def _rebuild_optimizer(self) -> None:
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps_per_epoch, self.progress.step)
        self.forward_flops = 2e9 * count_macs(self.model, self.input_shape)["gmacs"]

    def save_checkpoint(self) -> None:
        atomic_torch_save(
            self.run.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "progress": asdict(self.progress),
                "rng": rng_state(),
                "loader_generator": self.generator.get_state(),
                "method": self.method.state_dict(),
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
        self.model = self.method.load_state_dict(ckpt["method"], self.model)
        self.model.load_state_dict(ckpt["model"])
        self.progress = Progress(**ckpt["progress"])
        self._rebuild_optimizer()
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["loader_generator"])
        self.run.truncate_metrics(ckpt["metrics_size"])
        self.run.log("resume", epoch=self.progress.epoch, step=self.progress.step)
        return True

    # -- loop -------------------------------------------------------------------------------------------

    def fit(self) -> nn.Module:
        """Train to `cfg.epochs` (resuming if a checkpoint exists) and return the trained model."""
        if not self._resume():
            self._rebuild_optimizer()
        while self.progress.epoch < self.cfg.epochs:
            start = time.perf_counter()
            train_loss, train_top1 = self._train_one_epoch()
            self.progress.epoch += 1
            if self.method.on_epoch_end(self.progress.epoch, self.model):
                self._rebuild_optimizer()
            elapsed = time.perf_counter() - start
            self.progress.train_seconds += elapsed
            val = evaluate(self.model, self.val_loader, self.device, self.cfg.precision)
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
                epoch_seconds=elapsed,
                **self.method.epoch_metrics(self.model),
            )
            self.run.log("epoch", **metrics)
            if self.tracker:
                self.tracker.log(metrics, step=self.progress.step)
            self.save_checkpoint()
        return self.model

    def _train_one_epoch(self) -> tuple[float, float]:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        flops_per_sample = 3 * self.forward_flops + self.method.extra_forward_flops_per_sample()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {self.progress.epoch + 1}/{self.cfg.epochs}",
            leave=False,
            disable=not self.progress_bar,
            mininterval=1.0,
        )
        start = time.perf_counter()
        for inputs, targets in bar:
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
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
            if self.cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            batch = targets.numel()
            self.progress.step += 1
            self.progress.samples += batch
            self.progress.train_flops += flops_per_sample * batch
            loss_sum += loss.detach() * batch
            correct += (logits.argmax(1) == targets).sum()
            seen += batch
            if self.progress_bar:
                bar.set_postfix(
                    loss=f"{loss.item():.3f}", samples_s=f"{seen / (time.perf_counter() - start):.0f}"
                )
        return (loss_sum / seen).item(), 100.0 * correct.item() / seen
