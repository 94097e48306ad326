"""DDP runs on CPU ranks (gloo): the same numbers as one process within a stated tolerance at the same
global batch, every method under DDP, an exact resume after one rank is killed, and `lcbench run`'s
torchrun path."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lcbench.cli import main
from lcbench.core.errors import ConfigError, RankLost
from lcbench.execution.local_queue import read_queue
from lcbench.execution.status import sweep_status
from lcbench.execution.submissions import read_submissions
from lcbench.execution.sweep import plan_sweep
from lcbench.training import distributed
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from lcbench.zoo.loaders import ResumableBatchSampler
from tests.conftest import REPO, fast_overrides, run_cli, wait_until
from tests.execution.test_runner import digits_sweep

# digits_mixer has no dropout and no BatchNorm: DDP on 2 ranks computes the single process's arithmetic
# in another order, so its numbers agree to float rounding (measured: at most 2e-7 relative in the losses,
# top-1 identical, for every method; README, "DDP").
LOSS_RTOL = 1e-5
TOP1_POINTS = 0.3  # one of the 360 held-out digits


def epochs(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e for e in lines if e["event"] == "epoch"]


def test_ranks_share_each_global_batch_once():
    """Two ranks together see each batch of the one-process order, every sample once; a skip resumes."""
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    one = list(ResumableBatchSampler(10, 4, generator()))
    ranks = [list(ResumableBatchSampler(10, 4, generator(), rank, 2)) for rank in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(batch) for batch in one]
    assert sorted(i for rank in ranks for batch in rank for i in batch) == list(range(10))
    resumed = ResumableBatchSampler(10, 4, generator(), 1, 2)
    resumed.skip = 4
    assert list(resumed) == ranks[1][1:]
    assert ResumableBatchSampler(10, 4, generator(), 0, 2).global_batch(2) == 2
    with pytest.raises(ConfigError, match="fewer than the 3 DDP processes"):
        ResumableBatchSampler(10, 4, generator(), 0, 3)


@pytest.mark.slow
def test_ddp_matches_one_process_for_every_method(tmp_path, capsys):
    variants = {
        "lc": {"method": "layercollapse", "k": 2, "allow_unfolded": True},
        "kd": {"method": "kd", "student": "collapsed:2", "init": "teacher"},
        "fusion": {"method": "layer_fusion", "match_collapse": 2, "stages": 2},
        "prune": {"method": "magnitude_pruning", "match_collapse": 2},
    }
    path = digits_sweep(
        tmp_path, variants, model="digits_mixer", nproc=2, epochs=2, optimizer="sgd", lr=0.01, momentum=0.9
    )
    args = ["--executor", "local", "--max-parallel", "2", "--threads", "2", "--wait", "--poll", "0.5"]
    assert main(["launch", str(path), *args]) == 0
    capsys.readouterr()
    plan = plan_sweep(path)
    (sub,) = read_submissions(tmp_path / "out", "t")
    queue = read_queue(sub.folder)
    assert all(len(r["pid"]) == 2 for r in queue["runs"])  # every run on two rank processes

    single = tmp_path / "single"
    for run in plan.runs:  # the same runs in one process (threads: 1 per rank above, 1 here)
        execute(replace(run.cfg, nproc=1, threads=1, output_root=str(single)), progress_bar=False)
        ddp_dir, one_dir = tmp_path / "out" / run.run_id, single / run.run_id
        ddp, one = (json.loads((d / "result.json").read_text()) for d in (ddp_dir, one_dir))
        name = run.variant or "pretrain"
        assert ddp["status"] == "completed", name
        assert ddp["final"]["params_nonzero"] == one["final"]["params_nonzero"], name  # the same structure
        assert ddp["final"]["samples"] == one["final"]["samples"] == 360, name  # each held-out sample once
        assert ddp["cost"]["samples_seen"] == one["cost"]["samples_seen"], name
        assert ddp["cost"]["train_flops"] == one["cost"]["train_flops"], name
        for d, o in zip(epochs(ddp_dir), epochs(one_dir), strict=True):
            for key in ("train_loss", "val_loss"):
                assert math.isclose(d[key], o[key], rel_tol=LOSS_RTOL), (
                    name,
                    d["epoch"],
                    key,
                    d[key],
                    o[key],
                )
            assert abs(d["val_top1"] - o["val_top1"]) <= TOP1_POINTS, (name, d["epoch"])
        assert abs(ddp["final"]["top1"] - one["final"]["top1"]) <= TOP1_POINTS, name


@pytest.mark.serial
@pytest.mark.slow
def test_a_ddp_run_resumes_exactly_after_one_rank_is_killed(tmp_path, capsys):
    # digits_mlp: dropout and BatchNorm, so every rank's RNG and the buffers must come back as they were
    long = {"ft": {"method": "finetune", "epochs": 6}}
    args = ["--executor", "local", "--max-parallel", "2", "--threads", "2", "--poll", "0.5"]
    (tmp_path / "ref").mkdir()
    reference = digits_sweep(tmp_path / "ref", long, nproc=2)
    assert main(["launch", str(reference), *args, "--wait"]) == 0

    path = digits_sweep(tmp_path, long, nproc=2)
    assert main(["launch", str(path), *args]) == 0
    (sub,) = read_submissions(tmp_path / "out", "t")
    ft = next(r for r in plan_sweep(path).runs if r.variant == "ft")

    def second_epoch_done() -> bool:
        return (tmp_path / "out" / ft.run_id / "metrics.jsonl").exists() and len(
            epochs(tmp_path / "out" / ft.run_id)
        ) >= 2

    wait_until(second_epoch_done, 300, "two epochs of the DDP run")
    entry = next(r for r in read_queue(sub.folder)["runs"] if r["run_id"] == ft.run_id)
    os.kill(entry["pid"][1], signal.SIGKILL)  # rank 1 dies; the queue stops rank 0 too
    assert main(["status", str(path), "--wait", "--poll", "0.5"]) == 1
    entry = next(r for r in read_queue(sub.folder)["runs"] if r["run_id"] == ft.run_id)
    assert entry["returncode"] == -signal.SIGKILL
    # the queue names the rank that died; rank 0, had it noticed before it was stopped, says so in one line
    supervisor = (Path(sub.folder) / "supervisor.log").read_text()
    assert f"{ft.run_id} FAILED (rank 1 of 2 was killed by SIGKILL, which stopped the others" in supervisor
    rank0 = (Path(sub.folder) / "logs" / f"{ft.run_id}.log").read_text()
    assert "internal error" not in rank0 and "Traceback" not in rank0, rank0[-3000:]
    assert not (tmp_path / "out" / ft.run_id / "result.json").exists() or (
        json.loads((tmp_path / "out" / ft.run_id / "result.json").read_text())["status"] != "completed"
    )
    capsys.readouterr()

    assert main(["launch", str(path), *args, "--wait"]) == 0  # resumes from the last checkpoint
    events = [
        json.loads(line) for line in (tmp_path / "out" / ft.run_id / "metrics.jsonl").read_text().splitlines()
    ]
    assert any(e["event"] == "resume" for e in events)
    resumed, uninterrupted = (
        epochs(tmp_path / "out" / ft.run_id),
        epochs(tmp_path / "ref" / "out" / ft.run_id),
    )
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed] == [
        {k: v for k, v in e.items() if k not in drop} for e in uninterrupted
    ]


@pytest.mark.slow
def test_lcbench_run_starts_its_ranks_with_torchrun(tmp_path):
    overrides = fast_overrides(tmp_path, stage="pretrain", model="digits_mlp", epochs=1, nproc=2)
    done = run_cli("run", "dataset=digits", *overrides, "--no-progress", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # printed once, by rank 0
    assert summary["status"] == "completed"
    record = json.loads((tmp_path / summary["run_id"] / "result.json").read_text())
    assert record["final"]["samples"] == 360 and record["config"]["nproc"] == 2
    assert "ChildFailedError" not in done.stderr and "OMP_NUM_THREADS" not in done.stderr, done.stderr
    assert done.stderr.count(f"{summary['run_id']} epoch 1/1 ") == 1  # one line per epoch, not per rank

    bad = run_cli("run", "dataset=digits", *overrides, "nodes=2", timeout=120)
    assert bad.returncode == 2 and "multi-node run is started by SLURM" in bad.stderr


def ddp_run_after_two_epochs(tmp_path, epochs_planned: int):
    """`lcbench run nproc=2` of a digits original, once it has logged two epochs and checkpointed: its
    launcher, its run folder, its command without `nproc` and the Popen options to run it again."""
    overrides = [
        "dataset=digits",
        *fast_overrides(tmp_path, stage="pretrain", model="digits_mlp", epochs=epochs_planned),
    ]
    command = [sys.executable, "-m", "lcbench", "run", *overrides, "--no-progress"]
    start = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    launcher = subprocess.Popen([*command, "nproc=2"], **start)
    run_dir = tmp_path / run_id(make_config(overrides=overrides))
    wait_until(lambda: (run_dir / "checkpoint.pt").exists() and len(epochs(run_dir)) >= 2, 300, "two epochs")
    return launcher, run_dir, command, start


@pytest.mark.serial
@pytest.mark.slow
def test_a_killed_rank_of_lcbench_run_is_named_in_one_line_and_the_same_command_resumes(tmp_path):
    process, run_dir, command, start = ddp_run_after_two_epochs(tmp_path, 300)
    (rank1,) = [pid for pid in _descendants(process.pid) if "\0RANK=1\0" in _environ(pid)]
    os.kill(rank1, signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert f"lcbench: rank 1 of 2 (pid {rank1}) was killed by SIGKILL" in err
    assert "the same command resumes" in err
    assert "Traceback" not in err and "internal error" not in err and "ChildFailedError" not in err, err[
        -3000:
    ]
    # rank 0 records the loss when it notices before torchrun's SIGTERM reaches it; stopped first, it
    # leaves no record (status: interrupted, missing), which `launch --only-failed` reruns the same way
    record = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    assert record.get("status", "failed") == "failed"
    if record and record["error"]["type"] == "RankLost":
        assert "rank 0 of 2 lost the run's other rank(s)" in record["error"]["message"]
    done = len(epochs(run_dir))

    again = subprocess.Popen([*command, "nproc=2"], **start)
    wait_until(lambda: len(epochs(run_dir)) > done, 300, "the resumed run's first epoch")
    again.terminate()
    again.communicate(timeout=120)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resume" for e in events)


@pytest.mark.serial
@pytest.mark.slow
def test_the_ranks_of_a_killed_launcher_end_with_it_and_the_same_command_resumes_at_once(tmp_path):
    """Issue 40, case 8: a SIGKILLed `lcbench run nproc=2` left both ranks training on as orphans for 90 s
    or more, without a record, and a resume said "is being executed by another process"."""
    import fcntl
    import time

    launcher, run_dir, command, start = ddp_run_after_two_epochs(tmp_path, 300)
    ranks = [pid for pid in _descendants(launcher.pid) if "\0RANK=" in _environ(pid)]
    assert len(ranks) == 2
    launcher.kill()
    launcher.communicate(timeout=60)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in ranks), 20, "the ranks to end")
    lock = os.open(run_dir / ".lock", os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no orphan holds the run
    finally:
        os.close(lock)
    done = len(epochs(run_dir))
    again = subprocess.Popen([*command, "nproc=2"], **start)
    began = time.monotonic()
    wait_until(lambda: len(epochs(run_dir)) > done, 300, "the resumed run's first epoch")
    again.terminate()
    err = again.communicate(timeout=120)[1]
    assert "is being executed by another process" not in err and time.monotonic() - began < 90
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resume" for e in events)


@pytest.mark.serial
@pytest.mark.slow
def test_a_resume_at_another_world_size_is_recorded_and_flagged(tmp_path):
    """Issue 40, case 9: interrupted at nproc=2 and resumed at nproc=1, a run ended at other numbers than
    an uninterrupted one under the same run id, and its record said only `nproc: 1`."""
    from lcbench.analysis.records import point_flag

    launcher, run_dir, command, start = ddp_run_after_two_epochs(tmp_path, 40)
    launcher.send_signal(signal.SIGINT)  # Ctrl-C: torchrun stops both ranks; the checkpoint stays
    launcher.communicate(timeout=120)
    done = subprocess.run([*command, "nproc=1"], **start, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((run_dir / "result.json").read_text())
    ((change,),) = [record["world_size_changes"]]
    # (the checkpoint it resumed from may be a step behind the epochs already logged)
    assert change["from"] == 2 and change["to"] == 1 and 1 <= change["epoch"] < 40 and change["step"] > 0
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["from"] for e in events if e["event"] == "world_size_changed"] == [2]
    assert point_flag(record) == "world size changed"
    assert point_flag({**record, "method_report": {"forced": ["6"]}}) == "forced fold, world size changed"


def _descendants(pid: int) -> list[int]:
    """The processes started by `pid`, and by them, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _environ(pid: int) -> str:
    try:
        return "\0" + (Path("/proc") / str(pid) / "environ").read_text(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_cancel_stops_every_rank_of_a_ddp_run(tmp_path, capsys):
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune", "epochs": 400}}, nproc=2)
    assert main(["launch", str(path), "--executor", "local", "--max-parallel", "2", "--threads", "2"]) == 0
    (sub,) = read_submissions(tmp_path / "out", "t")
    ft = next(r for r in plan_sweep(path).runs if r.variant == "ft")
    run_dir = tmp_path / "out" / ft.run_id

    def training() -> bool:
        return (run_dir / "metrics.jsonl").exists() and len(epochs(run_dir)) >= 1

    wait_until(training, 300, "the DDP run to train")
    ranks = next(r for r in read_queue(sub.folder)["runs"] if r["run_id"] == ft.run_id)["pid"]
    assert main(["cancel", str(path)]) == 0
    for pid in ranks:  # both ranks have ended (none left waiting in a collective)
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    status = {s.run.variant: s.status for s in sweep_status(plan_sweep(path))}
    assert status["ft"] in ("stopped", "missing")  # interrupted: a relaunch resumes it


@pytest.mark.slow
def test_live_tuning_reaches_every_rank_at_the_same_step(tmp_path, capsys):
    # the lr change and an eval trigger go to rank 0, which broadcasts them; had rank 1 kept the old lr,
    # the ranks' weights would drift apart and the run would no longer replay in one process
    path = digits_sweep(
        tmp_path,
        {"ft": {"method": "finetune", "epochs": 8}},
        model="digits_mixer",
        nproc=2,
        optimizer="sgd",
        lr=0.01,
    )
    assert main(["launch", str(path), "--executor", "local", "--max-parallel", "2", "--threads", "2"]) == 0
    capsys.readouterr()
    ft = next(r for r in plan_sweep(path).runs if r.variant == "ft")
    run_dir = tmp_path / "out" / ft.run_id
    wait_until(lambda: (run_dir / "metrics.jsonl").exists() and len(epochs(run_dir)) >= 1, 300, "an epoch")
    assert main(["tune", str(run_dir), "lr=0.03"]) == 0
    ack = json.loads(capsys.readouterr().out)
    assert ack["accepted"] and ack["step"] % 10 == 0  # rank 0 looks every 10 steps
    assert main(["tune", str(run_dir), "--trigger", "eval"]) == 0
    assert json.loads(capsys.readouterr().out)["eval"]["samples"] == 360  # both ranks' shares, once
    assert main(["status", str(path), "--wait", "--poll", "0.5"]) == 0
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (tune,) = [e for e in events if e["event"] == "tune"]  # logged once, by rank 0

    alone = tmp_path / "alone"  # the same run in one process, the change replayed at its step
    shutil.copytree(tmp_path / "out" / ft.depends_on, alone / ft.depends_on)
    execute(
        replace(ft.cfg, nproc=1, threads=1, output_root=str(alone)), progress_bar=False, replay_changes=[tune]
    )
    for d, o in zip(epochs(run_dir), epochs(alone / ft.run_id), strict=True):
        assert math.isclose(d["val_loss"], o["val_loss"], rel_tol=LOSS_RTOL), (
            d["epoch"],
            d["val_loss"],
            o["val_loss"],
        )


def test_a_collective_that_lost_its_peer_is_one_line_that_says_the_same_command_resumes(monkeypatch):
    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
        "[127.0.0.1]:31134. This is typically caused by a remote worker crashing."
    )
    monkeypatch.setattr(distributed, "current", lambda: distributed.World(rank=0, size=2))
    with pytest.raises(RankLost) as lost, distributed.naming_a_lost_rank():
        raise gloo
    assert str(lost.value).startswith(
        "rank 0 of 2 lost the run's other rank(s) (Connection closed by peer [127.0.0.1]:31134): one ended"
    )
    assert "the same command resumes" in str(lost.value) and lost.value.__cause__ is gloo
    with pytest.raises(RuntimeError, match="a bug"), distributed.naming_a_lost_rank():
        raise RuntimeError("a bug")  # not a lost peer: still an internal error with its traceback
    monkeypatch.setattr(distributed, "current", lambda: distributed.World())
    with pytest.raises(RuntimeError, match="Connection closed"), distributed.naming_a_lost_rank():
        raise gloo  # one process has no peer to lose
