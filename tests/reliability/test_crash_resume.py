"""A training run SIGKILLed at five random moments (mid-step, mid-checkpoint, mid-evaluation, whatever the
clock hits), restarted after each, ends with metrics bit-identical to an uninterrupted run on CPU."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from lcbench.core.store import RunDir
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from tests.conftest import REPO, fast_overrides

VOLATILE = {"epoch_seconds"}


def metrics(root, cfg):
    return [
        {k: v for k, v in e.items() if k not in VOLATILE} for e in RunDir(root, run_id(cfg)).events("epoch")
    ]


@pytest.mark.serial
def test_five_random_sigkills_then_identical_metrics(tmp_path):
    args = fast_overrides(tmp_path / "killed", model="digits_mixer", epochs=6, batch_size=32)
    cfg = make_config({}, args)
    run = RunDir(tmp_path / "killed", run_id(cfg))
    cmd = [sys.executable, "-m", "lcbench", "run", *args, "--no-progress"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    rng = random.Random(20261122)
    kills = 0
    while kills < 5:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.monotonic()
        # wait until this attempt has trained an epoch (imports take seconds; the epoch's checkpoint
        # follows its event), then a random moment more
        while time.monotonic() - start < 60 and proc.poll() is None:
            trained = run.metrics_path.exists() and b'"event": "epoch"' in run.metrics_path.read_bytes()
            if trained and (run.path / "env.json").exists():
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 1.5))
        if proc.poll() is not None:
            break  # it finished before this kill: the remaining kills have nothing left to hit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert not run.is_completed() or run.result()["status"] == "completed"
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    assert kills >= 3, "the kills must land while the run trains"
    assert len(run.events("resume")) >= 1

    clean_cfg = make_config(
        {}, fast_overrides(tmp_path / "clean", model="digits_mixer", epochs=6, batch_size=32)
    )
    clean = execute(clean_cfg, progress_bar=False)
    assert metrics(tmp_path / "killed", cfg) == metrics(tmp_path / "clean", clean_cfg)
    result = run.result()
    assert result["status"] == "completed"
    assert (
        result["final"]["top1"] == clean["final"]["top1"]
        and result["final"]["loss"] == clean["final"]["loss"]
    )
