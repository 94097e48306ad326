"""Sweep specs: expansion into runs, pretrain deduplication, overrides, `lcbench plan`, and bad specs."""

import pytest
import yaml

from lcbench.cli import main
from lcbench.core.config import pretrain_config
from lcbench.core.errors import ConfigError
from lcbench.execution.sweep import load_spec, plan_sweep, training_flops
from lcbench.training.identity import run_id


def write_spec(tmp_path, **spec):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


BASE = {"dataset": "digits", "epochs": 1, "output_root": "OUT"}


def test_grid_variants_and_seeds_expand_to_their_product(tmp_path):
    path = write_spec(
        tmp_path,
        name="s",
        base=BASE,
        grid={"model": ["digits_mlp", "digits_vgg"], "lr": [0.01, 0.1]},
        seeds=[0, 1],
        variants={
            "lc": {"method": "layercollapse", "k": [1, 2], "allow_unfolded": True},
            "ft": {"method": "finetune"},
        },
    )
    plan = plan_sweep(path)
    compress = plan.stage("compress")
    assert len(compress) == 2 * 2 * (2 + 1) * 2
    # seeds are independent replicates: one pretrain per model and seed (its own original model), shared
    # by every lr and method of that seed; listed first
    pretrains = plan.stage("pretrain")
    assert [(r.cfg.model, r.cfg.seed) for r in pretrains] == [
        ("digits_mlp", 0), ("digits_mlp", 1), ("digits_vgg", 0), ("digits_vgg", 1)
    ]  # fmt: skip
    assert plan.runs[:4] == pretrains
    assert all(r.cfg.pretrain.seed == r.cfg.seed for r in compress)
    assert all(r.depends_on == run_id(pretrain_config(r.cfg)) for r in compress)
    lc = [r for r in compress if r.variant == "lc"]
    assert {r.level_label for r in lc} == {"k=1", "k=2"}
    assert {r.cfg.method_args["k"] for r in lc} == {1, 2}
    assert all(r.level == {} for r in compress if r.variant == "ft")
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    assert {r.cfg.tracking.group for r in plan.runs} == {"s"}  # the sweep is the W&B group


def test_spec_without_variants_plans_its_base_stage(tmp_path):
    path = write_spec(
        tmp_path, base={**BASE, "stage": "pretrain"}, grid={"model": ["digits_mlp", "digits_vit"]}
    )
    plan = plan_sweep(path)
    assert plan.name == "sweep" and [r.stage for r in plan.runs] == ["pretrain", "pretrain"]


def test_overrides_change_base_grid_and_seeds(tmp_path):
    path = write_spec(
        tmp_path,
        base=BASE,
        grid={"model": ["digits_mlp", "digits_vgg"]},
        seeds=[0, 1, 2],
        variants={"ft": {"method": "finetune"}},
    )
    plan = plan_sweep(path, ["epochs=3", "model=digits_mlp", "seeds=[5]", "pretrain.epochs=7"])
    compress = plan.stage("compress")
    assert [(r.cfg.model, r.cfg.seed, r.cfg.epochs) for r in compress] == [("digits_mlp", 5, 3)]
    assert plan.stage("pretrain")[0].cfg.epochs == 7


def test_a_literal_list_value_is_written_inside_a_list(tmp_path):
    path = write_spec(
        tmp_path,
        base=BASE,
        variants={"lc": {"method": "layercollapse", "blocks": [["6", "2"]], "allow_unfolded": True}},
    )
    (run,) = plan_sweep(path).stage("compress")
    assert run.cfg.method_args["blocks"] == ["6", "2"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"base": BASE, "grids": {"model": ["digits_mlp"]}}, "unknown sweep key(s) grids"),
        ({"base": BASE, "grid": {"model": []}}, "'model' is an empty list"),
        ({"base": BASE, "seeds": []}, "'seeds' is an empty list"),
        ({"base": BASE, "variants": {"lc": {"k": [1]}}}, "variant 'lc' must be a mapping with a 'method'"),
        (
            {
                "base": BASE,
                "variants": {"lc": {"method": "layercollapse", "k": [1, 0], "allow_unfolded": True}},
            },
            "variant lc {'k': 0}",
        ),
        ({"base": {**BASE, "epochz": 1}, "variants": {"ft": {"method": "finetune"}}}, "epochz"),
        ({"base": {**BASE, "stage": "pretrain"}, "variants": {"ft": {"method": "finetune"}}}, "base stage"),
        ({"base": BASE, "grid": ["model"]}, "'grid' must be a mapping"),
    ],
)
def test_bad_specs_are_errors_that_name_the_problem(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=None) as err:
        plan_sweep(write_spec(tmp_path, **spec))
    assert message in str(err.value)


def test_missing_spec_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_cost_estimate_uses_the_models_macs(tmp_path):
    path = write_spec(
        tmp_path,
        base={**BASE, "epochs": 2},
        grid={"model": ["digits_mlp"]},
        variants={"ft": {"method": "finetune"}, "kd": {"method": "kd", "student": "digits_mlp"}},
    )
    plan = plan_sweep(path)
    flops = training_flops(plan)
    ft, kd = plan.stage("compress")
    # digits_mlp: 0.300032 MMACs forward; 1437 training images; forward + backward = 3 x forward
    assert flops[ft.run_id] == pytest.approx(3 * 2 * 0.300032e6 * 1437 * 2)
    # KD's teacher forward is counted as the trainer counts it (it was left out of the estimate)
    assert flops[kd.run_id] == pytest.approx(4 * 2 * 0.300032e6 * 1437 * 2)


def test_plan_command_prints_runs_and_estimate(tmp_path, capsys):
    path = write_spec(
        tmp_path,
        base={**BASE, "output_root": str(tmp_path / "out")},
        grid={"model": ["digits_mlp"]},
        seeds=[0, 1],
        variants={"ft": {"method": "finetune"}},
    )
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs (2 pretrain, 2 compress)" in out and "GPU-hours" in out  # an original per seed
    assert "compress); 4 missing" in out  # nothing ran yet, said as a person reads it
    estimate = next(line for line in out.splitlines() if line.startswith("to run:"))
    assert "< 0.01 GPU-hours" in estimate and "e-0" not in estimate.split("=")[1]  # not 4.45e-07 GPU-hours
    assert not (tmp_path / "out").exists()  # planning runs nothing and writes nothing
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2


def test_levels_in_the_papers_block_unit_count_both_mixer_mlps(tmp_path):
    path = write_spec(
        tmp_path,
        base=BASE,
        grid={"model": ["digits_mixer", "digits_vit"]},
        levels={"default": [1], "digits_mixer": {"blocks": [1, 2]}},
        variants={"lc": {"method": "layercollapse", "k": "{level}", "allow_unfolded": True}},
    )
    levels = {(r.cfg.model, r.matched_level) for r in plan_sweep(path).stage("compress")}
    assert levels == {("digits_mixer", 2), ("digits_mixer", 4), ("digits_vit", 1)}
    bad = write_spec(
        tmp_path,
        base=BASE,
        grid={"model": ["digits_vit"]},
        levels={"blocks": [1], "mlps": [1]},
        variants={"lc": {"method": "layercollapse", "k": "{level}", "allow_unfolded": True}},
    )
    with pytest.raises(ConfigError, match="must name one unit"):
        plan_sweep(bad)


def test_paper_block_of_a_mixer_is_its_token_and_channel_mlp():
    from lcbench.zoo import collapse
    from lcbench.zoo.models import create_model, mlps_per_block

    assert mlps_per_block("mixer_b16_224") == 2 and mlps_per_block("vit_base_patch16_224") == 1
    model = create_model("digits_mixer", 10, 1)
    last_two = [b.container for b in collapse.select_blocks(model, 2)]
    assert last_two == ["blocks.3.mlp_channels", "blocks.3.mlp_tokens"]  # one MixerBlock


def test_a_variant_can_be_limited_to_some_models_and_levels(tmp_path):
    path = write_spec(
        tmp_path,
        base=BASE,
        grid={"model": ["digits_mlp", "digits_vit"]},
        levels=[1, 2],
        variants={
            "kd": {"method": "kd", "student": "collapsed:{level}", "init": "random"},
            "kd_5x": {
                "method": "kd",
                "student": "collapsed:{level}",
                "epochs": 5,
                "only": {"model": ["digits_vit"], "level": [1]},
            },
        },
    )
    runs = plan_sweep(path).stage("compress")
    assert {(r.cfg.model, r.matched_level) for r in runs if r.variant == "kd_5x"} == {("digits_vit", 1)}
    assert len([r for r in runs if r.variant == "kd"]) == 4


def test_a_variant_can_have_levels_of_its_own(tmp_path):
    """LayerCollapse at every k a model has (its frontier), the others at the spec's shared level."""
    path = write_spec(
        tmp_path,
        base=BASE,
        grid={"model": ["digits_vit", "digits_mixer"]},
        levels=[2],
        variants={
            "lc": {"method": "layercollapse", "k": "{level}", "allow_unfolded": True,
                   "levels": {"default": [1, 2, 3, 4], "digits_mixer": {"blocks": [1, 2]}}},
            "kd": {"method": "kd", "student": "collapsed:{level}"},
        },
    )  # fmt: skip
    runs = plan_sweep(path).stage("compress")
    assert sorted(r.matched_level for r in runs if r.variant == "lc" and r.cfg.model == "digits_vit") == [
        1,
        2,
        3,
        4,
    ]
    assert sorted(r.matched_level for r in runs if r.variant == "lc" and r.cfg.model == "digits_mixer") == [
        2,
        4,
    ]
    assert {r.matched_level for r in runs if r.variant == "kd"} == {2}


def test_a_run_that_would_repeat_another_is_left_out_of_the_plan_with_its_reason(tmp_path, capsys):
    """KD init=teacher into digits_mlp's collapsed:2 student copies nothing: the same run as init=random.
    The sweep plans it once (as init=random) and `plan` says why the other is not planned."""
    path = write_spec(
        tmp_path,
        base=BASE,
        grid={"model": ["digits_mlp"]},
        levels=[1, 2],
        seeds=[0, 1],
        variants={
            "kd_random": {"method": "kd", "student": "collapsed:{level}", "init": "random"},
            "kd_teacher": {"method": "kd", "student": "collapsed:{level}", "init": "teacher"},
        },
    )
    plan = plan_sweep(path)
    teacher = [r for r in plan.stage("compress") if r.variant == "kd_teacher"]
    assert {r.matched_level for r in teacher} == {1} and len(teacher) == 2  # level 1 copies the first Linear
    assert len(plan.skipped) == 1 and plan.skipped[0].startswith("kd_teacher at digits_mlp level=2: ")
    assert "copies nothing" in plan.skipped[0] and "run init=random instead" in plan.skipped[0]
    assert main(["plan", str(path), f"output_root={tmp_path / 'out'}"]) == 0
    assert "not planned: kd_teacher at digits_mlp level=2" in capsys.readouterr().out


def test_the_reference_method_is_a_setting_of_the_spec(tmp_path):
    variants = {"ft": {"method": "finetune"}, "kd": {"method": "kd"}}
    assert plan_sweep(write_spec(tmp_path, base=BASE, variants=variants)).reference == "layercollapse"
    assert plan_sweep(write_spec(tmp_path, base=BASE, variants=variants, reference="kd")).reference == "kd"
    with pytest.raises(ConfigError, match="reference: unknown method 'lc'"):
        plan_sweep(write_spec(tmp_path, base=BASE, variants=variants, reference="lc"))


def test_a_spec_can_share_one_original_between_its_seeds(tmp_path):
    base = {**BASE, "pretrain": {"seed": 0}}
    variants = {"lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True}}
    path = write_spec(tmp_path, base=base, grid={"model": ["digits_mlp"]}, seeds=[0, 1, 2], variants=variants)
    plan = plan_sweep(path)
    assert len(plan.stage("pretrain")) == 1
    assert {r.cfg.pretrain.seed for r in plan.stage("compress")} == {0}
    assert {r.cfg.seed for r in plan.stage("compress")} == {0, 1, 2}


def test_the_margin_is_a_setting_of_the_spec(tmp_path):
    variants = {"lc": {"method": "layercollapse", "k": 1, "allow_unfolded": True}}
    path = write_spec(tmp_path, base=BASE, grid={"model": ["digits_mlp"]}, variants=variants, margin=0.25)
    assert plan_sweep(path).margin == 0.25
    assert plan_sweep(path, ["margin=1"]).margin == 1.0
    with pytest.raises(ConfigError, match="margin must be a positive number"):
        plan_sweep(path, ["margin=-1"])
