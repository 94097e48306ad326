"""The verdict rule on constructed per-example records: seed-level t inference against scipy and statsmodels,
the shared test set's covariance, equivalence, zero-width intervals, too few seeds, one Holm family,
intention-to-treat on the reference's frontier, and the claims built on them."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from lcbench.analysis.claims import claims_table
from lcbench.analysis.headline import add_scores
from lcbench.analysis.outcomes import Outcomes
from lcbench.analysis.stats import paired_differences
from lcbench.analysis.verdicts import (
    Family,
    Rule,
    SeedDifference,
    Verdict,
    compare,
    decide,
    holm,
    holm_steps,
    mcnemar_p,
    replicates_needed,
    sign_flip_p,
    wording,
)
from lcbench.training import examples

N = 360  # a digits held-out split
SEEDS = range(5)


def outcomes(correct: np.ndarray, seed: int, shared: bool = False) -> dict:
    """Classification outcomes whose top-1 is right exactly where `correct` is (targets fixed per seed, or
    the same for every seed on a shared test set)."""
    target = (np.arange(len(correct)) + (0 if shared else seed)) % 10
    predicted = np.where(correct, target, (target + 1) % 10)
    return {
        "target": target.astype(np.int32),
        "predicted": predicted.astype(np.int32),
        "top5": np.ones(len(correct), bool),
        "loss": np.zeros(len(correct), np.float32),
        "classes": np.full(len(correct), 10, np.int32),
    }


def run(
    root,
    variant,
    method,
    seed,
    correct,
    level=1.0,
    matched=True,
    epochs=3,
    flops=1.0,
    init="",
    compression=1.5,
    flag="",
    dataset="digits",
    **groups,
):
    """One compress run's row, its per-example record written under `root` (extra groups: original=...)."""
    run_id = f"{variant}-{seed}-{level}"
    folder = root / run_id
    folder.mkdir(parents=True, exist_ok=True)
    shared = dataset != "digits"
    records = {
        "final": outcomes(correct, seed, shared),
        **{g: outcomes(c, seed, shared) for g, c in groups.items()},
    }
    kept = examples.write(folder, records)
    (folder / "result.json").write_text(json.dumps({"status": "completed", "examples": kept}))
    top1 = 100 * float(np.mean(correct))
    return dict(
        run_id=run_id,
        stage="compress",
        status="completed",
        dataset=dataset,
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
        compression=compression,
        top1_prefold=top1,
        flag=flag,
    )


def accuracy(n: int, right: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 vector with exactly `right` ones in random places."""
    correct = np.zeros(n, bool)
    correct[rng.choice(n, right, replace=False)] = True
    return correct


def sweep(tmp_path, lc: list[np.ndarray], others: dict[str, list[np.ndarray]], matched=None, **kwargs):
    """A frame of LayerCollapse and other variants (one per seed each) with their records written."""
    rows = [
        run(tmp_path, "layercollapse", "layercollapse", s, c, prefold=c, **kwargs) for s, c in enumerate(lc)
    ]
    for variant, per_seed in others.items():
        method = {"kd_teacher": "kd", "finetune": "finetune"}.get(variant, variant)
        for s, c in enumerate(per_seed):
            ok = True if matched is None else matched[s]
            extra = {"compression": 1.0} if method == "finetune" else {}
            rows.append(
                run(
                    tmp_path,
                    variant,
                    method,
                    s,
                    c,
                    matched=ok,
                    init="teacher" * (method == "kd"),
                    **{**kwargs, **extra},
                )
            )
    frame = add_scores(pd.DataFrame(rows))
    return frame, Outcomes(frame, tmp_path)


def flip(correct: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = correct.copy()
    out[where] = ~out[where]
    return out


def seed_difference(values: np.ndarray, key=("k",)) -> SeedDifference:
    """A seed's difference from per-example values (its mean is the difference)."""
    return SeedDifference(float(values.mean()), {key: values})


# --------------------------------------------------------------------------------------------------------
# The rule against scipy and statsmodels


def test_without_a_shared_test_set_the_rule_is_the_one_sample_t_test_and_tost_over_seeds():
    """Per-seed test sets (digits): the interval, the test and TOST are exactly scipy's and statsmodels' over
    the seeds' differences; the sign-flip p is exact (2 of 32 sign patterns at five positive seeds)."""
    rng = np.random.default_rng(0)
    seeds = [
        seed_difference(rng.normal(d, 5, 400), key=(i,)) for i, d in enumerate([0.3, 0.9, 0.2, 0.6, 0.4])
    ]
    c = compare(seeds, 0.5)
    d = np.array([s.observed for s in seeds])
    assert not c.shared_test_set and c.df == 4
    assert c.p_difference == pytest.approx(scipy_stats.ttest_1samp(d, 0).pvalue)
    assert (c.low, c.high) == pytest.approx(scipy_stats.t.interval(0.95, 4, d.mean(), scipy_stats.sem(d)))
    assert c.p_equivalence == pytest.approx(ttost_paired(d + 3, np.full(5, 3.0), -0.5, 0.5)[0])
    assert sign_flip_p(np.abs(d)) == pytest.approx(2 / 32)


def test_a_shared_test_set_adds_its_cross_seed_covariance_which_more_seeds_cannot_remove():
    """Seeds scored on one test set whose errors agree: the spread between seeds is tiny, but the test set's
    error is shared by all of them; Var(mean) = S^2/R + c, with c the seeds' per-example covariance / n."""
    rng = np.random.default_rng(1)
    common = rng.normal(0, 10, 1000)  # each example's shared lean
    seeds = [seed_difference(common + rng.normal(0, 1, 1000)) for _ in range(5)]
    c = compare(seeds, 0.5)
    covariances = [
        np.cov(a.influence[("k",)], b.influence[("k",)])[0, 1] / 1000
        for a in seeds
        for b in seeds
        if a is not b
    ]
    assert c.shared_test_set and c.shared == pytest.approx(np.mean(covariances))
    assert c.se**2 == pytest.approx(c.between / 5 + c.shared)
    assert c.shared > 10 * c.between / 5  # the test set, not the seeds, carries the uncertainty
    assert replicates_needed(c, 0.5, 0.05) == float("inf")  # more seeds cannot shrink the shared part
    unshared = compare([seed_difference(s.influence[("k",)], key=(i,)) for i, s in enumerate(seeds)], 0.5)
    assert unshared.se < c.se / 3  # ignoring the shared set would claim a third of the uncertainty


def test_mcnemar_agrees_with_statsmodels_and_holm_is_statsmodels_holm():
    rng = np.random.default_rng(6)
    a, b = rng.random(500) < 0.9, rng.random(500) < 0.85
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert mcnemar_p(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    for _ in range(12):  # (each statsmodels call runs a full gc.collect: 0.4 s inside the whole suite)
        values = rng.random(int(rng.integers(1, 30))) ** 3
        values[rng.random(len(values)) < 0.3] = values[0]  # ties
        adjusted, left = holm_steps(values)
        assert adjusted == pytest.approx(multipletests(values, method="holm")[1])
        assert sorted(left.tolist()) == list(range(1, len(values) + 1))
        assert left[np.argmin(values)] == len(values)  # the smallest p is tested at alpha / m


def test_one_family_counts_a_comparison_once_wherever_it_appears():
    rng = np.random.default_rng(2)
    seeds = [
        SeedDifference(v.mean(), {(i,): v}, runs=frozenset({f"a{i}", f"b{i}"}))
        for i, v in enumerate(rng.normal(1, 3, (5, 50)))
    ]
    again = [SeedDifference(s.observed, s.influence, runs=s.runs) for s in seeds]
    family = Family()
    family.add_comparison(compare(seeds, 0.5))
    family.add_comparison(compare(again, 0.5))  # the same runs, read again elsewhere (bold)
    assert len(family) == 2  # its difference and its equivalence, once
    assert family.p(compare(again, 0.5), "difference") == family.p(compare(seeds, 0.5), "difference")


# --------------------------------------------------------------------------------------------------------
# Verdicts on constructed records


def test_identical_replicates_one_image_apart_are_never_better(tmp_path):
    """The case that read `+0.28 [+0.28, +0.28]` "LayerCollapse better": in every seed the other method
    gets one image wrong that LayerCollapse gets right, and nothing else differs. Five identical seed
    differences have no spread: never evidence."""
    rng = np.random.default_rng(0)
    lc = [accuracy(N, 350, rng) for _ in SEEDS]
    other = [flip(c, np.flatnonzero(c)[:1]) for c in lc]
    frame, outcomes_ = sweep(tmp_path, lc, {"magnitude_pruning": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["difference"] == pytest.approx(100 / N)
    assert row["decision"] == "underpowered" and "better" not in row["verdict"]
    assert row["mcnemar_p"] == "1 1 1 1 1"


def test_three_seeds_give_no_verdict_only_a_direction(tmp_path):
    """The rule's own threshold: below five seeds no better, worse or equivalent at all (the exact sign-flip
    test cannot go below 2 / 2^3 = 0.25)."""
    rng = np.random.default_rng(12)
    lc = [accuracy(N, 340, rng) for _ in range(3)]
    other = [flip(c, np.flatnonzero(c)[:30]) for c in lc]  # 8 pp behind in every seed
    frame, outcomes_ = sweep(tmp_path, lc, {"kd_teacher": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["decision"] == "too few seeds" and row["p_sign_flip"] == 0.25
    assert row["verdict"] == "not testable at n=3 (LayerCollapse ahead in 3 of 3 seeds)"
    assert row["ci_low"] > 0  # the interval is still shown


def test_a_constructed_equivalent_pair_is_equivalent(tmp_path):
    """10,000 test images, 5 seeds, the two methods disagreeing on 2% of images in both directions."""
    rng = np.random.default_rng(1)
    lc, other = [], []
    for _ in SEEDS:
        a = accuracy(10_000, 9_000, rng)
        right, wrong = np.flatnonzero(a), np.flatnonzero(~a)
        extra = 100 + int(rng.integers(-10, 10))
        b = flip(
            a,
            np.concatenate([rng.choice(right, 100, replace=False), rng.choice(wrong, extra, replace=False)]),
        )
        lc.append(a)
        other.append(b)
    frame, outcomes_ = sweep(tmp_path, lc, {"low_rank": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["decision"] == "equivalent", row["verdict"]
    assert -0.5 < row["ci90_low"] and row["ci90_high"] < 0.5 and row["p_equivalence_holm"] < 0.05
    assert row["verdict"] == "equivalent (within ±0.5 pp)"


def test_a_clear_difference_is_better_and_beyond_the_margin(tmp_path):
    rng = np.random.default_rng(2)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    other = [flip(c, np.flatnonzero(c)[: 20 + s]) for s, c in enumerate(lc)]  # 20-24 images worse
    frame, outcomes_ = sweep(tmp_path, lc, {"kd_teacher": other})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["decision"] == "better" and row["size"] == "beyond the margin"
    assert row["verdict"] == "LayerCollapse better (beyond the ±0.5 pp margin)"
    assert row["ci_low"] > 0.5 and row["seeds_ahead"] == 5


def test_seed_to_seed_spread_widens_the_interval(tmp_path):
    """The same mean difference, once the same in every seed and once spread between seeds: the seed-level
    interval must be wider for the second."""
    rng = np.random.default_rng(3)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    steady = [flip(c, np.flatnonzero(c)[:6]) for c in lc]
    spread = [flip(c, np.flatnonzero(c)[:k]) for c, k in zip(lc, (0, 1, 6, 11, 12))]
    widths = []
    for name, other in (("steady", steady), ("spread", spread)):
        frame, outcomes_ = sweep(tmp_path / name, lc, {"low_rank": other})
        row = paired_differences(frame, outcomes_).iloc[0]
        assert row["difference"] == pytest.approx(600 / N)
        widths.append(row["ci_high"] - row["ci_low"])
    assert widths[1] > 3 * widths[0] or widths[0] == 0


def test_identical_predictions_are_not_certainty(tmp_path):
    """No example differs: zero width, never "better"; "equivalent" only when the exact binomial bound of
    the least favourable seed lies inside the margin. Five digits seeds of 360 images each are five bounds
    of 0.995^360 = 0.16, not one of 0.995^1800; one shared test set of 10,000 images bounds it (0.007)."""
    rng = np.random.default_rng(4)
    same = [accuracy(N, 350, rng) for _ in SEEDS]
    frame, outcomes_ = sweep(tmp_path / "digits", same, {"finetune_like": [c.copy() for c in same]})
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["ci_low"] == row["ci_high"] == 0 and row["decision"] == "underpowered"
    shared = [accuracy(10_000, 9_500, np.random.default_rng(5))] * 5
    frame, outcomes_ = sweep(
        tmp_path / "fashion", shared, {"finetune_like": [c.copy() for c in shared]}, dataset="fashion_mnist"
    )
    assert paired_differences(frame, outcomes_).iloc[0]["decision"] == "equivalent"


def test_a_run_that_missed_its_target_still_counts_with_its_success_rate(tmp_path):
    """Intention-to-treat: a run flagged not folded or not matched is compared at what it achieved, never
    dropped; how often the method reached its target is reported beside."""
    rng = np.random.default_rng(5)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    frame, outcomes_ = sweep(tmp_path, lc, {"layer_folding": lc}, matched=(True, True, False, True, True))
    row = paired_differences(frame, outcomes_).iloc[0]
    assert row["n_pairs"] == 5 and row["reached_target"] == "4 of 5" and row["pairing"] == "matched in 5 of 5"


def test_a_point_outside_the_methods_declared_range_is_shown_never_compared_or_counted(tmp_path):
    """Wanda at 98.5% per-layer sparsity lost 50 pp there: outside its declared range, the point is labelled,
    tested nowhere (no Holm slot, no claim point), and the claim rests on the points inside the range."""
    rng = np.random.default_rng(11)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    rows = [run(tmp_path, "layercollapse", "layercollapse", s, c, level=lv, compression=1.5 * lv)
            for lv in (1.0, 2.0) for s, c in enumerate(lc)]  # fmt: skip
    rows += [run(tmp_path, "wanda", "wanda", s, c, level=1.0, compression=1.5) for s, c in enumerate(lc)]
    ruined = [flip(c, np.flatnonzero(c)[:150]) for c in lc]
    rows += [
        run(tmp_path, "wanda", "wanda", s, c, level=2.0, compression=3.0, flag="outside its range")
        for s, c in enumerate(ruined)
    ]
    frame = add_scores(pd.DataFrame(rows))
    frame["outside_range"] = np.where(
        frame["flag"] != "", "layer 0 at 98.5% sparsity, above the 80% Wanda is run at", ""
    )
    outcomes_ = Outcomes(frame, tmp_path)
    table = paired_differences(frame, outcomes_).set_index("level")
    assert table.loc[2.0, "decision"] == "outside its range" and pd.isna(table.loc[2.0, "difference"])
    assert table.loc[2.0, "verdict"].startswith("outside its range in 5 of 5 seeds: layer 0 at 98.5%")
    assert table.loc[1.0, "decision"] in ("equivalent", "underpowered")  # identical predictions
    claim = (
        claims_table(frame, outcomes_)
        .set_index("claim")
        .loc["At matched compression, LayerCollapse is more accurate than Wanda"]
    )
    assert not claim["verdict"].startswith("supported") and claim["points"].endswith("of 1 points")
    assert (
        "not counted, outside its declared range: m level 2 (layer 0 at 98.5% sparsity" in claim["measured"]
    )
    assert "every run it made within its declared range" in claim["measured"]


def test_runs_between_two_reference_points_are_compared_with_their_interpolation(tmp_path):
    """A method at 2x between LayerCollapse's 1.5x and 3x points: compared with their mixture, weighted by
    retained parameters ((1/1.5 - 1/2) / (1/1.5 - 1/3) = 0.5 of the 3x point); one beyond 3x can only
    dominate."""
    rng = np.random.default_rng(13)
    rows = []
    for s in SEEDS:
        low, high = accuracy(N, 350, rng), accuracy(N, 320, rng)
        rows += [
            run(tmp_path, "layercollapse", "layercollapse", s, low, level=1.0, compression=1.5),
            run(tmp_path, "layercollapse", "layercollapse", s, high, level=2.0, compression=3.0),
            run(
                tmp_path,
                "block_removal",
                "block_removal",
                s,
                accuracy(N, 300, rng),
                level=1.0,
                compression=2.0,
                matched=False,
            ),
            run(
                tmp_path,
                "replaceme",
                "replaceme",
                s,
                accuracy(N, 300, rng),
                level=2.0,
                compression=4.0,
                matched=False,
            ),
        ]
    frame = add_scores(pd.DataFrame(rows))
    diffs = paired_differences(frame, Outcomes(frame, tmp_path)).set_index("variant")
    lc = frame[frame["variant"] == "layercollapse"].pivot(index="seed", columns="level", values="top1")
    removal = frame[frame["variant"] == "block_removal"].set_index("seed")["top1"]
    expected = (0.5 * lc[1.0] + 0.5 * lc[2.0] - removal).mean()
    assert diffs.loc["block_removal", "pairing"] == "interpolated in 5 of 5"
    assert diffs.loc["block_removal", "difference"] == pytest.approx(expected)
    assert diffs.loc["replaceme", "pairing"] == "beyond in 5 of 5"
    assert diffs.loc["replaceme", "verdict"].startswith("not compared: beyond LayerCollapse's frontier")


def test_runs_without_per_example_records_say_so(tmp_path):
    rng = np.random.default_rng(9)
    frame, _ = sweep(tmp_path, [accuracy(N, 340, rng)], {"low_rank": [accuracy(N, 340, rng)]})
    for folder in tmp_path.iterdir():  # records from before per-example outcomes were kept
        (folder / "result.json").write_text(json.dumps({"status": "completed"}))
    row = paired_differences(frame, Outcomes(frame, tmp_path)).iloc[0]
    assert row["decision"] == "no data" and "rerun" in row["verdict"]


class FixedFamily:
    """A family whose adjusted p-values are given (to test `decide` at chosen values)."""

    def __init__(self, difference: float, equivalence: float) -> None:
        self.values = {"difference": difference, "equivalence": equivalence}

    def p(self, comparison, hypothesis):
        return self.values[hypothesis]

    def step_level(self, comparison, hypothesis):
        return 0.05


def test_a_verdict_near_alpha_is_flagged_borderline_and_its_size_is_read_off_its_interval():
    """Another CPU's kernels move the numbers by a few examples: a verdict whose deciding p lies within a
    factor 2 of alpha says so. A significant difference is beyond the margin, within it, or unresolved."""
    rng = np.random.default_rng(10)
    rule = Rule.for_metric("top1")
    c = compare(
        [seed_difference(rng.normal(d, 2, 300), key=(i,)) for i, d in enumerate([1.0, 1.2, 0.9, 1.1, 1.0])],
        0.5,
    )
    assert decide(c, rule, FixedFamily(0.01, 1.0)) == Verdict("better", c_size(c), False)
    assert decide(c, rule, FixedFamily(0.03, 1.0)).borderline
    assert decide(c, rule, FixedFamily(0.08, 0.9)) == Verdict("underpowered", "", True)
    assert not decide(c, rule, FixedFamily(0.5, 0.9)).borderline
    assert wording(decide(c, rule, FixedFamily(0.03, 1.0)), c, rule, "LayerCollapse") == (
        f"LayerCollapse better ({c_size(c).replace('the margin', 'the ±0.5 pp margin')}; borderline)"
    )


def c_size(c) -> str:
    low, high = c.interval(0.95)
    return "beyond the margin" if low > 0.5 else "within the margin" if high < 0.5 else "size unresolved"


# --------------------------------------------------------------------------------------------------------
# Claims


def test_kd_accuracy_regularisation_and_matched_claims(tmp_path):
    rng = np.random.default_rng(7)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    kd = [flip(c, np.flatnonzero(c)[: 4 + s % 2]) for s, c in enumerate(lc)]  # about 1 pt behind, tightly
    control = [flip(c, np.flatnonzero(c)[: (0, 3, 0, 2, 1)[s]]) for s, c in enumerate(lc)]  # noise
    new = [flip(c, np.flatnonzero(c)[: 36 + s % 2]) for s, c in enumerate(lc)]  # 10 pp behind at every seed
    frame, outcomes_ = sweep(tmp_path, lc, {"kd_teacher": kd, "finetune": control, "some_new_method": new})
    claims = claims_table(frame, outcomes_).set_index("claim")
    kd_row = claims.loc["+8 pt over KD into the same network (KD init=teacher, same epochs)"]
    assert kd_row["verdict"] == "not supported" and kd_row["points"] == "below +8 at 1 of 1 points"
    regularises = claims.loc[claims.index.str.startswith("LayerCollapse regularises")].iloc[0]
    assert regularises["verdict"].startswith(("underpowered", "not supported: equivalent"))
    new_row = claims.loc["At matched compression, LayerCollapse is more accurate than some new method"]
    assert new_row["verdict"] == "supported" and "+10.00" in new_row["measured"]
    assert new_row["points"] == "better at 1, worse at 0 of 1 points"
    assert "reached its target in 5 of 5 seed-points" in new_row["measured"]
    # the rule's parameters and the family's size are stored with every claim
    assert (claims["rule_margin"] == 0.5).all() and (claims["rule_family"] > 3).all()


def test_a_claim_with_points_significant_both_ways_is_mixed(tmp_path):
    """Fashion's "more accurate than magnitude pruning" averaged +16.5 pp at level 2 with -1.5 pp at level
    1: a claim with a point significantly the other way is mixed, never supported."""
    rng = np.random.default_rng(14)
    rows = []
    for s in SEEDS:
        for level, compression, behind in ((1.0, 1.6, -8), (2.0, 80.0, 60)):
            lc = accuracy(N, 300, rng)
            where = np.flatnonzero(lc if behind > 0 else ~lc)[: abs(behind) + s % 2]
            rows += [
                run(tmp_path, "layercollapse", "layercollapse", s, lc, level=level, compression=compression),
                run(
                    tmp_path,
                    "magnitude_pruning",
                    "magnitude_pruning",
                    s,
                    flip(lc, where),
                    level=level,
                    compression=compression,
                ),
            ]
    frame = add_scores(pd.DataFrame(rows))
    claims = claims_table(frame, Outcomes(frame, tmp_path)).set_index("claim")
    row = claims.loc["At matched compression, LayerCollapse is more accurate than Magnitude pruning"]
    assert row["verdict"] == "mixed (points significant both ways)"
    assert row["points"] == "better at 1, worse at 1 of 2 points"


def test_the_74_percent_claim_is_tested_only_near_74_percent(tmp_path):
    rng = np.random.default_rng(15)
    far = [
        run(
            tmp_path / "far",
            "layercollapse",
            "layercollapse",
            s,
            accuracy(N, 340, rng),
            compression=7.7,
            original=accuracy(N, 340, rng),
        )
        for s in SEEDS
    ]
    frame = add_scores(pd.DataFrame(far))
    claims = claims_table(frame, Outcomes(frame, tmp_path / "far"))
    assert claims.iloc[0]["verdict"] == "not tested at 74% (no point within 70-80% fewer parameters)"
    assert "reduce parameters by 87%" in claims.iloc[0]["measured"]
    near = []
    for s in SEEDS:
        original = accuracy(N, 340, rng)
        near.append(
            run(
                tmp_path / "near",
                "layercollapse",
                "layercollapse",
                s,
                flip(original, np.flatnonzero(original)[:1]),
                compression=4.0,
                original=original,
            )
        )
    frame = add_scores(pd.DataFrame(near))
    claims = claims_table(frame, Outcomes(frame, tmp_path / "near"))
    assert claims.iloc[0]["verdict"] == "underpowered"  # one image lost in every seed: no spread, no evidence
    assert claims.iloc[0]["points"] == "undecided at 1 of 1 points"


def test_the_5x_claim_needs_a_5x_budget_and_is_refuted_by_a_cheaper_one(tmp_path):
    """Per point and budget: a KD budget under 5x LayerCollapse's FLOPs shown non-inferior refutes the 5x
    claim; with only the 1x budget, inferior, it is not tested (never "underpowered")."""
    rng = np.random.default_rng(8)
    lc = [accuracy(10_000, 9_000, rng) for _ in SEEDS]
    rows = [run(tmp_path, "layercollapse", "layercollapse", s, c, flops=10.0) for s, c in enumerate(lc)]
    for s, c in enumerate(lc):
        rows.append(
            run(
                tmp_path,
                "kd_teacher",
                "kd",
                s,
                flip(c, np.flatnonzero(c)[: 300 + s]),
                flops=12.0,
                init="teacher",
            )
        )
    frame = add_scores(pd.DataFrame(rows))
    cost = (
        claims_table(frame, Outcomes(frame, tmp_path))
        .set_index("claim")
        .loc["5x computational efficiency over KD (KD init=teacher)"]
    )
    assert cost["verdict"] == "not tested (no budget of 5x LayerCollapse's training FLOPs ran)"
    for s, c in enumerate(lc):  # twice the epochs, 2.4x the FLOPs, within a few images of LayerCollapse
        rows.append(
            run(
                tmp_path,
                "kd_teacher_2x",
                "kd",
                s,
                flip(c, np.flatnonzero(c)[: 3 + s % 2]),
                flops=24.0,
                init="teacher",
                epochs=6,
            )
        )
    frame = add_scores(pd.DataFrame(rows))
    cost = (
        claims_table(frame, Outcomes(frame, tmp_path))
        .set_index("claim")
        .loc["5x computational efficiency over KD (KD init=teacher)"]
    )
    assert cost["verdict"] == "not supported" and cost["points"] == "refuted at 1 of 1 points"
    assert "kd_teacher_2x at 2.4x FLOPs" in cost["measured"]


def test_prior_art_rows_name_the_mechanism_and_count_training_free_flops(tmp_path):
    rng = np.random.default_rng(11)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    rows = [run(tmp_path, "layercollapse", "layercollapse", s, c, flops=100.0) for s, c in enumerate(lc)]
    for s, c in enumerate(lc):
        behind = flip(c, np.flatnonzero(c)[: 36 + s % 2])  # 10 pp behind at every seed
        rows += [
            run(tmp_path, "layer_folding", "layer_folding", s, behind, flag="not folded" if s < 2 else ""),
            run(tmp_path, "lstsq_fold", "lstsq_fold", s, behind, epochs=0, flops=2.0 + s),
        ]
    frame = add_scores(pd.DataFrame(rows))
    claims = claims_table(frame, Outcomes(frame, tmp_path)).set_index("claim")
    folding = claims.loc[
        "LayerCollapse vs Layer Folding, the same mechanism: more accurate at matched compression"
    ]
    assert folding["verdict"] == "supported"
    assert "reached its target in 3 of 5 seed-points" in folding["measured"]  # every run counted
    free = claims.loc[
        "LayerCollapse vs training-free depth reduction at matched compression: Least-squares fold"
    ]
    assert free["verdict"] == "supported"
    assert "0.02x to 0.06x LayerCollapse's (median 0.04x, 5 runs" in free["measured"]


def test_bold_marks_the_best_and_the_rows_the_verdict_rule_cannot_tell_from_it(tmp_path):
    """LayerCollapse best; pruning one image apart in each seed, either way (a tie by the rule); KD 20
    images worse in each seed (distinguishably worse); a row that missed its target is never counted,
    however good."""
    from lcbench.analysis.best import TIED, ties_with_best
    from lcbench.analysis.tables import aggregate, bold_mask, matched_table

    rng = np.random.default_rng(7)
    lc = [accuracy(N, 340, rng) for _ in SEEDS]
    near = [flip(c, np.flatnonzero(c if s % 2 else ~c)[:1]) for s, c in enumerate(lc)]
    far = [flip(c, np.flatnonzero(c)[: 20 + s]) for s, c in enumerate(lc)]
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
