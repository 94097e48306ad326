"""The executors by name, and `--executor auto`'s choice between them."""

from __future__ import annotations

import functools
import logging
import shutil

from ..core.errors import ConfigError
from .local_queue import LocalExecutor
from .slurm import SlurmExecutor, check_sbatch, controller_problem
from .submissions import Executor, LaunchOptions

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "slurm": SlurmExecutor}
CHOICES = (*EXECUTORS, "auto")
log = logging.getLogger("lcbench")


@functools.cache
def executor_named(name: str) -> Executor | None:
    """The executor that made a recorded submission, to ask about its jobs (None: not known here)."""
    cls = EXECUTORS.get(name)
    return cls() if cls else None


def executor_for_launch(options: LaunchOptions) -> Executor:
    """The executor a launch uses, its options checked (a bad profile is reported before the cluster is
    asked); `auto` is SLURM when sbatch is here and a controller answers, else the local queue."""
    if options.executor not in CHOICES:
        raise ConfigError(f"--executor {options.executor!r}: choose one of {', '.join(CHOICES)}")
    name = options.executor
    if name == "slurm":
        executor = SlurmExecutor(options)
        check_sbatch()
        return executor
    if name == "auto" and shutil.which("sbatch"):
        problem = controller_problem()
        if not problem:
            return SlurmExecutor(options)
        log.warning("%s: running on the local queue (--executor slurm to insist)", problem)
    return LocalExecutor(options)
