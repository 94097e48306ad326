"""`lcbench compare A B`: two result folders of one sweep, values and verdicts that differ."""

import pandas as pd

from lcbench.cli import main


def write_results(folder, top1: float, verdict: str, cpu: str) -> None:
    folder.mkdir()
    runs = pd.DataFrame(
        [
            {"run_id": "a1", "status": "completed", "top1": 97.5, "compression": 2.0, "seed": 0, "cpu": cpu},
            {"run_id": "b2", "status": "completed", "top1": top1, "compression": 2.0, "seed": 1, "cpu": cpu},
            {"run_id": "c3", "status": "failed", "top1": None, "compression": None, "seed": 2, "cpu": ""},
        ]
    )
    runs.to_csv(folder / "runs.csv", index=False)
    pd.DataFrame([{"claim": "LayerCollapse regularises", "verdict": verdict}]).to_csv(
        folder / "claims.csv", index=False
    )
    pd.DataFrame(
        [{"dataset": "digits", "model": "m", "level": 1.0, "variant": "kd", "verdict": "underpowered"}]
    ).to_csv(folder / "differences.csv", index=False)


def test_compare_names_the_values_and_verdicts_that_differ(tmp_path, capsys):
    write_results(tmp_path / "intel", 96.0, "supported", "Intel Xeon (AVX512)")
    write_results(tmp_path / "amd", 95.5, "underpowered", "AMD EPYC (AVX512)")
    assert main(["compare", str(tmp_path / "intel"), str(tmp_path / "amd"), "--check"]) == 1
    out = capsys.readouterr().out
    assert "Intel Xeon (AVX512)" in out and "AMD EPYC (AVX512)" in out
    assert "runs in both: 2" in out and "values: 1 of 4 differ" in out
    assert "| top1 " in out and "0.5" in out  # the column and its largest difference
    assert "verdicts: 1 changed" in out and "claim: LayerCollapse regularises" in out


def test_identical_folders_compare_equal(tmp_path, capsys):
    write_results(tmp_path / "a", 96.0, "supported", "x")
    write_results(tmp_path / "b", 96.0, "supported", "x")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "values: 0 of 4 differ" in out and "verdicts: 0 changed" in out


def test_a_folder_without_results_is_a_clear_error(tmp_path, capsys):
    write_results(tmp_path / "a", 96.0, "supported", "x")
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "empty")]) == 2
    assert "has no runs.csv" in capsys.readouterr().err


def test_two_reports_of_a_sweep_without_levels_compare(tmp_path, capsys):
    """`report` wrote a 1-byte differences.csv for a sweep without levels: `compare A A` crashed (exit 70)."""
    from tests.execution.test_runner import digits_sweep

    spec = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    out = tmp_path / "report"
    assert main(["report", str(spec), "--out", str(out)]) == 0
    assert (out / "differences.csv").read_text().startswith("dataset,model,level,")
    assert main(["compare", str(out), str(out), "--check"]) == 0
    assert "verdicts: 0 changed" in capsys.readouterr().out


def test_a_malformed_table_is_named_in_one_line(tmp_path, capsys):
    write_results(tmp_path / "good", 96.0, "supported", "x")
    cases = {
        "empty": (b"", "runs.csv is empty"),
        "quoted": (b'run_id,status\n"a1,completed\n', "runs.csv is not a readable CSV (Error tokenizing"),
        "latin1": (
            "run_id,status,top1\na1,completed,97.5\n\xe9t\xe9,completed,1\n".encode("latin-1"),
            "runs.csv is not UTF-8 text (byte",
        ),  # fmt: skip
        "columnless": (b"a,b\n1,2\n", "runs.csv has no column run_id, status"),
    }
    for name, (data, says) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "runs.csv").write_bytes(data)
        assert main(["compare", str(tmp_path / "good"), str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_reports_of_two_sweeps_are_refused(tmp_path, capsys):
    """It said "runs in both: 0" and "7 verdicts changed" (`--check` exit 1)."""
    write_results(tmp_path / "digits", 96.0, "supported", "x")
    (tmp_path / "digits" / "README.md").write_text("# digits: accuracy against compression\n")
    write_results(tmp_path / "text", 96.0, "underpowered", "x")
    (tmp_path / "text" / "README.md").write_text("# text: accuracy against compression\n")
    assert main(["compare", str(tmp_path / "digits"), str(tmp_path / "text"), "--check"]) == 2
    assert "a report of sweep digits" in capsys.readouterr().err
    runs = pd.read_csv(tmp_path / "text" / "runs.csv").assign(run_id=["x1", "x2", "x3"])
    runs.to_csv(tmp_path / "text" / "runs.csv", index=False)
    (tmp_path / "text" / "README.md").write_text("# digits: accuracy against compression\n")
    assert main(["compare", str(tmp_path / "digits"), str(tmp_path / "text"), "--check"]) == 2
    assert "have no completed run in common" in capsys.readouterr().err


def test_a_value_garbled_into_text_is_counted_not_dropped(tmp_path, capsys):
    """`--check` dropped a column that was text in one folder and passed ("0 of 3960 differ")."""
    write_results(tmp_path / "a", 96.0, "supported", "x")
    write_results(tmp_path / "b", 96.0, "supported", "x")
    runs = pd.read_csv(tmp_path / "b" / "runs.csv")
    runs["top1"] = runs["top1"].astype(object)
    runs.loc[0, "top1"] = "9x.5"
    runs.to_csv(tmp_path / "b" / "runs.csv", index=False)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "values: 1 of 4 differ" in out and "| top1 " in out
