"""The paper's claims, each checked against one sweep's numbers with a verdict.

Verdicts: `supported`, `not supported`, or `inconclusive at this scale`; the rule behind each is written
next to it in the table, so a reader can disagree with the rule rather than guess it. Differences are
paired over seeds (stats.py); points that missed their matched compression are left out.
"""

from __future__ import annotations

import pandas as pd

from .headline import headline, sign, unit
from .names import method_name, variant_label
from .stats import POINT, is_matched, mean_ci, pooled_difference

# In the sweep's headline metric (top-1 pp for images; perplexity or a GLUE metric's points for text),
# oriented so that a loss is negative:
MINIMAL_LOSS = 1.0  # "minimal accuracy loss" = the 95% CI of the change stays above -1
FOLD_TOLERANCE = 0.5  # "the fold keeps accuracy" = the CI of (after - before) stays above -0.5


def _fmt(ci: dict, unit: str = " pp") -> str:
    if pd.isna(ci["mean"]):
        return "no data"
    if pd.isna(ci["low"]):
        return f"{ci['mean']:+.2f}{unit} (n={ci['n']}, no interval)"
    return f"{ci['mean']:+.2f}{unit} [{ci['low']:+.2f}, {ci['high']:+.2f}] (n={ci['n']})"


def _change(quality) -> str:
    return "top-1 change" if quality.key == "top1" else f"{quality.key} change (oriented: + is better)"


def _oriented(difference: str, quality) -> str:
    """`A - B` in the headline metric; where lower is better (perplexity) the sign is flipped and said."""
    if quality.higher_is_better:
        return difference if quality.key == "top1" else f"{difference} ({quality.key})"
    return f"{difference} ({quality.key}, sign flipped: + means lower {quality.key})"


def _lc_runs(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    done = frame[(frame["status"] == "completed") & (frame["variant"] == reference)]
    return done[done["matched"].map(is_matched).astype(bool)]


def compression_claim(frame: pd.DataFrame, reference: str) -> dict:
    """Up to 74% post-training compression with minimal accuracy loss."""
    lc, quality = _lc_runs(frame, reference), headline(frame)
    points = []
    for point, group in lc.groupby(POINT, sort=False):
        drop = mean_ci(sign(quality) * (group["score"] - group["base_score"]))
        reduction = 1 - 1 / group["compression"].mean()
        points.append((reduction, drop, point))
    if not points:
        return {"measured": "no LayerCollapse point", "verdict": "inconclusive at this scale"}
    big = [p for p in points if p[0] >= 0.74]
    minimal = [p for p in big if not pd.isna(p[1]["low"]) and p[1]["low"] >= -MINIMAL_LOSS]
    best = max(points, key=lambda p: p[0])
    shown = max(minimal, key=lambda p: p[0]) if minimal else best
    measured = (
        f"largest reduction {shown[0]:.0%} ({shown[2][1]}, level {int(shown[2][2])}): {_change(quality)} "
        f"{_fmt(shown[1], unit(quality))}; {len(big)} of {len(points)} points reach 74%"
    )
    if minimal:
        verdict = "supported"
    elif big:
        verdict = "not supported"
    else:
        verdict = "inconclusive at this scale"
    return {"measured": measured, "verdict": verdict}


def fold_claim(frame: pd.DataFrame, reference: str) -> dict:
    """Folding needs no fine-tuning: top-1 after the fold equals top-1 of the regularised model."""
    lc, quality = _lc_runs(frame, reference).dropna(subset=["score_prefold"]), headline(frame)
    worst = None
    for point, group in lc.groupby(POINT, sort=False):
        ci = mean_ci(sign(quality) * (group["score"] - group["score_prefold"]))
        if worst is None or (ci["low"] if not pd.isna(ci["low"]) else ci["mean"]) < worst[0]["low"]:
            worst = (ci, point)
    if worst is None:
        return {"measured": "no folded LayerCollapse run", "verdict": "inconclusive at this scale"}
    ci, point = worst
    measured = (
        f"least favourable point {point[1]} level {int(point[2])}: "
        f"{_oriented('after - before fold', quality)} {_fmt(ci, unit(quality))}"
    )
    if pd.isna(ci["low"]):
        verdict = "inconclusive at this scale"
    elif ci["low"] >= -FOLD_TOLERANCE:
        verdict = "supported"
    elif ci["high"] < -FOLD_TOLERANCE:
        verdict = "not supported"
    else:
        verdict = "inconclusive at this scale"
    return {"measured": measured, "verdict": verdict}


def kd_accuracy_claim(frame: pd.DataFrame, reference: str, variant: str) -> dict:
    """+8 pt over KD into the same target network (one KD variant at LayerCollapse's budget)."""
    ci, quality = pooled_difference(frame, reference, variant), headline(frame)
    measured = (
        f"{_oriented(f'LayerCollapse - {variant}', quality)}, averaged over {ci.get('points', 0)} points: "
        f"{_fmt(ci, unit(quality))}"
    )
    inits = frame.loc[frame["variant"] == variant, "init"]
    if len(inits) and inits.iloc[0] == "random":
        measured += (
            " (caveat: a randomly initialised student trained for a fine-tuning budget, while "
            "LayerCollapse starts from the trained model; the gap measures the initialisation, not "
            "distillation: the teacher-initialised row is the fair control)"
        )
    if quality.unit != "pp":  # +8 is accuracy points: in perplexity (or MCC x100) only the sign carries over
        measured += f" (the paper's +8 is in accuracy points; in {quality.key} only its direction is checked)"
        return {"measured": measured, "verdict": _advantage_verdict(ci)}
    if pd.isna(ci["low"]):
        verdict = "inconclusive at this scale"
    elif ci["high"] < 8:
        verdict = "not supported"
    elif ci["low"] > 0:
        verdict = "supported"
    else:
        verdict = "inconclusive at this scale"
    return {"measured": measured, "verdict": verdict}


def kd_cost_claim(flops: pd.DataFrame, init: str, metric: str = "top-1") -> dict:
    """5x computational efficiency over KD: KD needs >= 5x LayerCollapse's FLOPs to reach its top-1 (or the
    sweep's headline `metric`)."""
    rows = flops[flops["init"] == init] if len(flops) else flops
    if rows.empty:
        return {"measured": "no KD budget runs", "verdict": "inconclusive at this scale"}
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
        verdict = "inconclusive at this scale"
    return {"measured": measured, "verdict": verdict}


def _advantage_verdict(ci: dict) -> str:
    """Supported when the whole interval of (reference - other) lies above 0, not supported below it."""
    if pd.isna(ci["low"]):
        return "inconclusive at this scale"
    if ci["low"] > 0:
        return "supported"
    if ci["high"] < 0:
        return "not supported"
    return "inconclusive at this scale (no significant difference)"


def regularisation_claim(frame: pd.DataFrame, reference: str, control: str) -> dict:
    """LayerCollapse regularises: the compressed model beats the same epochs of plain fine-tuning."""
    ci, quality = pooled_difference(frame, reference, control), headline(frame)
    measured = (
        f"{_oriented(f'LayerCollapse - {control}', quality)}, averaged over {ci.get('points', 0)} points: "
        f"{_fmt(ci, unit(quality))}"
    )
    return {"measured": measured, "verdict": _advantage_verdict(ci)}


def matched_comparison_claim(frame: pd.DataFrame, reference: str, variant: str) -> dict:
    """The reference against one more method at matched compression (no claim of the paper names it)."""
    ci, quality = pooled_difference(frame, reference, variant), headline(frame)
    measured = (
        f"{_oriented(f'{reference} - {variant}', quality)}, averaged over {ci.get('points', 0)} matched "
        f"points: {_fmt(ci, unit(quality))}"
    )
    return {"measured": measured, "verdict": _advantage_verdict(ci)}


def other_methods(frame: pd.DataFrame, reference: str) -> list[tuple[str, str]]:
    """(method, variant) of every compression method in the records that no claim above names."""
    named = {*frame.loc[frame["variant"] == reference, "method"], "kd", "finetune", "none"}
    compressed = (frame["status"] == "completed") & (frame["stage"] == "compress")  # (not the originals)
    done = frame[compressed & ~frame["method"].isin(named)]
    return list(dict.fromkeys(zip(done["method"], done["variant"])))


def claims_table(frame: pd.DataFrame, flops: pd.DataFrame, reference: str = "layercollapse") -> pd.DataFrame:
    """One row per claim (and per KD initialisation): claim, rule, measured numbers, verdict."""
    kd_inits = (
        frame[(frame["method"] == "kd") & (frame["status"] == "completed")]
        .groupby("init")["variant"]
        .agg(lambda v: sorted(v, key=len)[0])  # each init's base budget: the shortest variant name
    )
    control = frame.loc[frame["method"] == "finetune", "variant"]
    quality = headline(frame)
    rows = [
        {
            "claim": "Up to 74% post-training compression with minimal accuracy loss",
            "rule": "supported if a point with >= 74% fewer parameters keeps the 95% CI of its "
            f"{_change(quality)} above -{MINIMAL_LOSS:g}{unit(quality)}; not supported if every such "
            "point loses more",
            **compression_claim(frame, reference),
        },
        {
            "claim": "The fold itself needs no fine-tuning (accuracy kept)",
            "rule": "supported if at every point the CI of "
            f"{_oriented('(after fold - before fold)', quality)} stays above "
            f"-{FOLD_TOLERANCE:g}{unit(quality)}",
            **fold_claim(frame, reference),
        },
    ]
    for init, variant in kd_inits.items():
        rows.append(
            {
                "claim": f"+8 pt over KD into the same network (KD init={init}, same epochs)",
                "rule": "paired over seeds, averaged over points: not supported if the CI lies below +8; "
                "supported if it lies above 0 and reaches +8 (accuracy points; in another metric: supported "
                "above 0, not supported below 0)",
                **kd_accuracy_claim(frame, reference, variant),
            }
        )
    for init in kd_inits.index:
        rows.append(
            {
                "claim": f"5x computational efficiency over KD (KD init={init})",
                "rule": "KD at 1x/2x/5x LayerCollapse's epochs: supported if at most points KD needs >= 5x "
                f"LayerCollapse's training FLOPs (or never reaches its {quality.key}); not supported if at "
                "most points it needs less",
                **kd_cost_claim(flops, init, "top-1" if quality.key == "top1" else quality.key),
            }
        )
    if len(control):
        rows.append(
            {
                "claim": "LayerCollapse regularises (beats the fine-tune control of the same epochs)",
                "rule": "paired over seeds, averaged over points: supported if the CI lies above 0",
                **regularisation_claim(frame, reference, control.iloc[0]),
            }
        )
    rows += matched_comparison_rows(frame, reference)
    return pd.DataFrame(rows, columns=["claim", "rule", "measured", "verdict"])


def matched_comparison_rows(frame: pd.DataFrame, reference: str) -> list[dict]:
    """A claim row for each compression method in the records that no claim of the paper names."""
    reference_method = next(iter(frame.loc[frame["variant"] == reference, "method"]), reference)
    return [
        {
            "claim": f"At matched compression, {method_name(reference_method)} is more accurate than "
            f"{variant_label(method, variant)}",
            "rule": "paired over seeds, averaged over matched points: supported if the CI is above 0, "
            "not supported if below",
            **matched_comparison_claim(frame, reference, variant),
        }
        for method, variant in other_methods(frame, reference)
    ]
