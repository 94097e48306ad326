"""A sweep's runs as pending / running / completed / failed / missing, from run records and the scheduler.

Order of evidence: a job the scheduler still holds (queued or running) wins over an older record, since a
resubmitted failed run keeps its old record until its new job starts; then the run's lock (a live
process); then result.json; a run with none of these is missing. When the scheduler cannot be asked (SLURM
not answering, a local queue's state unreadable while its supervisor lives), a run without a completed
record is `unknown`, never `missing`: it may still be queued, and resubmitting it would run it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.store import UNTRUSTED, RunDir, live_status
from .executors import executor_named
from .submissions import Executor, Job, JobState, latest_jobs, read_submissions
from .sweep import Plan, PlannedRun

STATUSES = ("pending", "running", "completed", "failed", "stopped", "missing", "unknown")


@dataclass
class RunStatus:
    run: PlannedRun
    status: str
    detail: str = ""  # the error of a failed run, the scheduler's reason for a pending one
    job: Job | None = None  # its job in the latest submission that includes it
    log: str = ""  # where the job's output goes
    record: dict | None = None  # the run's result.json, when it has one


def sweep_status(plan: Plan) -> list[RunStatus]:
    jobs = latest_jobs(read_submissions(plan.output_root, plan.name))
    states = job_states(list(jobs.values()))
    statuses = []
    for run in plan.runs:
        job = jobs.get(run.run_id)
        executor = executor_named(job.submission.executor) if job else None
        log = executor.log_path(job) if executor else ""
        rundir = RunDir(plan.output_root, run.run_id)
        statuses.append(_status(run, rundir, states.get(run.run_id), job, log))
    return statuses


def job_states(jobs: list[Job]) -> dict[str, JobState]:
    """run_id -> state, for the jobs their executors still hold (each executor asked once)."""
    states: dict[str, JobState] = {}
    for executor, held in _by_executor(jobs):
        states.update(executor.states(held))
    return states


def _by_executor(jobs: list[Job]) -> list[tuple[Executor, list[Job]]]:
    """Jobs grouped by the executor that holds them (one of an executor unknown here holds nothing)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.submission.executor, []).append(job)
    found = [(executor_named(name), group) for name, group in sorted(groups.items())]
    return [(executor, group) for executor, group in found if executor is not None]


def _status(run: PlannedRun, rundir: RunDir, held: JobState | None, job: Job | None, log: str) -> RunStatus:
    scheduled, detail = (held.state, held.detail) if held else ("", "")
    if scheduled == "running" or (rundir.path.exists() and live_status(rundir.path) == "running"):
        return RunStatus(run, "running", detail or "training", job, log)
    if scheduled == "pending":
        return RunStatus(run, "pending", detail, job, log)
    untrusted = rundir.trust_problem()
    if untrusted:  # never read: failed, and `launch` refuses the folder in the same words
        return RunStatus(run, "failed", f"{UNTRUSTED}: {untrusted}", job, log)
    record = rundir.result()
    problem = rundir.record_problem(record) if record else ""
    if scheduled == "unknown" and not (record and record.get("status") == "completed" and not problem):
        return RunStatus(run, "unknown", detail, job, log, record)  # its job may still be queued
    if problem:  # a completed run that cannot be used: failed, so `launch --only-failed` redoes it
        kind = "ModelFileError" if "model file" in problem else "RecordError"
        return RunStatus(run, "failed", f"{kind}: {problem}", job, log, record)
    if record:
        status = record.get("status", "failed")
        error = record.get("error") or {}
        text = (
            f"{error.get('type', '')}: {error.get('message', '')}" if error else str(record.get("reason", ""))
        )
        return RunStatus(run, status, text, job, log, record)
    if rundir.path.exists() and rundir.config_path.exists():
        return RunStatus(run, "missing", "interrupted before finishing (no result record)", job, log)
    if job:
        return RunStatus(run, "missing", "the job ended without a record; see its log", job, log)
    return RunStatus(run, "missing", "never submitted", job, log)


def summarize(statuses: list[RunStatus]) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for s in statuses:
        counts[s.status] = counts.get(s.status, 0) + 1
    return {k: v for k, v in counts.items() if v}


def counts_text(counts: dict[str, int]) -> str:
    """`22 completed, 3 failed, 5 missing` (what `summarize` counted, for a person)."""
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no runs"


def cancel_sweep(plan: Plan) -> list[str]:
    """Withdraw every job of the sweep its executor still holds; returns the run ids cancelled."""
    wanted = {run.run_id for run in plan.runs}
    latest = [
        job
        for rid, job in latest_jobs(read_submissions(plan.output_root, plan.name)).items()
        if rid in wanted
    ]
    cancelled = []
    for executor, jobs in _by_executor(latest):  # each executor cancels only the jobs it still holds
        cancelled += executor.cancel(jobs)
    return cancelled
