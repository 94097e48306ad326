"""A shared output root another user cannot subvert: run ids are predictable (`lcbench plan` prints them),
so a run never adopts a folder it does not own and never writes through a symbolic link in it."""

import json
import os
import stat
from pathlib import Path

import pytest

from lcbench.cli import main
from lcbench.core.store import RunDir
from lcbench.training.control import ControlChannel
from lcbench.training.identity import run_id
from lcbench.training.resolve import make_config
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


def test_a_second_user_who_plants_a_run_folder_cannot_subvert_the_run(tmp_path, capsys, second_user):
    """Another account, on a shared root (mode 1777, like /tmp), creates a run's folder first (its id is
    predictable), with a completed record and a lock linked to one of our files: the run refuses the folder
    and writes nothing into it or through the link."""
    import shutil
    import tempfile

    uid, as_second_user = second_user
    shared = Path(tempfile.mkdtemp(prefix="lcbench-shared-"))  # pytest's own folders are private (0700)
    os.chmod(shared, 0o1777)
    try:
        _plant_and_run(shared, tmp_path, uid, as_second_user, capsys)
    finally:
        shutil.rmtree(shared)


def _plant_and_run(shared: Path, tmp_path: Path, uid: int, as_second_user, capsys) -> None:
    import subprocess

    args = fast_overrides(shared, epochs=1)
    run = RunDir(shared, run_id(make_config({}, args)))
    victim = tmp_path / "ours.txt"
    victim.write_text("precious\n")
    as_second_user(
        f"mkdir {run.path} && ln -s {victim} {run.path}/.lock && "
        f"""echo '{{"status": "completed"}}' > {run.path}/result.json"""
    )
    assert os.lstat(run.path).st_uid == uid
    assert main(["run", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"is owned by uid {uid}, not by you" in err and "Traceback" not in err
    assert victim.read_text() == "precious\n"
    listing = subprocess.run(["ls", "-A", str(run.path)], capture_output=True, text=True).stdout.split()
    assert sorted(listing) == [".lock", "result.json"]  # nothing of ours was written into it


def test_a_planted_sweeps_link_or_submissions_link_is_refused_before_anything_is_written(tmp_path, capsys):
    """`.sweeps` planted as a link: root's queue was created inside the link's target; `submissions.jsonl`
    planted as a link: root's launch appended its line to whatever file it named."""
    from tests.execution.test_runner import digits_sweep

    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    root = tmp_path / "out"
    root.mkdir(exist_ok=True)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (root / ".sweeps").symlink_to(target)
    capsys.readouterr()
    assert main(["launch", str(path), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and ".sweeps" in err and len(err.strip().splitlines()) == 1
    assert list(target.iterdir()) == []  # nothing made through the link
    (root / ".sweeps").unlink()

    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    (root / ".sweeps" / "t").mkdir(parents=True)
    (root / ".sweeps" / "t" / "submissions.jsonl").symlink_to(secret)
    assert main(["launch", str(path), "--executor", "local"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert secret.read_text() == "root only\n"


@pytest.mark.serial
def test_cancel_signals_only_the_supervisor_of_a_queue_this_user_owns(tmp_path):
    """A planted queue.json naming any process whose command line says "lcbench" made `cancel` SIGTERM
    it (and `launch` refuse the sweep as still queued)."""
    import subprocess
    import sys

    from lcbench.execution.local_queue import LocalExecutor
    from lcbench.execution.submissions import Job, Submission

    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lcbench"])
    try:
        folder = tmp_path / "q"
        folder.mkdir()
        queue = {"supervisor_pid": decoy.pid, "runs": [{"run_id": "r1", "state": "running"}]}
        (folder / "queue.json").write_text(json.dumps(queue))
        folder.chmod(0o777)  # writable by every user: anyone could have written that queue.json
        job = Job("r1", Submission("local", str(folder), {"r1": "0"}, pid=decoy.pid), "0")
        executor = LocalExecutor()
        assert executor.states([job]) == {}  # not taken as a live queue holding the run
        executor.cancel([job])
        assert decoy.poll() is None  # never signalled
    finally:
        decoy.kill()
        decoy.wait()


@pytest.mark.parametrize("how", ["world-writable", "another-owner", "linked-model"])
def test_a_compress_run_never_reads_a_pretrain_folder_someone_else_could_have_planted(tmp_path, capsys, how):
    """A compress run read its pretrain's result.json and model.pt from `<root>/<pretrain id>/` whoever
    owned it, and through a link: planted random weights with a matching record made root's LayerCollapse
    record `completed` at 9.72% (clean: 96.94%) beside the original's planted 97.22%."""
    from lcbench.core.config import pretrain_config

    if how == "another-owner" and os.geteuid() != 0:
        pytest.skip("handing a folder to another user needs root")
    args = fast_overrides(tmp_path / "out", epochs=1, stage="compress", method="finetune")
    pretrain = RunDir(tmp_path / "out", run_id(pretrain_config(make_config({}, args))))
    pretrain.path.mkdir(parents=True)
    record = {"status": "completed", "run_id": pretrain.run_id, "final": {"top1": 97.22}}  # looks done
    (pretrain.path / "result.json").write_text(json.dumps(record))
    if how == "world-writable":
        pretrain.path.chmod(0o777)
    elif how == "another-owner":
        os.chown(pretrain.path, OTHER_UID, -1)
    else:
        (tmp_path / "weights.pt").write_bytes(b"planted")
        (pretrain.path / "model.pt").symlink_to(tmp_path / "weights.pt")
    capsys.readouterr()
    assert main(["run", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error = err.strip().splitlines()[-1]  # (after the run's banner line)
    says = {"world-writable": "is writable by every user", "another-owner": "not by you"}
    assert error.startswith("lcbench: error: ") and says.get(how, "model.pt is a symbolic link") in error
    assert not list((tmp_path / "out").glob("*/model.pt"))[1:]  # no compressed model was written


@pytest.mark.parametrize("how", ["second-user", "world-writable", "linked-record"])
def test_a_record_another_user_could_have_written_never_enters_a_status_or_a_report(
    tmp_path, capsys, how, request
):
    """`report` read every run folder of its sweep whoever owned it: a planted completed record (its
    numbers made up) entered the tables beside the runs' own."""
    import shutil
    import tempfile

    from lcbench.execution.sweep import plan_sweep
    from tests.execution.test_runner import digits_sweep

    shared = Path(tempfile.mkdtemp(prefix="lcbench-shared-"))  # pytest's own folders are private (0700)
    request.addfinalizer(lambda: shutil.rmtree(shared))
    os.chmod(shared, 0o1777)
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}}, output_root=str(shared))
    pretrain = next(r for r in plan_sweep(path).runs if r.stage == "pretrain")
    folder = shared / pretrain.run_id
    record = json.dumps({"status": "completed", "run_id": pretrain.run_id, "final": {"top1": 99.9}})
    if how == "second-user":
        uid, as_second_user = request.getfixturevalue("second_user")
        as_second_user(f"mkdir {folder} && echo '{record}' > {folder}/result.json")
        says = f"is owned by uid {uid}, not by you"
    elif how == "world-writable":
        folder.mkdir()
        (folder / "result.json").write_text(record)
        folder.chmod(0o777)
        says = "is writable by every user"
    else:
        folder.mkdir()
        (tmp_path / "made-up.json").write_text(record)
        (folder / "result.json").symlink_to(tmp_path / "made-up.json")
        says = "result.json is a symbolic link"

    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "failed UntrustedRecord: " in out and "1 failed" in out  # not completed at 99.9%
    out_dir = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lcbench: error: ") and says in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()  # refused before anything was written
    assert main(["results", str(shared)]) == 0
    listed = capsys.readouterr().out
    assert f"{pretrain.run_id},failed," in listed and "99.9" not in listed


def test_a_second_user_cannot_steer_launch_cancel_or_a_compress_run_on_a_shared_root(
    tmp_path, capsys, second_user, request
):
    """Cases 1-4 of the second hardening round, planted by a real second account on a 1777 root: `.sweeps`
    as a link, a sweep folder of theirs with `submissions.jsonl` linked to a root-only file, a queue folder
    of theirs whose queue.json names one of our processes, and a pretrain folder with a made-up record."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from lcbench.core.config import pretrain_config
    from lcbench.execution.local_queue import LocalExecutor
    from lcbench.execution.submissions import Job, Submission
    from tests.execution.test_runner import digits_sweep

    uid, as_second_user = second_user
    shared = Path(tempfile.mkdtemp(prefix="lcbench-shared-"))
    request.addfinalizer(lambda: shutil.rmtree(shared))
    os.chmod(shared, 0o1777)
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}}, output_root=str(shared))
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    capsys.readouterr()

    as_second_user(f"mkdir {shared}/theirs && ln -s {shared}/theirs {shared}/.sweeps")
    assert main(["launch", str(path), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert not list((shared / "theirs").iterdir())  # our queue was not made in their folder

    as_second_user(
        f"rm {shared}/.sweeps && mkdir -p {shared}/.sweeps/t && "
        f"ln -s {secret} {shared}/.sweeps/t/submissions.jsonl"
    )
    assert main(["launch", str(path), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert f"owned by uid {uid}, not by you" in err and len(err.strip().splitlines()) == 1
    assert secret.read_text() == "root only\n"
    as_second_user(f"rm -r {shared}/.sweeps")

    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lcbench"])
    request.addfinalizer(decoy.kill)
    queue = json.dumps({"supervisor_pid": decoy.pid, "runs": [{"run_id": "r1", "state": "running"}]})
    as_second_user(f"mkdir {shared}/q && echo '{queue}' > {shared}/q/queue.json")
    job = Job("r1", Submission("local", str(shared / "q"), {"r1": "0"}, pid=decoy.pid), "0")
    assert LocalExecutor().states([job]) == {}  # not taken as a live queue holding the run
    LocalExecutor().cancel([job])
    assert decoy.poll() is None  # never signalled

    args = fast_overrides(shared, epochs=1, stage="compress", method="finetune")
    pretrain = RunDir(shared, run_id(pretrain_config(make_config({}, args))))
    record = json.dumps({"status": "completed", "run_id": pretrain.run_id, "final": {"top1": 97.22}})
    as_second_user(f"mkdir {pretrain.path} && echo '{record}' > {pretrain.path}/result.json")
    assert main(["run", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"owned by uid {uid}, not by you" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not list(shared.glob("*/model.pt"))  # nothing trained from their record
