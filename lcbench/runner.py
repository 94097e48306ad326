"""`lcbench launch`: submit a sweep's unfinished runs to the local queue or to SLURM, then return.

Completed runs are never resubmitted. A plain launch refuses while some of the sweep's runs are still
queued or running (it would start them twice); `only_failed` then submits just the failed and missing ones.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, to_yaml
from .durations import format_duration
from .errors import ConfigError
from .status import RunStatus, sweep_status
from .submissions import Submission, record_submission, sweep_folder
from .sweep import Plan, PlannedRun

EXECUTORS = ("local", "slurm", "auto")


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
        return "slurm" if shutil.which("sbatch") else "local"
    if name == "slurm":
        from .slurm import check_sbatch

        check_sbatch()
    return name


def runs_to_submit(statuses: list[RunStatus], only_failed: bool) -> list[PlannedRun]:
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


def launch(plan: Plan, options: LaunchOptions) -> Submission | None:
    """Submit what is not completed; returns the submission (None when nothing is left to do)."""
    executor = resolve_executor(options.executor)
    profile = None
    if executor == "slurm":
        from .slurm import load_profile

        profile = load_profile(options.profile)  # a bad profile fails before anything is written
    else:
        from .local_queue import plan_slots

        slots = plan_slots(options.max_parallel, options.gpus, options.threads, options.cpu)
    statuses = sweep_status(plan)
    todo = runs_to_submit(statuses, options.only_failed)
    if not todo:
        return None
    folder = sweep_folder(plan.output_root, plan.name) / f"{time.strftime('%Y%m%d-%H%M%S')}-{executor}"
    suffix = 1
    while folder.exists():
        folder = folder.with_name(f"{folder.name.split('+')[0]}+{suffix}")
        suffix += 1
    folder.mkdir(parents=True)
    if executor == "slurm":
        try:
            submission = _submit_slurm(plan, todo, statuses, profile, folder)
        except ConfigError:  # refused: no half-made submission folder is left behind
            shutil.rmtree(folder, ignore_errors=True)
            raise
    else:
        submission = _submit_local(todo, slots, folder, options.wait, plan)
    return submission


def _submit_local(todo: list[PlannedRun], slots, folder: Path, wait: bool, plan: Plan) -> Submission:
    from .local_queue import serve, start_detached, write_queue

    (folder / "configs").mkdir()
    entries = []
    for run in todo:
        path = folder / "configs" / f"{run.run_id}.yaml"
        path.write_text(to_yaml(_for_execution(run.cfg, threads=slots.threads_per_run)))
        entries.append({"run_id": run.run_id, "config": str(path), "depends_on": run.depends_on})
    write_queue(folder, entries, slots)
    submission = Submission("local", str(folder), {r.run_id: f"local-{i}" for i, r in enumerate(todo)})
    if wait:
        submission.pid = None
        record_submission(plan.output_root, plan.name, submission)
        serve(folder)
        return submission
    submission.pid = start_detached(folder)
    record_submission(plan.output_root, plan.name, submission)
    _wait_for_supervisor(folder)
    return submission


def _wait_for_supervisor(folder: Path, timeout_s: float = 30.0) -> None:
    """Return once the detached supervisor has taken the queue (so `status` sees it at once)."""
    from .local_queue import read_queue

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_queue(folder)
        if state and state.get("supervisor_pid"):
            return
        time.sleep(0.05)
    raise ConfigError(f"the local queue did not start; see {folder / 'supervisor.log'}")


def _submit_slurm(plan: Plan, todo: list[PlannedRun], statuses: list[RunStatus], profile, folder: Path):
    from .slurm import SubmissionRefused, cancel_arrays, snapshot_code, submit_array

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
        if not any(s.status in ("pending", "running") for s in statuses):
            return statuses
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"sweep {plan.name} still has runs pending or running after {timeout_s} s")
        time.sleep(poll_s)
