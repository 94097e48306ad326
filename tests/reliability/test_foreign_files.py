"""Checkpoints and model files are bound to their run: a file copied into another run's folder is
refused with a message naming both runs, never resumed or trained from silently."""

import shutil

import pytest
import torch

from lcbench.cli import main
from lcbench.core.config import pretrain_config
from lcbench.core.errors import CheckpointError
from lcbench.core.integrity import file_sha256
from lcbench.core.store import RunDir, atomic_write_json
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from tests.conftest import fast_overrides


def test_a_checkpoint_of_another_seed_is_refused_naming_both_runs(tmp_path, capsys):
    """It was resumed silently: seed 0's record then held seed 1's model."""
    seed1 = make_config({}, fast_overrides(tmp_path, epochs=2, seed=1))
    execute(seed1, progress_bar=False)
    seed0 = make_config({}, fast_overrides(tmp_path, epochs=2, seed=0))
    target = RunDir(tmp_path, run_id(seed0))
    target.create()
    shutil.copy(RunDir(tmp_path, run_id(seed1)).checkpoint_path, target.checkpoint_path)
    assert main(["run", *fast_overrides(tmp_path, epochs=2, seed=0), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"written by run {run_id(seed1)}, not by run {run_id(seed0)}" in err and "Traceback" not in err
    assert target.result()["status"] == "failed"


def test_a_checkpoint_without_a_run_id_that_does_not_fit_is_a_clear_error(tmp_path):
    """A checkpoint of another model (older files carry no run id) was a KeyError or a block error."""
    mixer = make_config({}, fast_overrides(tmp_path, epochs=1, model="digits_mixer"))
    execute(mixer, progress_bar=False)
    state = torch.load(RunDir(tmp_path, run_id(mixer)).checkpoint_path, weights_only=True)
    del state["run_id"]
    mlp = make_config({}, fast_overrides(tmp_path, epochs=1, model="digits_mlp"))
    target = RunDir(tmp_path, run_id(mlp))
    target.create()
    torch.save(state, target.checkpoint_path)
    with pytest.raises(CheckpointError, match=f"does not fit run {run_id(mlp)}.*delete it"):
        execute(mlp, progress_bar=False)


def test_a_planted_pretrain_model_is_refused_by_the_compress_run(tmp_path):
    """A model.pt from another run in a pretrain folder would have poisoned every compress run."""
    lc = {"stage": "compress", "method": "layercollapse", "k": 1, "allow_unfolded": True}
    compress = make_config({}, fast_overrides(tmp_path, epochs=1, **lc, **{"pretrain.epochs": 1}))
    other = make_config({}, fast_overrides(tmp_path, epochs=2))  # another pretrain run of the same model
    execute(other, progress_bar=False)
    pre = pretrain_config(compress)
    execute(pre, progress_bar=False)
    pre_run = RunDir(tmp_path, run_id(pre))
    recorded = pre_run.result()["model_file"]["sha256"]
    shutil.copy(RunDir(tmp_path, run_id(other)).model_path, pre_run.model_path)
    assert not pre_run.is_completed()  # the record's SHA-256 catches it: the original is redone first
    execute(compress, progress_bar=False)
    assert file_sha256(pre_run.model_path) == recorded and pre_run.is_completed()
    shutil.copy(RunDir(tmp_path, run_id(other)).model_path, pre_run.model_path)
    record = pre_run.result()
    del record["model_file"]  # a record without size and hash (older lcbench): the file's run id catches it
    atomic_write_json(pre_run.result_path, record)
    with pytest.raises(CheckpointError, match=f"written by run {run_id(other)}, not by run {run_id(pre)}"):
        execute(compress, force=True, progress_bar=False)


def test_temp_files_of_a_killed_write_are_removed_when_the_run_starts(tmp_path):
    """A write killed mid-way left its `.tmp` file forever (a full checkpoint each time)."""
    cfg = make_config({}, fast_overrides(tmp_path, epochs=1))
    run = RunDir(tmp_path, run_id(cfg))
    run.create()
    stale = run.path / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"\0" * 4096)
    keep = run.path / "notes.tmp"  # not one of lcbench's temp files
    keep.write_text("mine")
    execute(cfg, progress_bar=False)
    assert not stale.exists() and keep.exists()
    assert not list(run.path.glob(".*.tmp"))
