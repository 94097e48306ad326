"""`lcbench rehearse` on the CPU: tiny models through the real trainer step, beside bare PyTorch."""

import json

from tests.conftest import REPO, run_cli


def test_rehearsal_measures_throughput_memory_and_slopes_against_their_prediction(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "base: {stage: compress, dataset: digits, epochs: 10, optimizer: adamw, lr: 0.003,"
        " lr_schedule: cosine, warmup_epochs: 1, grad_clip: 1.0}\n"
        "grid: {model: [digits_mlp, digits_vit]}\n"
        "variants:\n"
        "  layercollapse: {method: layercollapse, k: 1, lam: 10.0}\n"
        "  forced: {method: layercollapse, k: 1, lam: 0.1, force: true}\n"
        "  finetune: {method: finetune}\n"
    )
    glue = tmp_path / "glue.yaml"  # a sentence-pair classifier (BERT's input: ids, segments, mask)
    glue.write_text(
        "base: {stage: compress, dataset: glue_rte, model: bert-tiny, epochs: 1, optimizer: adamw,"
        " lr: 1.0e-4, lr_schedule: constant, warmup_epochs: 0}\n"
        "variants: {layercollapse: {method: layercollapse, k: 2, lam: 2000.0}}\n"
    )
    out = tmp_path / "rehearsal.json"
    done = run_cli(
        "rehearse",
        str(spec),
        str(REPO / "runs" / "text.yaml"),
        str(glue),
        "--steps",
        "40",
        "--budget",
        "60",
        "--device",
        "cpu",
        "--out",
        str(out),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    runs = {(r["model"], r["lam"]): r for r in document["runs"]}
    assert set(runs) == {
        ("digits_mlp", 10.0),
        ("digits_mlp", 0.1),
        ("digits_vit", 10.0),
        ("digits_vit", 0.1),
        ("text_gpt2", 100.0),
        ("bert-tiny", 2000.0),
    }  # one per model and LayerCollapse variant; finetune has none
    for run in runs.values():
        assert 10 <= run["steps"] <= 43 and run["steps"] <= run["whole_run"]["steps"]
        assert run["samples_per_s"] > 0 and run["samples_per_s_bare"] > 0
        assert 0 < run["throughput_ratio"] < 5
        steps = [p["step"] for p in run["trajectory"]]
        assert steps == sorted(steps) and run["trajectory"][0]["predicted"] < run["slope_predicted"]
        # random weights and labels: the task's pull is noise, the regulariser's pace is the prediction's
        assert abs(run["slope_difference"]) < 0.1, run
    assert runs[("digits_mlp", 10.0)]["whole_run"]["folds"]  # 10 epochs of 23 steps at weight 10
    weak = runs[("digits_mlp", 0.1)]["whole_run"]
    assert weak["forced"] and not weak["folds"]
    assert runs[("text_gpt2", 100.0)]["whole_run"]["steps"] == 40
    assert runs[("bert-tiny", 2000.0)]["whole_run"]["steps"] == 39  # RTE's 2,490 pairs in batches of 64
    assert "samples/s" in done.stdout and "forced fold" in done.stdout and str(out) in done.stdout


def test_rehearsal_refuses_bad_settings_before_any_step(tmp_path):
    done = run_cli(
        "rehearse", str(REPO / "runs" / "text.yaml"), "--steps", "0", "--out", str(tmp_path / "r.json")
    )
    assert done.returncode == 2 and "--steps (0) and --batch (None) must be at least 1" in done.stderr
    assert not (tmp_path / "r.json").exists()
