"""The paper's claims, each checked against one sweep's numbers with a verdict.

Verdicts: `supported`, `not supported`, `equivalent` (where a claim of an advantage meets a difference
inside the practical margin) or `underpowered` (with the seeds that would decide it), marked `screening`
below `verdicts.CONFIRMATORY` seeds. Every test is paired per seed and per held-out example (`stats.py`,
`verdicts.py`); the p-values of all claims of one report form one family, Holm-corrected. The rule behind
each verdict is written next to it, so a reader can disagree with the rule rather than guess it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..zoo.collapse import MATCH_TOLERANCE
from .headline import headline
from .names import method_name, variant_label
from .outcomes import Outcomes
from .stats import NO_RECORDS, POINT, comparison, is_matched, pooled_comparison, rule_for
from .verdicts import (
    Comparison,
    Rule,
    decide,
    holm,
    one_sided_p,
    seeds_needed_text,
    wording,
    zero_width_bound,
)

# In the difference's unit (top-1 pp; % relative perplexity; a GLUE metric's points):
MINIMAL_LOSS = 1.0  # "minimal accuracy loss": the change is shown to stay above -1
FOLD_TOLERANCE = 0.5  # "the fold keeps accuracy": after - before is shown to stay above -0.5
KD_ADVANTAGE = 8.0  # the paper's "+8% over KD" (accuracy points)
DEPTH_REDUCTIONS = {"block_removal", "replaceme"}  # training-free twins of the fold, at epochs=0


@dataclass
class Test:
    """A claim's measured numbers, its p-values (unadjusted) and how Holm-adjusted ones (over a family of
    `family` tests) become a verdict."""

    measured: str
    pvalues: dict[str, float] = field(default_factory=dict)
    judge: Callable[[dict[str, float], int], str] = lambda p, family: "underpowered"
    note: Callable[[dict[str, float], int], str] = lambda p, family: ""  # added to `measured` once judged


def _fmt(c: Comparison | tuple | None, rule: Rule) -> str:
    """`+1.23 pp [+0.40, +2.01] (n=5 seeds, P(ahead)=0.80)` (a comparison, or one with its draws)."""
    c = c[0] if isinstance(c, tuple) else c
    if c is None:
        return "no data"
    text = (
        f"{c.estimate:+.2f} {rule.unit} [{c.low:+.2f}, {c.high:+.2f}] "
        f"(n={c.replicates} seeds, P(ahead)={c.p_reference_ahead:.2f})"
    )
    bound = zero_width_bound(c.discordant) if c.zero_width else None
    if bound is not None:
        text += f"; no example differs of {c.discordant[1]}: exact 95% bound ±{bound:.2f} {rule.unit}"
    return text


def _p(result: tuple[Comparison, np.ndarray], bound: float, at_most: bool) -> float:
    """One-sided p of H0 "difference <= bound" (`at_most`) or ">= bound" for a comparison and its draws."""
    c, draws = result
    return one_sided_p(draws, bound, at_most, c.discordant)


def _screening(c: Comparison | None, rule: Rule) -> str:
    return f" (screening, n={c.replicates})" if c is not None and c.replicates < rule.confirmatory else ""


def _judge(tests: list[tuple[str, str]], c: Comparison, rule: Rule) -> Callable[[dict, int], str]:
    """The verdict of the first test (p-value name, verdict) whose Holm-adjusted p is below alpha, else
    underpowered; "screening" below the confirmatory number of seeds."""

    def judge(p: dict, family: int) -> str:
        found = next((verdict for name, verdict in tests if p[name] < rule.alpha), "underpowered")
        return found + _screening(c, rule)

    return judge


def _lc_runs(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    done = frame[(frame["status"] == "completed") & (frame["variant"] == reference)]
    return done[done["matched"].map(is_matched).astype(bool)]


def _within_runs(runs: pd.DataFrame, outcomes: Outcomes, rule: Rule, groups: tuple[str, str]):
    """Per point: evaluation groups[0] against groups[1] of the same runs (final vs original, vs prefold)."""
    found = []
    for point, group in runs.groupby(POINT, sort=False):
        per_seed = [
            [d]
            for d in (
                outcomes.difference((r, groups[0]), (r, groups[1]))
                for r in group.sort_values("seed")["run_id"]
            )
        ]
        if any(ds[0] is None for ds in per_seed):
            found.append((point, group, None))
            continue
        found.append((point, group, comparison(per_seed, rule)))
    return found


def compression_claim(frame: pd.DataFrame, outcomes: Outcomes, reference: str, rule: Rule) -> Test:
    """Up to 74% post-training compression with minimal accuracy loss: at some point with >= 74% fewer
    parameters, the change against the original (same examples) is shown to stay above -MINIMAL_LOSS."""
    points = []
    for point, group, result in _within_runs(
        _lc_runs(frame, reference), outcomes, rule, ("final", "original")
    ):
        reduction = 1 - 1 / group["compression"].mean()
        points.append((reduction, point, result))
    if not points:
        return Test("no LayerCollapse point", judge=lambda p, family: "underpowered (no data)")
    if any(r is None for _, _, r in points):
        return Test(NO_RECORDS, judge=lambda p, family: "underpowered (no data)")
    big = [p for p in points if p[0] >= 0.74]
    # one-sided p of "the loss is at least MINIMAL_LOSS" per big point; Bonferroni over the points searched
    p_small = {p[1]: min(1.0, len(big) * _p(p[2], -MINIMAL_LOSS, True)) for p in big}
    p_large = {p[1]: _p(p[2], -MINIMAL_LOSS, False) for p in big}
    shown = min(big, key=lambda p: (p_small[p[1]], -p[0])) if big else max(points, key=lambda p: p[0])
    c = shown[2][0]
    measured = (
        f"largest reduction {shown[0]:.0%} ({shown[1][1]}, level {int(shown[1][2])}): change against the "
        f"original {_fmt(c, rule)}; {len(big)} of {len(points)} points reach 74%"
    )
    if not big:
        return Test(measured, judge=lambda p, family: "underpowered (no point reaches 74% at this scale)")
    pvalues = {"minimal_loss": min(p_small.values()), "large_loss": max(p_large.values())}
    return Test(
        measured, pvalues, _judge([("minimal_loss", "supported"), ("large_loss", "not supported")], c, rule)
    )


def fold_claim(frame: pd.DataFrame, outcomes: Outcomes, reference: str, rule: Rule) -> Test:
    """Folding needs no fine-tuning: the metric after the fold stays within FOLD_TOLERANCE of the
    regularised model's before it (same examples), at every point (an intersection-union test)."""
    lc = _lc_runs(frame, reference).dropna(subset=["score_prefold"])
    found = _within_runs(lc, outcomes, rule, ("final", "prefold"))
    if not found:
        return Test("no folded LayerCollapse run", judge=lambda p, family: "underpowered (no data)")
    if any(r is None for _, _, r in found):
        return Test(NO_RECORDS, judge=lambda p, family: "underpowered (no data)")
    keeps = [_p(r, -FOLD_TOLERANCE, True) for _, _, r in found]  # H0: the fold loses the tolerance
    loses = [_p(r, -FOLD_TOLERANCE, False) for _, _, r in found]  # H0: it keeps it
    worst = int(np.argmax(keeps))
    point, _, (c, _) = found[worst]
    measured = f"least favourable point {point[1]} level {int(point[2])}: after - before fold {_fmt(c, rule)}"
    pvalues = {"fold_keeps": max(keeps), "fold_loses": min(loses)}
    return Test(
        measured, pvalues, _judge([("fold_keeps", "supported"), ("fold_loses", "not supported")], c, rule)
    )


def _advantage_test(measured: str, result, rule: Rule) -> Test:
    """A claim that the reference is ahead: better -> supported, worse -> not supported, equivalent ->
    not supported (equal within the margin), else underpowered (with the seeds needed)."""
    if result is None:
        return Test(measured + ": " + NO_RECORDS, judge=lambda p, family: "underpowered (no data)")
    c, _ = result

    def judge(p: dict, family: int) -> str:
        verdict = decide(c, rule, p["difference"], p["equivalence"])
        text = wording(verdict, c, rule)
        words = {
            "better": "supported",
            "worse": "not supported",
            "equivalent": f"not supported: equivalent within ±{rule.margin:g} {rule.unit}",
        }
        return (
            text.replace(verdict.decision, words[verdict.decision], 1) if verdict.decision in words else text
        )

    def note(p: dict, family: int) -> str:
        undecided = decide(c, rule, p["difference"], p["equivalence"]).decision == "underpowered"
        return seeds_needed_text(c, rule, family) if undecided else ""

    return Test(measured, {"difference": c.p_difference, "equivalence": c.p_equivalence}, judge, note)


def kd_accuracy_claim(
    frame: pd.DataFrame, outcomes: Outcomes, reference: str, variant: str, rule: Rule
) -> Test:
    """+8 pt over KD into the same target network (one KD variant at LayerCollapse's budget)."""
    result, points = pooled_comparison(frame, outcomes, reference, variant, rule)
    measured = f"LayerCollapse - {variant}, averaged over {points} points: {_fmt(result, rule)}"
    inits = frame.loc[frame["variant"] == variant, "init"]
    if len(inits) and inits.iloc[0] == "random":
        measured += (
            " (caveat: a randomly initialised student trained for a fine-tuning budget, while "
            "LayerCollapse starts from the trained model; the gap measures the initialisation, not "
            "distillation: the teacher-initialised row is the fair control)"
        )
    if rule.metric != "top1" or result is None:  # +8 is accuracy points: elsewhere only the sign carries over
        if result is not None:
            measured += (
                f" (the paper's +8 is in accuracy points; in {rule.metric} only its direction is checked)"
            )
        return _advantage_test(measured, result, rule)
    c = result[0]
    pvalues = {"below_8": _p(result, KD_ADVANTAGE, False), "above_0": _p(result, 0.0, True)}
    return Test(measured, pvalues, _judge([("below_8", "not supported"), ("above_0", "supported")], c, rule))


def kd_cost_claim(flops: pd.DataFrame, init: str, metric: str = "top-1") -> Test:
    """5x computational efficiency over KD: KD needs >= 5x LayerCollapse's FLOPs to reach its top-1 (or the
    sweep's headline `metric`). Counted FLOPs, no test: its verdict is not in the Holm family."""
    rows = flops[flops["init"] == init] if len(flops) else flops
    if rows.empty:
        return Test("no KD budget runs", judge=lambda p, family: "underpowered (no data)")
    below = rows[rows["reached"] & (rows["ratio"] < 5)]
    beyond = rows[~rows["reached"] & (rows["largest_budget"] >= 5)]
    at_least = rows[rows["reached"] & (rows["ratio"] >= 5)]
    ratios = rows.loc[rows["reached"], "ratio"]
    measured = (
        f"KD (init={init}) reached LayerCollapse's {metric} at {int(rows['reached'].sum())} of "
        f"{len(rows)} points"
        + (f", needing {ratios.min():.2f}x to {ratios.max():.2f}x its FLOPs" if len(ratios) else "")
        + f"; not within 5x at {len(beyond)}; largest budget tried {rows['largest_budget'].max():g}x epochs"
    )
    if len(below) > len(rows) / 2:
        verdict = "not supported"
    elif len(beyond) + len(at_least) > len(rows) / 2:
        verdict = "supported"
    else:
        verdict = "underpowered (no majority of points either way)"
    return Test(measured, judge=lambda p, family: verdict)


def other_methods(frame: pd.DataFrame, reference: str) -> list[tuple[str, str]]:
    """(method, variant) of every compression method in the records that no claim above names."""
    named = {*frame.loc[frame["variant"] == reference, "method"], "kd", "finetune", "none"}
    compressed = (frame["status"] == "completed") & (frame["stage"] == "compress")  # (not the originals)
    done = frame[compressed & ~frame["method"].isin(named)]
    return list(dict.fromkeys(zip(done["method"], done["variant"])))


def claims_table(
    frame: pd.DataFrame,
    flops: pd.DataFrame,
    outcomes: Outcomes,
    reference: str = "layercollapse",
    margin: float | None = None,
) -> pd.DataFrame:
    """One row per claim (and per KD initialisation): claim, rule, measured numbers, verdict, and the
    verdict rule's parameters; p-values Holm-corrected over the table."""
    rule = rule_for(frame, margin)
    quality = headline(frame)
    metric = "top-1" if quality.key == "top1" else quality.key
    kd_inits = (
        frame[(frame["method"] == "kd") & (frame["status"] == "completed")]
        .groupby("init")["variant"]
        .agg(lambda v: sorted(v, key=len)[0])  # each init's base budget: the shortest variant name
    )
    control = frame.loc[frame["method"] == "finetune", "variant"]
    unit = rule.unit
    rows: list[tuple[str, str, Test]] = [
        (
            "Up to 74% post-training compression with minimal accuracy loss",
            f"supported if at a point with >= 74% fewer parameters the {metric} change against the original "
            f"is shown above -{MINIMAL_LOSS:g} {unit} (one-sided, Bonferroni over such points); not "
            "supported if every such point is shown to lose more",
            compression_claim(frame, outcomes, reference, rule),
        ),
        (
            "The fold itself needs no fine-tuning (accuracy kept)",
            f"supported if at every point (after fold - before fold) is shown above -{FOLD_TOLERANCE:g} "
            f"{unit}; not supported if some point is shown below it",
            fold_claim(frame, outcomes, reference, rule),
        ),
    ]
    for init, variant in kd_inits.items():
        rows.append(
            (
                f"+8 pt over KD into the same network (KD init={init}, same epochs)",
                "averaged over points per seed: not supported if shown below +8; supported if shown above 0 "
                "and not below +8 (accuracy points; in another metric: the four-way verdict)",
                kd_accuracy_claim(frame, outcomes, reference, variant, rule),
            )
        )
    for init in kd_inits.index:
        rows.append(
            (
                f"5x computational efficiency over KD (KD init={init})",
                "KD at 1x/2x/5x LayerCollapse's epochs: supported if at most points KD needs >= 5x "
                f"LayerCollapse's training FLOPs (or never reaches its {quality.key}); not supported if at "
                "most points it needs less (counted, not tested)",
                kd_cost_claim(flops, init, metric),
            )
        )
    advantage = "averaged over points per seed: supported if better, not supported if worse or equivalent"
    if len(control):
        result, points = pooled_comparison(frame, outcomes, reference, control.iloc[0], rule)
        measured = f"LayerCollapse - {control.iloc[0]}, averaged over {points} points: {_fmt(result, rule)}"
        rows.append(
            (
                "LayerCollapse regularises (beats the fine-tune control of the same epochs)",
                advantage,
                _advantage_test(measured, result, rule),
            )
        )
    reference_method = next(iter(frame.loc[frame["variant"] == reference, "method"]), reference)
    for method, variant in other_methods(frame, reference):
        result, points = pooled_comparison(frame, outcomes, reference, variant, rule)
        measured = f"{reference} - {variant}, averaged over {points} matched points: {_fmt(result, rule)}"
        if not points:
            measured = (
                f"{reference} - {variant}: no point within {MATCH_TOLERANCE:.0%} of {reference}'s "
                "compression that is counted (matched.csv shows where each lands)"
            )
        label = variant_label(method, variant)
        name = method_name(reference_method)
        claim = f"At matched compression, {name} is more accurate than {label}"
        if method == "layer_folding":
            claim = f"{name} vs {label}, the same mechanism: more accurate at matched compression"
        elif method in DEPTH_REDUCTIONS and training_free(frame, variant):
            claim = f"{name} vs training-free depth reduction at matched compression: {label}"
            measured += "; " + flops_ratio_text(frame, reference, variant)
        if points:
            rows.append((claim, advantage, _advantage_test(measured, result, rule)))
        else:  # labelled, never a verdict either way
            rows.append(
                (claim, advantage, Test(measured, judge=lambda p, f: "not compared (no matched point)"))
            )
    return _judged(rows, rule)


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


def _judged(rows: list[tuple[str, str, Test]], rule: Rule) -> pd.DataFrame:
    """The table with every claim's p-values Holm-adjusted over the whole family, then judged."""
    flat = [(i, name, p) for i, (_, _, test) in enumerate(rows) for name, p in test.pvalues.items()]
    adjusted = holm([p for _, _, p in flat])
    per_claim: dict[int, dict[str, float]] = {}
    for (i, name, _), p in zip(flat, adjusted):
        per_claim.setdefault(i, {})[name] = p
    parameters = rule.parameters()
    table = []
    for i, (claim, text, test) in enumerate(rows):
        raw = ", ".join(f"{k} {v:.3g}" for k, v in test.pvalues.items())
        holmed = ", ".join(f"{k} {v:.3g}" for k, v in per_claim.get(i, {}).items())
        note = test.note(per_claim.get(i, {}), len(flat))
        table.append(
            {
                "claim": claim,
                "rule": text,
                "measured": test.measured + (f"; {note}" if note else ""),
                "verdict": test.judge(per_claim.get(i, {}), len(flat)),
                "p_values": raw,
                "p_values_holm": holmed,
                **{f"rule_{k}": v for k, v in parameters.items()},
                "rule_family": len(flat),
            }
        )
    return pd.DataFrame(table)
