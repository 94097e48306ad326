"""Fold feasibility before a run exists: the slope prediction against the real regulariser and optimizer,
refusals with their numbers and fixes, and structural checks on the meta device."""

import json
import re

import pytest
import torch
from torch import nn

from lcbench.methods.layercollapse import LayerCollapse, LayerCollapseParams
from lcbench.training import slopes
from lcbench.training.optim import build_scheduler, lr_factor
from lcbench.training.resolve import make_config, method_params
from tests.conftest import fast_overrides, run_cli


def _cfg(*extra: str):
    return make_config(
        {}, ["stage=compress", "method=layercollapse", "model=digits_mlp", "allow_unfolded=true", *extra]
    )


def _measured(cfg, lam: float, decoupled: bool, start: float) -> float:
    """The slope after every step of the run's schedule with the regulariser alone: the real optimizer,
    scheduler and LayerCollapse.after_step / loss (the task gradient left out, as the prediction does)."""
    prelu = nn.PReLU(num_parameters=1, init=start)
    optimizer = (
        torch.optim.SGD(prelu.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        if cfg.optimizer == "sgd"
        else torch.optim.AdamW(prelu.parameters(), lr=cfg.lr, weight_decay=0.0)
    )
    per_epoch = slopes.steps_per_epoch(cfg)
    scheduler = build_scheduler(optimizer, cfg, per_epoch, 0)
    params = LayerCollapseParams(lam=lam, regularizer="decoupled" if decoupled else "coupled")
    method = LayerCollapse.__new__(LayerCollapse)
    method.params, method.decoupled, method.prelus = params, decoupled, [prelu]
    for _ in range(cfg.epochs * per_epoch):
        optimizer.zero_grad()
        loss = method.loss(torch.zeros((), requires_grad=True), None, None, None, None)
        loss.backward()
        optimizer.step()
        method.after_step(optimizer)
        scheduler.step()
    return float(prelu.weight.detach())


@pytest.mark.parametrize(
    "extra, lam, decoupled",
    [
        (["optimizer=adamw", "epochs=3", "lr_schedule=cosine", "warmup_epochs=1"], 1.0, True),
        (["optimizer=adamw", "epochs=2", "lr_schedule=step", "warmup_steps=5", "step_steps=4"], 3.0, True),
        (["optimizer=sgd", "lr=0.01", "momentum=0.9", "epochs=3", "warmup_epochs=0"], 1.0, False),
        (["optimizer=sgd", "lr=0.002", "momentum=0.9", "epochs=2", "lr_schedule=linear"], 2.0, False),
    ],
)
def test_the_prediction_is_what_the_regulariser_alone_does_step_by_step(extra, lam, decoupled):
    cfg = _cfg(*extra, f"lam={lam}")
    predicted = slopes.predict(cfg, lam, decoupled, 0.01, 0.05)
    measured = _measured(cfg, lam, decoupled, 0.01)
    assert predicted.steps == cfg.epochs * 23  # 1,437 training images in batches of 64
    assert predicted.slope == pytest.approx(measured, abs=1e-5)


def test_a_coupled_term_under_adamw_is_bounded_by_the_learning_rate():
    cfg = _cfg("optimizer=adamw", "epochs=1", "lr_schedule=constant", "warmup_epochs=0", "lr=0.003")
    predicted = slopes.predict(cfg, 10.0, False, 0.0, 0.05)
    assert predicted.slope == pytest.approx(23 * 0.003)  # at most lr per step, whatever lam is
    assert _measured(cfg, 10.0, False, 0.0) <= predicted.slope + 1e-6
    assert "regulariser-only bound" in predicted.how


def test_the_step_schedule_has_no_jump_when_the_warm_up_ends():
    cfg = _cfg("lr_schedule=step", "warmup_steps=500", "step_steps=50", "step_gamma=0.9", "epochs=30")
    factors = [lr_factor(s, cfg, 23) for s in range(498, 603)]
    assert factors[1] == 1.0 and factors[2] == 1.0  # the last warm-up step, then the first decay period
    assert max(abs(a - b) for a, b in zip(factors, factors[1:])) <= 0.1 + 1e-12  # one x0.9 at a time


def test_the_default_command_of_a_new_user_is_predicted_to_fold_and_folds(tmp_path):
    """`lcbench run stage=compress method=layercollapse model=digits_mlp dataset=digits k=1`, every other
    setting default (AdamW lr 3e-3, cosine over 40 epochs, decoupled regulariser): it used to end at slope
    0.94, outside the band, at weight 1."""
    args = ["stage=compress", "method=layercollapse", "model=digits_mlp", "dataset=digits", "k=1"]
    cfg = make_config({}, args)
    predicted = LayerCollapse.prediction(method_params(cfg), cfg)
    assert predicted.folds and predicted.slope > 0.99 and predicted.steps == 920
    done = run_cli("run", *args, f"output_root={tmp_path}", "threads=1", "--no-progress", timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["blocks_folded"] == "1 of 1" and summary["compression"] > 7
    assert "NOT folded" not in done.stderr
    result = json.loads((tmp_path / summary["run_id"] / "result.json").read_text())
    assert result["method_report"]["predicted"]["slope"] == pytest.approx(predicted.slope)


def test_a_run_predicted_not_to_fold_is_refused_with_the_numbers_and_the_fixes(tmp_path):
    done = run_cli(
        "run", *fast_overrides(tmp_path / "out"), "stage=compress", "method=layercollapse", "lam=1"
    )
    assert done.returncode == 2
    assert "predicted not to fold: slope 0 -> 0.132" in done.stderr and "after 46 steps" in done.stderr
    assert "raise lam to" in done.stderr and "force=true" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was written


def test_impossible_blocks_are_refused_before_any_folder_exists(tmp_path):
    out = tmp_path / "out"
    for method_args in (["method=layercollapse", "k=9"], ["method=kd", "student=collapsed:9"]):
        done = run_cli("run", "stage=compress", "model=digits_vit", f"output_root={out}", *method_args)
        assert done.returncode == 2 and "digits_vit has 4 collapsible blocks" in done.stderr
        assert not out.exists()
    spec = tmp_path / "levels.yaml"
    spec.write_text(
        "base: {stage: compress, dataset: digits, model: digits_vit, output_root: " + str(out) + "}\n"
        "levels: [1, 9]\n"
        "variants: {lc: {method: layercollapse, k: '{level}'},\n"
        "           lr: {method: low_rank, match_collapse: '{level}'}}\n"
    )
    done = run_cli("plan", str(spec))
    assert done.returncode == 2 and "k=9: digits_vit has 4 collapsible blocks" in done.stderr
    assert not out.exists()


def test_forced_and_allowed_runs_are_planned_with_their_label():
    cfg = make_config({}, ["stage=compress", "method=layercollapse", "lam=1", "force=true", "epochs=2"])
    assert LayerCollapse.plan_note(method_params(cfg), cfg).endswith("forced fold")
    cfg = _cfg("lam=1", "epochs=2")
    assert LayerCollapse.plan_note(method_params(cfg), cfg).endswith("not folded (allowed)")


def test_a_later_parameter_at_its_default_keeps_every_published_run_id():
    from lcbench.training.identity import run_id

    base = ["stage=compress", "method=layercollapse", "k=1", "lam=10"]
    default = make_config({}, base)
    allowed = make_config({}, [*base, "allow_unfolded=true"])
    assert "allow_unfolded" not in json.dumps(
        __import__("lcbench.training.identity").training.identity.identity(default)
    )
    assert run_id(default) != run_id(allowed)


def test_an_unknown_data_size_predicts_nothing_and_refuses_nothing():
    cfg = make_config(
        {},
        [
            "stage=compress",
            "method=layercollapse",
            "model=vit_tiny_patch16_224",
            "dataset=imagefolder",
            "lam=0",
        ],
    )
    assert slopes.steps_per_epoch(cfg) is None
    assert LayerCollapse.plan_note(method_params(cfg), cfg) == "slope: unknown data size"


def test_a_run_that_did_not_fold_says_so_loudly(tmp_path):
    args = ["stage=compress", "method=layercollapse", "lam=0", "allow_unfolded=true"]
    done = run_cli("run", *fast_overrides(tmp_path, epochs=1), *args, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["blocks_folded"] == "0 of 1"
    assert re.search(
        r"warning: 1 of 1 blocks NOT folded: 6 \(slope 0\.0\d\d\); the model is not collapsed", done.stderr
    )
