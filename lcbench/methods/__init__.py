"""The method registry. LayerCollapse and the control live here; the baselines in the `baselines` package."""

from ..registry import Registry
from .base import Method

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("none")(Method)


def load_builtin_methods() -> None:
    """Import every module that registers methods, so the CLI, runner and tests see the same set."""
    import baselines  # noqa: F401  (registers the baselines)

    from . import finetune, layercollapse  # noqa: F401


__all__ = ["METHODS", "Method", "load_builtin_methods"]
