"""What was submitted where, and the interface of the executors that submit.

One line per launch in `<output_root>/.sweeps/<sweep>/submissions.jsonl`. The run records stay the source
of truth for results; a submission only says which job (a local queue's slot or a SLURM array task) was
asked to produce each run, so `status` can ask its executor about it and `cancel` can withdraw it.

An executor (the local queue in `local_queue.py`, SLURM in `slurm.py`; looked up by name in
`executors.py`) does three things, as submitit's executors do for its backends: `submit` a sweep's runs,
report the `states` of jobs it holds, and `cancel` them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.config import RunConfig
from ..core.store import UnsafeRunFolder, check_own_folder, dumps, open_no_follow

if TYPE_CHECKING:
    from .sweep import Plan, PlannedRun


@dataclass
class Submission:
    executor: str  # local | slurm
    folder: str  # the queue's or submitit's folder (logs, configs, code snapshot)
    jobs: dict[str, str] = field(default_factory=dict)  # run_id -> job id (SLURM) or queue slot
    pid: int | None = None  # the local queue's supervisor process
    created: float = field(default_factory=time.time)


def sweep_folder(output_root: str | Path, sweep: str) -> Path:
    return Path(output_root) / ".sweeps" / sweep


def own_sweep_folder(output_root: str | Path, sweep: str, create: bool = False) -> Path:
    """`<root>/.sweeps/<sweep>`, each level checked to be a real folder of this user that no other user
    can write (on a shared root another user could plant either as a link, or own it and edit the queued
    configs); made first with `create`."""
    folder = sweep_folder(output_root, sweep)
    if create:
        Path(output_root).mkdir(parents=True, exist_ok=True)
    for level in (folder.parent, folder):
        if create:
            try:
                level.mkdir(exist_ok=True)
            except FileExistsError:  # a planted file or dangling link: check_own_folder names it
                pass
        check_own_folder(level, "sweep folder")
    return folder


def record_submission(output_root: str | Path, sweep: str, submission: Submission) -> None:
    """Append one submission (a single short line: appends of that size do not interleave), never through
    a link planted in its place."""
    path = own_sweep_folder(output_root, sweep, create=True) / "submissions.jsonl"
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(dumps(asdict(submission)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_submissions(output_root: str | Path, sweep: str) -> list[Submission]:
    folder = sweep_folder(output_root, sweep)
    if not os.path.lexists(folder):
        return []
    path = own_sweep_folder(output_root, sweep) / "submissions.jsonl"
    if not path.exists():
        return []
    if path.is_symlink():
        raise UnsafeRunFolder(f"{path} is a symbolic link; lcbench never reads one: remove it")
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(Submission(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a crash names no job
    return found


def sweep_submitting(output_root: str | Path, run_id: str) -> str | None:
    """The sweep whose latest submissions include `run_id` (a run queued, not started), if any of this
    user's sweep folders under the root has it."""
    sweeps = Path(output_root) / ".sweeps"
    if not sweeps.is_dir() or sweeps.is_symlink():
        return None
    for folder in sorted(sweeps.iterdir()):
        try:
            if any(run_id in sub.jobs for sub in read_submissions(output_root, folder.name)):
                return folder.name
        except (UnsafeRunFolder, OSError):
            continue  # another user's or an unreadable folder says nothing about this user's runs
    return None


def latest_jobs(submissions: list[Submission]) -> dict[str, Job]:
    """run_id -> its job in the latest submission that includes it."""
    latest: dict[str, Job] = {}
    for sub in submissions:
        for rid, job in sub.jobs.items():
            latest[rid] = Job(rid, sub, job)
    return latest


@dataclass
class LaunchOptions:
    executor: str = "auto"
    only_failed: bool = False
    max_parallel: int | None = None  # local
    gpus: str | None = None  # local: "0,1"
    threads: int | None = None  # local: CPU threads shared by parallel runs
    cpu: bool = False  # local: run on the CPU even where GPUs are visible
    profile: str = "local"  # slurm: slurm/<profile>.yaml
    wait: bool = False  # local: run the queue in this process until it ends


@dataclass
class JobState:
    """What an executor says of a job it holds: pending, running or unknown (it cannot tell)."""

    state: str
    detail: str = ""  # the scheduler's words ("SLURM PENDING (Priority)", "local queue (running)")


@dataclass
class Job:
    """One run's job in one submission."""

    run_id: str
    submission: Submission
    job_id: str


class Executor(ABC):
    """Submits runs, reports the jobs it still holds, cancels them. Constructing one for a launch checks
    its options (a bad SLURM profile, a GPU that is not there) before anything is written."""

    name = ""

    def __init__(self, options: LaunchOptions | None = None) -> None:
        self.options = options or LaunchOptions()

    @abstractmethod
    def submit(self, plan: Plan, todo: list[PlannedRun], held: dict[str, Job], folder: Path) -> Submission:
        """Submit `todo` (jobs still held for other runs of the sweep in `held`), using `folder` for
        configs and logs, and record the submission; nothing is left behind when it is refused."""

    def follow(self, submission: Submission) -> None:
        """Called once the launch lock is released (the local queue with --wait serves its runs here)."""
        return None  # nothing to follow: the jobs run elsewhere

    @abstractmethod
    def states(self, jobs: list[Job]) -> dict[str, JobState]:
        """run_id -> state, for the jobs this executor still holds (a job it no longer holds is absent)."""

    @abstractmethod
    def cancel(self, jobs: list[Job]) -> list[str]:
        """Withdraw these jobs (queued ones never start; running ones are stopped and record themselves
        as interrupted); returns the run ids cancelled."""

    def log_path(self, job: Job) -> str:
        """Where the job's output goes."""
        return ""

    def describe(self, submission: Submission) -> list[str]:
        """Lines for the user after a launch."""
        return []


def for_execution(cfg: RunConfig, **changes) -> RunConfig:
    """Absolute paths (jobs may start elsewhere); execution fields only, so run ids do not change."""
    return dataclasses.replace(
        cfg,
        output_root=str(Path(cfg.output_root).expanduser().resolve()),
        data_root=str(Path(cfg.data_root).expanduser().resolve()),
        **changes,
    )
