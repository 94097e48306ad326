"""What a data set asks of a model: its training loss, its held-out metrics and its headline metric.

- `classification` (images, GLUE's classification tasks): cross-entropy; top-1 (= accuracy), top-5, and for
  two classes F1 of class 1 and Matthews correlation (GLUE's metrics for MRPC/QQP and CoLA);
- `regression` (GLUE's STS-B): mean squared error on one output; Pearson and Spearman correlation;
- `language_modeling` (GPT-2): next-token cross-entropy per token; perplexity = exp(mean token loss),
  next-token top-1 accuracy.

A DDP run's ranks each evaluate their share of the held-out set; sums are all-reduced and a regression's
predictions gathered, so every sample counts once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed

IGNORE_INDEX = -100  # a target token that is not scored (padding)


@dataclass(frozen=True)
class Quality:
    """A headline metric: its record key, how tables and plots name it, and which way is better."""

    key: str
    label: str
    latex: tuple[str, str]  # two LaTeX header lines
    higher_is_better: bool = True
    unit: str = "pp"  # what a difference of it is measured in (percentage points, or the metric's units)


QUALITIES = {
    "top1": Quality("top1", "Top-1 (%)", ("Top-1", "(\\%)")),
    "f1": Quality("f1", "F1 (%)", ("F1", "(\\%)")),
    "mcc": Quality("mcc", "MCC (x100)", ("MCC", "($\\times$100)"), unit="points"),
    "pearson": Quality("pearson", "Pearson (x100)", ("Pearson", "($\\times$100)"), unit="points"),
    "perplexity": Quality("perplexity", "Perplexity", ("Perplexity", ""), higher_is_better=False, unit=""),
}


class Task(ABC):
    """One kind of task; `TASKS` holds the three implemented ones."""

    name = ""
    metrics: tuple[str, ...] = ()  # what `evaluate` returns besides loss and samples
    correct_dtype = torch.float64  # `correct` sums fractions (whole counts: torch.long)
    has_accuracy = True  # a training accuracy is logged (not for a regression)

    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """The training loss of a batch."""

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """Per-sample fraction right, summed over the batch (training accuracy); None: no such notion."""
        return None

    @abstractmethod
    def evaluate(self, model: nn.Module, loader, device: torch.device, amp: torch.dtype | None) -> dict:
        """The task's metrics, the mean loss and the sample count over a held-out loader."""


def _outputs(model, loader, device, amp):
    """(logits in float32, targets) of every held-out batch on this rank."""
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(inputs)
        yield logits.float(), targets


class Classification(Task):
    name = "classification"
    metrics = ("top1", "top5")
    correct_dtype = torch.long

    def loss(self, logits, targets, label_smoothing=0.0):
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    def correct(self, logits, targets):
        return (logits.argmax(1) == targets).sum()

    def evaluate(self, model, loader, device, amp):
        correct1 = correct5 = total = 0
        loss_sum = 0.0
        confusion = torch.zeros(2, 2, dtype=torch.long)  # [target, prediction] for two classes
        for logits, targets in _outputs(model, loader, device, amp):
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == targets).sum().item()
            correct5 += (top == targets[:, None]).any(dim=1).sum().item()
            total += targets.numel()
            if logits.shape[1] == 2:
                confusion += torch.bincount((targets * 2 + top[:, 0]).cpu(), minlength=4).reshape(2, 2)
        binary = [int(v) for v in confusion.flatten()]
        loss_sum, correct1, correct5, total, *binary = distributed.all_reduce_sum(
            [loss_sum, correct1, correct5, total, *binary], device
        )
        result = {
            "top1": 100.0 * correct1 / total,
            "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total,
            "samples": int(total),
        }
        if any(binary):
            result.update(_binary_metrics(*binary))
        return result


def _binary_metrics(tn: float, fp: float, fn: float, tp: float) -> dict:
    """F1 of class 1 and Matthews correlation (x100) from the confusion counts."""
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return {"f1": 100.0 * f1, "mcc": 100.0 * mcc}


class Regression(Task):
    name = "regression"
    metrics = ("pearson", "spearman")
    has_accuracy = False

    def loss(self, logits, targets, label_smoothing=0.0):
        return F.mse_loss(logits.squeeze(-1), targets.float())

    def evaluate(self, model, loader, device, amp):
        from scipy.stats import pearsonr, spearmanr

        pairs = [
            (logits.squeeze(-1).cpu(), targets.float().cpu())
            for logits, targets in _outputs(model, loader, device, amp)
        ]
        shares = distributed.gather(pairs)  # every rank's predictions (in rank order) on every rank
        predictions = torch.cat([p for share in shares for p, _ in share]).double()
        targets = torch.cat([t for share in shares for _, t in share]).double()
        return {
            "pearson": 100.0 * float(pearsonr(predictions, targets).statistic),
            "spearman": 100.0 * float(spearmanr(predictions, targets).statistic),
            "loss": float(F.mse_loss(predictions, targets)),
            "samples": len(targets),
        }


class LanguageModeling(Task):
    name = "language_modeling"
    metrics = ("perplexity", "top1")

    def loss(self, logits, targets, label_smoothing=0.0):
        return F.cross_entropy(
            logits.flatten(0, 1),
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=label_smoothing,
        )

    def correct(self, logits, targets):
        scored = targets != IGNORE_INDEX
        right = (logits.argmax(-1) == targets) & scored
        return (right.sum(1) / scored.sum(1).clamp(min=1)).sum()

    def evaluate(self, model, loader, device, amp):
        loss_sum = 0.0
        correct = tokens = samples = 0
        for logits, targets in _outputs(model, loader, device, amp):
            flat = targets.flatten()
            loss_sum += F.cross_entropy(
                logits.flatten(0, 1), flat, ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            scored = flat != IGNORE_INDEX
            correct += ((logits.flatten(0, 1).argmax(1) == flat) & scored).sum().item()
            tokens += scored.sum().item()
            samples += len(targets)
        loss_sum, correct, tokens, samples = distributed.all_reduce_sum(
            [loss_sum, correct, tokens, samples], device
        )
        loss = loss_sum / tokens
        return {
            "perplexity": math.exp(loss),
            "top1": 100.0 * correct / tokens,
            "loss": loss,
            "tokens": int(tokens),
            "samples": int(samples),
        }


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), LanguageModeling())}
