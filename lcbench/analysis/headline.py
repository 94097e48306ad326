"""The quality a sweep is compared on: each data set's headline metric (`tasks.QUALITIES`: top-1 for images,
perplexity for language modelling, GLUE's own metric per task).

The analysis frame carries it as `score` (with `base_score`, the original's, and `score_prefold`,
LayerCollapse's before its fold) beside the metric's own columns, so claims, differences and cost curves
are written once for every task. `sign` orients a difference: +1 where higher is better, -1 for
perplexity, so an advantage is always positive.
"""

from __future__ import annotations

import pandas as pd

from ..core.errors import ConfigError
from ..training.tasks import QUALITIES, Quality
from ..zoo.data import DATASETS

MIXED = Quality("score", "Score (each task's metric)", ("Score", ""), unit="points")


def metric_of(dataset: str) -> str:
    return DATASETS.get(dataset).metric


def add_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """`metric`, `score`, `base_score`, `score_prefold` of every row from its data set's headline metric."""
    frame = frame.copy()
    if frame.empty:
        return frame.assign(metric=[], score=[], base_score=[], score_prefold=[])
    frame["metric"] = frame["dataset"].map(metric_of)
    for column, pattern in (("score", "{}"), ("base_score", "base_{}"), ("score_prefold", "{}_prefold")):
        frame[column] = [
            row[pattern.format(m)] if pattern.format(m) in frame else float("nan")
            for m, (_, row) in zip(frame["metric"], frame.iterrows())
        ]
    return frame


def headline(frame: pd.DataFrame) -> Quality:
    """The frame's one headline metric; several (GLUE's tasks) that point the same way: `MIXED`."""
    metrics = list(dict.fromkeys(frame["metric"])) if "metric" in frame and len(frame) else ["top1"]
    if len(metrics) == 1:
        return QUALITIES[metrics[0]]
    if len({QUALITIES[m].higher_is_better for m in metrics}) > 1:
        raise ConfigError(
            f"a sweep mixes metrics where higher is better and lower is better ({', '.join(metrics)}): "
            "split it into one sweep per kind of task"
        )
    return MIXED


def sign(quality: Quality) -> int:
    """+1 where a higher value is better, -1 where lower is (perplexity)."""
    return 1 if quality.higher_is_better else -1


def unit(quality: Quality) -> str:
    """How a difference reads: ' pp', ' points', or '' (perplexity)."""
    return f" {quality.unit}" if quality.unit else ""
