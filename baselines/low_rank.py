"""`low_rank`: truncated-SVD factorisation of the Linear layers of the blocks LayerCollapse would fold, the
classic low-rank baseline for MLP compression (Denton et al., "Exploiting Linear Structure Within
Convolutional Networks for Efficient Evaluation", NeurIPS 2014; Sainath et al., "Low-rank matrix
factorization for deep neural network training with high-dimensional output targets", ICASSP 2013).

Each selected `Linear(n -> m)` with weight W becomes two, `Linear(n -> r, no bias)` then `Linear(r -> m)`,
initialised from W ~ U_r S_r V_r^T (each factor takes sqrt(S_r), computed in float64): parameters
m*n -> r*(n + m). It is the inverse of a fold (one Linear becomes two) and really lowers MACs and latency.
The ranks are allocated by singular-value energy: from rank 1 everywhere, the next singular triplet goes to
the layer where it keeps the most of that layer's energy per parameter, until the model is within 2% of
the compression asked for: `match_collapse=k`'s (what folding the last k blocks gives, measured on a copy)
or `target_compression` (a shared rank fraction gave a 10-class classifier rank 1). Then the factorised
model is fine-tuned with the run's budget, like every other method. Where the matched compression is one
that removes a whole hidden layer (a fold of Linear -> act -> Linear -> classifier), factorising layer by
layer must take a wide layer to rank 1 and the model stays near chance whatever the allocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lcbench.collapse import MATCH_TOLERANCE, collapse_targets, select_blocks
from lcbench.errors import ConfigError
from lcbench.fields import option
from lcbench.measure import count_parameters
from lcbench.methods import METHODS, Method


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


def factorised(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Two Linears whose product is the best rank-`rank` approximation of `linear` (Eckart-Young)."""
    weight = linear.weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
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


def ranks_for(model: nn.Module, paths: list[str], target: float) -> tuple[dict[str, int], float]:
    """Ranks that bring dense/remaining parameters to `target` while keeping as much of each layer as
    possible: from rank 1 everywhere, the next singular triplet is added greedily where it keeps the most of
    its layer's energy (sigma^2 / ||W||_F^2) per parameter, while the parameters removed still reach the
    target. A layer never goes past its break-even rank (r*(n+m) < n*m), so a small classifier keeps nearly
    all of its rank instead of the rank a shared fraction would give it."""
    dense = count_parameters(model)[0]
    needed = dense - dense / target  # parameters the factorisation must remove
    layers = {p: model.get_submodule(p) for p in paths}
    cost = {p: layer.in_features + layer.out_features for p, layer in layers.items()}
    full = {p: layer.in_features * layer.out_features for p, layer in layers.items()}
    energy = {}
    for path, layer in layers.items():
        s = torch.linalg.svdvals(layer.weight.detach().to(torch.float64)).square()
        energy[path] = (s / s.sum()).tolist()
    ranks = dict.fromkeys(paths, 1)
    removed = sum(full[p] - cost[p] for p in paths)
    if removed < needed:
        most = dense / (dense - removed)
        raise ConfigError(
            f"low_rank cannot reach {target:.3f}x by factorising {', '.join(paths)}: rank 1 everywhere gives "
            f"{most:.3f}x; use a larger k or a lower target_compression"
        )
    while True:
        grows = [
            (energy[p][ranks[p]] / cost[p], p)
            for p in paths
            if (ranks[p] + 1) * cost[p] < full[p] and removed - cost[p] >= needed
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


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@METHODS.register("low_rank")
class LowRank(Method):
    title = "Low-rank (SVD)"
    Params = LowRankParams

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
        self.ranks, achieved = ranks_for(model, paths, target)
        for path, rank in self.ranks.items():
            _replace(model, path, factorised(model.get_submodule(path), rank))
        self.report.update(target_compression=target, achieved_compression=achieved, ranks=self.ranks)
        return model

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
