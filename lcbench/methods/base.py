"""The plug-in interface every compression method implements on the one shared trainer.

A method is one file (in `lcbench/methods/`, `lcbench/baselines/` or a package of the `lcbench.methods`
entry-point group) holding a `Method` subclass registered with `@METHODS.register("name")` and its `Params`
dataclass.

Lifecycle of a run (`pipeline.execute`), in order:

1. `check(params, cfg)` (classmethod): at config time, before any run folder exists (`plan_note(params,
   cfg)`, also a classmethod, is what `lcbench plan` prints beside the run).
2. `__init__(params, ctx)`: the `RunContext` below is complete (data, original model, held-out loader).
3. `prepare(model)`: turn the original model into the one to train; returns it.
4. On **resume**, `prepare` has run again on a fresh original model, then `load_state_dict(state, model)`
   receives what `state_dict()` returned at the checkpoint and re-applies the structural changes made since
   (blocks folded, masks), returning the model whose weights the checkpoint then loads.
5. Training: `loss(...)` every step, `after_step(optimizer)` after every optimizer step, `epoch_metrics`
   logged with every epoch (and once before the first, as epoch 0), `on_epoch_end(epoch, model)` between
   epochs and `on_step_end(step, total_steps, model)` after every step (either returns True after a
   structural change: the trainer rebuilds its optimizer, the schedule continuing where it was).
6. `finalize(model)`: materialise the compressed model (per-example outcomes of an evaluation the run
   should keep go into `self.outcomes`); `structure()` is stored with it and
   `rebuild(model, structure)` re-creates that architecture from the original when the file is read.

Optional hooks with defaults: `operating_range` (where the method is meant to work: a run outside
it records `report["outside_range"]`, the reason, and is labelled, never counted), `match_target` (the
compression it was asked to match), `original_forward_passes` (forward passes of the original model per
training sample: a KD teacher's 1, counted in the training FLOPs by the trainer and the planner alike),
`final_model_name` (a student of another architecture), `search_space(params, optimizer)` with
`search_source` (the values `lcbench search` tries, and their source). A `Params` field declared with
`option(..., tunable=True)` may be changed by `lcbench tune` while the run trains.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..core.config import RunConfig
from ..core.store import RunDir
from ..training.evaluation import evaluate, examine
from ..zoo import architecture
from ..zoo.collapse import collapse_targets
from ..zoo.data import DATASETS, DataSplits
from ..zoo.loaders import make_loader


@dataclass
class RunContext:
    """What a method may use besides the model it trains."""

    cfg: RunConfig
    run: RunDir
    device: torch.device
    data: DataSplits
    original: nn.Module  # the starting model, frozen in eval mode (KD teacher, fold reference)
    input_shape: tuple[int, ...]
    val_loader: DataLoader  # the held-out set

    def evaluate(self, model: nn.Module) -> dict:
        return evaluate(model, self.val_loader, self.device, self.cfg.precision, self.task)

    def examine(self, model: nn.Module) -> tuple[dict, dict[str, np.ndarray]]:
        """`evaluate`, with every held-out example's outcome (kept in the run's `examples.npz`)."""
        return examine(model, self.val_loader, self.device, self.cfg.precision, self.task)

    @property
    def task(self) -> str:
        return DATASETS.get(self.cfg.dataset).task

    @property
    def quality(self) -> str:
        """The data set's headline metric (`top1`, `perplexity`, ...): what a method compares."""
        return DATASETS.get(self.cfg.dataset).metric

    def training_indices(self, size: int = 128) -> list[int]:
        """The indices of `size` training examples drawn with the run's seed (`training_batch`'s)."""
        order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(self.cfg.seed))
        return order[: min(size, len(order))].tolist()

    def training_batch(self, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """`size` training examples (inputs, targets) drawn with the run's seed: calibration that chooses
        something, such as low-rank's allocation, never looks at the held-out set."""
        first = Subset(self.data.train, self.training_indices(size))
        loader = make_loader(first, self.val_loader.batch_size, False, 0, device=self.device)
        pairs = [(x.to(self.device), y.to(self.device)) for x, y in loader]
        return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])

    def training_example(self) -> torch.Tensor:
        """The first of `training_batch`'s inputs (a batch of one), drawn without moving the global generator
        (a DataLoader's iterator draws its seed from it): the run's later shuffling stays as without it."""
        with torch.random.fork_rng(devices=[]):
            return self.training_batch(1)[0]

    def calibration_record(self, size: int, forward_flops: float) -> dict[str, Any]:
        """What a run records about its calibration on `size` training examples (`training_indices`): the
        count, seed, a hash of the indices, and the forward FLOPs spent on them."""
        indices = self.training_indices(size)
        return {
            "samples": len(indices),
            "seed": self.cfg.seed,
            "indices_sha256": hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest(),
            "split": "train",
            "forward_flops": forward_flops,
        }

    def training_chunks(self, size: int = 128) -> list[torch.Tensor]:
        """`training_batch`'s inputs in chunks of the held-out batch size (one chunk in memory at a time)."""
        inputs, _ = self.training_batch(size)
        return list(inputs.split(self.val_loader.batch_size or len(inputs)))

    def calibration_batch(self, size: int = 128) -> torch.Tensor:
        """The first `size` held-out inputs (a fixed batch for measuring a fold's output error; the same
        on every rank of a DDP run, whose held-out loader holds the rank's share only)."""
        first = Subset(self.data.val, range(min(size, len(self.data.val))))
        loader = make_loader(first, self.val_loader.batch_size, False, 0, device=self.device)
        return torch.cat([x.to(self.device) for x, _ in loader])


class Method:
    """The identity method (`none`, a pretrain run); every hook is documented in the module docstring."""

    title = ""  # the display name in tables and plots (default: the registered name, spaces for "_")
    summary = "plain training, no compression (pretrain runs)"  # `lcbench list methods`: each class its own
    original_forward_passes = 0.0  # forward passes of the original model per training sample (KD: 1)
    # where the method is meant to work, with its source; a run outside it sets report["outside_range"] to
    # why, and is run and recorded but labelled "outside its range" and never counted in a verdict
    operating_range = ""
    # the values `lcbench search` tries for the method's own parameters, its authors' recommended ones first
    # (`search_space`), and where they come from; the fine-tuning lr of a run that trains is searched for
    # every method alike (`execution.search.LR_FACTORS`)
    search_source = ""

    @dataclass
    class Params:
        """The method's parameters (none for plain training)."""

    @classmethod
    def check(cls, params: Any, cfg: RunConfig) -> None:
        """Reject parameters that cannot work with the run's config (raise ConfigError), before any run
        folder exists; `lcbench.architecture` reads the model's blocks from the meta device for rules that
        need them (a `k` the model does not have); rules that need its weights are checked in `prepare`.
        By default: a `match_collapse=k` parameter must name blocks the model has."""
        if getattr(params, "match_collapse", 0):
            architecture.selected(cfg, params.match_collapse, what="match_collapse")

    @classmethod
    def search_space(cls, params: Any, optimizer: str) -> dict[str, list]:
        """Parameter -> the values `lcbench search` may try for a variant with these `params` trained with
        `optimizer` (a penalty's scale differs inside and outside AdamW); those the variant fixes by its
        protocol (e.g. KD's student) are not searched; {} for none."""
        return {}

    @classmethod
    def plan_note(cls, params: Any, cfg: RunConfig) -> str:
        """What `lcbench plan` says about the run beside its cost (LayerCollapse: the predicted slope)."""
        return ""

    def __init__(self, params: Any, ctx: RunContext) -> None:
        self.params = params
        self.ctx = ctx
        self.report: dict[str, Any] = {}  # method-specific details recorded in result.json
        # per-example outcomes of evaluations the run keeps besides its final model's (`examples.npz`),
        # by name (LayerCollapse: "prefold", the regularised model before its fold)
        self.outcomes: dict[str, dict[str, np.ndarray]] = {}
        # forward FLOPs spent on calibration data before training (Wanda's activation norms): counted in the
        # run's training FLOPs, so cost-to-accuracy compares it honestly with methods that train
        self.calibration_flops = 0.0

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def compression_target(self, model: nn.Module, target: float) -> tuple[float, dict | None]:
        """The compression to aim at: `target`, or with a `match_collapse=k` parameter what folding the
        last k blocks of `model` gives (returned with that measurement, recorded by the run)."""
        k = getattr(self.params, "match_collapse", 0)
        if not k:
            return target, None
        matched = collapse_targets(model, k, self.ctx.input_shape, self.ctx.cfg.model)
        return matched["compression"], matched

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

    def on_step_end(self, step: int, total_steps: int, model: nn.Module) -> bool:
        """After optimizer step `step` (1-based) of `total_steps`; True after a structural change."""
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
