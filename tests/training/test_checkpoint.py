"""The checkpoint file: bound to its run, restoring a `state_dict`, refusing what it cannot use."""

from __future__ import annotations

import pytest
import torch

from lcbench.core.errors import CheckpointError
from lcbench.core.store import RunDir
from lcbench.training.checkpoint import Checkpointer


class Counter:
    def __init__(self, value: int = 0) -> None:
        self.value = value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def _run(tmp_path, rid: str = "run-a") -> RunDir:
    run = RunDir(tmp_path, rid)
    run.create()
    return run


def test_resume_restores_the_state_and_drops_events_logged_after_the_checkpoint(tmp_path):
    run = _run(tmp_path)
    run.log("epoch", epoch=1)
    Checkpointer(run).save(Counter(7))
    run.log("epoch", epoch=2)  # logged after the checkpoint: the resumed run logs epoch 2 again
    restored = Counter()
    assert Checkpointer(run).resume(restored) and restored.value == 7
    assert [e["epoch"] for e in run.events("epoch")] == [1]


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    restored = Counter(3)
    assert not Checkpointer(_run(tmp_path)).resume(restored) and restored.value == 3


def test_a_checkpoint_of_another_run_or_shape_is_one_clear_error(tmp_path):
    Checkpointer(_run(tmp_path, "run-b")).save(Counter(1))
    run = _run(tmp_path)
    run.checkpoint_path.write_bytes((tmp_path / "run-b" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match="written by run run-b, not by run run-a"):
        Checkpointer(run).resume(Counter())

    torch.save({"model": {}}, run.checkpoint_path)  # a model file, not a training checkpoint
    with pytest.raises(CheckpointError, match="not a training checkpoint.*delete it"):
        Checkpointer(run).resume(Counter())

    Checkpointer(run).save(Counter(1))
    with pytest.raises(CheckpointError, match=r"does not fit run run-a \(KeyError"):
        Checkpointer(run).resume(type("Other", (), {"load_state_dict": lambda self, s: s["weights"]})())


class _Payload:
    """Runs code when unpickled: what a planted model file could hold."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_pickle_payload_is_refused_in_one_line(tmp_path, capsys):
    """torch's unpickler explains its refusal over many lines; every lcbench reader says it in one."""
    from lcbench.training.pipeline import read_model_file
    from lcbench.zoo.models import read_state_dict

    path = tmp_path / "model.pt"
    torch.save({"format": 1, "state_dict": {}, "payload": _Payload()}, path)
    for read in (read_model_file, read_state_dict):
        with pytest.raises(CheckpointError) as refused:
            read(path)
        assert "\n" not in str(refused.value) and str(path) in str(refused.value)
    run = _run(tmp_path)
    torch.save({"metrics_size": 0, "payload": _Payload()}, run.checkpoint_path)
    with pytest.raises(CheckpointError) as refused:
        Checkpointer(run).resume(Counter())
    assert "\n" not in str(refused.value) and "cannot be read" in str(refused.value)
    assert "unpickled" not in capsys.readouterr().out  # the payload never ran
