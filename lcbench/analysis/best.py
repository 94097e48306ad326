"""Which rows of a table a reader may call best: the best headline metric of a (data set, model, level)
among the rows that count, and every row the verdict rule cannot tell from it.

Each counted row is compared with its group's best (by mean) on the same seeds and held-out examples, by
the seed-level rule of `verdicts.py`, its p-value in the report's one Holm family (a row compared with
LayerCollapse is the differences table's own test, counted once). A row is distinguishable only when the
best is "better" by that rule; "equivalent", "underpowered" and "too few seeds" rows tie with it. A row
without per-example records cannot be tested and is left out (never bold).
"""

from __future__ import annotations

import math

import pandas as pd

from ..training.tasks import QUALITIES
from ..zoo.data import DATASETS
from .outcomes import Outcomes
from .records import NOT_COUNTED
from .stats import is_matched
from .verdicts import Comparison, Family, Rule, compare, decide

GROUP = ["dataset", "model", "level"]
TIED = "tied_with_best"  # the table column it fills: True (bold), False, or missing (not counted)


def counted(table: pd.DataFrame) -> pd.Series:
    """Rows that may be called best: compressed, matched, and not labelled infeasible or not folded."""
    ok = table["method"] != "original"
    if "matched" in table:
        ok &= table["matched"].map(is_matched).astype(bool)
    if "flag" in table:
        ok &= ~table["flag"].fillna("").map(lambda f: any(k in f for k in NOT_COUNTED)).astype(bool)
    return ok & table["level"].notna()


def _runs(frame: pd.DataFrame, row: pd.Series) -> dict:
    """The row's completed compress runs by seed."""
    done = frame[
        (frame["status"] == "completed")
        & (frame["stage"] == "compress")
        & (frame["dataset"] == row["dataset"])
        & (frame["model"] == row["model"])
        & (frame["variant"] == row["variant"])
        & (frame["level"] == row["level"])
    ]
    return dict(zip(done["seed"], done["run_id"]))


def best_comparisons(
    table: pd.DataFrame, frame: pd.DataFrame, outcomes: Outcomes, margin: float
) -> tuple[list, list[tuple[object, Comparison]]]:
    """Each group's best row (index) and every other counted row's comparison with it."""
    bests, tests = [], []
    eligible = table[counted(table)]
    for _, group in eligible.groupby(GROUP, sort=False):
        spec = DATASETS.get(group["dataset"].iloc[0])
        column = f"{spec.metric}_mean"
        if column not in group or group[column].isna().all():
            continue
        higher = QUALITIES[spec.metric].higher_is_better
        best = group[column].idxmax() if higher else group[column].idxmin()
        bests.append(best)
        best_runs = _runs(frame, group.loc[best])
        for index, row in group.drop(index=best).iterrows():
            runs = _runs(frame, row)
            seeds = sorted(set(runs) & set(best_runs))
            per_seed = {s: outcomes.difference((best_runs[s], "final"), (runs[s], "final")) for s in seeds}
            if seeds and all(d is not None for d in per_seed.values()):
                tests.append((index, compare(per_seed, margin)))
    return bests, tests


def register(family: Family, tests: list[tuple[object, Comparison]]) -> None:
    """Bold decides on the difference test alone."""
    for _, comparison in tests:
        family.add(comparison, "difference", comparison.p_difference)


def ties_with_best(
    table: pd.DataFrame, frame: pd.DataFrame, outcomes: Outcomes, rule: Rule, family: Family | None = None
) -> pd.Series:
    """Per row of an aggregated table: True where the row is its group's best or the verdict rule cannot
    tell it from the best, False where the best is better by the rule, NaN where it is not counted or
    cannot be tested (no records, no shared seed). `family`: the report's, every test already in it."""
    bests, tests = best_comparisons(table, frame, outcomes, rule.margin)
    if family is None:
        family = Family(rule.alpha)
        register(family, tests)
    return ties(table.index, bests, tests, rule, family)


def ties(index: pd.Index, bests: list, tests: list, rule: Rule, family: Family) -> pd.Series:
    """The tied-with-best column from `best_comparisons`' results, judged in `family`."""
    tied = pd.Series(math.nan, index=index, dtype=object)
    for best in bests:
        tied[best] = True
    for row, c in tests:
        tied[row] = decide(c, rule, family).decision != "better"
    return tied
