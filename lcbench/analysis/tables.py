"""Tables over seeds: per-method and matched-compression, written as CSV, Markdown and LaTeX.

Numbers are mean and sample standard deviation (ddof=1) over the completed seeds of a group, with n (a std
that rounds to 0 is not printed). The original model of every (data set, model) is a row of its own. In the
formatted tables the best value of a column at each (model, level) is bold among the compressed rows that
met their matched compression; never the original, never an unmatched row (`Matched: NO`, ‡ in LaTeX),
never a speed-up whose interval contains 1, and nothing when all are equal. The speed-up is the quiet
pass's (`lcbench measure`): median with the widest 95% interval of its seeds, marked † where that interval
contains 1. Dense and effective MACs are separate columns; counted units (MACs, training FLOPs) take one SI
prefix per table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import DATASETS
from ..store import atomic_write_text
from ..tasks import QUALITIES, Quality
from .names import variant_label
from .records import FLAGS, NOT_COUNTED
from .stats import is_matched


@dataclass(frozen=True)
class Shown:
    """A measure as a table shows it: header (Markdown), LaTeX header (quantity, unit), which way is
    better (None: never bold), decimals, and `count` ("MACs", "FLOPs") when a unit prefix is chosen per
    table (so a tiny model reads 1.86 MMACs, not 0.002 GMACs)."""

    header: str
    latex: tuple[str, str]
    better: str | None
    decimals: int
    count: str | None = None


def _quality_columns(quality: Quality) -> dict[str, Shown]:
    """base_<metric> (Markdown only: LaTeX has the Original row), <metric> and delta_<metric>."""
    better = "max" if quality.higher_is_better else "min"
    name = "top-1" if quality.key == "top1" else quality.key
    delta_unit = f" ({quality.unit})" if quality.unit else ""
    return {
        f"base_{quality.key}": Shown(
            f"Base {quality.label[0].lower()}{quality.label[1:]}", ("", ""), None, 2
        ),
        quality.key: Shown(quality.label, quality.latex, better, 2),
        f"delta_{quality.key}": Shown(
            f"Δ {name}{delta_unit}",
            (f"$\\Delta$ {name}", f"({quality.unit})" if quality.unit else ""),
            better,
            2,
        ),
    }


# every metric a task can headline (the tables show those of the sweep's data sets: `shown_metrics`)
QUALITY_COLUMNS = {
    key: shown for quality in QUALITIES.values() for key, shown in _quality_columns(quality).items()
}
SHOWN = {
    **QUALITY_COLUMNS,
    "compression": Shown("Compression (×)", ("Compr.", "($\\times$)"), "max", 2),
    "gmacs": Shown("Dense MACs", ("MACs", "dense"), "min", 2, "MACs"),
    "gmacs_effective": Shown("Effective MACs", ("MACs", "eff."), "min", 2, "MACs"),
    "speedup_quiet_b1": Shown("Speed-up b=1 (×, 95% CI)", ("Speed-up", "b=1 ($\\times$)"), "max", 2),
    "train_flops": Shown("Training FLOPs", ("FLOPs", "training"), "min", 1, "FLOPs"),
}
GROUP = ["dataset", "model", "method", "variant", "level"]
MEASURES = [
    *QUALITY_COLUMNS,
    "score",
    "base_score",
    "score_prefold",
    "compression",
    "gmacs",
    "gmacs_effective",
    "params",
    "params_dense",
    "top1_prefold",
    "speedup_quiet_b1",
    "paper_blocks",
    "blocks_folded",
    "epochs",
    "train_seconds",
    "train_flops",
    "val_samples",
]
PREFIXES = (("", 1.0), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18))
# How a measure is stored: MACs in G per image, FLOPs as a plain count.
STORED_SCALE = {"MACs": 1e9, "FLOPs": 1.0}


def shown_metrics(frame: pd.DataFrame) -> list[str]:
    """The metrics a sweep's tables show: its data sets' headline metrics, and top-1 (accuracy) wherever a
    data set is a classification (GLUE reports accuracy beside F1 and MCC)."""
    datasets = list(dict.fromkeys(frame["dataset"])) if len(frame) else []
    shown = [DATASETS.get(d).metric for d in datasets]
    if any(DATASETS.get(d).task == "classification" for d in datasets):
        shown.insert(0, "top1")
    return list(dict.fromkeys(shown)) or ["top1"]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and n over seeds of every completed (data set, model, method, variant, level); of
    the quality metrics, only those the sweep shows (`shown_metrics`)."""
    done = frame[frame["status"] == "completed"].copy()
    done["level"] = done["level"].fillna(-1)  # groupby drops NaN keys; -1 = no shared level
    shown = shown_metrics(frame)
    hidden = {c for m in QUALITIES if m not in shown for c in (f"base_{m}", m, f"delta_{m}")}
    grouped = done.groupby(GROUP, sort=False)[[m for m in MEASURES if m not in hidden]]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["n"] = grouped.size()
    quiet = done.groupby(GROUP, sort=False)
    out["speedup_quiet_b1_low"] = quiet["speedup_quiet_b1_low"].min()  # the widest interval of the seeds
    out["speedup_quiet_b1_high"] = quiet["speedup_quiet_b1_high"].max()
    out["matched"] = quiet["matched"].agg(lambda v: None if v.isna().all() else all(map(is_matched, v)))
    if "flag" in done:  # every flag any seed raised, in a stable order
        out["flag"] = quiet["flag"].agg(lambda v: ", ".join(f for f in FLAGS if f in set(v)))
    out = out.reset_index()
    out["level"] = out["level"].replace(-1, np.nan)
    return out


def si_prefix(values: pd.Series) -> tuple[str, float]:
    """The SI prefix that puts the largest value of a column between 1 and 1000."""
    finite = values.abs()[np.isfinite(values)]
    top = finite.max() if len(finite) else 1.0
    return next(((p, f) for p, f in reversed(PREFIXES) if top >= f), PREFIXES[0])


def _scaled(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Means and stds of counted measures divided by the table's prefix; the header of each column."""
    table = table.copy()
    headers = {}
    for column, shown in SHOWN.items():
        if f"{column}_mean" not in table:
            continue
        headers[column] = shown.header
        if shown.count:
            raw = table[f"{column}_mean"] * STORED_SCALE[shown.count]
            prefix, factor = si_prefix(raw)
            for part in ("mean", "std"):
                table[f"{column}_{part}"] = table[f"{column}_{part}"] * STORED_SCALE[shown.count] / factor
            headers[column] = f"{shown.header} ({prefix}{shown.count})"
    return table, headers


def _spans_one(table: pd.DataFrame) -> pd.Series:
    low, high = table.get("speedup_quiet_b1_low"), table.get("speedup_quiet_b1_high")
    if low is None:
        return pd.Series(False, index=table.index)
    return (low <= 1) & (high >= 1)


def decimals_of(mean: float, shown: Shown) -> int:
    """Decimals a value is shown with: the measure's, or 3 significant digits for a counted measure."""
    if not shown.count or not mean or not math.isfinite(mean):
        return shown.decimals
    return min(max(0, 2 - math.floor(math.log10(abs(mean)))), 6)


def _shown_means(table: pd.DataFrame, column: str) -> pd.Series:
    """The means as displayed (rounded), for comparisons that agree with what a reader sees."""
    shown = SHOWN[column]
    return table[f"{column}_mean"].map(lambda m: round(m, decimals_of(m, shown)) if pd.notna(m) else m)


def bold_mask(table: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    """True where a shown value is the best of its column within its group, among the compressed rows
    that met their matched compression (and, for the speed-up, whose interval excludes 1). The original
    is the reference, never a contender. Values are compared as displayed; a group whose eligible
    values are all equal has no bold."""
    mask = pd.DataFrame(False, index=table.index, columns=list(SHOWN))
    eligible = table["method"] != "original"
    if "matched" in table:
        eligible &= table["matched"].map(is_matched).astype(bool)
    for column, shown in SHOWN.items():
        if shown.better is None or f"{column}_mean" not in table:
            continue
        ok = eligible & ~_spans_one(table) if column == "speedup_quiet_b1" else eligible
        values = _shown_means(table, column).where(ok)
        groups = values.groupby([table[g] for g in group_by])
        best, distinct = groups.transform(shown.better), groups.transform("nunique")
        mask[column] = values.notna() & (values == best) & (distinct > 1)
    return mask


def _value(mean: float, std: float, n: int, decimals: int, pm: str) -> str | None:
    """`mean ± std`; the std left out for one run or when it rounds to zero (a deterministic quantity)."""
    if pd.isna(mean):
        return None
    if n <= 1 or pd.isna(std) or round(std, decimals) == 0:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f}{pm}{std:.{decimals}f}"


def _cells(table: pd.DataFrame, column: str, latex: bool) -> list[str | None]:
    """One column's text: mean ± std, or the quiet speed-up with its interval († where it contains 1)."""
    shown = SHOWN[column]
    means, stds, ns = table[f"{column}_mean"], table[f"{column}_std"], table["n"]
    if column.startswith("delta_") and f"base_{column[6:]}_std" in table:  # one original: its std isn't shown
        stds = stds.where(table[f"base_{column[6:]}_std"].fillna(0).round(shown.decimals) != 0)
    if column != "speedup_quiet_b1":
        pm = " \\pm " if latex else " ± "
        return [_value(m, s, int(n), decimals_of(m, shown), pm) for m, s, n in zip(means, stds, ns)]
    dagger = "$^\\dagger$" if latex else "†"
    cells = []
    for mean, low, high in zip(means, table["speedup_quiet_b1_low"], table["speedup_quiet_b1_high"]):
        mark = dagger if low <= 1 <= high else ""
        interval = "" if latex else f" [{low:.2f}, {high:.2f}]"  # LaTeX: the mark only (width)
        cells.append(None if pd.isna(mean) else f"{mean:.2f}{interval}{mark}")
    return cells


def _key_text(value) -> str:
    if pd.isna(value):
        return "-"
    return f"{int(value)}" if isinstance(value, float) else str(value)


def _labels(table: pd.DataFrame) -> pd.Series:
    return pd.Series([variant_label(m, v) for m, v in zip(table["method"], table["variant"])], table.index)


def _matched_text(matched: str, flag: str) -> str:
    """The Matched cell: yes / NO, or the point's label where it has one (`infeasible`, `not folded`
    replace NO: they say why the point is not counted; `forced fold` is added to yes)."""
    if any(k in flag for k in NOT_COUNTED):
        return flag
    return f"{matched} ({flag})" if flag else matched


def markdown_table(table: pd.DataFrame, group_by: list[str]) -> str:
    """Model, method, level, mean ± std per measure (best per group in bold), matched, n."""
    mask = bold_mask(table, group_by)
    table, headers = _scaled(table)
    out = pd.DataFrame(
        {"Model": table["model"], "Method": _labels(table), "Level": table["level"].map(_key_text)}
    )
    for column in headers:
        cells = _cells(table, column, latex=False)
        out[headers[column]] = [
            "-" if c is None else f"**{c}**" if bold else c for c, bold in zip(cells, mask[column])
        ]
    if "matched" in table:
        out["Matched"] = table["matched"].map(
            lambda m: "" if m is None or pd.isna(m) else "yes" if m else "NO"
        )
        flags = table["flag"].fillna("") if "flag" in table else pd.Series("", index=table.index)
        out["Matched"] = [_matched_text(m, f) for m, f in zip(out["Matched"], flags)]
    out["n"] = table["n"].astype(int).astype(str)
    return out.to_markdown(index=False, disable_numparse=True) + "\n"


LATEX_SPECIAL = (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"))


def _escape(text: str) -> str:
    for char, replacement in LATEX_SPECIAL:
        text = text.replace(char, replacement)
    return text


def _table_format(cells: list[str | None]) -> str:
    """siunitx's table-format for a column of `mean` / `mean ± std` cells: sign, integer digits,
    decimals and uncertainty digits, read from the cells themselves."""
    parts = [c.split(" \\pm ") for c in cells if c is not None]
    if not parts:
        return "1.0"
    means = [p[0] for p in parts]
    sign = "-" if any(m.startswith("-") for m in means) else ""
    digits = max(len(m.lstrip("-").split(".")[0]) for m in means)
    decimals = max(len(m.split(".")[1]) if "." in m else 0 for m in means)
    uncertainty = max((len(p[1].replace(".", "").lstrip("0")) for p in parts if len(p) == 2), default=0)
    return f"{sign}{digits}.{decimals}" + (f"({uncertainty})" if uncertainty else "")


def latex_table(table: pd.DataFrame, group_by: list[str], caption: str, label: str) -> str:
    """A booktabs table through pandas' Styler: siunitx columns aligned on the decimal point and the ±,
    bold that works in math (`\\bfseries` with siunitx's text-series-to-math), one block per model
    between `\\midrule`s, display names, footnotesize, and never wider than `\\linewidth`. Needs booktabs,
    siunitx (v3) and graphicx in the preamble."""
    frame, formats = _latex_frame(table, bold_mask(table, group_by))
    latex = frame.style.to_latex(
        column_format="l" + "".join(formats),
        hrules=True,
        siunitx=True,
        caption=caption,
        label=label,
        position_float="centering",
        multicol_align="c",
    )
    return _finish_latex(latex, frame.shape[1] + 1)


def _latex_frame(table: pd.DataFrame, mask: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The cells (bold as Styler writes it for siunitx, `\\bfseries`) under two header rows, a marker row
    before each model's block, and each column's format."""
    table, headers = _scaled(table)
    unmatched = table["matched"].map(lambda m: m is False) if "matched" in table else False
    flags = table["flag"].fillna("") if "flag" in table else pd.Series("", index=table.index)
    marks = flags.map(lambda f: "".join(LATEX_FLAG_MARKS[k] for k in FLAGS if k in f))
    unmatched &= ~flags.map(lambda f: any(k in f for k in NOT_COUNTED))  # its own mark says why
    methods = _labels(table).map(_latex_label) + np.where(unmatched, "$^\\ddagger$", "") + marks
    body, formats = {("$k$", ""): list(table["level"].map(_key_text).replace("-", "--"))}, ["c"]
    for column in [c for c in headers if not c.startswith("base_")]:
        shown, cells = SHOWN[column], _cells(table, column, latex=True)
        quantity, unit = shown.latex
        if shown.count:  # the unit's prefix on the quantity: "MACs (M)" over "dense" and "eff."
            quantity = f"{quantity} ({headers[column].rsplit('(', 1)[1].removesuffix(shown.count + ')')})"
        body[(quantity, unit)] = [
            "{--}" if c is None else f"\\bfseries {c}" if bold else c for c, bold in zip(cells, mask[column])
        ]
        formats.append("r" if column == "speedup_quiet_b1" else f"S[table-format={_table_format(cells)}]")
    frame = pd.DataFrame(body, index=list(methods))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    blocks = []
    for model, rows in frame.groupby(table["model"].to_numpy(), sort=False):
        marker = pd.DataFrame(
            [[""] * frame.shape[1]], index=[f"@model@{_escape(model)}"], columns=frame.columns
        )
        blocks += [marker, rows]
    return pd.concat(blocks), formats


LATEX_FLAG_MARKS = {"infeasible": "$^{*}$", "not folded": "$^{\\S}$", "forced fold": "$^{\\P}$"}


def _finish_latex(latex: str, width: int) -> str:
    """Font size and siunitx settings; the shrink-to-fit box; model marker rows as `\\multicolumn`
    headers with a `\\midrule` before each (the first follows the header's own rule)."""
    setup = (
        "\\footnotesize\\setlength{\\tabcolsep}{2pt}\n"
        "\\sisetup{uncertainty-mode=separate, reset-text-series=false, text-series-to-math=true, "
        "group-digits=integer}\n"
    )
    latex = latex.replace("\\centering\n", "\\centering\n" + setup, 1)
    latex = latex.replace(  # shrunk (graphicx) only when its natural width exceeds \linewidth
        "\\begin{tabular}",
        "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n\\begin{tabular}",
        1,
    ).replace("\\end{tabular}\n", "\\end{tabular}}\n", 1)
    latex = re.sub(
        r"^@model@(.*?) &.*$",
        lambda m: f"\\multicolumn{{{width}}}{{@{{}}l}}{{\\textit{{{m.group(1)}}}}} \\\\",
        latex,
        flags=re.M,
    )
    return re.sub(r"(?<!\\midrule\n)(\\multicolumn\{\d+\}\{@\{\}l\}\{\\textit)", r"\\midrule\n\1", latex)


def _latex_label(label: str) -> str:
    """A display label for LaTeX (× as math)."""
    return _escape(label).replace("×", "$\\times$")


def with_originals(agg: pd.DataFrame) -> pd.DataFrame:
    """The original model's row first within each (data set, model): its base accuracy, compression 1."""
    originals = agg[agg["method"] == "original"]
    rest = agg[agg["method"] != "original"]
    parts = []
    for (dataset, model), group in rest.groupby(["dataset", "model"], sort=False):
        parts.append(originals[(originals["dataset"] == dataset) & (originals["model"] == model)])
        parts.append(group)
    covered = {(d, m) for d, m in zip(rest["dataset"], rest["model"])}
    alone = originals[[(d, m) not in covered for d, m in zip(originals["dataset"], originals["model"])]]
    return pd.concat([*parts, alone], ignore_index=True) if parts or len(alone) else agg


def method_rank(method: str, reference: str = "layercollapse") -> int:
    """Row order within a block: the original, then the method under test, then the others."""
    return {"original": 0, reference: 1}.get(method, 2)


def per_method_table(agg: pd.DataFrame, reference: str = "layercollapse") -> pd.DataFrame:
    """One row per (data set, model, method, level): the original first, then the reference method, then
    the others by name."""
    table = with_originals(agg)
    table = table.assign(_o=table["method"].map(lambda m: method_rank(m, reference)))
    order = ["dataset", "model", "_o", "method", "variant", "level"]
    return table.sort_values(order, kind="stable").drop(columns="_o")


def matched_table(agg: pd.DataFrame, reference: str = "layercollapse") -> pd.DataFrame:
    """Methods side by side at each shared level (same achieved compression target), per model: the
    original's row heads each model, the reference method leads each level."""
    leveled = with_originals(agg[agg["level"].notna() | (agg["method"] == "original")])
    leveled = leveled.assign(
        _l=leveled["level"].fillna(-1), _o=leveled["method"].map(lambda m: method_rank(m, reference))
    )
    order = ["dataset", "model", "_l", "_o", "method", "variant"]
    return leveled.sort_values(order, kind="stable").drop(columns=["_l", "_o"]).reset_index(drop=True)


def write_table(table: pd.DataFrame, stem: Path, group_by: list[str], caption: str, label: str) -> None:
    """`stem`.csv (raw mean/std/n), `stem`.md and `stem`.tex (formatted, best in bold)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = table.reset_index(drop=True)
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    if not len(table):  # nothing completed for this table (yet): say so instead of an empty tabular
        atomic_write_text(stem.with_suffix(".md"), "No completed runs for this table.\n")
        atomic_write_text(stem.with_suffix(".tex"), f"% {caption}: no completed runs for this table\n")
        return
    atomic_write_text(stem.with_suffix(".md"), markdown_table(table, group_by))
    latex_caption = f"{caption}. {caption_notes(table)}"
    atomic_write_text(stem.with_suffix(".tex"), latex_table(table, group_by, latex_caption, label))


def _specs(table: pd.DataFrame) -> list:
    names = table["dataset"].dropna().unique() if "dataset" in table else []
    return [DATASETS.get(n) for n in names if n in DATASETS.names()]


def held_out_words(table: pd.DataFrame) -> str:
    """The headline metric the table's data sets are scored by (`top-1`, `perplexity`, ...)."""
    metrics = sorted({spec.metric for spec in _specs(table)}) or ["top1"]
    return "/".join("top-1" if m == "top1" else m for m in metrics)


def examples_word(table: pd.DataFrame) -> str:
    """`images`, or `examples` where a data set is text (sequences, sentences)."""
    return "examples" if any(spec.is_text for spec in _specs(table)) else "images"


def caption_notes(table: pd.DataFrame) -> str:
    """What a LaTeX reader needs to read the numbers: n, the held-out split's size, the marks."""
    runs = table.loc[table["method"] != "original", "n"].astype(int)
    seeds = sorted(set(runs))
    if not seeds:
        n = "the completed runs (no compressed run completed)"
    elif len(seeds) == 1:
        n = f"$n = {seeds[0]}$ seeds"
    else:
        n = f"$n$ from {seeds[0]} to {seeds[-1]} seeds"
    parts = [f"Mean $\\pm$ sample std over {n} (std left out where it rounds to 0)"]
    if "val_samples_mean" in table and table["val_samples_mean"].notna().any():
        sizes = sorted({int(v) for v in table["val_samples_mean"].dropna()})
        parts.append(
            f"{held_out_words(table)} on {', '.join(map(str, sizes))} held-out {examples_word(table)}"
        )
    parts.append("bold: best of a model among matched rows (no bold when all are equal)")
    if "speedup_quiet_b1_mean" in table:
        parts.append(
            "speed-up: batch 1, median of the quiet latency pass; $^\\dagger$ its 95\\% CI contains 1 "
            "(intervals in the CSV and Markdown tables)"
        )
    if "matched" in table and (table["matched"].map(lambda m: m is False)).any():
        parts.append("$^\\ddagger$ compression not matched")
    for flag, mark in LATEX_FLAG_MARKS.items():
        if "flag" in table and table["flag"].fillna("").str.contains(flag).any():
            parts.append(f"{mark} {FLAGS[flag]}")
    return "; ".join(parts) + "."
