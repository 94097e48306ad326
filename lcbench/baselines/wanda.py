"""`wanda`: pruning by weights and activations (Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning
Approach for Large Language Models", ICLR 2024, arXiv 2306.11695; official code locuslab/wanda,
`lib/prune.py::prune_wanda`), with OWL's layer-wise allocation as an option (Yin
et al., "Outlier Weighed Layerwise Sparsity (OWL)", ICML 2024, arXiv 2310.05175; official code
luuyin/OWL, `lib/prune_all.py::prune_wanda_outlier` and `check_outlier_mean`).

Each weight is scored S_ij = |W_ij| * ||X_j||_2, the norm of its input feature j over every token of
`calibration_size` training examples (drawn with the run's seed; never the held-out set); within each
output row the lowest-scored fraction of the weights is zeroed, with no weight update. The fractions are
chosen so that the whole model's total / nonzero parameters meets the target (`target_compression`, or
`match_collapse=k`'s: what folding LayerCollapse's last k blocks gives):

- `allocation=uniform` (the Wanda paper): every prunable layer gets the same fraction;
- `allocation=owl`: layer l's outlier ratio D_l is the share of its scores above `owl_m` times their mean,
  measured on the dense model; kept fractions spread linearly with D_l over a range of width 2 `owl_lambda`
  (more outliers, fewer weights pruned) and are shifted together until the target is met, each held within
  [0, 1] (the official code floors a layer at 1%).

Prunable layers are the `nn.Linear` layers but the classifier (the official code prunes Linear layers only,
the other baselines leave the classifier alone) and, with `convolutions=true`, every zero-padded, ungrouped
`nn.Conv2d`, whose input feature j is one (channel, kernel row, kernel column) of the unfolded input (its
output row: one output channel's C x kh x kw weights), so a VGG's convolutions can carry sparsity as
magnitude pruning's do. Layers are pruned in the order the forward pass reaches them, each from the
activations it receives with every earlier layer already pruned; one forward pass does it (a hook prunes
each layer as its input arrives), OWL's ratios take one more on the dense model. Those passes are counted in
the run's training FLOPs (the official block-by-block algorithm spends about two).

Departures from the official code, and why: the sparsity is solved for a parameter-count target (the
benchmark's unit) instead of set; a layer, not a transformer block, is OWL's unit (an MLP or VGG has no
blocks: each Linear is one), and its shift meets the parameter-weighted target where the official code
shifts the plain mean (its blocks are of equal size); convolutions are this benchmark's extension. The masks
are held fixed through the same fine-tuning budget as every other method (`torch.nn.utils.prune`) and made
permanent at the end.

Operating range: per-layer sparsity up to 80%. The Wanda paper's design point is 50% and its sparsity sweep
(LLaMA-7B, Figure 2 and the appendix's) goes no higher than 80%; a run that needs more in any layer is run,
recorded as `outside_range` and labelled "outside its range", never counted in a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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

MAX_LAYER_SPARSITY = 0.8  # the declared operating range (see the module docstring)


@dataclass
class WandaParams:
    target_compression: float = option(2.0, min_exclusive=1, help="total / nonzero parameters")
    match_collapse: int = option(
        0, min=0, help="k > 0: aim at what folding LayerCollapse's last k blocks gives (overrides the target)"
    )
    calibration_size: int = option(128, min=1, help="training examples whose activations score the weights")
    allocation: str = option(
        "uniform",
        choices=["uniform", "owl"],
        later=True,
        help="uniform: one fraction in every layer (Wanda); owl: fractions by outlier ratio (OWL)",
    )
    convolutions: bool = option(False, later=True, help="prune Conv2d layers too (scores on unfolded inputs)")
    owl_m: float = option(5.0, min_exclusive=0, later=True, help="OWL: an outlier scores above M x the mean")
    owl_lambda: float = option(
        0.08, min=0, max=0.5, later=True, help="OWL: kept fractions spread over +-lambda around the mean"
    )


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| * ||X_j||_2: `weight` (out, in...) as rows, `input_norms` (in,) per input feature."""
    return weight.reshape(weight.shape[0], -1).abs() * input_norms.reshape(1, -1)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes, in every output row, the int(in * sparsity) lowest-scored weights."""
    drop = int(scores.shape[1] * sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if drop:
        lowest = torch.sort(scores, dim=-1, stable=True).indices[:, :drop]
        mask.scatter_(1, lowest, False)
    return mask


def _prunable_conv(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
    )


def prunable_layers(model: nn.Module, convolutions: bool = False) -> list[tuple[str, nn.Module]]:
    """Every nn.Linear but the classifier (and with `convolutions`, every ungrouped zero-padded Conv2d)."""
    head, _ = last_linear(model)
    return [
        (n, m)
        for n, m in model.named_modules()
        if (isinstance(m, nn.Linear) and n != head) or (convolutions and _prunable_conv(m))
    ]


def feature_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of its input features (tokens x in; a conv's unfolded patches)."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, layer.weight.shape[1])


def features(layer: nn.Module) -> int:
    return layer.weight[0].numel()


def allocate(
    sizes: list[int], to_remove: float, outlier_ratios: list[float] | None, spread: float
) -> list[float]:
    """Per-layer sparsities whose parameter-weighted sum removes `to_remove` weights of layers of `sizes`:
    one fraction for all (no ratios), or OWL's: kept fractions spread linearly with the outlier ratios over
    [0, 2 `spread`], shifted together, each sparsity held within [0, 1] (the shift solved with the bounds:
    at a low target a layer with many outliers keeps everything rather than going negative)."""
    total = sum(sizes)
    if outlier_ratios is None or max(outlier_ratios) == min(outlier_ratios):
        return [to_remove / total] * len(sizes)
    low, high = min(outlier_ratios), max(outlier_ratios)
    keep = [(r - low) / (high - low) * 2 * spread for r in outlier_ratios]

    def at(shift: float) -> list[float]:  # sparsity_l = shift - keep_l, within [0, 1]
        return [min(max(shift - k, 0.0), 1.0) for k in keep]

    unbounded = [(to_remove + sum(k * n for k, n in zip(keep, sizes))) / total - k for k in keep]
    if 0 <= min(unbounded) and max(unbounded) <= 1:
        return unbounded  # the closed form, where no layer meets a bound
    lo, hi = min(keep), max(keep) + 1.0  # nothing removed at lo, everything at hi: bisect between
    for _ in range(100):
        mid = (lo + hi) / 2
        removed = sum(s * n for s, n in zip(at(mid), sizes))
        lo, hi = (mid, hi) if removed < to_remove else (lo, mid)
    return at((lo + hi) / 2)


def outlier_ratio(scores: torch.Tensor, m: float) -> float:
    """The share of `scores` above m x their mean (OWL's `check_outlier_mean`, as a fraction)."""
    return float((scores > scores.mean() * m).double().mean())


def squared_feature_sums(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sum over tokens of X_j^2 per input feature of `layer` (float64): the square of Wanda's ||X_j||_2."""
    return feature_rows(layer, x.detach()).to(torch.float64).square().sum(0)


def forward_with_pre_hooks(model: nn.Module, layers: list[nn.Module], hook_for, inputs: torch.Tensor) -> None:
    """One forward pass of `model` on `inputs` with `hook_for(i)` as layer i's forward pre-hook."""
    handles = [m.register_forward_pre_hook(hook_for(i)) for i, m in enumerate(layers)]
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def input_norms(model: nn.Module, layers: list[nn.Module], inputs: torch.Tensor) -> list[torch.Tensor]:
    """||X_j||_2 of each layer's input features over every token of `inputs` (one forward pass)."""
    totals = [torch.zeros(features(m), dtype=torch.float64, device=m.weight.device) for m in layers]

    def record(i: int):
        def hook(module, args) -> None:  # (a pre-hook that returns a value replaces the layer's input)
            totals[i].add_(squared_feature_sums(module, args[0]))

        return hook

    forward_with_pre_hooks(model, layers, record, inputs)
    return [t.sqrt() for t in totals]


@torch.no_grad()
def sequential_masks(
    model: nn.Module, layers: list[nn.Module], sparsities: list[float], inputs: torch.Tensor
) -> list[torch.Tensor]:
    """Wanda's masks, each layer scored on the input it receives with every earlier layer already pruned:
    one forward pass in which a hook masks each layer as its input arrives (the weights are restored after;
    the caller applies the masks). A layer the pass reaches twice (shared weights) is refused."""
    masks: list[torch.Tensor | None] = [None] * len(layers)
    originals = [m.weight.detach().clone() for m in layers]

    def prune_on_arrival(i: int):
        def hook(module, args):
            if masks[i] is not None:
                raise ConfigError(f"wanda: layer {i} is used twice in one forward pass (shared weights)")
            norms = squared_feature_sums(module, args[0]).sqrt()
            masks[i] = row_mask(wanda_scores(module.weight.detach(), norms), sparsities[i])
            module.weight.mul_(masks[i].reshape(module.weight.shape))

        return hook

    try:
        forward_with_pre_hooks(model, layers, prune_on_arrival, inputs)
    finally:
        for m, w in zip(layers, originals):
            m.weight.copy_(w)
    missing = [i for i, mask in enumerate(masks) if mask is None]
    if missing:
        raise ConfigError(f"wanda: {len(missing)} prunable layers are never reached by the forward pass")
    return [mask.reshape(m.weight.shape) for mask, m in zip(masks, layers)]


@METHODS.register("wanda")
class Wanda(Method):
    title = "Wanda"
    summary = "prunes each row by |W| * ||X|| from calibration activations (uniform, or OWL's allocation)"
    operating_range = (
        f"per-layer sparsity up to {MAX_LAYER_SPARSITY:.0%} (the Wanda paper's sweep; design point 50%)"
    )
    Params = WandaParams

    search_source = (
        "plain Wanda has no hyperparameter of its own (the sparsity is the level); OWL's M and lambda: its "
        "official defaults 5 and 0.08 (luuyin/OWL) and values around them"
    )

    @classmethod
    def search_space(cls, params: WandaParams, optimizer: str) -> dict[str, list]:
        if params.allocation != "owl":
            return {}
        return {"owl_m": [3.0, 5.0, 7.0, 10.0], "owl_lambda": [0.02, 0.05, 0.08, 0.1, 0.2]}

    def prepare(self, model: nn.Module) -> nn.Module:
        """One-shot: score and mask layer by layer in forward order (on resume: the same masks again from
        the same weights and calibration examples)."""
        p, ctx = self.params, self.ctx
        target, matched = self.compression_target(model, p.target_compression)
        named = prunable_layers(model, p.convolutions)
        layers = [m for _, m in named]
        sizes = [m.weight.numel() for m in layers]
        dense, nonzero = count_parameters(model)
        to_remove = nonzero - dense / target
        if not layers or to_remove >= sum(sizes):
            raise ConfigError(
                f"wanda cannot reach {target:.3f}x: it prunes {sum(sizes):,} of {dense:,} parameters "
                f"({'Linear and Conv2d' if p.convolutions else 'nn.Linear'} weights, not the classifier); "
                "lower the target" + ("" if p.convolutions else " or set convolutions=true")
            )
        inputs, _ = ctx.training_batch(p.calibration_size)
        was_training = model.training
        model.eval()
        ratios, passes = None, 1
        if p.allocation == "owl":
            norms = input_norms(model, layers, inputs)
            ratios = [
                outlier_ratio(wanda_scores(m.weight.detach(), n), p.owl_m) for m, n in zip(layers, norms)
            ]
            passes = 2
        sparsities = allocate(sizes, to_remove, ratios, p.owl_lambda)
        if max(sparsities) >= 1:
            raise ConfigError(
                f"wanda allocation={p.allocation} would prune a layer whole for {target:.3f}x (sparsities "
                f"{min(sparsities):.1%} to {max(sparsities):.1%}): lower owl_lambda or the target"
            )
        masks = sequential_masks(model, layers, sparsities, inputs)
        for layer, mask in zip(layers, masks):
            prune.custom_from_mask(layer, "weight", mask)
        model.train(was_training)
        self.calibration_flops = (
            forward_flops(count_macs(model, ctx.input_shape)["gmacs"]) * len(inputs) * passes
        )
        self.report = {
            "target_compression": target,
            "achieved_compression": dense / count_parameters_effective(model),
            "allocation": p.allocation,
            "sparsity_per_layer": sparsities[0] if p.allocation == "uniform" else max(sparsities),
            "layer_sparsity": {n: s for (n, _), s in zip(named, sparsities)},
            "layers": [n for n, _ in named],
            "calibration": ctx.calibration_record(p.calibration_size, self.calibration_flops),
        }
        if ratios is not None:
            self.report["outlier_ratio"] = {n: r for (n, _), r in zip(named, ratios)}
        if max(sparsities) > MAX_LAYER_SPARSITY:
            sparsity, name = max(zip(sparsities, (n for n, _ in named)))
            self.report["outside_range"] = (
                f"layer {name} at {sparsity:.1%} sparsity, above the {MAX_LAYER_SPARSITY:.0%} Wanda is run at"
            )
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
