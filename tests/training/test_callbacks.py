"""Callbacks between optimizer steps: the trainer's counters are current when they run, their time is
not training time, and a change they make is recorded and takes effect at that step."""

from __future__ import annotations

import time

import torch

from lcbench.core.store import RunDir
from lcbench.methods import METHODS, RunContext
from lcbench.training.callbacks import Replay
from lcbench.training.identity import run_id
from lcbench.training.resolve import make_config, method_params
from lcbench.training.train import Callback, Trainer
from lcbench.zoo.data import load_data
from lcbench.zoo.loaders import make_loader
from lcbench.zoo.models import create_model
from tests.conftest import fast_overrides


def _trainer(tmp_path, callbacks, **extra) -> Trainer:
    cfg = make_config({}, fast_overrides(tmp_path, epochs=1, **extra))
    run = RunDir(tmp_path, run_id(cfg))
    run.create()
    data = load_data("digits", tmp_path, None)
    model = create_model(cfg.model, data.num_classes, data.in_chans)
    val = make_loader(data.val, cfg.eval_batch_size, False, 0)
    ctx = RunContext(cfg, run, torch.device("cpu"), data, model, (1, 8, 8), val)
    return Trainer(model, METHODS.get("finetune")(method_params(cfg), ctx), callbacks, progress_bar=False)


class AtStep(Callback):
    def __init__(self, step: int, action) -> None:
        self.step, self.action, self.seen = step, action, None

    def wants_step(self, trainer: Trainer) -> bool:
        return trainer.progress.step == self.step

    def on_step(self, trainer: Trainer) -> None:
        self.seen = (trainer.progress.batch, trainer.progress.epoch_seen, trainer.progress.epoch_loss_sum)
        self.action(trainer)


def test_a_callback_sees_current_counters_and_its_change_is_recorded_at_its_step(tmp_path):
    callback = AtStep(5, lambda trainer: trainer.set_value("lr", 0.0, "test"))
    trainer = _trainer(tmp_path, (callback,), batch_size=32)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    batch, seen, loss_sum = callback.seen
    assert (batch, seen) == (5, 5 * 32) and loss_sum > 0
    tune = trainer.run.events("tune")
    assert [(e["step"], e["key"], e["old"], e["new"]) for e in tune] == [(5, "lr", trainer.cfg.lr, 0.0)]
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # and it stayed so to the end
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_time_spent_in_callbacks_is_not_training_time(tmp_path):
    trainer = _trainer(tmp_path, (AtStep(3, lambda trainer: time.sleep(2.0)),))
    trainer.fit()
    (epoch,) = trainer.run.events("epoch")
    assert epoch["epoch_seconds"] < 2.0 and trainer.progress.train_seconds < 2.0


def test_replay_skips_the_changes_a_resumed_run_has_already_applied(tmp_path):
    changes = [{"step": 2, "key": "lr", "new": 0.5}, {"step": 9, "key": "lr", "new": 0.25}]
    replay = Replay(changes)
    trainer = _trainer(tmp_path, (replay,))
    trainer.progress.step = 4  # as after a resume at step 4
    replay.on_fit_start(trainer)
    assert replay.changes == [changes[1]]
    assert not replay.wants_step(trainer)
