"""`lstsq_fold`: LayerCollapse's blocks folded by least squares, training-free (lcbench's own baseline: no
paper proposes it; it is ReplaceMe's least-squares fit, `replaceme.py`, applied at LayerCollapse's unit).

Each MLP that LayerCollapse folds at level `match_collapse` is replaced by the affine map [X 1] -> Y fit by
least squares from the MLP's input X to its output Y on the calibration rows (every token), in forward
order, each on the model with the earlier MLPs already replaced (chained MLPs, where one's second Linear is
the next one's first, as in an MLP or VGG's classifier, are one map from the first one's input to the last
one's output); the model then has exactly LayerCollapse's structure and compression. It asks what the fold
gains over fitting the same linear map directly, without training the slopes.

Calibration: `calibration_size` training examples drawn with the run's seed, or with 0 (the default) as
many as give `rows_per_unknown` rows per unknown (a map from n inputs has n + 1 unknowns per output column),
at least 128, at most the whole training set (digits_mlp level 1: all 1,437 digits training images);
rows, unknowns and their ratio are recorded, and every forward pass over them is counted in the run's
training FLOPs. With the run's epochs (> 0) the model is healed by the same fine-tuning as every other
method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lcbench.baselines.replaceme import (
    NormalEquations,
    calibration_examples,
    calibration_rows,
    rows_per_example,
    with_ones,
)
from lcbench.core.fields import option
from lcbench.methods import METHODS, Method
from lcbench.training.cost import forward_flops
from lcbench.zoo import collapse
from lcbench.zoo.measure import count_macs, count_parameters


@dataclass
class LstsqFoldParams:
    match_collapse: int = option(1, min=1, help="k: the MLPs LayerCollapse folds at level k are replaced")
    calibration_size: int = option(
        0, min=0, help="training examples whose activations fit the maps; 0: sized by rows_per_unknown"
    )
    rows_per_unknown: int = option(10, min=1, help="calibration_size=0: rows of the fit per unknown")


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


def _ends(model: nn.Module, run: list[collapse.Block]) -> tuple[nn.Linear, nn.Linear]:
    first = model.get_submodule(collapse.part_path(run[0], run[0].first))
    last = model.get_submodule(collapse.part_path(run[-1], run[-1].second))
    return first, last


@torch.no_grad()
def fit_mlps(model: nn.Module, run: list[collapse.Block], chunks: list[torch.Tensor]) -> nn.Linear:
    """Replace a run of chained MLPs by the least-squares affine map from the run's input (its first
    Linear's) to its output (its last Linear's) on the calibration chunks; returns the new Linear."""
    system = NormalEquations()
    seen: dict[str, torch.Tensor] = {}
    first, last = _ends(model, run)
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


@METHODS.register("lstsq_fold")
class LstsqFold(Method):
    title = "Least-squares fold"
    summary = "replaces the MLPs LayerCollapse folds by least-squares affine maps (lcbench's own baseline)"
    operating_range = "LayerCollapse's blocks: exactly its structure and compression"
    Params = LstsqFoldParams
    search_source = "no hyperparameter of its own (LayerCollapse's blocks; calibration sized to the unknowns)"

    def prepare(self, model: nn.Module) -> nn.Module:
        """Fit and replace, in forward order (on resume: the same fits again from the same weights and
        calibration examples)."""
        p, ctx = self.params, self.ctx
        target, matched = self.compression_target(model, 0.0)
        blocks = collapse.select_blocks(model, p.match_collapse, model_name=ctx.cfg.model)
        runs = chained(list(reversed(blocks)))
        widest = max(runs, key=lambda run: _ends(model, run)[0].in_features)
        first = _ends(model, widest)[0]
        unknowns = first.in_features + 1
        per_example = rows_per_example(model, first, ctx.training_example())
        examples = calibration_examples(
            p.calibration_size, per_example, unknowns, p.rows_per_unknown, len(ctx.data.train)
        )
        chunks = ctx.training_chunks(examples)
        dense = count_parameters(model)[0]
        pass_flops = forward_flops(count_macs(model, ctx.input_shape)["gmacs"]) * examples
        self.folded: list[str] = []
        for run in runs:
            fit_mlps(model, run, chunks)
            self.folded += [b.name for b in reversed(run)]  # the order `rebuild` folds them in
        self.calibration_flops = pass_flops * len(runs)  # one pass per map
        self.report.update(
            target_compression=target,
            achieved_compression=dense / count_parameters(model)[0],
            replaced=self.folded,
            matched_to_layercollapse=matched,
            calibration={
                **ctx.calibration_record(examples, self.calibration_flops),
                **calibration_rows(examples, per_example, unknowns),
            },
        )
        return model

    def match_target(self) -> dict[str, Any] | None:
        return {"quantity": "compression", "target": self.report["target_compression"]}

    def structure(self) -> dict[str, Any]:
        return {"folded": self.folded}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return collapse.apply_structure(model, [], structure["folded"])
