"""The optimizer and the per-step learning-rate schedule every method trains with."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.config import RunConfig


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
    """Multiplier of the base lr at `step`: linear warm-up, then cosine or linear decay to zero, step decay
    (x `step_gamma` every `step_steps` steps or `step_epochs` epochs after the warm-up) or constant.

    With `lr_cycle_epochs` the warm-up and cosine restart every that many epochs.
    """
    cycle = (cfg.lr_cycle_epochs or cfg.epochs) * steps_per_epoch
    pos = step % cycle if cfg.lr_cycle_epochs else step
    warmup = cfg.warmup_steps or cfg.warmup_epochs * steps_per_epoch
    if pos < warmup:
        return (pos + 1) / warmup
    total = max(cycle - warmup, 1)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(pos - warmup, total) / total))
    if cfg.lr_schedule == "linear":
        return max(0.0, 1 - (pos - warmup) / total)
    if cfg.lr_schedule == "step":  # counted from the warm-up's end: no jump when it ends
        return cfg.step_gamma ** ((pos - warmup) // (cfg.step_steps or cfg.step_epochs * steps_per_epoch))
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
