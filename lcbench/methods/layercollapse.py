"""`layercollapse`: regularize the selected blocks' PReLU slopes toward 1, then fold them (arXiv 2311.17943).

- oneshot: convert the last k blocks, train `epochs` with loss = task + lam * sum (a_i - 1)^2, fold every
  block whose slope is within `threshold` of 1.
- progressive: one block at a time from the output end, `epochs / k` epochs each: convert, regularize,
  fold, next block.
Blocks whose slope stays far from 1 are reported and left unfolded, never folded silently; `force=true`
folds them anyway and labels each such fold as forced.

The regulariser is `coupled` (lam * sum (a_i - 1)^2 added to the loss: right for SGD) or `decoupled`
(after each optimizer step every slope moves toward 1 by min(1, 2 * lr * lam) * (a - 1), outside the
optimizer, as the official NLP code did with gp = 10). Under AdamW a coupled term is normalised away:
the slopes move about lr per step whatever lam is. `auto` (default) picks decoupled for AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.fields import option
from ..training import slopes
from ..zoo import architecture, collapse
from ..zoo.measure import measure_model
from . import METHODS
from .base import Method, RunContext


@dataclass
class LayerCollapseParams:
    k: int = option(1, min=1, help="collapse the last k collapsible blocks (counted from the output)")
    blocks: list[str] = option(default_factory=list, help="or these blocks by name (overrides k)")
    lam: float = option(
        10.0,
        min=0,
        max=1e6,
        tunable=True,
        help="the regularizer's weight (the paper's lambda; 10 is the official NLP runners' gp, which "
        "folds the default AdamW recipe; the ImageNet recipe's SGD runs use 1)",
    )
    init_slope: float | None = option(None, help="initial PReLU slope; default 0.01 for GELU, 0.0 for ReLU")
    threshold: float = option(0.05, min_exclusive=0, help="fold only blocks with |a - 1| < threshold")
    schedule: str = option("oneshot", choices=["oneshot", "progressive"])
    force: bool = option(False, help="fold every selected block whatever its slope (labelled as forced)")
    calibration_size: int = option(128, min=1, help="held-out samples for the fold's output difference")
    regularizer: str = option(
        "auto",
        choices=["auto", "coupled", "decoupled"],
        help="coupled: lam*(a-1)^2 in the loss (SGD); decoupled: slopes pulled toward 1 after each step "
        "by 2*lr*lam*(a-1), outside the optimizer (needed under AdamW); auto: decoupled for AdamW",
    )
    allow_unfolded: bool = option(
        False,
        later=True,
        help="run even when the slopes are predicted not to reach the fold band (a study of the slopes; "
        "its points are reported as not folded); otherwise such a run is refused before it starts",
    )


def decoupled_regularizer(params: LayerCollapseParams, optimizer: str) -> bool:
    """Whether the run's slopes are pulled outside the optimizer (`regularizer`, auto: under AdamW)."""
    return params.regularizer == "decoupled" or (params.regularizer == "auto" and optimizer == "adamw")


def _progressive(params: LayerCollapseParams, count: int) -> int:
    return count if params.schedule == "progressive" else 0


@METHODS.register("layercollapse")
class LayerCollapse(Method):
    title = "LayerCollapse"
    operating_range = "blocks whose slopes reach the fold band (beyond: not folded)"
    summary = "regularises PReLU slopes toward 1, then folds the blocks into single Linears"
    Params = LayerCollapseParams

    search_source = (
        "lam, coupled (SGD): the official LayerCollapse code's 0.2 (from scratch) to 1-5 (ImageNet "
        "fine-tunes); 10 and 100 where a short fine-tune needs them to reach the fold band (`lcbench plan`'s "
        "slope prediction); decoupled (AdamW): the official NLP runners' 10 (thousands of steps at lr 1e-4) "
        "up to 3000 for short recipes (text's 100, GLUE's 2000)"
    )

    @classmethod
    def search_space(cls, params: LayerCollapseParams, optimizer: str) -> dict[str, list]:
        if decoupled_regularizer(params, optimizer):  # a step of 2 lr lam toward 1: another scale
            return {"lam": [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]}
        return {"lam": [0.2, 1.0, 5.0, 10.0, 100.0]}

    def __init__(self, params: LayerCollapseParams, ctx: RunContext) -> None:
        super().__init__(params, ctx)
        self.order: list[str] = []  # selected blocks, nearest the output first
        self.converted: list[str] = []  # converted and not folded (PReLUs in the model)
        self.folded: list[str] = []
        self.fold_reports: dict[str, dict] = {}  # the latest fold attempt per block
        self.prelus: list[nn.PReLU] = []
        self.decoupled = decoupled_regularizer(params, ctx.cfg.optimizer)
        self.target: dict | None = None

    # -- set-up -----------------------------------------------------------------------------------------

    @classmethod
    def check(cls, params: LayerCollapseParams, cfg: RunConfig) -> None:
        """The blocks exist (the model built on the meta device), a progressive schedule divides the
        epochs, and the slopes are predicted to reach the fold band (unless forced or allowed not to)."""
        chosen = architecture.selected(cfg, params.k, params.blocks)
        count = len(chosen)
        if params.schedule == "progressive" and cfg.epochs % count:
            raise ConfigError(
                f"schedule=progressive trains {count} blocks one after another: epochs ({cfg.epochs}) must "
                f"be a multiple of {count} (e.g. epochs={count * max(1, round(cfg.epochs / count))})"
            )
        pred = cls.prediction(params, cfg)
        if pred is not None and not pred.folds and not params.force and not params.allow_unfolded:
            raise ConfigError(
                slopes.refusal(
                    cfg,
                    pred,
                    params.lam,
                    decoupled_regularizer(params, cfg.optimizer),
                    _progressive(params, count),
                )
            )

    @classmethod
    def prediction(cls, params: LayerCollapseParams, cfg: RunConfig) -> slopes.SlopePrediction | None:
        """The slopes' predicted value at the fold from the run's recipe (`slopes.predict`)."""
        chosen = architecture.selected(cfg, params.k, params.blocks)
        return slopes.predict(
            cfg,
            params.lam,
            decoupled_regularizer(params, cfg.optimizer),
            cls.start_slope(params, cfg),
            params.threshold,
            _progressive(params, len(chosen)),
        )

    @classmethod
    def start_slope(cls, params: LayerCollapseParams, cfg: RunConfig) -> float:
        """The slope the selected blocks start from (the one farthest from 1 when they differ)."""
        if params.init_slope is not None:
            return params.init_slope
        return min(b.init_slope for b in architecture.selected(cfg, params.k, params.blocks))

    @classmethod
    def plan_note(cls, params: LayerCollapseParams, cfg: RunConfig) -> str:
        pred = cls.prediction(params, cfg)
        text = "slope: unknown data size" if pred is None else f"slope -> {pred.slope:.3f}"
        if params.force:
            return f"{text}, forced fold"
        return text if pred is None or pred.folds else f"{text}, not folded (allowed)"

    def prepare(self, model: nn.Module) -> nn.Module:
        p = self.params
        self.order = [b.name for b in collapse.select_blocks(model, p.k, p.blocks, self.ctx.cfg.model)]
        if p.schedule == "progressive" and self.ctx.cfg.epochs % len(self.order):
            raise ConfigError(
                f"schedule=progressive trains {len(self.order)} blocks one after another: epochs "
                f"({self.ctx.cfg.epochs}) must be a multiple of {len(self.order)}"
            )
        self.target = collapse.collapse_targets(
            self.ctx.original, 0, self.ctx.input_shape, self.ctx.cfg.model, names=self.order
        )
        first = self.order if p.schedule == "oneshot" else self.order[:1]
        for name in first:
            self._convert(model, name)
        return model

    def _convert(self, model: nn.Module, name: str) -> None:
        collapse.convert(model, collapse.block_by_name(model, name), self.params.init_slope)
        self.converted.append(name)
        self._collect_prelus(model)

    def _collect_prelus(self, model: nn.Module) -> None:
        self.prelus = [model.get_submodule(n) for n in self.converted]

    # -- training hooks ---------------------------------------------------------------------------------

    def loss(self, task_loss, logits, inputs, targets, model) -> torch.Tensor:
        if not self.prelus or self.params.lam == 0 or self.decoupled:
            return task_loss
        return task_loss + self.params.lam * collapse.regularizer(self.prelus)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Decoupled regulariser: a <- a - min(1, 2 * lr * lam) * (a - 1) (the gradient step of lam*(a-1)^2
        at the current lr, applied outside the optimizer so AdamW cannot normalise it away)."""
        if not self.decoupled or not self.prelus or self.params.lam == 0:
            return
        rate = min(1.0, 2.0 * optimizer.param_groups[-1]["lr"] * self.params.lam)
        for prelu in self.prelus:
            prelu.weight.sub_(rate * (prelu.weight - 1.0))

    def match_target(self) -> dict[str, Any] | None:
        return {"quantity": "compression", "target": self.target["compression"]}

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        return {
            f"slope/{n}": float(model.get_submodule(n).weight.detach().reshape(-1)[0]) for n in self.converted
        }

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        """Progressive: after each block's share of epochs, fold it and convert the next one."""
        if self.params.schedule != "progressive":
            return False
        per_block = self.ctx.cfg.epochs // len(self.order)
        started = len(self.folded) + len(self.converted)
        if epoch % per_block or epoch >= self.ctx.cfg.epochs or started >= len(self.order):
            return False
        self._fold(model, [self.order[started - 1]])  # a block that does not qualify stays regularized
        self._convert(model, self.order[started])
        return True

    def _fold(self, model: nn.Module, names: list[str], score_before: float | None = None) -> None:
        """Fold `names`, recording the data set's headline metric (top-1, perplexity) before and after."""
        calibration = self.ctx.calibration_batch(self.params.calibration_size)
        metric = self.ctx.quality
        before = self.ctx.evaluate(model)[metric] if score_before is None else score_before
        reports = collapse.collapse(model, names, self.params.threshold, self.params.force, calibration)
        after = self.ctx.evaluate(model)[metric] if any(r["folded"] for r in reports) else before
        for r in reports:
            r.update({f"{metric}_before_fold": before, f"{metric}_after_fold": after})
            if r["folded"]:
                self.converted.remove(r["block"])
                self.folded.append(r["block"])
            self.fold_reports[r["block"]] = r
        self._collect_prelus(model)

    # -- the compressed model ---------------------------------------------------------------------------

    def finalize(self, model: nn.Module) -> nn.Module:
        scores, self.outcomes["prefold"] = self.ctx.examine(model)
        regularized = {
            **measure_model(model, self.ctx.input_shape, (1,), repeats=self.ctx.cfg.latency_repeats),
            **scores,
        }
        self._fold(model, list(self.converted), score_before=regularized[self.ctx.quality])
        reports = [self.fold_reports[n] for n in self.order if n in self.fold_reports]
        self.report = {
            "schedule": self.params.schedule,
            "regularizer": "decoupled" if self.decoupled else "coupled",
            "selected": self.order,
            "folded": self.folded,
            "not_folded": list(self.converted),
            "forced": [r["block"] for r in reports if r["forced"]],
            "blocks": reports,
            "regularized": regularized,
            "max_abs_fold_diff": max((r.get("max_abs_diff", 0.0) for r in reports), default=0.0),
        }
        predicted = self.prediction(self.params, self.ctx.cfg)
        if predicted is not None:  # from the data set's nominal size: beside the slopes reached
            self.report["predicted"] = {
                "slope": predicted.slope,
                "steps": predicted.steps,
                "how": predicted.how,
            }
        return model

    # -- state and structure ----------------------------------------------------------------------------

    def structure(self) -> dict[str, Any]:
        return {"converted": list(self.converted), "folded": list(self.folded)}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return collapse.apply_structure(model, structure["converted"], structure["folded"])

    def state_dict(self) -> dict[str, Any]:
        return {**self.structure(), "fold_reports": self.fold_reports}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> nn.Module:
        """Resume: re-apply the folds and conversions made before the checkpoint (weights load after)."""
        for name in state["folded"]:
            collapse.fold(model, collapse.block_by_name(model, name))
        for name in state["converted"]:
            collapse.convert(model, collapse.block_by_name(model, name), self.params.init_slope)
        self.converted, self.folded = list(state["converted"]), list(state["folded"])
        self.fold_reports = dict(state["fold_reports"])
        self._collect_prelus(model)
        return model
