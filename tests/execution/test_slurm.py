"""The SLURM path on a real cluster (slurm/local-cluster.sh): job arrays, dependencies, preemption and
requeue, failed runs and `--only-failed`, W&B offline files. No mocked sbatch."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from lcbench.cli import main
from lcbench.core.store import RunDir
from lcbench.execution.status import sweep_status
from lcbench.execution.submissions import read_submissions
from lcbench.execution.sweep import plan_sweep
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from tests import wandb_files
from tests.conftest import wait_until, write_image_folder

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

FAST = {"dataset": "digits", "latency_repeats": 2, "latency_batch": 8, "warmup_epochs": 0, "threads": 1}


def write_spec(tmp_path, name, base, variants=None, seeds=None):
    spec = {"name": name, "base": {**FAST, "output_root": str(tmp_path / "out"), **base}}
    if variants:
        spec["variants"] = variants
    if seeds:
        spec["seeds"] = seeds
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def statuses(path):
    return sweep_status(plan_sweep(path))


def test_sweep_goes_in_as_one_array_per_stage_and_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = write_spec(
        tmp_path,
        "arrays",
        {"model": "digits_mlp", "epochs": 1, "tracking": {"mode": "offline"}, "pretrain": {"epochs": 2}},
        {
            "ft": {"method": "finetune"},
            "lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True},
            "kd": {"method": "kd", "student": "collapsed:1"},
            "prune": {"method": "magnitude_pruning", "target_compression": 1.5},
        },
        seeds=[0, 1],
    )
    assert main(["launch", str(path), "--executor", "slurm", "--profile", "local"]) == 0
    (sub,) = read_submissions(tmp_path / "out", "arrays")
    plan = plan_sweep(path)
    assert len(sub.jobs) == len(plan.runs) == 10  # one original per seed, then 4 methods x 2 seeds
    pretrain_jobs = {sub.jobs[r.run_id] for r in plan.stage("pretrain")}
    assert len({job.split("_")[0] for job in pretrain_jobs}) == 1  # one array of 2 tasks
    pretrain_job = pretrain_jobs.pop()
    compress_jobs = {sub.jobs[r.run_id] for r in plan.stage("compress")}
    arrays = {job.split("_")[0] for job in compress_jobs}
    assert len(arrays) == 1 and len(compress_jobs) == 8  # one array of 8 tasks
    shown = subprocess.run(["scontrol", "show", "job", arrays.pop()], capture_output=True, text=True).stdout
    assert f"afterany:{pretrain_job.split('_')[0]}" in shown  # compress waits for the pretrain array

    assert main(["status", str(path), "--wait", "--poll", "2"]) == 0
    final = statuses(path)
    assert {s.status for s in final} == {"completed"}
    for s in final:
        record = RunDir(tmp_path / "out", s.run.run_id).result()
        env = json.loads((tmp_path / "out" / s.run.run_id / "env.json").read_text())
        assert env["code"].startswith(sub.folder)  # the job ran the snapshot taken at submission
        assert env["scheduler"]["SLURM_JOB_ID"] and env["torch_threads"] == 1  # the spec's, kept
        assert record["wandb_id"] == s.run.run_id
    lc = next(s.run for s in final if s.run.variant == "lc")
    (log,) = (tmp_path / "out" / lc.run_id / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_files.run_info(log)
    assert (info["group"], info["job_type"]) == ("arrays", "compress")
    assert info["tags"] == ["layercollapse", "digits_mlp", "digits"]
    epochs = RunDir(tmp_path / "out", lc.run_id).events("epoch")
    assert [r["val/top1"] for r in info["history"] if "val/top1" in r] == [e["val_top1"] for e in epochs]
    assert info["summary"]["top1"] == RunDir(tmp_path / "out", lc.run_id).result()["final"]["top1"]


def test_preempted_job_requeues_and_resumes_to_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = {"stage": "pretrain", "model": "digits_vit", "epochs": 8, "tracking": {"mode": "offline"}}
    path = write_spec(tmp_path, "preempt", base)
    assert main(["launch", str(path), "--executor", "slurm", "--profile", "local"]) == 0
    (run,) = plan_sweep(path).runs
    rundir = RunDir(tmp_path / "out", run.run_id)
    (job,) = read_submissions(tmp_path / "out", "preempt")[0].jobs.values()

    def checkpointed_epochs() -> int:  # (an epoch is logged just before its checkpoint is written)
        path = rundir.checkpoint_path
        return torch.load(path, weights_only=True)["progress"]["epoch"] if path.exists() else 0

    wait_until(lambda: checkpointed_epochs() >= 2, 180, "two epochs checkpointed")
    signalled = time.monotonic()
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_until(lambda: rundir.events("resume"), 180, "the requeued job to resume")
    resumed_after = time.monotonic() - signalled
    # meanwhile, the same run uninterrupted, on the same single thread
    reference_cfg = plan_sweep(path, [f"output_root={tmp_path / 'ref'}", "threads=1"]).runs[0].cfg
    reference = execute(reference_cfg, progress_bar=False)
    wait_until(rundir.is_completed, 300, "the resumed run to complete")
    print(f"preemption: signal -> resumed {resumed_after:.1f} s; total {time.monotonic() - signalled:.1f} s")

    (resume,) = rundir.events("resume")
    assert resume["epoch"] >= 2
    assert json.loads(rundir.env_path.read_text())["scheduler"]["SLURM_RESTART_COUNT"] == "1"
    result = rundir.result()
    ref_epochs = RunDir(tmp_path / "ref", run_id(reference_cfg)).events("epoch")
    assert [e["val_loss"] for e in rundir.events("epoch")] == [e["val_loss"] for e in ref_epochs]
    assert result["final"]["top1"] == reference["final"]["top1"]
    assert result["final"]["loss"] == reference["final"]["loss"]
    # W&B: the requeued attempt continued the same run id; the two attempts' histories cover every epoch
    logs = sorted((rundir.path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2
    infos = [wandb_files.run_info(p) for p in logs]
    assert {i["id"] for i in infos} == {run.run_id}
    logged = sorted({row["epoch"] for i in infos for row in i["history"] if "epoch" in row})
    assert logged == list(range(1, 9))


def test_failed_run_shows_its_error_and_only_failed_resubmits_it(tmp_path):
    data = tmp_path / "imgs"  # not there yet: the run fails with the data set's error
    base = {"stage": "pretrain", "model": "resnet18", "dataset": "imagefolder", "data_root": str(data)}
    base.update(epochs=1, img_size=32, batch_size=4, eval_batch_size=4)
    # data unchecked: with its fingerprint, data that appears later is other data, so another run
    base["data_fingerprint"] = ""
    path = write_spec(tmp_path, "fails", base)
    assert main(["launch", str(path), "--executor", "slurm", "--profile", "local"]) == 0
    assert main(["status", str(path), "--wait", "--poll", "2"]) == 1
    (failed,) = statuses(path)
    assert failed.status == "failed" and "DataError" in failed.detail and str(data) in failed.detail

    write_image_folder(data)  # the fix; neither data_root nor (unchecked) the data is in the id: same run
    assert main(["launch", str(path), "--executor", "slurm", "--profile", "local", "--only-failed"]) == 0
    subs = read_submissions(tmp_path / "out", "fails")
    assert len(subs) == 2 and list(subs[1].jobs) == [failed.run.run_id]
    assert main(["status", str(path), "--wait", "--poll", "2"]) == 0
    assert statuses(path)[0].status == "completed"


def test_cancel_withdraws_queued_jobs_from_the_scheduler(tmp_path, capsys):
    profile = tmp_path / "held-profile.yaml"  # submitted on hold: they stay queued until cancelled
    profile.write_text(yaml.safe_dump({"cpus_per_task": 1, "mem_gb": 1, "additional": {"hold": True}}))
    path = write_spec(tmp_path, "held", {"epochs": 1}, variants={"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "slurm", "--profile", str(profile)]) == 0
    assert [s.status for s in statuses(path)] == ["pending", "pending"]
    (sub,) = read_submissions(tmp_path / "out", "held")
    capsys.readouterr()

    assert main(["cancel", str(path)]) == 0
    assert "cancelled 2 run(s)" in capsys.readouterr().out

    def still_queued() -> set[str]:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
        return set(sub.jobs.values()) & set(listed.split())

    wait_until(lambda: not still_queued(), 30, "squeue to drop the cancelled jobs")
    assert [s.status for s in statuses(path)] == ["missing", "missing"]  # nothing ran: resubmit freely


def _unanswered_controller(tmp_path, monkeypatch) -> None:
    """Point the real SLURM client at a controller port nobody listens on (a downed slurmctld)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        f"ClusterName=down\nSlurmctldHost=localhost\nSlurmctldPort={port}\nAuthType=auth/munge\n"
        "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=debug Nodes=localhost Default=YES State=UP\n"
    )
    monkeypatch.setenv("SLURM_CONF", str(conf))


def test_a_controller_that_does_not_answer_is_said_not_guessed(tmp_path, monkeypatch, caplog, capsys):
    """sbatch on PATH but no controller answering: `--executor auto` picked SLURM (and failed); a queued job
    the scheduler could not be asked about showed as "missing" with advice to resubmit it."""
    from lcbench.core.errors import ConfigError
    from lcbench.execution.executors import executor_for_launch
    from lcbench.execution.submissions import LaunchOptions, Submission, record_submission

    _unanswered_controller(tmp_path, monkeypatch)
    assert executor_for_launch(LaunchOptions("auto")).name == "local"
    assert "no SLURM controller answers" in caplog.text and "local queue" in caplog.text
    with pytest.raises(ConfigError, match="no SLURM controller answers.*--executor local"):
        executor_for_launch(LaunchOptions("slurm"))

    path = write_spec(tmp_path, "down", {"epochs": 1}, variants={"ft": {"method": "finetune"}})
    plan = plan_sweep(path)
    (pretrain,) = plan.stage("pretrain")
    record_submission(
        plan.output_root, plan.name, Submission("slurm", str(tmp_path), {pretrain.run_id: "77_0"})
    )
    by_id = {s.run.run_id: s for s in statuses(path)}
    assert by_id[pretrain.run_id].status == "unknown"
    assert "scheduler not answering" in by_id[pretrain.run_id].detail
    assert {s.status for rid, s in by_id.items() if rid != pretrain.run_id} == {"missing"}  # never submitted

    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "do not resubmit them" in out and "1 unknown" in out
    assert main(["launch", str(path), "--executor", "local"]) == 2  # it may still be queued: refused
    assert "is unknown" in capsys.readouterr().err


def test_a_ddp_run_is_one_job_of_two_tasks(tmp_path):
    path = write_spec(tmp_path, "ddp", {"model": "digits_mlp", "epochs": 1, "stage": "pretrain", "nproc": 2})
    assert main(["launch", str(path), "--executor", "slurm", "--profile", "local"]) == 0
    (sub,) = read_submissions(tmp_path / "out", "ddp")
    (job,) = sub.jobs.values()
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "NumTasks=2" in shown  # one job, two tasks: the ranks
    assert main(["status", str(path), "--wait", "--poll", "2"]) == 0
    (run,) = plan_sweep(path).runs
    record = RunDir(tmp_path / "out", run.run_id).result()
    assert record["status"] == "completed" and record["final"]["samples"] == 360  # held-out set once
    env = json.loads((tmp_path / "out" / run.run_id / "env.json").read_text())
    assert env["scheduler"]["SLURM_JOB_ID"]
    logs = sorted(p.name for p in Path(sub.folder).glob(f"{job}_*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # submitit's log of each task
