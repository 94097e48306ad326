"""Weights & Biases tracking. The run record on disk stays the source of truth; W&B mirrors it."""

from __future__ import annotations

import os
from typing import Any

from .config import RunConfig, to_dict


def resolve_mode(mode: str) -> str:
    """`online` falls back to `offline` when no API key is configured (never prompt)."""
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_key()):
        return "offline"
    return os.environ.get("WANDB_MODE", mode) if mode != "disabled" else "disabled"


def _has_netrc_key() -> bool:
    import netrc

    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


class Tracker:
    """One W&B run per lcbench run, resumable under the same id (kept in the run record)."""

    def __init__(self, cfg: RunConfig, run_id: str, run_dir: str, wandb_id: str | None = None) -> None:
        self.mode = resolve_mode(cfg.tracking.mode)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        self.run = wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity or None,
            group=cfg.tracking.group or None,
            job_type=cfg.stage,
            name=f"{cfg.method}-{cfg.model}-{run_id}"
            if cfg.stage == "compress"
            else f"pretrain-{cfg.model}-{run_id}",
            tags=[cfg.method, cfg.model, cfg.dataset, *cfg.tracking.tags],
            config={**to_dict(cfg), "run_id": run_id},
            id=wandb_id or f"{run_id}",
            resume="allow",
            dir=run_dir,
            mode=self.mode,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    @property
    def wandb_id(self) -> str | None:
        return self.run.id if self.run else None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run:
            for key, value in values.items():
                if value is not None:
                    self.run.summary[key] = value

    def finish(self, exit_code: int = 0, preempted: bool = False) -> None:
        if self.run:
            if preempted:  # shown as preempted (not crashed) until the requeued job resumes this run
                self.run.mark_preempting()
            self.run.finish(exit_code=exit_code)
            self.run = None
