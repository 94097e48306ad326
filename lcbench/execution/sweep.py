"""Sweep specs (`runs/*.yaml`): a base config, a grid, named method variants and seeds, expanded into runs.

    name: digits                 # the sweep's name: W&B group, results/<name>/
    base: {dataset: digits, epochs: 10, pretrain: {epochs: 40}}
    grid: {model: [digits_vit, digits_mlp]}          # lists expand to their Cartesian product
    seeds: [0, 1, 2]
    variants:                                        # named method variants; lists expand here too
      layercollapse: {method: layercollapse, k: [1, 2]}
      kd: {method: kd, student: [collapsed:1, collapsed:2]}

Methods compared at matched compression share `levels: [1, 2, 3]`: a variant value `"{level}"` (or a
string holding it, `collapsed:{level}`) is replaced by each level, and its runs carry that level, so the
analysis can put the methods side by side level by level. `levels` may also map model names to lists
(`{default: [1, 2, 3], digits_vgg: [1, 2]}`) where a model has fewer collapsible blocks.

A level counts collapsible MLPs (LayerCollapse's `k`). `{blocks: [1, 2]}` gives it in the paper's unit
instead: one paper "block" of an MLP-Mixer is its token MLP plus its channel MLP (`mlps_per_block` of the
model zoo), so `mixer_b16_224: {blocks: [1, 2]}` plans k = 2 and 4, the paper's 55.64M and 51.39M models.

Any string value may hold `{model}`, the run's model name: `pretrain: {pretrained: /models/{model}}` gives
every model of the grid its own `save_pretrained` folder (the language sweeps).

A variant may carry `only: {model: [...], level: [...]}`: it is planned at those grid points and levels
only (e.g. KD's 2x and 5x budgets on the transformer models, to keep a CPU sweep short); and `levels:` of
its own, in any form the spec's takes (LayerCollapse at every k a model has, so that the methods whose
unit is coarser land between two of its points on the accuracy-compression frontier).

A grid cell whose run would repeat another variant's exactly (KD init=teacher into a collapsed student that
keeps no teacher tensor: `RedundantRun`) is left out of the plan; `plan.skipped` says which and why.

A spec with variants plans `compress` runs plus the `pretrain` runs they start from; a spec without
variants plans its base stage only. Seeds are independent replicates: each seed trains its own original
model (`pretrain.seed` = the seed), shared by every method of that seed, and a data set without an official
held-out split draws its own split from it. `base: {pretrain: {seed: 0}}` shares one original (and one
split) between all seeds instead: the report then says that n counts fine-tuning replicates only. A
list that is itself a value (a method's `blocks`) is written as a list inside a list.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import bundled
from ..core.config import RunConfig, _set_dotted, load_yaml, parse_override, pretrain_config
from ..core.errors import ConfigError, RedundantRun
from ..methods import METHODS
from ..training.cost import flops_per_sample, forward_flops
from ..training.identity import run_id
from ..training.pipeline import data_transforms
from ..training.resolve import make_config
from ..zoo.data import DATASETS, model_img_size, training_examples
from ..zoo.measure import count_macs
from ..zoo.models import create_model, mlps_per_block

SPEC_KEYS = {
    "name": "the sweep's name (W&B group, results/<name>/); default: the file name",
    "description": "free text",
    "base": "RunConfig keys shared by every run",
    "grid": "RunConfig keys with lists of values: every combination is planned",
    "seeds": "seeds of the compress runs (default: the base seed)",
    "variants": "name -> {method: ..., parameters}: the methods and their levels",
    "reference": "the method every other is compared with (paired differences, claims, cost to accuracy); "
    "default layercollapse",
    "margin": "the practical margin of the verdicts, in the headline metric's difference unit (default: 0.5 "
    "top-1 points, 1% relative perplexity, 1 point of a GLUE metric)",
    "search": "`lcbench search`'s budget: {trials: N (default 4), seed: S (the tuning seed, default 1000)}",
    "tuned": "use the selections of the lock file beside the spec (NAME.tuned.yaml, written by `lcbench "
    "search`) where it has one (default true; tuned=false plans the spec as written)",
    "levels": "levels shared by the variants ('{level}' in a value becomes each): a list of MLP counts, "
    "{blocks: [...]} in the paper's block unit, or a mapping of model names (and default) to either",
}
LEVEL_UNITS = ("blocks", "mlps")
LEVEL = "{level}"
MODEL = "{model}"  # in any string value: the run's model (e.g. `pretrain.pretrained: /models/{model}`)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its config and where in the sweep it comes from."""

    run_id: str
    cfg: RunConfig
    variant: str = ""  # the variant's name ('' for pretrain runs)
    level: dict = field(default_factory=dict)  # the variant's swept parameters (its compression level)
    depends_on: str | None = None  # the pretrain run a compress run starts from
    matched_level: int | None = None  # the spec's shared level (`levels:`), if the variant uses it

    @property
    def stage(self) -> str:
        return self.cfg.stage

    @property
    def level_label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.level.items())


@dataclass
class Plan:
    name: str
    source: str
    runs: list[PlannedRun]  # pretrain runs first, in a stable order
    reference: str = "layercollapse"  # the method the others are compared with (the spec's `reference`)
    margin: float | None = None  # the verdicts' practical margin (the spec's `margin`; None: the metric's)
    skipped: list[str] = field(default_factory=list)  # grid cells left out of the plan, each with its reason

    def stage(self, stage: str) -> list[PlannedRun]:
        return [r for r in self.runs if r.stage == stage]

    @property
    def output_root(self) -> Path:
        roots = {r.cfg.output_root for r in self.runs}
        if len(roots) != 1:
            raise ConfigError(
                f"sweep {self.name}: every run must share one output_root (got {sorted(roots)})"
            )
        return Path(roots.pop())


def load_spec(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read and check a spec; `key=value` overrides go into `base` (a grid key's override replaces it;
    `seeds=[0,1]` and `levels=[2]` replace the spec's)."""
    spec = load_yaml(path)
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        valid = "; ".join(f"{k} ({v})" for k, v in SPEC_KEYS.items())
        raise ConfigError(f"{path}: unknown sweep key(s) {', '.join(unknown)}. Valid keys: {valid}")
    spec.setdefault("name", Path(path).stem)
    for key in ("base", "grid", "variants"):
        value = spec.setdefault(key, {}) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping, not {type(value).__name__}")
        spec[key] = value
    for text in overrides:
        key, value = parse_override(text)
        if key in ("seeds", "levels", "margin", "tuned"):
            spec[key] = value
        elif key == "name":
            spec["name"] = str(value)
        elif key.startswith("search."):  # `search.trials=2`: the search's budget, not a run's key
            if not isinstance(spec.get("search") or {}, dict):
                raise ConfigError(f"{path}: search must be a mapping ({{trials: N, seed: S}})")
            spec["search"] = {**(spec.get("search") or {}), key.removeprefix("search."): value}
        elif key in spec["grid"]:
            spec["grid"][key] = value
        else:
            _set_dotted(spec["base"], key, value)
    return spec


def _values(where: str, key: str, value: Any) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(
            f"{where}: '{key}' is an empty list, so the sweep would plan no runs; give it a value"
        )
    return values


def _product(where: str, mapping: dict) -> list[tuple[dict, dict]]:
    """Every combination of a mapping's list values: (full assignment, the swept keys only)."""
    keys = list(mapping)
    choices = [_values(where, k, mapping[k]) for k in keys]
    swept = [k for k in keys if isinstance(mapping[k], list) and len(mapping[k]) > 1]
    combos = []
    for combo in itertools.product(*choices):
        assignment = dict(zip(keys, combo))
        combos.append((assignment, {k: assignment[k] for k in swept}))
    return combos


def expand(spec: dict, source: str = "", lock: Any = None) -> Plan:
    """The spec's runs: pretrain runs (deduplicated) first, then compress runs in grid order; a variant
    with a selection in `lock` (`search.Lock`) runs with its selected values at each cell."""
    name = str(spec["name"])
    base = copy.deepcopy(spec["base"])
    base.setdefault("tracking", {}).setdefault("group", name)
    seeds = _values(f"{source} seeds", "seeds", spec.get("seeds", base.get("seed", 0)))
    variants = spec["variants"]
    if variants and base.get("stage", "compress") != "compress":
        raise ConfigError(f"{source}: variants are compression methods, so base stage must be compress")

    independent = "seed" not in (base.get("pretrain") or {})  # `pretrain: {seed: S}`: one shared original
    runs: list[PlannedRun] = []
    skipped: dict[tuple, str] = {}  # (variant, model, level) -> why it is not planned
    for grid_values, _ in _product(f"{source} grid", spec["grid"]):
        point = {**base, **grid_values}
        if not variants:
            for seed in seeds:
                cfg = _config(source, {**point, "seed": seed}, "")
                runs.append(PlannedRun(run_id(cfg), cfg))
            continue
        for vname, variant in variants.items():
            if not isinstance(variant, dict) or "method" not in variant:
                raise ConfigError(f"{source}: variant {vname!r} must be a mapping with a 'method' key")
            variant = dict(variant)
            only = variant.pop("only", None) or {}
            if not isinstance(only, dict) or set(only) - {"model", "level"}:
                raise ConfigError(f"{source}: variant {vname!r}: 'only' takes {{model: [...], level: [...]}}")
            if "model" in only and point.get("model") not in only["model"]:
                continue
            levels = model_levels(source, variant.pop("levels", spec.get("levels")), point.get("model"))
            for matched, concrete in _at_levels(source, vname, variant, levels):
                if "level" in only and matched not in only["level"]:
                    continue
                for assignment, level in _product(f"{source} variant {vname}", concrete):
                    if matched is not None:
                        level = {"level": matched, **level}
                    for seed in seeds:
                        values = {**point, "stage": "compress", **assignment, "seed": seed}
                        values["tracking"] = {
                            **(values.get("tracking") or {}),
                            "variant": vname,
                            "level": ",".join(
                                f"{v}" if k == "level" else f"{k}={v}" for k, v in level.items()
                            ),
                        }
                        if independent:  # each seed trains its own original (and draws its own split)
                            values["pretrain"] = {**(values.get("pretrain") or {}), "seed": seed}
                        ranked = (
                            lock.ranked(vname, point.get("model"), values["tracking"]["level"], seed)
                            if (lock)
                            else []
                        )
                        try:
                            cfg = _tuned_config(
                                source,
                                values,
                                f"variant {vname} {level}",
                                ranked,
                                variant,
                                base,
                                f"{lock.path.name} {vname}" if lock else "",
                            )
                        except RedundantRun as e:
                            where = (vname, point.get("model"), matched)
                            skipped.setdefault(where, f"{vname} at {_where(point, level)}: {e}")
                            continue
                        pre = pretrain_config(cfg)
                        runs.append(PlannedRun(run_id(cfg), cfg, vname, level, run_id(pre), matched))
    if not runs:
        raise ConfigError(f"{source}: the sweep plans no runs")

    pretrains: dict[str, PlannedRun] = {}
    for run in runs:
        if run.depends_on and run.depends_on not in pretrains:
            pre = pretrain_config(run.cfg)
            pretrains[run.depends_on] = PlannedRun(run.depends_on, pre)
    unique: dict[str, PlannedRun] = {}
    for run in [*pretrains.values(), *runs]:
        unique.setdefault(run.run_id, run)  # two grid points resolving to one config are one run
    reference = str(spec.get("reference", "layercollapse"))
    try:
        METHODS.get(reference)
    except ConfigError as e:
        raise ConfigError(f"{source}: reference: {e}") from None
    margin = spec.get("margin")
    if margin is not None and (
        isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin <= 0
    ):
        raise ConfigError(f"{source}: margin must be a positive number (e.g. margin: 0.5), not {margin!r}")
    return Plan(
        name,
        source,
        list(unique.values()),
        reference,
        None if margin is None else float(margin),
        list(skipped.values()),
    )


def _tuned_config(
    source: str, values: dict, where: str, ranked: list, variant: dict, base: dict, name: str
) -> RunConfig:
    """The run's config at its cell's selection: the best trial `plan` accepts for the real run (the
    trials ran on the training split less its validation part: fewer steps, which may move a slope
    out of the fold band), the next best where it refuses; the spec as written without a selection."""
    refused = []
    for position, (index, settings) in enumerate(ranked):
        tuned = {**values, **selected_settings(variant, settings, base)}
        tuned["selection"] = f"{name} trial {index}" + (
            f" (trial {', '.join(refused)} refused)" if refused else ""
        )
        try:
            return _config(source, tuned, where)
        except RedundantRun:
            raise
        except ConfigError as e:
            if position == len(ranked) - 1:
                raise ConfigError(
                    f"{e} (every trial of its selection is refused: rerun `lcbench search`)"
                ) from None
            refused.append(str(index))
    return _config(source, values, where)


def selected_settings(variant: dict, values: dict, base: dict) -> dict:
    """A trial's values as run settings (`lr_factor` scales the variant's, or the spec's, lr)."""
    out = {k: v for k, v in values.items() if k != "lr_factor"}
    if "lr_factor" in values:
        out["lr"] = float(variant.get("lr", base.get("lr", RunConfig().lr))) * float(values["lr_factor"])
    return out


def _where(point: dict, level: dict) -> str:
    """`digits_mlp level=2`: a grid cell as `plan` names it."""
    return " ".join([str(point.get("model", "")), *(f"{k}={v}" for k, v in level.items())]).strip()


def model_levels(source: str, levels: Any, model: str | None) -> list[int] | None:
    """The spec's levels for `model`, in collapsible MLPs (k); `{blocks: [...]}` is converted."""
    if isinstance(levels, dict) and not set(levels) & set(LEVEL_UNITS):
        levels = levels.get(model, levels.get("default"))  # per model
    if not isinstance(levels, dict):
        return levels
    if len(levels) != 1 or set(levels) - set(LEVEL_UNITS):
        raise ConfigError(
            f"{source}: levels {levels} must name one unit: {{blocks: [...]}} (the paper's blocks) or "
            "{mlps: [...]} (collapsible MLPs, LayerCollapse's k)"
        )
    ((unit, values),) = levels.items()
    values = _values(f"{source} levels", unit, values)
    if unit == "mlps":
        return values

    per_block = mlps_per_block(model) if model else 1
    return [int(v) * per_block for v in values]


def _at_levels(source: str, vname: str, variant: dict, levels: Any) -> list[tuple[int | None, dict]]:
    """The variant once per shared level when its values mention '{level}', else once as it is."""
    uses = [k for k, v in variant.items() if isinstance(v, str) and LEVEL in v]
    if not uses:
        return [(None, variant)]
    if not levels:
        raise ConfigError(f"{source}: variant {vname!r} uses '{LEVEL}' but the spec has no 'levels' list")
    out = []
    for level in _values(f"{source} levels", "levels", levels):
        concrete = dict(variant)
        for key in uses:
            text = variant[key]
            concrete[key] = level if text == LEVEL else text.replace(LEVEL, str(level))
        out.append((level, concrete))
    return out


def _with_model(value: Any, model: str) -> Any:
    """'{model}' in a string (nested ones too) replaced by the grid point's model name."""
    if isinstance(value, str):
        return value.replace(MODEL, model)
    if isinstance(value, dict):
        return {k: _with_model(v, model) for k, v in value.items()}
    return value


def _config(source: str, values: dict, where: str) -> RunConfig:
    try:
        return make_config(_with_model(values, str(values.get("model", ""))))
    except RedundantRun:
        raise
    except ConfigError as e:
        point = ", ".join(f"{k}={values[k]}" for k in ("model", "dataset", "seed") if k in values)
        raise ConfigError(f"{source}: {where + ', ' if where else ''}{point}: {e}") from None


def plan_sweep(path: str | Path, overrides: list[str] = ()) -> Plan:
    """A spec's plan: `path` a YAML file, or the name of a bundled spec (`digits`)."""
    from .search import read_lock  # a module above this one: it plans its trials with `expand`

    path = bundled.find(path)
    spec = load_spec(path, overrides)
    tuned = spec.pop("tuned", True)
    if not isinstance(tuned, bool):
        raise ConfigError(f"tuned={tuned!r}: give tuned=true or tuned=false")
    return expand(spec, str(path), read_lock(path) if tuned else None)


# --------------------------------------------------------------------------------------------------------
# Cost estimates


def forward_gmacs(cfg: RunConfig) -> float:
    """GMACs of one forward pass of the run's original model (built on the meta device: no memory; a
    transformers model, whose forward reads values (position ids, masks), is built on the CPU)."""

    spec = DATASETS.get(cfg.dataset)
    num_classes = spec.num_classes if spec.num_classes is not None else 1000
    if spec.is_text:
        model = create_model(cfg.model, num_classes)
        return count_macs(model, model.input_shape(cfg.seq_len or spec.seq_len))["gmacs"]
    with torch.device("meta"):
        model = create_model(cfg.model, num_classes, spec.in_chans, model_img_size(cfg))
    size = data_transforms(model, cfg.img_size).img_size if spec.natural_images else spec.img_size
    return count_macs(model, (spec.in_chans, size, size))["gmacs"]


def training_flops(plan: Plan) -> dict[str, float | None]:
    """Estimated training FLOPs per run (`cost.flops_per_sample` of the original model x samples x epochs,
    a KD teacher included; None: data set size unknown)."""

    macs: dict[tuple, float] = {}
    estimates: dict[str, float | None] = {}
    for run in plan.runs:
        cfg = run.cfg
        size = training_examples(DATASETS.get(cfg.dataset), cfg.holdout)
        if size is None:
            estimates[run.run_id] = None
            continue
        spec = DATASETS.get(cfg.dataset)  # what the forward pass depends on (GLUE's tasks share one)
        key = (
            cfg.model,
            cfg.img_size,
            cfg.seq_len or spec.seq_len,
            spec.num_classes,
            spec.in_chans,
            spec.img_size,
        )
        if key not in macs:
            macs[key] = forward_gmacs(cfg)
        original = forward_flops(macs[key])
        passes = METHODS.get(cfg.method).original_forward_passes
        estimates[run.run_id] = flops_per_sample(original, original, passes) * size * cfg.epochs
    return estimates
