"""Paired comparisons over seeds: every method against the reference method (LayerCollapse by default).

Runs of the same seed see the same data order (the trainer's loader generator is seeded by the run's
seed), so differences are paired per seed. A difference is the reference's advantage in the sweep's
headline metric (`headline.py`: top-1 points; a lower perplexity of the reference counts positive). It is
reported with its 95% t-interval; one whose interval contains 0 is "no significant difference". Points
where either run missed its matched compression are left out and counted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .headline import headline, sign

POINT = ["dataset", "model", "level"]


def mean_ci(values, confidence: float = 0.95) -> dict:
    """Mean and its t-interval (NaN bounds below two values)."""
    values = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def verdict(
    low: float, high: float, better: str = "LayerCollapse better", worse: str = "LayerCollapse worse"
):
    if pd.isna(low) or pd.isna(high):
        return "too few seeds for an interval"
    if low > 0:
        return better
    if high < 0:
        return worse
    return "no significant difference"


def is_matched(value) -> bool:
    """A run counts as matched unless its record says it missed its target (None: nothing to match)."""
    return value is None or pd.isna(value) or bool(value)


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["status"] == "completed") & (frame["stage"] == "compress")]


def pairs(frame: pd.DataFrame, reference: str, metric: str = "score") -> pd.DataFrame:
    """One row per (point, other variant, seed): the reference's advantage, its value minus the other's
    (the other's minus its own where lower is better: perplexity).

    A variant without levels (the finetune control) is paired with the reference at every level.
    """
    orient = sign(headline(frame)) if metric == "score" else 1
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
                    "difference": orient * (r[metric] - o[metric]),
                    "matched": is_matched(r["matched"]) and is_matched(o["matched"]),
                }
            )
    return pd.DataFrame(rows)


def paired_differences(frame: pd.DataFrame, reference: str = "layercollapse", metric: str = "score"):
    """Per (point, variant): mean reference - variant over matched seed pairs, 95% CI and a verdict."""
    table = pairs(frame, reference, metric)
    if table.empty:
        return pd.DataFrame()
    rows = []
    for (dataset, model, level, variant), group in table.groupby(POINT + ["variant"], sort=False):
        kept = group[group["matched"]]
        ci = mean_ci(kept["difference"])
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "level": level,
                "paper_blocks": group["paper_blocks"].iloc[0],
                "variant": variant,
                "method": group["method"].iloc[0],
                "n_pairs": ci["n"],
                "not_matched_pairs": int((~group["matched"]).sum()),
                "difference": ci["mean"],
                "ci_low": ci["low"],
                "ci_high": ci["high"],
                "verdict": verdict(ci["low"], ci["high"]) if ci["n"] else "not matched",
            }
        )
    return pd.DataFrame(rows)


def pooled_difference(frame: pd.DataFrame, reference: str, variant: str, metric: str = "score") -> dict:
    """The reference's advantage averaged over every matched point, per seed, then a t-interval over
    seeds: one paired estimate for the whole sweep (points missing for a seed are left out of its mean)."""
    table = pairs(frame, reference, metric)
    if table.empty:
        return mean_ci([])
    table = table[(table["variant"] == variant) & table["matched"]]
    return {**mean_ci(table.groupby("seed")["difference"].mean()), "points": table.groupby(POINT).ngroups}
