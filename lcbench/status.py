"""A sweep's runs as pending / running / completed / failed / missing, from run records and the scheduler.

Order of evidence: a job the scheduler still holds (queued or running) wins over an older record, since a
resubmitted failed run keeps its old record until its new job starts; then the run's lock (a live
process); then result.json; a run with none of these is missing. When the scheduler cannot be asked (SLURM
not answering, a local queue's state unreadable while its supervisor lives), a run without a completed
record is `unknown`, never `missing`: it may still be queued, and resubmitting it would run it twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .local_queue import QUEUE_FILE, read_queue, supervisor_alive
from .slurm import SchedulerNotAnswering, queue_states
from .store import RunDir, live_status
from .submissions import latest_jobs, read_submissions
from .sweep import Plan, PlannedRun

STATUSES = ("pending", "running", "completed", "failed", "stopped", "missing", "unknown")


@dataclass
class RunStatus:
    run: PlannedRun
    status: str
    detail: str = ""  # the error of a failed run, the scheduler's reason for a pending one
    job: str = ""  # SLURM job id or local queue slot
    log: str = ""  # where the job's output goes
    record: dict | None = None  # the run's result.json, when it has one


def sweep_status(plan: Plan) -> list[RunStatus]:
    root = plan.output_root
    jobs = latest_jobs(read_submissions(root, plan.name))
    slurm_ids = [job for sub, job in jobs.values() if sub.executor == "slurm"]
    slurm_states, slurm_unknown = {}, ""
    if slurm_ids:
        try:
            slurm_states = queue_states(slurm_ids)
        except SchedulerNotAnswering as e:
            slurm_unknown = f"unknown: scheduler not answering ({e})"
    queues: dict[str, tuple[dict | None, bool]] = {}
    statuses = []
    for run in plan.runs:
        sub, job = jobs.get(run.run_id, (None, ""))
        scheduled = detail = log = unknown = ""
        if sub is not None and sub.executor == "slurm":
            log = str(Path(sub.folder) / f"{job}_0_log.out")
            if job in slurm_states:
                state, reason = slurm_states[job]
                scheduled = "running" if state in ("RUNNING", "COMPLETING") else "pending"
                detail = f"SLURM {state}" + (f" ({reason})" if reason and reason != "None" else "")
            unknown = slurm_unknown
        elif sub is not None:
            log = str(Path(sub.folder) / "logs" / f"{run.run_id}.log")
            if sub.folder not in queues:  # read once per queue: its state and whether its supervisor lives
                state = read_queue(sub.folder)
                pid = state.get("supervisor_pid") if state else sub.pid
                queues[sub.folder] = (state, supervisor_alive(pid))
            queue, alive = queues[sub.folder]
            entry = next((r for r in (queue or {}).get("runs", []) if r["run_id"] == run.run_id), None)
            if entry and entry["state"] != "done" and alive:
                scheduled = entry["state"]
                detail = f"local queue ({entry['state']})"
            if queue is None and alive:
                unknown = (
                    f"unknown: queue state unreadable ({Path(sub.folder) / QUEUE_FILE}) while its supervisor "
                    f"(pid {sub.pid}) runs"
                )
        statuses.append(_status(run, RunDir(root, run.run_id), scheduled, detail, job, log, unknown))
    return statuses


def _status(
    run: PlannedRun, rundir: RunDir, scheduled: str, detail: str, job: str, log: str, unknown: str = ""
) -> RunStatus:
    if scheduled == "running" or (rundir.path.exists() and live_status(rundir.path) == "running"):
        return RunStatus(run, "running", detail or "training", job, log)
    if scheduled == "pending":
        return RunStatus(run, "pending", detail, job, log)
    record = rundir.result()
    problem = rundir.model_file_problem(record) if record else ""
    if unknown and not (record and record.get("status") == "completed" and not problem):
        return RunStatus(run, "unknown", unknown, job, log, record)  # its job may still be queued
    if problem:  # a completed run whose model cannot be used: failed, so `launch --only-failed` redoes it
        return RunStatus(run, "failed", f"ModelFileError: {problem}", job, log, record)
    if record:
        status = record.get("status", "failed")
        error = record.get("error") or {}
        text = f"{error.get('type', '')}: {error.get('message', '')}" if error else ""
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
