"""The verdict rule on constructed per-example records: paired differences, equivalence, underpowered,
zero-width intervals, McNemar and TOST against statsmodels, Holm, and the claims built on them."""

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from lcbench.analysis.claims import claims_table
from lcbench.analysis.cost import flops_to_reach
from lcbench.analysis.headline import add_scores
from lcbench.analysis.outcomes import Outcomes
from lcbench.analysis.stats import paired_differences
from lcbench.analysis.verdicts import (
    Rule,
    Verdict,
    compare,
    decide,
    holm,
    mcnemar_p,
    tost_replicates,
    wording,
)
from lcbench.training import examples

N = 360  # a digits held-out split


def outcomes(correct: np.ndarray, seed: int) -> dict:
    """Classification outcomes whose top-1 is right exactly where `correct` is (targets fixed per seed)."""
    target = (np.arange(len(correct)) + seed) % 10
    predicted = np.where(correct, target, (target + 1) % 10)
    return {
        "target": target.astype(np.int32),
        "predicted": predicted.astype(np.int32),
        "top5": np.ones(len(correct), bool),
        "loss": np.zeros(len(correct), np.float32),
        "classes": np.full(len(correct), 10, np.int32),
    }


def run(
    root, variant, method, seed, correct, level=1.0, matched=True, epochs=3, flops=1.0, init="", **groups
):
    """One compress run's row, its per-example record written under `root` (extra groups: original=...)."""
    run_id = f"{variant}-{seed}-{level}"
    folder = root / run_id
    folder.mkdir(parents=True, exist_ok=True)
    kept = examples.write(
        folder, {"final": outcomes(correct, seed), **{g: outcomes(c, seed) for g, c in groups.items()}}
    )
    (folder / "result.json").write_text(json.dumps({"status": "completed", "examples": kept}))
    top1 = 100 * float(np.mean(correct))
    return dict(
        run_id=run_id,
        stage="compress",
        status="completed",
        dataset="digits",
        model="m",
        level=level,
        paper_blocks=level,
        variant=variant,
        method=method,
        seed=seed,
        replicate=seed,
        top1=top1,
        matched=matched,
        epochs=epochs,
        train_flops=flops,
        init=init,
        base_top1=98.0,
        compression=1.5,
        top1_prefold=top1,
    )


def accuracy(n: int, right: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 vector with exactly `right` ones in random places."""
    correct = np.zeros(n, bool)
    correct[rng.choice(n, right, replace=False)] = True
    return correct


def sweep(tmp_path, lc: list[np.ndarray], others: dict[str, list[np.ndarray]], matched=None):
    """A frame of LayerCollapse and other variants (one per seed each) with their records written."""
    rows = [run(tmp_path, "layercollapse", "layercollapse", s, c) for s, c in enumerate(lc)]
    for variant, per_seed in others.items():
        method = {"kd_teacher": "kd", "finetune": "finetune"}.get(variant, variant)
        for s, c in enumerate(per_seed):
            ok = True if matched is None else matched[s]
            rows.append(run(tmp_path, variant, method, s, c, matched=ok, init="teacher" * (method == "kd")))
    frame = add_scores(pd.DataFrame(rows))
    return frame, Outcomes(frame, tmp_path)


def flip(correct: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = correct.copy()
    out[where] = ~out[where]
    return out


def test_identical_replicates_one_image_apart_are_never_better(tmp_path):
    """The case that read `+0.28 [+0.28, +0.28]` "LayerCollapse better": in every seed the other method
    gets one image wrong that LayerCollapse gets right, and nothing else differs."""
    rng = np.random.default_rng(0)
    lc = [accuracy(N, 350, rng) for _ in range(3)]
    other = [flip(c, np.flatnonzero(c)[:1]) for c in lc]  # one image LayerCollapse has right, wrong here
    frame, outcomes_ = sweep(tmp_path, lc, {"magnitude_pruning": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["difference"] == pytest.approx(100 / N)
    assert row["ci_low"] <= 0 < row["ci_high"]  # the test sample's uncertainty is there
    assert row["decision"] in ("underpowered", "equivalent") and "better" not in row["verdict"]
    assert "screening, n=3" in row["verdict"]
    assert row["mcnemar_p"] == "1 1 1"


def test_a_constructed_equivalent_pair_is_equivalent(tmp_path):
    """10,000 test images, 5 seeds, the two methods disagreeing on 2% of images in both directions."""
    rng = np.random.default_rng(1)
    lc, other = [], []
    for _ in range(5):
        a = accuracy(10_000, 9_000, rng)
        right, wrong = np.flatnonzero(a), np.flatnonzero(~a)
        b = flip(
            a,
            np.concatenate(
                [
                    rng.choice(right, 100, replace=False),
                    rng.choice(wrong, 100 + int(rng.integers(-10, 10)), replace=False),
                ]
            ),
        )
        lc.append(a)
        other.append(b)
    frame, outcomes_ = sweep(tmp_path, lc, {"finetune": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["decision"] == "equivalent", row["verdict"]
    assert -0.5 < row["ci90_low"] and row["ci90_high"] < 0.5 and row["p_equivalence_holm"] < 0.05
    assert "screening" not in row["verdict"]  # five replicates: a confirmatory verdict


def test_a_clear_difference_is_better_and_practically_so(tmp_path):
    rng = np.random.default_rng(2)
    lc = [accuracy(N, 340, rng) for _ in range(5)]
    other = [flip(c, np.flatnonzero(c)[: 20 + s]) for s, c in enumerate(lc)]  # 20-24 images worse
    frame, outcomes_ = sweep(tmp_path, lc, {"kd_teacher": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["decision"] == "better" and row["practical"] == "beyond the margin"
    assert row["verdict"] == "LayerCollapse better (practically)"
    assert row["ci_low"] > 0.5 and row["p_reference_ahead"] == 1.0


def test_seed_to_seed_spread_widens_the_interval(tmp_path):
    """The same mean difference, once the same in every seed and once spread between seeds: the
    hierarchical bootstrap's interval must be wider for the second (the seeds' variance counts)."""
    rng = np.random.default_rng(3)
    lc = [accuracy(N, 340, rng) for _ in range(4)]
    steady = [flip(c, np.flatnonzero(c)[:6]) for c in lc]
    spread = [flip(c, np.flatnonzero(c)[:k]) for c, k in zip(lc, (0, 1, 11, 12))]
    widths = []
    for name, other in (("steady", steady), ("spread", spread)):
        frame, outcomes_ = sweep(tmp_path / name, lc, {"low_rank": other})
        row = paired_differences(frame, outcomes_).iloc[0]
        assert row["difference"] == pytest.approx(600 / N)
        widths.append(row["ci_high"] - row["ci_low"])
    assert widths[1] > 1.3 * widths[0]


def test_identical_predictions_are_not_certainty(tmp_path):
    """No example differs: the bootstrap has zero width. That is never "better"; it is "equivalent" only
    when the exact binomial bound on 0 discordant of N lies inside the margin."""
    rng = np.random.default_rng(4)
    same = [accuracy(N, 350, rng) for _ in range(3)]
    frame, outcomes_ = sweep(tmp_path / "three", same, {"finetune": [c.copy() for c in same]})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["ci_low"] == row["ci_high"] == 0
    assert row["decision"] == "equivalent"  # (1 - 0.005) ** 1080 = 0.0045
    frame, outcomes_ = sweep(tmp_path / "one", same[:1], {"finetune": [same[0].copy()]})
    assert paired_differences(frame, outcomes_).iloc[0]["decision"] == "underpowered"  # 0.995 ** 360 = 0.16


def test_pairs_with_a_run_that_missed_its_target_are_left_out(tmp_path):
    rng = np.random.default_rng(5)
    lc = [accuracy(N, 340, rng) for _ in range(3)]
    frame, outcomes_ = sweep(tmp_path, lc, {"kd_teacher": lc}, matched=(True, True, False))
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["n_pairs"] == 2 and row["not_matched_pairs"] == 1


def test_mcnemar_and_tost_agree_with_statsmodels():
    rng = np.random.default_rng(6)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.85
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert mcnemar_p(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue)
    differences = np.array([0.1, -0.2, 0.05, 0.15, -0.05])
    expected = ttost_paired(differences + 3, np.full(5, 3.0), -0.5, 0.5)[0]
    assert tost_replicates(differences, 0.5) == pytest.approx(expected)
    # the comparison carries both: McNemar per seed as given, TOST over its seeds' differences
    pools = differences[:, None] + rng.normal(0, 0.1, (5, 200))
    comparison, _ = compare(differences, pools, False, Rule.for_metric("top1"), mcnemar_ps=[0.5])
    assert comparison.tost_replicates == pytest.approx(expected) and comparison.mcnemar == [0.5]


def test_holm_adjusts_over_the_family():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    values = [0.001, 0.2, 0.01, 0.04]
    assert holm(values) == pytest.approx(multipletests(values, method="holm")[1].tolist())


def test_kd_accuracy_regularisation_and_matched_claims(tmp_path):
    rng = np.random.default_rng(7)
    lc = [accuracy(N, 340, rng) for _ in range(5)]
    kd = [flip(c, np.flatnonzero(c)[:4]) for c in lc]  # about 1 pt behind LayerCollapse, tightly
    control = [flip(c, np.flatnonzero(c)[: (0, 3, 0, 2, 1)[s]]) for s, c in enumerate(lc)]  # noise
    new = [flip(c, np.flatnonzero(c)[:36]) for c in lc]  # 10 pp behind at every seed
    frame, outcomes_ = sweep(tmp_path, lc, {"kd_teacher": kd, "finetune": control, "some_new_method": new})
    claims = claims_table(frame, flops_to_reach(frame), outcomes_).set_index("claim")
    kd_row = claims.loc["+8 pt over KD into the same network (KD init=teacher, same epochs)"]
    assert kd_row["verdict"] == "not supported"  # an 8 pt advantage is excluded
    assert (
        claims.loc[claims.index.str.startswith("LayerCollapse regularises"), "verdict"]
        .iloc[0]
        .startswith(("underpowered", "not supported: equivalent"))
    )
    new_row = claims.loc["At matched compression, LayerCollapse is more accurate than some new method"]
    assert new_row["verdict"] == "supported (practically)" and "+10.00" in new_row["measured"]
    # the rule's parameters and the Holm family are stored with every claim
    assert (claims["rule_margin"] == 0.5).all() and (claims["rule_family"] > 3).all()


def test_flops_to_reach_picks_the_cheapest_budget_that_reaches_layercollapse(tmp_path):
    rng = np.random.default_rng(8)
    rows = [
        run(tmp_path, "layercollapse", "layercollapse", s, accuracy(N, 324, rng), flops=10.0)
        for s in range(2)
    ]
    for budget, right in ((1, 306), (2, 326), (5, 331)):
        name = "kd_teacher" if budget == 1 else f"kd_teacher_{budget}x"
        rows += [
            run(tmp_path, name, "kd", s, accuracy(N, right, rng), epochs=3 * budget, flops=12.0 * budget,
                init="teacher")
            for s in range(2)
        ]  # fmt: skip
    frame = add_scores(pd.DataFrame(rows))
    table = flops_to_reach(frame)
    row = table.iloc[0]
    assert row["reached"] and row["ratio"] == pytest.approx(2.4)  # the 2x budget: 24 / 10 FLOPs
    claims = claims_table(frame, table, Outcomes(frame, tmp_path))
    cost = claims[claims["claim"].str.startswith("5x")].iloc[0]
    assert cost["verdict"] == "not supported" and "2.40x" in cost["measured"]


def test_runs_without_per_example_records_say_so(tmp_path):
    rng = np.random.default_rng(9)
    frame, _ = sweep(tmp_path, [accuracy(N, 340, rng)], {"finetune": [accuracy(N, 340, rng)]})
    for folder in tmp_path.iterdir():  # records from before per-example outcomes were kept
        (folder / "result.json").write_text(json.dumps({"status": "completed"}))
    row = paired_differences(frame, Outcomes(frame, tmp_path)).iloc[0]
    assert row["decision"] == "no data" and "rerun" in row["verdict"]


def test_a_verdict_near_alpha_is_flagged_borderline():
    """Another CPU's kernels move the numbers by a few examples: a verdict whose deciding p lies within a
    factor 2 of alpha says so, so that a flip between machines is expected where it can happen."""
    rng = np.random.default_rng(10)
    observed = np.array([1.0, 1.2, 0.9])
    comparison, _ = compare(
        observed, observed[:, None] + rng.normal(0, 0.2, (3, 300)), False, Rule.for_metric("top1")
    )
    rule = Rule.for_metric("top1")
    assert decide(comparison, rule, 0.01, 1.0) == Verdict("better", "beyond the margin", False)
    assert decide(comparison, rule, 0.03, 1.0).borderline
    assert decide(comparison, rule, 0.08, 0.9) == Verdict("underpowered", "", True)
    assert not decide(comparison, rule, 0.5, 0.9).borderline
    assert wording(decide(comparison, rule, 0.03, 1.0), comparison, rule, "LayerCollapse") == (
        "LayerCollapse better (practically; borderline; screening, n=3)"
    )


def test_prior_art_rows_name_the_mechanism_count_training_free_flops_and_never_judge_unmatched_points(
    tmp_path,
):
    rng = np.random.default_rng(11)
    lc = [accuracy(N, 340, rng) for _ in range(3)]
    rows = [run(tmp_path, "layercollapse", "layercollapse", s, c, flops=100.0) for s, c in enumerate(lc)]
    for s, c in enumerate(lc):
        behind = flip(c, np.flatnonzero(c)[:36])  # 10 pp behind at every seed
        rows += [
            run(tmp_path, "layer_folding", "layer_folding", s, behind),
            run(tmp_path, "replaceme_mlp", "replaceme", s, behind, epochs=0, flops=2.0 + s),
            run(tmp_path, "block_removal", "block_removal", s, behind, matched=False, epochs=0, flops=1.0),
        ]
    frame = add_scores(pd.DataFrame(rows))
    claims = claims_table(frame, flops_to_reach(frame), Outcomes(frame, tmp_path)).set_index("claim")
    folding = claims.loc[
        "LayerCollapse vs Layer Folding, the same mechanism: more accurate at matched compression"
    ]
    assert folding["verdict"] == "supported (practically; screening, n=3)"
    free = claims.loc[
        "LayerCollapse vs training-free depth reduction at matched compression: ReplaceMe (mlp)"
    ]
    assert free["verdict"] == "supported (practically; screening, n=3)"
    assert "0.02x to 0.04x LayerCollapse's (median 0.03x, 3 runs" in free["measured"]
    removal = claims.loc[
        "LayerCollapse vs training-free depth reduction at matched compression: Block removal (ShortGPT)"
    ]
    assert removal["verdict"] == "not compared (no matched point)"  # 10 pp behind, but never matched
    assert "no point within 2% of layercollapse's compression that is counted" in removal["measured"]


def test_bold_marks_the_best_and_the_rows_the_verdict_rule_cannot_tell_from_it(tmp_path):
    """LayerCollapse best; pruning one image apart in each seed, either way (a tie by the rule); KD 20
    images worse in each seed (distinguishably worse); a row that missed its target is never counted,
    however good."""
    from lcbench.analysis.best import TIED, ties_with_best
    from lcbench.analysis.tables import aggregate, bold_mask, matched_table

    rng = np.random.default_rng(7)
    lc = [accuracy(N, 340, rng) for _ in range(5)]
    near = [flip(c, np.flatnonzero(c if s % 2 else ~c)[:1]) for s, c in enumerate(lc)]
    far = [flip(c, np.flatnonzero(c)[:20]) for c in lc]
    better = [flip(c, np.flatnonzero(~c)[:15]) for c in lc]  # 15 images better, but unmatched
    frame, outcomes_ = sweep(tmp_path, lc, {"magnitude_pruning": near, "kd_teacher": far})
    unmatched = [run(tmp_path, "wanda", "wanda", s, c, matched=False) for s, c in enumerate(better)]
    frame = add_scores(pd.concat([frame, pd.DataFrame(unmatched)], ignore_index=True))
    for column in ("delta_top1", "gmacs", "gmacs_effective", "params", "params_dense", "speedup_quiet_b1"):
        frame[column] = 1.0
    for column in ("train_seconds", "val_samples", "blocks_folded", "speedup_quiet_b1_low"):
        frame[column] = 1.0
    frame["speedup_quiet_b1_high"] = 1.0
    outcomes_ = Outcomes(frame, tmp_path)
    table = matched_table(aggregate(frame))
    table[TIED] = ties_with_best(table, frame, outcomes_, Rule.for_metric("top1"))
    tied = dict(zip(table["variant"], table[TIED]))
    assert tied["layercollapse"] is True and tied["magnitude_pruning"] is True
    assert tied["kd_teacher"] is False and pd.isna(tied["wanda"])  # never counted
    bold = dict(zip(table["variant"], bold_mask(table, ["dataset", "model", "level"])["top1"]))
    assert bold == {"layercollapse": True, "magnitude_pruning": True, "kd_teacher": False, "wanda": False}
