"""Field metadata and checking for config dataclasses: `option(...)` declares a field's choices, bounds and
help; `build_dataclass` builds one from a mapping with clear errors. A leaf module (it imports nothing of
lcbench but its errors), shared by `RunConfig`, every method's `Params` and the SLURM profiles."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any

from .errors import ConfigError


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    choices: list | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: float | None = None,
    help: str = "",
    tunable: bool = False,
    later: bool = False,
) -> Any:
    """A dataclass field with validation metadata; `tunable`: `lcbench tune` may change it while the run
    trains (within the same bounds); `later`: added after run ids were published, so hashed only when set
    away from its default (every earlier run keeps its id)."""
    meta = {
        "later": later,
        "choices": choices,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "help": help,
        "tunable": tunable,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


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
