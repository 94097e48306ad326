"""A validated `RunConfig` from YAML values and `key=value` overrides, resolved against the registries:
bare keys become the method's parameters, model and data set names are looked up (with close matches)."""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any

from ..core.config import RunConfig, _set_dotted, parse_override
from ..core.errors import ConfigError
from ..core.fields import build_dataclass, did_you_mean
from ..methods import METHODS
from ..zoo import fingerprint
from ..zoo.data import DATASETS
from ..zoo.models import MODELS


def make_config(
    values: typing.Mapping[str, Any] | None = None, overrides: typing.Iterable[str] = ()
) -> RunConfig:
    """Build and validate a RunConfig from a mapping plus `key=value` overrides.

    Bare keys that are not RunConfig fields are the method's parameters (`k=2` for layercollapse).
    """
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
            own = f"({', '.join(method_keys)})" if method_keys else "(it has none)"
            listing = "`lcbench list keys` lists the run config keys" + (
                f" and `lcbench list keys {method_name}` its parameters" if method_keys else ""
            )
            plural = "s" if len(unknown) > 1 else ""
            raise ConfigError(
                f"unknown key{plural} {', '.join(unknown)}{hint}: not a run config key, nor a parameter of "
                f"method {method_name} {own}; {listing}"
            ) from None
        raise ConfigError(f"method {method_name}: {e}") from None
    raw["method_args"] = dataclasses.asdict(params)
    cfg = build_dataclass(RunConfig, raw)
    if cfg.data_fingerprint == fingerprint.RESOLVE:  # the files' own, in place of their path
        cfg.data_fingerprint = fingerprint.data_fingerprint(cfg.dataset, cfg.data_root)
    validate(cfg)
    method_cls.check(params, cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field rules and name lookups (unknown model/dataset names list close matches)."""
    MODELS.get(cfg.model)
    DATASETS.get(cfg.dataset)
    if cfg.stage == "pretrain" and cfg.method != "none":
        raise ConfigError(
            f"stage=pretrain trains the original model and takes no method (got method={cfg.method}); "
            "use stage=compress for a compression method"
        )
    if cfg.stage == "compress" and cfg.method == "none":
        raise ConfigError("stage=compress needs a method, e.g. method=finetune or method=layercollapse")
    check_input_size(cfg)
    check_sequence_length(cfg)
    if cfg.stage == "compress" and cfg.pretrained:
        raise ConfigError(
            "stage=compress starts from its pretrain run; "
            "set pretrain.pretrained=... instead of pretrained=..."
        )


def check_sequence_length(cfg: RunConfig) -> None:
    """A text sample longer than the model has positions for fails in its position embedding mid-run
    (IndexError): refused now."""
    from ..zoo.text_models import max_positions

    spec = DATASETS.get(cfg.dataset)
    limit = max_positions(cfg.model)
    length = cfg.seq_len or spec.seq_len
    if spec.is_text and limit is not None and length > limit:
        setting = f"seq_len={cfg.seq_len}" if cfg.seq_len else f"{cfg.dataset}'s default of {length} tokens"
        raise ConfigError(
            f"{setting} is longer than {cfg.model}'s {limit} positions: set seq_len={limit} or less"
        )


def check_input_size(cfg: RunConfig) -> None:
    """A data set of fixed-size images (digits 8x8, Fashion-MNIST 28x28) against `img_size` and the model:
    a size the images do not have, or one the model cannot take, is refused now, not after a pretrain."""
    spec = DATASETS.get(cfg.dataset)
    if spec.natural_images or spec.is_text:
        return
    if cfg.img_size and cfg.img_size != spec.img_size:
        raise ConfigError(
            f"{cfg.dataset} images are {spec.img_size}x{spec.img_size}: img_size={cfg.img_size} does not fit "
            f"them; leave img_size unset (the model is then built for {spec.img_size}x{spec.img_size})"
        )
    problem = _input_problem(cfg.model, spec.num_classes or 10, spec.in_chans, spec.img_size)
    if problem:
        raise ConfigError(
            f"{cfg.model} cannot take {cfg.dataset}'s {spec.in_chans}x{spec.img_size}x{spec.img_size} "
            f"images: {problem}. Choose a model sized for them (`lcbench list models`)"
        )


@functools.lru_cache(maxsize=64)
def _input_problem(model: str, num_classes: int, in_chans: int, size: int) -> str:
    """'' when the model, built on the meta device (no memory), runs a batch of two such images."""
    import torch

    from ..zoo.models import create_model

    try:
        with torch.device("meta"):
            create_model(model, num_classes, in_chans, size).eval()(torch.empty(2, in_chans, size, size))
    except ConfigError as e:
        return str(e)
    except (RuntimeError, ValueError, AssertionError, TypeError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return ""


def method_params(cfg: RunConfig) -> Any:
    """The run's method parameters as the method's typed dataclass."""
    return build_dataclass(METHODS.get(cfg.method).Params, cfg.method_args)
