"""Launches of one sweep that overlap, and queues that meet runs another process is executing: each run
is started once, and nothing records a false failure (`lcbench launch` had no lock between its status
check and its submission; a new queue failed the compress runs whose pretrain an earlier queue's orphaned
process was still training)."""

import subprocess
import sys
import time

import pytest

from lcbench.cli import main
from lcbench.core.config import to_yaml
from lcbench.core.store import RunDir
from lcbench.execution.local_queue import Slots, read_queue, serve, write_queue
from lcbench.execution.status import sweep_status
from lcbench.execution.submissions import read_submissions
from lcbench.execution.sweep import plan_sweep
from tests.conftest import REPO, wait_until
from tests.execution.test_runner import digits_sweep


def _statuses(path) -> dict[str, str]:
    return {s.run.variant or "pretrain": s.status for s in sweep_status(plan_sweep(path))}


def test_two_launches_of_one_sweep_at_once_submit_it_once(tmp_path):
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    command = [sys.executable, "-m", "lcbench", "launch", str(path), "--executor", "local"]
    procs = [subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((proc.wait(timeout=120), proc.stderr.read()) for proc in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "still queued or running" in outcomes[1][1]
    assert len(read_submissions(tmp_path / "out", "t")) == 1
    assert main(["status", str(path), "--wait", "--poll", "0.3"]) == 0
    assert _statuses(path) == {"pretrain": "completed", "ft": "completed"}
    for run in plan_sweep(path).runs:  # each trained once: one initial event, never a resume
        events = RunDir(tmp_path / "out", run.run_id).events()
        assert [e["event"] for e in events].count("initial") == 1 and not RunDir(
            tmp_path / "out", run.run_id
        ).events("resume")


@pytest.mark.serial
def test_a_new_queue_waits_for_the_pretrain_another_process_is_training(tmp_path):
    """An earlier queue's supervisor died; its pretrain run goes on training. `launch --only-failed` then
    queues the compress runs: they wait for that pretrain's lock instead of failing "did not complete"."""
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}}, model="digits_mixer")
    spec = path.read_text().replace("pretrain:\n    epochs: 1", "pretrain:\n    epochs: 10")
    path.write_text(spec)
    (pretrain,) = plan_sweep(path).stage("pretrain")
    config = tmp_path / "orphan.yaml"
    config.write_text(to_yaml(pretrain.cfg))
    orphan = subprocess.Popen(
        [sys.executable, "-m", "lcbench", "run", str(config), "--no-progress"], cwd=REPO
    )
    run = RunDir(tmp_path / "out", pretrain.run_id)
    try:
        wait_until(lambda: run.metrics_path.exists(), 120, "the orphaned pretrain to start")
        assert _statuses(path) == {"pretrain": "running", "ft": "missing"}
        assert main(["launch", str(path), "--executor", "local", "--only-failed", "--wait"]) == 0
        assert orphan.wait(timeout=300) == 0
    finally:
        orphan.kill()
    assert _statuses(path) == {"pretrain": "completed", "ft": "completed"}
    assert [e["epoch"] for e in run.events("epoch")] == list(range(1, 11)) and not run.events("resume")


@pytest.mark.serial
def test_a_queue_does_not_start_a_run_another_process_holds(tmp_path, capsys):
    """A run of this queue whose lock another process holds (an earlier queue's orphan) is started only
    once that process ends; then it completes (here: resumes nothing, trains once)."""
    path = digits_sweep(tmp_path, {})
    (pretrain,) = plan_sweep(path).stage("pretrain")
    run = RunDir(tmp_path / "out", pretrain.run_id)
    run.create()
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(2); open(sys.argv[2], 'w').write(repr(time.time()))",
            str(run.path / ".lock"),
            str(released),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    folder = tmp_path / "queue"
    (folder / "configs").mkdir(parents=True)
    config = folder / "configs" / f"{pretrain.run_id}.yaml"
    config.write_text(to_yaml(pretrain.cfg))
    entry = {"run_id": pretrain.run_id, "config": str(config), "depends_on": None, "run_dir": str(run.path)}
    write_queue(folder, [entry], Slots(max_parallel=1, gpus=[], threads_per_run=1))
    started = time.time()
    assert serve(folder, poll_s=0.05) == 0  # no failed run
    assert holder.wait(timeout=30) == 0
    (done,) = read_queue(folder)["runs"]
    assert done["started"] >= float(released.read_text()) > started
    assert f"wait  {pretrain.run_id}: another process runs it" in capsys.readouterr().out
    assert run.result()["status"] == "completed" and len(run.events("initial")) == 1


def test_a_garbled_queue_file_makes_its_runs_unknown_not_missing(tmp_path, capsys):
    """A queue whose queue.json cannot be read while its supervisor lives: its waiting runs showed as
    "missing" with advice to resubmit them (which would run them twice)."""
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}}, model="digits_mixer")
    path.write_text(path.read_text().replace("pretrain:\n    epochs: 1", "pretrain:\n    epochs: 10"))
    assert main(["launch", str(path), "--executor", "local"]) == 0
    (sub,) = read_submissions(tmp_path / "out", "t")
    (pretrain,) = plan_sweep(path).stage("pretrain")
    wait_until(lambda: RunDir(tmp_path / "out", pretrain.run_id).metrics_path.exists(), 120, "the pretrain")
    queue_file = tmp_path / sub.folder / "queue.json"
    queue_file.write_text('{"runs": [')  # garbled while the supervisor waits for the pretrain to end
    by_variant = {s.run.variant or "pretrain": s for s in sweep_status(plan_sweep(path))}
    assert by_variant["pretrain"].status == "running"  # its lock says so
    assert by_variant["ft"].status == "unknown" and "queue state unreadable" in by_variant["ft"].detail
    capsys.readouterr()
    assert main(["launch", str(path), "--executor", "local", "--only-failed"]) == 0  # submits nothing
    assert "nothing to submit (no failed or missing run)" in capsys.readouterr().err
    assert main(["status", str(path), "--wait", "--poll", "0.3"]) == 0  # the supervisor rewrites its state
    assert _statuses(path) == {"pretrain": "completed", "ft": "completed"}
    assert len(read_submissions(tmp_path / "out", "t")) == 1
