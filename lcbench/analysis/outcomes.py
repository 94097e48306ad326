"""A sweep's per-example records (`examples.npz`) as paired per-seed differences with per-example values.

Each evaluation is scored in its data set's headline metric, on the scale differences are taken on (top-1
points as they are; perplexity as 100 x its log, so that a difference is 100 x the log ratio), with each
held-out example's jackknife value: n x the metric minus (n - 1) x the metric without that example. Their
mean is the metric (exactly for top-1, whose values are 100 x right-or-wrong); their spread is the test
sample's. Two runs are paired only when they scored the same examples; the held-out set's key (data set,
split, size, a digest of the targets) tells which seeds share a test set.

A side of a difference may be a weighted mixture of runs scored on the same examples: a point interpolated
on a method's accuracy-compression frontier between two of its models (what picking one or the other at
random in those proportions would score).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.store import read_json
from ..training import examples
from ..training.tasks import QUALITIES, TASKS, Task
from ..zoo.data import DATASETS
from .verdicts import SeedDifference, mcnemar_p

# the arrays that say which examples were scored: two runs are paired only when theirs are equal
SCORED = {"classification": "target", "regression": "target", "language_modeling": "tokens"}
LOG_SCALE = {"perplexity"}  # metrics compared as 100 x log (their differences: 100 x log ratio)


@dataclass
class Scored:
    """One evaluation of one run: its metric, the metric on the difference scale with its per-example
    jackknife values, and its held-out set's key."""

    value: float
    scaled: float
    influence: np.ndarray
    key: tuple
    scored: np.ndarray  # which examples (targets or token counts): must match the other side's
    correct: np.ndarray | None  # top-1 right or wrong per example (classification), for McNemar


def scale(metric: str, values):
    """A metric on the scale its differences are taken on."""
    return 100.0 * np.log(values) if metric in LOG_SCALE else values


def score(outcomes: dict[str, np.ndarray], task: Task, metric: str, held_out: tuple) -> Scored:
    """One evaluation's per-example outcomes scored in `metric`, with jackknife values (`held_out` names
    the set: the key gets the examples' size and a digest of what was scored)."""
    columns = task.columns(outcomes, metric)
    n = len(columns)
    sums = columns.sum(0)
    value = float(task.from_sums(metric, sums, n))
    scaled = float(scale(metric, value))
    without = scale(metric, task.from_sums(metric, sums[None, :] - columns, n - 1)) if n > 1 else np.zeros(n)
    influence = n * scaled - (n - 1) * np.asarray(without, dtype=np.float64)
    scored = outcomes[SCORED[task.name]]
    digest = hashlib.sha256(np.ascontiguousarray(scored).tobytes()).hexdigest()[:16]
    correct = outcomes["predicted"] == outcomes["target"] if task.name == "classification" else None
    return Scored(value, scaled, influence, (*held_out, n, digest), scored, correct)


Side = tuple  # ((run id, evaluation, weight), ...): one run, or a mixture of runs scored on the same examples


def paired_difference(
    first: list[tuple[Scored, float]], second: list[tuple[Scored, float]], metric: str, runs: frozenset
) -> SeedDifference:
    """The advantage of mixture `first` over `second` ((scored, weight) each, weights summing to 1), + in
    favour of `first`: metric points where higher is better; for perplexity 100 x log(second / first)."""
    keys = {s.key for s, _ in (*first, *second)}
    if len(keys) != 1 or any(not np.array_equal(s.scored, first[0][0].scored) for s, _ in (*first, *second)):
        raise ValueError("scored on different held-out examples: they cannot be paired")
    sign = 1.0 if QUALITIES[metric].higher_is_better else -1.0

    def mix(side):
        return sum(w * s.scaled for s, w in side), sum(w * s.influence for s, w in side)

    (a, a_influence), (b, b_influence) = mix(first), mix(second)
    discordant = exact = None
    single = len(first) == 1 and len(second) == 1
    if single and first[0][0].correct is not None and metric == "top1":
        a_correct, b_correct = first[0][0].correct, second[0][0].correct
        discordant = (int((a_correct != b_correct).sum()), len(a_correct))
        exact = mcnemar_p(a_correct, b_correct)
    return SeedDifference(
        float(sign * (a - b)), {keys.pop(): sign * (a_influence - b_influence)}, discordant, exact, runs
    )


class Outcomes:
    """Lazily read and scored per-example records of the runs of one analysis frame."""

    def __init__(self, frame: pd.DataFrame, output_root: str | Path) -> None:
        self.root = Path(output_root)
        self.rows = {row["run_id"]: row for _, row in frame.iterrows()} if len(frame) else {}
        self._groups: dict[str, dict | None] = {}
        self._scored: dict[tuple, Scored | None] = {}

    def groups(self, run_id: str) -> dict | None:
        """The run's evaluations ({group: {name: array}}), None when it has no per-example record."""
        if run_id not in self._groups:
            record = read_json(self.root / run_id / "result.json") or {}
            kept = record.get("examples")
            self._groups[run_id] = examples.read(self.root / run_id, kept) if kept else None
        return self._groups[run_id]

    def metric(self, run_id: str) -> str:
        return DATASETS.get(self.rows[run_id]["dataset"]).metric

    def scored(self, run_id: str, group: str = "final") -> Scored | None:
        """One evaluation of a run in its data set's headline metric (None: no such record)."""
        if (run_id, group) not in self._scored:
            row = self.rows[run_id]
            groups = self.groups(run_id)
            found = None
            if groups and group in groups:
                spec = DATASETS.get(row["dataset"])
                held_out = row["replicate"] if spec.seeded_split else "official"
                found = score(groups[group], TASKS[spec.task], spec.metric, (row["dataset"], held_out))
            self._scored[run_id, group] = found
        return self._scored[run_id, group]

    def difference(self, a, b) -> SeedDifference | None:
        """The advantage of `a` over `b` on the same examples, + favouring `a`; each side a (run id,
        evaluation) or a mixture ((run id, evaluation, weight), ...). None where a record is missing."""
        sides = [_side(a), _side(b)]
        scored = [[(self.scored(run, group), weight) for run, group, weight in side] for side in sides]
        if any(s is None for side in scored for s, _ in side):
            return None
        try:
            return paired_difference(*scored, self.metric(sides[0][0][0]), frozenset(sides))
        except ValueError:
            raise ValueError(
                f"runs {sides[0][0][0]} and {sides[1][0][0]} were scored on different held-out examples: "
                "they cannot be paired (same data set, split and sequence settings needed)"
            ) from None


def _side(side) -> Side:
    """A side as ((run id, evaluation, weight), ...)."""
    if isinstance(side[0], str):
        return ((side[0], side[1], 1.0),)
    return tuple((run, group, float(weight)) for run, group, weight in side)
