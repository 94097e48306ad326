"""Which data a run was trained on, independent of where it lies: a fingerprint of the data set's files.

A run's identity holds the fingerprint, never `data_root` itself, so outputs move between machines with
their data, and a folder of other data (a 2,000-image subset of the same data set) is never taken for this
one. The fingerprint hashes every file's name (relative to the data set's folder) and size; for a data set
of at most 64 MiB the files' contents too. Data sets shipped with a package (digits, the standard library's
text) have none: their content is fixed by the package, and their run ids are the ones published before.
Files the runs themselves write beside the data (`datasets`' map caches) and hidden files are left out.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
from pathlib import Path

from ..core.errors import DataError
from .data import DATASETS

CONTENT_LIMIT = 64 << 20  # bytes: up to this, the contents are hashed too
IGNORED = ("cache-*.arrow", "tmp*")  # written by `datasets` beside a save_to_disk copy
ABSENT = "absent"  # the files were not found when the run was planned
RESOLVE = "auto"  # the config's default: computed from the files


def folder_files(folder: Path) -> list[Path]:
    """Every data file under `folder` (links followed: data folders are often links), sorted."""
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(parent) / n
            for n in names
            if not n.startswith(".") and not any(fnmatch.fnmatch(n, p) for p in IGNORED)
        ]
    return sorted(found)


def fingerprint_of(base: Path, files: list[Path]) -> str:
    """`files:<hash>` of the names and sizes, or `content:<hash>` with the contents (small sets)."""
    sizes = [(f.relative_to(base).as_posix(), f.stat().st_size) for f in files]
    digest = hashlib.sha256()
    for name, size in sizes:
        digest.update(f"{name}\0{size}\n".encode())
    if sum(size for _, size in sizes) > CONTENT_LIMIT:
        return f"files:{digest.hexdigest()[:16]}"
    for f in files:
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"content:{digest.hexdigest()[:16]}"


@functools.lru_cache(maxsize=64)
def data_fingerprint(dataset: str, data_root: str) -> str:
    """The fingerprint of `dataset` under `data_root`: '' for a packaged data set, `absent` when its
    files are not there."""
    spec = DATASETS.get(dataset)
    root = Path(data_root).expanduser()
    if spec.files is not None:
        try:
            base, files = spec.files(root)
        except DataError:
            return ABSENT
    elif spec.natural_images:
        base, files = root, folder_files(root) if root.is_dir() else []
    else:
        return ""
    return fingerprint_of(base, files) if files else ABSENT


def check_unchanged(dataset: str, data_root: str, planned: str) -> None:
    """A run about to read its data: refuse data other than the data it was planned with."""
    if planned in ("", ABSENT, RESOLVE):
        return
    data_fingerprint.cache_clear()  # read the files now, not a value from before
    found = data_fingerprint(dataset, data_root)
    if found != planned:
        raise DataError(
            f"{dataset} under {data_root} is not the data this run was planned with (fingerprint {found}, "
            f"planned {planned}): files were added, removed or changed. Plan the sweep again (its runs then "
            "get new ids), or point data_root at the original files"
        )
