"""`lcbench report runs/X.yaml`: tables, plots and a README that states the findings with their numbers.

Written to `results/<sweep>/` (or `--out`). Failed and missing runs are listed in the README, never
dropped silently; a group's n says how many seeds went into its mean.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from ..core.errors import ConfigError
from ..core.staging import staged_folder
from ..core.store import atomic_write_text, check_own_folder
from ..execution.sweep import Plan
from ..methods import METHODS
from ..zoo.data import DATASETS
from . import best, plots
from .claims import build_claims, claim_points, claims_frame, register_claims
from .cost import epoch_curves, flops_to_reach
from .headline import headline, metric_of
from .names import method_name
from .outcomes import Outcomes
from .records import sweep_frame
from .selection import tuning_section
from .stats import differences_table, points, register, rule_for
from .tables import aggregate, matched_table, per_method_table, write_table
from .verdicts import Family

PAPER_CSV = Path(__file__).resolve().parents[2] / "results" / "paper" / "layercollapse_imagenet.csv"
PAPER_LANGUAGE_CSV = PAPER_CSV.with_name("layercollapse_language.csv")


def load_paper(path: Path = PAPER_CSV) -> pd.DataFrame:
    return pd.read_csv(path)


PARAMS_RTOL = 1e-3  # a paper row and our model are the same structure when their parameters agree this well


def paper_comparison(agg: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our ImageNet numbers next to the paper's, joined on the folded structure (equal parameter count),
    never on a bare k. A reference taken before any fold (`prefold_prelu`) is compared with our model
    before its fold, and says so."""
    ours = agg[agg["dataset"] == "imagenet"]
    rows = []
    for _, ref in paper[paper["dataset"] == "imagenet-1k"].iterrows():
        mine = ours[ours["model"] == ref["model"]]
        same = mine[mine["method"] == ("original" if ref["status"] == "baseline" else "layercollapse")]
        close = (same["params_dense_mean"] / 1e6 - ref["params_m_structure"]).abs()
        found = same[close <= PARAMS_RTOL * ref["params_m_structure"]]
        prefold = ref["status"] == "prefold_prelu"
        for _, r in found.iterrows():
            top1 = r["top1_prefold_mean"] if prefold else r["top1_mean"]
            rows.append(
                {
                    "model": ref["model"],
                    "setting": ref["setting"],
                    "status": ref["status"],
                    "params_m_paper": ref["params_m_structure"],
                    "params_m_ours": r["params_dense_mean"] / 1e6,
                    "level_mlps": r["level"],
                    "top1_paper": ref["top1"],
                    "top1_ours": top1,
                    "compared": "ours BEFORE the fold (the reference was never folded)"
                    if prefold
                    else ("original" if ref["status"] == "baseline" else "ours folded"),
                    "n": r["n"],
                    "difference": top1 - ref["top1"],
                    "paper_protocol": "; ".join(
                        f"{k} {ref[k]}"
                        for k in ("epochs", "lam", "threshold", "schedule")
                        if not pd.isna(ref[k])
                    )
                    + f"; preprocessing: {ref['preprocessing']}",
                    "source": f"{ref['source_repo']}: {ref['source_file']}, {ref['source_cell']}",
                }
            )
    return pd.DataFrame(rows)


def language_comparison(agg: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our GLUE / WikiText numbers next to the official notebooks' (`layercollapse_language.csv`), joined on
    the data set and the structure (equal parameter count: the original's, or the folded model's), never on
    a bare k. The reference's protocol (its own fine-tuned originals, its perplexity's sliding window) goes
    with every row: where it differs from ours, compare changes rather than values."""
    rows = []
    for _, ref in paper.iterrows():
        mine = agg[agg["dataset"] == ref["dataset"]]
        after = ref.get("method", "layercollapse")
        for setting, method, params, value in (
            ("original", "original", ref["params_before"], ref["value_before"]),
            ("folded" if after == "layercollapse" else after, after, ref["params_after"], ref["value_after"]),
        ):
            if pd.isna(params) or pd.isna(value):
                continue
            same = mine[mine["method"] == method]
            # a pruned reference counts nonzero weights; a folded one, the dense model's
            counted = "params_mean" if method == "magnitude_pruning" else "params_dense_mean"
            if counted not in same:
                continue
            found = same[(same[counted] - params).abs() <= PARAMS_RTOL * params]
            for _, r in found.iterrows():
                ours = r.get(f"{ref['metric']}_mean")
                rows.append(
                    {
                        "model": r["model"],
                        "dataset": ref["dataset"],
                        "metric": ref["metric"],
                        "setting": setting,
                        "params_paper": int(params),
                        "params_ours": int(r[counted]),
                        "paper": value,
                        "ours": ours,
                        "n": r["n"],
                        "difference": ours - value,
                        "paper_original": ref["original_checkpoint"],
                        "paper_protocol": ref["protocol"],
                        "source": f"{ref['source_repo']}: {ref['source_file']}, {ref['source_cell']}",
                    }
                )
    return pd.DataFrame(rows)


def _pm(row: pd.Series, column: str, decimals: int = 2) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    return f"{mean:.{decimals}f}" + ("" if pd.isna(std) else f" ± {std:.{decimals}f}")


def _score(row: pd.Series) -> str:
    """The row's headline metric with its spread: `81.23 ± 0.40%` (top-1) or `perplexity 12.31 ± 0.05`."""
    metric = metric_of(row["dataset"])
    return f"{_pm(row, 'score')}%" if metric == "top1" else f"{metric} {_pm(row, 'score')}"


def findings(agg: pd.DataFrame) -> list[str]:
    """One line per (model, level): every method's headline metric at its compression; points that missed
    their target are labelled (and compared at the compression they achieved: intention-to-treat)."""
    lines = []
    for (dataset, model, level), group in matched_table(agg).groupby(
        ["dataset", "model", "level"], sort=False
    ):
        parts = []
        for _, row in group.iterrows():
            text = f"{row['variant']} {_score(row)} at {row['compression_mean']:.2f}x"
            flag = row.get("flag") or ""
            if "outside its range" in flag:
                text += f" (**{flag}**: the method's declared range excludes it; shown, never compared)"
            elif "infeasible" in flag or "not folded" in flag:
                text += (
                    f" (**{flag}**: compared at the compression it achieved, as a run that missed its target)"
                )
            elif row.get("matched") is False:
                text += " (**missed its target compression by more than 2%**: compared at what it achieved)"
            elif "forced fold" in flag:
                text += f" (**{flag}**: folded whatever the slope)"
            parts.append(text)
        blocks = group["paper_blocks_mean"].iloc[0]
        unit = f"k={int(level)} MLPs" + (f" = {blocks:g} paper blocks" if blocks != level else "")
        lines.append(f"- **{model}** ({dataset}), {unit}: " + "; ".join(parts) + ".")
    for _, row in agg[agg["method"] == "finetune"].iterrows():
        lines.append(f"- **{row['model']}** finetune control (no compression): {_score(row)} (n={row['n']}).")
    return lines


def _ci_text(row: pd.Series) -> str:
    if pd.isna(row.get("ci_low", math.nan)):
        return "n/a" if pd.isna(row["difference"]) else f"{row['difference']:+.2f}"
    return f"{row['difference']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def _seeds_needed_text(row: pd.Series) -> str:
    needed = row.get("seeds_needed", math.nan)
    if pd.isna(needed):
        return ""
    if math.isinf(needed):
        return "more than the test set allows"
    high = row.get("seeds_needed_high", math.nan)
    high_text = "more" if pd.isna(high) or math.isinf(high) or high > 1000 else f"{high:.0f}"
    return f"{needed:.0f} ({row.get('seeds_needed_low', math.nan):.0f} to {high_text})"


def differences_markdown(diffs: pd.DataFrame, reference: str = "LayerCollapse", unit: str = "pp") -> str:
    if diffs.empty:
        return (
            f"No paired runs (none of the sweep's completed runs pairs with a {reference} point of the same "
            "seed).\n"
        )
    column = f"{reference} - method ({unit}, 95% CI)"
    several = diffs["dataset"].nunique() > 1
    shown = diffs.assign(
        **{
            column: diffs.apply(_ci_text, axis=1),
            "sign-flip p": diffs.get("p_sign_flip", pd.Series(math.nan, index=diffs.index)).map(
                lambda p: "" if pd.isna(p) else f"{p:.3g}"
            ),
            "seeds needed": diffs.apply(_seeds_needed_text, axis=1),
        }
    )
    columns = [
        *(["dataset"] if several else []),
        "model",
        "level",
        "variant",
        "n_pairs",
        "pairing",
        "compared_with",
        "reached_target",
        column,
        "sign-flip p",
        "verdict",
        *(["seeds needed"] if shown["seeds needed"].astype(bool).any() else []),
    ]
    return shown[columns].to_markdown(index=False, floatfmt="g") + "\n"


def reference_variant(frame: pd.DataFrame, method: str = "layercollapse") -> str:
    """The variant every other method is compared with: the one named like `method`, else its first."""
    variants = list(dict.fromkeys(frame.loc[frame["method"] == method, "variant"]))
    return method if method in variants or not variants else variants[0]


def write_report(plan: Plan, out: Path) -> dict:
    """Everything for one sweep into `out`; returns counts (runs per status) and the paths written. `out`
    must be this user's own folder (not a link, not another user's, not writable by every user): checked
    before anything is read, and again once it exists. The report is written whole into a staging folder
    and then moved in, README last, under a lock on `out` (`core.staging`): a killed report leaves the
    previous one as it was, and two reports into one folder take turns."""
    fix = "choose another --out (a folder of your own)"
    check_own_folder(out, "report folder", fix)
    frame = sweep_frame(plan)
    reference = reference_variant(frame, plan.reference)
    agg = aggregate(frame)
    with staged_folder(out, "report folder", fix) as stage:
        parts = _write_tables(plan, frame, agg, reference, stage)
        written = _plots(frame, agg, parts["curves"], parts["paper"], plan, stage, reference)
        counts = frame["status"].value_counts().to_dict()
        lines = _readme(plan, frame, agg, counts, parts, written, stage)
        atomic_write_text(stage / "README.md", "\n".join(lines) + "\n")
    return {"counts": counts, "out": str(out), "plots": [str(out / p.name) for p in written]}


def _write_tables(plan: Plan, frame: pd.DataFrame, agg: pd.DataFrame, reference: str, out: Path) -> dict:
    """The CSV, Markdown and LaTeX tables; returns the frames the README quotes. Every test the report
    makes (differences, claims, bold) enters one Holm family before any verdict is read."""
    atomic_write_text(out / "runs.csv", frame.to_csv(index=False))
    outcomes = Outcomes(frame, plan.output_root)
    rule = rule_for(frame, plan.margin)
    found = points(frame, outcomes, reference, rule.margin)
    claims = build_claims(frame, outcomes, found, reference, rule)
    bests, bold_tests = best.best_comparisons(agg, frame, outcomes, rule.margin)
    family = Family(rule.alpha)
    register(family, found)
    register_claims(family, claims)
    best.register(family, bold_tests)
    agg = agg.assign(**{best.TIED: best.ties(agg.index, bests, bold_tests, rule, family)})
    write_table(
        per_method_table(agg, reference),
        out / "per_method",
        ["dataset", "model", "level"],
        f"{plan.name}: every method and level",
        f"tab:{plan.name}-per-method",
    )
    write_table(
        matched_table(agg, reference),
        out / "matched",
        ["dataset", "model", "level"],
        f"{plan.name}: methods at matched compression (level k: LayerCollapse folds k MLPs)",
        f"tab:{plan.name}-matched",
    )
    reference_name = method_name(plan.reference)
    diffs = differences_table(found, rule, family, reference_name)
    atomic_write_text(out / "differences.csv", diffs.to_csv(index=False))
    curves = epoch_curves(frame, plan.output_root)
    flops = flops_to_reach(frame, reference)
    atomic_write_text(out / "cost_to_accuracy.csv", curves.to_csv(index=False))
    atomic_write_text(out / "flops_to_reach.csv", flops.to_csv(index=False))
    claims_table = claims_frame(claims, rule, family)
    atomic_write_text(out / "claims.csv", claims_table.to_csv(index=False))
    atomic_write_text(out / "claim_points.csv", claim_points(claims, rule, family).to_csv(index=False))
    paper = load_paper()
    comparison = paper_comparison(agg, paper)
    if len(comparison):
        atomic_write_text(out / "paper_comparison.csv", comparison.to_csv(index=False))
        atomic_write_text(out / "paper_comparison.md", comparison.to_markdown(index=False) + "\n")
    language = language_comparison(agg, load_paper(PAPER_LANGUAGE_CSV))
    if len(language):
        atomic_write_text(out / "paper_comparison_language.csv", language.to_csv(index=False))
        atomic_write_text(out / "paper_comparison_language.md", language.to_markdown(index=False) + "\n")
    return {
        "diffs": diffs,
        "curves": curves,
        "flops": flops,
        "claims": claims_table,
        "rule": rule,
        "family": len(family),
        "paper": paper,
        "comparison": comparison,
        "language": language,
    }


def _readme(
    plan: Plan, frame: pd.DataFrame, agg: pd.DataFrame, counts: dict, parts: dict, written: list, out: Path
) -> list[str]:
    """The README's lines, section by section."""
    return [
        *_header(plan, frame, counts),
        *_claims_section(frame, parts),
        *_differences_section(plan, frame, parts),
        *tuning_section(plan),
        *_cost_section(plan, frame, parts),
        *onnxruntime_section(frame),
        "## Findings",
        "",
        *findings(agg),
        "",
        "## Tables",
        "",
        *_table_list(parts),
        "",
        (out / "matched.md").read_text(),
        *_plots_section(written),
        "## Failed or missing runs",
        "",
        *_not_done(frame),
        *(["", "Not planned (each would repeat another run exactly):", ""] if plan.skipped else []),
        *[f"- {reason}" for reason in plan.skipped],
    ]


def how_verdicts_read(rule) -> list[str]:
    """The rule in a few sentences a reader can check, and what the words mean."""
    return [
        "**How a verdict is reached.** " + rule.describe(),
        "",
        "**Points, then the mean.** A claim is judged at every point it covers first (the `points` column: "
        "better, equivalent, underpowered, worse), then on the mean of the point differences within each "
        "seed, pooling only the points every seed has. It is 'supported' only where no point is "
        "significantly the other way, and 'mixed' where points are significant both ways.",
        "",
        "**Intention-to-treat.** Every run a method made counts, at the compression it achieved, whatever it "
        "was planned for: matched with a LayerCollapse point of the same seed within 2%, or interpolated "
        "between two of them (linear in retained parameters), or, beyond LayerCollapse's frontier, judged "
        "for dominance only. How often a method reached its planned target (folded, feasible, within 2%) is "
        "reported beside it (`reached_target`).",
        "",
        "**Not tested** means no comparison could test the claim (no point near 74%, no 5x budget); "
        "**underpowered** means a test ran and could not decide; **not testable at n=3** means fewer seeds "
        "than the rule decides on (the direction in k of n seeds is given instead).",
        "",
    ]


def _claims_section(frame: pd.DataFrame, parts: dict) -> list[str]:
    rule = parts["rule"]
    return [
        "## Claims",
        "",
        "Each claim of the paper against this sweep's numbers, every point first (`points`; each point's "
        "estimate and interval are in `claim_points.csv`), then the mean over points; the p-values (raw and "
        f"Holm-corrected over the report's one family of {parts['family']} tests) are in `claims.csv`. A "
        "verdict says what happens at this sweep's scale (its models, data and budgets), not on ImageNet, "
        "GLUE or WikiText.",
        "",
        *_replicates_note(frame),
        parts["claims"][["claim", "measured", "points", "verdict"]].to_markdown(index=False),
        "",
        *how_verdicts_read(rule),
    ]


def _differences_section(plan: Plan, frame: pd.DataFrame, parts: dict) -> list[str]:
    reference_name, quality, rule = method_name(plan.reference), headline(frame), parts["rule"]
    metric = "top-1" if quality.key == "top1" else quality.key
    return [
        f"## Paired differences against {reference_name}",
        "",
        f"Same seed, same original model, same held-out examples; {metric} of {reference_name} minus the "
        "method's"
        + (
            ""
            if quality.higher_is_better
            else " as 100 x the log ratio (+: the reference's perplexity is lower)"
        )
        + f", at the compression the method achieved on {reference_name}'s frontier (`pairing`), averaged "
        "over seeds with its 95% t interval at the level of seeds; the exact sign-flip p over seeds beside "
        f"it (at least 2 / 2^n). Verdicts in the report's one Holm family (margin {rule.margin_text()}); "
        "`reached_target`: the method's runs that reached their planned target.",
        "",
        differences_markdown(parts["diffs"], reference_name, rule.short_unit),
        "",
        *_operating_ranges(frame),
    ]


def _operating_ranges(frame: pd.DataFrame) -> list[str]:
    """The operating range each of the sweep's methods declares (its plug-in's `operating_range`)."""
    ranges = []
    for method in dict.fromkeys(frame.loc[frame["stage"] == "compress", "method"]):
        try:
            declared = METHODS.get(method).operating_range
        except ConfigError:  # a method not installed here: its runs are read, its declaration is not
            continue
        if declared:
            ranges.append(f"{method_name(method)}: {declared}")
    if not ranges:
        return []
    return [
        "Operating ranges the methods declare (a point outside its method's range is run and shown, labelled "
        "`outside its range`, and never compared or counted in a claim): " + "; ".join(ranges) + "."
    ]


def _cost_section(plan: Plan, frame: pd.DataFrame, parts: dict) -> list[str]:
    reference_name, quality, flops = method_name(plan.reference), headline(frame), parts["flops"]
    return [
        "## Cost to accuracy",
        "",
        "Training FLOPs are counted (3 x forward FLOPs per sample, plus KD's teacher forward), not timed. "
        f"KD ran at 1x, 2x and 5x {reference_name}'s epochs where the spec asks for it "
        f"(`{CURVES_FIGURE.format(quality.key)}.png`). This table compares means (descriptive); the 5x "
        "claim is tested per point and budget (KD's non-inferiority, paired).",
        "",
        (
            flops[["model", "level", "init", "reference_score", "budgets", "text"]].to_markdown(
                index=False, floatfmt=".2f"
            )
            if len(flops)
            else "No KD budget runs."
        ),
        "",
    ]


def _plots_section(written: list) -> list[str]:
    return [
        "## Plots",
        "",
        "Each figure as PNG and PDF at text width (7 in) and at column width (3.3 in, `*_column`), fonts "
        "at least 7 pt at those sizes.",
        "",
        *(
            [f"- `{p.name}` (column width: `{p.stem}_column.png`)" for p in written if _full_png(p)]
            or ["None yet: no completed run."]
        ),
        "",
    ]


def _replicates_note(frame: pd.DataFrame) -> list[str]:
    """Whether the seeds are independent replicates (each its own original) or fine-tuning replicates of
    one shared original, from the runs' pretrain ids."""
    compress = frame[frame["stage"] == "compress"]
    if compress.empty:
        return []
    per_point = compress.groupby(["dataset", "model"]).agg(
        seeds=("seed", "nunique"), originals=("pretrain_id", "nunique")
    )
    if (per_point["originals"] >= per_point["seeds"]).all():
        return [
            "Seeds are independent replicates: each trained its own original model (and drew its own "
            "split where the data set has no official one).",
            "",
        ]
    return [
        "**n counts fine-tuning replicates only**: the seeds share one original model (the spec sets "
        "`pretrain.seed`), so the intervals leave out the original's training variance.",
        "",
    ]


def _table_list(parts: dict) -> list[str]:
    """The README's list of the table files, the paper comparisons where there are any."""
    return [
        "- `matched.{csv,md,tex}`: methods side by side at each level (same LayerCollapse target)",
        "- `per_method.{csv,md,tex}`: every method and level, the original model first",
        "- `differences.csv`, `claims.csv`, `claim_points.csv` (every point of every claim), "
        "`flops_to_reach.csv`, `cost_to_accuracy.csv` (per epoch)",
        "- `runs.csv`: every planned run with its status and metrics",
        *["- `paper_comparison.{csv,md}`: ours next to the paper's ImageNet numbers"]
        * bool(len(parts["comparison"])),
        *[
            "- `paper_comparison_language.{csv,md}`: ours next to the official GLUE / WikiText notebooks' "
            "numbers (with their originals and protocol)"
        ]
        * bool(len(parts["language"])),
    ]


def _header(plan: Plan, frame: pd.DataFrame, counts: dict) -> list[str]:
    measured = frame["speedup_quiet_b1"].notna().sum()
    return [
        f"# {plan.name}: accuracy against compression",
        "",
        f"Generated by `lcbench report {plan.source}` on {time.strftime('%Y-%m-%d %H:%M')} from "
        f"{len(frame)} planned runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".",
        f"CPUs: {', '.join(sorted(c for c in frame['cpu'].unique() if c)) or 'none recorded'}.",
        "Mean ± sample std over seeds (n seeds); metrics of the last epoch on the held-out split. Speed-ups "
        f"come from the quiet latency pass (`lcbench measure`; {measured} runs measured), never from "
        "timings taken while other runs trained.",
        "",
    ]


CURVES_FIGURE = "{}_per_epoch_vs_train_flops"  # (beside `{}_vs_train_flops`: final points, not curves)


def _plots(frame, agg, curves, paper, plan: Plan, out: Path, reference: str) -> list[Path]:
    """Every figure at text width and at column width (`*_column`), one look per variant throughout."""
    written = []
    if agg.empty:  # no completed run yet: nothing to draw (the tables and README still say so)
        return written
    quality = headline(frame)
    looks = plots.Looks(zip(agg["method"], agg["variant"]))
    for x in plots.AXES:
        written += plots.save_layouts(
            lambda layout, x=x: plots.score_against(agg, x, quality, layout, looks),
            out / f"{quality.key}_vs_{x}",
        )
    if len(curves):
        written += plots.save_layouts(
            lambda layout: plots.score_vs_train_flops(curves, reference, quality, layout, looks),
            out / CURVES_FIGURE.format(quality.key),
        )
    written += plots.save_layouts(
        lambda layout: plots.slope_trajectories(frame, plan.output_root, layout), out / "slopes"
    )
    images = not any(DATASETS.get(d).is_text for d in agg["dataset"].unique())
    if images and (agg["method"] == "layercollapse").any():  # (the paper's figure is of ImageNet models)
        model = "digits_vit" if (agg["model"] == "digits_vit").any() else agg["model"].iloc[0]
        written += plots.save_layouts(
            lambda layout: plots.blocks_folded_vs_paper(agg, paper, model, layout),
            out / "blocks_folded_vs_paper",
        )
    return written


def onnxruntime_section(frame: pd.DataFrame) -> list[str]:
    """The second backend's figures, where `lcbench measure --backend onnxruntime` ran: per model,
    variant and level, the speed-up over the original in eager PyTorch and in ONNX Runtime, and the final
    model's ONNX Runtime speed over eager (medians over seeds; the widest interval of the seeds)."""
    if "onnxruntime_vs_eager_b1" not in frame or frame["onnxruntime_vs_eager_b1"].isna().all():
        return []
    done = frame[frame["onnxruntime_vs_eager_b1"].notna()]
    rows = []
    for (model, variant, level), g in done.groupby(["model", "variant", "level"], dropna=False, sort=True):
        versus = g["onnxruntime_vs_eager_b1"].median()
        low, high = g["onnxruntime_vs_eager_b1_low"].min(), g["onnxruntime_vs_eager_b1_high"].max()
        rows.append(
            {
                "model": model,
                "variant": variant,
                "level": "-" if pd.isna(level) else f"{level:g}",
                "n": len(g),
                "speed-up, eager": f"{g['speedup_quiet_b1'].median():.2f}",
                "speed-up, ONNX Runtime": f"{g['speedup_onnxruntime_b1'].median():.2f}",
                "ONNX Runtime / eager (final model)": f"{versus:.2f} [{low:.2f}, {high:.2f}]",
            }
        )
    return [
        "## Second backend: ONNX Runtime",
        "",
        "`lcbench measure SPEC --backend onnxruntime`: both models exported to ONNX and timed in ONNX "
        "Runtime (CPU provider) at batch 1, interleaved as the eager pass is; in the same pass the final "
        "model in ONNX Runtime against itself in eager PyTorch (> 1: ONNX Runtime is faster). Medians over "
        "seeds, the widest 95% interval of the seeds.",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
    ]


def _full_png(path: Path) -> bool:
    return path.suffix == ".png" and not path.stem.endswith(plots.LAYOUTS[1].suffix)


def _not_done(frame: pd.DataFrame) -> list[str]:
    not_done = frame[frame["status"] != "completed"]
    if not len(not_done):
        return ["None: every planned run completed."]
    return [
        not_done[["run_id", "model", "variant", "level_label", "seed", "status", "error"]].to_markdown(
            index=False
        )
    ]
