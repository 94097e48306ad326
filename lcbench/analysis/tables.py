"""Tables over seeds: per-method and matched-compression, written as CSV, Markdown and LaTeX (booktabs).

Numbers are mean and sample standard deviation (ddof=1) over the completed seeds of a group, with n. The
original model of every (data set, model) is a row of its own. In the formatted tables the best value of a
column within each comparison group (a model, or a model at one level) is bold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..store import atomic_write_text

# column -> (header with unit, better: max | min | None, decimals)
COLUMNS = {
    "base_top1": ("Base top-1 (\\%)", None, 2),
    "top1": ("Top-1 (\\%)", "max", 2),
    "delta_top1": ("$\\Delta$ top-1 (pp)", "max", 2),
    "compression": ("Compression ($\\times$)", "max", 2),
    "gmacs": ("MACs (M)", "min", 3),
    "speedup_b1": ("Speed-up b=1 ($\\times$)", "max", 2),
    "train_seconds": ("Training (s)", "min", 1),
}
GROUP = ["dataset", "model", "method", "variant", "level"]
MEASURES = [
    "base_top1",
    "top1",
    "delta_top1",
    "compression",
    "gmacs",
    "speedup_b1",
    "latency_ms_b1",
    "params",
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


def _bold_mask(table: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    """True where a value is the best of its column within its group (ties all bold)."""
    mask = pd.DataFrame(False, index=table.index, columns=list(COLUMNS))
    for column, (_, better, _) in COLUMNS.items():
        if better is None or f"{column}_mean" not in table:
            continue
        values = table[f"{column}_mean"]
        best = values.groupby([table[g] for g in group_by]).transform(better)
        mask[column] = values.notna() & np.isclose(values, best)
    return mask


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
        scale = 1e3 if column == "gmacs" else 1.0  # MACs shown in millions for the small models
        cells = [
            _fmt(m * scale, s * scale, decimals, latex)
            for m, s in zip(table[f"{column}_mean"], table[f"{column}_std"])
        ]
        if latex:
            cells = [f"\\textbf{{{c}}}" if b and c != "--" else c for c, b in zip(cells, mask[column])]
            out[header] = cells
        else:
            cells = [f"**{c}**" if b and c != "-" else c for c, b in zip(cells, mask[column])]
            out[_plain(header)] = cells
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
