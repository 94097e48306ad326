"""`wanda`: pruning by weights and activations (Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning
Approach for Large Language Models", ICLR 2024, arXiv 2306.11695; official code locuslab/wanda,
`lib/prune.py::prune_wanda`).

Each weight is scored S_ij = |W_ij| * ||X_j||_2, the norm of its input feature j over every token of
`calibration_size` training examples (drawn with the run's seed; never the held-out set); within each
output row the lowest-scored fraction s of the weights is zeroed, with no weight update. Every prunable
layer gets the same fraction s (the paper's uniform per-layer sparsity), chosen so that the whole model's
total / nonzero parameters meets the target (`target_compression`, or `match_collapse=k`'s: what folding
LayerCollapse's last k blocks gives). As in the official code only `nn.Linear` layers are pruned (here
every one but the classifier, the other baselines' convention), and the layers are pruned in forward
order, each from the activations of the model with every earlier layer already pruned (the official code
does this block by block). The masks are then held fixed through the same fine-tuning budget as every
other method (`torch.nn.utils.prune`) and made permanent at the end. The calibration forward passes are
counted in the run's training FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from lcbench.baselines.magnitude_pruning import MagnitudePruning, count_parameters_effective
from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
from lcbench.training.cost import forward_flops
from lcbench.zoo.collapse import MATCH_TOLERANCE
from lcbench.zoo.measure import count_macs, count_parameters
from lcbench.zoo.models import last_linear


@dataclass
class WandaParams:
    target_compression: float = option(2.0, min_exclusive=1, help="total / nonzero parameters")
    match_collapse: int = option(
        0, min=0, help="k > 0: aim at what folding LayerCollapse's last k blocks gives (overrides the target)"
    )
    calibration_size: int = option(128, min=1, help="training examples whose activations score the weights")


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| * ||X_j||_2: `weight` (out, in), `input_norms` (in,) the inputs' L2 norm per feature."""
    return weight.abs() * input_norms.reshape(1, -1)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes, in every output row, the int(in * sparsity) lowest-scored weights."""
    drop = int(scores.shape[1] * sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if drop:
        lowest = torch.sort(scores, dim=-1, stable=True).indices[:, :drop]
        mask.scatter_(1, lowest, False)
    return mask


def prunable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every nn.Linear but the classifier, in registration (forward) order."""
    head, _ = last_linear(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != head]


def uniform_sparsity(model: nn.Module, layers: list[nn.Linear], target: float) -> float:
    """The per-row fraction that brings total / nonzero parameters of the model to `target`."""
    dense, nonzero = count_parameters(model)
    prunable = sum(m.weight.numel() for m in layers)
    to_remove = nonzero - dense / target
    if prunable == 0 or to_remove >= prunable:
        raise ConfigError(
            f"wanda cannot reach {target:.3f}x: it prunes nn.Linear weights only (not the classifier), "
            f"{prunable:,} of {dense:,} parameters; lower the target or use magnitude_pruning"
        )
    return to_remove / prunable


@torch.no_grad()
def input_norms(model: nn.Module, layer: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    """||X_j||_2 of `layer`'s inputs over every token of `inputs` (one forward pass of `model`)."""
    total = torch.zeros(layer.in_features, dtype=torch.float64, device=layer.weight.device)

    def record(_module, args, _output):
        x = args[0].detach().reshape(-1, layer.in_features).to(torch.float64)
        total.add_(x.square().sum(0))

    handle = layer.register_forward_hook(record)
    try:
        model(inputs)
    finally:
        handle.remove()
    return total.sqrt()


@METHODS.register("wanda")
class Wanda(Method):
    title = "Wanda"
    summary = "prunes each row by |W| * ||X|| from calibration activations"
    Params = WandaParams

    def prepare(self, model: nn.Module) -> nn.Module:
        """One-shot: score and mask layer by layer in forward order (on resume: the same masks again from
        the same weights and calibration examples)."""
        p, ctx = self.params, self.ctx
        target, matched = self.compression_target(model, p.target_compression)
        named = prunable_linears(model)
        sparsity = uniform_sparsity(model, [m for _, m in named], target)
        inputs, _ = ctx.training_batch(p.calibration_size)
        was_training = model.training
        model.eval()
        for _, layer in named:
            mask = row_mask(wanda_scores(layer.weight.detach(), input_norms(model, layer, inputs)), sparsity)
            prune.custom_from_mask(layer, "weight", mask)
        model.train(was_training)
        self.calibration_flops = (
            forward_flops(count_macs(model, ctx.input_shape)["gmacs"]) * len(inputs) * len(named)
        )
        dense = count_parameters(model)[0]
        self.report = {
            "target_compression": target,
            "achieved_compression": dense / count_parameters_effective(model),
            "sparsity_per_layer": sparsity,
            "layers": [n for n, _ in named],
            "calibration": ctx.calibration_record(p.calibration_size, self.calibration_flops),
        }
        if matched:
            self.report["matched_to_layercollapse"] = matched
        if abs(self.report["achieved_compression"] / target - 1) > MATCH_TOLERANCE:
            raise ConfigError(
                f"wanda reaches {self.report['achieved_compression']:.3f}x, not {target:.3f}x within 2% "
                "(rows too short for the fraction asked)"
            )
        return model

    def match_target(self) -> dict[str, Any] | None:
        matched = self.report.get("matched_to_layercollapse")
        return {"quantity": "compression", "target": matched["compression"]} if matched else None

    finalize = MagnitudePruning.finalize  # masks made permanent: an ordinary dense state_dict
