"""Each tuned cell's trial, chosen on the validation split, and the lock file that records it.

A cell is one (variant, model, level) of the spec, and one replicate where the search tunes each replicate
on its own split. Its trial is the one with the best validation score among those that count: completed,
at their level (a missed match target, `infeasible`, `not folded` or `outside its range` does not count,
as in the verdicts; a variant without a target, at least the compression of trial 0, the spec's own
configuration), ties going to the lower trial. Where none counts, the spec's own configuration stays, and
the lock says so. Nothing here reads a test split: the trials' records hold validation scores only
(`holdout=validation`).
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path

import pandas as pd
import yaml

from ..core.errors import ConfigError
from ..core.store import atomic_write_text
from ..execution.search import (
    LOCK_FORMAT,
    SearchPlan,
    lock_document,
    lock_path,
    spec_digest,
    split_trial_name,
)
from ..execution.status import sweep_status
from ..execution.sweep import Plan
from ..training.provenance import cpu_model
from ..training.tasks import QUALITIES
from ..zoo.collapse import MATCH_TOLERANCE
from ..zoo.data import VALIDATION_FRACTION, VALIDATION_MAX
from .records import NOT_COUNTED, sweep_frame

RULE = (
    "each cell's best validation score among its trials that count (completed, at their level: not "
    "infeasible, not folded, not outside the method's range, match target met; without a target, at least "
    "the compression of the spec's own configuration, trial 0); ties to the lower trial; none counting: "
    "trial 0"
)


def select(search: SearchPlan) -> dict:
    """The lock document of a finished search (every trial run ended: completed or failed)."""
    statuses = sweep_status(search.plan)
    run_seconds = sum(((s.record or {}).get("cost") or {}).get("wall_seconds") or 0.0 for s in statuses)
    frame = sweep_frame(search.plan).set_index("run_id")
    waiting = frame[~frame["status"].isin(["completed", "failed"])]
    if len(waiting):
        raise ConfigError(
            f"search {search.name}: {len(waiting)} trial run(s) have not ended (first: {waiting.index[0]}): "
            "wait for them (`lcbench search` again resumes where it stopped)"
        )
    metrics = set(frame["metric"])
    if len(metrics) != 1:
        raise ConfigError(f"search {search.name}: one headline metric per search, not {sorted(metrics)}")
    quality = QUALITIES[metrics.pop()]
    cells: dict[str, dict[tuple, dict]] = {name: {} for name in search.variants}
    for run in search.plan.stage("compress"):
        variant, index = split_trial_name(run.variant)
        key = (run.cfg.model, run.cfg.tracking.level, run.cfg.seed if search.per_replicate else None)
        row = frame.loc[run.run_id]
        trials = len(search.variants[variant].trials)
        cell = cells[variant].setdefault(
            key, {"scores": [None] * trials, "not_counted": {}, "compression": [None] * trials, "free": True}
        )
        why = _not_counted(row)
        if why:
            cell["not_counted"][index] = why
        else:
            cell["scores"][index] = round(float(row["score"]), 4)
            cell["compression"][index] = float(row["compression"])
        matched = row["matched"]
        cell["free"] &= matched is None or matched != matched  # no target: it compresses as it decides
    for variant_cells in cells.values():
        for cell in variant_cells.values():
            _hold_compression(cell)
    variants = {}
    for name, search_of in search.variants.items():
        chosen_cells = []
        for (model, level, seed), cell in sorted(cells[name].items(), key=lambda kv: _order(kv[0])):
            scored = [(s, i) for i, s in enumerate(cell["scores"]) if s is not None]
            if scored:
                best = max(scored, key=lambda si: (si[0] if quality.higher_is_better else -si[0], -si[1]))
                chosen = best[1]
            else:
                chosen = 0
            entry = {"model": model, "level": level}
            if seed is not None:
                entry["seed"] = seed
            entry.update({"chosen": chosen, "scores": cell["scores"]})
            if cell["not_counted"]:
                entry["not_counted"] = dict(sorted(cell["not_counted"].items()))
            if not scored:
                entry["note"] = "no trial counted: the spec's own configuration"
            chosen_cells.append(entry)
        variants[name] = {
            "method": search_of.method,
            "source": search_of.source,
            "space": search_of.space,
            "trials": search_of.trials,
            **({"refused": search_of.refused} if search_of.refused else {}),
            "cells": chosen_cells,
        }
    return {
        "format": LOCK_FORMAT,
        "spec": search.spec_path.name,
        "spec_sha256": spec_digest(search.spec_path),
        "protocol": {
            "holdout": "validation",
            "validation": f"{VALIDATION_FRACTION:.0%} of the training split (at most {VALIDATION_MAX:,} "
            "examples), stratified by label, drawn with the replicate's seed; the test split never loaded",
            "trials": search.trials,
            "tuning_seed": search.seed,
            "per_replicate": search.per_replicate,
            "tuning_replicates": search.tuning_seeds,
            "metric": quality.key,
            "higher_is_better": quality.higher_is_better,
            "rule": RULE,
        },
        "variants": variants,
        "run_seconds": round(run_seconds, 1),
    }


def _hold_compression(cell: dict) -> None:
    """A variant that decides its own compression (no match target: Layer Folding on every block) would be
    tuned, by accuracy alone, toward compressing less: its trials count only at the compression of the
    spec's own configuration (trial 0) or beyond, within the match tolerance."""
    floor = cell["compression"][0]
    if not cell["free"] or floor is None:
        return
    for index, compression in enumerate(cell["compression"]):
        if compression is not None and compression < floor * (1 - MATCH_TOLERANCE):
            cell["scores"][index] = None
            cell["not_counted"][index] = (
                f"compressed less than trial 0 ({compression:.3g}x, not {floor:.3g}x)"
            )


def _not_counted(row) -> str:
    if row["status"] != "completed":
        return f"{row['status']}: {row['error']}"[:200]
    flag = next((f for f in NOT_COUNTED if f in (row["flag"] or "")), "")
    if flag:
        return flag
    matched = row["matched"]
    if matched is not None and matched == matched and not matched:  # False (None or NaN: no target)
        return "not matched"
    if not math.isfinite(float(row["score"])):
        return "no score"
    return ""


def _order(key: tuple) -> tuple:
    model, level, seed = key
    return (model, len(level), level, -1 if seed is None else seed)


def write_lock(document: dict, path: Path, took_s: float) -> Path:
    """Write the lock atomically, with when, where and how long the search took."""
    head, rest = ("format", "spec", "spec_sha256"), dict(document)
    document = {
        **{key: rest.pop(key) for key in head},
        "written": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "took_s": round(took_s, 1),  # this invocation's wall time (a resumed search: its last part)
        "run_seconds": rest.pop("run_seconds"),  # every trial run's and original's own, summed
        **rest,
    }
    head = (
        f"# Written by `lcbench search {document['spec']}`: each method's hyperparameters selected on a "
        "validation split\n# carved from the training data (never the test split). `plan`, `launch` and "
        "`report` read it; do not edit it by hand.\n"
    )
    atomic_write_text(path, head + yaml.safe_dump(document, sort_keys=False, width=110))
    return path


def tuning_section(plan: Plan) -> list[str]:
    """The report's account of how each variant's settings were chosen: the lock's budget, search space
    and source per variant, and how many cells kept the spec's own configuration."""
    tuned = [r for r in plan.stage("compress") if r.cfg.selection]
    document = lock_document(plan.source) if tuned else None
    if document is None:
        return [
            "## Tuning",
            "",
            "No tuning protocol: every method ran at the settings the spec gives (`lcbench search "
            f"{Path(plan.source).name}` chooses them on a validation split, the same number of trials each).",
            "",
        ]
    protocol = document["protocol"]
    seeds = ", ".join(map(str, protocol["tuning_replicates"]))
    where = (
        f"each replicate on its own training split (seeds {seeds})"
        if protocol["per_replicate"]
        else f"one tuning replicate of its own (seed {protocol['tuning_seed']})"
    )
    rows = []
    for name, variant in document["variants"].items():
        cells = variant["cells"]
        kept = sum(c["chosen"] == 0 for c in cells)
        space = "; ".join(f"{k} in {v}" for k, v in variant["space"].items()) or "nothing of its own"
        rows.append(
            {
                "variant": name,
                "trials": len(variant["trials"]),
                "refused by plan": len(variant.get("refused", [])),
                "search space": space,
                "cells kept trial 0": f"{kept} of {len(cells)}",
                "source": variant["source"],
            }
        )
    return [
        "## Tuning",
        "",
        f"Every variant's settings were chosen by `lcbench search` (`{lock_path(plan.source).name}`, "
        f"{document['written']}, {document['machine']}; its runs: {_duration(document['run_seconds'])} "
        "summed, one core each): up to "
        f"{protocol['trials']} trials each, trial 0 being the spec's own configuration, {where}, scored on "
        f"{protocol['validation']}. Selection: {protocol['rule']}. A variant with fewer "
        "configurations than the budget tried them all; configurations `lcbench plan` refuses (predicted not "
        "to fold) are not trials.",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
    ]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
