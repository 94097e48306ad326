"""`block_removal`: delete the residual blocks with the lowest Block Influence (ShortGPT: Men, Xu, Zhang,
Wang, Lin, Lu, Han, Chen, "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect",
arXiv 2403.03853; official code icip-cas/ShortGPT, `shortgpt/shortgpt.py::ShortGPT.compute_bi` and
`shortgpt/metrics.py::block_influence`).

Block i's influence BI_i = 1 - E[cos(h_i, h_{i+1})], the mean over every token of `calibration_size`
training examples (drawn with the run's seed) of the cosine similarity between the hidden state entering
the block and the one leaving it. The blocks are removed in increasing BI, each as a whole (attention and
MLP), until total / remaining parameters meets the target (`target_compression`, or `match_collapse=k`'s:
what folding LayerCollapse's last k MLPs gives); a block is the unit, so the compression reached can
overshoot the target by more than the 2% tolerance, and such a point is labelled "not matched". The paper's
method is training-free (`epochs=0`); with the run's epochs it is healed by the same fine-tuning as every
other method. The calibration forward pass is counted in the run's training FLOPs. Models without a stack
of residual blocks (an MLP, VGG) are refused when the run is planned. The blocks it removed are recorded
per seed (`removed` in the method report).

Departures from the official code, and why: the official code reads the model's `output_hidden_states`,
whose last entry (LLaMA) comes after the final norm, so the last block's influence is measured against a
normalised output; here every block is measured against its own raw output (the same quantity for every
block, and a norm is not part of the block that would be removed). The official code sums the similarities
over tokens (every block over the same tokens: the same order as the mean taken here) and reads a zero-norm
token as similarity 0.5 (here: 0, `residual.cosine`'s epsilon).
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
from lcbench.training.cost import forward_flops
from lcbench.zoo import architecture, residual
from lcbench.zoo.collapse import MATCH_TOLERANCE
from lcbench.zoo.measure import count_macs, count_parameters


@dataclass
class BlockRemovalParams:
    target_compression: float = option(1.5, min_exclusive=1, help="total / remaining parameters")
    match_collapse: int = option(
        0, min=0, help="k > 0: aim at what folding LayerCollapse's last k blocks gives (overrides the target)"
    )
    calibration_size: int = option(128, min=1, help="training examples on which Block Influence is measured")


def block_influence(model: nn.Module, stack: residual.ResidualStack, chunks: list[torch.Tensor]):
    """BI_i = 1 - mean cos(h_i, h_{i+1}) over every calibration token, per block; and whether the blocks
    return tuples."""
    total = torch.zeros(len(stack.blocks), dtype=torch.float64)
    tokens = 0

    def visit(states: list[torch.Tensor], _outputs) -> None:
        nonlocal tokens
        for i in range(len(stack.blocks)):
            total[i] += (1 - residual.cosine(states[i], states[i + 1])).sum().cpu()
        tokens += states[0].shape[0]

    as_tuple = residual.boundary_states(model, stack, chunks, visit)
    return (total / tokens).tolist(), as_tuple


def blocks_needed(sizes: list[int], dense: int, target: float) -> int:
    """How many of the blocks (parameter counts `sizes`, in removal order) must go for dense / remaining to
    reach `target` (reaching it within the 2% tolerance from below counts)."""
    removed = 0
    for n, size in enumerate(sizes, start=1):
        removed += size
        if dense / (dense - removed) >= target * (1 - MATCH_TOLERANCE):
            return n
    raise ConfigError(
        f"removing every residual block gives {dense / (dense - removed):.3f}x, short of {target:.3f}x: "
        "lower the target"
    )


@METHODS.register("block_removal")
class BlockRemoval(Method):
    title = "Block removal (ShortGPT)"
    operating_range = (
        "whole residual blocks: the compressions removing n of them reaches (between: on the frontier)"
    )
    summary = "removes the residual blocks of lowest Block Influence (training-free, or healed)"
    Params = BlockRemovalParams
    search_source = "no hyperparameter of its own (the blocks removed are the level's)"

    @classmethod
    def check(cls, params: BlockRemovalParams, cfg: RunConfig) -> None:
        super().check(params, cfg)
        if architecture.residual_stack(cfg) is None:
            raise residual.missing_stack(cfg.model, "block_removal")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Score every block on the calibration data, then remove the least influential (the same blocks
        again on resume: the same original weights and calibration examples)."""
        p, ctx = self.params, self.ctx
        stack = residual.require_stack(model, ctx.cfg.model, "block_removal")
        target, matched = self.compression_target(model, p.target_compression)
        chunks = ctx.training_chunks(p.calibration_size)
        influence, as_tuple = block_influence(model, stack, chunks)
        order = sorted(range(len(stack.blocks)), key=lambda i: influence[i])
        dense = count_parameters(model)[0]
        sizes = [residual.removed_parameters(model, [stack.blocks[i]]) for i in order]
        removed = [stack.blocks[i] for i in sorted(order[: blocks_needed(sizes, dense, target)])]
        samples = sum(len(c) for c in chunks)
        self.calibration_flops = forward_flops(count_macs(model, ctx.input_shape)["gmacs"]) * samples
        residual.skip_all(model, removed, as_tuple)
        self.removed, self.as_tuple = removed, as_tuple
        self.report = {
            "target_compression": target,
            "achieved_compression": dense / count_parameters(model)[0],
            "block_influence": dict(zip(stack.blocks, influence)),
            "removed": removed,
            "calibration": ctx.calibration_record(p.calibration_size, self.calibration_flops),
        }
        if matched:
            self.report["matched_to_layercollapse"] = matched
        return model

    def match_target(self) -> dict[str, Any] | None:
        return {"quantity": "compression", "target": self.report["target_compression"]}

    def structure(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "as_tuple": self.as_tuple}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return residual.skip_all(model, structure["removed"], structure["as_tuple"])
