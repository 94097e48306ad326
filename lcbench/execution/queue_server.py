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
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path

from ..core.errors import ConfigError
from ..core.exits import first_failed_rank, how_it_ended
from ..core.store import atomic_write_json, live_status, read_json

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
    cpu_only = slots.get("cpu_only", False)
    pool = [Worker(gpu, slots["threads"], cpu_only) for gpu in gpus[: slots["max_parallel"]]]
    active: dict[str, Worker | RankGroup] = {}

    def stop(signum, frame):  # forward a stop to the runs, which record themselves as failed/interrupted
        for runner in [*pool, *active.values()]:
            runner.send_signal(signal.SIGINT)
        join_or_kill([p for runner in [*pool, *active.values()] for p in runner.processes])
        sys.exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _loop(state, pool, active, folder, path, poll_s)
    finally:
        for worker in pool:
            worker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    atomic_write_json(path, state)
    return sum(1 for r in state["runs"] if r["returncode"] != 0)


def _loop(
    state: dict,
    pool: list[Worker],
    active: dict[str, Worker | RankGroup],
    folder: Path,
    path: Path,
    poll_s: float,
) -> None:
    """Start runs in queue order as slots free up (a DDP run takes `nproc` slots: later runs wait behind
    it rather than starve it); record each end."""
    runs = state["runs"]
    by_id = {r["run_id"]: r for r in runs}
    while any(r["state"] != "done" for r in runs):
        changed = False
        for rid, runner in list(active.items()):
            code = runner.result()
            if code is None:
                continue
            entry = by_id[rid]
            entry.update(state="done", returncode=code, ended=time.time())
            ended = sum(r["state"] == "done" for r in runs)
            cause = f"{runner.failure}; " if isinstance(runner, RankGroup) and code != 0 else ""
            verdict = "ok" if code == 0 else f"FAILED ({cause}exit {code}; log {folder / 'logs' / rid}.log)"
            seconds = entry["ended"] - entry["started"]
            _say(f"end   {rid} {verdict} after {seconds:.1f}s; {ended}/{len(runs)} done")
            del active[rid]
            _free_slots(pool, rid, replace=code != 0 and isinstance(runner, Worker))
            changed = True
        _replace_dead_idle_workers(pool)
        for entry in runs:
            if entry["state"] != "pending":
                continue
            dep = by_id.get(entry.get("depends_on") or "")
            if dep is not None and dep["state"] != "done":
                continue
            if _run_elsewhere(entry):
                continue
            idle = [w for w in pool if w.run_id is None]
            nproc = entry.get("nproc", 1)
            if len(idle) < nproc:
                break
            rid, log = entry["run_id"], folder / "logs" / f"{entry['run_id']}.log"
            if nproc == 1:
                runner = idle[0]
                runner.start(rid, entry["config"], log)
            else:
                runner = RankGroup(rid, entry["config"], log, idle[:nproc])
            active[rid] = runner
            entry.update(state="running", gpu=runner.gpu, pid=runner.pid, started=time.time())
            _say(f"start {rid}" + _placement(runner.gpu))
            changed = True
        if changed:
            atomic_write_json(path, state)
        waitables = [w for runner in active.values() for w in runner.waitables()]
        if waitables:  # wake as soon as a run ends; the timeout re-checks runs that wait for another process
            wait(waitables, timeout=poll_s)
        else:
            time.sleep(poll_s)


def _free_slots(pool: list[Worker], run_id: str, replace: bool) -> None:
    """The slots `run_id` held are free again; a worker whose run failed is replaced by a fresh one."""
    for i, worker in enumerate(pool):
        if worker.run_id == run_id:
            worker.run_id = None
            if replace:  # the worker has ended (or crashed): a fresh one takes its slot
                pool[i] = worker.replaced()


def _replace_dead_idle_workers(pool: list[Worker]) -> None:
    """An idle worker that died (killed from outside, the OOM killer) is replaced before it is given a run."""
    for i, worker in enumerate(pool):
        if worker.run_id is None and not worker.process.is_alive():
            pool[i] = worker.replaced()


def _placement(gpu: int | list | None) -> str:
    """' on 2 processes', ' on GPU 1', ' on 2 processes on GPUs 0,1', or ''."""
    gpus = gpu if isinstance(gpu, list) else [gpu]
    text = f" on {len(gpus)} processes" if len(gpus) > 1 else ""
    return text + (f" on GPU{'s' * (len(gpus) > 1)} {','.join(map(str, gpus))}" if None not in gpus else "")


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


def _context():
    """The queue's fork server (started by the first process asked of it), with lcbench preloaded."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["lcbench._preload"])
    return _CONTEXT


_CONTEXT = None


class Worker:
    """A warm worker process bound to one slot (its GPU, if any) that runs one run at a time; `run_id` is
    the run holding its slot (None while idle): its own run, or a DDP run that borrowed the slot."""

    def __init__(self, gpu: int | None, threads: int, cpu_only: bool) -> None:
        self.gpu, self.threads, self.cpu_only = gpu, threads, cpu_only
        self.run_id: str | None = None
        self.conn, child = _context().Pipe()
        self.process = _context().Process(target=_worker_main, args=(child, gpu, threads, cpu_only))
        self.process.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def processes(self) -> list:
        return [self.process]

    def waitables(self) -> list:
        return [self.conn, self.process.sentinel]

    def start(self, run_id: str, config: str, log: Path) -> None:
        self.conn.send((config, str(log)))
        self.run_id = run_id

    def result(self) -> int | None:
        """The current run's exit code once it has ended (the process's, if the worker died during it)."""
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

    def close(self) -> None:
        """End the worker once it is idle (its connection closed) and wait for it (a while)."""
        self.conn.close()
        join_or_kill([self.process])

    def replaced(self) -> Worker:
        """A fresh worker for this one's slot (this one closed: it has ended, or died)."""
        self.close()
        return Worker(self.gpu, self.threads, self.cpu_only)


class RankGroup:
    """A DDP run's ranks, one process each (forked from the fork server) with torchrun's environment, on
    the slots (and GPUs) of the `workers` it borrows. When a rank fails the others are stopped, as torchrun
    does, and the run's exit code is the first failure's."""

    def __init__(self, run_id: str, config: str, log: Path, workers: list[Worker]) -> None:
        self.gpu = [w.gpu for w in workers]
        self.failure = ""  # which rank's end stopped the run, once one has
        port = _free_port()
        self.processes = []
        for rank, worker in enumerate(workers):
            worker.run_id = run_id
            env = {
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(len(workers)),
                "LOCAL_WORLD_SIZE": str(len(workers)),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            rank_log = log if rank == 0 else log.with_suffix(f".rank{rank}.log")
            args = (config, str(rank_log), env, worker.gpu, worker.threads, worker.cpu_only)
            process = _context().Process(target=_rank_main, args=args)
            process.start()
            self.processes.append(process)

    @property
    def pid(self) -> list[int | None]:
        return [p.pid for p in self.processes]

    def waitables(self) -> list:
        return [p.sentinel for p in self.processes if p.exitcode is None]

    def result(self) -> int | None:
        """The run's exit code once it has ended: that of the rank whose end stopped the others."""
        codes = {rank: p.exitcode for rank, p in enumerate(self.processes)}
        if any(c not in (None, 0) for c in codes.values()):
            self._stop_the_others()
            rank, code = first_failed_rank({r: p.exitcode for r, p in enumerate(self.processes)})
            self.failure = (
                f"rank {rank} of {len(self.processes)} {how_it_ended(code)}, which stopped the others"
            )
            return code
        return 0 if all(c == 0 for c in codes.values()) else None

    def _stop_the_others(self) -> None:
        """Ranks blocked in a collective with the failed one: SIGTERM, then SIGKILL (a rank waiting in a
        collective for one that has exited would wait for the process group's timeout, half an hour)."""
        self.send_signal(signal.SIGTERM)
        join_or_kill(self.processes)

    def send_signal(self, signum: int) -> None:
        for p in self.processes:
            if p.pid and p.exitcode is None:
                os.kill(p.pid, signum)


def join_or_kill(processes: list, grace_s: float = 30.0) -> None:
    """Wait up to `grace_s` for `processes` to end (a run asked to stop records itself first), then
    SIGKILL those still there: the supervisor never waits forever, whatever a process does with the
    signals it was sent (ignored, blocked in native code, stopped)."""
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.exitcode is None and p.pid:
            os.kill(p.pid, signal.SIGKILL)
    for p in processes:
        p.join()


def _free_port() -> int:
    """A TCP port free on this machine now, for a DDP run's rendezvous (as torchrun --standalone picks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answer_sigint() -> None:
    """The supervisor stops a run with SIGINT: answer it even where the queue was launched from a shell
    that ignores SIGINT (a background job of a script), whose ignoring every child would inherit."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _worker_main(conn: Connection, gpu: int | None, threads: int, cpu_only: bool) -> None:
    _answer_sigint()
    # imported here, in the worker: the fork server has it loaded already, the supervisor never needs it
    from .queue_worker import serve_runs

    serve_runs(conn, gpu, threads, cpu_only)


def _rank_main(config: str, log: str, env: dict, gpu: int | None, threads: int, cpu_only: bool) -> None:
    _answer_sigint()
    from .queue_worker import run_rank  # (as in _worker_main)

    sys.exit(run_rank(config, log, env, gpu, threads, cpu_only))


def main(folder: str) -> int:
    """The detached supervisor's entry point: exit 1 when any run did not succeed."""
    return 1 if serve(folder) else 0


def _say(text: str) -> None:
    """One timestamped line in the supervisor's log."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
