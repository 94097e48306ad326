"""The one entry point of a sweep's job, used by the local queue's run processes and by SLURM's tasks
alike: a resolved config in, the run executed (its pretrain is a job of its own, never trained here)."""

from __future__ import annotations

from ..core.config import RunConfig
from .pipeline import execute


def run_job(cfg: RunConfig) -> dict:
    """Execute one planned run; returns its record (raises on failure, after writing a failed record)."""
    return execute(cfg, progress_bar=False, require_pretrained=True)
