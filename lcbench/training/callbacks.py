"""What runs between optimizer steps besides training: `lcbench replay`'s recorded changes and the live
control channel of `lcbench tune`.

Both are `train.Callback`s: they change training only through `Trainer.set_value` and save through
`Trainer.save_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ConfigError, RunStopped
from . import distributed
from .control import TRIGGERS, ControlChannel
from .rng import rng_state, set_rng_state
from .train import Callback, Trainer


class Replay(Callback):
    """Applies a run's recorded `tune` changes at the steps they were made (`lcbench replay`)."""

    def __init__(self, changes: list[dict]) -> None:
        self.changes = sorted(changes, key=lambda c: c["step"])

    def on_fit_start(self, trainer: Trainer) -> None:  # a resumed replay has applied the earlier ones
        self.changes = [c for c in self.changes if c["step"] > trainer.progress.step]

    def wants_step(self, trainer: Trainer) -> bool:
        return bool(self.changes) and self.changes[0]["step"] == trainer.progress.step

    def on_step(self, trainer: Trainer) -> None:
        while self.changes and self.changes[0]["step"] == trainer.progress.step:
            change = self.changes.pop(0)
            trainer.set_value(change["key"], change["new"], change.get("requester", "replay"))


class LiveControl(Callback):
    """Serves `lcbench tune` requests (at most one look at the control folder per second).

    Every pending request is served in one look and made durable by one checkpoint. Any error while
    serving refuses that request alone (logged as `tune_rejected`, answered): a request never kills a run.
    In a DDP run rank 0 looks and broadcasts what it found every `DDP_SYNC_STEPS` steps, and every rank
    applies the same requests at the same step; only rank 0 answers them.
    """

    DDP_SYNC_STEPS = 10

    def __init__(self, run_path: Path) -> None:
        self.channel = ControlChannel(run_path)
        self.main, self.ranks = True, 1

    def on_fit_start(self, trainer: Trainer) -> None:
        self.main, self.ranks = trainer.world.main, trainer.world.size

    def wants_step(self, trainer: Trainer) -> bool:
        if self.ranks == 1:
            return self.channel.due()
        if trainer.progress.step % self.DDP_SYNC_STEPS:
            return False
        return bool(distributed.broadcast(self.channel.due() if self.main else None))

    def on_step(self, trainer: Trainer) -> None:
        accepted, stop = [], None
        pending = distributed.broadcast(list(self.channel.pending()) if self.main else None)
        for path, request, problem in pending:
            ack = self._serve(trainer, path, request, problem)
            if ack is not None:
                accepted.append((path, request, ack))
                if request.get("trigger") == "stop":
                    stop = f"stopped on request at step {trainer.progress.step} ({ack['requester']})"
                    break  # later requests wait for the resumed run
        if accepted:  # one checkpoint makes every accepted change durable (a killed run resumes with them)
            trainer.save_checkpoint()
            for path, request, ack in accepted:
                self._answer(path, request, {**ack, "checkpoint": str(trainer.run.checkpoint_path)})
        if self.main:
            self.channel.clean_acks()
        if stop:
            raise RunStopped(stop)

    def _serve(self, trainer: Trainer, path: Path, request: dict | None, problem: str) -> dict | None:
        """Apply one request; returns its ack, or None when it was refused (and answered)."""
        who = str((request or {}).get("requester", "?"))[:200]
        if not problem:
            try:
                return self._apply(trainer, request, who)
            except ConfigError as e:  # nothing is applied when any value is refused
                problem = str(e)
            except Exception as e:  # noqa: BLE001 - whatever a request holds, the run goes on
                problem = f"{type(e).__name__}: {e}"[:500]
        step = trainer.progress.step
        trainer.run.log("tune_rejected", step=step, reason=problem, requester=who, file=path.name)
        self._answer(path, request, {"accepted": False, "reason": problem})
        return None

    def _answer(self, path: Path, request: dict | None, ack: dict) -> None:
        if self.main:
            self.channel.answer(path, request, ack)

    def _apply(self, trainer: Trainer, request: dict, who: str) -> dict:
        checked = {key: self._check(trainer, key, value) for key, value in (request.get("set") or {}).items()}
        changes = [trainer.set_value(key, value, who) for key, value in checked.items()]
        p = trainer.progress
        ack = {"accepted": True, "step": p.step, "epoch": p.epoch, "changes": changes, "requester": who}
        trigger = request.get("trigger")
        if trigger == "eval":
            ack["eval"] = self._evaluate(trainer)
        if trigger:
            trainer.run.log("trigger", step=p.step, epoch=p.epoch, trigger=trigger, requester=who)
        return ack

    @staticmethod
    def _check(trainer: Trainer, key: str, value) -> float:
        if key not in trainer.tunable:
            raise ConfigError(
                f"{key} is not live-tunable here; tunable: {', '.join(sorted(trainer.tunable))} "
                f"(triggers: {', '.join(TRIGGERS)})"
            )
        if key == "momentum" and trainer.cfg.optimizer != "sgd":
            raise ConfigError("momentum is live-tunable with optimizer=sgd only")
        return trainer.tunable[key].coerce(key, value)

    @staticmethod
    def _evaluate(trainer: Trainer) -> dict:
        """Evaluate on the held-out set without disturbing the training RNG (replays stay exact)."""
        state = rng_state()
        result = trainer.method.ctx.evaluate(trainer.model)
        set_rng_state(state)
        trainer.run.log("eval", step=trainer.progress.step, epoch=trainer.progress.epoch, **result)
        return result
