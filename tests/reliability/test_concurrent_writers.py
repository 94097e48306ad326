"""32 processes write run records into one output folder at once; every record reads back intact."""

import multiprocessing
import subprocess
import sys

import pytest

from lcbench.core.store import RunDir, atomic_torch_save, atomic_write_json, load_records
from tests.conftest import REPO


def write_run(root: str, index: int) -> None:
    run = RunDir(root, f"run{index:04d}")
    run.create()
    run.lock()
    try:
        for epoch in range(20):
            run.log("epoch", epoch=epoch, val_top1=float(index), payload="x" * 200)
        atomic_torch_save(run.checkpoint_path, {"index": index})
        atomic_write_json(run.path / "config.yaml", {"index": index})
        atomic_write_json(
            run.result_path, {"run_id": run.run_id, "status": "completed", "final": {"top1": index}}
        )
    finally:
        run.release()


def test_32_concurrent_writers(tmp_path):
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=write_run, args=(str(tmp_path), i)) for i in range(32)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)  # 32 interpreters importing torch: over 120 s on 2 busy cores
        assert proc.exitcode == 0
    records = load_records(tmp_path)
    assert sorted(r["final"]["top1"] for r in records) == list(range(32))
    for i in range(32):
        events = RunDir(tmp_path, f"run{i:04d}").events("epoch")
        assert [e["epoch"] for e in events] == list(range(20)) and {e["val_top1"] for e in events} == {
            float(i)
        }
    assert not list(tmp_path.rglob("*.tmp"))  # no temp file left behind
    table = subprocess.run(
        [sys.executable, "-m", "lcbench", "results", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(table.stdout.strip().splitlines()) == 33  # header + 32 records


@pytest.mark.serial
def test_two_compress_runs_started_at_once_wait_for_their_shared_pretrain(tmp_path):
    """The second used to fail with "run is being executed by another process"."""
    from lcbench.core.config import pretrain_config
    from lcbench.training.identity import run_id
    from lcbench.training.pipeline import execute
    from lcbench.training.resolve import make_config
    from tests.conftest import fast_overrides, wait_until

    common = {"stage": "compress", "model": "digits_mixer", "pretrain.epochs": 8}
    first = fast_overrides(tmp_path, epochs=1, method="finetune", **common)
    proc = subprocess.Popen([sys.executable, "-m", "lcbench", "run", *first, "--no-progress"], cwd=REPO)
    second = make_config(
        {}, fast_overrides(tmp_path, epochs=1, method="layercollapse", k=1, allow_unfolded=True, **common)
    )
    pre = RunDir(tmp_path, run_id(pretrain_config(second)))
    try:
        wait_until(lambda: pre.metrics_path.exists(), 120, "the first run to start training the pretrain")
        result = execute(second, progress_bar=False)  # waits for the pretrain, then starts from it
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    assert result["status"] == "completed" and result["pretrain_run_id"] == pre.run_id
    assert [e["epoch"] for e in pre.events("epoch")] == list(range(1, 9))  # trained once, by the first
    assert not pre.events("resume")
