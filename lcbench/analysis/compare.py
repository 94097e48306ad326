"""`lcbench compare A B`: two result folders of one sweep (say, regenerated on another CPU) side by side:
which runs' values differ and by how much, and which verdicts changed.

Values are compared per run id (the same config); verdicts per claim and per paired-difference row. The
CPUs each folder's runs ran on are named, so a drift can be put down to the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.errors import ConfigError, first_line

# the columns compared as values (identity, status text and timings are not results)
NOT_VALUES = {"run_id", "level", "seed", "replicate", "paper_blocks", "epochs", "train_seconds",
              "latency_ms_b1", "speedup_b1", "speedup_quiet_b1", "speedup_quiet_b1_low",
              "speedup_quiet_b1_high"}  # fmt: skip
DIFFERENCE_KEY = ["dataset", "model", "level", "variant"]


@dataclass
class Comparison:
    runs_both: int
    runs_only: tuple[int, int]
    values: pd.DataFrame  # per column: values compared, how many differ, largest absolute difference
    verdicts: pd.DataFrame  # every verdict that changed: where, before, after
    cpus: tuple[str, str]
    columns_only: tuple[list[str], list[str]] = ([], [])  # columns one folder has and the other not

    @property
    def verdicts_changed(self) -> int:
        return len(self.verdicts)

    def text(self, names: tuple[str, str]) -> str:
        a, b = names
        lines = [
            f"{a}: {self.cpus[0] or 'CPU not recorded'}",
            f"{b}: {self.cpus[1] or 'CPU not recorded'}",
            f"runs in both: {self.runs_both}; only in {a}: {self.runs_only[0]}; "
            f"only in {b}: {self.runs_only[1]}",
        ]
        for folder, only in zip(names, self.columns_only):
            if only:
                lines.append(f"columns only in {folder} (not compared): {', '.join(only)}")
        changed = self.values[self.values["differ"] > 0]
        total = int(self.values["compared"].sum())
        lines.append(
            f"values: {int(changed['differ'].sum())} of {total} differ"
            + ("" if changed.empty else "; largest absolute difference per column:")
        )
        if not changed.empty:
            lines.append(changed.to_markdown(index=False, floatfmt=".3g"))
        lines.append(f"verdicts: {self.verdicts_changed} changed")
        if self.verdicts_changed:
            lines.append(self.verdicts.to_markdown(index=False))
        return "\n".join(lines)


# what each file must hold to be compared
COLUMNS = {"runs.csv": ["run_id", "status"], "claims.csv": ["claim", "verdict"],
           "differences.csv": [*DIFFERENCE_KEY, "verdict"]}  # fmt: skip
# text columns that are results (the others are a run's identity, its machine or its error)
TEXT_RESULTS = {"flag"}
FIX = "give two folders written by `lcbench report` (results/<sweep>), or regenerate this one"


def _read(folder: Path, name: str, required: bool) -> pd.DataFrame:
    """One table of a report folder; a file that is missing (where required), empty, not UTF-8, badly
    quoted or without the columns compared is named in one line (ConfigError: exit 2)."""
    path = folder / name
    if not path.is_file():
        if required:
            raise ConfigError(f"{folder} has no {name}: {FIX}")
        return pd.DataFrame()
    try:
        table = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError:
        if required or path.stat().st_size == 0:
            raise ConfigError(f"{path} is empty: {FIX}") from None
        return pd.DataFrame()  # (a blank line: the table of no rows an older report wrote)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): {FIX}") from None
    except pd.errors.ParserError as e:
        raise ConfigError(f"{path} is not a readable CSV ({first_line(e)}): {FIX}") from None
    missing = [c for c in COLUMNS[name] if c not in table.columns]
    if missing:
        raise ConfigError(f"{path} has no column {', '.join(missing)}: {FIX}")
    return table


def sweep_name(folder: Path) -> str:
    """The sweep a report folder is of, from its README's title (`# <sweep>: ...`; '' when unreadable)."""
    try:
        with open(folder / "README.md", encoding="utf-8") as f:
            title = f.readline()
    except (OSError, UnicodeDecodeError):
        return ""
    return title[2:].split(":")[0].strip() if title.startswith("# ") and ":" in title else ""


def compare_folders(first: str | Path, second: str | Path) -> Comparison:
    a, b = Path(first), Path(second)
    runs = [_read(a, "runs.csv", True), _read(b, "runs.csv", True)]
    names = sweep_name(a), sweep_name(b)
    if all(names) and names[0] != names[1]:
        raise ConfigError(
            f"{a} is a report of sweep {names[0]}, {b} of sweep {names[1]}: compare two reports of one sweep"
        )
    done = [r[r["status"] == "completed"].set_index("run_id") for r in runs]
    both = done[0].index.intersection(done[1].index)
    if len(both) == 0 and len(done[0]) and len(done[1]):
        raise ConfigError(
            f"{a} and {b} have no completed run in common (no run id in both): they are reports of "
            "different sweeps or configurations; compare two reports of one sweep"
        )
    shared = [c for c in done[0].columns.intersection(done[1].columns) if c not in NOT_VALUES]
    rows = [
        _column_differences(done[0].loc[both, c], done[1].loc[both, c], c)
        for c in shared
        if c in TEXT_RESULTS or any(pd.api.types.is_numeric_dtype(d[c]) for d in done)
    ]
    verdicts = pd.concat([_claim_changes(a, b), _difference_changes(a, b)], ignore_index=True)
    return Comparison(
        runs_both=len(both),
        runs_only=(len(done[0].index.difference(both)), len(done[1].index.difference(both))),
        values=pd.DataFrame(rows, columns=["column", "compared", "differ", "largest"]),
        verdicts=verdicts,
        cpus=(_cpus(runs[0]), _cpus(runs[1])),
        columns_only=(
            sorted(set(done[0].columns) - set(done[1].columns)),
            sorted(set(done[1].columns) - set(done[0].columns)),
        ),
    )


def _column_differences(x: pd.Series, y: pd.Series, column: str) -> dict:
    """How many values of one column differ: numbers by value (the largest gap kept); a column that is
    text in either folder (a number garbled in one) as text, so that it is counted, never dropped."""
    present = ~(x.isna() & y.isna())
    if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
        x, y = x.astype(float), y.astype(float)
        gap = (x - y).abs()[present]
        differ = int(((gap > 0) | (x.isna() != y.isna())[present]).sum())
        largest = float(gap.max()) if differ and gap.notna().any() else 0.0
    else:
        differ = int((x.astype(str) != y.astype(str))[present].sum())
        largest = float("nan")
    return {"column": column, "compared": int(present.sum()), "differ": differ, "largest": largest}


def _cpus(runs: pd.DataFrame) -> str:
    if "cpu" not in runs:
        return ""
    return ", ".join(sorted({c for c in runs["cpu"].dropna().astype(str) if c}))


def _claim_changes(a: Path, b: Path) -> pd.DataFrame:
    first, second = _read(a, "claims.csv", False), _read(b, "claims.csv", False)
    if first.empty or second.empty:
        return pd.DataFrame(columns=["where", "before", "after"])
    joined = first.merge(second, on="claim", suffixes=("_a", "_b"))
    changed = joined[joined["verdict_a"] != joined["verdict_b"]]
    return pd.DataFrame(
        {"where": "claim: " + changed["claim"], "before": changed["verdict_a"], "after": changed["verdict_b"]}
    )


def _difference_changes(a: Path, b: Path) -> pd.DataFrame:
    first, second = _read(a, "differences.csv", False), _read(b, "differences.csv", False)
    if first.empty or second.empty:
        return pd.DataFrame(columns=["where", "before", "after"])
    joined = first.merge(second, on=DIFFERENCE_KEY, suffixes=("_a", "_b"))
    changed = joined[joined["verdict_a"] != joined["verdict_b"]]  # (the seeds needed are a column apart)
    where = [
        f"difference: {r['model']} level {r['level']:g} vs {r['variant']}"
        + (f" ({r['dataset']})" if first["dataset"].nunique() > 1 else "")
        for _, r in changed.iterrows()
    ]
    return pd.DataFrame({"where": where, "before": changed["verdict_a"], "after": changed["verdict_b"]})
