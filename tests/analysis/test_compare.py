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
