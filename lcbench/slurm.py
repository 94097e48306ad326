"""SLURM through submitit: cluster profiles, a code snapshot, one job array per stage, preemption requeue.

A job is a `RunJob` (a submitit `Checkpointable`). On the scheduler's preemption or time-limit signal
submitit calls its `checkpoint`, requeues the job and exits; the run writes no failed record for that exit,
and the requeued job resumes from the run's last checkpoint (the latest epoch, never a "best" one) under
the same W&B id. Jobs import lcbench from a copy of the code taken at submission, so editing the checkout
never changes queued jobs.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from .config import load_yaml, to_dict
from .errors import ConfigError
from .fields import build_dataclass, option
from .job import run_job
from .pipeline import mark_preempted
from .provenance import PACKAGE_DIR, SNAPSHOT_INFO, git_info
from .resolve import make_config
from .store import atomic_write_json

PROFILE_DIR = PACKAGE_DIR.parent / "slurm"


@dataclass
class SlurmProfile:
    """One cluster's job resources (`slurm/<name>.yaml`)."""

    partition: str = ""
    gpus_per_node: int = option(0, min=0)
    cpus_per_task: int = option(2, min=1, help="also the run's torch threads")
    mem_gb: float = option(8.0, min_exclusive=0)
    timeout_min: int = option(60, min=1)
    account: str = ""
    qos: str = ""
    constraint: str = ""
    array_parallelism: int = option(64, min=1, help="array tasks running at once")
    setup: list[str] = option(default_factory=list, help="shell lines run before each job (module load ...)")
    additional: dict = option(default_factory=dict, help="further sbatch options, e.g. {exclude: node3}")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) if PROFILE_DIR.is_dir() else []


def load_profile(name: str) -> SlurmProfile:
    """A profile by name (`slurm/<name>.yaml`) or by path."""
    path = Path(name)
    if not path.suffix:
        path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"SLURM profile {name!r} does not exist ({path}); available: "
            f"{', '.join(available_profiles()) or 'none'} (or give a YAML file's path)"
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
    """Copy the lcbench and baselines packages into `folder/code` (the jobs' PYTHONPATH)."""
    code = folder / "code"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("lcbench", "baselines"):
        shutil.copytree(PACKAGE_DIR.parent / package, code / package, ignore=ignore)
    atomic_write_json(code / SNAPSHOT_INFO, git_info())
    return code


class RunJob(submitit.helpers.Checkpointable):
    """One run as a SLURM job; requeued (and resumed) on preemption or time limit."""

    def __call__(self, config: dict) -> dict:
        result = run_job(make_config(config))
        return {"run_id": result["run_id"], "status": result["status"]}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        mark_preempted()  # the trainer's per-epoch checkpoint is what the requeued job resumes from
        return super().checkpoint(*args, **kwargs)


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
    """Submit one job array (one task per config); `dependency` is an sbatch dependency expression."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": profile.timeout_min,
        "cpus_per_task": profile.cpus_per_task,
        "mem_gb": profile.mem_gb,
        "slurm_array_parallelism": profile.array_parallelism,
        "slurm_setup": [f"export PYTHONPATH={code}${{PYTHONPATH:+:$PYTHONPATH}}", *profile.setup],
        # start in the snapshot: `python -m` puts the working directory first on sys.path
        "slurm_additional_parameters": {"chdir": str(code), **profile.additional},
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
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
