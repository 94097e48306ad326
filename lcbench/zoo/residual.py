"""Residual blocks of the zoo's models, for the depth reductions that remove or replace whole blocks
(`block_removal`, ShortGPT; `replaceme`, ReplaceMe): which blocks a model stacks, the hidden states at
their boundaries on calibration data, and the pass-through module a removed block becomes.

A *residual stack* is the `nn.ModuleList`/`nn.Sequential` holding two or more blocks of one known residual
class (timm's ViT `Block` and `MixerBlock`, Hugging Face's `GPT2Block`, `BertLayer`, ...); block i's input
is h_i and its output h_{i+1}. Models without one (an MLP, VGG) cannot lose a block this way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError

# class name -> the Linear (path inside the block) whose output is the block's last residual branch,
# added to the stream with nothing after it, so that a linear map can be merged into it (ReplaceMe); None
# for post-norm blocks (BERT: a LayerNorm follows the residual add)
RESIDUAL_BLOCKS: dict[str, str | None] = {
    "Block": "mlp.fc2",  # timm VisionTransformer / DeiT
    "MixerBlock": "mlp_channels.fc2",  # timm MlpMixer
    "GPT2Block": "mlp.c_proj",  # an nn.Linear once the zoo has converted GPT-2's Conv1D
    "LlamaDecoderLayer": "mlp.down_proj",
    "BertLayer": None,
    "RobertaLayer": None,
}
LOOKED_FOR = "a stack of residual blocks (timm ViT/DeiT or Mixer blocks, GPT-2, LLaMA or BERT layers)"


@dataclass(frozen=True)
class ResidualStack:
    """A model's residual blocks: their module paths in forward order, and their class."""

    blocks: tuple[str, ...]
    kind: str

    @property
    def branch_output(self) -> str | None:
        return RESIDUAL_BLOCKS[self.kind]


def find_stack(model: nn.Module) -> ResidualStack | None:
    """The longest list of same-class residual blocks in `model` (None if it has none)."""
    best: ResidualStack | None = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.named_children())
        kinds = {type(c).__name__ for _, c in children}
        if len(children) < 2 or len(kinds) != 1 or next(iter(kinds)) not in RESIDUAL_BLOCKS:
            continue
        paths = tuple(f"{name}.{n}" if name else n for n, _ in children)
        if best is None or len(paths) > len(best.blocks):
            best = ResidualStack(paths, next(iter(kinds)))
    return best


def require_stack(model: nn.Module, label: str, method: str) -> ResidualStack:
    stack = find_stack(model)
    if stack is None:
        raise missing_stack(label, method)
    return stack


def missing_stack(label: str, method: str) -> ConfigError:
    return ConfigError(
        f"{method} removes whole residual blocks and {label} has none (looked for {LOOKED_FOR}); "
        "use it on a transformer or Mixer, or compare on this model with methods that act on its MLPs"
    )


class Skipped(nn.Module):
    """A removed residual block: returns its input (as a 1-tuple where the block returned a tuple)."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden: torch.Tensor, *args, **kwargs):
        return (hidden,) if self.as_tuple else hidden

    def extra_repr(self) -> str:
        return f"as_tuple={self.as_tuple}"


def skip(model: nn.Module, path: str, as_tuple: bool = False) -> None:
    """Replace the block at `path` by a pass-through; every other parameter keeps its name."""
    holder, _, child = path.rpartition(".")
    setattr(model.get_submodule(holder) if holder else model, child, Skipped(as_tuple))


def skip_all(model: nn.Module, paths: list[str] | tuple[str, ...], as_tuple: bool = False) -> nn.Module:
    """`skip` every block in `paths` (a removal, or its rebuild from a recorded structure)."""
    for path in paths:
        skip(model, path, as_tuple)
    return model


def removed_parameters(model: nn.Module, paths: list[str] | tuple[str, ...]) -> int:
    return sum(p.numel() for path in paths for p in model.get_submodule(path).parameters())


def _hidden(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def boundary_states(
    model: nn.Module,
    stack: ResidualStack,
    chunks: list[torch.Tensor],
    visit: Callable[[list[torch.Tensor], dict[str, torch.Tensor]], None],
    also: tuple[str, ...] = (),
    last_token: bool = False,
) -> bool:
    """Run `model` on each chunk of calibration inputs and call `visit(states, outputs)` with the hidden
    states h_0..h_L at the stack's block boundaries (h_i enters block i; each flattened to tokens x width,
    float64; with `last_token`, each sequence's last token only) and the outputs of the modules named in
    `also`; returns whether the blocks return tuples. One chunk's activations are held at a time."""
    states: dict[int, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    returns_tuple = False

    def flat(x: torch.Tensor) -> torch.Tensor:
        if last_token and x.dim() == 3:
            x = x[:, -1]
        return x.detach().reshape(-1, x.shape[-1]).to(torch.float64)

    def entering(i: int):
        def hook(_module, args, kwargs):
            states[i] = flat(args[0] if args else kwargs["hidden_states"])

        return hook

    def leaving(i: int):
        def hook(_module, _args, output):
            nonlocal returns_tuple
            returns_tuple = isinstance(output, (tuple, list))
            states[i + 1] = flat(_hidden(output))

        return hook

    def recording(name: str):
        def hook(_module, _args, output):
            outputs[name] = flat(output)

        return hook

    handles = []
    for i, path in enumerate(stack.blocks):
        block = model.get_submodule(path)
        handles.append(block.register_forward_pre_hook(entering(i), with_kwargs=True))
        handles.append(block.register_forward_hook(leaving(i)))
    handles += [model.get_submodule(n).register_forward_hook(recording(n)) for n in also]
    was_training = model.training
    model.eval()
    try:
        for chunk in chunks:
            states.clear()
            outputs.clear()
            model(chunk)
            visit([states[i] for i in range(len(stack.blocks) + 1)], dict(outputs))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return returns_tuple


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-token cosine similarity of two (tokens, width) matrices."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
