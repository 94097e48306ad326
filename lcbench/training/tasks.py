"""What a data set asks of a model: its training loss, its held-out metrics and its headline metric.

- `classification` (images, GLUE's classification tasks): cross-entropy; top-1 (= accuracy), top-5, and for
  two classes F1 of class 1 and Matthews correlation (GLUE's metrics for MRPC/QQP and CoLA);
- `regression` (GLUE's STS-B): mean squared error on one output; Pearson and Spearman correlation;
- `language_modeling` (GPT-2): next-token cross-entropy per token; perplexity = exp(mean token loss),
  next-token top-1 accuracy.

A DDP run's ranks each evaluate their share of the held-out set; the per-example outcomes are gathered,
so every sample counts once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import nn

from ..zoo.text_data import IGNORE_INDEX
from . import distributed


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
    """One kind of task; `TASKS` holds the three implemented ones.

    Evaluation keeps every held-out example's outcome (`outcomes`: numpy arrays in data set order, a DDP
    run's ranks gathered) and computes the metrics from them (`metrics`), so the per-example file a run
    stores is exactly what its metrics were computed from. `columns` gives a metric as per-example values
    whose sums determine it (`from_sums`): what the verdicts' bootstrap resamples.
    """

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
    def batch_outcomes(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each sample's outcome in one held-out batch (one entry per sample, on the CPU)."""

    @abstractmethod
    def metrics_of(self, outcomes: dict[str, np.ndarray]) -> dict:
        """The task's metrics, the mean loss and the sample count, from the per-example outcomes."""

    @abstractmethod
    def columns(self, outcomes: dict[str, np.ndarray], metric: str) -> np.ndarray:
        """(samples, k) per-example values whose column sums determine `metric` (`from_sums`)."""

    @abstractmethod
    def from_sums(self, metric: str, sums: np.ndarray, samples: int) -> np.ndarray:
        """`metric` from `columns` summed over (resampled) examples: sums (..., k) -> (...)."""

    def outcomes(self, model: nn.Module, loader, device: torch.device, amp: torch.dtype | None) -> dict:
        """Every held-out example's outcome, in data set order (a DDP run: every rank's share, in rank
        order, on every rank: the ranks hold contiguous shares)."""
        parts: dict[str, list[torch.Tensor]] = {}
        for logits, targets in _outputs(model, loader, device, amp):
            for key, value in self.batch_outcomes(logits, targets).items():
                parts.setdefault(key, []).append(value)
        local = {key: torch.cat(values).numpy() for key, values in parts.items()}
        shares = distributed.gather(local)  # (a rank whose share is empty sends nothing: keys from all)
        keys = dict.fromkeys(key for share in shares for key in share)
        return {key: np.concatenate([share[key] for share in shares if key in share]) for key in keys}

    def evaluate(self, model: nn.Module, loader, device: torch.device, amp: torch.dtype | None) -> dict:
        """The task's metrics, the mean loss and the sample count over a held-out loader."""
        return self.metrics_of(self.outcomes(model, loader, device, amp))


def _outputs(model, loader, device, amp):
    """(logits in float32, targets) of every held-out batch on this rank."""
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(inputs)
        yield logits.float(), targets


def _sum(values: np.ndarray) -> float:
    return float(np.sum(values, dtype=np.float64))


class Classification(Task):
    """Per example: target, predicted class, whether the target is in the top 5, cross-entropy; and the
    number of classes (F1 and MCC are reported for two)."""

    name = "classification"
    metrics = ("top1", "top5")
    correct_dtype = torch.long

    def loss(self, logits, targets, label_smoothing=0.0):
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)

    def correct(self, logits, targets):
        return (logits.argmax(1) == targets).sum()

    def batch_outcomes(self, logits, targets):
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return {
            "target": targets.to(torch.int32).cpu(),
            "predicted": top[:, 0].to(torch.int32).cpu(),
            "top5": (top == targets[:, None]).any(dim=1).cpu(),
            "loss": F.cross_entropy(logits, targets, reduction="none").cpu(),
            "classes": torch.full((len(targets),), logits.shape[1], dtype=torch.int32),
        }

    def metrics_of(self, outcomes):
        target, predicted = outcomes["target"], outcomes["predicted"]
        total = len(target)
        result = {
            "top1": 100.0 * int((predicted == target).sum()) / total,
            "top5": 100.0 * int(outcomes["top5"].sum()) / total,
            "loss": _sum(outcomes["loss"]) / total,
            "samples": int(total),
        }
        if total and int(outcomes["classes"][0]) == 2:
            result.update(_binary_metrics(*self.columns(outcomes, "confusion").sum(0)))
        return result

    def columns(self, outcomes, metric):
        target, predicted = outcomes["target"], outcomes["predicted"]
        if metric == "top1":
            return (predicted == target).astype(np.float64)[:, None]
        if metric == "top5":
            return outcomes["top5"].astype(np.float64)[:, None]
        if metric in ("f1", "mcc", "confusion"):  # tn, fp, fn, tp indicators
            cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
            return np.stack([(target == t) & (predicted == p) for t, p in cells], axis=1).astype(np.float64)
        raise KeyError(f"classification has no per-example form of {metric!r}")

    def from_sums(self, metric, sums, samples):
        if metric in ("top1", "top5"):
            return 100.0 * sums[..., 0] / samples
        tn, fp, fn, tp = (sums[..., i] for i in range(4))
        if metric == "f1":
            return np.where(tp > 0, 200.0 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.where(
            denominator > 0, 100.0 * (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1), 0.0
        )


def _binary_metrics(tn: float, fp: float, fn: float, tp: float) -> dict:
    """F1 of class 1 and Matthews correlation (x100) from the confusion counts."""
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return {"f1": 100.0 * float(f1), "mcc": 100.0 * float(mcc)}


class Regression(Task):
    """Per example: the prediction and the target."""

    name = "regression"
    metrics = ("pearson", "spearman")
    has_accuracy = False

    def loss(self, logits, targets, label_smoothing=0.0):
        return F.mse_loss(logits.squeeze(-1), targets.float())

    def batch_outcomes(self, logits, targets):
        return {"prediction": logits.squeeze(-1).double().cpu(), "target": targets.double().cpu()}

    def metrics_of(self, outcomes):
        predictions, targets = outcomes["prediction"], outcomes["target"]
        return {
            "pearson": 100.0 * float(pearsonr(predictions, targets).statistic),
            "spearman": 100.0 * float(spearmanr(predictions, targets).statistic),
            "loss": float(np.mean((predictions - targets) ** 2)),
            "samples": len(targets),
        }

    def columns(self, outcomes, metric):
        if metric != "pearson":
            raise KeyError(f"regression has no per-example form of {metric!r} (Pearson has one)")
        x, y = outcomes["prediction"], outcomes["target"]
        return np.stack([x, y, x * x, y * y, x * y], axis=1)

    def from_sums(self, metric, sums, samples):
        sx, sy, sxx, syy, sxy = (sums[..., i] for i in range(5))
        covariance = sxy - sx * sy / samples
        spread = np.sqrt(np.maximum(sxx - sx * sx / samples, 0) * np.maximum(syy - sy * sy / samples, 0))
        return np.where(spread > 0, 100.0 * covariance / np.where(spread > 0, spread, 1), 0.0)


class LanguageModeling(Task):
    """Per sample (a block or window of tokens): its summed token loss, scored tokens, tokens right."""

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

    def batch_outcomes(self, logits, targets):
        losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        scored = targets != IGNORE_INDEX
        return {
            "loss": losses.double().sum(1).cpu(),
            "tokens": scored.sum(1).to(torch.int32).cpu(),
            "correct": ((logits.argmax(-1) == targets) & scored).sum(1).to(torch.int32).cpu(),
        }

    def metrics_of(self, outcomes):
        tokens = int(outcomes["tokens"].sum())
        loss = _sum(outcomes["loss"]) / tokens
        return {
            "perplexity": math.exp(loss),
            "top1": 100.0 * int(outcomes["correct"].sum()) / tokens,
            "loss": loss,
            "tokens": tokens,
            "samples": len(outcomes["tokens"]),
        }

    def columns(self, outcomes, metric):
        if metric == "perplexity":
            return np.stack([outcomes["loss"], outcomes["tokens"].astype(np.float64)], axis=1)
        if metric == "top1":
            return np.stack([outcomes["correct"], outcomes["tokens"]], axis=1).astype(np.float64)
        raise KeyError(f"language modelling has no per-example form of {metric!r}")

    def from_sums(self, metric, sums, samples):
        if metric == "perplexity":
            return np.exp(sums[..., 0] / sums[..., 1])
        return 100.0 * sums[..., 0] / sums[..., 1]


TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Regression(), LanguageModeling())}
