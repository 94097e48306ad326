"""`layer_fusion` (O'Neill, Ver Steeg, Galstyan, ACML 2021, arXiv 2007.14917): tie the weights of similar
layers.

Candidates are Linear/Conv layers (the classifier excepted) whose weights have the same type and shape in
different layers. Pairs are ranked by weight similarity (`cosine` of the flattened weights, `wasserstein`:
the 1-D Wasserstein distance of the weight values, or linear `cka` of the weight matrices), most similar
first, and fused greedily: the two layers (or already fused groups) are tied to ONE shared `nn.Parameter`
for the weight and one for the bias, so the optimizer updates one tensor. `mode`:
- `average`: the shared tensor is the (group-size weighted) mean of the two;
- `mix`: each element is taken at random from one or the other (seeded);
- `freeze`: the shared tensor keeps the first layer's values and is not trained further (our reading of
  the paper's freezing variant).
The target (unique parameters) is reached over `stages` stages spread over the epochs, each followed by
retraining. With `match_collapse`, a merge is only taken if the model stays within 2% above the target:
when the most similar pair would overshoot, the most similar pair that still fits is taken instead, and
fusion stops when none fits. A run that ends more than 2% below its target is recorded as not matched
(`match` in the record). A shared tensor counts once; MACs and depth do not fall (fused layers still run).

No official code is published (the first author's publication page lists none), so lcbench follows the
paper's description; a test checks each similarity against its reference implementation (scipy's cosine
distance and 1-D Wasserstein distance; Kornblith et al.'s linear CKA, google-research/google-research
`representation_similarity`, in its Gram form). Departures, and why: linear CKA is an addition of lcbench's
(a third similarity beside the weight-distribution ones), computed on the weight matrices with their rows
as examples, since fusion compares weights, not activations; `freeze` is our reading of the paper's
freezing variant; the staged schedule shares lcbench's trainer and epochs with every other method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method, RunContext
from lcbench.zoo.collapse import MATCH_TOLERANCE, collapse_targets
from lcbench.zoo.measure import WEIGHT_LAYERS, count_parameters
from lcbench.zoo.models import last_linear


@dataclass
class FusionParams:
    target_compression: float = option(2.0, min_exclusive=1, help="original / unique parameters")
    similarity: str = option("cosine", choices=["cosine", "wasserstein", "cka"])
    stages: int = option(10, min=1, help="fusion stages interleaved with retraining")
    mode: str = option("average", choices=["average", "mix", "freeze"])
    match_collapse: int = option(
        0, min=0, help="k > 0: target the compression of folding LayerCollapse's last k blocks"
    )


def weight_similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> float:
    """Higher is more similar (the Wasserstein distance is negated)."""
    a, b = a.detach().double(), b.detach().double()
    if kind == "cosine":
        return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    if kind == "wasserstein":
        from scipy.stats import wasserstein_distance  # only for similarity=wasserstein (scipy is heavy)

        return -float(wasserstein_distance(a.flatten().cpu().numpy(), b.flatten().cpu().numpy()))
    x, y = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)  # linear CKA, rows as examples
    x, y = x - x.mean(0), y - y.mean(0)
    hsic = (x.T @ y).norm() ** 2
    return (hsic / ((x.T @ x).norm() * (y.T @ y).norm())).item()


def candidate_layers(model: nn.Module) -> dict[tuple, list[str]]:
    """Layer names grouped by (type, weight shape, has bias): only layers within a class can be tied."""
    head_name, _ = last_linear(model)
    classes: dict[tuple, list[str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_LAYERS) and name != head_name:
            classes.setdefault((type(m).__name__, tuple(m.weight.shape), m.bias is not None), []).append(name)
    return {key: names for key, names in classes.items() if len(names) > 1}


def tensor_size(module: nn.Module) -> int:
    return module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)


def tie(
    model: nn.Module,
    names: list[str],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    trainable: bool = True,
) -> None:
    """Make every named layer use one shared weight (and bias) Parameter."""
    shared_w = nn.Parameter(weight.detach().clone(), requires_grad=trainable)
    shared_b = nn.Parameter(bias.detach().clone(), requires_grad=trainable) if bias is not None else None
    for name in names:
        module = model.get_submodule(name)
        module.weight = shared_w
        if shared_b is not None:
            module.bias = shared_b


def apply_groups(model: nn.Module, groups: list[list[str]]) -> nn.Module:
    """Re-tie recorded groups (to rebuild a fused model; values come from the state_dict loaded next)."""
    for group in groups:
        first = model.get_submodule(group[0])
        tie(model, group, first.weight, first.bias)
    return model


@METHODS.register("layer_fusion")
class LayerFusion(Method):
    title = "Layer fusion"
    summary = "ties the weights of similar same-shape layers"
    Params = FusionParams

    search_source = (
        "similarity and mode: the alternatives of O'Neill et al. 2021 (arXiv 2007.14917), cosine and "
        "averaging first"
    )

    @classmethod
    def search_space(cls, params: FusionParams, optimizer: str) -> dict[str, list]:
        return {"similarity": ["cosine", "wasserstein", "cka"], "mode": ["average", "mix", "freeze"]}

    def __init__(self, params: FusionParams, ctx: RunContext) -> None:
        super().__init__(params, ctx)
        self.groups: list[list[str]] = []  # each fused group, its first member holding the shared tensors
        self.frozen: list[str] = []  # groups (by first member) whose shared tensor is frozen
        self.stages_done = 0
        self.history: list[dict] = []
        self.matched: dict | None = None

    # -- plan -------------------------------------------------------------------------------------------

    def prepare(self, model: nn.Module) -> nn.Module:
        p = self.params
        self.classes = candidate_layers(model)
        dense = count_parameters(model)[0]
        self.original_params = dense
        self.target = p.target_compression
        if p.match_collapse:
            self.matched = collapse_targets(model, p.match_collapse, self.ctx.input_shape, self.ctx.cfg.model)
            self.target = self.matched["compression"]
        self.needed = dense - dense / self.target
        # a matched run never overshoots its target by more than the tolerance (a plain target: at least it)
        self.max_saving = dense - dense / (self.target * (1 + MATCH_TOLERANCE)) if self.matched else dense
        reachable = sum((len(n) - 1) * tensor_size(model.get_submodule(n[0])) for n in self.classes.values())
        if reachable < self.needed:
            best = dense / (dense - reachable) if reachable < dense else float("inf")
            raise ConfigError(
                f"layer_fusion cannot reach {self.target:.3f}x on {self.ctx.cfg.model}: tying every "
                f"same-shape Linear/Conv layer ({sum(map(len, self.classes.values()))} layers in "
                f"{len(self.classes)} shape classes) gives at most {best:.2f}x"
            )
        self._run_stages_due(model, epoch=0)
        return model

    def _stage_epoch(self, stage: int) -> int:
        """Stage s (1-based) runs after epoch floor((s-1) * epochs / stages); stage 1 before training."""
        return (stage - 1) * self.ctx.cfg.epochs // self.params.stages

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        return self._run_stages_due(model, epoch)

    def _run_stages_due(self, model: nn.Module, epoch: int) -> bool:
        ran = False
        while self.stages_done < self.params.stages and self._stage_epoch(self.stages_done + 1) <= epoch:
            self.stages_done += 1
            self._fuse_until(model, math.ceil(self.needed * self.stages_done / self.params.stages), epoch)
            ran = True
        return ran

    def _saved(self, model: nn.Module) -> int:
        return self.original_params - count_parameters(model)[0]

    def _fuse_until(self, model: nn.Module, saving: float, epoch: int) -> None:
        cache: dict[tuple[str, str], float] = {}  # similarities of current representatives (this stage)
        merges = []
        while self._saved(model) < saving:
            best = None
            room = self.max_saving - self._saved(model)
            for names in self.classes.values():
                if tensor_size(model.get_submodule(names[0])) > room:
                    continue  # merging this class would overshoot the target
                reps = sorted({self._group_of(n)[0] for n in names})
                for i, a in enumerate(reps):
                    for b in reps[i + 1 :]:
                        if (a, b) not in cache:
                            wa, wb = model.get_submodule(a).weight, model.get_submodule(b).weight
                            cache[(a, b)] = weight_similarity(wa, wb, self.params.similarity)
                        if best is None or cache[(a, b)] > best[0]:
                            best = (cache[(a, b)], a, b)
            if best is None:  # every candidate tied, or each remaining merge would overshoot
                break
            similarity, a, b = best
            self._merge(model, a, b)
            cache = {k: v for k, v in cache.items() if a not in k and b not in k}
            merges.append({"a": a, "b": b, "similarity": similarity})
        self.history.append(
            {
                "stage": self.stages_done,
                "after_epoch": epoch,
                "merges": merges,
                "unique_params": count_parameters(model)[0],
            }
        )

    def _group_of(self, name: str) -> list[str]:
        return next((g for g in self.groups if name in g), [name])

    @torch.no_grad()
    def _merge(self, model: nn.Module, a: str, b: str) -> None:
        ga, gb = self._group_of(a), self._group_of(b)
        ma, mb = model.get_submodule(ga[0]), model.get_submodule(gb[0])
        mode = self.params.mode
        if mode == "average":
            wa, wb = len(ga), len(gb)
            weight = (ma.weight * wa + mb.weight * wb) / (wa + wb)
            bias = (ma.bias * wa + mb.bias * wb) / (wa + wb) if ma.bias is not None else None
        elif mode == "mix":
            gen = torch.Generator(device=ma.weight.device).manual_seed(
                self.ctx.cfg.seed * 1000 + len(self.groups)
            )
            pick = torch.rand(ma.weight.shape, generator=gen, device=ma.weight.device) < 0.5
            weight = torch.where(pick, ma.weight, mb.weight)
            bias = None
            if ma.bias is not None:
                pick_b = torch.rand(ma.bias.shape, generator=gen, device=ma.bias.device) < 0.5
                bias = torch.where(pick_b, ma.bias, mb.bias)
        else:
            weight, bias = ma.weight, ma.bias
        merged = sorted(ga + gb)
        self.groups = [g for g in self.groups if g is not ga and g is not gb] + [merged]
        trainable = mode != "freeze"
        if not trainable:
            self.frozen = sorted({*self.frozen, merged[0]} - {ga[0], gb[0]})
        tie(model, merged, weight, bias, trainable=trainable)

    # -- record, resume, rebuild ------------------------------------------------------------------------

    def match_target(self) -> dict[str, Any] | None:
        return {"quantity": "compression", "target": self.target} if self.matched else None

    def finalize(self, model: nn.Module) -> nn.Module:
        self.report = {
            "target_compression": self.target,
            "matched_to_layercollapse": self.matched,
            "achieved_compression": self.original_params / count_parameters(model)[1],
            "groups": self.groups,
            "stages": self.history,
            "similarity": self.params.similarity,
            "mode": self.params.mode,
            "note": "MACs and depth are unchanged: fused layers still run",
        }
        return model

    def structure(self) -> dict[str, Any]:
        return {"groups": self.groups}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return apply_groups(model, structure["groups"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "frozen": self.frozen,
            "stages_done": self.stages_done,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> nn.Module:
        self.groups, self.frozen = [list(g) for g in state["groups"]], list(state["frozen"])
        self.stages_done, self.history = state["stages_done"], list(state["history"])
        apply_groups(model, self.groups)
        for first in self.frozen:
            for p in model.get_submodule(first).parameters(recurse=False):
                p.requires_grad_(False)
        return model
