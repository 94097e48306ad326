"""The `layercollapse` method and the `finetune` control end to end on digits, and `lcbench collapse`."""

import pytest
from torch import nn

from lcbench.cli import main
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training import examples
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from lcbench.training.tasks import TASKS
from tests.conftest import fast_overrides, interrupt_then_resume

LC = ["stage=compress", "method=layercollapse", "optimizer=sgd", "lr=0.01", "lam=2", "pretrain.epochs=3"]


def lc_config(out, *extra, **kw):
    return make_config({}, [*LC, *fast_overrides(out, **kw), *extra])


def test_oneshot_regularizes_folds_and_reports(tmp_path):
    cfg = lc_config(tmp_path, "model=digits_mlp", "k=2", epochs=4)
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert report["selected"] == ["6", "2"]  # nearest the output first
    assert report["folded"] == ["6", "2"] and report["not_folded"] == []
    for block in report["blocks"]:
        assert abs(block["slope"] - 1) < 0.05 and block["max_abs_diff"] >= 0 and not block["forced"]
    # the whole MLP became one Linear 64 -> 10, measured by the shared code
    assert result["final"]["params_dense"] == 64 * 10 + 10 and result["final"]["depth"] == 1
    assert result["compression"] > 400 and result["original"]["depth"] == 3
    assert report["regularized"]["params_dense"] > result["final"]["params_dense"]
    # the regularised model's per-example outcomes are kept beside the final model's and the original's
    kept = examples.read(RunDir(tmp_path, run_id(cfg)).path, result["examples"])
    assert sorted(kept) == ["final", "original", "prefold"]
    assert TASKS["classification"].metrics_of(kept["prefold"])["top1"] == report["regularized"]["top1"]
    epochs = RunDir(tmp_path, run_id(cfg)).events("epoch")
    assert len(epochs) == 4 and all("slope/6" in e and "slope/2" in e for e in epochs)
    # ReLU sources start at slope 0 (distance 1); the regularizer brings them within the threshold
    assert all(abs(e["slope/2"] - 1) < 1 for e in epochs) and abs(epochs[-1]["slope/2"] - 1) < 0.05
    # the saved model is the collapsed one and reproduces the recorded accuracy
    model = load_model(RunDir(tmp_path, run_id(cfg)).model_path)
    assert [type(m) for m in model if not isinstance(m, nn.Identity)] == [nn.Flatten, nn.Linear]


def test_slopes_that_stay_far_from_one_are_not_folded(tmp_path):
    with pytest.raises(ConfigError, match="predicted not to fold: slope 0 -> 0.000 after 23 steps"):
        lc_config(tmp_path, "model=digits_mlp", "k=1", "lam=0", epochs=1)  # refused before it runs
    cfg = lc_config(tmp_path, "model=digits_mlp", "k=1", "lam=0", "allow_unfolded=true", epochs=1)
    report = execute(cfg, progress_bar=False)["method_report"]
    assert report["folded"] == [] and report["not_folded"] == ["6"]
    assert "threshold" in report["blocks"][0]["reason"]
    forced = execute(
        lc_config(tmp_path, "model=digits_mlp", "k=1", "lam=0", "force=true", epochs=1), progress_bar=False
    )
    assert forced["method_report"]["forced"] == ["6"] and forced["compression"] > 1


@pytest.mark.slow
def test_progressive_folds_one_block_at_a_time_and_resumes(tmp_path, monkeypatch):
    from lcbench.methods.layercollapse import LayerCollapse

    args = ["model=digits_vit", "k=2", "schedule=progressive", "lr_cycle_epochs=2"]
    cfg = lc_config(tmp_path / "clean", *args, epochs=4)
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert report["folded"] == ["blocks.3.mlp.act", "blocks.2.mlp.act"]
    epochs = RunDir(tmp_path / "clean", run_id(cfg)).events("epoch")
    # block 3 alone for two epochs, then (folded) only block 2 carries a slope
    assert "slope/blocks.3.mlp.act" in epochs[0] and "slope/blocks.2.mlp.act" not in epochs[0]
    assert "slope/blocks.3.mlp.act" not in epochs[2] and "slope/blocks.2.mlp.act" in epochs[2]

    # interrupted during epoch 4 (block 3 already folded at epoch 2), then started again
    resumed = lc_config(tmp_path / "resumed", *args, epochs=4)
    again = interrupt_then_resume(resumed, LayerCollapse, 4, monkeypatch)
    run = RunDir(tmp_path / "resumed", run_id(resumed))
    assert [e["epoch"] for e in run.events() if e["event"] == "resume"] == [3]
    assert again["final"]["top1"] == result["final"]["top1"]
    assert again["final"]["loss"] == result["final"]["loss"]
    assert again["method_report"]["folded"] == report["folded"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["model=digits_vit", "k=5"], "k=5: digits_vit has 4 collapsible blocks, so it must be in 1..4"),
        (["model=digits_vit", "blocks=[blocks.7.mlp]"], "no collapsible block 'blocks.7.mlp'"),
        (["model=digits_vit", "threshold=0"], "threshold: must be > 0"),
        (["model=digits_vit", "lam=-1"], "lam: must be >= 0"),
        (["model=digits_vit", "k=3", "schedule=progressive"], "must be a multiple of 3"),
    ],
)
def test_bad_layercollapse_parameters(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        execute(lc_config(tmp_path, *extra, epochs=2), progress_bar=False)


def test_model_without_collapsible_blocks_is_named_before_any_folder_exists(tmp_path, image_folder):
    with pytest.raises(ConfigError, match="resnet18 has no collapsible block"):
        lc_config(
            tmp_path,
            "model=resnet18",
            "dataset=imagefolder",
            f"data_root={image_folder}",
            "img_size=16",
            epochs=1,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["imgs"]  # no run folder in the output root


def test_finetune_control_keeps_the_architecture(tmp_path):
    cfg = make_config(
        {},
        [
            "stage=compress",
            "method=finetune",
            "pretrain.epochs=2",
            *fast_overrides(tmp_path, model="digits_mixer", epochs=1),
        ],
    )
    result = execute(cfg, progress_bar=False)
    assert result["final"]["params_dense"] == result["original"]["params_dense"]
    assert result["compression"] == pytest.approx(
        result["original"]["params_dense"] / result["final"]["params_nonzero"]
    )
    assert result["cost"]["epochs"] == 1 and result["pretrain_run_id"]


def test_post_training_collapse_command(tmp_path, capsys):
    cfg = lc_config(tmp_path, "model=digits_vgg", "k=2", "threshold=1e-9", "allow_unfolded=true", epochs=1)
    result = execute(cfg, progress_bar=False)
    assert result["method_report"]["folded"] == []
    run_dir = RunDir(tmp_path, run_id(cfg)).path
    assert main(["collapse", str(run_dir)]) == 2  # nothing within the threshold: said, nothing written
    assert "nothing to fold" in capsys.readouterr().err and not (run_dir / "collapsed.pt").exists()
    assert main(["collapse", str(run_dir), "--force"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert all(b["folded"] and b["forced"] for b in report["blocks"])
    assert report["params_after"] < report["params_before"]
    collapsed = load_model(run_dir / "collapsed.pt")
    linears = [m for m in collapsed.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 10)]
    assert (run_dir / "collapsed.report.json").exists()
    assert main(["collapse", str(tmp_path / "nope")]) == 2


def test_post_training_collapse_of_a_language_model_reports_perplexity(tmp_path, capsys):
    cfg = lc_config(
        tmp_path,
        "model=text_gpt2",
        "dataset=text_stdlib",
        "k=2",
        "threshold=1e-9",  # nothing qualifies during training
        "allow_unfolded=true",
        "label_smoothing=0",
        "pretrain.epochs=1",
        "pretrain.label_smoothing=0",
        "latency_batch=2",
        epochs=1,
    )
    result = execute(cfg, progress_bar=False)
    assert result["method_report"]["folded"] == [] and result["metric"] == "perplexity"
    run_dir = RunDir(tmp_path, run_id(cfg)).path
    assert main(["collapse", str(run_dir)]) == 2  # nothing within the threshold: said, nothing written
    assert "nothing to fold" in capsys.readouterr().err and not (run_dir / "collapsed.pt").exists()
    assert main(["collapse", str(run_dir), "--force"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["metric"] == "perplexity" and report["perplexity_before"] > 1
    assert (
        report["params_before"] - report["params_after"] == 2 * (64 * 256 * 2 + 256 + 64 - (64 * 64 + 64)) + 2
    )
    mlp = load_model(run_dir / "collapsed.pt").lm.transformer.h[3].mlp
    assert isinstance(mlp.c_proj, nn.Identity) and mlp.c_fc.out_features == 64


def _slope_distance(tmp_path, lam: float, regularizer: str = "auto") -> float:
    from lcbench.training.pipeline import execute
    from lcbench.training.resolve import make_config
    from tests.conftest import fast_overrides

    cfg = make_config(
        {},
        [
            "stage=compress",
            "method=layercollapse",
            "k=1",
            f"lam={lam}",
            f"regularizer={regularizer}",
            "allow_unfolded=true",
            "optimizer=adamw",
            "lr_schedule=constant",
            "lr=3e-3",
            "weight_decay=0",
            "pretrain.epochs=2",
            "threshold=1e-9",
            *fast_overrides(tmp_path, model="digits_mlp", epochs=1),
        ],
    )
    result = execute(cfg, progress_bar=False)
    (block,) = result["method_report"]["blocks"]
    assert result["method_report"]["regularizer"] == ("coupled" if regularizer == "coupled" else "decoupled")
    return block["distance"]


def test_under_adamw_lambda_sets_how_fast_slopes_reach_one(tmp_path):
    """AdamW normalises a coupled (a-1)^2 term away (slopes move ~lr per step whatever lam is); the
    decoupled regulariser, the default under AdamW, makes lam matter."""
    weak, strong = _slope_distance(tmp_path, 1.0), _slope_distance(tmp_path, 10.0)
    assert strong < 0.5 * weak
    coupled_weak = _slope_distance(tmp_path, 1.0, "coupled")
    coupled_strong = _slope_distance(tmp_path, 10.0, "coupled")
    assert coupled_strong > 0.8 * coupled_weak  # the trap the decoupled form avoids
