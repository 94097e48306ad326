"""Optional dependencies, each installed by an extra of the package: an image-only user needs none of
them, and a feature that needs one says which extra installs it (one line, exit 2) instead of failing
with an ImportError."""

from __future__ import annotations

import importlib.util

from .errors import ConfigError

# module -> the extra that installs it (pyproject.toml's [project.optional-dependencies])
EXTRAS = {
    "transformers": "text",
    "datasets": "text",
    "submitit": "slurm",
    "wandb": "wandb",
    "torch_pruning": "pruning",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
}


class MissingExtra(ConfigError):
    """A feature needs an optional dependency that is not installed."""


def require(*modules: str, purpose: str) -> None:
    """Raise `MissingExtra` naming the extra to install when one of `modules` is not importable."""
    missing = [m for m in modules if not _installed(m)]
    if missing:
        extras = ",".join(sorted({EXTRAS[m] for m in missing}))
        raise MissingExtra(
            f"{purpose} needs {', '.join(missing)}, which is not installed: pip install 'lcbench[{extras}]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module whose import was blocked (sys.modules[name] = None) has no spec
        return False
