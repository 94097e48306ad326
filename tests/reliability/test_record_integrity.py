"""Third hardening round (issue 40), case 3: a run's files are checked against what its record says.

A `model.pt` changed without changing its size was exported as the run's model, and the round-trip check
said "identical" (it compared the export with the damaged file); `status` said "completed" for a run whose
`examples.npz` changed; a removed `examples.npz` was "a run that predates per-example records". The SHA-256
in result.json is now checked where records are read (hashing only files whose stamp changed), and the
model exported is rebuilt from the very bytes that were verified.
"""

import os
import shutil

import pytest

from lcbench.cli import main
from lcbench.core import integrity
from lcbench.core.store import RunDir
from lcbench.execution.status import sweep_status
from lcbench.execution.sweep import plan_sweep
from tests.execution.test_runner import digits_sweep

LAUNCH = ["--executor", "local", "--wait", "--poll", "0.2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed digits sweep (an original and its fine-tune), copied afresh for every test."""
    root = tmp_path_factory.mktemp("integrity")
    path = digits_sweep(root, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), *LAUNCH]) == 0
    return root


@pytest.fixture
def sweep(finished, tmp_path):
    shutil.copytree(finished / "out", tmp_path / "out", symlinks=True)
    return digits_sweep(tmp_path, {"ft": {"method": "finetune"}})


def fine_tune(path):
    status = next(s for s in sweep_status(plan_sweep(path)) if s.run.variant == "ft")
    return status, RunDir(plan_sweep(path).output_root, status.run.run_id)


def flip_a_byte(path):
    """Change one byte in place: the size stays, the bytes do not."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_copied_run_with_its_bytes_intact_is_completed(sweep):
    """A copy has new stamps: its files are hashed, they match, and the run stays completed."""
    status, run = fine_tune(sweep)
    assert status.status == "completed", status.detail
    assert run.result()["model_file"]["stamp"] != integrity.file_stamp(run.model_path)


def test_a_model_changed_without_changing_its_size_is_failed_unused_and_rerun(sweep, tmp_path, capsys):
    _, run = fine_tune(sweep)
    flip_a_byte(run.model_path)
    status, _ = fine_tune(sweep)
    assert status.status == "failed" and "ModelFileError" in status.detail
    assert "does not match the SHA-256 in its record: modified after the run" in status.detail
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "1 completed, 1 failed" in readme and "modified after the run" in readme
    capsys.readouterr()
    assert main(["export", str(run.path), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err
    assert "model file" in err and "modified after the run" in err and len(err.strip().splitlines()) == 1
    assert not (run.path / "export").exists()
    assert main(["launch", str(sweep), "--only-failed", *LAUNCH]) == 0
    status, run = fine_tune(sweep)
    assert status.status == "completed"
    assert integrity.file_sha256(run.model_path) == run.result()["model_file"]["sha256"]


def test_per_example_records_changed_or_removed_say_so(sweep, tmp_path):
    _, run = fine_tune(sweep)
    examples = run.path / "examples.npz"
    flip_a_byte(examples)
    status, _ = fine_tune(sweep)
    assert status.status == "failed" and "per-example records" in status.detail
    assert "modified after the run" in status.detail
    examples.unlink()
    status, _ = fine_tune(sweep)
    assert status.status == "failed" and "is missing, though its record lists it" in status.detail
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "is missing, though its record lists it" in readme and "predates" not in readme


def test_an_unchanged_stamp_is_not_hashed_again(sweep, monkeypatch):
    """status over a sweep of large models hashes a file once: after the run (or after the first read of
    a copy), while its inode and change time stay, only its size is compared."""
    _, run = fine_tune(sweep)
    record = run.result()
    for entry, path in (
        (record["model_file"], run.model_path),
        (record["examples"], run.path / "examples.npz"),
    ):
        entry["stamp"] = integrity.file_stamp(path)  # as the run itself recorded it
    hashed = []
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(path) or "0" * 64)
    assert run.record_problem(record) == "" and hashed == []
    os.utime(run.model_path)  # any change moves the change time: hashed again (and here, a mismatch)
    assert "modified after the run" in run.record_problem(record) and hashed == [run.model_path]
