"""Which rows of a table a reader may call best: the best headline metric of a (data set, model, level)
among the rows that count, and every row the verdict rule cannot tell from it.

Each counted row is compared with its group's best (by mean) on the same seeds and held-out examples, with
the paired hierarchical bootstrap of `verdicts.py`, Holm-corrected over every comparison of the table. A row
is distinguishable only when the best is "better" by that rule; "equivalent" and "underpowered" rows tie
with it. A row without per-example records cannot be tested and is left out (never bold).
"""

from __future__ import annotations

import math

import pandas as pd

from ..training.tasks import QUALITIES
from ..zoo.data import DATASETS
from .outcomes import Outcomes
from .records import NOT_COUNTED
from .stats import comparison, is_matched
from .verdicts import Rule, decide, holm

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


def ties_with_best(table: pd.DataFrame, frame: pd.DataFrame, outcomes: Outcomes, rule: Rule) -> pd.Series:
    """Per row of an aggregated table: True where the row is its group's best or the verdict rule cannot
    tell it from the best, False where the best is better by the rule, NaN where it is not counted or
    cannot be tested (no records, no shared seed)."""
    tied = pd.Series(math.nan, index=table.index, dtype=object)
    eligible = table[counted(table)]
    tests = []  # (row index, comparison)
    for _, group in eligible.groupby(GROUP, sort=False):
        spec = DATASETS.get(group["dataset"].iloc[0])
        column = f"{spec.metric}_mean"
        if column not in group or group[column].isna().all():
            continue
        higher = QUALITIES[spec.metric].higher_is_better
        best = group[column].idxmax() if higher else group[column].idxmin()
        tied[best] = True
        best_runs = _runs(frame, group.loc[best])
        for index, row in group.drop(index=best).iterrows():
            runs = _runs(frame, row)
            seeds = sorted(set(runs) & set(best_runs))
            per_seed = [outcomes.difference((best_runs[s], "final"), (runs[s], "final")) for s in seeds]
            if not seeds or any(d is None for d in per_seed):
                continue
            found = comparison([[d] for d in per_seed], rule)
            if found is not None:
                tests.append((index, found[0]))
    p_difference = holm([c.p_difference for _, c in tests])
    p_equivalence = holm([c.p_equivalence for _, c in tests])
    for (index, c), pd_, pe in zip(tests, p_difference, p_equivalence):
        tied[index] = decide(c, rule, pd_, pe).decision != "better"
    return tied
