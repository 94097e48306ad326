"""`lcbench launch`: submit a sweep's unfinished runs to the local queue or to SLURM, then return.

Completed runs are never resubmitted. A plain launch refuses while some of the sweep's runs are still
queued or running (it would start them twice); `only_failed` then submits just the failed and missing ones.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.durations import format_duration
from ..core.errors import ConfigError
from ..core.store import open_no_follow
from .executors import executor_for_launch
from .status import RunStatus, sweep_status
from .submissions import LaunchOptions, Submission, own_sweep_folder, sweep_folder
from .sweep import Plan, PlannedRun

__all__ = ["LaunchOptions", "launch", "wait_for"]
log = logging.getLogger("lcbench")


def runs_to_submit(statuses: list[RunStatus], only_failed: bool) -> list[PlannedRun]:
    unknown = [s for s in statuses if s.status == "unknown"]
    if unknown and not only_failed:
        raise ConfigError(
            f"the state of {len(unknown)} run(s) of this sweep is unknown ({unknown[0].detail}); they may "
            "still be queued: try again once the scheduler answers, or use --only-failed to submit only the "
            "failed and missing runs"
        )
    active = [s for s in statuses if s.status in ("pending", "running")]
    if active and not only_failed:
        raise ConfigError(
            f"{len(active)} run(s) of this sweep are still queued or running (see `lcbench status`); "
            "use --only-failed to submit only the failed and missing runs"
        )
    return [s.run for s in statuses if s.status in ("failed", "missing", "stopped")]


@contextmanager
def launch_lock(plan: Plan) -> Iterator[None]:
    """Held from reading the sweep's status to recording its submission: two launches of one sweep at once
    would both see its runs as missing and start them twice. A second launch waits, then sees the first's
    runs queued."""
    Path(plan.output_root).mkdir(parents=True, exist_ok=True)
    folder = own_sweep_folder(plan.output_root, plan.name, create=True)
    fd = open_no_follow(folder / "launch.lock", os.O_WRONLY | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another `lcbench launch` of sweep %s is submitting: waiting for it", plan.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def launch(plan: Plan, options: LaunchOptions) -> Submission | None:
    """Submit what is not completed; returns the submission (None when nothing is left to do)."""
    executor = executor_for_launch(options)  # bad options fail before anything is written
    with launch_lock(plan):
        statuses = sweep_status(plan)
        todo = runs_to_submit(statuses, options.only_failed)
        if not todo:
            return None
        held = {s.run.run_id: s.job for s in statuses if s.status in ("pending", "running") and s.job}
        folder = _new_submission_folder(plan, executor.name)
        submission = executor.submit(plan, todo, held, folder)
    executor.follow(submission)  # the lock is released: following a queue may take hours
    return submission


def _new_submission_folder(plan: Plan, executor: str) -> Path:
    folder = sweep_folder(plan.output_root, plan.name) / f"{time.strftime('%Y%m%d-%H%M%S')}-{executor}"
    suffix = 1
    while folder.exists():
        folder = folder.with_name(f"{folder.name.split('+')[0]}+{suffix}")
        suffix += 1
    folder.mkdir(parents=True)
    return folder


def progress_line(statuses: list[RunStatus], ended_while_waiting: int, waited_s: float) -> str:
    """ "12/136 done, 2 running, 0 failed, ETA 4m10s": the ETA from the rate of runs ended while waiting."""
    count = {k: sum(s.status == k for s in statuses) for k in ("completed", "failed", "running", "pending")}
    ended = sum(s.status in ("completed", "failed", "stopped") for s in statuses)
    left = count["running"] + count["pending"]
    line = f"{ended}/{len(statuses)} done, {count['running']} running, {count['failed']} failed"
    unknown = [s for s in statuses if s.status == "unknown"]
    if unknown:
        line += f", {len(unknown)} {unknown[0].detail}"
        left += len(unknown)
    if left and ended_while_waiting:
        line += f", ETA {format_duration(waited_s / ended_while_waiting * left)}"
    elif left:
        line += ", ETA unknown until a run ends"
    return line


def wait_for(
    plan: Plan,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    on_change: Callable[[str], None] | None = None,
) -> list[RunStatus]:
    """Block until no run of the sweep is pending or running; returns the final statuses. `on_change`
    receives a progress line ("12/136 done, 2 running, 0 failed, ETA 4m10s") whenever the counts change."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    started, first_done, last = time.monotonic(), None, None
    while True:
        statuses = sweep_status(plan)
        done = sum(s.status in ("completed", "failed", "stopped") for s in statuses)
        first_done = done if first_done is None else first_done
        line = progress_line(statuses, done - first_done, time.monotonic() - started)
        if on_change is not None and line.split(", ETA")[0] != last:
            on_change(line)
            last = line.split(", ETA")[0]
        if not any(s.status in ("pending", "running", "unknown") for s in statuses):
            return statuses
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"sweep {plan.name} still has runs pending or running after {timeout_s} s")
        time.sleep(poll_s)
