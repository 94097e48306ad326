"""One run as a SLURM job: a submitit `Checkpointable` that submitit pickles at submission and calls on
the node (from the code snapshot), and requeues on the scheduler's preemption or time-limit signal. Its
own module: submitit is imported only where SLURM is used (`lcbench[slurm]`)."""

from __future__ import annotations

from typing import Any

import submitit

from ..training.job import run_job
from ..training.pipeline import mark_preempted
from ..training.resolve import make_config


class RunJob(submitit.helpers.Checkpointable):
    """One run as a SLURM job; requeued (and resumed) on preemption or time limit."""

    def __call__(self, config: dict) -> dict:
        cfg = make_config(config)
        if cfg.nproc * cfg.nodes > 1:  # one task per rank: RANK, WORLD_SIZE, MASTER_ADDR... from SLURM's
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        result = run_job(cfg)
        return {"run_id": result["run_id"], "status": result["status"]}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        mark_preempted()  # the trainer's per-epoch checkpoint is what the requeued job resumes from
        return super().checkpoint(*args, **kwargs)
