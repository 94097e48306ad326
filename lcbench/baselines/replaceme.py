"""`replaceme`: replace blocks by one linear map fit by least squares on calibration activations,
training-free (Shopkhoev, Ali, Zhussip, Malykh, Lefkimmiatis, Komodakis, Zagoruyko, "ReplaceMe: Network
Simplification via Depth Pruning and Linear Transformations", arXiv 2505.02819; official code
mts-ai/ReplaceMe, `ReplaceMe/lstsq.py` and `utils.py`).

`unit=span` (the paper): n consecutive residual blocks i..i+n-1 go, n the fewest whose parameters bring
total / remaining to the target (`target_compression`, or `match_collapse=k`'s: what folding
LayerCollapse's last k MLPs gives; a block is the unit, so the point can overshoot and be labelled "not
matched"). The span is the one whose input h_i and output h_{i+n} are nearest in angular distance
arccos(cos(h_i, h_{i+n})) / pi, averaged over the calibration tokens (the official code uses each sequence's
last token; with images every token counts alike here), with i >= 1. With M the output of block i-1's MLP
(the branch added last to h_i), T minimises ||M T - (h_{i+n} - h_i + M)||^2 over every calibration token:
T = (M^T M)^+ M^T (h_{i+n} - h_i + M), in float64 (the official code's inverse of the Gram matrix; the
pseudo-inverse equals it where that exists, and is the minimum-norm least-squares solution where not). T is
merged into that MLP's output Linear (W <- T^T W, b <- T^T b) and the span's blocks are removed. Post-norm
blocks (BERT) have no such Linear and are refused.

`unit=mlp` (LayerCollapse's unit, the training-free twin of its fold): each MLP that LayerCollapse folds at
level `match_collapse` is replaced by the affine map [X 1] -> Y fit by least squares from the MLP's input X
to its output Y on the calibration tokens, in forward order, each on the model with the earlier MLPs
already replaced (chained MLPs, where one's second Linear is the next one's first, as in an MLP or VGG's
classifier, are one map from the first one's input to the last one's output); the model then has exactly
LayerCollapse's structure and compression.

Calibration: `calibration_size` training examples drawn with the run's seed; every forward pass over them
is counted in the run's training FLOPs. With the run's epochs (> 0) the model is healed by the same
fine-tuning as every other method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lcbench.baselines.block_removal import blocks_needed
from lcbench.core.config import RunConfig
from lcbench.core.errors import ConfigError
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
from lcbench.training.cost import forward_flops
from lcbench.zoo import architecture, collapse, residual
from lcbench.zoo.measure import count_macs, count_parameters


@dataclass
class ReplaceMeParams:
    unit: str = option(
        "span",
        choices=["span", "mlp"],
        help="span: consecutive residual blocks replaced by one linear map (the paper); mlp: the MLPs "
        "LayerCollapse folds at level match_collapse, each replaced by its least-squares affine map",
    )
    target_compression: float = option(1.5, min_exclusive=1, help="unit=span: total / remaining parameters")
    match_collapse: int = option(
        0,
        min=0,
        help="k > 0: aim at what folding LayerCollapse's last k blocks gives (unit=mlp: replaces them)",
    )
    calibration_size: int = option(128, min=1, help="training examples whose activations fit the map")


class NormalEquations:
    """Accumulates X^T X and X^T Y over chunks of rows (float64) and solves min ||X A - Y|| for A."""

    def __init__(self) -> None:
        self.gram: torch.Tensor | None = None
        self.cross: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(torch.float64), y.to(torch.float64)
        gram, cross = x.T @ x, x.T @ y
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross

    def solve(self) -> torch.Tensor:
        """A = (X^T X)^+ X^T Y: the least-squares solution (of minimum norm when X lacks full column rank)."""
        return torch.linalg.pinv(self.gram, hermitian=True) @ self.cross


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """[X 1]: the column that fits a bias."""
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """arccos(cos(a, b)) / pi per token (0: same direction, 1: opposite)."""
    return torch.arccos(residual.cosine(a, b).clamp(-1.0, 1.0)) / torch.pi


def span_distances(model: nn.Module, stack: residual.ResidualStack, chunks, n: int) -> dict[int, float]:
    """Mean angular distance between h_i and h_{i+n} over the calibration tokens, for i = 1 .. L - n."""
    starts = range(1, len(stack.blocks) - n + 1)
    total = dict.fromkeys(starts, 0.0)
    tokens = 0

    def visit(states: list[torch.Tensor], _outputs) -> None:
        nonlocal tokens
        for i in starts:
            total[i] += float(angular_distance(states[i], states[i + n]).sum())
        tokens += states[0].shape[0]

    residual.boundary_states(model, stack, chunks, visit)
    return {i: t / tokens for i, t in total.items()}


def span_map(model: nn.Module, stack: residual.ResidualStack, chunks, start: int, n: int, branch: str):
    """T minimising ||M T - (h_{start+n} - h_start + M)|| (M: the output of `branch`, block start-1's last
    residual branch); and whether the blocks return tuples."""
    system = NormalEquations()

    def visit(states: list[torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        m = outputs[branch]
        system.add(m, states[start + n] - states[start] + m)

    as_tuple = residual.boundary_states(model, stack, chunks, visit, also=(branch,))
    return system.solve(), as_tuple


@torch.no_grad()
def merge_into(linear: nn.Linear, transform: torch.Tensor) -> None:
    """Fold y -> y T into the Linear that produces y: W <- T^T W, b <- T^T b."""
    t = transform.T.to(torch.float64)
    linear.weight.copy_((t @ linear.weight.double()).to(linear.weight.dtype))
    if linear.bias is not None:
        linear.bias.copy_((t @ linear.bias.double()).to(linear.bias.dtype))


def chained(blocks: list[collapse.Block]) -> list[list[collapse.Block]]:
    """`blocks` (forward order) grouped into runs where one block's second Linear is the next one's first
    (digits_mlp, VGG's classifier): a run becomes ONE Linear, as LayerCollapse's folds make it."""
    runs: list[list[collapse.Block]] = []
    for b in blocks:
        last = runs[-1][-1] if runs else None
        if last is not None and last.container == b.container and last.second == b.first:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


@torch.no_grad()
def fit_mlps(model: nn.Module, run: list[collapse.Block], chunks: list[torch.Tensor]) -> nn.Linear:
    """Replace a run of chained MLPs by the least-squares affine map from the run's input (its first
    Linear's) to its output (its last Linear's) on the calibration chunks; returns the new Linear."""
    system = NormalEquations()
    seen: dict[str, torch.Tensor] = {}
    first = model.get_submodule(collapse.part_path(run[0], run[0].first))
    last = model.get_submodule(collapse.part_path(run[-1], run[-1].second))
    handles = [
        first.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0])),
        last.register_forward_hook(lambda _m, _a, out: seen.__setitem__("y", out)),
    ]
    was_training = model.training
    model.eval()
    try:
        for chunk in chunks:
            model(chunk)
            x = seen["x"].reshape(-1, first.in_features)
            system.add(with_ones(x.to(torch.float64)), seen["y"].reshape(-1, last.out_features))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    solution = system.solve()  # (in + 1, out): the weight's transpose over the bias
    for block in reversed(run):  # LayerCollapse's structure: one Linear where the chain was
        collapse.fold(model, collapse.block_by_name(model, block.name))
    fitted = model.get_submodule(collapse.part_path(run[0], run[0].first))
    fitted.weight.copy_(solution[:-1].T.to(fitted.weight.dtype))
    fitted.bias.copy_(solution[-1].to(fitted.bias.dtype))
    return fitted


@METHODS.register("replaceme")
class ReplaceMe(Method):
    title = "ReplaceMe"
    summary = "replaces blocks (or LayerCollapse's MLPs) by least-squares linear maps, training-free"
    Params = ReplaceMeParams

    @classmethod
    def check(cls, params: ReplaceMeParams, cfg: RunConfig) -> None:
        super().check(params, cfg)
        if params.unit == "mlp" and not params.match_collapse:
            raise ConfigError(
                "replaceme unit=mlp replaces the MLPs LayerCollapse folds: set match_collapse=k (k >= 1)"
            )
        if params.unit == "span":
            stack = architecture.residual_stack(cfg)
            if stack is None:
                raise residual.missing_stack(cfg.model, "replaceme unit=span")
            if stack.branch_output is None:
                raise ConfigError(
                    f"replaceme unit=span merges its map into the Linear ending a block, and {cfg.model}'s "
                    f"{stack.kind} is post-norm (a LayerNorm follows the residual add): use unit=mlp"
                )

    def prepare(self, model: nn.Module) -> nn.Module:
        """Fit and replace (on resume: the same fit again from the same weights and calibration examples)."""
        self.removed: list[str] = []
        self.folded: list[str] = []
        self.as_tuple = False
        chunks = self.ctx.training_chunks(self.params.calibration_size)
        samples = sum(len(c) for c in chunks)
        pass_flops = forward_flops(count_macs(model, self.ctx.input_shape)["gmacs"]) * samples
        dense = count_parameters(model)[0]
        if self.params.unit == "span":
            passes = self._replace_span(model, chunks, dense)
        else:
            passes = self._replace_mlps(model, chunks)
        self.calibration_flops = pass_flops * passes
        self.report.update(
            unit=self.params.unit,
            achieved_compression=dense / count_parameters(model)[0],
            calibration=self.ctx.calibration_record(self.params.calibration_size, self.calibration_flops),
        )
        return model

    def _replace_span(self, model: nn.Module, chunks: list[torch.Tensor], dense: int) -> int:
        """The paper's unit; returns the calibration passes spent (distances, then the fit)."""
        stack = residual.require_stack(model, self.ctx.cfg.model, "replaceme")
        target, matched = self.compression_target(model, self.params.target_compression)
        sizes = [residual.removed_parameters(model, [b]) for b in stack.blocks[1:]]
        n = blocks_needed(sizes, dense, target)
        distances = span_distances(model, stack, chunks, n)
        start = min(distances, key=distances.get)
        previous = stack.blocks[start - 1]
        if not isinstance(getattr(model.get_submodule(previous), "ls2", nn.Identity()), nn.Identity):
            raise ConfigError(
                f"replaceme unit=span: {previous} scales its MLP branch (LayerScale); use unit=mlp"
            )
        branch = f"{previous}.{stack.branch_output}"
        transform, self.as_tuple = span_map(model, stack, chunks, start, n, branch)
        merge_into(model.get_submodule(branch), transform)
        self.removed = list(stack.blocks[start : start + n])
        residual.skip_all(model, self.removed, self.as_tuple)
        self.report.update(
            target_compression=target,
            angular_distance={stack.blocks[i]: d for i, d in distances.items()},
            removed=self.removed,
            merged_into=branch,
        )
        if matched:
            self.report["matched_to_layercollapse"] = matched
        return 2

    def _replace_mlps(self, model: nn.Module, chunks: list[torch.Tensor]) -> int:
        """LayerCollapse's unit, in forward order; returns the calibration passes spent (one per MLP)."""
        target, matched = self.compression_target(model, self.params.target_compression)
        blocks = collapse.select_blocks(model, self.params.match_collapse, model_name=self.ctx.cfg.model)
        runs = chained(list(reversed(blocks)))
        for run in runs:
            fit_mlps(model, run, chunks)
            self.folded += [b.name for b in reversed(run)]  # the order `rebuild` folds them in
        self.report.update(target_compression=target, replaced=self.folded, matched_to_layercollapse=matched)
        return len(runs)

    def match_target(self) -> dict[str, Any] | None:
        return {"quantity": "compression", "target": self.report["target_compression"]}

    def structure(self) -> dict[str, Any]:
        return {"removed": self.removed, "as_tuple": self.as_tuple, "folded": self.folded}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        residual.skip_all(model, structure["removed"], structure["as_tuple"])
        return collapse.apply_structure(model, [], structure["folded"])
