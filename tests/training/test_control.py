"""Live tuning of a running digits training subprocess: lr and lambda changed mid-run at recorded steps,
save / eval / stop triggers, rejected requests, owner-only files, and an exact replay."""

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lcbench.cli import main
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training.control import MAX_REQUEST_BYTES, ControlChannel, Tunable, control_dir
from lcbench.training.identity import run_id
from lcbench.training.optim import lr_factor
from lcbench.training.resolve import make_config
from tests.conftest import REPO, fast_overrides, wait_until


def test_tunable_values_are_typed_and_range_checked():
    assert Tunable(float, min_exclusive=0).coerce("lr", 1) == 1.0
    for bad, message in [("x", "expected a number"), (True, "expected a number"), (-1.0, "must be > 0")]:
        with pytest.raises(ConfigError, match=message):
            Tunable(float, min_exclusive=0).coerce("lr", bad)
    with pytest.raises(ConfigError, match="<= 1"):
        Tunable(float, min=0, max=1).coerce("alpha", 1.5)
    with pytest.raises(ConfigError, match="finite"):
        Tunable(float, min=0).coerce("lam", float("inf"))


def test_malformed_foreign_and_oversized_requests_are_refused(tmp_path):
    channel = ControlChannel(tmp_path, interval_s=0.0)
    assert stat.S_IMODE(os.stat(control_dir(tmp_path)).st_mode) == 0o700
    requests = control_dir(tmp_path) / "requests"
    assert stat.S_IMODE(os.stat(requests).st_mode) == 0o700
    (requests / "a.json").write_text("{not json")
    (requests / "b.json").write_text(json.dumps({"set": {"lr": 1}, "pad": "x" * MAX_REQUEST_BYTES}))
    (requests / "c.json").write_text(json.dumps({"set": {"lr": 1}, "exec": "import os"}))
    (requests / "d.json").write_text(json.dumps(["lr", 1]))
    (requests / "e.json").write_text(json.dumps({"set": {"lr": 0.1}}))
    if os.geteuid() == 0:
        os.chown(requests / "e.json", 12345, -1)  # as if another user had written it
    problems = {path.name: problem for path, _, problem in channel.pending()}
    assert "not JSON" in problems["a.json"]
    assert "byte limit" in problems["b.json"]
    assert "unknown field" in problems["c.json"]
    assert "not a JSON object" in problems["d.json"]
    if os.geteuid() == 0:
        assert "not by the run's owner" in problems["e.json"]


@pytest.mark.serial
@pytest.mark.slow
def test_live_tuning_of_a_training_subprocess_then_replay(tmp_path, capsys):
    out = tmp_path / "out"
    overrides = fast_overrides(
        out,
        stage="compress",
        method="layercollapse",
        model="digits_mixer",
        epochs=10,
        optimizer="sgd",
        lr=0.01,
        k=1,
        **{"pretrain.epochs": 1},
    )
    cfg = make_config({}, overrides)
    rid = run_id(cfg)
    rundir = RunDir(out, rid)
    command = [sys.executable, "-m", "lcbench", "run", *overrides, "--no-progress"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(rundir.events("epoch")) >= 1, 120, "the first epoch")
        os.kill(proc.pid, signal.SIGSTOP)  # it trains only while a request waits: it cannot end first

        def tune(*args: str) -> int:
            return _tune_while_it_trains(proc.pid, rundir.path, ["tune", str(rundir.path), *args])

        # a live change of lr and lambda, acknowledged with the step it took effect at
        assert tune("lr=0.02", "lam=2") == 0
        ack = json.loads(capsys.readouterr().out)
        assert ack["accepted"] and [c["key"] for c in ack["changes"]] == ["lr", "lam"]
        assert ack["changes"][0]["old"] == 0.01 and ack["changes"][1]["old"] == 10.0
        changed_at = ack["step"]
        # invalid values and unknown keys are refused; nothing changes
        assert tune("lr=-1") == 2
        assert "must be > 0" in capsys.readouterr().out
        assert tune("epochs=3") == 2
        assert "not live-tunable" in capsys.readouterr().out
        # eval and save triggers
        assert tune("--trigger", "eval") == 0
        assert 0 <= json.loads(capsys.readouterr().out)["eval"]["top1"] <= 100
        before = rundir.checkpoint_path.stat().st_mtime_ns
        assert tune("--trigger", "save") == 0
        capsys.readouterr()
        assert rundir.checkpoint_path.stat().st_mtime_ns > before
        # stop: a clean end with status stopped and a resumable checkpoint
        assert tune("--trigger", "stop") == 0
        stopped_at = json.loads(capsys.readouterr().out)["step"]
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    assert rundir.result()["status"] == "stopped" and rundir.checkpoint_path.exists()
    assert len(rundir.events("epoch")) < 10

    # running the same command again resumes mid-epoch with the changes still in force, and completes
    assert main(["run", *overrides, "--no-progress"]) == 0
    capsys.readouterr()
    assert rundir.result()["status"] == "completed"
    (resume,) = rundir.events("resume")
    assert resume["step"] == stopped_at  # resumed from the stop checkpoint (mid-epoch)
    tunes = rundir.events("tune")
    assert [(t["key"], t["step"], t["new"]) for t in tunes] == [
        ("lr", changed_at, 0.02),
        ("lam", changed_at, 2.0),
    ]
    steps_per_epoch = 23  # 1437 training images in batches of 64
    for epoch in rundir.events("epoch"):
        base = 0.02 if epoch["step"] >= changed_at else 0.01
        assert epoch["lr"] == pytest.approx(base * lr_factor(epoch["step"], cfg, steps_per_epoch))
    rejected = rundir.events("tune_rejected")
    assert len(rejected) == 2

    # replay: the recorded changes at the same steps reproduce every epoch's metrics exactly
    assert main(["replay", str(rundir.path)]) == 0
    assert "metrics identical: True" in capsys.readouterr().out


def _tune_while_it_trains(pid: int, run_path: Path, argv: list[str]) -> int:
    """`lcbench tune` of a run held with SIGSTOP: let it train from the moment the request is written
    until it has answered, then hold it again (the test no longer races the run to its end)."""
    code = []
    requester = threading.Thread(target=lambda: code.append(main(argv)))
    requester.start()
    wait_until(lambda: any((control_dir(run_path) / "requests").glob("*.json")), 30, "the request")
    os.kill(pid, signal.SIGCONT)
    requester.join()
    os.kill(pid, signal.SIGSTOP)
    return code[0]


def test_tune_refuses_a_run_that_is_not_running(tmp_path, capsys):
    assert main(["run", *fast_overrides(tmp_path, epochs=1), "--no-progress"]) == 0
    rid = run_id(make_config({}, fast_overrides(tmp_path, epochs=1)))
    capsys.readouterr()
    assert main(["tune", rid, "--root", str(tmp_path), "lr=0.1"]) == 2
    assert "is not running" in capsys.readouterr().err
    assert main(["tune", "nosuchrun", "--root", str(tmp_path), "lr=0.1"]) == 2


def test_tune_values_are_read_by_the_config_parser_and_bounded():
    from lcbench.training.train import TRAINER_TUNABLE

    lr = TRAINER_TUNABLE["lr"]
    assert lr.coerce("lr", "1e-3") == 0.001  # YAML 1.1 leaves 1e-3 a string; `lcbench run` accepts it
    with pytest.raises(ConfigError, match="too large"):
        lr.coerce("lr", 10**400)  # was an uncaught OverflowError
    with pytest.raises(ConfigError, match="<= 10"):
        lr.coerce("lr", 1.0e308)  # finite but absurd: it would be checkpointed and fail every resume
    with pytest.raises(ConfigError, match="finite"):
        lr.coerce("lr", float("nan"))


def test_a_thousand_requests_cost_one_checkpoint_and_no_request_can_kill_the_run(tmp_path, monkeypatch):
    from lcbench.training.callbacks import LiveControl
    from lcbench.training.control import open_channel
    from lcbench.training.pipeline import execute
    from lcbench.training.train import Trainer

    cfg = make_config({}, fast_overrides(tmp_path, epochs=2))
    run = RunDir(tmp_path, run_id(cfg))
    run.create()
    root = open_channel(run.path)
    for i in range(1000):
        (root / "requests" / f"r{i:04d}.json").write_text(
            json.dumps({"id": f"r{i:04d}", "set": {"lr": 0.05}})
        )
    bad = {"big": {"set": {"lr": 10**400}}, "huge": {"set": {"lr": 1e308}}, "evalbug": {"trigger": "eval"}}
    for name, request in {**bad, "str": {"set": {"lr": "1e-3"}}}.items():
        (root / "requests" / f"{name}.json").write_text(json.dumps({"id": name, **request}))
    stale = root / "acks" / "old.json"  # an ack nobody collected, two hours old
    stale.write_text("{}")
    os.utime(stale, (stale.stat().st_atime - 7200, stale.stat().st_mtime - 7200))

    def broken_eval(trainer):
        raise RuntimeError("evaluation blew up")

    monkeypatch.setattr(LiveControl, "_evaluate", staticmethod(broken_eval))
    looks = iter([True])  # one look at the control folder, at the first step
    monkeypatch.setattr(ControlChannel, "due", lambda self: next(looks, False))
    saves = []
    save = Trainer.save_checkpoint
    monkeypatch.setattr(
        Trainer, "save_checkpoint", lambda self: (saves.append(self.progress.step), save(self))
    )

    result = execute(cfg, progress_bar=False)
    assert result["status"] == "completed"
    assert saves == [1, 23, 46]  # one checkpoint for all 1001 accepted requests, then one per epoch
    acks = {p.stem: json.loads(p.read_text()) for p in (root / "acks").glob("*.json")}
    assert not stale.exists() and len(acks) == 1004 and not list((root / "requests").iterdir())
    assert "too large" in acks["big"]["reason"] and "<= 10" in acks["huge"]["reason"]
    assert acks["evalbug"] == {
        "id": "evalbug",
        "accepted": False,
        "reason": "RuntimeError: evaluation blew up",
    }
    assert acks["str"]["accepted"] and acks["str"]["changes"][0]["new"] == 0.001
    assert len(run.events("tune")) == 1001 and len(run.events("tune_rejected")) == 3


def test_live_tunables_are_derived_from_the_field_declarations():
    """Declared once: `option(..., tunable=True)` on the config and on a method's Params, bounds included."""
    from lcbench.baselines.distillation import KnowledgeDistillation
    from lcbench.core.config import RunConfig
    from lcbench.methods.layercollapse import LayerCollapse
    from lcbench.training.control import tunables

    trainer = tunables(RunConfig)
    assert set(trainer) == {"lr", "weight_decay", "momentum", "grad_clip"}
    assert trainer["lr"].max == 10.0 and trainer["lr"].min_exclusive == 0
    assert set(tunables(LayerCollapse.Params)) == {"lam"}
    assert set(tunables(KnowledgeDistillation.Params)) == {"alpha", "T"}
    with pytest.raises(ConfigError, match="lr: must be <= 10.0"):
        make_config({}, ["lr=20"])  # the same bound at config time


def test_a_folder_named_like_a_request_never_ends_the_run(tmp_path):
    """A directory `x.json` in control/requests (empty or not) killed the run at every resume with
    IsADirectoryError from the answer's unlink: it is refused, answered and taken out of the queue."""
    channel = ControlChannel(tmp_path, interval_s=0.0)
    requests = control_dir(tmp_path) / "requests"
    (requests / "x.json").mkdir()
    (requests / "y.json").mkdir()
    (requests / "y.json" / "inside").write_text("{}")
    found = channel.pending()
    assert [p.name for p, _, _ in found] == ["x.json", "y.json"]
    for path, request, problem in found:
        assert "not a regular file" in problem
        channel.answer(path, request, {"accepted": False, "reason": problem})
    assert channel.pending() == []  # answered once, never looked at again
    acks = sorted(p.name for p in (control_dir(tmp_path) / "acks").iterdir())
    assert acks == ["x.json", "y.json"]
    assert not (requests / "x.json").exists() and (requests / "y.json.refused").is_dir()


@pytest.mark.serial
def test_tune_says_at_once_that_the_run_ended_instead_of_waiting_out_its_timeout(tmp_path):
    """On a fast machine the run finished before answering and `tune` waited 60 s, then asked "is it
    training?"."""
    import fcntl
    import threading
    import time

    from lcbench.core.errors import LcbenchError
    from lcbench.training.control import send

    ControlChannel(tmp_path, interval_s=0.0)
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed"}))
    lock = open(tmp_path / ".lock", "w")  # noqa: SIM115 - held by the "run" for a second
    fcntl.flock(lock, fcntl.LOCK_EX)
    threading.Timer(1.0, lambda: (fcntl.flock(lock, fcntl.LOCK_UN), lock.close())).start()
    started = time.monotonic()
    with pytest.raises(
        LcbenchError, match=r"ended \(completed\) before it answered; the request was withdrawn"
    ):
        send(tmp_path, {"lr": 0.1}, None, timeout_s=30)
    assert time.monotonic() - started < 5
    assert list((control_dir(tmp_path) / "requests").iterdir()) == []


def test_a_request_linked_to_another_file_is_refused_unread(tmp_path):
    """A request linked to a root-only JSON was refused, but its key names (`unknown field(s) ['api_key',
    'password']`) went to the world-readable metrics.jsonl."""
    channel = ControlChannel(tmp_path, interval_s=0.0)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"api_key": "x", "password": "y"}))
    secret.chmod(0o600)
    (control_dir(tmp_path) / "requests" / "a.json").symlink_to(secret)
    ((path, request, problem),) = channel.pending()
    assert request is None and problem == "a symbolic link (never followed)"
    assert "api_key" not in problem and "password" not in problem
    channel.answer(path, request, {"accepted": False, "reason": problem})
    assert secret.exists() and not path.is_symlink()  # the link is removed, never its target


def test_tune_of_a_queued_run_says_it_is_queued(tmp_path, capsys):
    """It said "no run ...: give a run folder" for a run its sweep had queued."""
    from lcbench.execution.submissions import Submission, record_submission

    record_submission(tmp_path, "t", Submission("local", str(tmp_path / "q"), {"0123456789ab": "0"}))
    assert main(["tune", "0123456789ab", "--root", str(tmp_path), "lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "run 0123456789ab is queued in sweep t and has not started" in err
    assert main(["tune", "ba9876543210", "--root", str(tmp_path), "lr=0.1"]) == 2
    assert "no run 'ba9876543210'" in capsys.readouterr().err
    assert (
        main(["tune", str(tmp_path / "0123456789ab"), "lr=0.1"]) == 2
    )  # `<root>/<id>`: it still said "no run"
    assert "run 0123456789ab is queued in sweep t and has not started" in capsys.readouterr().err


def test_a_flood_of_uncollected_acks_is_trimmed_once_a_minute_old(tmp_path):
    """10,000 answered requests nobody waited for used to leave 40 MB of acks (a block each) for an hour."""
    from lcbench.training.control import MAX_UNCOLLECTED_ACKS

    channel = ControlChannel(tmp_path)
    root = channel.root
    for i in range(600):  # two minutes old: no `tune` waits for them any more
        path = root / "acks" / f"old{i:04d}.json"
        path.write_text("{}")
        os.utime(path, (time.time() - 120 - i, time.time() - 120 - i))
    for i in range(10):  # just answered: their requesters may be about to read them
        (root / "acks" / f"new{i}.json").write_text("{}")
    channel.clean_acks()
    left = sorted(p.name for p in (root / "acks").iterdir())
    assert len(left) == MAX_UNCOLLECTED_ACKS
    assert {f"new{i}.json" for i in range(10)} <= set(left)
    assert (
        f"old{MAX_UNCOLLECTED_ACKS - 11:04d}.json" in left
        and f"old{MAX_UNCOLLECTED_ACKS - 10:04d}.json" not in left
    )
