"""Typed run configs: dataclasses, YAML files, `key=value` overrides, validation and content-hash run ids.

A run is one `RunConfig`. Every field may carry validation metadata (`choices`, `min`, `max`,
`min_exclusive`) through `option()`. A method's parameters are a dataclass of the same kind, declared by
the method (`Method.Params`); on the command line they are given as bare keys (`k=2`) once the method is
known. `pretrain.*` keys describe how the original model of a `compress` run is obtained: the compress
stage derives that pretrain run's config, and so its id, from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# Sizes beyond these are typos, not experiments: caught at config time, never after hours of training
# (`eval_batch_size=10**12` failed only at the final evaluation; `threads=100000` crashed torch).
MAX_BATCH = 1 << 20


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    choices: list | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: float | None = None,
    help: str = "",
) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive, "help": help}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrackingConfig:
    """Weights & Biases settings. The run record on disk stays the source of truth."""

    mode: str = option("disabled", choices=["online", "offline", "disabled"])
    project: str = "lcbench"
    entity: str = ""
    group: str = ""
    tags: list[str] = option(default_factory=list)


@dataclass
class PretrainRecipe:
    """How the original model that a `compress` run starts from is obtained (its own `pretrain` run)."""

    pretrained: str = option("", help="'' (train from scratch), 'hub' (timm/torchvision cache) or a file")
    epochs: int = option(40, min=0)
    batch_size: int = option(64, min=1, max=MAX_BATCH)
    optimizer: str = option("adamw", choices=["sgd", "adamw"])
    lr: float = option(3e-3, min_exclusive=0)
    weight_decay: float = option(0.1, min=0)
    lr_schedule: str = option("cosine", choices=["cosine", "step", "constant"])
    warmup_epochs: int = option(2, min=0)
    label_smoothing: float = option(0.1, min=0, max=0.99)
    seed: int = option(0, min=0)


@dataclass
class RunConfig:
    """Everything that defines one run (and, outside the hash, where and how it executes)."""

    stage: str = option("pretrain", choices=["pretrain", "compress"])
    method: str = option("none", help="compression method (stage=compress); 'none' for pretrain")
    method_args: dict = option(default_factory=dict, help="the method's parameters (validated by it)")
    model: str = "digits_mlp"
    dataset: str = "digits"
    data_root: str = "data"
    download: bool = False
    pretrained: str = option("", help="'' (from scratch), 'hub' or a weights file (stage=pretrain)")
    img_size: int | None = option(None, min=1, help="override the model's input size")
    seed: int = option(0, min=0)
    epochs: int = option(40, min=0)
    batch_size: int = option(64, min=1, max=MAX_BATCH)
    eval_batch_size: int = option(256, min=1, max=MAX_BATCH)
    optimizer: str = option("adamw", choices=["sgd", "adamw"])
    lr: float = option(3e-3, min_exclusive=0)
    momentum: float = option(0.9, min=0, max=1)
    weight_decay: float = option(0.1, min=0)
    lr_schedule: str = option("cosine", choices=["cosine", "step", "constant"])
    lr_cycle_epochs: int = option(
        0,
        min=0,
        help="restart warm-up + cosine every N epochs (0: one cycle); "
        "e.g. epochs/k for progressive LayerCollapse",
    )
    step_epochs: int = option(10, min=1, help="lr_schedule=step: epochs between lr decays")
    step_gamma: float = option(0.1, min_exclusive=0, max=1)
    warmup_epochs: int = option(2, min=0)
    label_smoothing: float = option(0.1, min=0, max=0.99)
    grad_clip: float = option(0.0, min=0, help="max gradient norm; 0 disables clipping")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N")
    precision: str = option("fp32", choices=["fp32", "bf16", "fp16"])
    channels_last: bool = False
    threads: int = option(2, min=0, max=1024, help="torch CPU threads; 0 leaves torch's default")
    workers: int = option(0, min=0, max=256)
    latency_batch: int = option(32, min=1, max=MAX_BATCH, help="the large batch for latency measurement")
    latency_repeats: int = option(20, min=1)
    output_root: str = "outputs"
    tracking: TrackingConfig = option(default_factory=TrackingConfig)
    pretrain: PretrainRecipe = option(default_factory=PretrainRecipe)


# Fields that say where or how a run executes, not what it computes: excluded from the run id.
EXECUTION_FIELDS = ("data_root", "download", "device", "threads", "workers", "output_root", "tracking")


# --------------------------------------------------------------------------------------------------------
# Type coercion and validation (shared by RunConfig and every method's Params dataclass)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r} ({type(value).__name__})")
        return [coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:  # a string: YAML 1.1 reads 1e-3 (no dot) as one
                return float(value)
            except ValueError:
                pass
            except OverflowError:  # a 400-digit integer
                raise ConfigError(f"{key}: {str(value)[:20]}... is too large for a number") from None
        raise ConfigError(f"{key}: expected a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def check_range(key: str, value: Any, meta: typing.Mapping) -> None:
    """The field's choices and bounds; a float must also be finite (nan and inf never configure a run)."""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    if value is None or isinstance(value, (str, bool, list, dict)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']}, got {value!r}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']}, got {value!r}")
    if meta.get("min_exclusive") is not None and value <= meta["min_exclusive"]:
        raise ConfigError(f"{key}: must be > {meta['min_exclusive']}, got {value!r}")


def build_dataclass(cls: type, values: typing.Mapping[str, Any], prefix: str = "") -> Any:
    """Instantiate `cls` from a mapping, rejecting unknown keys and checking types and ranges."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + u for u in unknown)}"
            f"{did_you_mean(unknown, fields, prefix)} for {cls.__name__}; "
            f"valid keys: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                value = dataclasses.asdict(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping of {tp.__name__} keys, got {value!r}")
            kwargs[name] = build_dataclass(tp, value, prefix=f"{prefix}{name}.")
            continue
        value = coerce(prefix + name, value, tp)
        check_range(prefix + name, value, fields[name].metadata)
        kwargs[name] = value
    obj = cls(**kwargs)
    for name, f in fields.items():  # defaults must satisfy the same rules
        if name not in kwargs and not dataclasses.is_dataclass(hints[name]):
            check_range(prefix + name, getattr(obj, name), f.metadata)
    return obj


def did_you_mean(unknown: list[str], valid: typing.Iterable[str], prefix: str = "") -> str:
    """` (did you mean lr?)` for the closest valid key of each unknown one, or ``."""
    import difflib

    valid = list(valid)
    close = [m for u in unknown for m in difflib.get_close_matches(u, valid, n=1, cutoff=0.6)]
    return f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""


def describe_fields(cls: type, prefix: str = "") -> list[dict]:
    """Name (dotted for nested sections, e.g. `tracking.mode`), type, default, choices and help of each
    field (for `lcbench list keys` and errors)."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe_fields(hints[f.name], prefix=f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append(
            {
                "key": prefix + f.name,
                "type": _type_name(hints[f.name]),
                "default": default,
                "choices": f.metadata.get("choices"),
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------------
# Loading, overrides, resolution


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, value parsed as YAML: numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None and raw.strip().lower() not in ("null", "none", "~"):
        value = raw
    return key, value


def _set_dotted(target: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
        target = node
    target[parts[-1]] = value


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): is it a config file?") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def make_config(
    values: typing.Mapping[str, Any] | None = None, overrides: typing.Iterable[str] = ()
) -> RunConfig:
    """Build and validate a RunConfig from a mapping plus `key=value` overrides.

    Bare keys that are not RunConfig fields are the method's parameters (`k=2` for layercollapse).
    """
    from .methods import METHODS  # late import: methods import this module

    raw: dict[str, Any] = json.loads(json.dumps(dict(values or {}), default=str))
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
    run_keys = {f.name for f in dataclasses.fields(RunConfig)}
    method_args = dict(raw.pop("method_args", None) or {})
    for key in [k for k in raw if k not in run_keys]:
        method_args[key] = raw.pop(key)
    method_name = str(raw.get("method", "none"))
    method_cls = METHODS.get(method_name)
    shadowed = run_keys & {f.name for f in dataclasses.fields(method_cls.Params)}
    if shadowed:  # a programming error in the method: its bare keys would be ambiguous
        raise TypeError(f"method {method_name} declares parameters named like run config keys: {shadowed}")
    try:
        params = build_dataclass(method_cls.Params, method_args)
    except ConfigError as e:
        if "unknown key" in str(e):  # a bare key that is neither a run key nor the method's
            unknown = sorted(set(method_args) - {f.name for f in dataclasses.fields(method_cls.Params)})
            method_keys = [f.name for f in dataclasses.fields(method_cls.Params)]
            hint = did_you_mean(unknown, [*run_keys, *method_keys])
            owners = {  # a parameter of another method: say which
                u: [
                    m
                    for m in METHODS.names()
                    if u in {f.name for f in dataclasses.fields(METHODS.get(m).Params)}
                ]
                for u in unknown
            }
            hint += "".join(f" ({u} is a parameter of method {', '.join(o)})" for u, o in owners.items() if o)
            method_list = ", ".join(method_keys) or "none"
            keys = f"Run config keys: {', '.join(sorted(run_keys))}; {method_name}'s: {method_list}"
            plural = "s" if len(unknown) > 1 else ""
            raise ConfigError(
                f"unknown key{plural} {', '.join(unknown)}{hint}: not a run config key, nor a parameter of "
                f"method {method_name}. {keys} (`lcbench list keys [METHOD]` explains each)"
            ) from None
        raise ConfigError(f"method {method_name}: {e}") from None
    raw["method_args"] = dataclasses.asdict(params)
    cfg = build_dataclass(RunConfig, raw)
    validate(cfg)
    method_cls.check(params, cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field rules and name lookups (unknown model/dataset names list close matches)."""
    from .data import DATASETS
    from .models import MODELS

    MODELS.get(cfg.model)
    DATASETS.get(cfg.dataset)
    if cfg.stage == "pretrain" and cfg.method != "none":
        raise ConfigError(
            f"stage=pretrain trains the original model and takes no method (got method={cfg.method}); "
            "use stage=compress for a compression method"
        )
    if cfg.stage == "compress" and cfg.method == "none":
        raise ConfigError("stage=compress needs a method, e.g. method=finetune or method=layercollapse")
    if cfg.stage == "compress" and cfg.pretrained:
        raise ConfigError(
            "stage=compress starts from its pretrain run; "
            "set pretrain.pretrained=... instead of pretrained=..."
        )


def method_params(cfg: RunConfig) -> Any:
    """The run's method parameters as the method's typed dataclass."""
    from .methods import METHODS

    return build_dataclass(METHODS.get(cfg.method).Params, cfg.method_args)


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def identity(cfg: RunConfig) -> dict:
    """The part of the config that defines the result (the run id's content)."""
    data = to_dict(cfg)
    for key in EXECUTION_FIELDS:
        data.pop(key)
    if cfg.stage == "pretrain":  # the recipe for *another* pretrain run is irrelevant here
        data.pop("pretrain")
    return data


def run_id(cfg: RunConfig) -> str:
    """Short content hash of the canonical resolved config: same config, same id."""
    canonical = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# What a compress run passes on to the pretrain run it starts from; its training recipe comes from
# `pretrain.*` and every other training setting from the defaults, never from the compress run.
INHERITED_BY_PRETRAIN = (
    "model",
    "dataset",
    "img_size",
    "precision",
    "channels_last",
    "eval_batch_size",
    "latency_batch",
    "latency_repeats",
    *EXECUTION_FIELDS,
)


def pretrain_config(cfg: RunConfig) -> RunConfig:
    """The pretrain run that a compress run starts from."""
    inherited = {key: getattr(cfg, key) for key in INHERITED_BY_PRETRAIN}
    return RunConfig(stage="pretrain", **inherited, **dataclasses.asdict(cfg.pretrain))


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
