"""The paper's claims, each checked against one sweep's numbers: every point first, then the aggregate.

A claim's points are its (data set, model, level) comparisons, each judged by the rule of `verdicts.py`;
the aggregate is the mean of the point differences within each seed, over the points every seed has,
compared over seeds by the same rule. A claim is "supported" only where no point is significantly the other
way, "mixed" where points are significant both ways; "not tested" where no comparison could test it (no
point at 74%, no 5x budget), which is not "underpowered" (a test ran and could not decide). Every p-value is
Holm-adjusted over the report's one family (differences, claims and bold together). Below the confirmatory
number of seeds a claim is "not testable", with the direction in k of n seeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from ..zoo.collapse import MATCH_TOLERANCE
from .headline import headline
from .names import method_name, variant_label
from .outcomes import Outcomes
from .stats import (
    CONTROL,
    NO_RECORDS,
    POINT,
    Point,
    completed,
    is_matched,
    points,
    pooled,
    register,
    rule_for,
    within_runs,
)
from .verdicts import TOO_FEW, Comparison, Family, Rule, compare, decide, direction_text

# In the difference's unit (top-1 pp; perplexity: 100 x log ratio; a GLUE metric's points):
MINIMAL_LOSS = 1.0  # "minimal accuracy loss": the change is shown to stay above -1
FOLD_TOLERANCE = 0.5  # "the fold keeps accuracy": after - before is shown to stay above -0.5
KD_ADVANTAGE = 8.0  # the paper's "+8% over KD" (accuracy points)
KD_EFFICIENCY = 5.0  # the paper's "five-fold computational efficiency over KD" (training FLOPs)
REDUCTION_BAND = (0.70, 0.80)  # "up to 74% compression": points with this parameter reduction test it
DEPTH_REDUCTIONS = {
    "block_removal",
    "replaceme",
    "lstsq_fold",
}  # training-free twins of the fold, at epochs=0


@dataclass
class ClaimPoint:
    """One point of a claim: what it is, its comparison, and whether it is beyond the frontier."""

    label: str
    comparison: Comparison | None
    beyond: bool = False


@dataclass
class Claim:
    """A claim's text, how it is judged, its numbers, the tests it adds to the family and its judge."""

    claim: str
    rule: str
    measured: str
    points: list[ClaimPoint] = field(default_factory=list)
    tests: list[tuple[Comparison, str, float]] = field(default_factory=list)  # (comparison, hypothesis, p)
    judge: Callable[[Family], tuple[str, str]] = lambda family: ("not tested", "")  # -> (verdict, tally)


def _fmt(c: Comparison | None, rule: Rule, points: int | None = None) -> str:
    """`+1.23 pp [+0.40, +2.01] (t, 4.0 df; per seed +1.1 +0.9 ...; sign-flip p 0.06; n=5 seeds)`."""
    if c is None:
        return "no data"
    if c.replicates < 2:
        return f"{c.estimate:+.2f} {rule.short_unit} (n=1 seed)"
    over = f", {points} points" if points is not None else ""
    seeds = " ".join(f"{d:+.2f}" for d in c.per_seed)
    text = (
        f"{c.estimate:+.2f} {rule.short_unit} [{c.low:+.2f}, {c.high:+.2f}] (95% t interval, {c.df:.3g} df; "
        f"per seed {seeds}; sign-flip p {c.p_sign_flip:.3g}; n={c.replicates} seeds{over})"
    )
    bound = c.zero_width_bound()
    if bound is not None:
        text += f"; no example differs of {c.discordant[1]}: exact 95% bound ±{bound:.2f} {rule.short_unit}"
    return text


def _tally(decisions: list[str]) -> str:
    """`better at 2, equivalent at 1, underpowered at 3, worse at 0 of 6 points`."""
    counts = Counter(decisions)
    order = ["better", "equivalent", "underpowered", TOO_FEW, "not compared", "no data"]
    parts = [f"better at {counts['better']}"] + [f"{k} at {counts[k]}" for k in order[1:] if counts[k]]
    return ", ".join(parts + [f"worse at {counts['worse']} of {len(decisions)} points"])


def _too_few(c: Comparison | None, rule: Rule) -> bool:
    return c is not None and c.replicates < rule.confirmatory


# --------------------------------------------------------------------------------------------------------
# Claims of an advantage (matched compression, KD accuracy in another metric, regularisation)


def advantage(claim: str, rule_text: str, measured: str, found: list[ClaimPoint], rule: Rule) -> Claim:
    """The reference is ahead: judged per point, then on the mean over points (beyond-frontier points
    are judged for dominance only and left out of the mean)."""
    per_point = [p.comparison for p in found if p.comparison is not None and not p.beyond]
    aggregate, pooled_points = pooled([_seeds(c) for c in per_point], rule.margin)
    tests = [(c, h, p) for c in [*per_point, aggregate] if c for h, p in _two_tests(c)]

    def judge(family: Family) -> tuple[str, str]:
        decisions = [_decision(p, rule, family) for p in found]
        tally = _tally(decisions)
        if aggregate is None:
            return "not tested (no point compared)", tally
        if _too_few(aggregate, rule):
            return f"not testable at n={aggregate.replicates} ({direction_text(aggregate)})", tally
        return _advantage_verdict(decide(aggregate, rule, family).decision, decisions, rule), tally

    text = f"{measured}: mean over {pooled_points} points per seed {_fmt(aggregate, rule)}"
    return Claim(claim, rule_text, text, found, tests, judge)


def _advantage_verdict(mean: str, decisions: list[str], rule: Rule) -> str:
    """The verdict of an advantage from the mean's decision and the points': supported only where no point
    is significantly worse, mixed where points go both ways, and a point's evidence never left unsaid."""
    better, worse, n = decisions.count("better"), decisions.count("worse"), len(decisions)
    if better and worse:
        return "mixed (points significant both ways)"
    if mean == "better":
        return "mixed (a point significantly worse)" if worse else "supported"
    if mean == "worse":
        return "mixed (a point significantly better)" if better else "not supported (worse)"
    on_average = "equivalent on average" if mean == "equivalent" else "the mean undecided"
    if better:
        return f"supported at {better} of {n} points only ({on_average})"
    if worse:
        return f"not supported (worse at {worse} of {n} points; {on_average})"
    if mean == "equivalent":
        return f"not supported: equivalent on average within {rule.margin_text()}"
    return "underpowered"


def _seeds(c: Comparison) -> dict:
    return c.by_seed


def _two_tests(c: Comparison) -> list[tuple[str, float]]:
    return [("difference", c.p_difference), ("equivalence", c.p_equivalence)] if c.replicates >= 2 else []


def _decision(p: ClaimPoint, rule: Rule, family: Family) -> str:
    if p.comparison is None:
        return "no data"
    verdict = decide(p.comparison, rule, family).decision
    if p.beyond and verdict not in ("worse", TOO_FEW):
        return "not compared"
    return verdict


def _from_points(found: list[Point]) -> list[ClaimPoint]:
    return [ClaimPoint(f"{p.model} level {_level(p.level)}", p.comparison, bool(p.beyond)) for p in found]


def _level(level) -> str:
    return "-" if level != level else f"{level:g}"


# --------------------------------------------------------------------------------------------------------
# Claims with their own bounds (74%, the fold, +8 over KD, 5x over KD)


def bounded(
    claim: str,
    rule_text: str,
    measured: str,
    found: list[ClaimPoint],
    bounds: dict[str, tuple[str, float]],
    rule: Rule,
    verdict_of: Callable[[Counter, str | None], str],
    pool: bool = False,
) -> Claim:
    """A claim judged by one-sided tests: `bounds` names each (label -> (above|below, bound)); a point's
    outcome is the first label whose Holm-adjusted p < alpha (else "undecided"); `verdict_of(counts of point
    outcomes, the mean's outcome or None)` gives the claim's verdict. `pool`: the mean is tested too."""
    comparisons = [p.comparison for p in found if p.comparison is not None]
    aggregate = pooled([_seeds(c) for c in comparisons], rule.margin)[0] if pool else None
    tests = [
        (c, f"{side}:{bound:g}", c.p_above(bound) if side == "above" else c.p_below(bound))
        for c in [*comparisons, aggregate]
        if c is not None and c.replicates >= 2
        for side, bound in bounds.values()
    ]

    def outcome(c: Comparison | None, family: Family) -> str:
        if c is None:
            return "no data"
        if _too_few(c, rule):
            return TOO_FEW
        for label, (side, bound) in bounds.items():
            if family.p(c, f"{side}:{bound:g}") < rule.alpha:
                return label
        return "undecided"

    def judge(family: Family) -> tuple[str, str]:
        outcomes = [outcome(p.comparison, family) for p in found]
        counts = Counter(outcomes)
        tally = ", ".join(f"{k} at {v}" for k, v in counts.items()) + f" of {len(found)} points"
        first = next((p.comparison for p in found if p.comparison is not None), None)
        if counts[TOO_FEW] == len(found) and first is not None:
            return f"not testable at n={first.replicates} ({direction_text(first)})", tally
        return verdict_of(counts, outcome(aggregate, family) if aggregate is not None else None), tally

    if pool:
        measured += f"; mean over points per seed {_fmt(aggregate, rule)}"
    return Claim(claim, rule_text, measured, found, tests, judge)


def compression_claim(frame: pd.DataFrame, outcomes: Outcomes, reference: str, rule: Rule) -> Claim:
    """Up to 74% post-training compression with minimal accuracy loss, at the points whose parameter
    reduction lies within 70-80% (final against the original, same run and examples); none: not tested."""
    name = "Up to 74% post-training compression with minimal accuracy loss"
    text = (
        f"at each point with {REDUCTION_BAND[0]:.0%}-{REDUCTION_BAND[1]:.0%} fewer parameters, the change "
        f"against the original: 'minimal loss' if shown above -{MINIMAL_LOSS:g} {rule.short_unit}, 'loses "
        "more' if shown below; supported if some point shows minimal loss and none loses more"
    )
    found, reductions = [], []
    for point, group, c in within_runs(
        _reference_runs(frame, reference), outcomes, rule.margin, ("final", "original")
    ):
        reduction = 1 - 1 / group["compression"].mean()
        reductions.append(reduction)
        if REDUCTION_BAND[0] <= reduction <= REDUCTION_BAND[1]:
            found.append(ClaimPoint(f"{point[1]} level {_level(point[2])} ({reduction:.0%} fewer)", c))
    if not found:
        shown = ", ".join(f"{r:.0%}" for r in sorted(reductions)) or "none"
        return Claim(
            name,
            text,
            f"{reference}'s points reduce parameters by {shown}",
            judge=lambda family: (
                "not tested at 74% (no point within 70-80% fewer parameters)",
                f"no point within {REDUCTION_BAND[0]:.0%}-{REDUCTION_BAND[1]:.0%}",
            ),
        )
    measured = "; ".join(f"{p.label}: {_fmt(p.comparison, rule)}" for p in found)

    def verdict_of(counts: Counter, _) -> str:
        return _either(counts, "minimal loss", "loses more")

    bounds = {"minimal loss": ("above", -MINIMAL_LOSS), "loses more": ("below", -MINIMAL_LOSS)}
    return bounded(name, text, measured, found, bounds, rule, verdict_of)


def _either(counts: Counter, good: str, bad: str) -> str:
    if counts[good] and counts[bad]:
        return "mixed (points both ways)"
    if counts[good]:
        return "supported"
    if counts[bad]:
        return "not supported"
    return "underpowered"


def fold_claim(frame: pd.DataFrame, outcomes: Outcomes, reference: str, rule: Rule) -> Claim:
    """Folding needs no fine-tuning: after the fold - before it (same run and examples) is shown above
    -FOLD_TOLERANCE at every point (an intersection-union test); shown below at one: not supported."""
    name = "The fold itself needs no fine-tuning (accuracy kept)"
    text = (
        f"at every point (after fold - before fold) shown above -{FOLD_TOLERANCE:g} {rule.short_unit}: "
        "supported; shown below at some point: not supported"
    )
    runs = _reference_runs(frame, reference).dropna(subset=["score_prefold"])
    found = [
        ClaimPoint(f"{point[1]} level {_level(point[2])}", c)
        for point, _, c in within_runs(runs, outcomes, rule.margin, ("final", "prefold"))
    ]
    if not found:
        return Claim(name, text, "no folded run", judge=lambda family: ("not tested (no folded run)", ""))
    worst = min((p for p in found if p.comparison), key=lambda p: p.comparison.estimate, default=None)
    measured = (
        f"least favourable point {worst.label}: {_fmt(worst.comparison, rule)}" if worst else NO_RECORDS
    )

    def verdict_of(counts: Counter, _) -> str:
        if counts["loses"]:
            return "not supported"
        return "supported" if counts["keeps"] == len(found) else "underpowered"

    bounds = {"keeps": ("above", -FOLD_TOLERANCE), "loses": ("below", -FOLD_TOLERANCE)}
    return bounded(name, text, measured, found, bounds, rule, verdict_of)


def kd_accuracy_claim(found: list[Point], variant: str, init: str, rule: Rule) -> Claim:
    """+8 pt over KD into the same target network (KD's budget of LayerCollapse's epochs)."""
    name = f"+8 pt over KD into the same network (KD init={init}, same epochs)"
    claim_points = _from_points(found)
    measured = f"LayerCollapse - {variant}"
    if init == "random":
        measured += (
            " (caveat: a randomly initialised student trained for a fine-tuning budget, while LayerCollapse "
            "starts from the trained model: the gap measures the initialisation; init=teacher is the control)"
        )
    if rule.metric != "top1":  # +8 is accuracy points: elsewhere only the direction carries over
        text = "the four-way rule per point and on the mean (the +8 is in accuracy points)"
        return advantage(name, text, measured, claim_points, rule)
    text = (
        f"per point and on the mean over points: 'below +{KD_ADVANTAGE:g}' if shown below it, 'above "
        f"+{KD_ADVANTAGE:g}' if shown above it, 'ahead' if shown above 0; supported if the mean is ahead and "
        f"not below +{KD_ADVANTAGE:g} and no point is below it; not supported if the mean is below it and no "
        "point above; mixed otherwise"
    )

    def verdict_of(counts: Counter, mean: str | None) -> str:
        below, above = counts["below +8"], counts["above +8"]
        if mean == "below +8":
            return "mixed (a point above +8)" if above else "not supported"
        if mean in ("above +8", "ahead"):
            return "mixed (points below +8)" if below else "supported"
        return "mixed (points both ways)" if above and below else "underpowered"

    bounds = {
        "below +8": ("below", KD_ADVANTAGE),
        "above +8": ("above", KD_ADVANTAGE),
        "ahead": ("above", 0.0),
    }
    return bounded(name, text, measured, claim_points, bounds, rule, verdict_of, pool=True)


def kd_cost_claim(frame: pd.DataFrame, found: list[Point], init: str, reference: str, rule: Rule) -> Claim:
    """5x computational efficiency over KD: per point and KD budget (its training FLOPs over the reference's
    at the point), KD's non-inferiority (difference shown below the margin). A budget under 5x that is
    non-inferior refutes it; a budget of at least 5x shown inferior (the reference better) supports it;
    no budget of 5x and none non-inferior: not tested."""
    name = f"5x computational efficiency over KD (KD init={init})"
    text = (
        f"per point and KD budget: 'non-inferior' if LayerCollapse - KD is shown below {rule.margin_text()}, "
        "'inferior' if LayerCollapse is better; refuted at a point by a non-inferior budget under 5x "
        "LayerCollapse's training FLOPs, supported by an inferior budget of at least 5x; not tested without "
        "a 5x budget"
    )
    flops = _reference_flops(frame, reference)
    budgets: dict[tuple, list[tuple[Point, float]]] = {}
    for p in found:
        ratio = p.train_flops / flops.get((p.dataset, p.model, p.level), float("nan"))
        budgets.setdefault((p.dataset, p.model, p.level), []).append((p, ratio))
    comparisons = [p.comparison for group in budgets.values() for p, _ in group if p.comparison is not None]
    tests = [(c, f"below:{rule.margin:g}", c.p_below(rule.margin)) for c in comparisons if c.replicates >= 2]
    tests += [(c, h, p) for c in comparisons for h, p in _two_tests(c)]
    described = "; ".join(
        f"{k[1]} level {_level(k[2])}: "
        + ", ".join(
            f"{p.variant} at {r:.2g}x FLOPs" if r == r else f"{p.variant} (no {reference} run at that level)"
            for p, r in v
        )
        for k, v in budgets.items()
    )

    def at_point(group: list[tuple[Point, float]], family: Family) -> str:
        if any(p.comparison is None for p, _ in group):
            return "no data"
        if all(_too_few(p.comparison, rule) for p, _ in group):
            return TOO_FEW
        if any(r < KD_EFFICIENCY and _non_inferior(p.comparison, rule, family) for p, r in group):
            return "refuted"
        large = [(p, r) for p, r in group if r >= KD_EFFICIENCY]
        if not large:
            return "not tested (no 5x budget)"
        if any(decide(p.comparison, rule, family).decision == "better" for p, _ in large):
            return "supported"
        return "undecided"

    def judge(family: Family) -> tuple[str, str]:
        outcomes = [at_point(group, family) for group in budgets.values()]
        counts = Counter(outcomes)
        tally = ", ".join(f"{k} at {v}" for k, v in counts.items()) + f" of {len(outcomes)} points"
        if not outcomes:
            return "not tested (no KD run)", tally
        if counts["supported"] and counts["refuted"]:
            return "mixed (points both ways)", tally
        if counts["refuted"]:
            return "not supported", tally
        if counts["supported"]:
            return "supported", tally
        if counts["not tested (no 5x budget)"] == len(outcomes):
            return "not tested (no budget of 5x LayerCollapse's training FLOPs ran)", tally
        if counts[TOO_FEW] == len(outcomes):
            return "not testable (too few seeds)", tally
        return "underpowered", tally

    return Claim(name, text, described or "no KD run", _from_points(found), tests, judge)


def _non_inferior(c: Comparison, rule: Rule, family: Family) -> bool:
    return c.replicates >= rule.confirmatory and family.p(c, f"below:{rule.margin:g}") < rule.alpha


def regularise_claim(frame: pd.DataFrame, outcomes: Outcomes, reference: str, rule: Rule) -> Claim | None:
    """LayerCollapse regularises: its regularised model before the fold against the fine-tune control of
    the same epochs (same seed and examples), per point and on the mean."""
    done = completed(frame)
    control = done[done["method"] == CONTROL]
    if control.empty:
        return None
    found = []
    for (dataset, model, level), group in _reference_runs(frame, reference).groupby(POINT, sort=False):
        seeds = {}
        for _, run in group.iterrows():
            same = control[
                (control["dataset"] == dataset)
                & (control["model"] == model)
                & (control["seed"] == run["seed"])
            ]
            if len(same):
                seeds[run["seed"]] = outcomes.difference(
                    (run["run_id"], "prefold"), (same["run_id"].iloc[0], "final")
                )
        complete = seeds and all(d is not None for d in seeds.values())
        comparison = compare(seeds, rule.margin) if complete else None
        found.append(ClaimPoint(f"{model} level {_level(level)}", comparison))
    return advantage(
        "LayerCollapse regularises (before its fold it beats the fine-tune control of the same epochs)",
        "per point and on the mean over points: supported if better with no point worse; mixed if points "
        "both ways; not supported if worse or equivalent",
        f"LayerCollapse before its fold - {control['variant'].iloc[0]}",
        found,
        rule,
    )


def method_claim(
    frame: pd.DataFrame,
    found: list[Point],
    method: str,
    variant: str,
    reference: str,
    rule: Rule,
    outside: list[Point] = (),
) -> Claim:
    """At matched compression (on the reference's frontier), the reference is more accurate than `variant`;
    every run it made within its declared operating range counts, with how often it reached its target (the
    points `outside` that range are named, never counted)."""
    label, name = (
        variant_label(method, variant),
        method_name(next(iter(frame.loc[frame["variant"] == reference, "method"]), reference)),
    )
    claim = f"At matched compression, {name} is more accurate than {label}"
    if method == "layer_folding":
        claim = f"{name} vs {label}, the same mechanism: more accurate at matched compression"
    elif method in DEPTH_REDUCTIONS and training_free(frame, variant):
        claim = f"{name} vs training-free depth reduction at matched compression: {label}"
    reached = sum(p.reached[0] for p in found), sum(p.reached[1] for p in found)
    pairings = Counter(v for p in found for v in p.pairing.values())
    measured = (
        f"{reference} - {variant}, every run it made{' within its declared range' if outside else ''} "
        f"(reached its target in {reached[0]} of {reached[1]} "
        "seed-points; compared on the frontier: " + ", ".join(f"{k} {v}" for k, v in pairings.items()) + ")"
    )
    if method in DEPTH_REDUCTIONS and training_free(frame, variant):
        measured += "; " + flops_ratio_text(frame, reference, variant)
    if outside:
        measured += "; not counted, outside its declared range: " + ", ".join(
            f"{p.model} level {_level(p.level)} ({p.outside.split(': ', 1)[-1]})" for p in outside
        )
    if method == "block_removal":
        measured += (
            "; caveat: ShortGPT's premise is the redundancy of LLMs of 32 or more layers, and these models "
            "have a few blocks, each a large share of the model"
        )
    text = (
        "every run compared at the compression it achieved (on LayerCollapse's frontier: matched within "
        f"{MATCH_TOLERANCE:.0%} or interpolated), per point and on the mean over points: supported if better "
        "with no point worse; mixed if points both ways; not supported if worse or equivalent"
    )
    return advantage(claim, text, measured, _from_points(found), rule)


def _reference_runs(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    done = frame[(frame["status"] == "completed") & (frame["variant"] == reference)]
    return done[done["matched"].map(is_matched).astype(bool)]


def _reference_flops(frame: pd.DataFrame, reference: str) -> dict:
    runs = _reference_runs(frame, reference)
    return runs.groupby(POINT)["train_flops"].mean().to_dict()


def training_free(frame: pd.DataFrame, variant: str) -> bool:
    """Whether every completed run of `variant` compressed without a training step (epochs 0)."""
    epochs = frame.loc[(frame["variant"] == variant) & (frame["status"] == "completed"), "epochs"]
    return len(epochs) > 0 and bool((epochs == 0).all())


def flops_ratio_text(frame: pd.DataFrame, reference: str, variant: str) -> str:
    """`variant`'s training FLOPs (its calibration) as a fraction of the reference's at the same points and
    seeds, every point (matched or not) with both runs: the cost side of a training-free comparison."""
    done = frame[frame["status"] == "completed"]
    keys = ["model", "level", "seed"]
    both = done[done["variant"] == reference].merge(
        done[done["variant"] == variant], on=keys, suffixes=("", "_o")
    )
    if both.empty:
        return "training FLOPs: no paired runs"
    ratio = both["train_flops_o"] / both["train_flops"]
    return (
        f"its training FLOPs (calibration) are {ratio.min():.3g}x to {ratio.max():.3g}x "
        f"LayerCollapse's (median {ratio.median():.3g}x, {len(ratio)} runs; counted, not tested)"
    )


# --------------------------------------------------------------------------------------------------------
# The table


def build_claims(
    frame: pd.DataFrame, outcomes: Outcomes, found: list[Point], reference: str, rule: Rule
) -> list[Claim]:
    """Every claim the sweep can speak to, in the paper's order."""
    done = completed(frame)
    by_variant: dict[str, list[Point]] = {}
    outside: dict[str, list[Point]] = {}  # outside the method's declared range: named, never counted
    for p in found:
        (outside if p.outside else by_variant).setdefault(p.variant, []).append(p)
    kd = done[done["method"] == "kd"]
    base = (
        kd.groupby("init")["variant"].agg(lambda v: sorted(v, key=len)[0])
        if len(kd)
        else pd.Series(dtype=str)
    )
    claims = [
        compression_claim(frame, outcomes, reference, rule),
        fold_claim(frame, outcomes, reference, rule),
    ]
    claims += [kd_accuracy_claim(by_variant.get(v, []), v, init, rule) for init, v in base.items()]
    for init in base.index:
        variants = set(kd.loc[kd["init"] == init, "variant"])
        budget_points = [p for v in sorted(variants) for p in by_variant.get(v, [])]
        claims.append(kd_cost_claim(frame, budget_points, init, reference, rule))
    regularises = regularise_claim(frame, outcomes, reference, rule)
    claims += [regularises] if regularises else []
    named = {"kd", CONTROL, *done.loc[done["variant"] == reference, "method"]}  # (its own variants: no claim)
    for variant in dict.fromkeys([*by_variant, *outside]):
        group = by_variant.get(variant, [])
        left_out = outside.get(variant, [])
        if (group or left_out)[0].method not in named:
            method = (group or left_out)[0].method
            claims.append(method_claim(frame, group, method, variant, reference, rule, left_out))
    return claims


def register_claims(family: Family, claims: list[Claim]) -> None:
    for claim in claims:
        for comparison, hypothesis, p in claim.tests:
            family.add(comparison, hypothesis, p)


def claims_frame(claims: list[Claim], rule: Rule, family: Family) -> pd.DataFrame:
    """One row per claim: claim, rule, measured numbers, its points' tally, verdict, and the rule's
    parameters with the family's size."""
    rows = []
    for claim in claims:
        verdict, tally = claim.judge(family)
        raw = ", ".join(f"{h} {p:.3g}" for _, h, p in claim.tests[:6])
        adjusted = ", ".join(f"{h} {family.p(c, h):.3g}" for c, h, _ in claim.tests[:6])
        rows.append(
            {
                "claim": claim.claim,
                "rule": claim.rule,
                "measured": claim.measured,
                "points": tally,
                "verdict": verdict,
                "p_values": raw,
                "p_values_holm": adjusted,
                **{f"rule_{k}": v for k, v in rule.parameters().items()},
                "rule_family": len(family),
            }
        )
    return pd.DataFrame(rows, columns=None if rows else ["claim", "rule", "measured", "points", "verdict"])


def claim_points(claims: list[Claim], rule: Rule, family: Family) -> pd.DataFrame:
    """Every point of every claim, before any average: its estimate, interval and decision."""
    rows = []
    for claim in claims:
        for p in claim.points:
            c = p.comparison
            rows.append(
                {
                    "claim": claim.claim,
                    "point": p.label,
                    "difference": c.estimate if c else float("nan"),
                    "ci_low": c.low if c else float("nan"),
                    "ci_high": c.high if c else float("nan"),
                    "n": c.replicates if c else 0,
                    "decision": _decision(p, rule, family),
                }
            )
    columns = ["claim", "point", "difference", "ci_low", "ci_high", "n", "decision"]
    return pd.DataFrame(rows, columns=columns)


def claims_table(
    frame: pd.DataFrame,
    outcomes: Outcomes,
    reference: str = "layercollapse",
    margin: float | None = None,
    family: Family | None = None,
) -> pd.DataFrame:
    """The claims of a frame, judged in `family` (its own, with the points', when none is given)."""
    rule = rule_for(frame, margin)
    found = points(frame, outcomes, reference, rule.margin)
    claims = build_claims(frame, outcomes, found, reference, rule)
    if family is None:
        family = Family(rule.alpha)
        register(family, found)
        register_claims(family, claims)
    return claims_frame(claims, rule, family)


def quality_word(frame: pd.DataFrame) -> str:
    quality = headline(frame)
    return "top-1" if quality.key == "top1" else quality.key
