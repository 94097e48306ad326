import hashlib
import importlib.metadata
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lcbench.core.errors import TrainingDiverged
from lcbench.core.store import RunDir
from lcbench.training import examples
from lcbench.training.evaluation import evaluate
from lcbench.training.identity import run_id
from lcbench.training.optim import lr_factor
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from lcbench.training.tasks import TASKS
from lcbench.zoo.data import load_data
from lcbench.zoo.loaders import make_loader
from tests.conftest import REPO, fast_overrides

VOLATILE = {"epoch_seconds"}  # wall times differ between runs; everything else must not


def epoch_metrics(root, cfg):
    events = RunDir(root, run_id(cfg)).events("epoch")
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]


def test_lr_schedule_warmup_then_cosine():
    cfg = make_config({}, ["epochs=10", "warmup_epochs=2", "lr_schedule=cosine"])
    assert lr_factor(0, cfg, 10) == pytest.approx(0.05)
    assert lr_factor(19, cfg, 10) == pytest.approx(1.0)
    assert lr_factor(20, cfg, 10) == pytest.approx(1.0)
    assert lr_factor(60, cfg, 10) == pytest.approx(0.5)
    assert lr_factor(100, cfg, 10) == pytest.approx(0.0, abs=1e-12)
    step = make_config(
        {}, ["epochs=10", "warmup_epochs=0", "lr_schedule=step", "step_epochs=3", "step_gamma=0.5"]
    )
    assert [lr_factor(e * 10, step, 10) for e in (0, 3, 6)] == [1.0, 0.5, 0.25]
    cycles = make_config({}, ["epochs=10", "warmup_epochs=0", "lr_cycle_epochs=5"])
    assert lr_factor(0, cycles, 10) == lr_factor(50, cycles, 10) == 1.0
    assert lr_factor(25, cycles, 10) == pytest.approx(0.5) and lr_factor(49, cycles, 10) < 0.01


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    a = make_config({}, fast_overrides(tmp_path / "a", model="digits_mlp"))
    b = make_config({}, fast_overrides(tmp_path / "b", model="digits_mlp"))
    c = make_config({}, fast_overrides(tmp_path / "c", model="digits_mlp", seed=1))
    ra, rb, rc = (
        execute(a, progress_bar=False),
        execute(b, progress_bar=False),
        execute(c, progress_bar=False),
    )
    assert epoch_metrics(tmp_path / "a", a) == epoch_metrics(tmp_path / "b", b)
    assert ra["final"]["top1"] == rb["final"]["top1"] and ra["final"]["loss"] == rb["final"]["loss"]
    assert epoch_metrics(tmp_path / "a", a) != epoch_metrics(tmp_path / "c", c)
    assert rc["run_id"] != ra["run_id"]


def test_compress_results_do_not_depend_on_whether_its_pretrain_ran_in_the_same_process(tmp_path):
    from lcbench.core.config import pretrain_config

    args = ["stage=compress", "method=finetune", "pretrain.epochs=1"]
    together = make_config({}, [*args, *fast_overrides(tmp_path / "a", epochs=2)])
    separate = make_config({}, [*args, *fast_overrides(tmp_path / "b", epochs=2)])
    first = execute(together, progress_bar=False)  # runs its pretrain first, in this process
    execute(pretrain_config(separate), progress_bar=False)
    second = execute(separate, progress_bar=False)  # finds its pretrain done
    assert epoch_metrics(tmp_path / "a", together) == epoch_metrics(tmp_path / "b", separate)
    assert first["final"]["loss"] == second["final"]["loss"]
    # the compress run's folder holds its original's per-example outcomes: its pretrain run's own
    pre = RunDir(tmp_path / "a", first["pretrain_run_id"])
    kept = examples.read(RunDir(tmp_path / "a", first["run_id"]).path, first["examples"])
    original = examples.read(pre.path, pre.result()["examples"])["final"]
    assert sorted(kept) == ["final", "original"]
    assert all(np.array_equal(kept["original"][k], original[k]) for k in original)


def test_completed_run_is_not_run_again_unless_forced(tmp_path):
    cfg = make_config({}, fast_overrides(tmp_path, epochs=1))
    first = execute(cfg, progress_bar=False)
    run = RunDir(tmp_path, first["run_id"])
    stamp = run.result_path.stat().st_mtime_ns
    assert execute(cfg, progress_bar=False) == first and run.result_path.stat().st_mtime_ns == stamp
    execute(cfg, force=True, progress_bar=False)
    assert run.result_path.stat().st_mtime_ns != stamp
    assert len(run.events("epoch")) == 1  # the forced rerun started a fresh log


def test_record_is_complete(tmp_path):
    cfg = make_config({}, fast_overrides(tmp_path, model="digits_vgg", epochs=1))
    result = execute(cfg, progress_bar=False)
    run = RunDir(tmp_path, result["run_id"])
    for path in (run.config_path, run.env_path, run.metrics_path, run.checkpoint_path, run.model_path):
        assert path.exists(), path
    env = json.loads(run.env_path.read_text())
    assert env["versions"]["torch"] == importlib.metadata.version("torch")
    assert "commit" in env["git"] and "dirty" in env["git"] and env["host"] and env["torch_threads"] == 1
    final = result["final"]
    for key in (
        "top1",
        "top5",
        "params_dense",
        "params_nonzero",
        "gmacs",
        "gmacs_effective",
        "depth",
        "latency_ms_b1",
        "latency_ms_b8",
    ):
        assert final[key] is not None and final[key] >= 0, key
    assert result["cost"]["samples_seen"] == 1437 and result["cost"]["train_flops"] > 0
    assert math.isclose(result["cost"]["train_flops"], 3 * 2e9 * final["gmacs"] * 1437, rel_tol=1e-6)
    reloaded = load_model(run.model_path)  # the saved final model reproduces the recorded accuracy
    data = load_data("digits", "", None)
    loader = make_loader(data.val, 256, False, 0)
    assert evaluate(reloaded, loader, torch.device("cpu"))["top1"] == final["top1"]
    # every held-out example's outcome, with the file's hash in the record; the metrics follow from it
    kept = result["examples"]
    assert kept["evaluations"] == ["final"] and kept["samples"] == {"final": 360}
    assert hashlib.sha256((run.path / "examples.npz").read_bytes()).hexdigest() == kept["sha256"]
    outcomes = examples.read(run.path, kept)["final"]
    assert outcomes["target"].tolist() == data.val.tensors[1].tolist()
    assert TASKS["classification"].metrics_of(outcomes)["top1"] == final["top1"]
    assert env["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability() and env["cpu"]["model"]


def test_nan_loss_fails_the_run_with_a_clear_message(tmp_path):
    cfg = make_config({}, fast_overrides(tmp_path, optimizer="sgd", lr=10, model="digits_mlp"))
    with pytest.raises(TrainingDiverged, match="the loss became .* lower lr"):
        execute(cfg, progress_bar=False)
    result = RunDir(tmp_path, run_id(cfg)).result()
    assert result["status"] == "failed" and result["error"]["type"] == "TrainingDiverged"


@pytest.mark.serial
@pytest.mark.slow
def test_sigkill_mid_run_then_restart_resumes_to_identical_metrics(tmp_path):
    args = fast_overrides(tmp_path / "killed", model="digits_mlp", epochs=8, batch_size=16)
    cfg = make_config({}, args)
    run = RunDir(tmp_path / "killed", run_id(cfg))
    cmd = [sys.executable, "-m", "lcbench", "run", *args, "--no-progress"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(run.events("epoch")) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(run.events("epoch"))
    assert 3 <= killed_at < 8, "the kill must land mid-run"
    assert run.result() is None  # no record was marked completed
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    assert any(e["event"] == "resume" for e in run.events())

    clean_cfg = make_config(
        {}, fast_overrides(tmp_path / "clean", model="digits_mlp", epochs=8, batch_size=16)
    )
    clean = execute(clean_cfg, progress_bar=False)
    assert epoch_metrics(tmp_path / "killed", cfg) == epoch_metrics(tmp_path / "clean", clean_cfg)
    assert run.result()["final"]["top1"] == clean["final"]["top1"]
    assert run.result()["final"]["loss"] == clean["final"]["loss"]
    # the per-example record of the resumed run is the uninterrupted run's, byte for byte
    assert run.result()["examples"]["sha256"] == clean["examples"]["sha256"]


def test_every_epoch_records_cumulative_training_flops(tmp_path):
    cfg = make_config({}, fast_overrides(tmp_path, model="digits_mlp", epochs=3))
    result = execute(cfg, progress_bar=False)
    epochs = RunDir(tmp_path, result["run_id"]).events("epoch")
    flops = [e["train_flops"] for e in epochs]
    assert len(flops) == 3 and flops == sorted(flops) and flops[0] > 0
    assert flops[-1] == pytest.approx(result["cost"]["train_flops"])
    assert flops[0] == pytest.approx(flops[-1] / 3)


def test_a_restart_without_a_checkpoint_drops_the_earlier_attempts_events(tmp_path):
    """Stale epoch events made `lcbench replay` report DIFFERENT for a replay that matched."""
    from lcbench.training.replay import replay_run

    cfg = make_config({}, fast_overrides(tmp_path, epochs=2))
    execute(cfg, progress_bar=False)
    run = RunDir(tmp_path, run_id(cfg))
    run.checkpoint_path.unlink()  # an attempt that left events but no checkpoint
    run.result_path.unlink()
    execute(cfg, progress_bar=False)
    assert [e["epoch"] for e in run.events("epoch")] == [1, 2]
    assert [e["event"] for e in run.events()][0] == "initial"
    assert replay_run(run.path)["identical"]


def test_progress_is_one_line_per_epoch_and_the_bar_uses_tqdms_own_rate(tmp_path, capsys, caplog):
    """Off a terminal nothing was printed between start and end; the bar's samples_s was ~45x off."""
    import logging

    caplog.set_level(logging.INFO, logger="lcbench")
    cfg = make_config({}, fast_overrides(tmp_path, epochs=2))
    execute(cfg, progress_bar=True)
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert [line.split(" epoch ")[1].split()[0] for line in lines] == ["1/2", "2/2"]
    assert all("val top-1 " in line and "train loss " in line and "ETA " in line for line in lines)
    err = capsys.readouterr().err
    assert "img/s" in err and "samples_s" not in err
