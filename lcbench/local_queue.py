"""A local queue: at most N runs at once, one process per run, GPUs handed out one run at a time.

submitit's LocalExecutor starts every job at once; this queue keeps a sweep within the machine instead.
Its state lives in `<folder>/queue.json` (rewritten atomically by the supervisor), so `lcbench status`
can read it while the queue runs: every run is `pending`, `running` or `done` (with its exit code). A
compress run waits until the queue's own pretrain run for it has ended; if that failed, the compress run
fails at once with the reason (it never retrains the original model itself).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import load_yaml, run_id
from .errors import ConfigError
from .exits import exit_code
from .job import run_job
from .resolve import make_config
from .store import atomic_write_json, live_status, read_json

QUEUE_FILE = "queue.json"


@dataclass
class Slots:
    """How the machine is shared: parallel runs, the GPUs they take turns on, CPU threads per run."""

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
    # `-c`, not `-m lcbench.local_queue`: the fork server would re-run a `-m` main module in every run's
    # process (one runpy RuntimeWarning per run in this log)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from lcbench.local_queue import main; sys.exit(main(sys.argv[1]))",
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


def serve(folder: str | Path, poll_s: float = 0.2) -> int:
    """Run the queue in `folder` to the end; returns the number of runs that did not succeed."""
    folder = Path(folder)
    path = folder / QUEUE_FILE
    state = read_json(path)
    if state is None:
        raise ConfigError(f"{path} is not a queue")
    state["supervisor_pid"] = os.getpid()
    atomic_write_json(path, state)
    slots = state["slots"]
    runs = state["runs"]
    procs: dict[str, RunProcess] = {}
    free_gpus = list(slots["gpus"])

    def stop(signum, frame):  # forward a stop to the runs, which record themselves as failed/interrupted
        for proc in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            proc.wait()
        sys.exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _loop(runs, procs, slots, free_gpus, folder, path, state, poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    atomic_write_json(path, state)
    return sum(1 for r in runs if r["returncode"] != 0)


def _loop(runs, procs, slots, free_gpus, folder: Path, path: Path, state: dict, poll_s: float) -> None:
    by_id = {r["run_id"]: r for r in runs}
    while any(r["state"] != "done" for r in runs):
        changed = False
        for rid, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            entry = by_id[rid]
            entry.update(state="done", returncode=code, ended=time.time())
            ended = sum(r["state"] == "done" for r in runs)
            verdict = "ok" if code == 0 else f"FAILED (exit {code}; log {folder / 'logs' / rid}.log)"
            seconds = entry["ended"] - entry["started"]
            _say(f"end   {rid} {verdict} after {seconds:.1f}s; {ended}/{len(runs)} done")
            if entry["gpu"] is not None:
                free_gpus.append(entry["gpu"])
            del procs[rid]
            changed = True
        for entry in runs:
            if len(procs) >= slots["max_parallel"]:
                break
            if entry["state"] != "pending":
                continue
            dep = by_id.get(entry.get("depends_on") or "")
            if dep is not None and dep["state"] != "done":
                continue
            if _run_elsewhere(entry):
                continue
            gpu = free_gpus.pop(0) if slots["gpus"] else None
            procs[entry["run_id"]] = _start_run(
                folder, entry, gpu, slots["threads"], slots.get("cpu_only", False)
            )
            entry.update(state="running", gpu=gpu, started=time.time())
            _say(f"start {entry['run_id']}" + (f" on GPU {gpu}" if gpu is not None else ""))
            changed = True
        if changed:
            atomic_write_json(path, state)
        time.sleep(poll_s)


def _run_elsewhere(entry: dict) -> bool:
    """Whether another process holds the run's lock (a run of an earlier queue whose supervisor died keeps
    training): this queue waits for it rather than start the run twice, then starts it (a completed run
    ends at once, an interrupted one resumes)."""
    run_dir = entry.get("run_dir")
    if not run_dir or live_status(Path(run_dir)) != "running":
        return False
    if not entry.get("waited"):
        entry["waited"] = True
        _say(f"wait  {entry['run_id']}: another process runs it (an earlier queue's?); starting it after")
    return True


class RunProcess:
    """One run in its own process, forked from a server that has imported lcbench, torch and timm once
    (a fresh interpreter per run would spend seconds importing them)."""

    _context = None

    def __init__(self, config: str, log: Path, gpu: int | None, threads: int, cpu_only: bool) -> None:
        if RunProcess._context is None:
            RunProcess._context = multiprocessing.get_context("forkserver")
            RunProcess._context.set_forkserver_preload(["lcbench._preload"])
        self.process = RunProcess._context.Process(
            target=_run_in_child, args=(config, str(log), gpu, threads, cpu_only)
        )
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        if self.process.pid and self.process.exitcode is None:
            os.kill(self.process.pid, signum)

    def wait(self) -> int | None:
        self.process.join()
        return self.process.exitcode


def _run_in_child(config: str, log: str, gpu: int | None, threads: int, cpu_only: bool) -> None:
    """The run's process: output to its log file, its GPU only, then the job (exit code = how it ended)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.INFO, format="lcbench: %(message)s", force=True)
    overrides = [f"threads={threads}"]
    if gpu is not None:  # before anything initialises CUDA (the fork server never does)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        overrides.append("device=cuda")
    elif cpu_only:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        overrides.append("device=cpu")
    try:
        cfg = make_config(load_yaml(config), overrides)
        print(
            f"run {run_id(cfg)}: {cfg.stage} {cfg.method} {cfg.model} {cfg.dataset} seed {cfg.seed}",
            flush=True,
        )
        result = run_job(cfg)
        print(f"run {result['run_id']}: {result['status']}", flush=True)
        code = 0
    except (Exception, KeyboardInterrupt) as e:
        code = exit_code(e)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def _start_run(folder: Path, entry: dict, gpu: int | None, threads: int, cpu_only: bool) -> RunProcess:
    return RunProcess(entry["config"], folder / "logs" / f"{entry['run_id']}.log", gpu, threads, cpu_only)


def main(folder: str) -> int:
    """The detached supervisor's entry point: exit 1 when any run did not succeed."""
    return 1 if serve(folder) else 0


def _say(text: str) -> None:
    """One timestamped line in the supervisor's log."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
