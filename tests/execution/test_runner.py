"""`lcbench launch` with the local queue, `lcbench status`, `--only-failed`, and the runner's bad inputs."""

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from lcbench.cli import main
from lcbench.core.errors import ConfigError
from lcbench.execution.local_queue import plan_slots, read_queue, supervisor_alive
from lcbench.execution.slurm import load_profile
from lcbench.execution.status import sweep_status
from lcbench.execution.submissions import read_submissions
from lcbench.execution.sweep import plan_sweep
from tests.conftest import wait_until


def digits_sweep(tmp_path, variants, **base):
    spec = {
        "name": "t",
        "base": {
            "dataset": "digits",
            "model": "digits_mlp",
            "epochs": 1,
            "warmup_epochs": 0,
            "threads": 1,  # (every executor keeps a run's threads: one core each, as the queue used to give)
            "latency_repeats": 2,
            "latency_batch": 8,
            "output_root": str(tmp_path / "out"),
            "pretrain": {"epochs": 1, "warmup_epochs": 0},
            **base,
        },
        "variants": variants,
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def by_status(path):
    return {s.run.variant or "pretrain": (s.status, s.detail) for s in sweep_status(plan_sweep(path))}


def test_local_queue_runs_a_sweep_in_the_background(tmp_path, capsys):
    path = digits_sweep(
        tmp_path,
        {
            "ft": {"method": "finetune"},
            "lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True},
            # more than the prunable weights can give: this run fails at its start, the others go on
            "prune": {"method": "magnitude_pruning", "target_compression": 1000.0},
        },
    )
    assert main(["launch", str(path), "--executor", "local", "--max-parallel", "2", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 runs submitted to local" in out
    # launch returned at once: the runs are queued behind their pretrain
    early = by_status(path)
    assert {s for s, _ in early.values()} <= {"pending", "running", "completed"}
    assert early["ft"][0] in ("pending", "running")
    # a second plain launch would start the same runs twice
    assert main(["launch", str(path), "--executor", "local"]) == 2
    assert "still queued or running" in capsys.readouterr().err

    assert main(["status", str(path), "--wait", "--poll", "0.5"]) == 1  # 1: a run failed
    progress = [line for line in capsys.readouterr().err.splitlines() if " done, " in line]
    assert progress and progress[-1] == "sweep t: 4/4 done, 0 running, 1 failed"  # printed as counts change
    assert len(progress) == len(set(progress))
    status = by_status(path)
    assert status["pretrain"][0] == status["ft"][0] == status["lc"][0] == "completed"
    assert status["prune"][0] == "failed" and "target_compression" in status["prune"][1]

    (sub,) = read_submissions(tmp_path / "out", "t")
    queue = read_queue(sub.folder)
    supervisor_log = (Path(sub.folder) / "supervisor.log").read_text()
    assert "RuntimeWarning" not in supervisor_log  # was one runpy warning per run
    for entry in queue["runs"]:  # each run's start and end, with its verdict
        assert f"start {entry['run_id']}" in supervisor_log and f"end   {entry['run_id']}" in supervisor_log
    assert "FAILED (exit 2" in supervisor_log and supervisor_log.count(" ok after ") == 3
    ft_id = next(s.run.run_id for s in sweep_status(plan_sweep(path)) if s.run.variant == "ft")
    ft_log = (Path(sub.folder) / "logs" / f"{ft_id}.log").read_text()  # not a terminal
    assert "epoch 1/1  lr " in ft_log and "val top-1 " in ft_log and "ETA " in ft_log
    assert queue["slots"] == {"max_parallel": 2, "gpus": [], "threads": 1, "cpu_only": False}
    spans = sorted((r["started"], r["ended"]) for r in queue["runs"])
    overlap = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert overlap <= 2
    pretrain_end = spans[0][1]
    assert all(start >= pretrain_end for start, _ in spans[1:])  # compress runs waited for the pretrain
    assert (
        json.loads((tmp_path / "out" / queue["runs"][1]["run_id"] / "env.json").read_text())["torch_threads"]
        == 1
    )

    # --only-failed resubmits the failed run and nothing else
    capsys.readouterr()
    assert main(["launch", str(path), "--executor", "local", "--only-failed", "--wait", "--poll", "0.5"]) == 1
    subs = read_submissions(tmp_path / "out", "t")
    failed_id = next(s.run.run_id for s in sweep_status(plan_sweep(path)) if s.run.variant == "prune")
    assert list(subs[-1].jobs) == [failed_id]


def test_a_compress_run_whose_pretrain_failed_fails_without_training(tmp_path):
    # the pretrain's weights file is missing: its compress run must not train the original itself
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    spec = yaml.safe_load(path.read_text())
    spec["base"]["pretrain"]["pretrained"] = str(tmp_path / "missing.safetensors")
    path.write_text(yaml.safe_dump(spec))
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.5"]) == 1
    status = by_status(path)
    assert status["pretrain"][0] == "failed" and "missing.safetensors" in status["pretrain"][1]
    assert status["ft"][0] == "failed" and "DependencyError" in status["ft"][1]
    assert "--only-failed" in status["ft"][1]


def test_everything_completed_means_nothing_to_submit(tmp_path, capsys):
    path = digits_sweep(tmp_path, {})
    spec = yaml.safe_load(path.read_text())
    spec["base"]["stage"] = "pretrain"
    path.write_text(yaml.safe_dump(spec))
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    assert main(["launch", str(path), "--executor", "local"]) == 0
    assert "nothing to submit" in capsys.readouterr().err


def test_gpu_ids_must_exist():
    with pytest.raises(ConfigError, match=r"GPU id\(s\) \[7\] do not exist"):
        plan_slots(None, "7", None)
    with pytest.raises(ConfigError, match="separated by commas"):
        plan_slots(None, "a,b", None)
    with pytest.raises(ConfigError, match="at least 1"):
        plan_slots(0, None, None)


def test_cpu_threads_are_shared_between_parallel_runs():
    slots = plan_slots(3, None, 8)
    assert (slots.max_parallel, slots.threads_per_run) == (3, 2)


def test_slurm_executor_without_sbatch_suggests_local(tmp_path, monkeypatch, capsys):
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    assert main(["launch", str(path), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "sbatch" in err and "--executor local" in err
    assert not (tmp_path / "out").exists()


def test_profiles_are_validated(tmp_path):
    assert load_profile("local").cpus_per_task == 1
    with pytest.raises(ConfigError, match="profile 'nope' does not exist.*available: .*gpu"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: x\ngpu: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_profile(str(bad))


def test_unknown_executor_is_refused(tmp_path, capsys):
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "cloud"]) == 2
    assert "--executor 'cloud': choose one of local, slurm, auto" in capsys.readouterr().err


def test_follow_up_commands_keep_the_users_overrides(tmp_path, capsys):
    """Without them, following the printed command looks at another output root: every run "missing"."""
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    other = tmp_path / "elsewhere out"
    assert main(["status", str(path), f"output_root={other}"]) == 0
    out = capsys.readouterr().out
    assert f"`lcbench launch {path} 'output_root={other}' --only-failed`" in out


def test_a_submission_refused_by_sbatch_is_a_clean_error(tmp_path, capsys, monkeypatch):
    """It was a submitit traceback with exit 1 and a half-made submission folder."""
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\n"
        "exit 1\n"
    )
    (binary / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at here is UP'\n")  # it answers
    (binary / "srun").write_text("#!/bin/sh\nexit 1\n")  # (submitit looks for it; never called here)
    for tool in ("sbatch", "scontrol", "srun"):
        (binary / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary}:{os.environ['PATH']}")
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "sbatch refused the t-pretrain array" in err and "Invalid partition name specified" in err
    assert "Traceback" not in err
    sweeps = tmp_path / "out" / ".sweeps" / "t"
    assert not sweeps.exists() or not [p for p in sweeps.iterdir() if p.is_dir()]  # no half-made submission


def test_an_sbatch_without_srun_names_the_missing_client(tmp_path, capsys, monkeypatch):
    """submitit raised "Could not detect srun" and launch ended in an internal error (exit 70); the test
    passed only where another test had installed SLURM."""
    binary = tmp_path / "bin"
    binary.mkdir()
    for tool in ("sbatch", "scontrol"):
        (binary / tool).write_text("#!/bin/sh\necho 'Slurmctld(primary) at here is UP'\n")
        (binary / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(binary))  # whatever SLURM this machine has, no srun here
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "`srun` is not on PATH" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.serial
@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_cancel_withdraws_a_local_queue_and_its_runs_can_be_resubmitted(tmp_path, capsys, sigint):
    """`ignored`: launched from a shell that ignores SIGINT (a script's background job), which every child
    inherited: the runs never answered the supervisor's SIGINT and ran to their end."""
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}}, epochs=500, pretrain={"epochs": 500})
    previous = signal.signal(
        signal.SIGINT, signal.SIG_IGN if sigint == "ignored" else signal.default_int_handler
    )
    try:
        assert main(["launch", str(path), "--executor", "local", "--threads", "1"]) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    capsys.readouterr()
    wait_until(lambda: by_status(path)["pretrain"][0] == "running", 60, "the pretrain run to start")
    (sub,) = read_submissions(tmp_path / "out", "t")
    supervisor = read_queue(sub.folder)["supervisor_pid"]

    assert main(["cancel", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cancelled 2 run(s)" in out and "--only-failed" in out
    assert not supervisor_alive(supervisor)
    status = by_status(path)
    assert status["pretrain"][0] in ("stopped", "missing") and status["ft"][0] == "missing"
    if status["pretrain"][0] == "stopped":  # (it was a KeyboardInterrupt failure)
        assert "interrupted by SIGINT (`lcbench cancel` or Ctrl-C)" in status["pretrain"][1]
    assert main(["cancel", str(path)]) == 0
    assert "nothing to cancel" in capsys.readouterr().err

    assert main(["launch", str(path), "--executor", "local", "--threads", "1"]) == 0  # nothing held now
    assert main(["cancel", str(path)]) == 0
    assert "cancelled 2 run(s)" in capsys.readouterr().out
