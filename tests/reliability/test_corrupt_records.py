"""Records that are valid files of the wrong shape, or half garbled, never crash status, results,
report or replay: a wrong-shaped result.json counts as no record; a garbled event line is skipped with a
warning."""

import json

from lcbench.cli import main
from lcbench.core.store import RunDir
from lcbench.execution.status import sweep_status
from lcbench.execution.sweep import plan_sweep
from tests.execution.test_runner import digits_sweep


def test_a_result_json_of_the_wrong_shape_is_no_record(tmp_path, capsys):
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    plan = plan_sweep(path)
    ft = next(s.run for s in sweep_status(plan) if s.run.variant == "ft")
    record = RunDir(plan.output_root, ft.run_id).result_path
    record.write_text(json.dumps([1, 2, 3]))  # valid JSON, not a record
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    assert main(["results", str(tmp_path / "out")]) == 0
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert next(s for s in sweep_status(plan) if s.run.variant == "ft").status != "completed"
    assert main(["launch", str(path), "--executor", "local", "--only-failed", "--wait", "--poll", "0.2"]) == 0
    assert next(s for s in sweep_status(plan) if s.run.variant == "ft").status == "completed"  # repaired


def test_a_garbled_event_line_is_skipped_with_a_warning(tmp_path, capsys, caplog):
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune", "epochs": 2}})
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    plan = plan_sweep(path)
    ft = RunDir(plan.output_root, next(s.run for s in sweep_status(plan) if s.run.variant == "ft").run_id)
    lines = ft.metrics_path.read_bytes().splitlines(keepends=True)
    ft.metrics_path.write_bytes(b"".join([*lines[:2], b'{"event": "epo\xff\n', *lines[2:]]))
    assert main(["report", str(path), "--out", str(tmp_path / "report")]) == 0
    assert main(["replay", str(ft.path)]) == 0  # the garbled line is not an epoch: metrics still match
    assert "metrics identical: True" in capsys.readouterr().out
    assert any("is not a JSON event (skipped)" in r.getMessage() for r in caplog.records)


def test_a_truncated_pretrain_model_marks_the_pretrain_failed_and_only_failed_repairs_it(tmp_path, capsys):
    """It failed every compress run while the pretrain stayed "completed"."""
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    plan = plan_sweep(path)
    pre = next(s for s in sweep_status(plan) if s.run.stage == "pretrain")
    model = RunDir(plan.output_root, pre.run.run_id).model_path
    model.write_bytes(model.read_bytes()[:1000])  # truncated
    pre = next(s for s in sweep_status(plan) if s.run.stage == "pretrain")
    assert pre.status == "failed" and "ModelFileError" in pre.detail and "truncated" in pre.detail
    capsys.readouterr()
    assert main(["launch", str(path), "--executor", "local", "--only-failed", "--wait", "--poll", "0.2"]) == 0
    assert {s.status for s in sweep_status(plan)} == {"completed"}
    assert RunDir(plan.output_root, pre.run.run_id).is_completed()


def test_a_garbled_or_non_utf8_run_config_is_one_line(tmp_path, capsys):
    """`lcbench collapse` read the run's config.yaml bare: a UnicodeDecodeError traceback (exit 70)."""
    from tests.conftest import fast_overrides

    args = fast_overrides(tmp_path, model="digits_mlp", epochs=1)
    assert main(["run", *args, "--no-progress"]) == 0
    (run,) = [RunDir(tmp_path, p.name) for p in tmp_path.iterdir() if p.is_dir()]
    for garbage, says in [
        (b"\xff\xfe\x00 not text", "is not UTF-8 text"),
        (b"model: [unclosed\n", "is not valid YAML: expected ',' or ']'"),
        (b"- a list\n", "must hold a mapping"),
    ]:
        run.config_path.write_bytes(garbage)
        capsys.readouterr()
        assert main(["collapse", str(run.path)]) == 2
        err = capsys.readouterr().err
        assert says in err and "restore it from the `config` in the run's result.json" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert main(["results", str(tmp_path)]) == 0  # reads records, never the config


def test_report_of_a_sweep_with_no_completed_run(tmp_path, capsys):
    """A LayerCollapse variant without `levels:` and nothing run yet: the report crashed drawing zero panels
    (matplotlib ValueError, exit 70); it now writes the tables and says there is nothing to plot yet."""
    path = digits_sweep(
        tmp_path,
        {"lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True}, "ft": {"method": "finetune"}},
    )
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "3 missing" in readme and "None yet: no completed run." in readme
    assert not list(out.glob("*.png")) and (out / "per_method.tex").exists()


def test_a_hollow_completed_record_is_failed_and_only_failed_recomputes_it(tmp_path, capsys):
    """`{"status": "completed"}` alone counted as completed and `--only-failed` never recomputed it."""
    path = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    plan = plan_sweep(path)
    ft = next(s for s in sweep_status(plan) if s.run.variant == "ft")
    run = RunDir(plan.output_root, ft.run.run_id)
    run.result_path.write_text(json.dumps({"status": "completed"}))
    ft = next(s for s in sweep_status(plan) if s.run.variant == "ft")
    assert ft.status == "failed" and "RecordError" in ft.detail and "incomplete" in ft.detail
    assert not run.is_completed()
    capsys.readouterr()
    assert main(["launch", str(path), "--executor", "local", "--only-failed", "--wait", "--poll", "0.2"]) == 0
    assert next(s for s in sweep_status(plan) if s.run.variant == "ft").status == "completed"
    assert run.result()["final"] and run.is_completed()


def test_a_report_of_a_sweep_without_levels_blames_nothing_and_prints_no_nan(tmp_path):
    """Issue 40, point 10: such a report blamed "runs made before per-example records"; after the verdict
    rewrite its KD budget read "kd at nanx FLOPs" (no LayerCollapse run at that level)."""
    path = digits_sweep(
        tmp_path,
        {
            "ft": {"method": "finetune"},
            "lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True},
            "kd": {"method": "kd"},
        },
    )
    assert main(["launch", str(path), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "4 completed" in readme
    assert "before lcbench kept them" not in readme and "nanx" not in readme
    assert "kd (no lc run at that level)" in readme
