"""The local queue's supervisor: runs a queue folder's runs to the end, at most N at once.

Started detached by `lcbench launch` (or served in the foreground with `--wait`). The runs execute in warm
worker processes (`queue_worker.py`), one per slot, forked from a fork server that has imported lcbench,
torch and timm once; a worker runs successive runs and is replaced after a run that did not succeed. The
supervisor itself imports none of them (it starts in a fraction of a second, and the fork server starts at
once). It rewrites `queue.json` atomically whenever a run starts or ends, so `lcbench status` can read it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from .errors import ConfigError
from .store import atomic_write_json, live_status, read_json

QUEUE_FILE = "queue.json"


def serve(folder: str | Path, poll_s: float = 1.0) -> int:
    """Run the queue in `folder` to the end; returns the number of runs that did not succeed."""
    folder = Path(folder)
    path = folder / QUEUE_FILE
    state = read_json(path)
    if state is None:
        raise ConfigError(f"{path} is not a queue")
    state["supervisor_pid"] = os.getpid()
    atomic_write_json(path, state)
    slots = state["slots"]
    gpus = slots["gpus"] or [None] * slots["max_parallel"]
    pool = [
        Worker(gpu, slots["threads"], slots.get("cpu_only", False)) for gpu in gpus[: slots["max_parallel"]]
    ]

    def stop(signum, frame):  # forward a stop to the runs, which record themselves as failed/interrupted
        for worker in pool:
            worker.send_signal(signal.SIGINT)
        for worker in pool:
            worker.join()
        sys.exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _loop(state["runs"], pool, folder, path, state, poll_s)
    finally:
        for worker in pool:
            worker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    atomic_write_json(path, state)
    return sum(1 for r in state["runs"] if r["returncode"] != 0)


def _loop(runs: list[dict], pool: list[Worker], folder: Path, path: Path, state: dict, poll_s: float) -> None:
    by_id = {r["run_id"]: r for r in runs}
    while any(r["state"] != "done" for r in runs):
        changed = False
        for i, worker in enumerate(pool):
            code = worker.result()
            if code is None:
                continue
            entry = by_id[worker.run_id]
            entry.update(state="done", returncode=code, ended=time.time())
            ended = sum(r["state"] == "done" for r in runs)
            verdict = (
                "ok" if code == 0 else f"FAILED (exit {code}; log {folder / 'logs' / worker.run_id}.log)"
            )
            seconds = entry["ended"] - entry["started"]
            _say(f"end   {worker.run_id} {verdict} after {seconds:.1f}s; {ended}/{len(runs)} done")
            worker.run_id = None
            if code != 0:  # the worker has ended (or crashed): a fresh one takes its slot
                worker.close()
                pool[i] = Worker(worker.gpu, worker.threads, worker.cpu_only)
            changed = True
        for entry in runs:
            idle = [w for w in pool if w.run_id is None]
            if not idle:
                break
            if entry["state"] != "pending":
                continue
            dep = by_id.get(entry.get("depends_on") or "")
            if dep is not None and dep["state"] != "done":
                continue
            if _run_elsewhere(entry):
                continue
            worker = idle[0]
            worker.start(entry["run_id"], entry["config"], folder / "logs" / f"{entry['run_id']}.log")
            entry.update(state="running", gpu=worker.gpu, pid=worker.pid, started=time.time())
            _say(f"start {entry['run_id']}" + (f" on GPU {worker.gpu}" if worker.gpu is not None else ""))
            changed = True
        if changed:
            atomic_write_json(path, state)
        busy = [w for w in pool if w.run_id is not None]
        if busy:  # wake as soon as a run ends; the timeout re-checks runs that wait for another process
            wait([w.conn for w in busy] + [w.sentinel for w in busy], timeout=poll_s)
        else:
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


class Worker:
    """A warm worker process bound to one slot (its GPU, if any) that runs one run at a time; `run_id` is
    the run it is running (None while idle)."""

    _context = None

    def __init__(self, gpu: int | None, threads: int, cpu_only: bool) -> None:
        if Worker._context is None:
            Worker._context = multiprocessing.get_context("forkserver")
            Worker._context.set_forkserver_preload(["lcbench._preload"])
        self.gpu, self.threads, self.cpu_only = gpu, threads, cpu_only
        self.run_id: str | None = None
        self.conn, child = Worker._context.Pipe()
        self.process = Worker._context.Process(target=_worker_main, args=(child, gpu, threads, cpu_only))
        self.process.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def start(self, run_id: str, config: str, log: Path) -> None:
        self.conn.send((config, str(log)))
        self.run_id = run_id

    def result(self) -> int | None:
        """The current run's exit code once it has ended (the process's, if the worker died during it)."""
        if self.run_id is None:
            return None
        if self.conn.poll():
            try:
                return self.conn.recv()
            except EOFError:  # the worker died without answering: a crash, a kill, the OOM killer
                self.process.join()
                return self.process.exitcode
        if not self.process.is_alive():
            return self.process.exitcode
        return None

    def send_signal(self, signum: int) -> None:
        if self.process.pid and self.process.exitcode is None:
            os.kill(self.process.pid, signum)

    def join(self) -> None:
        self.process.join()

    def close(self) -> None:
        """End the worker once it is idle (its connection closed) and wait for it."""
        self.conn.close()
        self.process.join()


def _worker_main(conn: Connection, gpu: int | None, threads: int, cpu_only: bool) -> None:
    # imported here, in the worker: the fork server has it loaded already, the supervisor never needs it
    from .queue_worker import serve_runs

    serve_runs(conn, gpu, threads, cpu_only)


def main(folder: str) -> int:
    """The detached supervisor's entry point: exit 1 when any run did not succeed."""
    return 1 if serve(folder) else 0


def _say(text: str) -> None:
    """One timestamped line in the supervisor's log."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
