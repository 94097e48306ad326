"""W&B tracking with real wandb in offline mode: its files are read back and compared with the record."""

import pytest

from lcbench.core.record import IN_RUN_TIMINGS, RunRecord
from lcbench.core.store import RunDir
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from lcbench.training.tracking import resolve_mode
from tests import wandb_files
from tests.conftest import fast_overrides


@pytest.fixture
def no_wandb_account(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_online_without_an_api_key_falls_back_to_offline(no_wandb_account, monkeypatch):
    assert resolve_mode("online") == "offline"
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment may switch tracking off, never on
    assert resolve_mode("online") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("disabled") == "disabled"


def test_offline_run_holds_config_metrics_and_summary(no_wandb_account, tmp_path):
    overrides = fast_overrides(
        tmp_path / "out", epochs=3, **{"tracking.mode": "online", "tracking.group": "sweepA"}
    )
    cfg = make_config({}, overrides)
    result = execute(cfg, progress_bar=False)  # online requested, no key: offline, and no prompt
    rid = run_id(cfg)
    assert result["wandb_id"] == rid  # the W&B id is the run id, kept in the record

    (log,) = (tmp_path / "out" / rid / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_files.run_info(log)
    assert (info["id"], info["group"], info["job_type"]) == (rid, "sweepA", "pretrain")
    assert info["tags"] == ["none", "digits_mlp", "digits"]
    assert info["config"]["lr"] == cfg.lr and info["config"]["run_id"] == rid

    epochs = RunDir(tmp_path / "out", rid).events("epoch")
    logged = [row for row in info["history"] if "val/top1" in row]  # dashboard namespaces
    assert [row["val/top1"] for row in logged] == [e["val_top1"] for e in epochs]
    assert [row["train/loss"] for row in logged] == [e["train_loss"] for e in epochs]
    assert [row["cost/train_flops"] for row in logged] == [e["train_flops"] for e in epochs]
    assert [row["_step"] for row in logged] == [e["step"] for e in epochs]
    assert info["summary"]["top1"] == result["final"]["top1"]
    assert info["summary"]["compression"] == result["compression"]
    # timed in the run, beside other runs: in the record, never in the summary (the quiet pass's are real)
    assert not {"latency_ms_b1", "speedup_b1"} & set(info["summary"])
    assert info["summary"]["params"] == result["final"]["params_nonzero"]
    assert info["summary"]["gmacs_effective"] == result["final"]["gmacs_effective"]


def test_compress_run_that_trains_its_missing_pretrain_first_tracks_both(no_wandb_account, tmp_path):
    """The pretrain's W&B run used to finish the compress run's, whose next log raised UsageError."""
    out = tmp_path / "out"
    cfg = make_config(
        {},
        fast_overrides(
            out,
            epochs=2,
            **{
                "stage": "compress",
                "method": "layercollapse",
                "k": 1,
                "model": "digits_vit",
                "allow_unfolded": True,
            },
            **{"tracking.mode": "offline", "pretrain.epochs": 1},
        ),
    )
    result = execute(cfg, progress_bar=False)
    assert result["status"] == "completed"
    rid, pre_id = run_id(cfg), result["pretrain_run_id"]
    (log,) = (out / rid / "wandb").glob("offline-run-*/run-*.wandb")  # one attempt, one W&B folder
    (pre_log,) = (out / pre_id / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_files.run_info(log)
    assert info["id"] == rid and wandb_files.run_info(pre_log)["id"] == pre_id
    assert len([row for row in info["history"] if "val/top1" in row]) == 2
    assert any(key.startswith("method/slope/") for row in info["history"] for key in row)
    assert info["summary"]["pretrain_run_id"] == pre_id
    assert info["summary"]["mlps_folded"] == len(result["method_report"]["folded"])
    assert info["summary"]["top1"] == result["final"]["top1"]
    # every summary metric the run has, but the timings taken in the run
    assert set(RunRecord(result).summary()) - set(IN_RUN_TIMINGS) <= set(info["summary"])


def test_a_replay_is_its_own_wandb_run(no_wandb_account, tmp_path):
    from lcbench.training.replay import replay_run

    cfg = make_config({}, fast_overrides(tmp_path / "out", epochs=1, **{"tracking.mode": "offline"}))
    execute(cfg, progress_bar=False)
    rid = run_id(cfg)
    report = replay_run(tmp_path / "out" / rid)
    assert report["identical"]
    (log,) = (tmp_path / "out" / rid / "replay" / rid / "wandb").glob("offline-run-*/run-*.wandb")
    info = wandb_files.run_info(log)
    assert info["id"] != rid and info["id"].startswith(f"{rid}-replay-")
    assert "replay" in info["tags"]


def test_disabled_tracking_writes_no_wandb_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = make_config({}, fast_overrides(tmp_path, epochs=1, **{"tracking.mode": "offline"}))
    result = execute(cfg, progress_bar=False)
    assert result["wandb_id"] is None
    assert not (tmp_path / run_id(cfg) / "wandb").exists()


def test_a_sweeps_runs_are_named_by_variant_level_and_seed_and_wandb_dir_is_honoured(
    no_wandb_account, tmp_path, monkeypatch
):
    from lcbench.execution.sweep import plan_sweep

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: tiny\n"
        "base: {stage: compress, dataset: digits, model: digits_vit, epochs: 1, threads: 1,"
        " latency_repeats: 1, tracking: {mode: offline}, pretrain: {epochs: 1}}\n"
        "grid: {}\nseeds: [3]\nlevels: [2]\n"
        "variants: {prune: {method: magnitude_pruning, match_collapse: '{level}'}}\n"
    )
    plan = plan_sweep(spec, [f"output_root={tmp_path / 'out'}"])
    (run,) = plan.stage("compress")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-here"))
    execute(run.cfg, progress_bar=False)
    logs = {wandb_files.run_info(p)["id"]: p for p in (tmp_path / "wandb-here").glob("**/run-*.wandb")}
    assert set(logs) == {run.run_id, run.depends_on}  # both runs' files where WANDB_DIR says
    info = wandb_files.run_info(logs[run.run_id])
    assert info["name"] == "tiny/prune/digits_vit/L2/s3" and info["group"] == "tiny"
    assert (info["config"]["sweep"], info["config"]["variant"], info["config"]["level"]) == (
        "tiny",
        "prune",
        "2",
    )
    assert info["config"]["seed"] == 3
    original = wandb_files.run_info(logs[run.depends_on])
    assert original["name"] == "tiny/original/digits_vit/s3" and original["config"]["variant"] == ""
    assert not (tmp_path / "out" / run.run_id / "wandb").exists()
