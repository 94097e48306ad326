"""Weights & Biases tracking. The run record on disk stays the source of truth; W&B mirrors it."""

from __future__ import annotations

import logging
import netrc
import os
import time
from typing import Any

from ..core import extras
from ..core.config import RunConfig, to_dict


def resolve_mode(mode: str) -> str:
    """`online` falls back to `offline` when no API key is configured (never prompt)."""
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_key()):
        return "offline"
    return os.environ.get("WANDB_MODE", mode) if mode != "disabled" else "disabled"


def _has_netrc_key() -> bool:

    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def run_name(cfg: RunConfig, run_id: str) -> str:
    """`digits/layercollapse/digits_vit/L2/s0` in a sweep (sweep, variant, model, level, seed);
    `digits/original/digits_vit/s0` for its pretrain runs; outside a sweep the run id ends the name."""
    t = cfg.tracking
    if cfg.stage == "pretrain":
        parts = [t.group, "original", cfg.model, f"s{cfg.seed}"]
    else:
        parts = [
            t.group,
            t.variant or cfg.method,
            cfg.model,
            f"L{t.level}" if t.level else "",
            f"s{cfg.seed}",
        ]
    if not t.variant and cfg.stage == "compress":
        parts.append(run_id)  # no sweep point names it: two configs could share the rest
    return "/".join(p for p in parts if p)


class Tracker:
    """One W&B run per lcbench run, resumable under the same id (kept in the run record).

    History keys are namespaced for the dashboard: `train/...`, `val/...`, `cost/...`, `method/...`
    (the method's per-epoch figures, such as LayerCollapse's slopes) and `tune/...` (live changes).
    """

    def __init__(self, cfg: RunConfig, run_id: str, run_dir: str, replay: bool = False) -> None:
        self.mode = resolve_mode(cfg.tracking.mode)
        self.run = None
        if self.mode == "disabled":
            return
        extras.require("wandb", purpose=f"tracking.mode={self.mode} (tracking.mode=disabled needs nothing)")
        import wandb  # only when tracking is on: importing wandb costs seconds

        self.run = wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity or None,
            group=cfg.tracking.group or None,
            job_type=cfg.stage,
            name=run_name(cfg, run_id),
            tags=[cfg.method, cfg.model, cfg.dataset, *(["replay"] if replay else []), *cfg.tracking.tags],
            config={
                **to_dict(cfg),
                "run_id": run_id,
                "sweep": cfg.tracking.group,
                "variant": cfg.tracking.variant,
                "level": cfg.tracking.level,
            },
            # a replay is a new W&B run (never appended to the original's history)
            id=f"{run_id}-replay-{int(time.time())}" if replay else run_id,
            resume="allow",
            dir=os.environ.get("WANDB_DIR") or run_dir,
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

    def log_epoch(self, metrics: dict[str, Any], method_keys: set[str]) -> None:
        """One epoch's figures under dashboard namespaces (the record's flat names stay on disk)."""
        self.log({_namespaced(key, method_keys): value for key, value in metrics.items()}, metrics["step"])

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
            _wait_for_wandb_files()


def _wait_for_wandb_files() -> None:
    """Block until wandb's service has written and closed the run's files.

    `run.finish()` only tells the service the run is over: the transaction log (`run-<id>.wandb`, what
    `wandb sync` uploads) is flushed when the service closes the stream, later. wandb does that at exit,
    which a queue worker forked from the fork server, or a job killed after its run, may never reach.
    """
    import wandb

    try:
        wandb.teardown()
    except SystemExit as exc:  # wandb exits the process when its service failed: the run itself did not
        logging.getLogger(__name__).warning(
            "W&B's service ended with code %s; its files may be incomplete", exc.code
        )


_EPOCH_KEYS = {
    "epoch": "epoch",
    "step": "step",
    "lr": "train/lr",
    "train_loss": "train/loss",
    "train_top1": "train/top1",
    "epoch_seconds": "train/epoch_seconds",
    "val_top1": "val/top1",
    "val_top5": "val/top5",
    "val_loss": "val/loss",
    "samples_seen": "cost/samples_seen",
    "train_flops": "cost/train_flops",
}


def _namespaced(key: str, method_keys: set[str]) -> str:
    if key in method_keys:
        return f"method/{key}"
    if key in _EPOCH_KEYS:
        return _EPOCH_KEYS[key]
    return f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"train/{key}"
