"""A run's files against what its result.json recorded of them: size, SHA-256 and a stamp.

A completed record lists the files its numbers stand on (`model_file`: model.pt; `examples`: the
per-example records) with their size and SHA-256, and the stamp the file had when they were taken (its inode
and change time: any write, copy or rename changes them, and no user can set a change time back). A reader
hashes a file only when its stamp differs, so `status` over a sweep of large models hashes nothing that
neither changed nor was copied; a copied file (a new stamp) is hashed on every read and passes when its
bytes match.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from .errors import CheckpointError

MODIFIED = "modified after the run"  # what status, report and export say of a file whose bytes changed


def file_stamp(path: Path) -> list[int]:
    """[inode, change time in ns] of `path` (not followed)."""
    info = os.lstat(path)
    return [info.st_ino, info.st_ctime_ns]


def _open_own(path: Path) -> int:
    """A read descriptor of `path` itself: a symbolic link is refused (FileNotFoundError: no file)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointError(
                f"{path} is a symbolic link; lcbench reads only a run's own files"
            ) from None
        raise


def read_no_follow(path: Path) -> bytes:
    """The bytes of `path`, refusing a symbolic link (FileNotFoundError where there is no file)."""
    with os.fdopen(_open_own(path), "rb") as f:
        return f.read()


def file_sha256(path: Path) -> str:
    """SHA-256 of `path`, read in blocks without following a link."""
    digest = hashlib.sha256()
    with os.fdopen(_open_own(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_file(path: Path, data: bytes | None = None) -> dict:
    """What a record keeps of a file it just wrote: {bytes, sha256, stamp}."""
    sha = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    return {"bytes": os.lstat(path).st_size, "sha256": sha, "stamp": file_stamp(path)}


def file_problem(path: Path, recorded: dict, what: str) -> str:
    """Why `path` is not the file its record describes ('' when it is, or when nothing was recorded)."""
    size, sha = recorded.get("bytes"), recorded.get("sha256")
    if not isinstance(size, int):
        return ""  # an older record: nothing to check against
    try:
        stamp = file_stamp(path)
        actual = os.lstat(path).st_size
    except FileNotFoundError:
        return f"its {what} {path} is missing, though its record lists it"
    if actual != size:
        return f"its {what} {path} has {actual} bytes, the record says {size} (truncated?): {MODIFIED}"
    if sha and stamp != recorded.get("stamp") and file_sha256(path) != sha:
        return f"its {what} {path} does not match the SHA-256 in its record: {MODIFIED}"
    return ""


def read_verified(path: Path, recorded: dict | None, what: str) -> bytes:
    """The bytes of `path`, checked against its record's SHA-256 in the same read (what is checked is what
    is used); raises CheckpointError naming the file when they differ or it is missing."""
    try:
        data = read_no_follow(path)
    except FileNotFoundError:
        listed = ", though its record lists it" if recorded else ""
        raise CheckpointError(f"its {what} {path} is missing{listed}") from None
    sha = (recorded or {}).get("sha256")
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise CheckpointError(f"its {what} {path} does not match the SHA-256 in its record: {MODIFIED}")
    return data
