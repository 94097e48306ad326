"""Held-out evaluation under the run's precision: one function shared by the trainer, the methods (through
`RunContext.evaluate`) and `lcbench collapse`; what is measured is the data set's task's (`tasks`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .tasks import TASKS

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def examine(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: str = "fp32",
    task: str = "classification",
) -> tuple[dict, dict[str, np.ndarray]]:
    """(the task's metrics, every held-out example's outcome) of `model` on a held-out loader."""
    was_training = model.training
    model.eval()
    try:
        outcomes = TASKS[task].outcomes(model, loader, device, AMP_DTYPES[precision])
    finally:
        model.train(was_training)
    return TASKS[task].metrics_of(outcomes), outcomes


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: str = "fp32",
    task: str = "classification",
) -> dict:
    """The task's metrics (classification: top-1, top-5 or top-k for fewer classes), the mean loss and the
    sample count on a held-out loader."""
    return examine(model, loader, device, precision, task)[0]
