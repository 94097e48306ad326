"""A small name -> object registry (as simple as timm's `create_model` registry)."""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import logging
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from .errors import ConfigError, first_line

T = TypeVar("T")
log = logging.getLogger("lcbench")


class Registry(Generic[T]):
    """Maps names to objects; registration by decorator, lookup with helpful errors."""

    def __init__(self, kind: str, discover: Callable[[], None] | None = None) -> None:
        """`discover`: called once, before the first lookup, to import the modules that register items
        (a package scan or entry points: nothing lists them by hand)."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._fallbacks: list[tuple[Callable[[str], T | None], Callable[[], Iterable[str]]]] = []
        self._discover = discover

    def _discovered(self) -> dict[str, T]:
        if self._discover is not None:
            discover, self._discover = self._discover, None
            try:
                discover()
            except BaseException:
                self._discover = discover  # a failed scan is tried again, never half-remembered
                raise
        return self._items

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: `@MODELS.register()` or `@MODELS.register("name")`."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._items:
                raise ValueError(
                    f"{self.kind} {key!r} is registered twice: by {provider(self._items[key])} and by "
                    f"{provider(obj)}"
                )
            self._items[key] = obj
            return obj

        return decorator

    def add_fallback(self, lookup: Callable[[str], T | None], names: Callable[[], Iterable[str]]) -> None:
        """Resolve names not registered here through another library (e.g. every timm model)."""
        self._fallbacks.append((lookup, names))

    def get(self, name: str) -> T:
        items = self._discovered()
        if name in items:
            return items[name]
        for lookup, _ in self._fallbacks:
            found = lookup(name)
            if found is not None:
                return found
        close = difflib.get_close_matches(name, self.names(include_fallbacks=True), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown {self.kind} {name!r}.{hint} Run `lcbench list {self.kind}s` to see all "
            f"{len(self.names(include_fallbacks=True))} known {self.kind}s."
        )

    def names(self, pattern: str | None = None, include_fallbacks: bool = False) -> list[str]:
        """Registered names (sorted), optionally filtered by a wildcard pattern like `digits_*`."""
        found = set(self._discovered())
        if include_fallbacks:
            for _, names in self._fallbacks:
                found.update(names())
        if pattern:
            found = {n for n in found if fnmatch.fnmatchcase(n, pattern)}
        return sorted(found)


def provider(obj: object) -> str:
    """The package (distribution) that defines `obj`, for messages: 'lcbench', 'toy-methods 0.1 (module
    toy_methods)', or its module where no distribution is known."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    top = module.split(".")[0]
    if top == "lcbench":
        return "lcbench"
    names = importlib.metadata.packages_distributions().get(top, [])
    return f"package {names[0]} (module {module})" if names else f"module {module}"


def load_entry_points(group: str, registry: Registry, kind: type) -> None:
    """Load another package's plug-ins from the entry-point `group` (`lcbench.methods`, `lcbench.models`,
    `lcbench.datasets`): a module registers what it holds when imported; an object of type `kind` (a
    method class, a ModelSpec, a DatasetSpec) is registered here under the entry point's name. A plug-in
    that fails to load, or whose name is taken, is left out with a one-line warning naming its package:
    the rest of lcbench works without it."""
    for entry in importlib.metadata.entry_points(group=group):
        try:
            loaded = entry.load()
        except Exception as e:  # its module raised on import (a duplicate name among the reasons)
            _left_out(entry, group, e)
            continue
        is_kind = isinstance(loaded, kind) or (isinstance(loaded, type) and issubclass(loaded, kind))
        if not is_kind or registry._items.get(entry.name) is loaded:
            continue  # a module that registers what it holds (this very object among them)
        try:
            registry.register(entry.name)(loaded)
        except ValueError as e:
            _left_out(entry, group, e)


def _left_out(entry: importlib.metadata.EntryPoint, group: str, error: Exception) -> None:
    dist = f"package {entry.dist.name} {entry.dist.version}" if entry.dist else "an unknown package"
    log.warning(
        "plug-in %r of %s (entry point %s: %s) is left out: %s: %s; fix or uninstall that package",
        entry.name, dist, group, entry.value, type(error).__name__, first_line(error),
    )  # fmt: skip
