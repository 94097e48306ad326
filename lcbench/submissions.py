"""What was submitted where: one line per launch in `<output_root>/.sweeps/<sweep>/submissions.jsonl`.

The run records stay the source of truth for results; a submission only says which job (a local queue's
process or a SLURM array task) was asked to produce each run, so `status` can ask the scheduler about it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .store import dumps


@dataclass
class Submission:
    executor: str  # local | slurm
    folder: str  # the queue's or submitit's folder (logs, configs, code snapshot)
    jobs: dict[str, str] = field(default_factory=dict)  # run_id -> job id (SLURM) or queue slot
    pid: int | None = None  # the local queue's supervisor process
    created: float = field(default_factory=time.time)


def sweep_folder(output_root: str | Path, sweep: str) -> Path:
    return Path(output_root) / ".sweeps" / sweep


def record_submission(output_root: str | Path, sweep: str, submission: Submission) -> None:
    """Append one submission (a single short line: appends of that size do not interleave)."""
    path = sweep_folder(output_root, sweep) / "submissions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(dumps(asdict(submission)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_submissions(output_root: str | Path, sweep: str) -> list[Submission]:
    path = sweep_folder(output_root, sweep) / "submissions.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(Submission(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by a crash names no job
    return found


def latest_jobs(submissions: list[Submission]) -> dict[str, tuple[Submission, str]]:
    """run_id -> (the latest submission that includes it, its job id there)."""
    latest: dict[str, tuple[Submission, str]] = {}
    for sub in submissions:
        for rid, job in sub.jobs.items():
            latest[rid] = (sub, job)
    return latest
