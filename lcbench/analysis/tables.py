"""Tables over seeds: per-method and matched-compression, written as CSV, Markdown and LaTeX (booktabs).

Numbers are mean and sample standard deviation (ddof=1) over the completed seeds of a group, with n. The
original model of every (data set, model) is a row of its own. In the formatted tables the best value of a
column within each comparison group (a model, or a model at one level) is bold; a row that missed its
matched compression (`Matched: NO`) is never bold. The speed-up is the quiet pass's (`lcbench measure`):
median with the widest 95% interval of its seeds, marked † and never bold where that interval contains 1.
The cost column is training FLOPs (counted, not timed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..store import atomic_write_text
from .stats import is_matched

# column -> (header with unit, better: max | min | None, decimals)
COLUMNS = {
    "base_top1": ("Base top-1 (\\%)", None, 2),
    "top1": ("Top-1 (\\%)", "max", 2),
    "delta_top1": ("$\\Delta$ top-1 (pp)", "max", 2),
    "compression": ("Compression ($\\times$)", "max", 2),
    "gmacs": ("MACs (M)", "min", 3),
    "speedup_quiet_b1": ("Speed-up b=1 ($\\times$, 95\\% CI)", "max", 2),
    "train_flops": ("Training FLOPs", "min", 2),
}
GROUP = ["dataset", "model", "method", "variant", "level"]
MEASURES = [
    "base_top1",
    "top1",
    "delta_top1",
    "compression",
    "gmacs",
    "params",
    "params_dense",
    "top1_prefold",
    "speedup_quiet_b1",
    "paper_blocks",
    "epochs",
    "train_seconds",
    "train_flops",
]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and n over seeds of every completed (data set, model, method, variant, level)."""
    done = frame[frame["status"] == "completed"].copy()
    done["level"] = done["level"].fillna(-1)  # groupby drops NaN keys; -1 = no shared level
    grouped = done.groupby(GROUP, sort=False)[MEASURES]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["n"] = grouped.size()
    quiet = done.groupby(GROUP, sort=False)
    out["speedup_quiet_b1_low"] = quiet["speedup_quiet_b1_low"].min()  # the widest interval of the seeds
    out["speedup_quiet_b1_high"] = quiet["speedup_quiet_b1_high"].max()
    out["matched"] = quiet["matched"].agg(lambda v: None if v.isna().all() else all(map(is_matched, v)))
    out = out.reset_index()
    out["level"] = out["level"].replace(-1, np.nan)
    return out


def _fmt(mean: float, std: float, decimals: int, latex: bool) -> str:
    if pd.isna(mean):
        return "--" if latex else "-"
    if pd.isna(std):
        return f"{mean:.{decimals}f}"
    if latex:
        return f"${mean:.{decimals}f} \\pm {std:.{decimals}f}$"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _spans_one(table: pd.DataFrame) -> pd.Series:
    low, high = table.get("speedup_quiet_b1_low"), table.get("speedup_quiet_b1_high")
    if low is None:
        return pd.Series(False, index=table.index)
    return (low <= 1) & (high >= 1)


def _bold_mask(table: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    """True where a value is the best of its column within its group (ties all bold), among the rows
    that met their matched compression (and, for the speed-up, whose interval excludes 1)."""
    mask = pd.DataFrame(False, index=table.index, columns=list(COLUMNS))
    eligible = table["matched"].map(is_matched).astype(bool) if "matched" in table else True
    for column, (_, better, _) in COLUMNS.items():
        if better is None or f"{column}_mean" not in table:
            continue
        ok = eligible & ~_spans_one(table) if column == "speedup_quiet_b1" else eligible
        values = table[f"{column}_mean"].where(ok)
        best = values.groupby([table[g] for g in group_by]).transform(better)
        mask[column] = values.notna() & np.isclose(values, best)
    return mask


def _cell(table: pd.DataFrame, i, column: str, decimals: int, latex: bool) -> str:
    """One formatted value: mean ± std; the quiet speed-up with its interval; FLOPs in scientific form."""
    mean, std = table.at[i, f"{column}_mean"], table.at[i, f"{column}_std"]
    if column == "speedup_quiet_b1" and not pd.isna(mean):
        low, high = table.at[i, "speedup_quiet_b1_low"], table.at[i, "speedup_quiet_b1_high"]
        mark = ("$^\\dagger$" if latex else "†") if low <= 1 <= high else ""
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]{mark}"
    if column == "train_flops" and not pd.isna(mean):
        return f"{mean:.{decimals}e}"
    scale = 1e3 if column == "gmacs" else 1.0  # MACs shown in millions for the small models
    return _fmt(mean * scale, std * scale, decimals, latex)


def formatted(table: pd.DataFrame, keys: list[str], group_by: list[str], latex: bool) -> pd.DataFrame:
    """The table as strings: key columns, then mean ± std per measure (best per group in bold), then n."""
    mask = _bold_mask(table, group_by)
    out = pd.DataFrame(index=table.index)
    for key in keys:
        values = table[key].map(_key_text)
        out[key.capitalize()] = values.map(_escape) if latex else values
    for column, (header, _, decimals) in COLUMNS.items():
        if f"{column}_mean" not in table:
            continue
        cells = [_cell(table, i, column, decimals, latex) for i in table.index]
        if latex:
            cells = [f"\\textbf{{{c}}}" if b and c != "--" else c for c, b in zip(cells, mask[column])]
            out[header] = cells
        else:
            cells = [f"**{c}**" if b and c != "-" else c for c, b in zip(cells, mask[column])]
            out[_plain(header)] = cells
    if "matched" in table:
        out["Matched"] = table["matched"].map(
            lambda m: "" if m is None or pd.isna(m) else "yes" if m else "NO"
        )
    out["n"] = table["n"].astype(int).astype(str)
    return out


def _key_text(value) -> str:
    if pd.isna(value):
        return "-"
    return f"{int(value)}" if isinstance(value, float) else str(value)


def _plain(header: str) -> str:
    """A LaTeX header for Markdown."""
    return header.replace("$\\Delta$", "Δ").replace("$\\times$", "×").replace("\\%", "%")


LATEX_SPECIAL = (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"))


def _escape(text: str) -> str:
    for char, replacement in LATEX_SPECIAL:
        text = text.replace(char, replacement)
    return text


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


def per_method_table(agg: pd.DataFrame) -> pd.DataFrame:
    """One row per (data set, model, method, level), original first; sorted by model then method."""
    table = with_originals(agg)
    order = {"original": 0}
    table = table.assign(_o=table["method"].map(lambda m: order.get(m, 1)))
    return table.sort_values(["dataset", "model", "_o", "method", "level"], kind="stable").drop(columns="_o")


def matched_table(agg: pd.DataFrame) -> pd.DataFrame:
    """Methods side by side at each shared level (same achieved compression target), per model."""
    leveled = agg[agg["level"].notna()]
    return leveled.sort_values(["dataset", "model", "level", "method"], kind="stable").reset_index(drop=True)


def write_table(
    table: pd.DataFrame, stem: Path, keys: list[str], group_by: list[str], caption: str, label: str
) -> None:
    """`stem`.csv (raw mean/std/n), `stem`.md and `stem`.tex (formatted, best in bold)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = table.reset_index(drop=True)
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    md = formatted(table, keys, group_by, latex=False)
    atomic_write_text(stem.with_suffix(".md"), md.to_markdown(index=False) + "\n")
    tex = formatted(table, keys, group_by, latex=True)
    latex = tex.to_latex(
        index=False,
        escape=False,
        caption=caption,
        label=label,
        column_format="l" * len(keys) + "r" * (tex.shape[1] - len(keys)),
    )
    atomic_write_text(stem.with_suffix(".tex"), latex)
