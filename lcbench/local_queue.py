"""A local queue: at most N runs at once, one process per run, GPUs handed out one run at a time.

submitit's LocalExecutor starts every job at once; this queue keeps a sweep within the machine instead.
Its state lives in `<folder>/queue.json` (rewritten atomically by the supervisor), so `lcbench status`
can read it while the queue runs: every run is `pending`, `running` or `done` (with its exit code). A
compress run waits until the queue's own pretrain run for it has ended; if that failed, the compress run
fails at once with the reason (it never retrains the original model itself).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .store import atomic_write_json, read_json

QUEUE_FILE = "queue.json"


@dataclass
class Slots:
    """How the machine is shared: parallel runs, the GPUs they take turns on, CPU threads per run."""

    max_parallel: int
    gpus: list[int]
    threads_per_run: int


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_slots(max_parallel: int | None, gpus: str | None, threads: int | None) -> Slots:
    """Check the requested GPUs exist and split the CPU threads between parallel runs."""
    available = visible_gpus()
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
    return Slots(parallel, ids, max(1, cores // parallel))


def write_queue(folder: Path, entries: list[dict], slots: Slots) -> Path:
    """The queue's initial state; entries hold run_id, config (a YAML path) and depends_on."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    state = {
        "slots": {"max_parallel": slots.max_parallel, "gpus": slots.gpus, "threads": slots.threads_per_run},
        "supervisor_pid": None,
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "lcbench.local_queue", str(folder)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return proc.pid


def supervisor_alive(state: dict) -> bool:
    pid = state.get("supervisor_pid")
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
    procs: dict[str, subprocess.Popen] = {}
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
            gpu = free_gpus.pop(0) if slots["gpus"] else None
            procs[entry["run_id"]] = _start_run(folder, entry, gpu, slots["threads"])
            entry.update(state="running", gpu=gpu, started=time.time())
            changed = True
        if changed:
            atomic_write_json(path, state)
        time.sleep(poll_s)


def _start_run(folder: Path, entry: dict, gpu: int | None, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        sys.executable,
        "-m",
        "lcbench",
        "run",
        entry["config"],
        "--no-progress",
        "--require-pretrained",
    ]
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        command.append("device=cuda")
    command.append(f"threads={threads}")
    log = open(folder / "logs" / f"{entry['run_id']}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    log.close()
    return proc


if __name__ == "__main__":
    sys.exit(1 if serve(sys.argv[1]) else 0)
