"""Display names of methods and sweep variants for tables and plots (the CSV files keep the ids)."""

from __future__ import annotations

import re

METHOD_NAMES = {
    "original": "Original",
    "finetune": "Fine-tune",
    "layercollapse": "LayerCollapse",
    "kd": "KD",
    "magnitude_pruning": "Magnitude pruning",
    "layer_fusion": "Layer fusion",
}


def method_name(method: str) -> str:
    """`kd` -> `KD`; a method without a display name keeps its id with spaces for underscores."""
    return METHOD_NAMES.get(method, method.replace("_", " "))


def variant_label(method: str, variant: str | None) -> str:
    """`kd`, `kd_teacher_2x` -> `KD (teacher 2×)`; a variant named like its method -> the method's name."""
    name = method_name(method)
    if not variant or variant == method:
        return name
    suffix = variant.removeprefix(f"{method}_").replace("_", " ")
    suffix = re.sub(r"\b(\d+(?:\.\d+)?)x\b", r"\1×", suffix)
    return f"{name} ({suffix})"
