"""W&B tracking with real wandb in offline mode: its files are read back and compared with the record."""

import pytest

from lcbench.config import make_config, run_id
from lcbench.pipeline import execute
from lcbench.store import RunDir
from lcbench.tracking import resolve_mode
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
    logged = [row for row in info["history"] if "val_top1" in row]
    assert [row["val_top1"] for row in logged] == [e["val_top1"] for e in epochs]
    assert [row["_step"] for row in logged] == [e["step"] for e in epochs]
    assert info["summary"]["top1"] == result["final"]["top1"]
    assert info["summary"]["compression"] == result["compression"]
    assert info["summary"]["latency_ms_b1"] == result["final"]["latency_ms_b1"]


def test_disabled_tracking_writes_no_wandb_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = make_config({}, fast_overrides(tmp_path, epochs=1, **{"tracking.mode": "offline"}))
    result = execute(cfg, progress_bar=False)
    assert result["wandb_id"] is None
    assert not (tmp_path / run_id(cfg) / "wandb").exists()
