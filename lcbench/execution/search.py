"""`lcbench search SPEC`: every method's hyperparameters chosen by one protocol, on validation data.

A spec's `search: {trials: 4, seed: 1000}` sets the budget. Each variant's search space is its method's
`search_space(params, optimizer)` (its authors' values; `search_source` says where from) plus the
fine-tuning lr of a run that trains, the same factors for every method (`LR_FACTORS`). A variant gets
`trials` configurations: the spec's own first, then the others in an order drawn with the tuning seed,
skipping those `plan` refuses (a lam predicted not to fold: listed in the lock, not trials); all of them
where the grid is smaller. Each trial is a variant of a sweep of its own (`NAME@t2`) run with
`holdout=validation`: trained on the training split less a validation part carved from it and scored on that
part (`zoo.data.carve_validation`); the test split is never loaded. Where a data set's split is drawn per
replicate (digits), every replicate is tuned on its own training split; where it is official, one tuning
replicate of its own seed (its own original model) is.

`analysis.selection` picks each cell's trial by the validation metric and writes the lock file beside the
spec (`runs/NAME.tuned.yaml`); `plan`, `launch` and `report` read it (`read_lock`, applied in
`sweep.expand`) and every tuned run records its selection in its config (`selection`), hence in its id.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core import bundled
from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..methods import METHODS
from ..zoo.data import DATASETS
from .sweep import LEVEL, Plan, expand, load_spec, selected_settings

DEFAULT_TRIALS = 4
DEFAULT_TUNING_SEED = 1000  # no replicate of any spec uses it: the tuning original is nobody's
MAX_TRIALS = 64
# x the spec's fine-tuning lr, for every method whose runs train: five, so that a method with nothing else to
# search (plain Wanda, low-rank, fine-tuning) gets the full budget of four trials too
LR_FACTORS = (1.0, 0.5, 2.0, 0.25, 4.0)
LR_SOURCE = "the spec's fine-tuning lr x 0.25, 0.5, 1, 2 or 4, for every method alike (runs that train)"
TRIAL_MARK = "@t"  # `layercollapse@t2`: trial 2 of variant layercollapse
LOCK_SUFFIX = ".tuned.yaml"
LOCK_FORMAT = 1


@dataclass
class VariantSearch:
    """One variant's search: its space, where it comes from, and the configurations tried."""

    method: str
    space: dict[str, list]
    source: str
    trials: list[dict] = field(default_factory=list)  # trial i's values (trial 0: the spec's own, if planned)
    refused: list[dict] = field(default_factory=list)  # configurations `plan` refused, with why: not trials


@dataclass
class SearchPlan:
    spec_path: Path
    name: str
    plan: Plan  # every trial's runs (variants NAME@tI) and the originals they start from
    variants: dict[str, VariantSearch]
    trials: int
    seed: int
    per_replicate: bool
    tuning_seeds: list[int]

    @property
    def lock_path(self) -> Path:
        return lock_path(self.spec_path)


def lock_path(spec_path: str | Path) -> Path:
    """`runs/digits.yaml` -> `runs/digits.tuned.yaml`."""
    path = Path(spec_path)
    return path.with_name(path.name.removesuffix(path.suffix) + LOCK_SUFFIX)


def spec_digest(spec_path: str | Path) -> str:
    return hashlib.sha256(Path(spec_path).read_bytes()).hexdigest()


def trial_name(variant: str, index: int) -> str:
    return f"{variant}{TRIAL_MARK}{index}"


def split_trial_name(name: str) -> tuple[str, int]:
    variant, _, index = name.rpartition(TRIAL_MARK)
    return variant, int(index)


def search_settings(spec: dict, source: str) -> tuple[int, int]:
    """(trials, tuning seed) from the spec's `search:` mapping."""
    settings = spec.get("search") or {}
    if not isinstance(settings, dict) or set(settings) - {"trials", "seed"}:
        raise ConfigError(f"{source}: search takes {{trials: N, seed: S}}, not {settings!r}")
    trials = settings.get("trials", DEFAULT_TRIALS)
    seed = settings.get("seed", DEFAULT_TUNING_SEED)
    for key, value, low, high in (("trials", trials, 1, MAX_TRIALS), ("seed", seed, 0, 2**31 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{source}: search.{key} must be a whole number in {low}..{high}, not {value!r}"
            )
    return trials, seed


def variant_space(variant: dict, base: dict) -> tuple[dict[str, list], str, dict[str, Any]]:
    """(space, source, the spec's own value of each searched parameter) of one variant."""
    method = METHODS.get(variant["method"])
    fields = {f.name: f for f in dataclasses.fields(method.Params)}
    given = {k: v for k, v in variant.items() if k in fields and not (isinstance(v, str) and LEVEL in v)}
    try:
        params = method.Params(**given)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"variant of {variant['method']}: {e}") from None
    optimizer = variant.get("optimizer", base.get("optimizer", RunConfig().optimizer))
    space = {k: list(v) for k, v in method.search_space(params, optimizer).items()}
    own = {k: getattr(params, k) for k in space}
    source = method.search_source or "no hyperparameter of its own declared"
    if _trains(variant, base):
        space["lr_factor"] = list(LR_FACTORS)
        own["lr_factor"] = 1.0
        source = f"{source}; lr: {LR_SOURCE}"
    return space, source, own


def _trains(variant: dict, base: dict) -> bool:
    return int(variant.get("epochs", base.get("epochs", RunConfig().epochs))) > 0


def candidates(name: str, space: dict[str, list], own: dict, seed: int) -> list[dict]:
    """Every configuration of the grid in the order trials take them: the spec's own first, then the
    others in an order drawn with `seed` (the same for every cell of the variant)."""
    first = {k: own[k] for k in space}
    grid = [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
    others = [values for values in grid if values != first]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return [first, *(others[int(i)] for i in rng.permutation(len(others)))]


def apply_values(variant: dict, values: dict, base: dict) -> dict:
    """The variant with a trial's values."""
    return {**variant, **selected_settings(variant, values, base)}


def plan_search(path: str | Path, overrides: list[str] = ()) -> SearchPlan:
    """Every trial of the spec's search as one plan of runs (checked like any sweep's)."""
    path = bundled.find(path)
    spec = load_spec(path, overrides)
    source = str(path)
    trials, seed = search_settings(spec, source)
    if not spec["variants"]:
        raise ConfigError(f"{source}: a search tunes the spec's variants, and it has none")
    expand(spec, source)  # the spec as written must plan: its own errors come first, as `plan` gives them
    base = spec["base"]
    datasets = _values(spec["grid"].get("dataset", base.get("dataset", RunConfig().dataset)))
    per_replicate = any(DATASETS.get(d).seeded_split for d in datasets) and "seed" not in (
        base.get("pretrain") or {}
    )
    seeds = _values(spec.get("seeds", base.get("seed", 0)))
    tuning_seeds = [int(s) for s in seeds] if per_replicate else [seed]

    searched = copy.deepcopy(spec)
    searched["name"] = f"{spec['name']}_search"
    searched["base"] = {**base, "holdout": "validation"}
    searched["base"].setdefault("tracking", {}).setdefault("group", searched["name"])
    searched["seeds"] = tuning_seeds
    variants: dict[str, VariantSearch] = {}
    plans: list[Plan] = []
    for vname, variant in spec["variants"].items():
        if not isinstance(variant, dict) or "method" not in variant:
            raise ConfigError(f"{source}: variant {vname!r} must be a mapping with a 'method' key")
        space, why, own = variant_space(variant, base)
        search = variants[vname] = VariantSearch(variant["method"], space, why)
        for values in candidates(vname, space, own, seed):
            if len(search.trials) == trials:
                break
            name = trial_name(vname, len(search.trials))
            try:
                plans.append(
                    expand({**searched, "variants": {name: apply_values(variant, values, base)}}, source)
                )
            except ConfigError as e:  # refused at plan time (a lam whose slopes cannot fold): not a trial
                reason = re.sub(r"^.*?seed=\d+: ", "", str(e))
                search.refused.append({**values, "why": reason})
                continue
            search.trials.append(values)
        if not search.trials:
            raise ConfigError(
                f"{source}: variant {vname}: `plan` refuses every configuration of its search "
                f"space ({search.refused[0]['why']})"
            )
    return SearchPlan(
        path,
        spec["name"],
        _merge(searched["name"], source, plans),
        variants,
        trials,
        seed,
        per_replicate,
        tuning_seeds,
    )


def _values(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _merge(name: str, source: str, plans: list[Plan]) -> Plan:
    runs = {}
    for run in sorted((r for p in plans for r in p.runs), key=lambda r: r.stage != "pretrain"):
        runs.setdefault(run.run_id, run)
    first = plans[0]
    skipped = [s for p in plans for s in p.skipped]
    return Plan(name, source, list(runs.values()), first.reference, first.margin, skipped)


# --------------------------------------------------------------------------------------------------------
# The lock file, as `plan` reads it


@dataclass
class Lock:
    """A spec's tuning selections: cell (variant, model, level, seed or None) -> (trial, its values)."""

    path: Path
    per_replicate: bool
    higher_is_better: bool
    variants: dict[str, dict]

    def ranked(self, variant: str, model: str, level: str, seed: int) -> list[tuple[int, dict]]:
        """The cell's trials as `plan` tries them: the chosen one, then the other counted ones best first;
        [] where the lock has no selection for the cell."""
        entry = self.variants.get(variant)
        for cell in (entry or {}).get("cells", []):
            if (cell["model"], str(cell["level"])) != (model, level):
                continue
            if self.per_replicate and cell.get("seed") != seed:
                continue
            sign = 1 if self.higher_is_better else -1
            scored = sorted(
                (i for i, s in enumerate(cell["scores"]) if s is not None),
                key=lambda i: (-sign * cell["scores"][i], i),
            )
            order = [int(cell["chosen"]), *(i for i in scored if i != int(cell["chosen"]))]
            return [(i, entry["trials"][i]) for i in order]
        return []


def read_lock(spec_path: str | Path) -> Lock | None:
    """The lock beside a spec, checked to be the one searched for this version of it; None if absent."""
    data = lock_document(spec_path)
    if data is None:
        return None
    protocol = data["protocol"]
    return Lock(
        lock_path(spec_path),
        bool(protocol["per_replicate"]),
        bool(protocol["higher_is_better"]),
        data.get("variants") or {},
    )


def lock_document(spec_path: str | Path) -> dict | None:
    """The lock file beside a spec as written (checked as `read_lock` checks it); None if absent."""
    path = lock_path(spec_path)
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not a readable lock file ({e}): rerun `lcbench search`") from None
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        raise ConfigError(
            f"{path}: not a lock file of format {LOCK_FORMAT}: rerun `lcbench search {spec_path}`"
        )
    if data.get("spec_sha256") != spec_digest(spec_path):
        raise ConfigError(
            f"{path} was searched for another version of {spec_path}: rerun `lcbench search {spec_path}` "
            "(or plan without it: tuned=false)"
        )
    return data
