"""`lcbench launch`: submit a sweep's unfinished runs to the local queue or to SLURM, then return.

Completed runs are never resubmitted. A plain launch refuses while some of the sweep's runs are still
queued or running (it would start them twice); `only_failed` then submits just the failed and missing ones.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, to_yaml
from .durations import format_duration
from .errors import ConfigError
from .local_queue import plan_slots, read_queue, serve, start_detached, write_queue
from .slurm import (
    SubmissionRefused,
    cancel_arrays,
    check_sbatch,
    controller_problem,
    load_profile,
    snapshot_code,
    submit_array,
)
from .status import RunStatus, sweep_status
from .store import atomic_write_text, open_no_follow
from .submissions import Submission, record_submission, sweep_folder
from .sweep import Plan, PlannedRun

EXECUTORS = ("local", "slurm", "auto")
log = logging.getLogger("lcbench")


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


def resolve_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    if name == "auto":
        if not shutil.which("sbatch"):
            return "local"

        problem = controller_problem()
        if problem:
            log.warning("%s: running on the local queue (--executor slurm to insist)", problem)
            return "local"
        return "slurm"
    if name == "slurm":
        check_sbatch()
    return name


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


def _for_execution(cfg: RunConfig, **changes) -> RunConfig:
    """Absolute paths (jobs may start elsewhere); execution fields only, so run ids do not change."""
    return dataclasses.replace(
        cfg,
        output_root=str(Path(cfg.output_root).expanduser().resolve()),
        data_root=str(Path(cfg.data_root).expanduser().resolve()),
        **changes,
    )


@contextmanager
def launch_lock(plan: Plan) -> Iterator[None]:
    """Held from reading the sweep's status to recording its submission: two launches of one sweep at once
    would both see its runs as missing and start them twice. A second launch waits, then sees the first's
    runs queued."""
    folder = sweep_folder(plan.output_root, plan.name)
    folder.mkdir(parents=True, exist_ok=True)
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
    # a bad profile fails before the cluster is asked and before anything is written
    profile = load_profile(options.profile) if options.executor == "slurm" else None
    executor = resolve_executor(options.executor)
    if executor == "slurm":
        profile = profile or load_profile(options.profile)
    else:
        slots = plan_slots(options.max_parallel, options.gpus, options.threads, options.cpu)
    with launch_lock(plan):
        statuses = sweep_status(plan)
        todo = runs_to_submit(statuses, options.only_failed)
        if not todo:
            return None
        folder = _new_submission_folder(plan, executor)
        if executor == "slurm":
            try:
                return _submit_slurm(plan, todo, statuses, profile, folder)
            except ConfigError:  # refused: no half-made submission folder is left behind
                shutil.rmtree(folder, ignore_errors=True)
                raise
        submission = _submit_local(todo, slots, folder, options.wait, plan)
    if options.wait:  # this process is the queue's supervisor (the lock is released: it may take hours)
        serve(folder)
    return submission


def _new_submission_folder(plan: Plan, executor: str) -> Path:
    folder = sweep_folder(plan.output_root, plan.name) / f"{time.strftime('%Y%m%d-%H%M%S')}-{executor}"
    suffix = 1
    while folder.exists():
        folder = folder.with_name(f"{folder.name.split('+')[0]}+{suffix}")
        suffix += 1
    folder.mkdir(parents=True)
    return folder


def _submit_local(todo: list[PlannedRun], slots, folder: Path, wait: bool, plan: Plan) -> Submission:
    """Write the queue and start its supervisor (detached; or, with `wait`, this process: the caller then
    serves it). Returns once the submission is recorded and the queue is visible to `status`."""

    try:
        (folder / "configs").mkdir()
        entries = []
        for run in todo:
            path = folder / "configs" / f"{run.run_id}.yaml"
            cfg = _for_execution(run.cfg, threads=slots.threads_per_run)
            atomic_write_text(path, to_yaml(cfg))
            entries.append(
                {
                    "run_id": run.run_id,
                    "config": str(path),
                    "depends_on": run.depends_on,
                    "run_dir": str(Path(cfg.output_root) / run.run_id),
                }
            )
        write_queue(folder, entries, slots, supervisor_pid=os.getpid() if wait else None)
    except BaseException:  # a full or read-only root: no half-made queue is left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    submission = Submission("local", str(folder), {r.run_id: f"local-{i}" for i, r in enumerate(todo)})
    if wait:
        submission.pid = os.getpid()
        record_submission(plan.output_root, plan.name, submission)
        return submission
    submission.pid = start_detached(folder)
    record_submission(plan.output_root, plan.name, submission)
    _wait_for_supervisor(folder)
    return submission


def _wait_for_supervisor(folder: Path, timeout_s: float = 30.0) -> None:
    """Return once the detached supervisor has taken the queue (so `status` sees it at once)."""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_queue(folder)
        if state and state.get("supervisor_pid"):
            return
        time.sleep(0.05)
    raise ConfigError(f"the local queue did not start; see {folder / 'supervisor.log'}")


def _submit_slurm(plan: Plan, todo: list[PlannedRun], statuses: list[RunStatus], profile, folder: Path):

    code = snapshot_code(folder)
    jobs: dict[str, str] = {}
    pretrains = [r for r in todo if r.stage == "pretrain"]
    compress = [r for r in todo if r.stage == "compress"]
    # compress tasks wait for the pretrain jobs still to finish (this submission's or an earlier one's)
    waiting_on = {
        s.job.split("_")[0]
        for s in statuses
        if s.run.stage == "pretrain" and s.status in ("pending", "running") and s.job[:1].isdigit()
    }

    accepted: list[str] = []

    def submit_stage(runs: list[PlannedRun], stage: str, dependency: str = "") -> str:
        configs = [_for_execution(r.cfg, threads=profile.cpus_per_task) for r in runs]
        try:
            array = submit_array(configs, profile, folder, code, f"{plan.name}-{stage}", dependency)
        except SubmissionRefused as e:  # a later array refused: cancel the ones accepted before it
            cancel_arrays(accepted)
            cancelled = f"; cancelled the accepted array(s) {', '.join(accepted)}" if accepted else ""
            raise SubmissionRefused(f"{e}{cancelled}; nothing was submitted") from e
        accepted.append(array.array_id)
        jobs.update(zip([r.run_id for r in runs], array.job_ids))
        return array.array_id

    if pretrains:
        waiting_on.add(submit_stage(pretrains, "pretrain"))
    if compress:
        # afterany, not afterok: one failed pretrain must not cancel the compress runs of the others;
        # a compress task whose own pretrain failed records that as its error without training
        submit_stage(compress, "compress", "afterany:" + ":".join(sorted(waiting_on)) if waiting_on else "")
    submission = Submission("slurm", str(folder), jobs)
    record_submission(plan.output_root, plan.name, submission)
    return submission


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
