"""Third hardening round (issue 40), point 10: a run folder deleted while its run trains gave a
FileNotFoundError traceback (exit 70). The run now ends in one line naming the folder (exit 2)."""

import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


@pytest.mark.serial
def test_a_run_whose_folder_is_removed_while_it_trains_ends_in_one_line(tmp_path):
    out = tmp_path / "out"
    argv = ["-m", "lcbench", "run", "model=digits_mlp", "epochs=200", f"output_root={out}", "--no-progress"]
    run = subprocess.Popen([sys.executable, *argv], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any('"epoch"' in p.read_text() for p in out.glob("*/metrics.jsonl")):
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.1)
    (folder,) = list(out.iterdir())
    while folder.exists():  # (the run may create a file in it while it is being removed)
        shutil.rmtree(folder, ignore_errors=True)
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 2, err
    assert f"its folder {folder} was removed while it ran" in err and "Traceback" not in err
    assert not folder.exists()  # nothing recreated there
