"""The local executor: a queue of at most N runs at once in warm worker processes, GPUs handed out in turn.

submitit's LocalExecutor starts every job at once; this queue keeps a sweep within the machine instead.
Its state lives in `<folder>/queue.json` (rewritten atomically by the supervisor), so `lcbench status`
can read it while the queue runs: every run is `pending`, `running` or `done` (with its exit code). A
compress run waits until the queue's own pretrain run for it has ended; if that failed, the compress run
fails at once with the reason (it never retrains the original model itself).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.config import to_yaml
from ..core.errors import ConfigError
from ..core.store import UnsafeRunFolder, atomic_write_json, atomic_write_text, check_own_folder, read_json
from .queue_server import QUEUE_FILE, serve
from .submissions import Executor, Job, JobState, LaunchOptions, Submission, for_execution, record_submission
from .sweep import Plan, PlannedRun


@dataclass
class Slots:
    """How the machine is shared: parallel runs, the GPUs they take turns on, and the CPU threads of a run
    whose config leaves `threads=0` (a run's own `threads` is its arithmetic: every executor keeps it)."""

    max_parallel: int
    gpus: list[int]
    threads_per_run: int
    cpu_only: bool = False


def visible_gpus() -> int:

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_slots(
    max_parallel: int | None, gpus: str | None, threads: int | None, cpu_only: bool = False
) -> Slots:
    """Check the requested GPUs exist and split the CPU threads between parallel runs."""
    if cpu_only and gpus:
        raise ConfigError("--cpu and --gpus exclude each other")
    available = 0 if cpu_only else visible_gpus()
    if gpus:
        try:
            ids = [int(g) for g in str(gpus).split(",") if g.strip()]
        except ValueError:
            raise ConfigError(f"--gpus {gpus!r}: give GPU ids separated by commas, e.g. --gpus 0,1") from None
        missing = [g for g in ids if g < 0 or g >= available]
        if missing:
            have = f"ids 0-{available - 1}" if available else "none; leave out --gpus to run on the CPU"
            raise ConfigError(f"--gpus: GPU id(s) {missing} do not exist on this machine (GPUs: {have})")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"--gpus {gpus!r} names a GPU twice")
    else:
        ids = list(range(available))
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError("--max-parallel must be at least 1")
    # without GPUs one run at a time by default: latency is measured on cores no other run uses
    parallel = max_parallel or max(1, len(ids))
    if ids and parallel > len(ids):
        raise ConfigError(f"--max-parallel {parallel} exceeds the {len(ids)} GPU(s) given: one run per GPU")
    cores = threads or os.cpu_count() or 1
    return Slots(parallel, ids, max(1, cores // parallel), cpu_only)


def check_fits(runs: list[PlannedRun], slots: Slots) -> None:
    """Every DDP run fits this machine's slots (one process per slot) and one node."""
    for run in runs:
        cfg = run.cfg
        if cfg.nodes > 1:
            raise ConfigError(
                f"run {run.run_id}: nodes={cfg.nodes}: the local queue runs on this machine only; use "
                "--executor slurm for a multi-node run, or nodes=1"
            )
        if cfg.nproc > slots.max_parallel:
            raise ConfigError(
                f"run {run.run_id}: nproc={cfg.nproc} needs {cfg.nproc} slots (one process each) but the "
                f"queue has {slots.max_parallel}; raise --max-parallel"
                + (" (at most one per GPU)" if slots.gpus else "")
            )


def write_queue(folder: Path, entries: list[dict], slots: Slots, supervisor_pid: int | None = None) -> Path:
    """The queue's initial state; entries hold run_id, config (a YAML path), depends_on and run_dir.
    `supervisor_pid`: the process that will serve it, when known now (`launch --wait`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    state = {
        "slots": {
            "max_parallel": slots.max_parallel,
            "gpus": slots.gpus,
            "threads": slots.threads_per_run,
            "cpu_only": slots.cpu_only,
        },
        "supervisor_pid": supervisor_pid,
        "runs": [{**e, "state": "pending", "returncode": None, "gpu": None} for e in entries],
    }
    path = folder / QUEUE_FILE
    atomic_write_json(path, state)
    return path


def read_queue(folder: str | Path) -> dict | None:
    return read_json(Path(folder) / QUEUE_FILE)


def start_detached(folder: Path) -> int:
    """Start the supervisor in its own session (it outlives the `launch` command); returns its pid."""
    log = open(folder / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    # `-c`, not `-m lcbench.execution.queue_server`: the fork server would re-run a `-m` main module in every
    # run's process (one runpy RuntimeWarning per run in this log)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from lcbench.execution.queue_server import main; sys.exit(main(sys.argv[1]))",
            str(folder),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return proc.pid


def supervisor_alive(pid: int | None) -> bool:
    """Whether `pid` is a live lcbench process (a queue's supervisor)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"lcbench" in cmdline  # the detached supervisor, or `lcbench launch --wait` itself


def queue_supervisor(folder: str | Path, pid: int | None) -> bool:
    """Whether `pid` may be taken for the supervisor of the queue in `folder`: the folder is this user's
    own (so is the queue.json that names the pid), and the pid is a live lcbench process of this user. A
    pid read from a file is signalled only after this: a planted queue.json must not make `cancel` kill a
    process of its choosing."""
    try:
        check_own_folder(Path(folder), "queue folder")
    except UnsafeRunFolder:
        return False
    if not supervisor_alive(pid):
        return False
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return True  # no /proc (not Linux): supervisor_alive's answer


class LocalExecutor(Executor):
    """Runs a sweep on this machine through a queue folder served by a detached supervisor."""

    name = "local"

    def __init__(self, options: LaunchOptions | None = None) -> None:
        super().__init__(options)
        self.slots: Slots | None = None
        if options is not None:  # a launch: its options are checked now, before anything is written
            o = self.options
            self.slots = plan_slots(o.max_parallel, o.gpus, o.threads, o.cpu)

    def submit(self, plan: Plan, todo: list[PlannedRun], held: dict[str, Job], folder: Path) -> Submission:
        """Write the queue and start its supervisor (detached; with --wait, `follow` serves it in this
        process). Returns once the submission is recorded and the queue is visible to `status`."""
        check_fits(todo, self.slots)
        wait = self.options.wait
        try:
            (folder / "configs").mkdir()
            entries = []
            for run in todo:
                path = folder / "configs" / f"{run.run_id}.yaml"
                cfg = for_execution(run.cfg, threads=run.cfg.threads or self.slots.threads_per_run)
                atomic_write_text(path, to_yaml(cfg))
                run_dir = str(Path(cfg.output_root) / run.run_id)
                entries.append(
                    {
                        "run_id": run.run_id,
                        "config": str(path),
                        "depends_on": run.depends_on,
                        "run_dir": run_dir,
                        "nproc": cfg.nproc,  # a DDP run's ranks take as many slots
                    }
                )
            write_queue(folder, entries, self.slots, supervisor_pid=os.getpid() if wait else None)
        except BaseException:  # a full or read-only root: no half-made queue is left behind
            shutil.rmtree(folder, ignore_errors=True)
            raise
        submission = Submission(self.name, str(folder), {r.run_id: f"local-{i}" for i, r in enumerate(todo)})
        submission.pid = os.getpid() if wait else start_detached(folder)
        record_submission(plan.output_root, plan.name, submission)
        if not wait:
            _wait_for_supervisor(folder)
        return submission

    def follow(self, submission: Submission) -> None:
        if self.options.wait:  # this process is the queue's supervisor (it may take hours)
            serve(submission.folder)

    def states(self, jobs: list[Job]) -> dict[str, JobState]:
        """From each queue's queue.json, read once per queue, while its supervisor lives."""
        queues: dict[str, tuple[dict | None, dict[str, dict], bool]] = {}
        states = {}
        for job in jobs:
            folder = job.submission.folder
            if folder not in queues:
                queue = read_queue(folder)
                pid = queue.get("supervisor_pid") if queue else job.submission.pid
                entries = {r["run_id"]: r for r in (queue or {}).get("runs", [])}
                queues[folder] = (queue, entries, queue_supervisor(folder, pid))
            queue, entries, alive = queues[folder]
            if not alive:
                continue  # nothing holds its runs any more
            if queue is None:
                states[job.run_id] = JobState(
                    "unknown",
                    f"unknown: queue state unreadable ({Path(folder) / QUEUE_FILE}) while its "
                    f"supervisor (pid {job.submission.pid}) runs",
                )
                continue
            entry = entries.get(job.run_id)
            if entry and entry["state"] in ("pending", "running"):
                states[job.run_id] = JobState(entry["state"], f"local queue ({entry['state']})")
        return states

    def cancel(self, jobs: list[Job]) -> list[str]:
        """Stop the supervisors of these jobs' queues: a queue's runs are cancelled together (running runs
        get SIGINT and record themselves as interrupted; pending ones never start)."""
        held = self.states(jobs)
        cancelled = []
        queues = {job.submission.folder: job.submission.pid for job in jobs if job.run_id in held}
        for folder, submitted_pid in sorted(queues.items()):
            queue = read_queue(folder) or {}
            pid = queue.get("supervisor_pid") or submitted_pid
            if queue_supervisor(folder, pid):
                os.kill(pid, signal.SIGTERM)
                _wait_for_exit(pid)
            cancelled += [r["run_id"] for r in queue.get("runs", []) if r["state"] in ("pending", "running")]
        return cancelled

    def log_path(self, job: Job) -> str:
        return str(Path(job.submission.folder) / "logs" / f"{job.run_id}.log")

    def describe(self, submission: Submission) -> list[str]:
        return [f"local queue supervisor pid {submission.pid}"] if submission.pid else []


def _wait_for_supervisor(folder: Path, timeout_s: float = 30.0) -> None:
    """Return once the detached supervisor has taken the queue (so `status` sees it at once)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_queue(folder)
        if state and state.get("supervisor_pid"):
            return
        time.sleep(0.05)
    raise ConfigError(f"the local queue did not start; see {folder / 'supervisor.log'}")


def _wait_for_exit(pid: int, timeout_s: float = 60.0) -> None:
    """Until the supervisor has stopped its runs and exited (they record themselves meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while supervisor_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
