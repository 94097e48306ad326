"""The local queue's warm workers: successive runs in one worker give the numbers the runs give alone; a
failed run retires its worker; a worker killed mid-run fails that run only."""

import json
import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lcbench.cli import main
from lcbench.core.exits import EXIT_RANK_LOST, first_failed_rank, how_it_ended
from lcbench.execution.local_queue import read_queue
from lcbench.execution.queue_server import Worker, _replace_dead_idle_workers, join_or_kill
from lcbench.execution.status import sweep_status
from lcbench.execution.submissions import read_submissions
from lcbench.execution.sweep import plan_sweep
from lcbench.training.pipeline import execute
from tests.conftest import wait_until
from tests.execution.test_runner import digits_sweep


def numbers(run_dir: Path) -> tuple[list[dict], dict]:
    """A run's numbers: every logged event's values and the final model's measurements (times left out)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = [{k: v for k, v in line.items() if "seconds" not in k} for line in lines]
    final = json.loads((run_dir / "result.json").read_text())["final"]
    return events, {k: v for k, v in final.items() if "latency" not in k}


@pytest.mark.serial
@pytest.mark.slow
def test_workers_run_successive_runs_alike_and_isolate_failures(tmp_path, capsys):
    variants = {
        "a_lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True},
        "b_kd": {"method": "kd", "student": "collapsed:1"},
        "c_prune": {"method": "magnitude_pruning", "target_compression": 1.5},
        "d_bad": {"method": "magnitude_pruning", "target_compression": 1000.0},  # fails at its start
        "e_ft": {"method": "finetune"},
        "f_long": {"method": "finetune", "epochs": 400},  # killed while it trains
    }
    path = digits_sweep(tmp_path, variants, threads=1)
    plan = plan_sweep(path)
    ids = {r.variant or "pretrain": r.run_id for r in plan.runs}
    assert [r.variant or "pretrain" for r in plan.runs] == [
        "pretrain",
        *variants,
    ]  # the queue's order (sorted by name)
    assert main(["launch", str(path), "--executor", "local", "--max-parallel", "1", "--threads", "1"]) == 0
    (sub,) = read_submissions(tmp_path / "out", "t")

    def running_long() -> dict | None:
        entry = next(r for r in read_queue(sub.folder)["runs"] if r["run_id"] == ids["f_long"])
        return entry if entry["state"] == "running" else None

    wait_until(running_long, 300, "the long run to start")
    os.kill(running_long()["pid"], signal.SIGKILL)  # the worker, as the OOM killer would
    assert main(["status", str(path), "--wait", "--poll", "0.5"]) == 1
    capsys.readouterr()

    queue = {r["run_id"]: r for r in read_queue(sub.folder)["runs"]}
    code = {name: queue[ids[name]]["returncode"] for name in ids}
    assert code == {"pretrain": 0, "a_lc": 0, "b_kd": 0, "c_prune": 0, "d_bad": 2, "e_ft": 0, "f_long": -9}
    pid = {name: queue[ids[name]]["pid"] for name in ids}
    # successful runs follow each other in one warm worker; a failed run's worker is not reused
    assert pid["pretrain"] == pid["a_lc"] == pid["b_kd"] == pid["c_prune"] == pid["d_bad"]
    assert pid["e_ft"] != pid["d_bad"] and pid["f_long"] == pid["e_ft"]
    status = {s.run.variant or "pretrain": s.status for s in sweep_status(plan)}
    assert status["e_ft"] == "completed" and status["f_long"] != "completed"
    supervisor_log = (Path(sub.folder) / "supervisor.log").read_text()
    assert f"end   {ids['f_long']} FAILED (exit -9" in supervisor_log

    # the runs that shared the worker give exactly the numbers they give executed alone in this process
    alone = tmp_path / "alone"
    shutil.copytree(tmp_path / "out" / ids["pretrain"], alone / ids["pretrain"])
    for run in plan.runs:
        if run.variant in ("a_lc", "b_kd", "c_prune", "e_ft"):
            execute(replace(run.cfg, output_root=str(alone)), progress_bar=False, require_pretrained=True)
            assert numbers(alone / run.run_id) == numbers(tmp_path / "out" / run.run_id), run.variant


@pytest.mark.serial
def test_an_idle_worker_that_died_is_replaced_before_it_gets_a_run():
    pool = [Worker(None, 1, True)]
    dead = pool[0]
    os.kill(dead.pid, signal.SIGKILL)
    dead.process.join()
    _replace_dead_idle_workers(pool)
    assert pool[0] is not dead and pool[0].process.is_alive()
    pool[0].close()  # an idle worker ends when its queue closes its connection
    assert pool[0].process.exitcode == 0


@pytest.mark.serial
def test_the_supervisor_never_waits_forever_for_a_worker_that_does_not_answer():
    """A worker that does not end on SIGINT (it ignores it, or is stuck: here stopped) is killed after the
    grace; the supervisor used to join it forever, and `status` showed its run as running."""
    worker = Worker(None, 1, True)
    os.kill(worker.pid, signal.SIGSTOP)
    worker.send_signal(signal.SIGINT)
    started = time.monotonic()
    join_or_kill(worker.processes, grace_s=1.0)
    assert time.monotonic() - started < 10
    assert worker.process.exitcode == -signal.SIGKILL


@pytest.mark.serial
def test_a_ddp_runs_failure_is_the_rank_that_ended_first_on_its_own():
    lost, term = EXIT_RANK_LOST, -signal.SIGTERM
    assert first_failed_rank({0: lost, 1: -signal.SIGKILL}) == (1, -signal.SIGKILL)  # killed; 0 noticed
    assert first_failed_rank({0: term, 1: -signal.SIGKILL}) == (1, -signal.SIGKILL)  # killed; 0 stopped
    assert first_failed_rank({0: 0, 1: 70, 2: term}) == (1, 70)  # a crash
    assert first_failed_rank({0: term, 1: None}) == (0, term)  # SIGTERMed from outside
    assert first_failed_rank({0: lost, 1: lost}) == (0, lost)
    assert (
        how_it_ended(-signal.SIGKILL) == "was killed by SIGKILL" and how_it_ended(75) == "ended with exit 75"
    )
