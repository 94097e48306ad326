"""`layer_folding`: Layer Folding (Ben Dror, Zehngut, Raviv, Artyomov, Vitek, Jevnisek, "Layer Folding: Neural
Network Depth Reduction using Activation Linearization", BMVC 2022, arXiv 2106.09309; official code
LayerFolding/Layer-Folding, `VGG_Cifar10_prefold.py` and `..._postfold.py`).

The same mechanism as LayerCollapse with the authors' regulariser, initialisation and schedule, on the same
blocks (the last k collapsible MLPs, LayerCollapse's level k), so that a comparison isolates what
LayerCollapse adds:
- each selected activation becomes a one-slope PReLU initialised at alpha = 0 (`nn.PReLU(init=0)`);
- the loss adds lam * sum_i |1 - alpha_i^2| (lam = 0.25 in the official code), and after every optimizer
  step alpha is clipped to alpha >= 0;
- at the fold ("prefold" done) every alpha is rounded to the nearer of 0 and 1 (the official postfold
  script's `torch.round`): a block at 1 is folded into one Linear by lcbench's fold, a block at 0 keeps a
  ReLU (its PReLU frozen at 0);
- the folded network is then fine-tuned (`postfold_epochs` of the run's epochs), so the whole run has the
  same budget as LayerCollapse's.
Blocks that round to 0 are reported and stay unfolded; the run then misses its compression target and is
labelled "not matched".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lcbench.core.config import RunConfig
from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
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


def folding_regularizer(alphas: list[torch.Tensor]) -> torch.Tensor:
    """lam-less Layer Folding penalty: sum_i |1 - alpha_i^2|."""
    return sum((1 - a * a).abs().sum() for a in alphas)


def rounds_to_one(alpha: float) -> bool:
    """The postfold rounding: alpha to the nearer of 0 and 1 (the official `torch.round`, which would also
    send alpha >= 1.5 to 2 and leave that block unfolded; here every alpha >= 0.5 folds)."""
    return alpha >= 0.5


@torch.no_grad()
def clip_nonnegative(prelus: list[nn.PReLU]) -> None:
    """The official constraint after each step: alpha >= 0."""
    for p in prelus:
        p.weight.clamp_(min=0.0)


@METHODS.register("layer_folding")
class LayerFolding(Method):
    title = "Layer Folding"
    operating_range = "blocks whose slopes reach 1/2, rounded to 1 (beyond: not folded)"
    summary = "PReLU from 0 with lam*|1 - a^2|, rounded to 0 or 1, folded, fine-tuned (same blocks)"
    Params = LayerFoldingParams

    @classmethod
    def check(cls, params: LayerFoldingParams, cfg: RunConfig) -> None:
        architecture.selected(cfg, params.k)
        if cfg.epochs and params.postfold_epochs >= cfg.epochs:
            raise ConfigError(
                f"layer_folding: postfold_epochs={params.postfold_epochs} leaves no epoch of regularised "
                f"training out of epochs={cfg.epochs}; lower postfold_epochs (e.g. {cfg.epochs // 3})"
            )

    def prepare(self, model: nn.Module) -> nn.Module:
        self.order = [
            b.name for b in collapse.select_blocks(model, self.params.k, model_name=self.ctx.cfg.model)
        ]
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
        if self.rounded or self.params.lam == 0:
            return task_loss
        return task_loss + self.params.lam * folding_regularizer([p.weight for p in self.prelus])

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.rounded:
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
        self.report = {
            "selected": self.order,
            "folded": self.folded,
            "not_folded": [n for n in self.order if n not in self.folded],
            "blocks": self.blocks,
            "fold": self.fold_change,
            "postfold_epochs": self.params.postfold_epochs,
        }
        return model

    def match_target(self) -> dict[str, Any] | None:
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
