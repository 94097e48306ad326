"""`layer_folding`: Layer Folding (Ben Dror, Zehngut, Raviv, Artyomov, Vitek, Jevnisek, "Layer Folding: Neural
Network Depth Reduction using Activation Linearization", BMVC 2022, arXiv 2106.09309; official code
LayerFolding/Layer-Folding, `VGG_Cifar10_prefold.py`, `ResNet_Cifar10_prefold.py` and `..._postfold.py`).

The same mechanism as LayerCollapse with the authors' regulariser, initialisation and schedule:
- `scope=all` (the paper): every collapsible block of the model gets the activation and lam decides which
  fold (the official ResNet puts an alpha on every ReLU); a block left unfolded is the method's decision, not
  a missed target: the run is compared where its compression lands on LayerCollapse's frontier;
- `scope=k`: only LayerCollapse's blocks at level k (its last k collapsible MLPs), so that a comparison
  isolates what LayerCollapse adds ("Layer Folding's penalty on LayerCollapse's blocks"); a block that does
  not fold there misses the level's target and is labelled "not folded";
- each selected activation becomes a one-slope PReLU initialised at alpha = 0 (the official `alpha(0)`);
- the penalty is lam * sum_i |1 - alpha_i^2| (lam = 1/4 in the official code) and after every optimizer step
  alpha is clipped to alpha >= 0. `regularizer=coupled` adds it to the loss (the official code, under SGD);
  `decoupled` applies its gradient step outside the optimizer after each step, alpha moving toward 1 by
  min(|1 - alpha|, 2 lr lam alpha) (no overshoot past the penalty's minimum), as LayerCollapse's decoupled
  form does: under AdamW a coupled penalty is normalised away and a slope moves about lr per step;
  `auto` is decoupled under AdamW;
- at the fold every alpha is rounded to the nearer of 0 and 1 (the official postfold script's
  `torch.round`): a block at 1 is folded into one Linear by lcbench's fold, a block at 0 keeps a ReLU (its
  PReLU frozen at 0);
- the folded network is then fine-tuned (`postfold_epochs` of the run's epochs, or `postfold_fraction` of
  its optimizer steps for a run of an epoch or two: the fold then happens at a step, mid-epoch), so the
  whole run has the same budget as LayerCollapse's.

Plan-time check: the penalty's gradient is zero at alpha = 0, so a slope leaves 0 only by the task's
gradient; under AdamW that moves it at most about lr per step, which bounds from above where any slope can
be at the fold (`reachable`). A run whose bound stays below 1/2 cannot fold a block and is refused before it
starts, with the numbers (`allow_unfolded=true` runs it anyway). Under SGD the task's step has no such
bound and nothing is predicted.

Departures from the official code, and why: the official code runs 100 epochs at lr 0.001 on CIFAR-10;
here the run's recipe is the benchmark's (the same as every method's); the decoupled form is lcbench's, for
AdamW recipes the paper does not use; rounding sends every alpha >= 0.5 to 1 (the official `torch.round`
would send alpha >= 1.5 to 2 and leave the block unfolded).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from lcbench.core.config import RunConfig
from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
from lcbench.training import slopes
from lcbench.zoo import architecture, collapse


@dataclass
class LayerFoldingParams:
    k: int = option(
        1, min=1, help="regularize and fold the last k collapsible blocks (LayerCollapse's level)"
    )
    lam: float = option(0.25, min=0, help="weight of sum |1 - alpha^2| (0.25: the official code's default)")
    postfold_epochs: int = option(
        1, min=0, help="epochs of fine-tuning after the fold, out of the run's epochs (0: fold at the end)"
    )
    calibration_size: int = option(128, min=1, help="held-out samples for the fold's output difference")
    postfold_fraction: float = option(
        0.0,
        min=0,
        max=0.9,
        later=True,
        help="the share of the run's optimizer steps after the fold, in place of postfold_epochs (runs of an "
        "epoch or two: GLUE, WikiText; 0.5: the paper's equal prefold and postfold phases)",
    )
    scope: str = option(
        "k",
        choices=["k", "all"],
        later=True,
        help="k: LayerCollapse's last k blocks; all: every collapsible block, lam decides (the paper)",
    )
    regularizer: str = option(
        "coupled",
        choices=["coupled", "decoupled", "auto"],
        later=True,
        help="coupled: the penalty in the loss (the official code); decoupled: its gradient step applied "
        "after each optimizer step (needed under AdamW); auto: decoupled for AdamW",
    )
    allow_unfolded: bool = option(
        False, later=True, help="run even when no slope can reach 1/2 by the plan's bound (reported unfolded)"
    )


FOLD_AT = 0.5  # rounding sends a slope at or above it to 1


def decoupled(params: LayerFoldingParams, optimizer: str) -> bool:
    """Whether the penalty acts outside the optimizer (`regularizer`, auto: under AdamW)."""
    return params.regularizer == "decoupled" or (params.regularizer == "auto" and optimizer == "adamw")


def folding_regularizer(alphas: list[torch.Tensor]) -> torch.Tensor:
    """lam-less Layer Folding penalty: sum_i |1 - alpha_i^2|."""
    return sum((1 - a * a).abs().sum() for a in alphas)


def rounds_to_one(alpha: float) -> bool:
    """The postfold rounding: alpha to the nearer of 0 and 1 (the official `torch.round`, which would also
    send alpha >= 1.5 to 2 and leave that block unfolded; here every alpha >= 0.5 folds)."""
    return alpha >= 0.5


@torch.no_grad()
def decoupled_step(alphas: list[torch.Tensor], lr: float, lam: float) -> None:
    """The penalty's gradient step outside the optimizer: d|1 - a^2|/da = -2a sign(1 - a^2), so a moves
    toward 1 by 2 lr lam a, at most to 1."""
    for a in alphas:
        a.add_(torch.sign(1 - a) * torch.minimum((1 - a).abs(), 2 * lr * lam * a))


def regularised_steps(params: LayerFoldingParams, total_steps: int, per_epoch: int) -> int:
    """The optimizer steps before the fold: all but the post-fold phase (`postfold_fraction` of the steps,
    at least one, or `postfold_epochs` of `per_epoch` steps)."""
    if params.postfold_fraction:
        return max(total_steps - max(round(total_steps * params.postfold_fraction), 1), 0)
    return max(total_steps - params.postfold_epochs * per_epoch, 0)


def reachable(
    cfg: RunConfig, lam: float, is_decoupled: bool, start: float = 0.0, steps: int | None = None
) -> tuple[float, int] | None:
    """An upper bound on any slope at the fold under AdamW (None otherwise, or when the step count is
    unknown): every step's task gradient pushes it up by lr_t, Adam's bound, and a decoupled penalty
    multiplies it by (1 + 2 lr_t lam) below 1, over the run's first `steps` (default: all) at the run's own
    learning-rate schedule. Returns the bound and the steps."""
    per_epoch = slopes.steps_per_epoch(cfg)
    if cfg.optimizer != "adamw" or per_epoch is None:
        return None
    lrs = slopes.learning_rates(cfg, per_epoch)[:steps]
    alpha = start
    for lr in lrs.tolist():
        alpha += lr
        if is_decoupled and alpha < 1:
            alpha = min(1.0, alpha * (1 + 2 * lr * lam))
    return alpha, len(lrs)


@torch.no_grad()
def clip_nonnegative(prelus: list[nn.PReLU]) -> None:
    """The official constraint after each step: alpha >= 0."""
    for p in prelus:
        p.weight.clamp_(min=0.0)


@METHODS.register("layer_folding")
class LayerFolding(Method):
    title = "Layer Folding"
    operating_range = "slopes that reach 1/2 fold (rounded to 1); scope=all folds what lam decides"
    summary = "PReLU from 0 with lam*|1 - a^2|, rounded to 0 or 1, folded, fine-tuned (every block, or k)"
    Params = LayerFoldingParams

    search_source = (
        "lam (scope=k): coupled (SGD), the paper's 0.25 (arXiv 2106.09309, LayerFolding/Layer-Folding) and "
        "larger values for recipes too short for 0.25 to fold (`lcbench plan`'s bound); decoupled (AdamW), "
        "100 to 5000, where that bound first lets a short recipe fold (text: 200); with scope=all lam "
        "decides what folds, so it sets the point's compression, like another method's level: not searched "
        "(a search by accuracy alone would choose to fold nothing)"
    )

    @classmethod
    def search_space(cls, params: LayerFoldingParams, optimizer: str) -> dict[str, list]:
        if params.scope == "all":
            return {}
        if decoupled(params, optimizer):  # Adam's normalised steps: a slope leaves 0 at about lr per step
            return {"lam": [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]}
        return {"lam": [0.25, 1.0, 10.0, 100.0]}

    @classmethod
    def check(cls, params: LayerFoldingParams, cfg: RunConfig) -> None:
        if params.scope == "k":
            architecture.selected(cfg, params.k)
        elif not architecture.blocks(cfg):
            raise ConfigError(f"layer_folding scope=all: {cfg.model} has no collapsible block")
        if params.postfold_fraction and params.postfold_epochs:
            raise ConfigError(
                f"layer_folding: postfold_epochs={params.postfold_epochs} and postfold_fraction="
                f"{params.postfold_fraction:g} both set the post-fold phase; give one (postfold_epochs=0)"
            )
        if cfg.epochs and params.postfold_epochs >= cfg.epochs:
            raise ConfigError(
                f"layer_folding: postfold_epochs={params.postfold_epochs} leaves no epoch of regularised "
                f"training out of epochs={cfg.epochs}; lower postfold_epochs (e.g. {cfg.epochs // 3})"
            )
        bound = cls.bound(params, cfg)
        if bound is not None and bound[0] < FOLD_AT and not params.allow_unfolded:
            raise ConfigError(
                f"layer_folding cannot fold any block: under AdamW a slope moves at most about lr per step, "
                f"so from 0 it reaches at most {bound[0]:.3f} after {bound[1]:,} regularised steps "
                f"({cls.bound_how(params, cfg)}; the fold needs {FOLD_AT:g}). Fix: " + cls.fixes(params, cfg)
            )

    @classmethod
    def fixes(cls, params: LayerFoldingParams, cfg: RunConfig) -> str:
        """What lets a slope reach 1/2 by the bound: a decoupled penalty, the least lam on a 1-2-5 grid."""
        fixes = [] if decoupled(params, cfg.optimizer) else ["use regularizer=auto (decoupled under AdamW)"]
        for lam in (m * 10.0**e for e in range(-1, 7) for m in (1, 2, 5)):
            bound = cls.bound(replace(params, lam=lam, regularizer="decoupled"), cfg)
            if bound is not None and bound[0] >= FOLD_AT:
                fixes.append(f"a decoupled lam of at least {lam:g} (bound {bound[0]:.3f})")
                break
        fixes += ["more epochs", "allow_unfolded=true to run it anyway (reported unfolded)"]
        return "; or ".join(fixes)

    @classmethod
    def bound(cls, params: LayerFoldingParams, cfg: RunConfig) -> tuple[float, int] | None:
        """`reachable` over the regularised part of the run (the epochs before the post-fold phase, at the
        whole run's schedule)."""
        per_epoch = slopes.steps_per_epoch(cfg)
        if per_epoch is None or not cfg.epochs:
            return None
        steps = regularised_steps(params, cfg.epochs * per_epoch, per_epoch)
        return reachable(cfg, params.lam, decoupled(params, cfg.optimizer), steps=steps) if steps else None

    @staticmethod
    def bound_how(params: LayerFoldingParams, cfg: RunConfig) -> str:
        return f"{'decoupled' if decoupled(params, cfg.optimizer) else 'coupled'} penalty, lam {params.lam:g}"

    @classmethod
    def plan_note(cls, params: LayerFoldingParams, cfg: RunConfig) -> str:
        bound = cls.bound(params, cfg)
        if bound is None:
            return ""
        how = cls.bound_how(params, cfg)
        return f"slopes reach at most {bound[0]:.3f} (fold at {FOLD_AT:g}) in {bound[1]:,} steps, {how}"

    def prepare(self, model: nn.Module) -> nn.Module:
        chosen = (
            collapse.find_blocks(model)
            if self.params.scope == "all"
            else collapse.select_blocks(model, self.params.k, model_name=self.ctx.cfg.model)
        )
        self.order = [b.name for b in chosen]
        self.decoupled = decoupled(self.params, self.ctx.cfg.optimizer)
        self.target = collapse.collapse_targets(
            self.ctx.original, 0, self.ctx.input_shape, self.ctx.cfg.model, names=self.order
        )
        for name in self.order:
            collapse.convert(model, collapse.block_by_name(model, name), init_slope=0.0)
        self.prelus = [model.get_submodule(n) for n in self.order]
        self.folded: list[str] = []
        self.rounded = False
        self.blocks: list[dict] = []
        return model

    def loss(self, task_loss, logits, inputs, targets, model) -> torch.Tensor:
        if self.rounded or self.params.lam == 0 or self.decoupled:
            return task_loss
        return task_loss + self.params.lam * folding_regularizer([p.weight for p in self.prelus])

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.rounded:
            return
        if self.decoupled and self.params.lam:
            decoupled_step([p.weight for p in self.prelus], optimizer.param_groups[-1]["lr"], self.params.lam)
        clip_nonnegative(self.prelus)

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        return {  # the blocks not folded (a folded block's activation is gone)
            f"slope/{n}": float(model.get_submodule(n).weight.detach().reshape(-1)[0])
            for n in self.order
            if n not in self.folded
        }

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        postfold = self.params.postfold_epochs
        if self.rounded or not postfold or epoch != self.ctx.cfg.epochs - postfold:
            return False
        self._round_and_fold(model)
        return True

    def on_step_end(self, step: int, total_steps: int, model: nn.Module) -> bool:
        fraction = self.params.postfold_fraction
        if self.rounded or not fraction or step != regularised_steps(self.params, total_steps, 0):
            return False
        self._round_and_fold(model)
        return True

    @torch.no_grad()
    def _round_and_fold(self, model: nn.Module) -> None:
        """Round every alpha to 0 or 1; fold the blocks at 1, freeze the others at 0 (a ReLU)."""
        metric = self.ctx.quality
        before = self.ctx.evaluate(model)[metric]
        calibration = self.ctx.calibration_batch(self.params.calibration_size)
        was_training = model.training
        ahead = model.eval()(calibration)
        for name, prelu in zip(self.order, self.prelus):
            alpha = float(prelu.weight.reshape(-1)[0])
            folds = rounds_to_one(alpha)
            prelu.weight.fill_(1.0 if folds else 0.0)
            self.blocks.append({"block": name, "slope": alpha, "rounded_to": int(folds), "folded": folds})
            if folds:
                collapse.fold(model, collapse.block_by_name(model, name))
                self.folded.append(name)
            else:
                prelu.weight.requires_grad_(False)
        after = model(calibration)
        model.train(was_training)
        diff = (after - ahead).abs().max().item()
        self.fold_change = {
            f"{metric}_before_fold": before,
            f"{metric}_after_fold": self.ctx.evaluate(model)[metric],
            "max_abs_diff": diff,
            "max_rel_diff": diff / max(ahead.abs().max().item(), 1e-30),
        }
        self.prelus = [p for n, p in zip(self.order, self.prelus) if n not in self.folded]
        self.rounded = True

    def finalize(self, model: nn.Module) -> nn.Module:
        if not self.rounded:  # postfold_epochs=0 (or a run of 0 epochs): the fold ends the run
            self._round_and_fold(model)
        unfolded = [n for n in self.order if n not in self.folded]
        self.report = {
            "scope": self.params.scope,
            "regularizer": "decoupled" if self.decoupled else "coupled",
            "selected": self.order,
            "folded": self.folded,
            # scope=k: a block left unfolded misses the level's target; scope=all: lam's decision
            ("not_folded" if self.params.scope == "k" else "kept"): unfolded,
            "blocks": self.blocks,
            "fold": self.fold_change,
            "postfold_epochs": self.params.postfold_epochs,
            **({"postfold_fraction": self.params.postfold_fraction} if self.params.postfold_fraction else {}),
        }
        return model

    def match_target(self) -> dict[str, Any] | None:
        if self.params.scope == "all":
            return None  # no target: the blocks lam folds decide the compression
        return {"quantity": "compression", "target": self.target["compression"]}

    def structure(self) -> dict[str, Any]:
        return {"converted": [n for n in self.order if n not in self.folded], "folded": list(self.folded)}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return collapse.apply_structure(model, structure["converted"], structure["folded"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "rounded": self.rounded,
            "folded": list(self.folded),
            "blocks": self.blocks,
            "fold_change": getattr(self, "fold_change", None),
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> nn.Module:
        """Resume: re-apply the fold made before the checkpoint (the weights load after)."""
        if state["rounded"]:
            for name in state["folded"]:
                collapse.fold(model, collapse.block_by_name(model, name))
            self.folded, self.blocks, self.rounded = list(state["folded"]), list(state["blocks"]), True
            self.fold_change = state["fold_change"]
            self.prelus = [model.get_submodule(n) for n in self.order if n not in self.folded]
            for p in self.prelus:
                p.weight.requires_grad_(False)
        return model
