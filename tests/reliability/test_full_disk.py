"""A full disk (ENOSPC) or an unwritable run folder while a checkpoint is written leaves the previous
checkpoint valid and no temp file behind; the run fails with the error, and resumes once space is back."""

import errno
import os

import pytest
import torch

from lcbench import store
from lcbench.config import make_config, run_id
from lcbench.pipeline import execute
from lcbench.store import RunDir
from tests.conftest import fast_overrides


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    cfg = make_config({}, fast_overrides(tmp_path, model="digits_mlp", epochs=4))
    run = RunDir(tmp_path, run_id(cfg))
    real_save = torch.save
    saves = {"n": 0}

    def fill_disk_on_third_save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:  # the third epoch's checkpoint: partly written, then the disk is full
            with open(f, "wb") as partial:
                partial.write(b"\x00" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(store.torch, "save", fill_disk_on_third_save)
    with pytest.raises(OSError, match="No space left"):
        execute(cfg, progress_bar=False)
    assert run.result()["status"] == "failed" and "No space left" in run.result()["error"]["message"]
    previous = torch.load(run.checkpoint_path, weights_only=True)  # still the second epoch's, intact
    assert previous["progress"]["epoch"] == 2
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(store.torch, "save", real_save)  # space is back: the run resumes and completes
    result = execute(cfg, progress_bar=False)
    assert result["status"] == "completed" and result["cost"]["epochs"] == 4
    assert run.events("resume")[0]["epoch"] == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_run_folder_during_a_checkpoint(tmp_path):
    cfg = make_config({}, fast_overrides(tmp_path, model="digits_mlp", epochs=1))
    execute(cfg, progress_bar=False)
    run = RunDir(tmp_path, run_id(cfg))
    before = run.checkpoint_path.read_bytes()
    os.chmod(run.path, 0o500)
    try:
        with pytest.raises(PermissionError):
            store.atomic_torch_save(run.checkpoint_path, {"x": 1})
    finally:
        os.chmod(run.path, 0o700)
    assert run.checkpoint_path.read_bytes() == before


def test_run_folder_that_became_unwritable_keeps_the_checkpoint(tmp_path, monkeypatch):
    """The same as a read-only folder (simulated, since root may write anywhere): creating the temp file
    fails, and the checkpoint on disk is untouched."""
    cfg = make_config({}, fast_overrides(tmp_path, model="digits_mlp", epochs=1))
    execute(cfg, progress_bar=False)
    run = RunDir(tmp_path, run_id(cfg))
    before = run.checkpoint_path.read_bytes()

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(store.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError):
        store.atomic_torch_save(run.checkpoint_path, {"x": 1})
    assert run.checkpoint_path.read_bytes() == before
