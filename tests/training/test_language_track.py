"""The language half end to end on generated fixtures: runs/glue.yaml and runs/wikitext.yaml (their own
recipes, shrunk by overrides to tiny models and data) through launch, report and the paper comparison, and
the `make reproduce-glue` / `reproduce-wikitext` targets."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from lcbench.analysis.report import PAPER_LANGUAGE_CSV, language_comparison, load_paper
from lcbench.cli import main
from lcbench.core.errors import ConfigError
from lcbench.execution.sweep import expand, load_spec, plan_sweep
from lcbench.methods import METHODS
from lcbench.methods.layercollapse import LayerCollapse
from lcbench.training.resolve import method_params
from lcbench.zoo.data import load_data
from lcbench.zoo.text_models import BERT_SHAPES, load_tokenizer
from tests import text_fixtures
from tests.conftest import REPO

TINY = [  # what shrinks a language spec to a CPU test (the recipe's other keys stay the spec's)
    "seq_len=32",
    "batch_size=16",
    "eval_batch_size=64",
    "warmup_steps=2",
    "step_steps=4",
    "precision=fp32",
    "workers=0",
    "threads=1",
    "latency_batch=2",
    "latency_repeats=1",
    "pretrain.batch_size=16",
    "pretrain.lr=0.01",
    "pretrain.warmup_steps=0",
    # a few dozen steps instead of thousands: a larger lr lets the slope regulariser (weight 10) fold
    "lr=0.01",
    "epochs=3",
]


def _local(tmp_path, data, model: str, *extra: str) -> list[str]:
    """TINY, the model, its fixture folder (MODELS/{model}, as the make targets pass it), data and output."""
    return [
        *TINY,
        f"model={model}",
        *extra,
        f"data_root={data}",
        f"pretrain.pretrained={tmp_path / 'models'}/{{model}}",
        f"output_root={tmp_path / 'out'}",
    ]


def assert_matched_but_coarse_units(runs: pd.DataFrame) -> None:
    """Every compressed point matched, but where the unit is a whole residual block (block removal,
    ReplaceMe's span) or Layer Folding left a block unfolded: those are labelled "not matched"."""
    compressed = runs[runs["stage"] == "compress"].dropna(subset=["matched"])
    unmatched = compressed[~compressed["matched"].astype(bool)]
    coarse = unmatched["variant"].str.startswith(("block_removal", "replaceme"))
    assert (coarse | (unmatched["method"] == "layer_folding")).all(), unmatched[["variant", "compression"]]


def _run(spec: str, overrides: list[str], out) -> pd.DataFrame:
    assert main(["launch", spec, *overrides, "--executor", "local", "--cpu", "--wait", "--poll", "0.5"]) == 0
    assert main(["measure", spec, *overrides, "--threads", "1"]) == 0
    assert main(["report", spec, *overrides, "--out", str(out)]) == 0
    return pd.read_csv(out / "runs.csv")


@pytest.mark.slow
def test_glue_spec_runs_every_method_on_a_classification_and_a_regression_task(tmp_path):
    data = text_fixtures.write_glue(tmp_path / "data", {"sst2": 2, "stsb": 1}, rows=160)
    text_fixtures.bert_folder(tmp_path / "models" / "bert-tiny")
    overrides = _local(
        tmp_path,
        data,
        "bert-tiny",
        "dataset=[glue_sst2, glue_stsb]",
        "levels=[2]",
        "pretrain.epochs=2",
        "seeds=[0, 1]",  # (the spec's three seeds took 80 s; two still give an original per seed)
    )
    spec = str(REPO / "runs" / "glue.yaml")
    runs = _run(spec, overrides, tmp_path / "report")
    assert len(runs) == len(plan_sweep(spec, overrides).runs) == 2 * (2 + 16 * 2)  # an original per seed
    assert (runs["status"] == "completed").all(), runs.loc[runs["status"] != "completed", "error"].tolist()
    # every method but ReplaceMe, whose span needs pre-norm blocks (BERT is post-norm)
    assert set(runs["method"]) == {"original"} | set(METHODS.names()) - {"none", "replaceme"}
    sst2, stsb = runs[runs["dataset"] == "glue_sst2"], runs[runs["dataset"] == "glue_stsb"]
    assert sst2[["top1", "f1", "mcc"]].notna().all().all() and sst2["pearson"].isna().all()
    assert stsb[["pearson", "spearman"]].notna().all().all() and stsb["top1"].isna().all()
    lc = runs[runs["method"] == "layercollapse"]
    assert (lc["mlps_folded"] == 2).all()  # BERT's last 2 feed-forward blocks, each 32 -> 128 -> 32
    saved = 2 * (32 * 128 + 128 + 128 * 32 + 32 - (32 * 32 + 32))
    originals = runs[runs["method"] == "original"].groupby("dataset")["params_dense"].agg(["min", "max"])
    assert (originals["min"] == originals["max"]).all()  # every seed's original has the same architecture
    originals = originals["min"]
    assert (lc["params_dense"] + saved == lc["dataset"].map(originals)).all()  # the closed form, exactly
    assert_matched_but_coarse_units(runs)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "## Claims" in readme and "pearson" in readme
    table = (tmp_path / "report" / "per_method.md").read_text()
    assert "Pearson (x100)" in table and "Top-1 (%)" in table  # each task's headline metric (and accuracy)


@pytest.mark.slow
def test_wikitext_spec_reports_perplexity_with_its_direction(tmp_path):
    data = text_fixtures.write_wikitext(tmp_path / "data")
    text_fixtures.gpt2_folder(tmp_path / "models" / "gpt2-tiny")
    overrides = _local(
        tmp_path,
        data,
        "gpt2-tiny",
        "dataset=wikitext2",
        "levels=[2]",
        "seeds=[0, 1]",
        "pretrain.epochs=3",
        "eval_stride=8",  # windows of 32 tokens every 8: each held-out token scored once
    )
    spec = str(REPO / "runs" / "wikitext.yaml")
    runs = _run(spec, overrides, tmp_path / "report")
    assert (runs["status"] == "completed").all(), runs.loc[runs["status"] != "completed", "error"].tolist()
    assert runs["perplexity"].notna().all() and (runs["perplexity"] > 1).all()
    assert_matched_but_coarse_units(runs)  # LayerCollapse folded both MLPs, the others matched
    record = json.loads(next((tmp_path / "out").glob("*/result.json")).read_text())
    assert record["metric"] == "perplexity" and record["input_shape"] == [32]
    tokenizer = load_tokenizer("gpt2-tiny", str(tmp_path / "models" / "gpt2-tiny"), 1000)
    blocks = load_data("wikitext2", data, None, tokenizer=tokenizer, seq_len=32).val
    assert record["final"]["tokens"] == 32 * len(blocks)  # the same tokens as the blocks, with more context
    assert record["final"]["samples"] == (32 * len(blocks) - 32) // 8 + 1
    assert (tmp_path / "report" / "perplexity_vs_compression.png").exists()
    diffs = pd.read_csv(tmp_path / "report" / "differences.csv").set_index("variant")
    # + means a lower perplexity than the method's, as 100 x the log of the ratio
    assert (diffs["unit"] == "% of perplexity (100 x log ratio)").all()
    lc = runs[runs["method"] == "layercollapse"].set_index("seed")["perplexity"]
    kd = runs[runs["variant"] == "kd_random"].set_index("seed")["perplexity"]  # LayerCollapse's architecture
    assert diffs.at["kd_random", "pairing"] == "matched in 2 of 2"
    assert diffs.at["kd_random", "difference"] == pytest.approx((100 * np.log(kd / lc)).mean())
    assert "finetune" not in diffs.index  # the control is LayerCollapse's point at 1x, not a method
    assert diffs.at["kd_random", "verdict"].startswith("not testable at n=2")


def test_language_comparison_joins_the_notebooks_rows_on_the_structure():
    paper = load_paper(PAPER_LANGUAGE_CSV)
    agg = pd.DataFrame(
        [
            {
                "dataset": "glue_sst2",
                "model": "bert-base-uncased",
                "method": "original",
                "params_dense_mean": 109483778,
                "top1_mean": 92.0,
                "n": 3,
            },
            {
                "dataset": "glue_sst2",
                "model": "bert-base-uncased",
                "method": "layercollapse",
                "params_dense_mean": 92956418,
                "top1_mean": 91.0,
                "n": 3,
            },
            {
                "dataset": "glue_qqp",
                "model": "bert-base-uncased",
                "method": "original",
                "params_dense_mean": 109483778,
                "top1_mean": 90.0,
                "n": 3,
            },
        ]
    )
    table = language_comparison(agg, paper).set_index(["dataset", "setting"])
    assert table.loc[("glue_sst2", "original"), "paper"] == 92.66
    assert table.loc[("glue_sst2", "folded"), "difference"] == pytest.approx(91.0 - 91.17)
    # the notebook's QQP original is a cased BERT (108.31M): an uncased one is not joined to it
    assert ("glue_qqp", "original") not in table.index
    assert "A-bhimany-u08/bert-base-cased-qqp" in paper["original_checkpoint"].tolist()
    assert set(paper["source_repo"]) == {"sohail2810/LayerCollapse"}
    assert paper["source_cell"].str.len().gt(0).all() and paper["protocol"].str.len().gt(0).all()


def test_glue_and_wikitext_targets_plan_dry_and_need_their_folders():
    done = subprocess.run(["make", "-s", "reproduce-glue"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "set DATA=/path/to/data and MODELS=/path/to/models" in done.stdout
    dry = subprocess.run(
        ["make", "-s", "reproduce-wikitext", "DRY=1"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert dry.returncode == 0, dry.stderr
    assert "sweep wikitext: 144 runs" in dry.stdout and "GPU-hours" in dry.stdout
    plan = plan_sweep(REPO / "runs" / "glue.yaml", ["pretrain.pretrained=/models/{model}"])
    assert {r.cfg.dataset for r in plan.runs} == {
        f"glue_{t}" for t in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_mm", "qnli", "rte", "wnli")
    }
    assert {r.cfg.pretrain.pretrained for r in plan.stage("compress")} == {"/models/bert-base-uncased"}
    assert "bert-base-uncased" in BERT_SHAPES
    lc = [r for r in plan.stage("compress") if r.cfg.method == "layercollapse"]
    assert {
        (
            r.variant,
            r.cfg.method_args["k"],
            r.cfg.method_args["lam"],
            r.cfg.lr_schedule,
            r.cfg.method_args["force"],
        )
        for r in lc
    } == {("layercollapse", 4, 2000.0, "constant", False), ("layercollapse_official", 4, 10.0, "step", True)}
    # the folding recipe is predicted inside the band on every task; the official one is labelled forced
    notes = {(r.variant, r.cfg.dataset): LayerCollapse.plan_note(method_params(r.cfg), r.cfg) for r in lc}
    for (variant, dataset), note in notes.items():
        slope = float(note.split("-> ")[1][:5])
        if variant == "layercollapse":
            assert slope > 0.95, (dataset, note)
        else:
            assert note.endswith("forced fold") and slope < 0.95, (dataset, note)
    assert "slope -> " in dry.stdout and "slope -> 1.000" in dry.stdout  # the plan prints its prediction


@pytest.mark.parametrize("spec", ["glue", "wikitext"])
def test_the_official_bert_schedule_is_refused_at_plan_time_with_its_predicted_slope(spec):
    """x0.9 every 50 steps after a 500-step warm-up integrates the lr to about 0.07: with weight 10 the
    slopes cannot reach the band, and nothing may be spent finding that out."""
    bert_schedule = ["lr_schedule=step", "warmup_steps=500", "step_steps=50", "step_gamma=0.9"]
    path = REPO / "runs" / f"{spec}.yaml"
    overrides = [*bert_schedule, "pretrain.pretrained=/models/{model}"]
    spec_data = load_spec(path, overrides)
    spec_data["variants"] = {"layercollapse": {**spec_data["variants"]["layercollapse"], "lam": 10.0}}
    if spec == "glue":  # the recipe as it was, weight 10, on SST-2 (1,053 steps)
        spec_data["grid"] = {"dataset": ["glue_sst2"]}
    with pytest.raises(
        ConfigError, match=r"predicted not to fold: slope 0.01 -> 0\.[0-8]\d\d after [\d,]+ steps"
    ):
        expand(spec_data, str(path))
