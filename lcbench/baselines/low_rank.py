"""`low_rank`: truncated-SVD factorisation of the Linear layers of the blocks LayerCollapse would fold, the
classic low-rank baseline for MLP compression (Denton et al., "Exploiting Linear Structure Within
Convolutional Networks for Efficient Evaluation", NeurIPS 2014; Sainath et al., "Low-rank matrix
factorization for deep neural network training with high-dimensional output targets", ICASSP 2013).

Each selected `Linear(n -> m)` with weight W becomes two, `Linear(n -> r, no bias)` then `Linear(r -> m)`,
initialised from W ~ U_r S_r V_r^T (each factor takes sqrt(S_r), computed in float64): parameters
m*n -> r*(n + m). It is the inverse of a fold (one Linear becomes two) and really lowers MACs and latency.
The ranks must bring the model within 2% of the compression asked for: `match_collapse=k`'s (what
folding the last k blocks gives, measured on a copy) or `target_compression`. Several allocations are
candidates (`allocations`): the head left whole (when the target allows) or factorised too, each under
three rules: singular-value energy kept across the layers (global), each layer's own share of it (per-layer
normalised: starved a wide layer to rank 1 beside a whole 10-class head) and one shared rank fraction. The
one with the lowest task loss on 128 training examples (drawn with the run's seed; never the held-out set)
is factorised, among the useful ones: no layer at rank 1, and a C-class head at rank C - 1
or more. When no candidate is useful the run is still trained but reported `infeasible` (a point no
allocation reaches at a useful rank: the report labels it and never counts it as another method's win).
Then the factorised model is fine-tuned with the run's budget, like every other method.

Neither paper publishes PyTorch code; a test checks the factors against numpy's SVD (each factor
sqrt(S_r) of it, the bias on the second) and the Eckart-Young error. Departures, and why: Denton et al. and
Sainath et al. choose ranks by hand per layer; lcbench chooses them by the rules above, so that every point
meets its compression target within 2%, and the choice is scored on training examples only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
from lcbench.training.tasks import TASKS
from lcbench.zoo import architecture
from lcbench.zoo.collapse import MATCH_TOLERANCE, collapse_targets, select_blocks
from lcbench.zoo.measure import count_parameters
from lcbench.zoo.models import last_linear

RULES = ("energy", "normalised", "uniform")
AIM_SLACK = 0.95 * MATCH_TOLERANCE  # the lowest compression aimed at: inside the tolerance, never on its edge
CALIBRATION_SIZE = 128  # training examples that score the allocations (16 for a language model's logits)


@dataclass
class LowRankParams:
    k: int = option(1, min=1, help="factorise the Linear layers of the last k collapsible blocks")
    match_collapse: int = option(
        0, min=0, help="k > 0: those of the last k blocks, at the compression folding them gives (overrides)"
    )
    target_compression: float = option(1.5, min_exclusive=1, help="total / remaining parameters")


def block_linears(model: nn.Module, k: int, model_name: str) -> list[str]:
    """The Linear layers (module paths) of the last k collapsible blocks: those a fold would remove (once
    each: in a plain MLP one Linear ends a block and starts the next)."""
    paths = []
    for block in select_blocks(model, k, model_name=model_name):
        prefix = f"{block.container}." if block.container else ""
        paths += [prefix + block.first, prefix + block.second]
    return list(dict.fromkeys(paths))


def _svd(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linalg.svd(linear.weight.detach().to(torch.float64), full_matrices=False)


def factorised(linear: nn.Linear, rank: int, svd: tuple | None = None) -> nn.Sequential:
    """Two Linears whose product is the best rank-`rank` approximation of `linear` (Eckart-Young)."""
    u, s, vh = svd if svd is not None else _svd(linear)
    root = s[:rank].sqrt()
    down = nn.Linear(linear.in_features, rank, bias=False, dtype=torch.float64)
    up = nn.Linear(rank, linear.out_features, bias=linear.bias is not None, dtype=torch.float64)
    with torch.no_grad():
        down.weight.copy_(root[:, None] * vh[:rank])
        up.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            up.bias.copy_(linear.bias)
    like = linear.weight
    return nn.Sequential(down, up).to(device=like.device, dtype=like.dtype)


@dataclass
class Allocation:
    """Ranks for some of the block's layers, how they were chosen, and what they give."""

    rule: str  # "energy" (global), "normalised" (per layer) or "uniform" (one rank fraction)
    ranks: dict[str, int]
    achieved: float
    kept_energy: dict[str, float] = field(default_factory=dict)  # per layer, of its squared spectrum
    loss: float = math.nan  # the task's loss on the training calibration batch, factorised at these ranks
    floors: dict[str, int] = field(default_factory=dict)  # the least useful rank of a layer (default 2)

    @property
    def useful(self) -> bool:
        """No layer squeezed to one direction, and a C-class head kept at rank C - 1 or more (softmax
        ignores a shift of the logits, so C - 1 is all a head needs, and less merges classes)."""
        return all(rank >= self.floors.get(path, 2) for path, rank in self.ranks.items())


def ranks_for(
    model: nn.Module, paths: list[str], target: float, rule: str = "energy", spectra: dict | None = None
) -> tuple[dict[str, int], float]:
    """Ranks of the layers at `paths` that bring dense/remaining parameters to `target` (within 2%: down to
    just inside the tolerance's lower edge).

    From rank 1 everywhere, the next singular triplet goes, greedily, where it keeps the most energy per
    parameter it costs while the parameters removed still reach the target: `energy` counts sigma^2 itself,
    so the allocation keeps the most energy across the layers (global); `normalised` counts sigma^2 /
    ||W||_F^2, each layer's own share (a layer of small weights is then valued like a large one);
    `uniform` gives every layer one fraction of its break-even rank. A layer never goes past its break-even
    rank (r*(n+m) < n*m)."""
    dense = count_parameters(model)[0]
    # parameters the factorisation must remove: down to the matching tolerance's lower edge (a rank-8 layer
    # inside it beats rank 1 at the exact target), as every matched method may land anywhere within it
    needed = dense - dense / (target * (1 - AIM_SLACK))
    layers = {p: model.get_submodule(p) for p in paths}
    cost = {p: layer.in_features + layer.out_features for p, layer in layers.items()}
    full = {p: layer.in_features * layer.out_features for p, layer in layers.items()}
    spectra = spectra or {p: _svd(layer)[1] for p, layer in layers.items()}
    energy = {p: spectra[p].square() for p in paths}
    if rule == "normalised":
        energy = {p: e / e.sum() for p, e in energy.items()}
    energy = {p: e.tolist() for p, e in energy.items()}
    removed = sum(full[p] - cost[p] for p in paths)
    if removed < needed:
        most = dense / (dense - removed)
        raise ConfigError(
            f"low_rank cannot reach {target:.3f}x by factorising {', '.join(paths)}: rank 1 everywhere gives "
            f"{most:.3f}x; use a larger k or a lower target_compression"
        )
    breakeven = {p: max(1, (full[p] - 1) // cost[p]) for p in paths}
    if rule == "uniform":
        ranks = _uniform(paths, breakeven, cost, full, needed)
        removed = sum(full[p] - ranks[p] * cost[p] for p in paths)
    else:
        ranks = dict.fromkeys(paths, 1)
        while True:
            grows = [
                (energy[p][ranks[p]] / cost[p], p)
                for p in paths
                if ranks[p] < len(energy[p])
                and (ranks[p] + 1) * cost[p] < full[p]
                and removed - cost[p] >= needed
            ]
            if not grows:
                break
            _, path = max(grows)
            ranks[path] += 1
            removed -= cost[path]
    achieved = dense / (dense - removed)
    if abs(achieved / target - 1) > MATCH_TOLERANCE:
        raise ConfigError(
            f"low_rank reaches {achieved:.3f}x, not {target:.3f}x within 2%, factorising {paths}"
        )
    return ranks, achieved


def _uniform(paths, breakeven, cost, full, needed) -> dict[str, int]:
    """The largest shared fraction f of every layer's break-even rank whose ranks still remove `needed`."""
    low, high = 0.0, 1.0
    for _ in range(40):
        f = (low + high) / 2
        ranks = {p: max(1, int(f * breakeven[p])) for p in paths}
        if sum(full[p] - ranks[p] * cost[p] for p in paths) >= needed:
            low = f
        else:
            high = f
    return {p: max(1, int(low * breakeven[p])) for p in paths}


def allocations(
    model: nn.Module, paths: list[str], head: str, target: float, svds: dict | None = None
) -> list[Allocation]:
    """Every candidate allocation: the layers factorised with the head left whole (when that can reach
    the target) or with it, each under every rule; those that cannot reach the target are left out.
    `head` is the model's last Linear (its classifier); `svds` the layers' SVDs, if computed already."""
    svds = svds or {p: _svd(model.get_submodule(p)) for p in paths}
    classes = model.get_submodule(head).out_features
    floors = {head: classes - 1} if classes > 2 else {}
    spectra = {p: svd[1] for p, svd in svds.items()}
    sets = [[p for p in paths if p != head]] if head in paths and len(paths) > 1 else []
    sets.append(paths)
    found = []
    for layers in sets:
        for rule in RULES:
            try:
                ranks, achieved = ranks_for(model, layers, target, rule, spectra)
            except ConfigError:
                continue
            kept = {
                p: float(spectra[p][:r].square().sum() / spectra[p].square().sum()) for p, r in ranks.items()
            }
            if not any(a.ranks == ranks for a in found):
                found.append(Allocation(rule, ranks, achieved, kept, floors=floors))
    return found


@torch.no_grad()
def calibration_loss(model: nn.Module, ranks: dict[str, int], batch: tuple, task: str, svds: dict) -> float:
    """The task's loss on a training batch of the model factorised at `ranks` (what fine-tuning starts
    from: logits may change in scale without harm, a merged class may not). The layers are swapped in
    place and put back (no copy of the model)."""
    originals = {path: model.get_submodule(path) for path in ranks}
    was_training = model.training
    model.eval()
    try:
        for path, rank in ranks.items():
            _replace(model, path, factorised(originals[path], rank, svds[path]))
        inputs, targets = batch
        return float(TASKS[task].loss(model(inputs).float(), targets))
    finally:
        for path, layer in originals.items():
            _replace(model, path, layer)
        model.train(was_training)


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@METHODS.register("low_rank")
class LowRank(Method):
    title = "Low-rank (SVD)"
    operating_range = (
        "useful ranks: no layer at rank 1, a C-class head at rank C - 1 or more (beyond: infeasible)"
    )
    summary = "truncated-SVD factorisation of the Linears of the blocks LayerCollapse folds"
    Params = LowRankParams
    search_source = (
        "no hyperparameter of its own (the rank is the level's; the allocation is its useful-rank rule)"
    )

    @classmethod
    def check(cls, params: LowRankParams, cfg) -> None:
        what = "match_collapse" if params.match_collapse else "k"
        architecture.selected(cfg, params.match_collapse or params.k, what=what)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Factorise once on the pretrained weights (on resume: the same ranks from the same shapes; the
        checkpoint then loads the fine-tuned factors)."""
        p, cfg = self.params, self.ctx.cfg
        k = p.match_collapse or p.k
        paths = block_linears(model, k, cfg.model)
        target = p.target_compression
        if p.match_collapse:
            self.report["matched_to_layercollapse"] = collapse_targets(
                model, k, self.ctx.input_shape, cfg.model
            )
            target = self.report["matched_to_layercollapse"]["compression"]
        svds = {path: _svd(model.get_submodule(path)) for path in paths}
        self.ranks, achieved = self._allocate(model, paths, target, svds)
        for path, rank in self.ranks.items():
            _replace(model, path, factorised(model.get_submodule(path), rank, svds[path]))
        self.report.update(target_compression=target, achieved_compression=achieved, ranks=self.ranks)
        return model

    def _allocate(
        self, model: nn.Module, paths: list[str], target: float, svds: dict
    ) -> tuple[dict[str, int], float]:
        """The candidate allocation (`allocations`) with the lowest task loss on a training
        calibration batch, among the useful ones (`Allocation.useful`); none useful: labelled infeasible."""
        head = last_linear(model)[0]
        found = allocations(model, paths, head, target, svds)
        if not found:  # every candidate missed the target: ranks_for says why
            ranks_for(model, paths, target)
        size = 16 if self.ctx.task == "language_modeling" else CALIBRATION_SIZE
        batch = self.ctx.training_batch(size)
        for allocation in found:
            allocation.loss = calibration_loss(model, allocation.ranks, batch, self.ctx.task, svds)
        useful = [a for a in found if a.useful]
        best = min(useful or found, key=lambda a: a.loss)
        self.report["allocation"] = {
            "rule": best.rule,
            "head_whole": head not in best.ranks,
            "kept_energy": best.kept_energy,
            "calibration_loss": best.loss,
            "candidates": [
                {"rule": a.rule, "ranks": a.ranks, "calibration_loss": a.loss, "useful": a.useful}
                for a in found
            ],
        }
        self.report["infeasible"] = not useful  # no allocation reaches the target at a useful rank
        return best.ranks, best.achieved

    def match_target(self) -> dict[str, Any] | None:
        matched = self.report.get("matched_to_layercollapse")
        return {"quantity": "compression", "target": matched["compression"]} if matched else None

    def structure(self) -> dict[str, Any]:
        return {"ranks": self.ranks}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        for path, rank in structure["ranks"].items():
            _replace(model, path, factorised(model.get_submodule(path), rank))  # weights: loaded next
        return model
