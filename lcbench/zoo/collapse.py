"""LayerCollapse's math (Shabgahi, Shariff, Koushanfar, arXiv 2311.17943), no training code.

A *collapsible block* is a chain Linear(W1, b1) -> activation -> [Dropout] -> [BatchNorm1d] -> Linear(W2, b2)
inside an `nn.Sequential` or a timm `Mlp` (whose children run in registration order), or the feed-forward
block of a Hugging Face transformer layer: BERT's `intermediate.dense -> intermediate_act_fn ->
output.dense` (the output's dropout, residual and LayerNorm stay) and GPT-2's `c_fc -> act -> c_proj` (its
Conv1D layers are turned into `nn.Linear` when the zoo builds the model: `text_models`). The torchvision VGG
classifier holds two blocks (its two activations), so folding both turns three Linears into one.
Blocks are named by their activation's module path (`blocks.3.mlp.act`, `classifier.4`,
`lm.transformer.h.11.mlp.act`) and ordered as the modules are registered, so "the last k blocks" are those
nearest the output.

Conversion replaces the activation with `nn.PReLU(num_parameters=1)`: PReLU(z) = a*z + (1-a)*relu(z), the
identity at a = 1. Folding replaces the chain by ONE Linear:
    W = W2 diag(s) W1,  b = W2 (s * (b1 - mu) + beta) + b2,  s = gamma / sqrt(var + eps)
(s = 1, mu = beta = 0 without BatchNorm); the activation, inner dropout, BatchNorm and second Linear become
`nn.Identity`, so every other state_dict key keeps its name. A fold with a != 1 drops the (1-a)*relu(z) term.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from timm.layers import Mlp
from torch import nn

from ..core.errors import ConfigError
from .measure import count_macs, count_parameters

ACTIVATIONS = (nn.ReLU, nn.GELU, nn.PReLU)
# Hugging Face's own activation modules (`transformers.activations`), recognised by name: no import needed
HF_ACTIVATIONS = {
    "GELUActivation",
    "NewGELUActivation",
    "FastGELUActivation",
    "QuickGELUActivation",
    "GELUTanh",
}
MATCH_TOLERANCE = 0.02  # a "matched" point lies within 2% of its target compression
BETWEEN = (nn.Dropout, nn.BatchNorm1d)
DEFAULT_INIT_SLOPE = {nn.GELU: 0.01, nn.ReLU: 0.0}
LOOKED_FOR = (
    "Linear -> ReLU/GELU -> [Dropout] -> [BatchNorm1d] -> Linear inside an nn.Sequential or a "
    "timm Mlp (ViT/DeiT/Mixer MLPs, the torchvision VGG classifier), or a BERT/GPT-2 feed-forward block"
)
# Feed-forward blocks of transformers' layers: (first Linear, activation, second Linear) relative to the
# module that holds them. BERT and its relatives (RoBERTa, ELECTRA): BertLayer; GPT-2: GPT2MLP.
LAYER_PATTERNS = (
    ("intermediate.dense", "intermediate.intermediate_act_fn", "output.dense"),
    ("c_fc", "act", "c_proj"),
)


@dataclass(frozen=True)
class Block:
    """One collapsible chain inside `container` (paths of its parts relative to the container)."""

    container: str
    first: str
    act: str
    between: tuple[str, ...]
    second: str

    @property
    def name(self) -> str:
        return f"{self.container}.{self.act}" if self.container else self.act


def layer_path(block: Block) -> str:
    """`blocks.3.mlp: fc1 → act → fc2` (the container, if any, then the folded chain's layers)."""
    chain = f"{block.first} → {block.act} → {block.second}"
    return f"{block.container}: {chain}" if block.container else chain


def _containers(model: nn.Module) -> list[tuple[str, nn.Module]]:

    # exact type for Mlp: GluMlp/SwiGLU subclasses gate their hidden units (not a Linear chain)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Sequential) or type(m) is Mlp]


def _is_hf_activation(m: nn.Module) -> bool:
    return type(m).__module__ == "transformers.activations" and type(m).__name__ in HF_ACTIVATIONS


def _is_activation(m: nn.Module) -> bool:
    if _is_hf_activation(m):
        return True
    return isinstance(m, ACTIVATIONS) and (not isinstance(m, nn.PReLU) or m.num_parameters == 1)


def find_blocks(model: nn.Module) -> list[Block]:
    """Every collapsible block, in module registration order (the last ones are nearest the output)."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}
    blocks = _chain_blocks(model) + _layer_blocks(model)
    return sorted(blocks, key=lambda b: order[b.name])


def _layer_blocks(model: nn.Module) -> list[Block]:
    """The feed-forward blocks of transformers' layers (`LAYER_PATTERNS`), unfolded ones only."""
    blocks = []
    for cname, module in model.named_modules():
        for first, act, second in LAYER_PATTERNS:
            parts = [_find(module, path) for path in (first, act, second)]
            if (
                isinstance(parts[0], nn.Linear)
                and _is_activation(parts[1])
                and isinstance(parts[2], nn.Linear)
            ):
                blocks.append(Block(cname, first, act, (), second))
    return blocks


def _find(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _chain_blocks(model: nn.Module) -> list[Block]:
    """Linear-activation-Linear chains among the children of Sequential and timm Mlp containers."""
    blocks = []
    for cname, container in _containers(model):
        children = [(n, c) for n, c in container.named_children() if not isinstance(c, nn.Identity)]
        for i, (aname, act) in enumerate(children):
            if i == 0 or not _is_activation(act) or not isinstance(children[i - 1][1], nn.Linear):
                continue
            between, j = [], i + 1
            while j < len(children) and isinstance(children[j][1], BETWEEN):
                between.append(children[j])
                j += 1
            norms = [c for _, c in between if isinstance(c, nn.BatchNorm1d)]
            if j == len(children) or not isinstance(children[j][1], nn.Linear) or len(norms) > 1:
                continue
            if norms and (norms[0].running_mean is None or not norms[0].track_running_stats):
                continue  # batch statistics at inference: not an affine map
            blocks.append(
                Block(cname, children[i - 1][0], aname, tuple(n for n, _ in between), children[j][0])
            )
    return blocks


def select_blocks(
    model: nn.Module, k: int = 0, names: list[str] | None = None, model_name: str = ""
) -> list[Block]:
    """The last k blocks counted from the output (nearest first), or the blocks named explicitly."""
    return choose_blocks(find_blocks(model), k, names, model_name or type(model).__name__)


def choose_blocks(blocks: list, k: int, names, label: str, what: str = "k") -> list:
    """Of `blocks` (in registration order; anything with `name` and `container`), the last k nearest the
    output first, or those `names` gives (a block's name, or its container's when it holds one block);
    a ConfigError that lists the blocks otherwise. `what` names the setting in the message."""
    if not blocks:
        raise ConfigError(f"model {label} has no collapsible block (looked for {LOOKED_FOR})")
    if names:
        by_name = {b.name: b for b in blocks}
        by_container: dict[str, list] = {}
        for b in blocks:
            by_container.setdefault(b.container, []).append(b)
        chosen = []
        for n in names:
            if n in by_name:
                chosen.append(by_name[n])
            elif len(by_container.get(n, [])) == 1:
                chosen.append(by_container[n][0])
            else:
                raise ConfigError(
                    f"{label} has no collapsible block {n!r}; its blocks are: "
                    f"{', '.join(b.name for b in blocks)}"
                )
        return chosen
    if k < 1 or k > len(blocks):
        raise ConfigError(
            f"{what}={k}: {label} has {len(blocks)} collapsible blocks, so it must be in 1..{len(blocks)} "
            f"(blocks from the output: {', '.join(b.name for b in reversed(blocks))})"
        )
    return list(reversed(blocks))[:k]


def part_path(block: Block, path: str) -> str:
    """The module path in the model of the block's part `path` (`block.first`, `block.second`, ...)."""
    return f"{block.container}.{path}" if block.container else path


def _parent(model: nn.Module, block: Block) -> nn.Module:
    return model.get_submodule(block.container) if block.container else model


def _part(model: nn.Module, block: Block, path: str) -> nn.Module:
    return _parent(model, block).get_submodule(path)


def _replace(model: nn.Module, block: Block, path: str, module: nn.Module) -> None:
    holder, _, child = path.rpartition(".")
    parent = _parent(model, block)
    setattr(parent.get_submodule(holder) if holder else parent, child, module)


def block_by_name(model: nn.Module, name: str) -> Block:
    for b in find_blocks(model):
        if b.name == name:
            return b
    raise ConfigError(f"no collapsible block {name!r} in {type(model).__name__}")


# --------------------------------------------------------------------------------------------------------
# Conversion and regularizer


def convert(model: nn.Module, block: Block, init_slope: float | None = None) -> nn.PReLU:
    """Replace the block's activation by a one-slope PReLU (0.01 for GELU, 0.0 for ReLU by default)."""
    act = _part(model, block, block.act)
    if isinstance(act, nn.PReLU):
        return act
    if init_slope is None:
        init_slope = default_init_slope(act)
    ref = _part(model, block, block.first).weight
    prelu = nn.PReLU(num_parameters=1, init=init_slope).to(device=ref.device, dtype=ref.dtype)
    _replace(model, block, block.act, prelu)
    return prelu


def default_init_slope(act: nn.Module) -> float:
    """The slope a block's PReLU starts from: 0.01 for GELU (Hugging Face's are all GELU variants), 0.0
    for ReLU (the PReLU then equals the ReLU it replaces)."""
    default = 0.01 if _is_hf_activation(act) else 0.0
    return next((s for t, s in DEFAULT_INIT_SLOPE.items() if isinstance(act, t)), default)


def activation(model: nn.Module, block: Block) -> nn.Module:
    return _part(model, block, block.act)


def slope(model: nn.Module, block: Block) -> float:
    act = _part(model, block, block.act)
    if not isinstance(act, nn.PReLU):
        raise ConfigError(f"block {block.name} has not been converted to a PReLU")
    return float(act.weight.detach().reshape(-1)[0])


def regularizer(prelus: list[nn.PReLU]) -> torch.Tensor:
    """R = sum_i (a_i - 1)^2 over the converted blocks' slopes."""
    return sum(((p.weight - 1.0) ** 2).sum() for p in prelus)


# --------------------------------------------------------------------------------------------------------
# Folding


@torch.no_grad()
def folded_linear(model: nn.Module, block: Block) -> nn.Linear:
    """The single Linear equal to the block with its activation taken as the identity (float64 math)."""
    first, second = _part(model, block, block.first), _part(model, block, block.second)
    w1 = first.weight.double()
    b1 = (
        first.bias.double()
        if first.bias is not None
        else torch.zeros(w1.shape[0], dtype=torch.float64, device=w1.device)
    )
    s = torch.ones_like(b1)
    shift = b1
    for n in block.between:
        bn = _part(model, block, n)
        if isinstance(bn, nn.BatchNorm1d):
            s = torch.rsqrt(bn.running_var.double() + bn.eps)
            if bn.affine:
                s = s * bn.weight.double()
            beta = bn.bias.double() if bn.affine else torch.zeros_like(b1)
            shift = s * (b1 - bn.running_mean.double()) + beta
    w2 = second.weight.double()
    b2 = (
        second.bias.double()
        if second.bias is not None
        else torch.zeros(w2.shape[0], dtype=torch.float64, device=w2.device)
    )
    fused = nn.Linear(
        first.in_features, second.out_features, bias=True, device=w1.device, dtype=first.weight.dtype
    )
    fused.weight.copy_(w2 @ (s[:, None] * w1))
    fused.bias.copy_(w2 @ shift + b2)
    return fused


def fold(model: nn.Module, block: Block) -> None:
    """Replace the block by its folded Linear in place (the parts after the first Linear become Identity)."""
    fused = folded_linear(model, block)
    _replace(model, block, block.first, fused)
    for n in (block.act, *block.between, block.second):
        _replace(model, block, n, nn.Identity())


@torch.no_grad()
def collapse(
    model: nn.Module,
    names: list[str],
    threshold: float = 0.05,
    force: bool = False,
    calibration: torch.Tensor | None = None,
) -> list[dict]:
    """Fold every named (converted) block whose slope is within `threshold` of 1, or all with `force`.

    Returns one report per block: name, slope, folded, forced, reason when not folded, and the change of
    the model's output on the calibration batch caused by that fold (max absolute and relative to max|y|).
    """
    if threshold <= 0:
        raise ConfigError(f"threshold must be > 0, got {threshold}")
    was_training = model.training
    model.eval()
    reports = []
    before = model(calibration) if calibration is not None else None
    for name in names:
        block = block_by_name(model, name)
        a = slope(model, block)
        report = {
            "block": name,
            "layers": layer_path(block),
            "slope": a,
            "distance": abs(a - 1.0),
            "folded": False,
            "forced": False,
        }
        if abs(a - 1.0) >= threshold and not force:
            report["reason"] = f"|a - 1| = {abs(a - 1.0):.4f} >= threshold {threshold}"
            reports.append(report)
            continue
        fold(model, block)
        report.update(folded=True, forced=abs(a - 1.0) >= threshold)
        if calibration is not None:
            after = model(calibration)
            diff = (after - before).abs().max().item()
            report.update(max_abs_diff=diff, max_rel_diff=diff / max(before.abs().max().item(), 1e-30))
            before = after
        reports.append(report)
    model.train(was_training)
    return reports


# --------------------------------------------------------------------------------------------------------
# Structure: rebuild a collapsed model from the original architecture


def apply_structure(model: nn.Module, converted: list[str], folded: list[str]) -> nn.Module:
    """Convert, then fold in the recorded order (weights are placeholders until a state_dict is loaded)."""
    for name in converted:
        convert(model, block_by_name(model, name))
    for name in folded:
        fold(model, block_by_name(model, name))
    return model


def collapse_targets(
    model: nn.Module,
    k: int,
    input_shape: tuple[int, ...],
    model_name: str = "",
    names: list[str] | None = None,
) -> dict:
    """What folding the last k blocks (or the named ones) of `model` achieves, measured on a copy:
    parameter compression and MAC ratio.

    LayerCollapse and KD record it as their target; the baselines aim at it (`match_collapse=k`).
    """

    folded = copy.deepcopy(model).cpu().eval()
    blocks = select_blocks(folded, k, names, model_name=model_name)
    for block in blocks:
        with torch.no_grad():
            convert(folded, block).weight.fill_(1.0)
    collapse(folded, [b.name for b in blocks])
    dense = count_parameters(model)[0]
    macs = count_macs(model, input_shape)["gmacs"]
    return {
        "k": len(blocks),
        "compression": dense / count_parameters(folded)[0],
        "macs_ratio": macs / count_macs(folded, input_shape)["gmacs"],
    }
