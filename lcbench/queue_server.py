"""The local queue's supervisor: runs a queue folder's runs to the end, at most N at once.

Started detached by `lcbench launch` (or served in the foreground with `--wait`). Each run gets its own
process forked from a server that has imported lcbench, torch and timm once; the supervisor rewrites
`queue.json` atomically whenever a run starts or ends, so `lcbench status` can read it meanwhile.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from .config import load_yaml, run_id
from .errors import ConfigError
from .exits import exit_code
from .job import run_job
from .resolve import make_config
from .store import atomic_write_json, live_status, read_json

QUEUE_FILE = "queue.json"


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
