"""A full disk (ENOSPC) or an unwritable run folder while a checkpoint is written leaves the previous
checkpoint valid and no temp file behind; the run fails with a one-line error, and resumes once space is
back. The first tests fill a real small tmpfs (root on Linux), the others simulate the error."""

import errno
import logging
import os
import subprocess
import sys

import pytest
import torch

from lcbench.core import store
from lcbench.core.store import RunDir, StorageError
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from tests.conftest import fast_overrides, run_cli

CHECKPOINT_MB = 3.7  # a digits_mlp checkpoint (weights and Adam/SGD state)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 6 MB tmpfs: the first checkpoint fits, the second (its temp file beside the first) does not."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux (mount -t tmpfs)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs was refused here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _resize(mount_point, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def _free_bytes(path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def test_a_real_full_disk_is_one_line_a_failed_record_and_a_resume(small_tmpfs):
    """torch reports a full disk as a RuntimeError (the existing simulated test raised a clean OSError):
    the run must still fail with one line and exit 2, its temp file closed and removed (an open deleted
    file kept the space, so the failed record could not be written and status said "interrupted")."""
    args = ["run", *fast_overrides(small_tmpfs, model="digits_mlp", epochs=3), "--no-progress"]
    failed = run_cli(*args)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "No space left on device" in failed.stderr and "output_root=PATH" in failed.stderr
    run = RunDir(small_tmpfs, run_id(make_config({}, args[1:-1])))
    record = run.result()
    assert record["status"] == "failed" and record["error"]["type"] == "StorageError"
    assert torch.load(run.checkpoint_path, weights_only=True)["progress"]["epoch"] == 1  # kept, intact
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
    assert _free_bytes(small_tmpfs) > 2 * 1024 * 1024  # the failed temp file's space is free again

    _resize(small_tmpfs, "20m")  # space is back: the same command resumes and completes
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert run.result()["status"] == "completed" and run.events("resume")[0]["epoch"] == 1


def test_a_disk_already_full_is_one_line_and_leaves_nothing(small_tmpfs):
    _fill(small_tmpfs)
    failed = run_cli("run", *fast_overrides(small_tmpfs, model="digits_mlp"), "--no-progress")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "No space left on device" in failed.stderr
    leftovers = [p.name for p in small_tmpfs.rglob("*") if p.is_file() and p.name != "filler"]
    assert leftovers == []


def _fill(folder) -> None:
    with open(folder / "filler", "wb") as f:  # to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def _no_traceback_one_error(proc, says: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("lcbench: error:")]) == 1


def test_report_and_launch_on_a_full_then_read_only_root(small_tmpfs, tmp_path):
    """Both were tracebacks (exit 70); a launch also left a half-made queue folder behind."""
    from tests.execution.test_runner import digits_sweep

    spec = digits_sweep(tmp_path, {"ft": {"method": "finetune"}}, output_root=str(small_tmpfs / "out"))
    (small_tmpfs / "out").mkdir()
    _fill(small_tmpfs)
    _no_traceback_one_error(
        run_cli("report", str(spec), "--out", str(small_tmpfs / "report")), "No space left"
    )
    _no_traceback_one_error(run_cli("launch", str(spec), "--executor", "local"), "No space left")
    assert not [p for p in small_tmpfs.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".tmp.png")]
    sweeps = small_tmpfs / "out" / ".sweeps" / "t"
    assert not [p for p in sweeps.iterdir() if p.is_dir()]  # no half-made queue

    (small_tmpfs / "filler").unlink()
    _resize(small_tmpfs, "6m,ro")
    _no_traceback_one_error(run_cli("report", str(spec), "--out", str(small_tmpfs / "r2")), "read-only")
    _no_traceback_one_error(run_cli("launch", str(spec), "--executor", "local"), "read-only")


def test_when_even_the_failed_record_cannot_be_written_the_error_is_kept(small_tmpfs, monkeypatch, caplog):
    """Another process fills the disk right after the checkpoint fails: the failed record cannot be written
    either; the run's own error still reaches the user (not the record's), and the log says why status
    will show the run as interrupted."""
    cfg = make_config({}, fast_overrides(small_tmpfs, model="digits_mlp", epochs=3))
    real_save = torch.save

    def save_then_fill(obj, f, *args, **kwargs):
        try:
            return real_save(obj, f, *args, **kwargs)
        except RuntimeError:
            f.close()  # what the atomic write does next, then another process takes the freed space
            for temp_file in small_tmpfs.glob("*/.checkpoint.pt.*.tmp"):
                temp_file.unlink()
            with open(small_tmpfs / "filler", "wb") as filler:
                try:
                    while True:
                        filler.write(b"\0" * 4096)
                        filler.flush()
                except OSError:
                    pass
            raise

    monkeypatch.setattr(torch, "save", save_then_fill)
    with caplog.at_level(logging.ERROR, logger="lcbench"), pytest.raises(StorageError, match="checkpoint"):
        execute(cfg, progress_bar=False)
    assert "failed record could not be written either" in caplog.text
    run = RunDir(small_tmpfs, run_id(cfg))
    assert run.result() is None
    assert run.config_path.exists()  # a folder with a config and no record: status says "interrupted"


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    cfg = make_config({}, fast_overrides(tmp_path, model="digits_mlp", epochs=4))
    run = RunDir(tmp_path, run_id(cfg))
    real_save = torch.save
    saves = {"n": 0}

    def fill_disk_on_third_save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:  # the third epoch's checkpoint: partly written, then the disk is full
            f.write(b"\x00" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_disk_on_third_save)
    with pytest.raises(StorageError, match="No space left"):
        execute(cfg, progress_bar=False)
    assert run.result()["status"] == "failed" and "No space left" in run.result()["error"]["message"]
    previous = torch.load(run.checkpoint_path, weights_only=True)  # still the second epoch's, intact
    assert previous["progress"]["epoch"] == 2
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(torch, "save", real_save)  # space is back: the run resumes and completes
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
        with pytest.raises(StorageError, match="Permission denied"):
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
    with pytest.raises(StorageError, match="make the folder writable"):
        store.atomic_torch_save(run.checkpoint_path, {"x": 1})
    assert run.checkpoint_path.read_bytes() == before
