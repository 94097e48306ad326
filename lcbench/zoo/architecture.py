"""What a run's model is made of, read before anything is trained: its collapsible and residual blocks,
from the model built on the meta device (no memory, no weights), so that a `k`, a `collapsed:K` student, a
level or a block removal the architecture does not have is refused when the run is planned, not after its
original model is trained."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..core.config import RunConfig
from . import collapse, residual
from .data import DATASETS, model_img_size
from .models import create_model


@dataclass(frozen=True)
class BlockInfo:
    """One collapsible block: its name (the activation's module path) and its PReLU's default start."""

    name: str
    container: str
    init_slope: float


def blocks(cfg: RunConfig) -> tuple[BlockInfo, ...]:
    """The run's model's collapsible blocks in registration order (the last ones nearest the output)."""
    return _blocks(*model_key(cfg))


def residual_stack(cfg: RunConfig) -> residual.ResidualStack | None:
    """The run's model's residual blocks (None for a model without a stack of them: an MLP, VGG)."""
    return residual.find_stack(meta_model(cfg))


def meta_model(cfg: RunConfig) -> nn.Module:
    """The run's model on the meta device (shared and cached: copy it before changing it)."""
    return _meta_model(*model_key(cfg))


def model_key(cfg: RunConfig) -> tuple:
    """What fixes the run's architecture (model, classes, channels, input size, text): a cache key."""
    spec = DATASETS.get(cfg.dataset)
    num_classes = spec.num_classes if spec.num_classes is not None else 1000
    return cfg.model, num_classes, spec.in_chans, model_img_size(cfg), spec.is_text


@functools.lru_cache(maxsize=64)
def _meta_model(model: str, num_classes: int, in_chans: int, img_size: int | None, text: bool) -> nn.Module:
    with torch.device("meta"):
        if text:  # a registered name fixes the architecture; a save_pretrained folder only its weights
            return create_model(model, num_classes)
        return create_model(model, num_classes, in_chans, img_size)


@functools.lru_cache(maxsize=256)
def _blocks(*key) -> tuple[BlockInfo, ...]:
    net = _meta_model(*key)
    return tuple(
        BlockInfo(b.name, b.container, collapse.default_init_slope(collapse.activation(net, b)))
        for b in collapse.find_blocks(net)
    )


def selected(cfg: RunConfig, k: int = 0, names: list[str] | tuple[str, ...] = (), what: str = "k") -> list:
    """The blocks `k` (the last k, nearest the output first) or `names` select, or a ConfigError that says
    what the architecture has; `what` names the setting in the message (`k`, `student=collapsed:K`)."""
    return collapse.choose_blocks(list(blocks(cfg)), k, list(names), cfg.model, what)
