"""Paired comparisons: every method against the reference method (LayerCollapse by default) on the
reference's accuracy-compression frontier, per seed and per held-out example, judged by `verdicts.py`.

Runs of the same seed start from the same original model (the seed's own, trained on its own split) and are
scored on the same held-out examples. Every run a method made is compared at the compression it achieved,
whatever it was planned for and whether or not it reached its target (intention-to-treat; how often it did
is reported beside, as its success rate):

- **matched**: a reference point of the same seed lies within the 2% tolerance: compared with it;
- **interpolated**: two reference points bracket it: compared with their mixture, linear in retained
  parameters (what picking one or the other at random in those proportions would score and keep);
- **beyond** the reference's frontier: compared with its nearest end, which can only show dominance (the
  method compresses more and is better).

The reference's frontier in a seed is its runs at every level plus, at 1x, the fine-tune control (the
reference's recipe with no block selected), or the original where no control ran. A difference is the
reference's advantage in the headline metric (top-1 points; perplexity: 100 x log ratio, + favouring the
reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..zoo.collapse import MATCH_TOLERANCE
from .outcomes import Outcomes
from .records import NOT_COUNTED, OUTSIDE
from .verdicts import Comparison, Family, Rule, SeedDifference, compare, decide, seeds_needed_range, wording

POINT = ["dataset", "model", "level"]
NO_RECORDS = "no per-example records (runs made before lcbench kept them: rerun them)"
CONTROL = "finetune"  # the uncompressed control: the reference's 1x point, never a compression method
PAIRINGS = ("matched", "interpolated", "beyond")


def is_matched(value) -> bool:
    """A run counts as matched unless its record says it missed its target (None: nothing to match)."""
    return value is None or pd.isna(value) or bool(value)


def reached_target(row: pd.Series) -> bool:
    """Whether a run reached what it was planned for: matched, and neither infeasible nor not folded."""
    flag = row.get("flag") or ""
    return is_matched(row.get("matched")) and not any(f in flag for f in NOT_COUNTED)


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["status"] == "completed") & (frame["stage"] == "compress")]


def rule_for(frame: pd.DataFrame, margin: float | None = None) -> Rule:
    """The verdict rule for the frame's headline metric (several GLUE metrics: their points, margin 1)."""
    metrics = list(dict.fromkeys(frame["metric"])) if "metric" in frame and len(frame) else ["top1"]
    return Rule.for_metric(metrics[0] if len(metrics) == 1 else "score", margin)


# --------------------------------------------------------------------------------------------------------
# The reference's frontier


@dataclass(frozen=True)
class FrontierPoint:
    compression: float
    side: tuple  # ((run id, evaluation, weight), ...)
    label: str


def frontier(done: pd.DataFrame, reference: str, dataset: str, model: str, seed) -> list[FrontierPoint]:
    """The reference's points of one (data set, model, seed) by compression, its 1x point first."""
    same = done[(done["dataset"] == dataset) & (done["model"] == model) & (done["seed"] == seed)]
    runs = same[same["variant"] == reference].sort_values("compression")
    if runs.empty:
        return []
    control = same[same["method"] == CONTROL]
    start = (
        FrontierPoint(1.0, ((control["run_id"].iloc[0], "final", 1.0),), "the fine-tune control")
        if len(control)
        else FrontierPoint(1.0, ((runs["run_id"].iloc[0], "original", 1.0),), "the original")
    )
    points = [start] + [
        FrontierPoint(
            float(r["compression"]), ((r["run_id"], "final", 1.0),), f"level {_level_text(r['level'])}"
        )
        for _, r in runs.iterrows()
        if r["compression"] == r["compression"]
    ]
    return sorted(points, key=lambda p: p.compression)


def _level_text(level) -> str:
    return "-" if level != level else f"{level:g}"


def place(points: list[FrontierPoint], compression: float) -> tuple[str, tuple, str]:
    """Where a run of `compression` meets the frontier: (pairing, the reference's side, how)."""
    nearest = min(points, key=lambda p: abs(math.log(p.compression / compression)))
    if abs(nearest.compression / compression - 1) <= MATCH_TOLERANCE:
        return "matched", nearest.side, nearest.label
    below = [p for p in points if p.compression < compression]
    above = [p for p in points if p.compression > compression]
    if below and above:
        lo, hi = below[-1], above[0]
        weight = (1 / lo.compression - 1 / compression) / (1 / lo.compression - 1 / hi.compression)
        side = tuple((run, group, (1 - weight) * w) for run, group, w in lo.side) + tuple(
            (run, group, weight * w) for run, group, w in hi.side
        )
        return "interpolated", side, f"between {lo.label} and {hi.label}"
    end = points[-1] if not above else points[0]
    return "beyond", end.side, f"beyond {end.label}"


# --------------------------------------------------------------------------------------------------------
# One point: a method at one (data set, model, level) against the frontier, over seeds


@dataclass
class Point:
    dataset: str
    model: str
    level: float
    variant: str
    method: str
    paper_blocks: float = math.nan
    seeds: dict = field(default_factory=dict)  # seed -> SeedDifference
    pairing: dict = field(default_factory=dict)  # seed -> matched / interpolated / beyond
    placed: dict = field(default_factory=dict)  # seed -> what the run met on the frontier
    compression: float = math.nan  # mean achieved
    train_flops: float = math.nan  # mean counted
    reached: tuple[int, int] = (0, 0)  # runs that reached their target, runs
    missing: str = ""  # why it could not be compared at all
    outside: str = ""  # outside the method's declared operating range: why (shown, never compared)
    comparison: Comparison | None = None

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.level, self.variant)

    @property
    def beyond(self) -> int:
        return sum(p == "beyond" for p in self.pairing.values())

    def pairing_text(self) -> str:
        counts = {p: sum(v == p for v in self.pairing.values()) for p in PAIRINGS}
        n = len(self.pairing)
        return ", ".join(f"{k} in {v} of {n}" for k, v in counts.items() if v) or "-"

    def compared_with(self) -> str:
        """What the runs met on the frontier: `level 1`, `the fine-tune control` (counted when several)."""
        counts = pd.Series(list(self.placed.values()), dtype=object).value_counts()
        if len(counts) == 1:
            return str(counts.index[0])
        return "; ".join(f"{label} ({n})" for label, n in counts.items())

    def reached_text(self) -> str:
        return f"{self.reached[0]} of {self.reached[1]}"


def points(frame: pd.DataFrame, outcomes: Outcomes, reference: str, margin: float) -> list[Point]:
    """Every (data set, model, level, variant) but the reference and the control, compared over seeds."""
    done = completed(frame)
    others = done[(done["variant"] != reference) & (done["method"] != CONTROL)]
    frontiers: dict[tuple, list[FrontierPoint]] = {}
    found = []
    for (dataset, model, level, variant), group in others.groupby(
        POINT + ["variant"], sort=False, dropna=False
    ):
        point = Point(dataset, model, level, variant, group["method"].iloc[0], group["paper_blocks"].iloc[0])
        point.compression = float(group["compression"].mean())
        point.train_flops = float(group["train_flops"].mean())
        point.reached = (int(group.apply(reached_target, axis=1).sum()), len(group))
        outside = group[group["flag"].fillna("").str.contains(OUTSIDE)]
        if len(outside):
            reason = outside["outside_range"].iloc[0] if "outside_range" in outside else ""
            point.outside = f"{OUTSIDE} in {len(outside)} of {len(group)} seeds" + (
                f": {reason}" if reason else ""
            )
            found.append(point)
            continue
        for _, run in group.sort_values("seed").iterrows():
            key = (dataset, model, run["seed"])
            if key not in frontiers:
                frontiers[key] = frontier(done, reference, *key)
            if not frontiers[key] or not run["compression"] == run["compression"]:
                continue
            pairing, side, how = place(frontiers[key], float(run["compression"]))
            difference = outcomes.difference(side, (run["run_id"], "final"))
            if difference is None:
                point.missing = NO_RECORDS
                continue
            point.seeds[run["seed"]] = difference
            point.pairing[run["seed"]], point.placed[run["seed"]] = pairing, how
        if point.seeds and not point.missing:
            point.comparison = compare(point.seeds, margin)
        elif not point.missing:
            point.missing = f"no {reference} run of the same seeds to compare with"
        found.append(point)
    return found


def register(family: Family, found: list[Point]) -> None:
    for point in found:
        if not point.outside:
            family.add_comparison(point.comparison)


def point_decision(point: Point, rule: Rule, family: Family) -> str:
    """better / worse / equivalent / underpowered / too few seeds / not compared (beyond the frontier: only
    'worse', the method dominating, is a finding there)."""
    if point.outside:
        return OUTSIDE
    if point.comparison is None:
        return "no data" if point.missing == NO_RECORDS else "not compared"
    verdict = decide(point.comparison, rule, family)
    if point.beyond and verdict.decision != "worse" and verdict.decision != "too few seeds":
        return "not compared"
    return verdict.decision


def point_wording(point: Point, rule: Rule, family: Family, subject: str = "LayerCollapse") -> str:
    c = point.comparison
    if point.outside:
        return point.outside + " (not compared)"
    if c is None:
        return point.missing
    verdict = decide(c, rule, family)
    text = wording(verdict, c, rule, subject)
    if point.beyond and verdict.decision not in ("worse", "too few seeds"):
        return (
            f"not compared: beyond {subject}'s frontier in {point.beyond} of {len(point.pairing)} seeds "
            f"(it compresses more, so only its dominance could be shown; {text})"
        )
    if point.beyond and verdict.decision == "worse":
        return text + f" (dominated: it compresses more and is better, in {point.beyond} seeds beyond)"
    return text


# --------------------------------------------------------------------------------------------------------
# The differences table


def differences_table(
    found: list[Point], rule: Rule, family: Family, subject: str = "LayerCollapse"
) -> pd.DataFrame:
    """One row per point: the pairing, the success rate, the estimate with its intervals and tests (raw and
    Holm over the report's family), the verdict and, where undecided, the seeds that would decide it."""
    rows = []
    for point in found:
        c = point.comparison
        row = {
            "dataset": point.dataset,
            "model": point.model,
            "level": point.level,
            "paper_blocks": point.paper_blocks,
            "variant": point.variant,
            "method": point.method,
            "n_pairs": len(point.seeds),
            "pairing": point.pairing_text(),
            "compared_with": point.compared_with(),
            "compression": point.compression,
            "reached_target": point.reached_text(),
        }
        if c is not None and not point.outside:
            needed = (math.nan, math.nan, math.nan)
            decision = point_decision(point, rule, family)
            if decision == "underpowered":
                needed = seeds_needed_range(c, rule.margin, family.step_level(c, "difference"))
            verdict = decide(c, rule, family)
            row.update(
                difference=c.estimate,
                ci_low=c.low,
                ci_high=c.high,
                ci90_low=c.low90,
                ci90_high=c.high90,
                se=c.se,
                df=c.df,
                between_seed_variance=c.between,
                within_seed_variance=c.within,
                shared_test_set_covariance=c.shared,
                shared_test_set=c.shared_test_set,
                per_seed=" ".join(f"{d:+.3g}" for d in c.per_seed),
                seeds_ahead=c.ahead,
                p_difference=c.p_difference,
                p_difference_holm=family.p(c, "difference"),
                p_equivalence=c.p_equivalence,
                p_equivalence_holm=family.p(c, "equivalence"),
                p_sign_flip=c.p_sign_flip,
                mcnemar_p=" ".join(f"{p:.3g}" if p > 0 else "<1e-300" for p in c.mcnemar),
                seeds_needed=needed[0],
                seeds_needed_low=needed[1],
                seeds_needed_high=needed[2],
                margin=rule.margin,
                unit=rule.unit,
                decision=decision,
                size=verdict.size if decision in ("better", "worse") else "",
                borderline=verdict.borderline,
                verdict=point_wording(point, rule, family, subject),
            )
        else:
            row.update(
                difference=math.nan,
                decision=point_decision(point, rule, family),
                verdict=point_wording(point, rule, family, subject),
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else DIFFERENCE_COLUMNS)  # (a header when none)


# what differences.csv holds at least, whether or not the sweep has a point to compare
DIFFERENCE_COLUMNS = ["dataset", "model", "level", "paper_blocks", "variant", "method", "n_pairs",
                      "difference", "decision", "verdict"]  # fmt: skip


def paired_differences(
    frame: pd.DataFrame,
    outcomes: Outcomes,
    reference: str = "layercollapse",
    rule: Rule | None = None,
    family: Family | None = None,
) -> pd.DataFrame:
    """The differences table of a frame (its own family when none is given)."""
    rule = rule or rule_for(frame)
    found = points(frame, outcomes, reference, rule.margin)
    if family is None:
        family = Family(rule.alpha)
        register(family, found)
    return differences_table(found, rule, family)


def within_runs(
    runs: pd.DataFrame, outcomes: Outcomes, margin: float, groups: tuple[str, str]
) -> list[tuple[tuple, pd.DataFrame, Comparison | None]]:
    """Per point: evaluation groups[0] against groups[1] of the same runs (final vs original, vs prefold),
    over seeds (None where a record is missing)."""
    found = []
    for point, group in runs.groupby(POINT, sort=False):
        seeds = {
            r["seed"]: outcomes.difference((r["run_id"], groups[0]), (r["run_id"], groups[1]))
            for _, r in group.sort_values("seed").iterrows()
        }
        complete = all(s is not None for s in seeds.values())
        found.append((point, group, compare(seeds, margin) if complete else None))
    return found


def pooled(per_point: list[dict], margin: float) -> tuple[Comparison | None, int]:
    """The mean over points within each seed, compared over seeds, pooling only the points every seed has
    (`per_point`: one {seed: SeedDifference} per point). Returns the comparison and the points pooled."""
    seeds = set().union(*per_point) if per_point else set()
    complete = [p for p in per_point if set(p) == seeds]
    if not complete:
        return None, 0
    order = sorted(seeds, key=str)
    return compare([SeedDifference.mean([p[s] for p in complete]) for s in order], margin), len(complete)


def mean_of(values) -> float:
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else math.nan
