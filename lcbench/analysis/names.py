"""Display names of methods and sweep variants for tables and plots (the CSV files keep the ids). A method's
display name is its class's `title` (declared in its own file)."""

from __future__ import annotations

import re

from ..core.errors import ConfigError
from ..methods import METHODS


def method_name(method: str) -> str:
    """`kd` -> `KD`; a method that is not installed here keeps its id with spaces for underscores."""
    if method == "original":
        return "Original"
    try:
        title = METHODS.get(method).title
    except ConfigError:
        title = ""
    return title or method.replace("_", " ")


def variant_label(method: str, variant: str | None) -> str:
    """`kd`, `kd_teacher_2x` -> `KD (teacher 2×)`; a variant named like its method -> the method's name."""
    name = method_name(method)
    if not variant or variant == method:
        return name
    suffix = variant.removeprefix(f"{method}_").replace("_", " ")
    suffix = re.sub(r"\b(\d+(?:\.\d+)?)x\b", r"\1×", suffix)
    return f"{name} ({suffix})"
