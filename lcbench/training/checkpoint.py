"""The run's checkpoint file: written atomically, bound to its run, read back with a one-line error.

Like timm's `CheckpointSaver`, this owns saving and loading; what is saved is the trainer's
`state_dict()` (model, optimizer, scheduler, scaler, counters, RNG and loader states, the method's state,
live-tuned values). Two entries belong to the run folder and are added here: the run id (a checkpoint
copied into another run's folder is refused) and the length of metrics.jsonl at that moment (a resume
drops the events logged after it, so no epoch is recorded twice).
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..core.errors import CheckpointError, LcbenchError, first_line
from ..core.store import RunDir, atomic_torch_save


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Checkpointer:
    """Saves `target.state_dict()` to the run's checkpoint and restores it with `load_state_dict`."""

    def __init__(self, run: RunDir) -> None:
        self.run, self.path = run, run.checkpoint_path

    def save(self, target: Stateful) -> None:
        state = target.state_dict()  # (on every rank of a DDP run: it gathers their RNG states)
        if not self.run.writes:
            return
        atomic_torch_save(
            self.path, {**state, "run_id": self.run.run_id, "metrics_size": self.run.metrics_size()}
        )

    def resume(self, target: Stateful) -> bool:
        """Restore `target` from the checkpoint if there is one (True), else leave it as it is (False)."""
        if not self.path.exists():
            return False
        state = self._read()
        try:
            target.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, LcbenchError) as e:  # not this run's state
            raise CheckpointError(
                f"the checkpoint {self.path} does not fit run {self.run.run_id} "
                f"({type(e).__name__}: {first_line(e)}); delete it to restart the run from scratch"
            ) from e
        self.run.truncate_metrics(state["metrics_size"])
        return True

    def _read(self) -> dict:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure means the file is unusable
            raise CheckpointError(
                f"the run's checkpoint {self.path} cannot be read ({first_line(e)}); "
                "delete it to restart the run from scratch"
            ) from e
        if not isinstance(state, dict) or "metrics_size" not in state:
            raise CheckpointError(
                f"the checkpoint {self.path} is not a training checkpoint of lcbench; "
                "delete it to restart the run from scratch"
            )
        written_by = state.get("run_id")
        if written_by is not None and written_by != self.run.run_id:
            raise CheckpointError(
                f"the checkpoint {self.path} was written by run {written_by}, not by run {self.run.run_id} "
                "whose folder holds it (copied?); delete it to restart this run from scratch"
            )
        return state
