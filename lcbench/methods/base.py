"""The plug-in interface every compression method implements on the one shared trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from ..pipeline import RunContext


class Method:
    """A method hooks into the trainer at four points, never through switches on its name:

    - `prepare(model)`: turn the original model into the one to train (convert blocks, prune, tie weights);
    - `loss(task_loss, logits, inputs, targets, model)`: the training loss (task loss plus its own terms);
    - `on_epoch_end(epoch, model)`: act between epochs; return True when the model's parameters changed
      structurally, so the trainer rebuilds the optimizer;
    - `finalize(model)`: materialise the compressed model.

    `structure()` returns what is needed to rebuild the final model from the original architecture
    (`rebuild`), and `state_dict`/`load_state_dict` carry the method's own state across a resume.
    """

    name: ClassVar[str] = "none"

    @dataclass
    class Params:
        """The method's parameters (none for plain training)."""

    # parameters that `lcbench tune` may change while the run trains: name -> control.Tunable
    tunable: dict[str, Any] = {}

    @classmethod
    def check(cls, params: Any, cfg: Any) -> None:
        """Reject parameters that cannot work with the run's config (raise ConfigError), before any run
        folder exists; rules that need the model are checked in `prepare`."""

    def __init__(self, params: Any, ctx: RunContext) -> None:
        self.params = params
        self.ctx = ctx
        self.report: dict[str, Any] = {}  # method-specific details recorded in result.json

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def loss(
        self,
        task_loss: torch.Tensor,
        logits: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        model: nn.Module,
    ) -> torch.Tensor:
        return task_loss

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        return False

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called after every optimizer step (LayerCollapse's decoupled slope regulariser)."""

    def match_target(self) -> dict[str, Any] | None:
        """What this run was asked to match, `{"quantity": "compression" | "macs_ratio", "target": x}`;
        the pipeline adds what was achieved and whether it lies within `collapse.MATCH_TOLERANCE`."""
        return None

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        """Extra values logged with each epoch's metrics (e.g. LayerCollapse slopes)."""
        return {}

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def extra_forward_flops_per_sample(self) -> float:
        """Forward FLOPs per training sample spent outside the trained model (a KD teacher)."""
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> nn.Module:
        """Restore the method's state on resume; re-apply structural changes to `model` and return it."""
        return model

    def final_model_name(self) -> str:
        """The zoo architecture the final model is rebuilt from (a KD student may differ from the model)."""
        return self.ctx.cfg.model

    def structure(self) -> dict[str, Any]:
        return {}

    @classmethod
    def rebuild(cls, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        """Apply a recorded `structure()` to a freshly built original model (before loading weights)."""
        return model
