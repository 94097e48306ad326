"""Held-out evaluation (top-1, top-5, loss) under the run's precision: one function shared by the trainer,
the methods (through `RunContext.evaluate`) and `lcbench collapse`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import distributed

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, precision: str = "fp32") -> dict:
    """Top-1, top-5 (or top-k for fewer classes), mean loss and sample count on a held-out loader."""
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
    # a DDP run: each rank evaluated its own share of the held-out set; the sums cover every sample once
    loss_sum, correct1, correct5, total = distributed.all_reduce_sum(
        [loss_sum, correct1, correct5, total], device
    )
    return {
        "top1": 100.0 * correct1 / total,
        "top5": 100.0 * correct5 / total,
        "loss": loss_sum / total,
        "samples": int(total),
    }
