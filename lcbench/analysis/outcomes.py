"""A sweep's per-example records (`examples.npz`), resampled on their held-out sets, as paired differences.

Every run scored on the same held-out set (a data set with an official test split: one set; digits: one per
replicate, the split its original was trained beside) is resampled with the same example counts
(`verdicts.resample_counts`), so the resampled difference of two runs stays paired example by example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.store import read_json
from ..training import examples
from ..training.tasks import QUALITIES, TASKS
from ..zoo.data import DATASETS
from .verdicts import POOL, mcnemar_p, resample_counts, resampled_sums

# the arrays that say which examples were scored: two runs are paired only when theirs are equal
SCORED = {"classification": "target", "regression": "target", "language_modeling": "tokens"}


@dataclass
class Scored:
    """One evaluation of one run: its metric, its resampled metric (pool,), and its held-out set's key."""

    value: float
    pool: np.ndarray
    key: tuple
    scored: np.ndarray  # which examples (targets or token counts): must match the other side's
    correct: np.ndarray | None  # top-1 right or wrong per example (classification), for McNemar


@dataclass
class Difference:
    """The reference's advantage over another run in one replicate: observed, resampled, and its tests."""

    observed: float
    pool: np.ndarray
    key: tuple
    discordant: tuple[int, int] | None  # (examples that differ, examples) for top-1
    mcnemar: float | None


class Outcomes:
    """Lazily read, resampled per-example records of the runs of one analysis frame."""

    def __init__(self, frame: pd.DataFrame, output_root: str | Path, pool: int = POOL) -> None:
        self.root = Path(output_root)
        self.pool = pool
        self.rows = {row["run_id"]: row for _, row in frame.iterrows()} if len(frame) else {}
        self._groups: dict[str, dict | None] = {}
        self._counts: dict[tuple, np.ndarray] = {}
        self._scored: dict[tuple, Scored | None] = {}

    def groups(self, run_id: str) -> dict | None:
        """The run's evaluations ({group: {name: array}}), None when it has no per-example record."""
        if run_id not in self._groups:
            record = read_json(self.root / run_id / "result.json") or {}
            kept = record.get("examples")
            self._groups[run_id] = examples.read(self.root / run_id, kept) if kept else None
        return self._groups[run_id]

    def scored(self, run_id: str, group: str = "final") -> Scored | None:
        """One evaluation of a run in its data set's headline metric, resampled."""
        if (run_id, group) in self._scored:
            return self._scored[run_id, group]
        row = self.rows[run_id]
        groups = self.groups(run_id)
        found = None
        if groups and group in groups:
            spec = DATASETS.get(row["dataset"])
            task, metric = TASKS[spec.task], spec.metric
            outcomes = groups[group]
            columns = task.columns(outcomes, metric)
            n = len(columns)
            held_out = row["replicate"] if spec.seeded_split else "official"
            key = (row["dataset"], held_out, n)
            if key not in self._counts:
                self._counts[key] = resample_counts(n, self.pool, key)
            value = float(task.from_sums(metric, columns.sum(0), n))
            pool = task.from_sums(metric, resampled_sums(self._counts[key], columns), n)
            correct = outcomes["predicted"] == outcomes["target"] if spec.task == "classification" else None
            found = Scored(value, pool, key, outcomes[SCORED[spec.task]], correct)
        self._scored[run_id, group] = found
        return found

    def difference(self, a: tuple[str, str], b: tuple[str, str]) -> Difference | None:
        """The advantage of evaluation `a` (run id, group) over `b` on the same examples, oriented so that
        + favours `a`: metric points where higher is better; for perplexity 100 x (b / a - 1) %."""
        first, second = self.scored(*a), self.scored(*b)
        if first is None or second is None:
            return None
        if first.key != second.key or not np.array_equal(first.scored, second.scored):
            raise ValueError(
                f"runs {a[0]} and {b[0]} were scored on different held-out examples: they cannot be paired "
                "(same data set, split and sequence settings needed)"
            )
        metric = DATASETS.get(self.rows[a[0]]["dataset"]).metric
        if QUALITIES[metric].higher_is_better:
            observed, pool = first.value - second.value, first.pool - second.pool
        else:
            observed = 100.0 * (second.value / first.value - 1)
            pool = 100.0 * (second.pool / first.pool - 1)
        discordant = exact = None
        if first.correct is not None and metric == "top1":
            discordant = (int((first.correct != second.correct).sum()), len(first.correct))
            exact = mcnemar_p(first.correct, second.correct)
        return Difference(observed, pool, first.key, discordant, exact)
