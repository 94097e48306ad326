"""A folder of outputs (a report) written whole or not at all, by one writer at a time.

Everything is written into a staging folder inside the destination; only when all of it exists are the
files moved in (each `os.replace`, which never follows a link at the name it replaces), the README last.
A manifest lists what the writer published, so the files of an earlier report that this one no longer
makes are removed, and nothing else in the folder is ever touched. A lock on the folder makes a second
writer wait; a staging folder left by a killed writer is removed by the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .store import atomic_write_text, check_own_folder, open_no_follow

LOCK = ".lcbench-lock"
MANIFEST = ".lcbench-manifest.json"
STAGING = ".lcbench-staging-"


@contextmanager
def staged_folder(out: Path, what: str, fix: str, last: str = "README.md") -> Iterator[Path]:
    """Yield a staging folder for `out`'s files; on a normal exit, publish them into `out` (`last` last).
    `out` must be this user's own folder (checked before and after it is made)."""
    check_own_folder(out, what, fix)
    out.mkdir(parents=True, exist_ok=True)
    check_own_folder(out, what, fix)  # (another user may have made it in a shared folder meanwhile)
    with _locked(out):
        _remove_stale_staging(out)
        stage = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
        try:
            yield stage
            publish(stage, out, last)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    fd = open_no_follow(out / LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"lcbench: another report is writing into {out}: waiting for it", file=sys.stderr, flush=True
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of writers that were killed (with the lock held, no live writer owns one)."""
    with os.scandir(out) as entries:
        for entry in entries:
            if entry.name.startswith(STAGING) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def publish(stage: Path, out: Path, last: str) -> None:
    """Move every file of `stage` into `out`, `last` last, and remove the files the previous manifest
    listed that this one does not."""
    names = sorted(p.name for p in stage.iterdir() if p.is_file() and not p.is_symlink())
    previous = _manifest(out)
    for name in [n for n in names if n != last]:
        os.replace(stage / name, out / name)
    for name in sorted(set(previous) - set(names)):
        _remove_own_file(out / name)
    atomic_write_text(out / MANIFEST, json.dumps({"files": names}, indent=1) + "\n")
    if last in names:
        os.replace(stage / last, out / last)


def _manifest(out: Path) -> list[str]:
    """The files the previous writer published ([] without a readable manifest)."""
    try:
        fd = open_no_follow(out / MANIFEST, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        with os.fdopen(fd) as f:
            files = json.load(f).get("files", [])
    except (ValueError, AttributeError, UnicodeDecodeError):
        return []
    return [n for n in files if isinstance(n, str) and "/" not in n and n not in ("", ".", "..", LOCK)]


def _remove_own_file(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
        path.unlink()
