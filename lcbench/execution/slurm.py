"""SLURM through submitit: cluster profiles, a code snapshot, one job array per stage, preemption requeue.

A job is a `RunJob` (`slurm_job.py`, a submitit `Checkpointable`). On the scheduler's preemption or
time-limit signal submitit calls its `checkpoint`, requeues the job and exits; the run writes no failed
record for that exit, and the requeued job resumes from the run's last checkpoint (the latest epoch, never
a "best" one) under the same W&B id. Jobs import lcbench from a copy of the code taken at submission, so
editing the checkout never changes queued jobs.
"""

from __future__ import annotations

import dataclasses
import getpass
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import bundled, extras
from ..core.config import load_yaml, to_dict
from ..core.errors import ConfigError, LcbenchError
from ..core.fields import build_dataclass, option
from ..core.store import atomic_write_json
from ..training.provenance import PACKAGE_DIR, SNAPSHOT_INFO, git_info
from .submissions import Executor, Job, JobState, LaunchOptions, Submission, for_execution, record_submission
from .sweep import Plan, PlannedRun


@dataclass
class SlurmProfile:
    """One cluster's job resources (`slurm/<name>.yaml`)."""

    partition: str = ""
    gpus_per_node: int = option(0, min=0)
    cpus_per_task: int = option(
        2,
        min=1,
        help="CPUs per task (at least the runs' `threads`); the torch threads of a run with threads=0",
    )
    mem_gb: float = option(8.0, min_exclusive=0)
    timeout_min: int = option(60, min=1)
    account: str = ""
    qos: str = ""
    constraint: str = ""
    array_parallelism: int = option(64, min=1, help="array tasks running at once")
    setup: list[str] = option(default_factory=list, help="shell lines run before each job (module load ...)")
    additional: dict = option(default_factory=dict, help="further sbatch options, e.g. {exclude: node3}")


def load_profile(name: str) -> SlurmProfile:
    """A profile by name (a bundled `slurm/<name>.yaml`) or by path."""
    try:
        path = bundled.find(name, "profile")
    except ConfigError:
        path = None
    if path is None or not path.is_file():
        raise ConfigError(
            f"SLURM profile {name!r} does not exist{f' ({path})' if path else ''}; available: "
            f"{', '.join(bundled.names('profile')) or 'none'} (or give a YAML file's path)"
        )
    try:
        return build_dataclass(SlurmProfile, load_yaml(path))
    except ConfigError as e:
        raise ConfigError(f"SLURM profile {path}: {e}") from None


def check_sbatch() -> None:
    """`--executor slurm` needs a SLURM client and a controller that answers it."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "--executor slurm: `sbatch` is not on PATH (no SLURM client here); use --executor local, "
            "or start a test cluster with slurm/local-cluster.sh start"
        )
    if shutil.which("srun") is None:  # submitit starts every task with it, and refuses to submit without
        raise ConfigError(
            "--executor slurm: `srun` is not on PATH beside sbatch (an incomplete SLURM client); install "
            "the full client (Debian: slurm-client) or use --executor local"
        )
    problem = controller_problem()
    if problem:
        raise ConfigError(
            f"--executor slurm: {problem}; start it (a test cluster: slurm/local-cluster.sh start) or use "
            "--executor local"
        )


def controller_problem(timeout_s: float = 30.0) -> str:
    """Why no SLURM controller answers (`scontrol ping`), or '' when one does."""
    if shutil.which("scontrol") is None:
        return ""  # no way to ask before submitting: sbatch itself will say
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"no SLURM controller answered `scontrol ping` within {timeout_s:.0f} s"
    if ping.returncode == 0 and "UP" in ping.stdout:
        return ""
    said = next((line.strip() for line in ping.stdout.splitlines() if "DOWN" in line), "")
    return f"no SLURM controller answers (`scontrol ping`: {said or ping.stderr.strip() or 'no answer'})"


def snapshot_code(folder: Path) -> Path:
    """Copy the lcbench package (its baselines included) into `folder/code` (the jobs' PYTHONPATH)."""
    code = folder / "code"
    shutil.copytree(PACKAGE_DIR, code / "lcbench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    atomic_write_json(code / SNAPSHOT_INFO, git_info())
    return code


@dataclass
class ArrayJob:
    array_id: str
    job_ids: list[str] = field(default_factory=list)


class SubmissionRefused(ConfigError):
    """sbatch said no (bad partition, account, limits): its message, for a one-line error."""


def cancel_arrays(array_ids: list[str]) -> None:
    """scancel arrays already accepted by a submission that then failed (nothing half-submitted)."""
    if array_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *array_ids], capture_output=True, timeout=60)


def submit_array(
    configs: list, profile: SlurmProfile, folder: Path, code: Path, name: str, dependency: str = ""
) -> ArrayJob:
    """Submit one job array (one job per config, all with the same nproc and nodes: a DDP run is one job
    of nproc tasks on each of its nodes, one GPU per task on a GPU profile); `dependency` is an sbatch
    dependency expression."""
    extras.require("submitit", purpose="--executor slurm")
    import submitit

    from .slurm_job import RunJob

    nproc, nodes = configs[0].nproc, configs[0].nodes
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {
        "name": name,
        "tasks_per_node": nproc,
        "nodes": nodes,
        "timeout_min": profile.timeout_min,
        "cpus_per_task": profile.cpus_per_task,
        "mem_gb": profile.mem_gb,
        "slurm_array_parallelism": profile.array_parallelism,
        "slurm_setup": [f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}", *profile.setup],
        # start in the snapshot: `python -m` puts the working directory first on sys.path
        "slurm_additional_parameters": {"chdir": str(code), **profile.additional},
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = max(profile.gpus_per_node, nproc)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[f"slurm_{key}"] = getattr(profile, key)
    if dependency:
        params["slurm_dependency"] = dependency
    executor.update_parameters(**params)
    try:
        jobs = executor.map_array(RunJob(), [to_dict(c) for c in configs])
    except submitit.core.utils.FailedJobError as e:  # sbatch's own message (submitit wraps its exit)
        raise SubmissionRefused(f"sbatch refused the {name} array: {str(e).strip()}") from e
    except subprocess.CalledProcessError as e:
        raise SubmissionRefused(
            f"sbatch refused the {name} array: {(e.stderr or e.output or b'').decode().strip()}"
        ) from e
    return ArrayJob(jobs[0].job_id.split("_")[0], [j.job_id for j in jobs])


class SchedulerNotAnswering(Exception):  # noqa: N818 - a state of the cluster, shown by `status`
    """squeue could not be asked (no client here, or no controller answering)."""


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (SLURM state, reason) for the jobs squeue still knows (never blocks on a result).
    Raises SchedulerNotAnswering when squeue cannot say: a job it did not list may still be queued."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        raise SchedulerNotAnswering("squeue is not on PATH here")
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise SchedulerNotAnswering("squeue did not answer within 60 s") from None
    if out.returncode != 0:
        raise SchedulerNotAnswering(f"squeue failed: {out.stderr.strip() or f'exit {out.returncode}'}")
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    wanted = set(job_ids)
    return {j: s for j, s in states.items() if j in wanted}


class SlurmExecutor(Executor):
    """One job array per stage through submitit; compress tasks wait for the pretrain jobs they need."""

    name = "slurm"

    def __init__(self, options: LaunchOptions | None = None) -> None:
        super().__init__(options)
        self.profile = load_profile(self.options.profile) if options is not None else None

    def submit(self, plan: Plan, todo: list[PlannedRun], held: dict[str, Job], folder: Path) -> Submission:
        try:
            return self._submit(plan, todo, held, folder)
        except ConfigError:  # refused: no half-made submission folder is left behind
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _submit(self, plan: Plan, todo: list[PlannedRun], held: dict[str, Job], folder: Path) -> Submission:
        code = snapshot_code(folder)
        jobs: dict[str, str] = {}
        # compress tasks wait for the pretrain jobs still to finish (this submission's or an earlier one's)
        needed = {r.depends_on for r in todo}
        waiting_on = {
            job.job_id.split("_")[0]
            for rid, job in held.items()
            if job.submission.executor == self.name and rid in needed
        }
        accepted: list[str] = []

        def submit_stage(runs: list[PlannedRun], stage: str, dependency: str = "") -> list[str]:
            """One array per shape of job (nproc x nodes) in the stage; their array ids."""
            shapes: dict[tuple[int, int], list[PlannedRun]] = {}
            for r in runs:
                shapes.setdefault((r.cfg.nproc, r.cfg.nodes), []).append(r)
            ids = []
            for (nproc, nodes), group in sorted(shapes.items()):
                configs = [
                    for_execution(r.cfg, threads=r.cfg.threads or self.profile.cpus_per_task) for r in group
                ]
                # a run keeps its own threads (its arithmetic); the job gets at least as many CPUs
                cpus = max(self.profile.cpus_per_task, *(c.threads for c in configs))
                profile = dataclasses.replace(self.profile, cpus_per_task=cpus)
                name = f"{plan.name}-{stage}" + (f"-{nproc}x{nodes}" if nproc * nodes > 1 else "")
                try:
                    array = submit_array(configs, profile, folder, code, name, dependency)
                except SubmissionRefused as e:  # a later array refused: cancel the ones accepted before it
                    cancel_arrays(accepted)
                    cancelled = f"; cancelled the accepted array(s) {', '.join(accepted)}" if accepted else ""
                    raise SubmissionRefused(f"{e}{cancelled}; nothing was submitted") from e
                accepted.append(array.array_id)
                jobs.update(zip([r.run_id for r in group], array.job_ids))
                ids.append(array.array_id)
            return ids

        pretrains = [r for r in todo if r.stage == "pretrain"]
        compress = [r for r in todo if r.stage == "compress"]
        if pretrains:
            waiting_on.update(submit_stage(pretrains, "pretrain"))
        if compress:
            # afterany, not afterok: one failed pretrain must not cancel the compress runs of the others;
            # a compress task whose own pretrain failed records that as its error without training
            dependency = "afterany:" + ":".join(sorted(waiting_on)) if waiting_on else ""
            submit_stage(compress, "compress", dependency)
        submission = Submission(self.name, str(folder), jobs)
        record_submission(plan.output_root, plan.name, submission)
        return submission

    def states(self, jobs: list[Job]) -> dict[str, JobState]:
        """From one squeue call; when squeue cannot answer, every job is unknown (it may still be queued)."""
        try:
            found = queue_states([job.job_id for job in jobs])
        except SchedulerNotAnswering as e:
            return {
                job.run_id: JobState("unknown", f"unknown: scheduler not answering ({e})") for job in jobs
            }
        states = {}
        for job in jobs:
            if job.job_id in found:
                state, reason = found[job.job_id]
                detail = f"SLURM {state}" + (f" ({reason})" if reason and reason != "None" else "")
                states[job.run_id] = JobState(
                    "running" if state in ("RUNNING", "COMPLETING") else "pending", detail
                )
        return states

    def cancel(self, jobs: list[Job]) -> list[str]:
        """scancel the jobs squeue still holds (a running run is signalled and records itself)."""
        held = self.states(jobs)
        unknown = next((state.detail for state in held.values() if state.state == "unknown"), "")
        if unknown:
            raise LcbenchError(f"cannot cancel: {unknown}; try again once the scheduler answers")
        ids = [job.job_id for job in jobs if job.run_id in held]
        if ids:
            out = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise ConfigError(f"scancel refused: {out.stderr.strip() or f'exit {out.returncode}'}")
        return [job.run_id for job in jobs if job.run_id in held]

    def log_path(self, job: Job) -> str:
        return str(Path(job.submission.folder) / f"{job.job_id}_0_log.out")

    def describe(self, submission: Submission) -> list[str]:
        return [f"{rid}  job {job}" for rid, job in submission.jobs.items()]
