"""layer_folding (Ben Dror et al.): its regulariser |1 - alpha^2| (coupled, or its decoupled step), the clip
at 0, the start at alpha = 0, the round to 0 or 1, the plan's bound under AdamW, the published scope (every
block, lam decides) and a run whose folded blocks make the structure it is saved and rebuilt with."""

import json

import pytest
import torch
from torch import nn

from lcbench.baselines.layer_folding import (
    LayerFolding,
    clip_nonnegative,
    decoupled_step,
    folding_regularizer,
    reachable,
    regularised_steps,
    rounds_to_one,
)
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training.cost import flops_per_sample, forward_flops
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config, method_params
from tests.conftest import fast_overrides, interrupt_then_resume


def test_the_regulariser_is_the_sum_of_abs_one_minus_alpha_squared_and_its_gradient_follows():
    alphas = torch.tensor([0.0, 0.5, 1.2], requires_grad=True)
    penalty = folding_regularizer([alphas])
    assert penalty.item() == pytest.approx(1.0 + 0.75 + 0.44)
    penalty.backward()
    # d|1 - a^2|/da = -2a below 1 and +2a above: zero at the start (a = 0), pulling toward 1 from both sides
    assert alphas.grad.tolist() == pytest.approx([0.0, -1.0, 2.4])


def test_slopes_are_clipped_at_zero_and_rounded_to_the_nearer_of_zero_and_one():
    prelu = nn.PReLU(num_parameters=1, init=-0.3)
    clip_nonnegative([prelu])
    assert prelu.weight.item() == 0.0
    assert [rounds_to_one(a) for a in (0.0, 0.49, 0.5, 1.0, 1.7)] == [False, False, True, True, True]


def test_a_run_starts_at_zero_folds_what_rounds_to_one_is_rebuilt_and_resumes(tmp_path, monkeypatch):
    args = ["stage=compress", "method=layer_folding", "k=2", "lam=10", "pretrain.epochs=2", "epochs=3"]
    args += ["optimizer=sgd", "lr=0.01", "momentum=0.9"]  # the authors' optimizer (under AdamW: lr per step)
    cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_mlp"), *args])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    run = RunDir(tmp_path, result["run_id"])
    first = json.loads(run.metrics_path.read_text().splitlines()[0])  # epoch 0, before any step
    assert first["event"] == "initial"
    assert [v for k, v in first.items() if k.startswith("slope/")] == [0.0, 0.0]  # alpha starts at 0
    folded = [b["block"] for b in report["blocks"] if b["slope"] >= 0.5]
    assert (
        folded and report["folded"] == folded and report["postfold_epochs"] == 1
    )  # lam 10 folds in 2 epochs
    after_fold = run.events("epoch")[-1]  # the post-fold epoch logs the unfolded blocks' slopes only
    logged = {k.removeprefix("slope/") for k in after_fold if k.startswith("slope/")}
    assert logged == set(report["not_folded"])
    model = load_model(run.model_path)
    assert sum(p.numel() for p in model.parameters()) == result["final"]["params_dense"]
    assert result["match"]["within_tolerance"] == (len(folded) == 2)
    # interrupted in the post-fold epoch (folded at the end of epoch 2), then started again: the fold is
    # re-applied before the checkpoint's weights load, and the run ends where the uninterrupted one did
    resumed = make_config({}, [*fast_overrides(tmp_path / "resumed", model="digits_mlp"), *args])
    again = interrupt_then_resume(resumed, LayerFolding, 3, monkeypatch)
    assert again["method_report"]["folded"] == report["folded"]
    assert (
        again["final"]["top1"] == result["final"]["top1"]
        and again["final"]["loss"] == result["final"]["loss"]
    )


def test_after_a_partial_fold_each_logged_slope_is_its_own_blocks():
    method = LayerFolding.__new__(LayerFolding)  # the logging alone, on a model whose block "3" is folded
    method.order, method.folded = ["3", "1"], ["3"]
    model = nn.Sequential(nn.Linear(2, 2), nn.PReLU(init=0.2), nn.Linear(2, 2), nn.Identity(), nn.Identity())
    assert method.epoch_metrics(model) == {"slope/1": pytest.approx(0.2)}


def test_the_decoupled_step_is_the_penalty_gradient_step_toward_one_without_overshoot():
    alphas = torch.tensor([0.0, 0.25, 0.99, 1.5])
    decoupled_step([alphas], lr=0.1, lam=1.0)  # 2 lr lam a: 0, 0.05, (0.198 > 0.01: to 1), (0.3 toward 1)
    assert alphas.tolist() == pytest.approx([0.0, 0.30, 1.0, 1.2])


def test_the_plan_bound_is_adams_lr_per_step_and_refuses_a_recipe_that_cannot_reach_one_half(tmp_path):
    text = ["stage=compress", "method=layer_folding", "scope=all", "dataset=text_stdlib", "model=text_gpt2"]
    text += ["optimizer=adamw", "lr=1e-3", "epochs=2", "lr_schedule=constant", "warmup_epochs=0"]
    text += [f"output_root={tmp_path}"]
    with pytest.raises(ConfigError, match="cannot fold any block") as refused:
        make_config({}, text)
    # constant lr 1e-3 over the regularised epoch's steps: a coupled slope reaches at most steps x 1e-3
    steps = int(str(refused.value).split(" after ")[1].split(" ")[0].replace(",", ""))
    assert f"reaches at most {steps * 1e-3:.3f} after" in str(refused.value)
    assert "use regularizer=auto" in str(refused.value) and "a decoupled lam of at least" in str(
        refused.value
    )
    lam = str(refused.value).split("a decoupled lam of at least ")[1].split(" ")[0]
    cfg = make_config({}, [*text, "regularizer=auto", f"lam={lam}"])  # the lam the message names: planned
    params = LayerFolding.Params(scope="all", regularizer="auto", lam=float(lam))
    assert "slopes reach at most" in LayerFolding.plan_note(params, cfg)
    bound, n = LayerFolding.bound(params, cfg)  # the regularised epoch: the post-fold one is not counted
    assert bound >= 0.5 and n == steps
    assert reachable(cfg, float(lam), True)[1] == 2 * steps  # both epochs
    assert reachable(make_config({}, [*text, "optimizer=sgd", "allow_unfolded=true"]), 1.0, False) is None


def test_the_published_scope_regularises_every_block_and_what_it_keeps_is_its_decision(tmp_path):
    args = ["stage=compress", "method=layer_folding", "scope=all", "lam=10", "pretrain.epochs=2", "epochs=3"]
    args += ["optimizer=sgd", "lr=0.01", "momentum=0.9"]
    cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_vit"), *args])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert report["scope"] == "all" and len(report["selected"]) == 4  # every MLP of the ViT's 4 blocks
    assert "not_folded" not in report and set(report["kept"]) | set(report["folded"]) == set(
        report["selected"]
    )
    assert result.get("match") is None  # no target to miss: it is compared where it lands
    model = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    assert sum(p.numel() for p in model.parameters()) == result["final"]["params_dense"]


def test_the_bound_reads_the_regularised_epochs_at_the_whole_runs_schedule(tmp_path):
    """Cosine over 2 epochs, the fold after the first: the bound sums that epoch's (higher) rates, not those
    of a cosine squeezed into one epoch."""
    from lcbench.training import slopes

    args = ["stage=compress", "method=layer_folding", "scope=all", "dataset=text_stdlib", "model=text_gpt2"]
    args += ["optimizer=adamw", "lr=1e-3", "epochs=2", "lr_schedule=cosine", "warmup_epochs=0"]
    cfg = make_config({}, [*args, "allow_unfolded=true", f"output_root={tmp_path}"])
    per_epoch = slopes.steps_per_epoch(cfg)
    first_epoch = slopes.learning_rates(cfg, per_epoch)[:per_epoch]
    bound, steps = LayerFolding.bound(LayerFolding.Params(scope="all"), cfg)
    assert steps == per_epoch and bound == pytest.approx(first_epoch.sum())


def test_a_post_fold_phase_in_steps_folds_mid_epoch_and_trains_the_folded_model_after(tmp_path):
    """GLUE and WikiText train an epoch: `postfold_fraction` puts the fold at a step (here step 41 of 69,
    inside epoch 2); the steps after it train the folded, smaller model, which the FLOPs count."""
    from lcbench.training import slopes

    args = ["stage=compress", "method=layer_folding", "k=2", "lam=10", "pretrain.epochs=2", "epochs=3"]
    args += ["optimizer=sgd", "lr=0.01", "momentum=0.9", "postfold_epochs=0", "postfold_fraction=0.4"]
    cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_mlp"), *args])
    per_epoch = slopes.steps_per_epoch(cfg)
    assert per_epoch == 23 and regularised_steps(method_params(cfg), 3 * per_epoch, per_epoch) == 41
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert report["postfold_fraction"] == 0.4 and report["folded"]
    flops = result["cost"]["train_flops"]
    samples = result["cost"]["samples_seen"]
    dense, folded = (
        flops_per_sample(forward_flops(result[key]["gmacs"]), 0, 0) for key in ("original", "final")
    )
    assert samples * folded < flops < samples * dense  # part of the run trained the folded model
    with pytest.raises(ConfigError, match="both set the post-fold phase; give one"):
        make_config({}, [*fast_overrides(tmp_path, model="digits_mlp"), *args[:-2], "postfold_fraction=0.4"])
