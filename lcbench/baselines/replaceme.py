"""`replaceme`: replace consecutive residual blocks by one linear map fit by least squares on calibration
activations, training-free (Shopkhoev, Ali, Zhussip, Malykh, Lefkimmiatis, Komodakis, Zagoruyko, "ReplaceMe:
Network Simplification via Depth Pruning and Linear Transformations", arXiv 2505.02819; official code
mts-ai/ReplaceMe, `ReplaceMe/lstsq.py` and `utils.py`).

n consecutive residual blocks i..i+n-1 go, n the fewest whose parameters bring total / remaining to the
target (`target_compression`, or `match_collapse=k`'s: what folding LayerCollapse's last k MLPs gives; a
block is the unit, so the point can overshoot: it is compared where it lands on LayerCollapse's frontier).
The span is the one whose input h_i and output h_{i+n} are nearest in angular distance
arccos(cos(h_i, h_{i+n})) / pi, averaged over the calibration rows, with i >= 1. With M the output of block
i-1's MLP (the branch added last to h_i), T minimises ||M T - (h_{i+n} - h_i + M)||^2 over the rows:
T = (M^T M)^+ M^T (h_{i+n} - h_i + M), in float64 (the official code's inverse of the Gram matrix; the
pseudo-inverse equals it where that exists, and is the minimum-norm least-squares solution where not). T is
merged into that MLP's output Linear (W <- T^T W, b <- T^T b) and the span's blocks are removed. Post-norm
blocks (BERT) have no such Linear and are refused (`lstsq_fold` is lcbench's own fold of LayerCollapse's
blocks by the same least squares).

Rows: the distances are measured on each sequence's last token for a causal language model, as the
official code does (`distance.py`, `utils.get_last_non_padded_tokens`; our sequences have no padding), and
on every token for a classifier, which the paper does not cover; the map is fit on every token, as
`lstsq.py` does. Calibration: `calibration_size` training examples drawn with the run's seed, or with 0 (the
default) as many as give `rows_per_unknown` rows of the fit per unknown (T has width x width unknowns, width
per output column), at least 128, at most the whole training set (the official reproduction fits on 8,000
sequences of up to 1,024 tokens); the rows, unknowns and their ratio are recorded, and every forward pass
over them is counted in the run's training FLOPs. With the run's epochs (> 0) the model is healed by the
same fine-tuning as every other method.
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
from lcbench.zoo.data import DATASETS
from lcbench.zoo.measure import count_macs, count_parameters


@dataclass
class ReplaceMeParams:
    target_compression: float = option(1.5, min_exclusive=1, help="total / remaining parameters")
    match_collapse: int = option(
        0, min=0, help="k > 0: aim at what folding LayerCollapse's last k MLPs gives (overrides the target)"
    )
    calibration_size: int = option(
        0, min=0, help="training examples whose activations fit the map; 0: sized by rows_per_unknown"
    )
    rows_per_unknown: int = option(10, min=1, help="calibration_size=0: rows of the fit per unknown")


MIN_CALIBRATION = 128  # examples: the Wanda / ShortGPT calibration count, the least a sized calibration uses


def calibration_examples(
    requested: int, rows_per_example: int, unknowns: int, per_unknown: int, available: int
) -> int:
    """The training examples a least-squares fit calibrates on: `requested`, or (0) enough for
    `per_unknown` rows per unknown, at least MIN_CALIBRATION and at most `available`."""
    if requested:
        return min(requested, available)
    needed = -(-per_unknown * unknowns // max(rows_per_example, 1))
    return min(max(needed, MIN_CALIBRATION), available)


def calibration_rows(examples: int, rows_per_example: int, unknowns: int) -> dict[str, Any]:
    """What a fit's calibration record adds: rows, unknowns per output column, and their ratio."""
    rows = examples * rows_per_example
    return {"rows": rows, "unknowns": unknowns, "rows_per_unknown": rows / unknowns}


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


def span_distances(
    model: nn.Module, stack: residual.ResidualStack, chunks, n: int, last_token: bool = False
) -> dict[int, float]:
    """Mean angular distance between h_i and h_{i+n} over the calibration rows, for i = 1 .. L - n."""
    starts = range(1, len(stack.blocks) - n + 1)
    total = dict.fromkeys(starts, 0.0)
    tokens = 0

    def visit(states: list[torch.Tensor], _outputs) -> None:
        nonlocal tokens
        for i in starts:
            total[i] += float(angular_distance(states[i], states[i + n]).sum())
        tokens += states[0].shape[0]

    residual.boundary_states(model, stack, chunks, visit, last_token=last_token)
    return {i: t / tokens for i, t in total.items()}


def span_map(
    model: nn.Module,
    stack: residual.ResidualStack,
    chunks,
    start: int,
    n: int,
    branch: str,
    last_token: bool = False,
):
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


def rows_per_example(
    model: nn.Module, module: nn.Module, example: torch.Tensor, last_token: bool = False
) -> int:
    """How many rows of width `module`'s input one example gives (its tokens; 1 with `last_token`)."""
    seen: dict[str, torch.Size] = {}

    def hook(_module, args, kwargs):
        seen["shape"] = (args[0] if args else kwargs["hidden_states"]).shape

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
        model.train(was_training)
    return int(seen["shape"][:-1].numel()) // len(example)


def causal_lm(cfg: RunConfig) -> bool:
    """Whether the run's model is a causal language model (ReplaceMe's distances: each last token)."""
    return DATASETS.get(cfg.dataset).task == "language_modeling"


@METHODS.register("replaceme")
class ReplaceMe(Method):
    title = "ReplaceMe"
    summary = "replaces consecutive residual blocks by one least-squares linear map, training-free"
    operating_range = (
        "whole residual blocks of a pre-norm stack, i >= 1 (between its points: compared on the frontier)"
    )
    Params = ReplaceMeParams
    search_source = (
        "no hyperparameter of its own (the span is the level's; calibration is sized to the unknowns)"
    )

    @classmethod
    def check(cls, params: ReplaceMeParams, cfg: RunConfig) -> None:
        super().check(params, cfg)
        stack = architecture.residual_stack(cfg)
        if stack is None:
            raise residual.missing_stack(cfg.model, "replaceme")
        if stack.branch_output is None:
            raise ConfigError(
                f"replaceme merges its map into the Linear ending a block, and {cfg.model}'s {stack.kind} is "
                "post-norm (a LayerNorm follows the residual add): use method=lstsq_fold"
            )

    def prepare(self, model: nn.Module) -> nn.Module:
        """Fit and replace (on resume: the same fit again from the same weights and calibration examples)."""
        p, ctx = self.params, self.ctx
        stack = residual.require_stack(model, ctx.cfg.model, "replaceme")
        last = causal_lm(ctx.cfg)
        width = model.get_submodule(f"{stack.blocks[0]}.{stack.branch_output}").out_features
        per_example = rows_per_example(
            model, model.get_submodule(stack.blocks[0]), ctx.training_example(), last
        )
        examples = calibration_examples(
            p.calibration_size, per_example, width, p.rows_per_unknown, len(ctx.data.train)
        )
        chunks = ctx.training_chunks(examples)
        dense = count_parameters(model)[0]
        self.as_tuple = False
        target, matched = self.compression_target(model, p.target_compression)
        sizes = [residual.removed_parameters(model, [b]) for b in stack.blocks[1:]]
        n = blocks_needed(sizes, dense, target)
        distances = span_distances(model, stack, chunks, n, last)
        start = min(distances, key=distances.get)
        previous = stack.blocks[start - 1]
        if not isinstance(getattr(model.get_submodule(previous), "ls2", nn.Identity()), nn.Identity):
            raise ConfigError(
                f"replaceme: {previous} scales its MLP branch (LayerScale); use method=lstsq_fold"
            )
        branch = f"{previous}.{stack.branch_output}"
        pass_flops = forward_flops(count_macs(model, ctx.input_shape)["gmacs"]) * examples
        transform, self.as_tuple = span_map(model, stack, chunks, start, n, branch)
        merge_into(model.get_submodule(branch), transform)
        self.removed = list(stack.blocks[start : start + n])
        residual.skip_all(model, self.removed, self.as_tuple)
        self.calibration_flops = pass_flops * 2  # distances, then the fit
        self.report.update(
            target_compression=target,
            achieved_compression=dense / count_parameters(model)[0],
            angular_distance={stack.blocks[i]: d for i, d in distances.items()},
            removed=self.removed,
            merged_into=branch,
            distance_rows="each sequence's last token" if last else "every token",
            calibration={
                **ctx.calibration_record(examples, self.calibration_flops),
                **calibration_rows(examples, per_example, width),
            },
        )
        if matched:
            self.report["matched_to_layercollapse"] = matched
        return model

    def match_target(self) -> dict[str, Any] | None:
        return {"quantity": "compression", "target": self.report["target_compression"]}

    def structure(self) -> dict[str, Any]:
        return {"removed": self.removed, "as_tuple": self.as_tuple}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        residual.skip_all(model, structure["removed"], structure["as_tuple"])
        return collapse.apply_structure(
            model, [], structure.get("folded", [])
        )  # (runs of the former unit=mlp)
