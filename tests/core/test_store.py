import os
import stat

import pytest
import torch

from lcbench.core.errors import LcbenchError, RunLockedError
from lcbench.core.store import RunDir, atomic_torch_save, atomic_write_json, load_records, records_table


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save(path, {"epoch": 1})

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        atomic_torch_save(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_metrics_log_truncation_and_records(tmp_path):
    run = RunDir(tmp_path, "abc")
    run.create()
    run.log("epoch", epoch=1, val_top1=50.0)
    size = run.metrics_size()
    run.log("epoch", epoch=2, val_top1=float("nan"))
    assert [e["epoch"] for e in run.events("epoch")] == [1, 2]
    assert run.events("epoch")[1]["val_top1"] is None  # NaN is written as null (strict JSON)
    run.truncate_metrics(size)
    assert [e["epoch"] for e in run.events()] == [1]
    atomic_write_json(run.result_path, {"run_id": "abc", "status": "completed", "final": {"top1": 1.0}})
    assert run.is_completed()
    table = records_table(tmp_path)
    assert table.loc[0, "final.top1"] == 1.0 and table.loc[0, "status"] == "completed"


def test_a_run_folder_without_result_is_incomplete_or_running(tmp_path):
    run = RunDir(tmp_path, "r1")
    run.create()
    run.config_path.write_text("model: digits_mlp\n")
    run.lock()
    assert load_records(tmp_path)[0]["status"] == "running"
    with pytest.raises(RunLockedError):
        RunDir(tmp_path, "r1").lock()
    run.release()
    assert load_records(tmp_path)[0]["status"] == "incomplete"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_output_root_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(LcbenchError, match="output_root"):
            RunDir(tmp_path, "x").create()
    finally:
        tmp_path.chmod(0o700)


def test_output_root_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LcbenchError, match="cannot write run records.*output_root"):
        RunDir(tmp_path / "file", "x").create()


def test_results_of_a_missing_folder(tmp_path):
    with pytest.raises(LcbenchError, match="not a folder"):
        load_records(tmp_path / "none")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    """mkstemp alone made every record 0600: colleagues on a shared cluster could not read it."""
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        atomic_torch_save(tmp_path / "model.pt", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("result.json", "model.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
