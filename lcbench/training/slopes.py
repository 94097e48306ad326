"""Where LayerCollapse's slopes will be when a run folds them, predicted from the recipe before it runs.

The regulariser alone moves a slope's distance to 1, d = 1 - a, step by step at the schedule's learning
rate lr_t (`optim.lr_factor`):
- decoupled (after each optimizer step, any optimizer): d <- (1 - min(1, 2 lr_t lam)) d, so
  d_T = d_0 prod_t (1 - min(1, 2 lr_t lam)): the closed form;
- coupled under SGD: the gradient 2 lam d goes through momentum like any other (simulated exactly);
- coupled under AdamW: Adam normalises the gradient, so the slope moves at most about lr_t per step
  whatever lam is: d_T >= d_0 - sum_t lr_t, a bound (the best the regulariser can do).
The task's own gradient is left out: it pulls a slope away from 1 (under AdamW by up to about lr_t per
step, which holds a decoupled slope near 1 - 1/(2 lam) at worst), so a prediction near the band's edge is
optimistic; the rehearsal (`lcbench rehearse`) measures the real trajectory beside it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from ..core.config import RunConfig
from ..zoo.data import DATASETS, training_examples
from .optim import lr_factor

# The schedule fields `optim.lr_factor` reads
SCHEDULE_FIELDS = (
    "epochs",
    "lr_schedule",
    "lr_cycle_epochs",
    "warmup_steps",
    "warmup_epochs",
    "step_steps",
    "step_epochs",
    "step_gamma",
)
MAX_LAM = 1e6  # LayerCollapse's `lam` bound


@dataclass(frozen=True)
class SlopePrediction:
    """A slope's predicted value when the run folds it (the worst block's, for a progressive run)."""

    start: float
    slope: float
    steps: int  # optimizer steps between the block's conversion and its fold
    threshold: float
    how: str  # which rule predicted it

    @property
    def distance(self) -> float:
        return abs(1.0 - self.slope)

    @property
    def folds(self) -> bool:
        return self.distance < self.threshold

    def text(self) -> str:
        return f"slope {self.start:g} -> {self.slope:.3f} after {self.steps:,} steps ({self.how})"


def steps_per_epoch(cfg: RunConfig) -> int | None:
    """Optimizer steps per epoch from the data set's nominal training size (None: unknown)."""
    spec = DATASETS.get(cfg.dataset)
    size = training_examples(spec, cfg.holdout)
    if not size:
        return None
    if spec.task == "language_modeling" and cfg.seq_len:  # the nominal size counts blocks of spec.seq_len
        size = size * spec.seq_len // cfg.seq_len
    return math.ceil(size / cfg.batch_size)


@functools.lru_cache(maxsize=64)
def _factors(schedule: tuple, per_epoch: int) -> np.ndarray:
    cfg = SimpleNamespace(**dict(zip(SCHEDULE_FIELDS, schedule)))
    return np.array([lr_factor(s, cfg, per_epoch) for s in range(cfg.epochs * per_epoch)])


def learning_rates(cfg: RunConfig, per_epoch: int) -> np.ndarray:
    """The learning rate of every optimizer step of the run."""
    return cfg.lr * _factors(tuple(getattr(cfg, f) for f in SCHEDULE_FIELDS), per_epoch)


def distance_after(lrs: np.ndarray, d0: float, lam: float, decoupled: bool, cfg: RunConfig) -> float:
    """The regulariser-only distance 1 - a after the steps whose learning rates are `lrs`."""
    if decoupled:
        rates = np.minimum(1.0, 2.0 * lrs * lam)
        if (rates >= 1.0).any():
            return 0.0
        return float(d0 * np.exp(np.log1p(-rates).sum()))
    if cfg.optimizer == "adamw":
        return max(0.0, d0 - float(lrs.sum()))
    d, buf = d0, None  # torch.optim.SGD: buf = g (first step), then momentum * buf + g; d -= lr * buf
    for lr in lrs.tolist():
        g = 2.0 * lam * d
        buf = g if buf is None else cfg.momentum * buf + g
        d -= lr * buf
        if not math.isfinite(d) or abs(d) > 1e6:
            return math.inf
    return d


def predict(
    cfg: RunConfig,
    lam: float,
    decoupled: bool,
    start: float,
    threshold: float,
    progressive_blocks: int = 0,
) -> SlopePrediction | None:
    """The predicted slope at the fold (None when the data set's size, so the step count, is unknown).
    One-shot: every selected block regularised for the whole run; progressive over n blocks: each for its
    epochs/n share, folded at the share's end (the worst block is reported)."""
    per_epoch = steps_per_epoch(cfg)
    if per_epoch is None:
        return None
    lrs = learning_rates(cfg, per_epoch)
    windows = [lrs]
    if progressive_blocks > 1:
        share = len(lrs) // progressive_blocks
        windows = [lrs[i * share : (i + 1) * share] for i in range(progressive_blocks)]
    how = (
        "decoupled regulariser, closed form"
        if decoupled
        else f"coupled regulariser under {cfg.optimizer.upper()}, "
        + ("regulariser-only bound" if cfg.optimizer == "adamw" else "simulated")
    )
    d0 = 1.0 - start
    ends = [(distance_after(w, d0, lam, decoupled, cfg), len(w)) for w in windows]
    worst, steps = max(ends, key=lambda e: abs(e[0]))  # signed: momentum can overshoot past 1
    slope = 1.0 - worst if math.isfinite(worst) else -math.inf
    return SlopePrediction(start, slope, steps, threshold, how)


def lam_that_folds(
    cfg: RunConfig, decoupled: bool, start: float, threshold: float, progressive_blocks: int = 0
) -> tuple[float, SlopePrediction] | None:
    """The smallest slope weight (on a 1-2-5 grid) predicted to bring the slope within half the band."""
    if not decoupled and cfg.optimizer == "adamw":
        return None  # Adam normalises a coupled term: no weight helps
    for exponent in range(-2, 7):
        for mantissa in (1, 2, 5):
            lam = mantissa * 10.0**exponent
            if lam > MAX_LAM:
                return None
            pred = predict(cfg, lam, decoupled, start, threshold, progressive_blocks)
            if pred is not None and pred.distance <= threshold / 2:
                return lam, pred
    return None


def refusal(
    cfg: RunConfig,
    pred: SlopePrediction,
    lam: float,
    decoupled: bool,
    progressive_blocks: int = 0,
) -> str:
    """Why the run is refused and what would fold it: the numbers, a weight, a constant learning rate."""
    fixes = []
    raised = lam_that_folds(cfg, decoupled, pred.start, pred.threshold, progressive_blocks)
    if raised:
        fixes.append(f"raise lam to {raised[0]:g} (predicted {raised[1].slope:.3f})")
    if not decoupled and cfg.optimizer == "adamw":
        fixes.append("use regularizer=decoupled (Adam normalises a coupled term away)")
    if cfg.lr_schedule != "constant":
        constant = predict(
            replace(cfg, lr_schedule="constant"),
            lam,
            decoupled,
            pred.start,
            pred.threshold,
            progressive_blocks,
        )
        if constant and constant.folds:
            fixes.append(f"use lr_schedule=constant (predicted {constant.slope:.3f})")
    fixes.append("force=true to fold whatever the slope (reported as a forced fold)")
    fixes.append("allow_unfolded=true to run it anyway (reported as not folded)")
    return (
        f"layercollapse is predicted not to fold: {pred.text()}, lam {lam:g}; folding needs |a - 1| < "
        f"{pred.threshold:g} (a slope above {1 - pred.threshold:g}). Fix: " + "; or ".join(fixes)
    )
