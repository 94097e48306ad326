"""A local queue's warm worker: a process forked from the queue's fork server that runs the runs it is sent,
one at a time, each with its output in its own log file.

A fresh interpreter per run would spend seconds importing torch and timm, and a fresh fork per run still
pays every first-call cost (lazy imports, allocator and kernel caches) again. A worker keeps them across
runs. Each run seeds every generator and sets its threads and device itself, so a run's numbers do not
depend on what ran before it in the same worker (tests compare them with runs executed alone). A worker
ends after a run that did not succeed, so nothing a failed or interrupted run left behind reaches the next;
a worker that crashes takes down its current run only, and the supervisor starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import sys
from multiprocessing.connection import Connection

from ..core.config import load_yaml
from ..core.exits import exit_code
from ..training.identity import run_id
from ..training.job import run_job
from ..training.resolve import make_config


def serve_runs(conn: Connection, gpu: int | None, threads: int, cpu_only: bool) -> None:
    """Run each (config path, log path) received on `conn`, answering with the run's exit code; return at
    the end of the queue (the connection closed) or after a run that did not succeed."""
    overrides = place(gpu, threads, cpu_only)
    while True:
        try:
            config, log = conn.recv()
        except (EOFError, KeyboardInterrupt):  # the queue ended or was stopped while this worker waited
            return
        code = run_one(config, log, overrides)
        conn.send(code)
        if code != 0:
            return


def run_rank(config: str, log: str, env: dict, gpu: int | None, threads: int, cpu_only: bool) -> int:
    """One rank of a DDP run (a process of its own, with torchrun's environment `env`); its exit code."""
    os.environ.update(env)
    return run_one(config, log, place(gpu, threads, cpu_only))


def place(gpu: int | None, threads: int, cpu_only: bool) -> list[str]:
    """Pin this process to its slot (its GPU only, or the CPU only) before anything initialises CUDA (the
    fork server never does); the config overrides that say so. The run's threads are its config's (the
    queue wrote the slot's into a config that left them to it): they decide its arithmetic on the CPU."""
    overrides: list[str] = []
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        overrides.append("device=cuda")
    elif cpu_only:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        overrides.append("device=cpu")
    return overrides


def run_one(config: str, log: str, overrides: list[str]) -> int:
    """One run with stdout and stderr appended to `log`; returns its exit code (0: it succeeded)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.INFO, format="lcbench: %(message)s", force=True)
    try:
        cfg = make_config(load_yaml(config), overrides)
        print(f"run {run_id(cfg)}: {cfg.stage} {cfg.method} {cfg.model} {cfg.dataset} seed {cfg.seed}")
        print(f"worker pid {os.getpid()}", flush=True)
        result = run_job(cfg)
        print(f"run {result['run_id']}: {result['status']}", flush=True)
        return 0
    except (Exception, KeyboardInterrupt) as e:
        return exit_code(e)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
