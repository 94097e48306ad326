"""`magnitude_pruning` with ShrinkBench's conventions (Blalock et al., "What is the State of Neural Network
Pruning?", MLSys 2020).

Unstructured (`scope=global|layerwise`): L1 magnitude pruning with `torch.nn.utils.prune` of the weights of
every Linear and Conv layer except the classifier, one shot on the pretrained model, to
`target_compression` = total parameters / nonzero parameters of the whole model; fine-tuning then keeps
the masks fixed, and `prune.remove` makes them permanent at the end. Global: one |w| threshold over all
prunable tensors; layerwise: the same fraction of each tensor. Unstructured sparsity does not run faster.

Structured (`scope=structured`): L1-norm channel/neuron pruning with torch-pruning, which removes them
physically, to `target_macs_ratio` (original MACs / pruned MACs); MACs and latency really fall. For timm
attention blocks the attention layers are left whole (their head layout is kept) and the MLPs pruned.

Checked against ShrinkBench (JJGO/shrinkbench, `strategies/magnitude.py::GlobalMagWeight` and
`LayerMagWeight`, `pruning/utils.py::fraction_to_keep`, `strategies/utils.py::fraction_threshold`): a test
rebuilds its masks and finds the same surviving weights, but for the one at the boundary its quantile
interpolates across. Departures, and why: ShrinkBench masks a prunable layer's bias too, with the same
threshold; lcbench keeps biases dense (`torch.nn.utils.prune` on the weights, the common practice; a bias is
1/fan-in of its layer's weights), so the weights carry the whole target. ShrinkBench's fine-tuning
and schedules are its own; here every method shares one trainer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import Attention
from torch import nn
from torch.nn.utils import prune

from lcbench.core import extras
from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
from lcbench.zoo.collapse import MATCH_TOLERANCE, collapse_targets
from lcbench.zoo.measure import WEIGHT_LAYERS, count_macs, count_parameters, example_input
from lcbench.zoo.models import last_linear

TOLERANCE = MATCH_TOLERANCE  # achieved compression within 2% of the request
SHAPE_ATTRIBUTES = (
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "num_features",
    "normalized_shape",
    "groups",
)


@dataclass
class PruningParams:
    scope: str = option("global", choices=["global", "layerwise", "structured"])
    target_compression: float = option(2.0, min_exclusive=1, help="unstructured: total / nonzero parameters")
    target_macs_ratio: float = option(2.0, min_exclusive=1, help="structured: original / pruned MACs")
    match_collapse: int = option(
        0, min=0, help="k > 0: aim at what folding LayerCollapse's last k blocks gives (overrides targets)"
    )


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and Conv layers except the classifier (ShrinkBench's convention)."""
    head_name, _ = last_linear(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS) and n != head_name]


def prune_unstructured(model: nn.Module, target: float, scope: str) -> dict:
    """Prune to `target` = dense / nonzero parameters of the whole model; returns target and achieved."""
    dense, nonzero = count_parameters(model)
    layers = prunable_layers(model)
    weights = [m.weight for _, m in layers]
    total_prunable = sum(w.numel() for w in weights)
    nonzero_prunable = sum(int(torch.count_nonzero(w)) for w in weights)
    to_remove = nonzero - dense / target
    if to_remove > nonzero_prunable:
        best = dense / (nonzero - nonzero_prunable)
        raise ConfigError(
            f"target_compression={target} is out of reach: zeroing every prunable weight "
            f"(all Linear/Conv but the classifier) gives at most {best:.2f}x"
        )
    if scope == "global":  # one |w| threshold: prune the smallest (existing zeros come first)
        amount = int(round(to_remove)) + (total_prunable - nonzero_prunable)
        prune.global_unstructured(
            [(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=amount
        )
    else:  # the same fraction of each tensor's nonzero weights
        fraction = to_remove / nonzero_prunable
        for _, m in layers:
            nnz = int(torch.count_nonzero(m.weight))
            prune.l1_unstructured(m, "weight", amount=int(round(fraction * nnz)) + m.weight.numel() - nnz)
    achieved = dense / count_parameters_effective(model)
    if abs(achieved / target - 1) > TOLERANCE:
        raise ConfigError(f"pruning reached {achieved:.3f}x instead of {target}x (more than 2% off)")
    return {"target_compression": target, "achieved_compression": achieved}


def count_parameters_effective(model: nn.Module) -> int:
    """Nonzero parameters with pruning masks applied (weight_orig * mask counts as the weight); a tensor
    shared by several layers (GPT-2's tied embedding and output layer) counted once."""
    total, seen = 0, set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.endswith("_orig"):
                p = getattr(module, name[: -len("_orig")])
            total += int(torch.count_nonzero(p.detach()))
    return total


def prune_structured(model: nn.Module, input_shape: tuple[int, ...], target: float) -> tuple[nn.Module, dict]:
    """Channel pruning with torch-pruning to `target` MAC ratio (bisection on the uniform pruning ratio)."""
    extras.require("torch_pruning", purpose="magnitude_pruning scope=structured")
    import torch_pruning as tp  # only for scope=structured: importing it costs about a second

    macs0 = count_macs(model, input_shape)["gmacs"]

    def pruned_at(ratio: float) -> nn.Module:
        candidate = copy.deepcopy(model)
        example = example_input(candidate, input_shape, 1)
        pruner = tp.pruner.MagnitudePruner(
            candidate,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=_ignored(candidate),
        )
        pruner.step()
        return candidate

    low, high, best = 0.0, 0.95, None
    for _ in range(20):
        mid = (low + high) / 2
        candidate = pruned_at(mid)
        ratio = macs0 / count_macs(candidate, input_shape)["gmacs"]
        if abs(ratio / target - 1) <= TOLERANCE / 2:
            best = (mid, candidate, ratio)
            break
        low, high = (mid, high) if ratio < target else (low, mid)
        if best is None or abs(ratio - target) < abs(best[2] - target):
            best = (mid, candidate, ratio)
    ratio_used, pruned, achieved = best
    if abs(achieved / target - 1) > TOLERANCE:
        raise ConfigError(
            f"structured pruning reaches {achieved:.2f}x MACs at most near {target}x on this model "
            "(the classifier and attention layers are kept whole); lower target_macs_ratio"
        )
    return pruned, {"target_macs_ratio": target, "achieved_macs_ratio": achieved, "channel_ratio": ratio_used}


def _ignored(model: nn.Module) -> list[nn.Module]:

    return [last_linear(model)[1], *[m for m in model.modules() if isinstance(m, Attention)]]


def pruned_shapes(model: nn.Module) -> dict[str, Any]:
    """What rebuilds a structurally pruned model: every tensor's shape and the resized modules' attributes."""
    tensors = {n: list(t.shape) for n, t in [*model.named_parameters(), *model.named_buffers()]}
    attributes = {}
    for name, module in model.named_modules():
        values = {a: getattr(module, a) for a in SHAPE_ATTRIBUTES if hasattr(module, a)}
        attributes[name] = {a: list(v) if isinstance(v, tuple) else v for a, v in values.items()}
    return {"tensors": tensors, "attributes": attributes}


def resize_like(model: nn.Module, shapes: dict[str, Any]) -> nn.Module:
    """Give a fresh original model the recorded shapes (values come from the state_dict loaded next)."""
    for name, attrs in shapes["attributes"].items():
        module = model.get_submodule(name) if name else model
        for attr, value in attrs.items():
            setattr(module, attr, tuple(value) if isinstance(value, list) else value)
    for name, shape in shapes["tensors"].items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, leaf)
        if old is not None and list(old.shape) != shape:
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                setattr(parent, leaf, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                parent.register_buffer(leaf, new)
    return model


@METHODS.register("magnitude_pruning")
class MagnitudePruning(Method):
    title = "Magnitude pruning"
    summary = "L1 magnitude pruning (global, layerwise) or structured channel pruning"
    Params = PruningParams

    search_source = (
        "scope: ShrinkBench's global and layerwise magnitude pruning (Blalock et al. 2020); the structured "
        "variant is another method and is not searched"
    )

    @classmethod
    def search_space(cls, params: PruningParams, optimizer: str) -> dict[str, list]:
        return {} if params.scope == "structured" else {"scope": ["global", "layerwise"]}

    def prepare(self, model: nn.Module) -> nn.Module:
        """One-shot pruning; on resume it re-derives the same masks or shapes from the same weights."""
        p = self.params
        self.shapes = None
        matched = {}
        target_compression, target_macs_ratio = p.target_compression, p.target_macs_ratio
        if p.match_collapse:
            matched = collapse_targets(model, p.match_collapse, self.ctx.input_shape, self.ctx.cfg.model)
            target_compression, target_macs_ratio = matched["compression"], matched["macs_ratio"]
        if p.scope == "structured":
            model, self.report = prune_structured(model, self.ctx.input_shape, target_macs_ratio)
            self.shapes = pruned_shapes(model)
        else:
            self.report = prune_unstructured(model, target_compression, p.scope)
        self.report["scope"] = p.scope
        if matched:
            self.report["matched_to_layercollapse"] = matched
        return model

    def match_target(self) -> dict[str, Any] | None:
        matched = self.report.get("matched_to_layercollapse")
        if not matched:
            return None
        if self.params.scope == "structured":
            return {"quantity": "macs_ratio", "target": matched["macs_ratio"]}
        return {"quantity": "compression", "target": matched["compression"]}

    def finalize(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if prune.is_pruned(module) and hasattr(module, "weight_orig"):
                prune.remove(module, "weight")  # masks made permanent: an ordinary dense state_dict
        return model

    def structure(self) -> dict[str, Any]:
        return {"shapes": self.shapes} if self.params.scope == "structured" else {}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return resize_like(model, structure["shapes"]) if "shapes" in structure else model
