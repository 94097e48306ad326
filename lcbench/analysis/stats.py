"""Paired comparisons: every method against the reference method (LayerCollapse by default), per seed and
per held-out example, with the verdict rule of `verdicts.py`.

Runs of the same seed start from the same original model (the seed's own, trained on its own split) and
are scored on the same held-out examples, so a difference is paired per seed and, within it, per example.
A difference is the reference's advantage in the sweep's headline metric (top-1 points; for perplexity
the relative gap in %, + favouring the reference). Points where either run missed its matched compression
are left out and counted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .outcomes import Difference, Outcomes
from .verdicts import Comparison, Rule, compare, decide, holm, replicates_needed, wording

POINT = ["dataset", "model", "level"]
NO_RECORDS = "no per-example records (runs made before lcbench kept them: rerun them)"
NOT_MATCHED = {
    "difference": math.nan,
    "verdict": "not matched (a run missed its compression target in every seed: not counted)",
    "decision": "not matched",
}
UNREACHABLE = {  # by the point's label (`records.FLAGS`): why its runs are not compared
    "infeasible": {
        "difference": math.nan,
        "verdict": "infeasible at this compression (no allocation reaches it at a useful rank: not counted)",
        "decision": "infeasible",
    },
    "not folded": {
        "difference": math.nan,
        "verdict": "not folded (its slopes stayed outside the fold band: not counted)",
        "decision": "not folded",
    },
}


def _uncompared(flags: pd.Series) -> dict:
    """The verdict of a point none of whose seeds could be compared: its label's, else not matched."""
    for flag, verdict in UNREACHABLE.items():
        if flags.fillna("").str.contains(flag).any():
            return verdict
    return NOT_MATCHED


def is_matched(value) -> bool:
    """A run counts as matched unless its record says it missed its target (None: nothing to match)."""
    return value is None or pd.isna(value) or bool(value)


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["status"] == "completed") & (frame["stage"] == "compress")]


def pairs(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per (point, other variant, seed): the two runs compared and whether both met their target.

    A variant without levels (the finetune control) is paired with the reference at every level.
    """
    done = _completed(frame)
    ref = done[(done["variant"] == reference) & done["level"].notna()]
    rows = []
    for _, r in ref.iterrows():
        same_model = (done["dataset"] == r["dataset"]) & (done["model"] == r["model"])
        same_seed = done["seed"] == r["seed"]
        at_level = (done["level"] == r["level"]) | done["level"].isna()
        others = done[same_model & same_seed & at_level & (done["variant"] != reference)]
        for _, o in others.iterrows():
            rows.append(
                {
                    **{k: r[k] for k in POINT},
                    "paper_blocks": r.get("paper_blocks"),
                    "variant": o["variant"],
                    "method": o["method"],
                    "seed": r["seed"],
                    "reference_run": r["run_id"],
                    "other_run": o["run_id"],
                    "matched": is_matched(r["matched"]) and is_matched(o["matched"]),
                    "flag": ", ".join(f for f in (r.get("flag") or "", o.get("flag") or "") if f),
                }
            )
    return pd.DataFrame(rows)


def rule_for(frame: pd.DataFrame, margin: float | None = None) -> Rule:
    """The verdict rule for the frame's headline metric (several GLUE metrics: their points, margin 1)."""
    metrics = list(dict.fromkeys(frame["metric"])) if "metric" in frame and len(frame) else ["top1"]
    return Rule.for_metric(metrics[0] if len(metrics) == 1 else "score", margin)


def comparison(differences: list[list[Difference]], rule: Rule) -> tuple[Comparison, np.ndarray] | None:
    """The comparison of per-replicate lists of differences (several points of one replicate are averaged
    with their resamples, which stay paired: the same examples) and its bootstrap draws; None without any."""
    replicates = [d for d in differences if d]
    if not replicates:
        return None
    observed = np.array([np.mean([d.observed for d in ds]) for ds in replicates])
    pools = np.stack([np.mean([d.pool for d in ds], axis=0) for ds in replicates])
    keys = {d.key for ds in replicates for d in ds}
    shared = len(keys) == 1 and len(replicates) > 1
    counts = [d.discordant for ds in replicates for d in ds if d.discordant is not None]
    discordant = (sum(c[0] for c in counts), sum(c[1] for c in counts)) if counts else None
    mcnemar = [d.mcnemar for ds in replicates for d in ds if d.mcnemar is not None]
    return compare(observed, pools, shared, rule, discordant, mcnemar)


def paired_differences(
    frame: pd.DataFrame, outcomes: Outcomes, reference: str = "layercollapse", rule: Rule | None = None
) -> pd.DataFrame:
    """Per (point, variant): the reference's advantage over matched seed pairs, its intervals, tests and
    verdict (Holm-corrected over the table's rows)."""
    table = pairs(frame, reference)
    if table.empty:
        return pd.DataFrame()
    rule = rule or rule_for(frame)
    rows, found, uncompared = [], [], []
    for (dataset, model, level, variant), group in table.groupby(POINT + ["variant"], sort=False):
        kept = group[group["matched"]]
        per_seed = [
            [d]
            for d in (
                outcomes.difference((r["reference_run"], "final"), (r["other_run"], "final"))
                for _, r in kept.iterrows()
            )
            if d is not None
        ]
        result = comparison(per_seed, rule) if len(per_seed) == len(kept) else None
        found.append(result[0] if result else None)
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "level": level,
                "paper_blocks": group["paper_blocks"].iloc[0],
                "variant": variant,
                "method": group["method"].iloc[0],
                "n_pairs": len(kept),
                "not_matched_pairs": int((~group["matched"]).sum()),
            }
        )
        uncompared.append(_uncompared(group["flag"]) if "flag" in group else NOT_MATCHED)
    family = sum(c is not None for c in found)
    return pd.DataFrame(
        [
            {**row, **verdict_columns(c, rule, p, family=family)} if row["n_pairs"] else {**row, **why}
            for (row, c, p), why in zip(_with_holm(rows, found), uncompared)
        ]
    )


def _with_holm(rows: list[dict], found: list[Comparison | None]):
    """Each row with its comparison and its Holm-adjusted (difference, equivalence) p-values."""
    p_difference = holm([c.p_difference if c else math.nan for c in found])
    p_equivalence = holm([c.p_equivalence if c else math.nan for c in found])
    for row, c, pd_, pe in zip(rows, found, p_difference, p_equivalence):
        yield row, c, (pd_, pe)


def verdict_columns(
    c: Comparison | None,
    rule: Rule,
    adjusted: tuple[float, float],
    subject: str = "LayerCollapse",
    family: int = 1,
) -> dict:
    """A comparison's table columns: estimate, intervals, p-values (raw and Holm over `family` tests),
    the verdict."""
    if c is None:
        return {"difference": math.nan, "verdict": NO_RECORDS, "decision": "no data"}
    verdict = decide(c, rule, *adjusted)
    return {
        "difference": c.estimate,
        "ci_low": c.low,
        "ci_high": c.high,
        "ci90_low": c.low90,
        "ci90_high": c.high90,
        "p_difference": c.p_difference,
        "p_difference_holm": adjusted[0],
        "p_equivalence": c.p_equivalence,
        "p_equivalence_holm": adjusted[1],
        "p_reference_ahead": c.p_reference_ahead,
        "mcnemar_p": " ".join(f"{p:.3g}" if p > 0 else "<1e-300" for p in c.mcnemar),
        "tost_p_seeds": c.tost_replicates,
        "seeds_needed": (
            replicates_needed(c, rule.margin, rule.alpha / family)
            if verdict.decision == "underpowered"
            else math.nan
        ),
        "shared_test_set": c.shared_test_set,
        "margin": rule.margin,
        "unit": rule.unit,
        "decision": verdict.decision,
        "practical": verdict.practical,
        "borderline": verdict.borderline,
        "verdict": wording(verdict, c, rule, subject),
    }


def pooled_comparison(
    frame: pd.DataFrame, outcomes: Outcomes, reference: str, variant: str, rule: Rule
) -> tuple[tuple[Comparison, np.ndarray] | None, int]:
    """The reference's advantage over `variant` averaged over every matched point within each seed, then
    compared over seeds (with its bootstrap draws); and the number of points."""
    table = pairs(frame, reference)
    if table.empty:
        return None, 0
    table = table[(table["variant"] == variant) & table["matched"]]
    return per_seed_comparison(table, outcomes, rule, "reference_run", "other_run"), table.groupby(
        POINT
    ).ngroups


def per_seed_comparison(
    table: pd.DataFrame,
    outcomes: Outcomes,
    rule: Rule,
    first: str,
    second: str,
    groups: tuple[str, str] = ("final", "final"),
) -> tuple[Comparison, np.ndarray] | None:
    """Evaluation `groups[0]` of the runs in column `first` against `groups[1]` of those in `second`, each
    row a point of one seed: averaged over a seed's points, compared over seeds (None: a record missing)."""
    per_seed = []
    for _, group in table.groupby("seed", sort=True):
        ds = [outcomes.difference((r[first], groups[0]), (r[second], groups[1])) for _, r in group.iterrows()]
        if any(d is None for d in ds):
            return None
        per_seed.append(ds)
    return comparison(per_seed, rule)
