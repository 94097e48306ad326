"""The method registry, filled by discovery: every module of `lcbench.methods` and `lcbench.baselines`, then
the `lcbench.methods` entry-point group (a third-party package adds a method by naming its module there).
A method is one file that registers its class with `@METHODS.register("name")`; nothing else lists it."""

from __future__ import annotations

import importlib
import pkgutil

from ..core.registry import Registry, load_entry_points
from .base import Method, RunContext

PACKAGES = ("lcbench.methods", "lcbench.baselines")
ENTRY_POINT_GROUP = "lcbench.methods"


def _discover() -> None:
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_") and module.name != "base":
                importlib.import_module(f"{package_name}.{module.name}")
    load_entry_points(ENTRY_POINT_GROUP, METHODS, Method)


METHODS: Registry[type[Method]] = Registry("method", discover=_discover)
METHODS.register("none")(Method)


def method_order() -> list[str]:
    """Every method in a stable order, whatever imported what first: `none`, then by package (as scanned),
    module and name; entry-point methods of other packages last. Colours and markers follow it."""

    def key(name: str) -> tuple:
        module = METHODS.get(name).__module__
        package = next((i for i, p in enumerate(PACKAGES) if module.startswith(p + ".")), len(PACKAGES))
        return (name != "none", package, module, name)

    return sorted(METHODS.names(), key=key)


__all__ = ["METHODS", "Method", "RunContext", "method_order"]
