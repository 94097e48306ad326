"""`lcbench replay RUN`: rerun a run's config with its recorded live changes applied at the same steps.

The changes come from the run's `tune` events in metrics.jsonl; the replay writes a run of the same id
under another output root (default `<run>/replay`), starting from the same pretrain run, and its per-epoch
metrics are compared with the original's. On CPU at the same thread count they are identical.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core.config import load_yaml, pretrain_config
from ..core.errors import LcbenchError
from ..core.store import RunDir, iter_events
from .identity import run_id
from .pipeline import execute
from .resolve import make_config

COMPARED = ("train_loss", "val_top1", "val_loss", "lr")


def _share_pretrain(source_root: Path, root: Path, pre: str) -> None:
    """The pretrain run's files (record, model, per-example records) in a real folder of the replay's root:
    hard links where the file system allows (no copy of a large model), copies otherwise; never a symbolic
    link, which a compress run refuses to read through."""
    folder = root / pre
    if folder.is_symlink():  # (a replay made by an older lcbench)
        folder.unlink()
    folder.mkdir(exist_ok=True)
    for source in (source_root / pre).iterdir():  # its record, model, per-example records, config
        target = folder / source.name
        if target.exists() or source.is_symlink() or not source.is_file() or source.name.startswith("."):
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def replay_run(run_path: Path, out: str | None = None) -> dict:
    run_path = Path(run_path)
    cfg = make_config(load_yaml(run_path / "config.yaml"))
    original = list(iter_events(run_path / "metrics.jsonl", "epoch"))
    if len(original) < cfg.epochs:
        raise LcbenchError(
            f"run {run_path.name} has not finished its {cfg.epochs} epochs; replay a finished run"
        )
    changes = list(iter_events(run_path / "metrics.jsonl", "tune"))
    root = Path(out) if out else run_path / "replay"
    root.mkdir(parents=True, exist_ok=True)
    replay_cfg = make_config({**load_yaml(run_path / "config.yaml"), "output_root": str(root)})
    if cfg.stage == "compress":  # start from the very same original model
        _share_pretrain(Path(cfg.output_root), root, run_id(pretrain_config(cfg)))
    execute(replay_cfg, force=True, progress_bar=False, replay_changes=changes)
    replayed = RunDir(root, run_id(replay_cfg)).events("epoch")
    rows = []
    for a, b in zip(original, replayed):
        same = all(a.get(k) == b.get(k) for k in COMPARED)
        rows.append(
            {
                "epoch": a["epoch"],
                "original": {k: a.get(k) for k in COMPARED},
                "replay": {k: b.get(k) for k in COMPARED},
                "same": same,
            }
        )
    identical = len(original) == len(replayed) and all(r["same"] for r in rows)
    return {"changes": changes, "epochs": rows, "identical": identical, "replay_dir": str(root)}
