"""The files shipped with lcbench, found by name: the run and sweep specs (`runs/` in a checkout,
`lcbench/specs/` once installed) and the SLURM profiles (`slurm/`, `lcbench/profiles/`). `lcbench plan
digits` works from any folder; a path still works and always wins."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lcbench/
# kind -> (its folder inside the installed package, its folder in a checkout)
FOLDERS = {"spec": ("specs", "runs"), "profile": ("profiles", "slurm")}


def folder(kind: str) -> Path | None:
    """Where the bundled files of `kind` are: inside the installed package, else in the checkout."""
    installed, checkout = FOLDERS[kind]
    for candidate in (PACKAGE_DIR / installed, PACKAGE_DIR.parent / checkout):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


def names(kind: str) -> list[str]:
    found = folder(kind)
    # a spec's lock file (NAME.tuned.yaml, `lcbench search`) lies beside it and is not a spec
    return sorted(p.stem for p in found.glob("*.yaml") if not p.name.endswith(".tuned.yaml")) if found else []


def find(text: str | Path, kind: str = "spec") -> Path:
    """`text` as a path when it is one (it exists, or has a folder or a suffix), else the bundled file of
    that name; a name nothing matches is a one-line error listing the bundled ones."""
    path = Path(text)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    found = folder(kind)
    if found is not None and (found / f"{text}.yaml").is_file():
        return found / f"{text}.yaml"
    known = ", ".join(names(kind)) or "none installed"
    raise ConfigError(
        f"no {kind} named {str(text)!r} and no such file: give a YAML file's path or one of {known}"
    )
