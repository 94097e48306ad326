"""Paired differences over seeds, pooled estimates and the claims section's verdicts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lcbench.analysis.claims import claims_table, kd_accuracy_claim, regularisation_claim
from lcbench.analysis.cost import flops_to_reach
from lcbench.analysis.headline import add_scores
from lcbench.analysis.stats import mean_ci, paired_differences


def run(variant, method, seed, top1, level=1.0, matched=True, epochs=3, flops=1.0, init=""):
    return dict(
        run_id=f"{variant}{seed}{level}",
        stage="compress",
        status="completed",
        dataset="digits",
        model="m",
        level=level,
        paper_blocks=level,
        variant=variant,
        method=method,
        seed=seed,
        top1=top1,
        matched=matched,
        epochs=epochs,
        train_flops=flops,
        init=init,
        base_top1=98.0,
        compression=1.5,
        top1_prefold=top1,
    )


def frame(lc, kd, kd_matched=(True, True, True)):
    rows = [run("layercollapse", "layercollapse", s, v) for s, v in enumerate(lc)]
    rows += [
        run("kd_teacher", "kd", s, v, matched=m, init="teacher")
        for s, (v, m) in enumerate(zip(kd, kd_matched))
    ]
    return scored(rows)


def scored(rows: list[dict]) -> pd.DataFrame:
    """The rows as the analysis frame holds them: the data set's headline metric as `score`."""
    return add_scores(pd.DataFrame(rows))


def test_mean_ci_is_the_t_interval():
    ci = mean_ci([1.0, 2.0, 6.0])
    half = stats.t.ppf(0.975, 2) * np.std([1, 2, 6], ddof=1) / math.sqrt(3)
    assert ci["mean"] == 3.0 and ci["low"] == pytest.approx(3 - half) and ci["n"] == 3
    assert math.isnan(mean_ci([1.0])["low"])


def test_paired_differences_pair_by_seed_and_give_verdicts():
    clear = paired_differences(frame([90, 91, 92], [80, 80.5, 82])).iloc[0]
    assert clear["difference"] == pytest.approx(np.mean([10, 10.5, 10]))
    assert clear["verdict"] == "LayerCollapse better" and clear["ci_low"] > 0
    noise = paired_differences(frame([90, 92, 91], [91, 90, 92])).iloc[0]
    assert noise["verdict"] == "no significant difference" and noise["ci_low"] < 0 < noise["ci_high"]


def test_pairs_with_a_run_that_missed_its_target_are_left_out():
    row = paired_differences(frame([90, 91, 92], [80, 80, 80], kd_matched=(True, True, False))).iloc[0]
    assert row["n_pairs"] == 2 and row["not_matched_pairs"] == 1


def test_kd_accuracy_and_regularisation_verdicts():
    # LayerCollapse about 1 pt ahead, tightly: an 8 pt advantage is excluded
    small = frame([90, 91, 92], [89, 90, 91.1])
    assert kd_accuracy_claim(small, "layercollapse", "kd_teacher")["verdict"] == "not supported"
    big = frame([90, 91, 92], [81, 82.5, 83])
    assert kd_accuracy_claim(big, "layercollapse", "kd_teacher")["verdict"] == "supported"
    control = frame([90, 92, 91], [91, 90, 92]).replace({"kd_teacher": "finetune"})
    verdict = regularisation_claim(control, "layercollapse", "finetune")["verdict"]
    assert verdict.startswith("inconclusive") and "no significant difference" in verdict


def test_flops_to_reach_picks_the_cheapest_budget_that_reaches_layercollapse():
    rows = [run("layercollapse", "layercollapse", s, 90.0, flops=10.0) for s in range(2)]
    for budget, top1 in ((1, 85.0), (2, 90.5), (5, 92.0)):
        name = "kd_teacher" if budget == 1 else f"kd_teacher_{budget}x"
        rows += [
            run(name, "kd", s, top1, epochs=3 * budget, flops=12.0 * budget, init="teacher") for s in range(2)
        ]
    table = flops_to_reach(scored(rows))
    row = table.iloc[0]
    assert row["reached"] and row["ratio"] == pytest.approx(2.4)  # the 2x budget: 24 / 10 FLOPs
    claims = claims_table(scored(rows), table)
    cost = claims[claims["claim"].str.startswith("5x")].iloc[0]
    assert cost["verdict"] == "not supported" and "2.40x" in cost["measured"]


def test_every_other_method_in_the_records_gets_a_matched_comparison_claim():
    """Claims named only the paper's methods: a method added to the sweep never reached the claims."""
    rows = [run("layercollapse", "layercollapse", s, 90.0 + s) for s in range(3)]
    rows += [run("svd", "some_new_method", s, 80.0 + s) for s in range(3)]  # 10 pp worse at every seed
    rows += [run("pruned", "magnitude_pruning", s, 90.0 + s + (0.1, -0.1, 0.0)[s]) for s in range(3)]
    claims = claims_table(scored(rows), flops_to_reach(scored(rows))).set_index("claim")
    new = claims.loc["At matched compression, LayerCollapse is more accurate than some new method (svd)"]
    assert new["verdict"] == "supported" and "+10.00" in new["measured"]
    pruned = claims.loc[
        "At matched compression, LayerCollapse is more accurate than Magnitude pruning (pruned)"
    ]
    assert pruned["verdict"].startswith("inconclusive")
