"""A run's identity: the part of its config that defines its result, and the run id hashed from it. Here,
not in `core.config`, because a method's parameters declared `later` count as they were first published,
which needs the method registry (a layer above the config)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..core.config import EXECUTION_FIELDS, LATER_FIELDS, LATER_RECIPE_FIELDS, RunConfig, to_dict
from ..core.errors import ConfigError
from ..methods import METHODS


def identity(cfg: RunConfig) -> dict:
    """The part of the config that defines the result (the run id's content)."""
    data = to_dict(cfg)
    for key in EXECUTION_FIELDS:
        data.pop(key)
    defaults = RunConfig()
    for part, later in ((data, LATER_FIELDS), (data["pretrain"], LATER_RECIPE_FIELDS)):
        for key in later:
            if part[key] == getattr(defaults, key):
                part.pop(key)
    if data.get("data_fingerprint") in ("", "auto"):  # a packaged data set, or not checked: earlier ids
        data.pop("data_fingerprint")
    for name in _later_params(cfg.method):  # a method's parameters added later, the same way
        if name in data["method_args"] and data["method_args"][name] == _later_params(cfg.method)[name]:
            data["method_args"].pop(name)
    if cfg.stage == "pretrain":  # the recipe for *another* pretrain run is irrelevant here
        data.pop("pretrain")
    return data


def _later_params(method: str) -> dict[str, Any]:
    """The method's parameters declared `later` (fields.option), with their defaults."""

    try:
        params = METHODS.get(method).Params
    except ConfigError:
        return {}
    return {
        f.name: f.default
        for f in dataclasses.fields(params)
        if f.metadata.get("later") and f.default is not dataclasses.MISSING
    }


def run_id(cfg: RunConfig) -> str:
    """Short content hash of the canonical resolved config: same config, same id."""
    canonical = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
