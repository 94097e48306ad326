"""Tables over seeds: per-method and matched-compression, written as CSV, Markdown and LaTeX.

Numbers are mean and sample standard deviation (ddof=1) over the completed seeds of a group, with n (a std
that rounds to 0 is not printed). The original model of every (data set, model) is a row of its own. Bold
marks only the quality columns, and only the rows the verdict rule cannot tell from the best of their
(model, level) among the rows that count (`best.py`): never the original, an unmatched row or one labelled
infeasible or not folded. The speed-up is the quiet pass's (`lcbench measure`): median with the widest 95%
interval of its seeds, marked † where that interval contains 1. Dense and effective MACs are separate
columns; counted units (MACs, training FLOPs) take one SI prefix per table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.store import atomic_write_text
from ..training.tasks import QUALITIES, Quality
from ..zoo.data import DATASETS
from .best import TIED, counted
from .names import variant_label
from .records import FLAGS, NOT_COUNTED
from .stats import is_matched


@dataclass(frozen=True)
class Shown:
    """A measure as a table shows it: header (Markdown), LaTeX header (quantity, unit), decimals, and
    `count` ("MACs", "FLOPs") when a unit prefix is chosen per table (so a tiny model reads 1.86 MMACs,
    not 0.002 GMACs)."""

    header: str
    latex: tuple[str, str]
    decimals: int
    count: str | None = None


def _quality_columns(quality: Quality) -> dict[str, Shown]:
    """base_<metric> (Markdown only: LaTeX has the Original row), <metric> and delta_<metric>."""
    name = "top-1" if quality.key == "top1" else quality.key
    delta_unit = f" ({quality.unit})" if quality.unit else ""
    return {
        f"base_{quality.key}": Shown(f"Base {quality.label[0].lower()}{quality.label[1:]}", ("", ""), 2),
        quality.key: Shown(quality.label, quality.latex, 2),
        f"delta_{quality.key}": Shown(
            f"Δ {name}{delta_unit}",
            (f"$\\Delta$ {name}", f"({quality.unit})" if quality.unit else ""),
            2,
        ),
    }


# every metric a task can headline (the tables show those of the sweep's data sets: `shown_metrics`)
QUALITY_COLUMNS = {
    key: shown for quality in QUALITIES.values() for key, shown in _quality_columns(quality).items()
}
SHOWN = {
    **QUALITY_COLUMNS,
    "compression": Shown("Compression (×)", ("Compr.", "($\\times$)"), 2),
    "gmacs": Shown("Dense MACs", ("MACs", "dense"), 2, "MACs"),
    "gmacs_effective": Shown("Effective MACs", ("MACs", "eff."), 2, "MACs"),
    "speedup_quiet_b1": Shown("Speed-up b=1 (×, 95% CI)", ("Speed-up", "b=1 ($\\times$)"), 2),
    "train_flops": Shown("Training FLOPs", ("FLOPs", "training"), 1, "FLOPs"),
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
    out["matched_seeds"] = quiet["matched"].agg(lambda v: sum(map(is_matched, v)))
    if "flag" in done:  # every flag any seed raised, in a stable order, with how many seeds raised it
        out["flag"] = quiet["flag"].agg(per_seed_flags)
    out = out.reset_index()
    out["level"] = out["level"].replace(-1, np.nan)
    return out


def per_seed_flags(flags: pd.Series) -> str:
    """`not folded in 3 of 5` (or `not folded` where every seed raised it), flags in a stable order."""
    flags = flags.fillna("")
    counts = {f: int(flags.str.contains(f).sum()) for f in FLAGS}
    return ", ".join(f if n == len(flags) else f"{f} in {n} of {len(flags)}" for f, n in counts.items() if n)


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


def decimals_of(mean: float, shown: Shown) -> int:
    """Decimals a value is shown with: the measure's, or 3 significant digits for a counted measure."""
    if not shown.count or not mean or not math.isfinite(mean):
        return shown.decimals
    return min(max(0, 2 - math.floor(math.log10(abs(mean)))), 6)


def bold_mask(table: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    """True in the quality columns (the headline metric and its delta) of the rows that tie with their
    group's best by the verdict rule (`best.ties_with_best`, column `tied_with_best`). Never the original,
    an unmatched row or one labelled infeasible or not folded; no bold in a group with a single counted row
    or where every counted row ties; none at all without the column (nothing was tested)."""
    mask = pd.DataFrame(False, index=table.index, columns=list(SHOWN))
    if TIED not in table:
        return mask
    ok = counted(table)
    tied = table[TIED].where(ok).map(lambda v: v is True or v == 1.0)
    groups = [table[g].fillna(-1) if g == "level" else table[g] for g in group_by]
    contenders = ok.groupby(groups).transform("sum")
    ties = tied.groupby(groups).transform("sum")
    bold = tied & (contenders > 1) & (ties < contenders)
    for column in QUALITY_COLUMNS:
        if not column.startswith("base_") and f"{column}_mean" in table:
            mask[column] = bold
    return mask


def _value(mean: float, std: float, n: int, decimals: int) -> tuple[str, str | None] | None:
    """(mean, std) as text; the std left out (None) for one run or when it rounds to zero (a deterministic
    quantity); None for no value."""
    if pd.isna(mean):
        return None
    if n <= 1 or pd.isna(std) or round(std, decimals) == 0:
        return f"{mean:.{decimals}f}", None
    return f"{mean:.{decimals}f}", f"{std:.{decimals}f}"


def _values(table: pd.DataFrame, column: str) -> list[tuple[str, str | None] | None]:
    """One measure's (mean, std) texts, row by row (a delta's std only where the original varies)."""
    shown = SHOWN[column]
    means, stds, ns = table[f"{column}_mean"], table[f"{column}_std"], table["n"]
    if column.startswith("delta_") and f"base_{column[6:]}_std" in table:  # one original: its std isn't shown
        stds = stds.where(table[f"base_{column[6:]}_std"].fillna(0).round(shown.decimals) != 0)
    return [_value(m, s, int(n), decimals_of(m, shown)) for m, s, n in zip(means, stds, ns)]


def _speedups(table: pd.DataFrame, latex: bool) -> list[str | None]:
    """The quiet speed-up: median, its interval in Markdown, † where the interval contains 1."""
    dagger = "$^\\dagger$" if latex else "†"
    cells = []
    for mean, low, high in zip(
        table["speedup_quiet_b1_mean"], table["speedup_quiet_b1_low"], table["speedup_quiet_b1_high"]
    ):
        mark = dagger if low <= 1 <= high else ""
        interval = "" if latex else f" [{low:.2f}, {high:.2f}]"  # LaTeX: the mark only (width)
        cells.append(None if pd.isna(mean) else f"{mean:.2f}{interval}{mark}")
    return cells


def _markdown_cells(table: pd.DataFrame, column: str) -> list[str | None]:
    if column == "speedup_quiet_b1":
        return _speedups(table, latex=False)
    return [
        None if v is None else v[0] if v[1] is None else f"{v[0]} ± {v[1]}" for v in _values(table, column)
    ]


def _key_text(value) -> str:
    if pd.isna(value):
        return "-"
    return f"{int(value)}" if isinstance(value, float) else str(value)


def _labels(table: pd.DataFrame) -> pd.Series:
    return pd.Series([variant_label(m, v) for m, v in zip(table["method"], table["variant"])], table.index)


def _matched_cell(matched, seeds, n) -> str:
    """yes, NO, or `NO in 2 of 5` (seeds that missed their target)."""
    if matched is None or pd.isna(matched):
        return ""
    if matched:
        return "yes"
    missed = int(n) - int(seeds) if seeds is not None and not pd.isna(seeds) else int(n)
    return "NO" if missed == int(n) else f"NO in {missed} of {int(n)}"


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
        cells = _markdown_cells(table, column)
        out[headers[column]] = [
            "-" if c is None else f"**{c}**" if bold else c for c, bold in zip(cells, mask[column])
        ]
    if "matched" in table:
        out["Matched"] = [
            _matched_cell(m, table["matched_seeds"].get(i) if "matched_seeds" in table else None, n)
            for i, m, n in zip(table.index, table["matched"], table["n"])
        ]
        flags = table["flag"].fillna("") if "flag" in table else pd.Series("", index=table.index)
        out["Matched"] = [_matched_text(m, f) for m, f in zip(out["Matched"], flags)]
    out["n"] = table["n"].astype(int).astype(str)
    return out.to_markdown(index=False, disable_numparse=True) + "\n"


LATEX_SPECIAL = (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"))


def _escape(text: str) -> str:
    for char, replacement in LATEX_SPECIAL:
        text = text.replace(char, replacement)
    return text


# the ± before a std: siunitx text set before the std's own column, spaced as a binary operator
PM = "{${}\\pm{}$}"
MAX_ROWS = 40  # body rows per float; a longer table goes on in a second float (each fits a page)
LATEX_FLAG_MARKS = {
    "infeasible": "$^{*}$",
    "outside its range": "$^{\\|}$",
    "not folded": "$^{\\S}$",
    "forced fold": "$^{\\P}$",
    "world size changed": "$^{\\#}$",
}
SETUP = (
    "\\footnotesize\\setlength{\\tabcolsep}{3pt}\n"
    "\\sisetup{reset-text-series=false, text-series-to-math=true, group-digits=integer}\n"
)


def _number_format(numbers: list[str]) -> str:
    """siunitx's table-format (sign, integer digits, decimals) that holds every number of a column."""
    if not numbers:
        return "1.0"
    sign = "-" if any(m.startswith("-") for m in numbers) else ""
    digits = max(len(m.lstrip("-").split(".")[0]) for m in numbers)
    decimals = max(len(m.split(".")[1]) if "." in m else 0 for m in numbers)
    return f"{sign}{digits}.{decimals}"


@dataclass
class LatexMeasure:
    """One measure's LaTeX: header (quantity over unit), column specs (value, and ± std where any row has
    one) and each row's cells."""

    quantity: str
    unit: str
    specs: list[str]
    rows: list[list[str]]


def _latex_measure(table: pd.DataFrame, column: str, headers: dict, bold: pd.Series) -> LatexMeasure:
    shown = SHOWN[column]
    quantity, unit = shown.latex
    if shown.count:  # the unit's prefix on the quantity: "MACs (M)" over "dense" and "eff."
        quantity = f"{quantity} ({headers[column].rsplit('(', 1)[1].removesuffix(shown.count + ')')})"
    if column == "speedup_quiet_b1":
        return LatexMeasure(
            quantity, unit, ["r"], [["{--}" if c is None else c] for c in _speedups(table, True)]
        )
    values = _values(table, column)
    means = [v[0] for v in values if v is not None]
    stds = [v[1] for v in values if v is not None and v[1] is not None]
    specs = [f"S[table-format={_number_format(means)}]"]
    if stds:
        specs.append(f"@{{}}S[table-format={_number_format(stds)}, table-space-text-pre={PM}]")
    rows = []
    for value, strong in zip(values, bold):
        if value is None:
            rows.append(["{--}"] + [""] * bool(stds))
            continue
        mean = f"\\bfseries {value[0]}" if strong else value[0]
        rows.append([mean] + ([f"{PM}{value[1]}" if value[1] else ""] if stds else []))
    return LatexMeasure(quantity, unit, specs, rows)


def _header(measures: list[LatexMeasure]) -> list[str]:
    """Two header rows: quantities (one spanning the measures that share it, ruled below) over units."""
    top, rules, column = ["", "{$k$}"], [], 3
    spans: list[tuple[str, int]] = []
    for m in measures:
        if spans and spans[-1][0] == m.quantity:
            spans[-1] = (m.quantity, spans[-1][1] + len(m.specs))
        else:
            spans.append((m.quantity, len(m.specs)))
    for quantity, width in spans:
        top.append(f"\\multicolumn{{{width}}}{{c}}{{{quantity}}}")
        if width > 1 and sum(1 for m in measures if m.quantity == quantity) > 1:
            rules.append(f"\\cmidrule(lr){{{column}-{column + width - 1}}}")
        column += width
    units = ["", ""] + [f"\\multicolumn{{{len(m.specs)}}}{{c}}{{{m.unit}}}" for m in measures]
    return [" & ".join(top) + " \\\\", *([" ".join(rules)] if rules else []), " & ".join(units) + " \\\\"]


def latex_table(table: pd.DataFrame, group_by: list[str], caption: str, label: str) -> str:
    """booktabs tables: siunitx columns aligned on the decimal point, each std in a column of its own
    after a ± that siunitx sets, the bold of `bold_mask` (`\\bfseries` with text-series-to-math), one
    block per model under its name, footnotesize, never wider than `\\linewidth`, and at most `MAX_ROWS`
    body rows per float (a longer table goes on in further floats, its model named again). Needs booktabs,
    siunitx (v3) and graphicx in the preamble."""
    mask = bold_mask(table, group_by).reset_index(drop=True)
    table, headers = _scaled(table.reset_index(drop=True))  # one unit prefix for every float
    table["_label"] = _latex_row_labels(table)
    floats, previous = [], None
    for i, rows in enumerate(_float_rows(table["model"])):
        title = caption if i == 0 else f"{caption.split('. ')[0]} (continued from Table~\\ref{{{label}}})"
        name = label if i == 0 else f"{label}-{i + 1}"
        floats.append(_latex_float(table.loc[rows], mask.loc[rows], headers, title, name, previous))
        previous = table.at[rows[-1], "model"]
    return "\n".join(floats) + "\n"


def _float_rows(models: pd.Series) -> list[list[int]]:
    """The rows of each float: at most `MAX_ROWS` lines, counting a model's name line at each block."""
    floats, rows, lines, model = [], [], 0, None
    for index, name in models.items():
        lines += 1 + (name != model)
        if rows and lines > MAX_ROWS:
            floats.append(rows)
            rows, lines = [], 2
        rows.append(index)
        model = name
    return [*floats, rows]


def _latex_float(
    table: pd.DataFrame, mask: pd.DataFrame, headers: dict, caption: str, label: str, previous: str | None
) -> str:
    """One float: its own column formats (a std column only where one of its rows has a std); a model
    the previous float ended with is named "(continued)"."""
    measures = [_latex_measure(table, c, headers, mask[c]) for c in headers if not c.startswith("base_")]
    width = 2 + sum(len(m.specs) for m in measures)
    levels = table["level"].map(_key_text).replace("-", "--").tolist()
    body, model = [], None
    for i, (name, label_text) in enumerate(zip(table["model"], table["_label"])):
        if name != model:
            more = " (continued)" if model is None and name == previous else ""
            body += ["\\midrule"] * (model is not None)
            body.append(f"\\multicolumn{{{width}}}{{@{{}}l}}{{\\textit{{{_escape(str(name))}{more}}}}} \\\\")
            model = name
        body.append(" & ".join([label_text, levels[i], *(c for m in measures for c in m.rows[i])]) + " \\\\")
    return "\n".join(
        [
            "\\begin{table}",
            "\\centering",
            SETUP.rstrip("\n"),
            f"\\caption{{{caption}}}",
            f"\\label{{{label}}}",
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
            f"\\begin{{tabular}}{{lc{''.join(s for m in measures for s in m.specs)}}}",
            "\\toprule",
            *_header(measures),
            "\\midrule",
            *body,
            "\\bottomrule",
            "\\end{tabular}}",
            "\\end{table}",
        ]
    )


def _latex_row_labels(table: pd.DataFrame) -> list[str]:
    """Display names with their marks: ‡ not matched (unless a label says why), *, §, ¶ for the labels."""
    unmatched = (
        table["matched"].map(lambda m: m is False)
        if "matched" in table
        else pd.Series(False, index=table.index)
    )
    flags = table["flag"].fillna("") if "flag" in table else pd.Series("", index=table.index)
    marks = flags.map(lambda f: "".join(_latex_mark(k, f) for k in FLAGS if k in f))
    unmatched &= ~flags.map(lambda f: any(k in f for k in NOT_COUNTED))  # its own mark says why
    return list(_labels(table).map(_latex_label) + np.where(unmatched, "$^\\ddagger$", "") + marks)


def _latex_mark(flag: str, text: str) -> str:
    """A flag's mark, with the seeds that raised it where not all did: `$^{\\S\\,3/5}$`."""
    seeds = re.search(rf"{flag} in (\d+) of (\d+)", text)
    mark = LATEX_FLAG_MARKS[flag]
    return mark if not seeds else mark[:-2] + f"\\,{seeds[1]}/{seeds[2]}" + mark[-2:]


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
    if TIED in table and table[TIED].notna().any():
        parts.append(
            "bold: the best of a model and level among matched rows, and every row the verdict rule cannot "
            "tell from it (paired per seed and example, Holm-corrected); none where all tie"
        )
    if "speedup_quiet_b1_mean" in table:
        parts.append(
            "speed-up: batch 1, median of the quiet latency pass; $^\\dagger$ its 95\\% CI contains 1 "
            "(intervals in the CSV and Markdown tables)"
        )
    if "matched" in table and (table["matched"].map(lambda m: m is False)).any():
        parts.append("$^\\ddagger$ compression not matched")
    for flag, mark in LATEX_FLAG_MARKS.items():
        if "flag" in table and table["flag"].fillna("").str.contains(flag).any():
            parts.append(f"{mark} {_escape(FLAGS[flag])}")
    if "flag" in table and table["flag"].fillna("").str.contains(r" in \d+ of ").any():
        parts.append("a mark's $k/n$: in $k$ of the row's $n$ seeds")
    return "; ".join(parts) + "."
