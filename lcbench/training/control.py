"""Live tuning of a running run through files in its own folder (shared file systems reach SLURM nodes).

    <run>/control/            owner-only (0700), created by the run
        requests/<id>.json    one request: {"id", "set": {key: value}, "trigger": save|eval|stop, "requester"}
        acks/<id>.json        the run's answer: accepted (with old and new values) or rejected (why)

`lcbench tune` writes a request atomically and waits for its ack. The trainer looks at the folder at most
once a second (`ControlChannel.due`), applies what is valid and live-tunable, and records every accepted
change in metrics.jsonl (`tune` events: step, epoch, key, old, new, requester), so `lcbench replay` can
apply the same changes at the same steps. A request from another user, an oversized or malformed file,
an unknown key or an out-of-range value is refused with a logged warning; the run goes on unharmed.
Nothing in a request is evaluated: it is JSON, and values are coerced to the declared type.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import socket
import stat
import time
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LcbenchError
from ..core.fields import check_range, coerce
from ..core.store import atomic_write_json, check_own_folder, live_status, read_json

log = logging.getLogger("lcbench")
MAX_REQUEST_BYTES = 4096
ACK_LIFETIME_S = 3600.0  # an ack nobody read is removed after an hour,
MAX_UNCOLLECTED_ACKS = 256  # and beyond the newest 256 (a file system block each) once a minute old:
ACK_COLLECT_S = 60.0  # a waiting `tune` reads its ack within 0.1 s
TRIGGERS = ("save", "eval", "stop")


@dataclass(frozen=True)
class Tunable:
    """A live-tunable value: its type and range (validated like config keys)."""

    type: type
    min: float | None = None
    max: float | None = None
    min_exclusive: float | None = None

    def coerce(self, key: str, value: Any) -> Any:
        """The config's own parser and range check (so `tune lr=1e-3` reads as `run lr=1e-3` does)."""
        if isinstance(value, str):
            value = value.strip()
        value = coerce(key, value, self.type)
        check_range(key, value, {"min": self.min, "max": self.max, "min_exclusive": self.min_exclusive})
        return value


def tunables(cls: type) -> dict[str, Tunable]:
    """The live-tunable fields of a config dataclass (`option(..., tunable=True)`), with their bounds."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: Tunable(
            hints[f.name], f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("min_exclusive")
        )
        for f in dataclasses.fields(cls)
        if f.metadata.get("tunable")
    }


def control_dir(run_path: Path) -> Path:
    return Path(run_path) / "control"


def open_channel(run_path: Path) -> Path:
    """Create the control folders, owner-only (the run's user alone may write requests)."""
    root = control_dir(run_path)
    for folder in (root, root / "requests", root / "acks"):
        folder.mkdir(exist_ok=True)
        check_own_folder(folder, "control folder")  # never chmod or clean through a planted link
        os.chmod(folder, 0o700)
    return root


class ControlChannel:
    """The trainer's side: cheap to ask whether a look is due; reads, validates and answers requests."""

    def __init__(self, run_path: Path, interval_s: float = 1.0) -> None:
        self.root = open_channel(run_path)
        self.requests = self.root / "requests"
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s
        self.ignored: set[str] = set()  # entries that could be neither removed nor renamed

    def due(self) -> bool:
        """At most one look per interval: a clock read per step otherwise."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    def pending(self) -> list[tuple[Path, dict | None, str]]:
        """Requests in arrival order: (path, parsed request or None, why it is unusable)."""
        try:
            entries = sorted(os.scandir(self.requests), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name in self.ignored:
                continue
            path = Path(entry.path)
            found.append((path, *_read_request(path)))
        return found

    def answer(self, path: Path, request: dict | None, ack: dict) -> None:
        """Write the ack, then take the request out of the queue whatever kind of entry it is (a file, a
        link, a folder someone named x.json): removed, else renamed aside, else never looked at again.
        Nothing here can end the run."""
        rid = (request or {}).get("id") or path.stem
        try:
            atomic_write_json(self.root / "acks" / f"{_safe_id(rid)}.json", {"id": rid, **ack})
        except OSError as e:
            log.warning("live tuning: cannot write the answer to %s (%s)", path.name, e)
        self._withdraw(path)

    def _withdraw(self, path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # an empty folder; a full one is renamed aside below
            else:
                path.unlink(missing_ok=True)
            return
        except OSError:
            pass
        try:
            path.rename(path.with_name(f"{path.name}.refused"))
        except OSError:
            self.ignored.add(path.name)

    def clean_acks(self, max_age_s: float = ACK_LIFETIME_S) -> None:
        """Acks nobody collected (the requester gave up or was killed) are removed after a while, and a
        flood of them (10,000 requests nobody waits for) once a minute old, beyond the newest few."""
        now = time.time()
        try:
            entries = list(os.scandir(self.root / "acks"))
        except FileNotFoundError:
            return
        aged = []
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    aged.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
            except OSError:
                pass
        aged.sort(reverse=True)  # newest first
        for rank, (mtime, path) in enumerate(aged):
            beyond = rank >= MAX_UNCOLLECTED_ACKS and mtime < now - ACK_COLLECT_S
            if mtime < now - max_age_s or beyond:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _read_request(path: Path) -> tuple[dict | None, str]:
    try:
        info = path.lstat()  # a link is refused unread: its target's contents never reach the run's log
    except FileNotFoundError:
        return None, "vanished"
    if stat.S_ISLNK(info.st_mode):
        return None, "a symbolic link (never followed)"
    if info.st_uid != os.getuid():
        return None, f"written by uid {info.st_uid}, not by the run's owner (uid {os.getuid()})"
    if not stat.S_ISREG(info.st_mode):
        return None, "not a regular file"
    if info.st_size > MAX_REQUEST_BYTES:
        return None, f"{info.st_size} bytes, over the {MAX_REQUEST_BYTES}-byte limit"
    try:
        request = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"not JSON ({e})"
    if not isinstance(request, dict):
        return None, "not a JSON object"
    unknown = set(request) - {"id", "set", "trigger", "requester"}
    if unknown:
        return request, f"unknown field(s) {sorted(unknown)}"
    if not isinstance(request.get("set", {}), dict):
        return request, "'set' must be an object of key: value"
    if request.get("trigger") not in (None, *TRIGGERS):
        return request, f"trigger must be one of {', '.join(TRIGGERS)}"
    if not request.get("set") and not request.get("trigger"):
        return request, "nothing to do (no 'set' and no 'trigger')"
    return request, ""


def _safe_id(text: str) -> str:
    return "".join(c for c in str(text) if c.isalnum() or c in "-_")[:64] or "request"


# --------------------------------------------------------------------------------------------------------
# The requester's side (`lcbench tune`)


def requester() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"


def send(run_path: Path, values: dict[str, Any], trigger: str | None, timeout_s: float = 60.0) -> dict:
    """Write one request and wait for the run's ack; raises LcbenchError on timeout."""
    root = control_dir(run_path)
    if not (root / "requests").is_dir():
        raise LcbenchError(f"{run_path} has no control channel: the run has not started training")
    rid = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    request = {"id": rid, "set": values, "requester": requester()}
    if trigger:
        request["trigger"] = trigger
    atomic_write_json(root / "requests" / f"{rid}.json", request)
    ack_path = root / "acks" / f"{rid}.json"
    deadline = time.monotonic() + timeout_s
    ended = False
    while time.monotonic() < deadline and not ended:
        ended = live_status(Path(run_path)) != "running"  # then one last look for its answer
        ack = read_json(ack_path)
        if ack is not None:
            ack_path.unlink(missing_ok=True)  # read: nothing is left behind
            return ack
        if not ended:
            time.sleep(0.1)
    (root / "requests" / f"{rid}.json").unlink(missing_ok=True)
    if ended:
        status = (read_json(Path(run_path) / "result.json") or {}).get("status", "stopped")
        raise LcbenchError(
            f"run {Path(run_path).name} ended ({status}) before it answered; the request was withdrawn"
        )
    raise LcbenchError(
        f"no answer from run {Path(run_path).name} within {timeout_s:g} s (is it training? "
        "`lcbench status`); the request was withdrawn"
    )
