"""`lcbench compare A B`: two result folders of one sweep (say, regenerated on another CPU) side by side:
which runs' values differ and by how much, and which verdicts changed.

Values are compared per run id (the same config); verdicts per claim and per paired-difference row. The
CPUs each folder's runs ran on are named, so a drift can be put down to the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.errors import ConfigError

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


def _read(folder: Path, name: str, required: bool) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        if required:
            raise ConfigError(
                f"{folder} has no {name}: give a folder written by `lcbench report` (results/<sweep>)"
            )
        return pd.DataFrame()
    return pd.read_csv(path)


def compare_folders(first: str | Path, second: str | Path) -> Comparison:
    a, b = Path(first), Path(second)
    runs = [_read(a, "runs.csv", True), _read(b, "runs.csv", True)]
    done = [r[r["status"] == "completed"].set_index("run_id") for r in runs]
    both = done[0].index.intersection(done[1].index)
    columns = [
        c
        for c in done[0].columns.intersection(done[1].columns)
        if c not in NOT_VALUES
        and pd.api.types.is_numeric_dtype(done[0][c])
        and pd.api.types.is_numeric_dtype(done[1][c])
    ]
    rows = []
    for column in columns:
        x, y = done[0].loc[both, column].astype(float), done[1].loc[both, column].astype(float)
        present = ~(x.isna() & y.isna())
        gap = (x - y).abs()[present]
        differ = int(((gap > 0) | (x.isna() != y.isna())[present]).sum())
        rows.append({"column": column, "compared": int(present.sum()), "differ": differ,
                     "largest": float(gap.max()) if differ and gap.notna().any() else 0.0})  # fmt: skip
    verdicts = pd.concat([_claim_changes(a, b), _difference_changes(a, b)], ignore_index=True)
    return Comparison(
        runs_both=len(both),
        runs_only=(len(done[0].index.difference(both)), len(done[1].index.difference(both))),
        values=pd.DataFrame(rows, columns=["column", "compared", "differ", "largest"]),
        verdicts=verdicts,
        cpus=(_cpus(runs[0]), _cpus(runs[1])),
    )


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
