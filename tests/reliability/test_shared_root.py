"""A shared output root another user cannot subvert: run ids are predictable (`lcbench plan` prints them),
so a run never adopts a folder it does not own and never writes through a symbolic link in it."""

import json
import os
import stat

import pytest

from lcbench.cli import main
from lcbench.config import make_config, run_id
from lcbench.control import ControlChannel
from lcbench.store import RunDir
from tests.conftest import fast_overrides

OTHER_UID = 54321  # another user (root can hand a folder to any uid; no account needed)


def planted(tmp_path) -> tuple[list[str], RunDir]:
    args = fast_overrides(tmp_path / "out", epochs=1)
    run = RunDir(tmp_path / "out", run_id(make_config({}, args)))
    run.path.mkdir(parents=True)
    return ["run", *args, "--no-progress"], run


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user needs root")
def test_a_run_folder_created_by_another_user_is_refused(tmp_path, capsys):
    argv, run = planted(tmp_path)
    (run.path / "result.json").write_text(json.dumps({"status": "completed"}))  # would count as done
    os.chown(run.path, OTHER_UID, -1)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"is owned by uid {OTHER_UID}, not by you" in err and "Traceback" not in err
    assert not (run.path / ".lock").exists() and not (run.path / "metrics.jsonl").exists()


def test_a_folder_writable_by_every_user_is_refused(tmp_path, capsys):
    argv, run = planted(tmp_path)
    os.chmod(run.path, 0o777)
    assert main(argv) == 2
    assert "is writable by every user (mode 777)" in capsys.readouterr().err


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl"])
def test_links_in_a_run_folder_are_never_written_through(tmp_path, capsys, name):
    """`.lock -> file` truncated a root-owned file; `metrics.jsonl -> file` appended to another file."""
    argv, run = planted(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run.path / name).symlink_to(victim)
    assert main(argv) == 2
    assert "is a symbolic link; lcbench never writes through one" in capsys.readouterr().err
    assert victim.read_text() == "precious\n"


def test_a_linked_control_folder_is_neither_chmodded_nor_emptied(tmp_path):
    """`control/requests -> dir` chmodded that folder 0700 and deleted every *.json in it."""
    run = tmp_path / "run"
    (run / "control").mkdir(parents=True)
    victim = tmp_path / "elsewhere"
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)
    (victim / "keep.json").write_text("{}")
    (run / "control" / "requests").symlink_to(victim)
    with pytest.raises(Exception, match="control folder .* is a symbolic link"):
        ControlChannel(run)
    assert (victim / "keep.json").exists() and stat.S_IMODE(victim.stat().st_mode) == 0o755
